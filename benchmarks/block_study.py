"""Study one block: train it again, with other settings, on top of a finished run's earlier blocks.

A per-block figure (Spearman of a block's path ratings against each path's marginal accuracy,
and the partial Spearman after log width) is the cheapest signal of whether a training setting
helps, but a full run spends most of its time on block 0. This takes each seed of a finished
``benchmarks/rating.py`` folder (NATS-Bench SSS), keeps its trained blocks before ``--block``
(weights and BatchNorm statistics as the original run's block saw them when it started: the
checkpoint kept after the block before it was rated) and its best paths,
starts block ``--block`` and everything after it from the seed's initial weights, trains and
rates that block with the ``--set`` overrides, and reports the block's figures per seed and as
mean ± sd. Without overrides it reproduces the original block's table (checked on seed 0 of the
cpu benchmark: the same ratings, Spearman and best path).

    python benchmarks/block_study.py --from bench-out/nats-cpu --block 1 --seeds 0,1,2 --set train.ensemble=false
    python benchmarks/block_study.py --from bench-out/nats-cpu --block 1 --to-end --set data.image_size=32 ...
    python benchmarks/block_study.py --from bench-out/nats-cpu --block 1 --to-end --stack 5 ...

``--to-end`` trains and rates every later block too (architecture figures: Spearman, top-10%
Kendall, the pick); ``--stack N`` adds the released official code's provisional stacking (an
ablation of a defect of that code, not the method: docs/method.md).

Block 1 of the cpu preset costs about 4 core-minutes a seed (times the epochs). Writes
``OUT/seed-S/block.json`` (resumable: finished seeds are reused) and ``OUT/report.json``.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import machine, write_json  # noqa: E402
from rating import NATS_TRUTH, Universe, rated_checkpoint  # noqa: E402


def _fresh_keys(model, block: int) -> set[str]:
    """State-dict keys of block ``block`` and later (online and target backbone) and of every head."""
    import itertools

    later = [m for b in range(block, len(model.space.blocks))
             for m in (model.online.block_module(b), model.target.block_module(b))]
    tensors = {id(t) for m in later for t in itertools.chain(m.parameters(), m.buffers())}
    named = itertools.chain(model.named_parameters(remove_duplicate=False), model.named_buffers(remove_duplicate=False))
    return {k for k, t in named if id(t) in tensors} | {k for k in model.state_dict() if k.startswith(("online_heads.", "target_heads."))}


class ProvisionalStacking:
    """The released official code's stacking, as an ablation (not the method; docs/method.md):
    the block being trained is rated every ``1 / ratings`` of its steps, and from the first
    such rating on its provisional best path is appended to the prefix, so the block trains
    stacked on its own output (the official NATS run: ratings every 10 of 50 epochs, 40 of
    the 50 stacked). Stands in for ``bossnas_step`` in the runner while the block trains."""

    def __init__(self, search, block: int, ratings: int = 5):
        from bossnas.data.batches import epoch_batches

        cfg = search.config.train
        steps = len(epoch_batches(len(search.data.train), cfg.batch_size, search.config.seed, block, 0)) * cfg.epochs
        self.search, self.block = search, block
        self.every = max(1, steps // ratings)
        self.last = self.every * (ratings - 1)
        self.calls, self.provisional = 0, None
        self.history: list[str] = []

    def rate(self) -> None:
        from bossnas.search.rating import rate_block

        search, cfg = self.search, self.search.config
        paths = search.block_paths(self.block)
        recal, rate = search.rating_inputs(self.block)
        ratings = rate_block(search.model, self.block, paths, recal, rate, cfg.search.batch_size or cfg.train.batch_size,
                             cfg.search.bn_recalibration, search.autocast, recalibrate_predictor=cfg.search.recalibrate_predictor)
        self.provisional = paths[min(range(len(paths)), key=ratings.__getitem__)]
        self.history.append(search.space.format_path(self.provisional))
        search._set_modes(self.block)  # back to training

    def __call__(self, model, block, paths, view_1, view_2, best_paths=(), *args, **kwargs):
        from bossnas.train.step import bossnas_step

        if block == self.block:
            if self.calls and self.calls % self.every == 0 and self.calls <= self.last:
                self.rate()
            self.calls += 1
            if self.provisional is not None:
                best_paths = [*best_paths, self.provisional]
        return bossnas_step(model, block, paths, view_1, view_2, best_paths, *args, **kwargs)


def study_seed(run_dir: Path, block: int, overrides: dict[str, str], scratch: Path, to_end: bool = False,
               stack_ratings: int = 0) -> dict:
    """Train and rate ``block`` (with ``to_end``: and every block after it) of a finished run
    again with ``overrides``; the tables and best paths. ``stack_ratings`` > 0: with the
    released code's provisional stacking (:class:`ProvisionalStacking`) in every block trained."""
    import yaml

    from bossnas.config import set_key
    from bossnas.train.runner import BlockwiseSearch, RunState, load_run

    config, final = load_run(run_dir)
    # the supernet as block ``block`` started training in the original run: right after block
    # ``block - 1`` was rated (a learning prefix changes the earlier blocks after that)
    ckpt = rated_checkpoint(run_dir, block - 1, config, final)
    for key, value in overrides.items():
        set_key(config, key, yaml.safe_load(value))
    config.device = "cpu"
    search = BlockwiseSearch(config, scratch, show_progress=False)  # initial weights from the seed
    state = search.model.state_dict()
    fresh = _fresh_keys(search.model, block)
    state.update({k: v for k, v in ckpt["model"].items() if k in state and k not in fresh})
    search.model.load_state_dict(state)
    saved = ckpt["state"]
    search.state = RunState(block=block, phase="train", best_paths=list(saved["best_paths"][:block]),
                            tables={str(b): saved["tables"][str(b)] for b in range(block)})
    start = time.perf_counter()
    last = len(search.space.blocks) if to_end else block + 1
    stacked = {}
    for b in range(block, last):
        if stack_ratings:
            import bossnas.train.runner as runner

            stacking = ProvisionalStacking(search, b, stack_ratings)
            original, runner.bossnas_step = runner.bossnas_step, stacking
            try:
                search.run(stop_after_block=b + 1)
            finally:
                runner.bossnas_step = original
            stacked[str(b)] = stacking.history
        else:
            search.run(stop_after_block=b + 1)
    result = {"table": dict(search.state.tables[str(block)]), "best_path": search.state.best_paths[block],
              "seconds": round(time.perf_counter() - start, 1)}
    if to_end:
        result["tables"] = [dict(search.state.tables[str(b)]) for b in range(len(search.space.blocks))]
        result["best_paths"] = list(search.state.best_paths)
    if stack_ratings:
        result["provisional_paths"] = stacked
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--from", dest="source", type=Path, required=True, help="a benchmarks/rating.py output folder (NATS)")
    parser.add_argument("--block", type=int, required=True, help="the block to train again (1 or later)")
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="config override (repeatable)")
    parser.add_argument("--to-end", action="store_true",
                        help="also train and rate every block after --block (architecture figures too)")
    parser.add_argument("--stack", type=int, default=0, metavar="N",
                        help="the released code's stacking (an ablation): rate each trained block N times during its "
                             "training and stack its provisional best path on the prefix (official: 5, every 10 of 50 epochs)")
    parser.add_argument("--truth", type=Path, default=NATS_TRUTH)
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args(argv)
    if args.block < 1:
        raise SystemExit("--block must be 1 or later: block 0 has no earlier blocks to keep (use rating.py --blocks 1)")
    from scipy.stats import spearmanr

    from bossnas.evaluation.correlation import load_truth
    from bossnas.evaluation.size_controlled import block_accuracy, path_marginals

    overrides = dict(item.split("=", 1) for item in args.set)
    u = Universe.of("nats-sss")
    truth_map = load_truth(args.truth)
    truth = np.array([truth_map[a] for a in u.archs])
    marginal = path_marginals(u.path_index[:, args.block], truth, len(u.block_paths[args.block]))
    per_seed = []
    for seed in (int(s) for s in args.seeds.split(",")):
        folder = args.out / f"seed-{seed}"
        done = folder / "block.json"
        if done.is_file():
            result = json.loads(done.read_text())
        else:
            scratch = folder / "run"
            shutil.rmtree(scratch, ignore_errors=True)
            scratch.mkdir(parents=True)
            result = study_seed(args.source / f"seed-{seed}" / "run", args.block, overrides, scratch, args.to_end, args.stack)
            shutil.rmtree(scratch, ignore_errors=True)
            write_json(done, result)
        score = -np.array([result["table"][p] for p in u.block_paths[args.block]])
        log_width = u.path_covariates(args.block)["log width"]
        accuracy = block_accuracy(args.block, score, marginal, {"log width": log_width})
        figures = {"seed": seed, "spearman": accuracy.spearman, "partial_log_width": accuracy.partial["log width"],
                   "spearman_vs_log_width": float(spearmanr(score, log_width)[0]),
                   "best_path": result["best_path"], "seconds": result["seconds"]}
        if "tables" in result:
            from rating import block_figures, score_figures

            blocks = block_figures(u, result["tables"], truth)
            for b in range(args.block + 1, len(blocks)):
                figures[f"block_{b}_spearman"] = blocks[b]["spearman"]
                figures[f"block_{b}_partial_log_width"] = blocks[b]["partial"]["log width"]
            ratings = u.ratings(result["tables"])
            archs = score_figures(u, -ratings, truth)
            figures.update(arch_spearman=archs["spearman"], arch_top10_kendall=archs["top10_kendall"],
                           pick=float(truth[int(np.argmin(ratings))]), best_paths=result["best_paths"])
        if "provisional_paths" in result:
            figures["provisional_paths"] = result["provisional_paths"]
        per_seed.append(figures)
        print(json.dumps(figures), flush=True)
    summary = {}
    keys = [k for k, v in per_seed[0].items() if isinstance(v, float) and k != "seconds"]
    for key in keys:
        values = np.array([s[key] for s in per_seed])
        summary[key] = {"mean": float(values.mean()), "sd": float(values.std(ddof=1)) if len(values) > 1 else None}
    write_json(args.out / "report.json", {"source": str(args.source), "block": args.block, "overrides": overrides,
                                          "per_seed": per_seed, "mean_sd": summary, "machine": machine()})
    print("block", args.block, overrides, {k: f"{v['mean']:.2f} ± {v['sd'] or 0:.2f}" for k, v in summary.items()})
    return 0


if __name__ == "__main__":
    sys.exit(main())
