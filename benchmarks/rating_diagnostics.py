"""Is it the rating or the training? Per-block diagnostics of finished rating-benchmark seeds.

For every seed of a ``benchmarks/rating.py`` output folder (NATS-Bench SSS, with its accuracy
table), this re-runs the rating inputs of every block from the seed's checkpoints (the
trained supernet, the run's own best paths before the block, BN recalibrated along each path,
exactly what the rating saw; the recomputed official rating is checked against the run's
table; each block from the checkpoint it was rated from) and reports, per block:

- **split-half reliability**: Spearman between the ratings from the first and from the second
  half of the rating images, and the Spearman-Brown estimate for all of them. High reliability
  with a poor partial Spearman means more rating images cannot help: the supernet, not the
  rating noise, is what is wrong;
- **rating formulas** on the same outputs, each scored by Spearman against the paths'
  marginal accuracy and the partial Spearman after log width: the official loss against the
  population centre of raw target projections (ours), the centre of normalised projections,
  a leave-one-out centre, features centred or standardised over the rating images before the
  cosine (removes the direction every path shares), image retrieval against the centre
  (InfoNCE: a constant prediction cannot find its own image), each path's own BYOL loss, and
  the target projection's distance to the centre;
- **centrality**: Spearman of the ratings against each path's prediction spread (how much its
  normalised predictions vary over the images). Strongly positive means paths are rated
  well for predicting nearly the same vector for every image, close to the population centre;
- **prediction spread during training** (from the run's ``metrics.jsonl``): the mean spread
  of the online predictions over a step's images in the first and in the last tenth of each
  block's steps, so one can see whether centrality forms while the block trains;
- **conditional truth**: Spearman of block 1's ratings against the accuracy of architectures
  that go through the run's own block-0 choice (not all of them), and how close that
  conditional truth is to the marginal one.

    python benchmarks/rating_diagnostics.py --from bench-out/nats-cpu --seeds 0,1,2

Costs about the rating time of a seed (3 minutes at the cpu preset on one core). Writes
``OUT/diagnostics.json`` and ``OUT/diagnostics.md`` (default OUT: the ``--from`` folder).
"""

from __future__ import annotations

import argparse
import shutil
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import machine, write_json  # noqa: E402
from rating import NATS_TRUTH, Universe, rated_checkpoint  # noqa: E402


def _cosine_loss(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """2 - 2 cos over the last axis, averaged over images: ``[..., N, D]`` -> ``[...]``."""
    return (2 - 2 * (F.normalize(a, dim=-1) * F.normalize(b, dim=-1)).sum(-1)).mean(-1)


def _centred(x: torch.Tensor) -> torch.Tensor:
    return x - x.mean(-2, keepdim=True)


def _standardised(x: torch.Tensor) -> torch.Tensor:
    return _centred(x) / (x.std(-2, keepdim=True) + 1e-6)


def _cross(f: Callable[[torch.Tensor], torch.Tensor], pred: torch.Tensor, centre: torch.Tensor) -> torch.Tensor:
    """Symmetric loss of view 1's prediction against view 2's centre and vice versa."""
    return _cosine_loss(f(pred[:, 0]), f(centre[..., 1, :, :])) + _cosine_loss(f(pred[:, 1]), f(centre[..., 0, :, :]))


def _retrieval_loss(pred: torch.Tensor, centre: torch.Tensor, temperature: float = 0.1) -> torch.Tensor:
    """InfoNCE of each image's prediction ``[paths, N, D]`` against every image's centre ``[N, D]``:
    a path that predicts one vector for every image cannot pick out its own image's centre."""
    logits = F.normalize(pred, dim=-1) @ F.normalize(centre, dim=-1).T / temperature
    return -torch.diagonal(logits.log_softmax(-1), dim1=-2, dim2=-1).mean(-1)


def rating_formulas(target: torch.Tensor, pred: torch.Tensor) -> dict[str, np.ndarray]:
    """Ratings (lower = better) of every path from its raw target projections and its
    normalised online predictions (what rating compares), both ``[paths, 2 views, N, D]``,
    under several formulas."""
    n = target.shape[0]
    centre = target.mean(0)
    same = lambda x: x  # noqa: E731
    out = {
        "official (ours)": _cross(same, pred, centre),
        "centre of normalised projections": _cross(same, pred, F.normalize(target, dim=-1).mean(0)),
        "leave-one-out centre": _cross(same, pred, (centre * n - target) / (n - 1)),
        "centred over images": _cross(_centred, pred, centre),
        "standardised over images": _cross(_standardised, pred, centre),
        "own BYOL loss": _cross(same, pred, target),
        "image retrieval against the centre (InfoNCE, τ 0.1)": _retrieval_loss(pred[:, 0], centre[1]) + _retrieval_loss(pred[:, 1], centre[0]),
        "target to centre": _cosine_loss(target[:, 0], centre[0]) + _cosine_loss(target[:, 1], centre[1]),
    }
    return {k: v.numpy() for k, v in out.items()}


def prediction_spread(pred: torch.Tensor) -> np.ndarray:
    """How much each path's normalised predictions ``[paths, 2, N, D]`` vary over the images:
    the mean distance to their own mean. A path that predicts nearly the same vector for every
    image sits close to the population centre and gets a good rating for it."""
    unit = F.normalize(pred, dim=-1)
    return (unit - unit.mean(2, keepdim=True)).norm(dim=-1).mean((1, 2)).numpy()


@torch.no_grad()
def block_outputs(run_dir: Path, scratch: Path) -> list[dict]:
    """Raw target projections and normalised predictions of every path of every rated block, as rated."""
    from bossnas.search.rating import path_outputs
    from bossnas.train.runner import BlockwiseSearch, load_run

    config, ckpt = load_run(run_dir)
    config.device = "cpu"
    search = BlockwiseSearch(config, scratch, show_progress=False)
    state = ckpt["state"]
    batch = config.search.batch_size or config.train.batch_size
    blocks = []
    for block in range(len(state["tables"])):
        model = search.model
        model.load_state_dict(rated_checkpoint(run_dir, block, config, ckpt)["model"])
        search.state.best_paths = list(state["best_paths"][:block])
        recal, rate = search.rating_inputs(block)
        paths = search.space.block_paths(block, search.space.parse_path(block - 1, state["best_paths"][block - 1]) if block else None)
        outputs = [path_outputs(model, block, path, recal, rate, batch, config.search.bn_recalibration,
                                recalibrate_predictor=config.search.recalibrate_predictor) for path in paths]
        blocks.append({"paths": [search.space.format_path(p) for p in paths], "target": torch.stack([t for t, _ in outputs]),
                       "pred": torch.stack([p for _, p in outputs]), "table": dict(state["tables"][str(block)]),
                       "best_paths": state["best_paths"]})
    return blocks


def spread_during_training(run_dir: Path) -> dict[int, dict]:
    """Per block: the mean ``prediction_spread`` of the step records in the first and the last
    tenth of the block's steps (runs logged before the field existed: none)."""
    import json

    steps: dict[int, list[float]] = {}
    path = run_dir / "metrics.jsonl"
    if not path.is_file():
        return {}
    for line in path.read_text().splitlines():
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(record, dict) and record.get("kind") == "step" and isinstance(record.get("prediction_spread"), float):
            steps.setdefault(int(record["block"]), []).append(record["prediction_spread"])
    out = {}
    for block, values in sorted(steps.items()):
        tenth = max(1, len(values) // 10)
        out[block] = {"first": float(np.mean(values[:tenth])), "last": float(np.mean(values[-tenth:])), "steps": len(values)}
    return out


def diagnose(blocks: list[dict], u: Universe, truth: np.ndarray) -> list[dict]:
    from scipy.stats import spearmanr

    from bossnas.evaluation.size_controlled import partial_spearman, path_marginals

    out = []
    for b, e in enumerate(blocks):
        paths = e["paths"]
        index = [u.block_paths[b].index(p) for p in paths]
        marginal = path_marginals(u.path_index[:, b], truth, len(u.block_paths[b]))[index]
        log_width = u.path_covariates(b)["log width"][index]
        formulas = rating_formulas(e["target"], e["pred"])
        stored = np.array([e["table"][p] for p in paths])
        row = {"block": b, "paths": len(paths),
               "official_vs_table_spearman": float(spearmanr(formulas["official (ours)"], stored)[0]),
               "formulas": {name: {"spearman": float(spearmanr(-r, marginal)[0]),
                                   "partial_log_width": float(partial_spearman(-r, marginal, log_width))}
                            for name, r in formulas.items()}}
        n = e["target"].shape[2]
        halves = []
        for part in (slice(0, n // 2), slice(n // 2, n)):
            t, p = e["target"][:, :, part], e["pred"][:, :, part]
            halves.append(_cross(lambda x: x, p, t.mean(0)).numpy())
        rho = float(spearmanr(halves[0], halves[1])[0])
        row["split_half"] = {"spearman": rho, "spearman_brown": 2 * rho / (1 + rho)}
        row["centrality"] = {"rating_vs_prediction_spread": float(spearmanr(stored, prediction_spread(e["pred"]))[0]),
                             "rating_vs_log_width": float(spearmanr(stored, log_width)[0])}
        if b >= 1:
            prefix = e["best_paths"][:b]
            through = np.array([all(u.block_paths[k][u.path_index[i, k]] == prefix[k] for k in range(b))
                                for i in range(len(u.archs))])
            cond = np.array([truth[through & (u.path_index[:, b] == j)].mean() for j in index])
            row["conditional"] = {"prefix": prefix, "spearman": float(spearmanr(-stored, cond)[0]),
                                  "partial_log_width": float(partial_spearman(-stored, cond, log_width)),
                                  "conditional_vs_marginal_spearman": float(spearmanr(cond, marginal)[0])}
        out.append(row)
    return out


def _mean_sd(values: list[float]) -> str:
    a = np.array(values, dtype=float)
    return f"{a.mean():.2f} ± {a.std(ddof=1):.2f}" if len(a) > 1 else f"{a.mean():.2f}"


def markdown(per_seed: dict[int, list[dict]]) -> str:
    seeds = sorted(per_seed)
    blocks = range(len(per_seed[seeds[0]]))
    lines = [f"### Rating diagnostics: seeds {', '.join(map(str, seeds))} (mean ± sd)", "",
             "Split-half reliability of the ratings (Spearman between halves of the rating images / Spearman-Brown for all):", "",
             "| block | halves ρ | all images |", "|---|---|---|"]
    for b in blocks:
        rows = [per_seed[s][b]["split_half"] for s in seeds]
        lines.append(f"| {b} | {_mean_sd([r['spearman'] for r in rows])} | {_mean_sd([r['spearman_brown'] for r in rows])} |")
    lines += ["", "Centrality: Spearman of the ratings (lower = better) against how much each path's predictions vary "
              "over the images, and against log width:", "", "| block | rating vs prediction spread | rating vs log width |",
              "|---|---|---|"]
    for b in blocks:
        rows = [per_seed[s][b]["centrality"] for s in seeds]
        lines.append(f"| {b} | {_mean_sd([r['rating_vs_prediction_spread'] for r in rows])} | "
                     f"{_mean_sd([r['rating_vs_log_width'] for r in rows])} |")
    lines += ["", "Rating formulas on the same supernet outputs: Spearman vs marginal accuracy / partial after log width:", "",
              "| formula | " + " | ".join(f"block {b}" for b in blocks) + " |", "|---|" + "---|" * len(blocks)]
    for name in per_seed[seeds[0]][0]["formulas"]:
        cells = []
        for b in blocks:
            f = [per_seed[s][b]["formulas"][name] for s in seeds]
            cells.append(f"{_mean_sd([x['spearman'] for x in f])} / {_mean_sd([x['partial_log_width'] for x in f])}")
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    spread = [per_seed[s][b].get("training_spread") for s in seeds for b in blocks]
    if all(x is not None for x in spread):
        lines += ["", "Prediction spread during training (mean distance of a step's normalised predictions to their "
                  "mean, over its images; first / last tenth of the block's steps):", "",
                  "| block | first tenth | last tenth |", "|---|---|---|"]
        for b in blocks:
            rows = [per_seed[s][b]["training_spread"] for s in seeds]
            lines.append(f"| {b} | {_mean_sd([r['first'] for r in rows])} | {_mean_sd([r['last'] for r in rows])} |")
    cond = [per_seed[s][1]["conditional"] for s in seeds if len(per_seed[s]) > 1]
    if cond:
        lines += ["", f"Block 1 against the accuracy of architectures through the run's own block-0 choice: Spearman "
                  f"{_mean_sd([c['spearman'] for c in cond])}, partial {_mean_sd([c['partial_log_width'] for c in cond])}; "
                  f"that conditional truth against the marginal one: {_mean_sd([c['conditional_vs_marginal_spearman'] for c in cond])}."]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--from", dest="source", type=Path, required=True, help="a benchmarks/rating.py output folder (NATS)")
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--truth", type=Path, default=NATS_TRUTH)
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args(argv)
    out = args.out or args.source
    from bossnas.evaluation.correlation import load_truth

    u = Universe.of("nats-sss")
    truth_map = load_truth(args.truth)
    truth = np.array([truth_map[a] for a in u.archs])
    per_seed, seconds = {}, {}
    for seed in (int(s) for s in args.seeds.split(",")):
        run = args.source / f"seed-{seed}" / "run"
        if not (run / "checkpoint.pt").is_file():
            raise SystemExit(f"{run} has no checkpoint: run benchmarks/rating.py for seed {seed} first")
        start = time.perf_counter()
        scratch = out / f"seed-{seed}" / "diagnostics-scratch"
        scratch.mkdir(parents=True, exist_ok=True)
        try:
            per_seed[seed] = diagnose(block_outputs(run, scratch), u, truth)
            for row in per_seed[seed]:
                row["training_spread"] = spread_during_training(run).get(row["block"])
        finally:
            shutil.rmtree(scratch, ignore_errors=True)
        seconds[seed] = round(time.perf_counter() - start, 1)
        print(f"seed {seed}: {seconds[seed]} s", flush=True)
    write_json(out / "diagnostics.json", {"source": str(args.source), "seeds": per_seed, "seconds": seconds, "machine": machine()})
    text = markdown(per_seed)
    (out / "diagnostics.md").write_text(text)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
