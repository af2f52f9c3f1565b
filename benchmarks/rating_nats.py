"""Rating accuracy of BossNAS on NATS-Bench SSS CIFAR-10, against the real accuracy table.

Trains the Siamese supernet block by block on CIFAR-10, rates every path of every block,
rates all 32,768 architectures (sum of block ratings) and compares the ranking with the
published CIFAR-10 accuracies, side by side with the official BossNAS ratings and the
baselines (sum of widths, parameters, FLOPs, random). Writes report.md, report.json and
plots into the output folder.

    python benchmarks/rating_nats.py --preset smoke
    python benchmarks/rating_nats.py --preset cpu --ablation no-ensemble
    python benchmarks/rating_nats.py --preset gpu --device cuda

Budgets (``--preset``): smoke = a few CPU minutes (CI-sized), cpu = at most 60 minutes on
2 CPU cores, gpu = at most 8 minutes on one H100 including data loading.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import DEFAULT_CACHE, REPO, SHARED_DATA, ensure_cifar10, machine, write_json  # noqa: E402

#: Budget presets: config overrides. Images are CIFAR-10 train images (a fixed subset);
#: the rating views come from the CIFAR-10 test split.
PRESETS: dict[str, dict[str, object]] = {
    "smoke": {
        "data.image_size": 16, "data.train_images": 512, "train.epochs": 1, "train.batch_size": 64,
        "model.hidden_dim": 256, "model.proj_dim": 64, "search.rate_images": 64, "search.recal_batches": 1,
        "train.lr": 0.05, "train.warmup_epochs": 0.1,
    },
    "cpu": {
        "data.image_size": 16, "data.train_images": 12288, "train.epochs": 2, "train.batch_size": 128,
        "model.hidden_dim": 512, "model.proj_dim": 128, "search.rate_images": 512, "search.recal_batches": 2,
        "train.lr": 0.05, "train.warmup_epochs": 0.1,
    },
    "gpu": {
        "data.image_size": 32, "train.epochs": 6, "train.batch_size": 256,
        "model.hidden_dim": 1024, "model.proj_dim": 256, "search.rate_images": 2048, "search.recal_batches": 4,
        "train.lr": 0.1, "train.warmup_epochs": 0.5, "train.channels_last": True,
    },
}

ABLATIONS: dict[str, dict[str, object]] = {
    "none": {},
    "no-ensemble": {"train.ensemble": False},
    "uniform": {"train.sampling": "uniform"},
    "no-bn-recal": {"search.bn_recalibration": False},
    "k4": {"train.paths_per_step": 4},
}

OFFICIAL = SHARED_DATA / "nats-sss" / "bossnas-official-block-scores.csv"
TRUTH = SHARED_DATA / "nats-sss" / "cifar10-test-accuracy.csv"


def run_search(preset: str, ablation: str, data_dir: Path, out: Path, device: str, seed: int, resume: bool, quiet: bool,
               extra: list[str] | None = None):
    from bossnas.config import load_config
    from bossnas.train.runner import BlockwiseSearch

    overrides = {**PRESETS[preset], **ABLATIONS[ablation], "data.name": "cifar10", "data.root": str(data_dir),
                 "device": device, "seed": seed}
    for item in extra or []:
        key, value = item.split("=", 1)
        overrides[key] = value
    config = load_config(None, [f"{k}={v}" for k, v in overrides.items()])
    start = time.perf_counter()
    search = BlockwiseSearch.open(config, out / "run", resume=resume and (out / "run" / "checkpoint.pt").exists(),
                                  force=not resume, show_progress=not quiet)
    setup_s = time.perf_counter() - start
    state = search.run()
    wall = time.perf_counter() - start
    return search, state, overrides, {"setup_s": setup_s, "wall_s": wall, "train_s": state.train_seconds, "rate_s": state.rate_seconds}


def spearman_within_deciles(score: np.ndarray, truth: np.ndarray, flops: np.ndarray) -> float:
    """Mean Spearman inside each FLOPs decile: does the score rank architectures of equal cost?"""
    from scipy import stats

    edges = np.quantile(flops, np.linspace(0, 1, 11))
    values = []
    for lo, hi in zip(edges[:-1], edges[1:]):
        mask = (flops >= lo) & (flops <= hi)
        if mask.sum() > 2 and np.ptp(score[mask]) > 0:
            values.append(stats.spearmanr(score[mask], truth[mask]).statistic)
    return float(np.mean(values))


def pick(score: np.ndarray, flops: np.ndarray, truth: np.ndarray, budget: float | None) -> tuple[int, float]:
    """(index of the best-scored architecture within budget, best accuracy reachable within it)."""
    mask = np.ones_like(flops, dtype=bool) if budget is None else flops <= budget
    idx = np.flatnonzero(mask)
    # ties on score go to the cheaper architecture
    best = idx[np.lexsort((flops[idx], -score[idx]))[0]]
    return int(best), float(truth[idx].max())


def evaluate(archs: list[str], rows: dict[str, np.ndarray], truth: np.ndarray, flops: np.ndarray) -> dict:
    from bossnas.evaluation.correlation import correlate

    max_f = flops.max()
    results = {}
    for name, score in rows.items():
        c = correlate(score, truth, lower_is_better=False)
        entry = {"kendall": c.kendall, "spearman": c.spearman, "pearson": c.pearson,
                 "decile_spearman": spearman_within_deciles(score, truth, flops)}
        for label, budget in (("any", None), ("25%", 0.25 * max_f), ("50%", 0.5 * max_f)):
            chosen, best = pick(score, flops, truth, budget)
            entry[f"pick_{label}"] = float(truth[chosen])
            entry[f"arch_{label}"] = archs[chosen]
            entry[f"best_{label}"] = best
        results[name] = entry
    return results


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", choices=sorted(PRESETS), default="smoke")
    parser.add_argument("--ablation", choices=sorted(ABLATIONS), default="none")
    parser.add_argument("--data-dir", type=Path, default=DEFAULT_CACHE)
    parser.add_argument("--archive", type=Path, default=SHARED_DATA / "cifar10-jpeg.tar.gz",
                        help="CIFAR-10 JPEG archive to unpack where ../shared is absent")
    parser.add_argument("--truth", type=Path, default=TRUTH, help="arch,test_accuracy CSV")
    parser.add_argument("--official", type=Path, default=OFFICIAL, help="official BossNAS block,widths,loss CSV")
    parser.add_argument("--out", type=Path, default=None, help="output folder (default bench-out/rating-<preset>-<ablation>)")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--resume", action="store_true", help="continue an interrupted benchmark run")
    parser.add_argument("--quiet", action="store_true")
    parser.add_argument("--no-plots", action="store_true")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="extra config override on top of the preset (repeatable)")
    args = parser.parse_args(argv)
    out = args.out or REPO / "bench-out" / f"rating-{args.preset}-{args.ablation}"
    out.mkdir(parents=True, exist_ok=True)

    load_start = time.perf_counter()
    data_dir = ensure_cifar10(args.data_dir, args.archive)
    prepare_s = time.perf_counter() - load_start
    search, state, overrides, timing = run_search(args.preset, args.ablation, data_dir, out, args.device, args.seed,
                                                  args.resume, args.quiet, args.set)
    timing["prepare_s"] = prepare_s

    from bossnas.evaluation.correlation import load_scores, load_truth
    from bossnas.search.costs import BlockCostTable
    from bossnas.search.report import tables_from_state
    from bossnas.search.select import all_ratings
    from bossnas.spaces import create_space

    tables = tables_from_state(search.space, state.tables)
    arch_tuples, ratings = all_ratings(tables)
    space32 = create_space("nats-sss", in_channels=3, image_size=32, num_classes=10)  # the ground truth's setting
    archs = [space32.format_arch(a) for a in arch_tuples]
    truth_map = load_truth(args.truth)
    truth = np.array([truth_map[a] for a in archs])
    official_map, _ = load_scores(args.official)
    official = np.array([official_map[a] for a in archs])
    cost_table = BlockCostTable(space32)
    costs = [cost_table.cost(a) for a in arch_tuples]
    flops = np.array([c.flops for c in costs], dtype=float)
    params = np.array([c.params for c in costs], dtype=float)
    widths = np.array([sum(int(w) for w in a.split(":")) for a in archs], dtype=float)
    rng = np.random.default_rng(args.seed)
    # every row is oriented so that larger = predicted better
    rows = {
        "ours (BossNAS, this run)": -ratings,
        "official BossNAS ratings": -official,
        "sum of widths": widths,
        "parameters": params,
        "FLOPs": flops,
        "random": rng.permutation(len(archs)).astype(float),
    }
    results = evaluate(archs, rows, truth, flops)
    chosen = archs[int(np.argmin(ratings))]
    report = {
        "preset": args.preset,
        "ablation": args.ablation,
        "overrides": {k: v for k, v in overrides.items() if k != "data.root"},
        "paths_per_step": overrides.get("train.paths_per_step", "all candidates (8, fair)"),
        "timing": timing,
        "machine": machine(),
        "device": str(search.device),
        "architectures": len(archs),
        "chosen_arch": chosen,
        "chosen_accuracy": float(truth_map[chosen]),
        "best_accuracy": float(truth.max()),
        "best_paths": state.best_paths,
        "results": results,
        "command": "python benchmarks/rating_nats.py " + " ".join(argv if argv is not None else sys.argv[1:]),
    }
    write_json(out / "report.json", report)
    md = render_markdown(report)
    (out / "report.md").write_text(md)
    if not args.no_plots:
        make_plots(out, ratings, official, truth, tables, official_blocks(args.official))
    print(md)
    return 0


def render_markdown(report: dict) -> str:
    t = report["timing"]
    lines = [
        f"### NATS-Bench SSS CIFAR-10 rating accuracy: preset `{report['preset']}`, ablation `{report['ablation']}`",
        "",
        f"- command: `{report['command']}`",
        f"- machine: {report['machine']['machine']}, {report['machine']['cpu_count']} cores, torch {report['machine']['torch']}"
        + (f", {report['machine']['gpu']}" if "gpu" in report["machine"] else "") + f", device {report['device']}; {report['machine']['date']}",
        f"- settings: {', '.join(f'{k}={v}' for k, v in report['overrides'].items() if k not in ('device',))}",
        f"- time: data {t['prepare_s']:.0f} s, setup {t['setup_s']:.0f} s, training {t['train_s']:.0f} s, rating {t['rate_s']:.0f} s, "
        f"wall {t['wall_s']:.0f} s",
        f"- chosen architecture `{report['chosen_arch']}`: {report['chosen_accuracy']:.2f}% (best in the space {report['best_accuracy']:.2f}%)",
        "",
        "All rows over the same 32,768 architectures. Signs: every score is oriented so that a larger value means "
        "\"predicted better\" (ratings/losses negated), so positive correlations are good. `pick` = CIFAR-10 accuracy of "
        "the architecture the row ranks first within the FLOPs budget (fraction of the largest network's FLOPs); `best` = the best "
        "accuracy reachable within that budget. `decile ρ` = mean Spearman inside each FLOPs decile.",
        "",
        "| scores | Kendall τ | Spearman ρ | Pearson r | decile ρ | pick (any) | pick ≤25% | pick ≤50% |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for name, r in report["results"].items():
        lines.append(
            f"| {name} | {r['kendall']:.3f} | {r['spearman']:.3f} | {r['pearson']:.3f} | {r['decile_spearman']:.3f} | "
            f"{r['pick_any']:.2f} | {r['pick_25%']:.2f} | {r['pick_50%']:.2f} |"
        )
    first = next(iter(report["results"].values()))
    lines += ["", f"Best reachable: any {first['best_any']:.2f}, ≤25% FLOPs {first['best_25%']:.2f}, ≤50% FLOPs {first['best_50%']:.2f}.", ""]
    return "\n".join(lines)


def official_blocks(path: Path) -> dict[tuple[int, str], float]:
    """The official loss of every block path, keyed by (block, 'a:b')."""
    import csv

    with open(path, newline="") as f:
        return {(int(r["block"]), r["widths"]): float(r["loss"]) for r in csv.DictReader(f)}


def make_plots(out: Path, ratings, official, truth, tables, official_table: dict) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(11, 4.5))
    for ax, values, title in ((axes[0], ratings, "ours"), (axes[1], official, "official BossNAS")):
        hb = ax.hexbin(values, truth, gridsize=60, bins="log", cmap="viridis", mincnt=1)
        ax.set_xlabel("rating (sum of block losses, lower = better)")
        ax.set_ylabel("CIFAR-10 test accuracy (%)")
        ax.set_title(f"{title}: 32,768 architectures")
        fig.colorbar(hb, ax=ax, label="architectures (log)")
    fig.tight_layout()
    fig.savefig(out / "rating_vs_accuracy.png", dpi=120)
    plt.close(fig)

    widths = [8, 16, 24, 32, 40, 48, 56, 64]
    fig, axes = plt.subplots(2, 2, figsize=(10, 9))
    for row, (block, table) in enumerate(list(enumerate(tables))[:2]):
        ours = np.array([[table[(a, b)] for b in widths] for a in widths])
        off = np.array([[official_table[(block, f"{a}:{b}")] for b in widths] for a in widths])
        for col, (grid, title) in enumerate(((ours, "ours"), (off, "official"))):
            ax = axes[row, col]
            im = ax.imshow(grid, cmap="magma_r", origin="lower")
            ax.set_xticks(range(8), widths)
            ax.set_yticks(range(8), widths)
            ax.set_xlabel(f"layer {2 * block + 2} width")
            ax.set_ylabel(f"layer {2 * block + 1} width")
            ax.set_title(f"block {block} ratings, {title} (lighter = lower = better)")
            fig.colorbar(im, ax=ax)
    fig.tight_layout()
    fig.savefig(out / "block_heatmaps.png", dpi=120)
    plt.close(fig)


if __name__ == "__main__":
    raise SystemExit(main())
