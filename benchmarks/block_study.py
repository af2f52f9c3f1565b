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


def study_seed(run_dir: Path, block: int, overrides: dict[str, str], scratch: Path) -> dict:
    """Train and rate ``block`` of a finished run again with ``overrides``; its table and best path."""
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
    search.run(stop_after_block=block + 1)
    return {"table": dict(search.state.tables[str(block)]), "best_path": search.state.best_paths[block],
            "seconds": round(time.perf_counter() - start, 1)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--from", dest="source", type=Path, required=True, help="a benchmarks/rating.py output folder (NATS)")
    parser.add_argument("--block", type=int, required=True, help="the block to train again (1 or later)")
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="config override (repeatable)")
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
            result = study_seed(args.source / f"seed-{seed}" / "run", args.block, overrides, scratch)
            shutil.rmtree(scratch, ignore_errors=True)
            write_json(done, result)
        score = -np.array([result["table"][p] for p in u.block_paths[args.block]])
        log_width = u.path_covariates(args.block)["log width"]
        accuracy = block_accuracy(args.block, score, marginal, {"log width": log_width})
        figures = {"seed": seed, "spearman": accuracy.spearman, "partial_log_width": accuracy.partial["log width"],
                   "spearman_vs_log_width": float(spearmanr(score, log_width)[0]),
                   "best_path": result["best_path"], "seconds": result["seconds"]}
        per_seed.append(figures)
        print(json.dumps(figures), flush=True)
    summary = {}
    for key in ("spearman", "partial_log_width", "spearman_vs_log_width"):
        values = np.array([s[key] for s in per_seed])
        summary[key] = {"mean": float(values.mean()), "sd": float(values.std(ddof=1)) if len(values) > 1 else None}
    write_json(args.out / "report.json", {"source": str(args.source), "block": args.block, "overrides": overrides,
                                          "per_seed": per_seed, "mean_sd": summary, "machine": machine()})
    print("block", args.block, overrides, {k: f"{v['mean']:.2f} ± {v['sd'] or 0:.2f}" for k, v in summary.items()})
    return 0


if __name__ == "__main__":
    sys.exit(main())
