"""HyTra search on CIFAR-10 with the new defaults against the old choices, same seed.

Runs the HyTra search twice on real CIFAR-10 (the ``hytra-cifar10`` preset scaled to a budget):

- ``new``: the defaults of issue 13 (``paths=official``: the official restricted path lists and
  their dynamic rule; ``search_shortcut=official``: the official search supernet's shortcuts);
- ``old``: the choices before it (``paths=static``, ``search_shortcut=standalone``: average-pool
  shortcuts in the supernet);

and writes ``OUT/report.json`` and ``OUT/report.md`` with, for each: the chosen architecture, its
multiply-adds at 224x224 and at the run's input, wall time, and a rating heat map per block
(``OUT/<variant>/block_<k>_heatmap.png``). ``--extra-old KEY=VALUE`` / ``--extra-new KEY=VALUE``
(repeatable) add config overrides to one side, e.g. ``--extra-new train.augment_pairs=4``.

    python benchmarks/hytra_defaults.py --preset smoke --threads 1   # about 2 minutes: checks the pipeline
    python benchmarks/hytra_defaults.py --preset cpu         # the CPU budget

Each variant runs in ``OUT/<variant>/run`` and is resumable: a finished variant is reused, an
interrupted one continues from its checkpoint (``--fresh`` starts over).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import DEFAULT_CACHE, REPO, SHARED_DATA, ensure_cifar10, machine, write_json  # noqa: E402

#: Budgets on top of the ``hytra-cifar10`` preset. smoke: the pipeline in under 2 minutes on 2
#: busy cores (nothing to read in its numbers); cpu: the preset scaled down for a CPU (not timed
#: here; the report gives the wall time).
PRESETS: dict[str, dict[str, object]] = {
    "smoke": {
        "data.image_size": 8, "data.train_images": 32, "train.epochs": 1, "train.batch_size": 16,
        "model.hidden_dim": 16, "model.proj_dim": 8, "search.rate_images": 8, "search.recal_batches": 1,
        "train.warmup_epochs": 0.1, "model.space_options.width_mult": 0.0625, "train.paths_per_step": 2,
    },
    "cpu": {
        "data.image_size": 32, "data.train_images": 4096, "train.epochs": 2, "train.batch_size": 64,
        "model.hidden_dim": 256, "model.proj_dim": 64, "search.rate_images": 256, "search.recal_batches": 2,
        "train.warmup_epochs": 0.1, "model.space_options.width_mult": 0.125,
    },
}

#: the two sides: the defaults after issue 13, and the choices before it
VARIANTS: dict[str, dict[str, object]] = {
    "new": {},
    "old": {"model.space_options.paths": "static", "model.space_options.search_shortcut": "standalone",
            "train.augment_pairs": 1},
}
#: the side of the reference input the paper's MAdds are given at
REFERENCE_SIZE = 224


def parse_pairs(items: list[str], flag: str) -> dict[str, str]:
    pairs = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            sys.exit(f"{flag} '{item}' is not KEY=VALUE, e.g. {flag} train.augment_pairs=4")
        pairs[key.strip()] = value.strip()
    return pairs


# ----------------------------------------------------------------------------- one variant
def run_variant(name: str, overrides: dict, folder: Path, fresh: bool, quiet: bool) -> dict:
    """Search (resuming where a checkpoint exists), choose, and measure the choice."""
    from bossnas.config import load_config
    from bossnas.search.report import finish_run
    from bossnas.train.runner import BlockwiseSearch

    config = load_config("hytra-cifar10", [f"{k}={v}" for k, v in overrides.items()])
    run_dir = folder / "run"
    resume = not fresh and (run_dir / "checkpoint.pt").is_file()
    start = time.perf_counter()
    search = BlockwiseSearch.open(config, run_dir, resume=resume, force=not resume, show_progress=not quiet)
    state = search.run()
    search.folder.unlock()
    wall = time.perf_counter() - start
    done = finish_run(run_dir, wall_seconds=wall)
    space = done.space
    tables = {b: [[p, r] for p, r in state.tables[str(b)]] for b in range(len(space.blocks))}
    maps = [str(block_heatmap(space, b, dict((p, r) for p, r in tables[b]), folder / f"block_{b}_heatmap.png",
                              f"{name}: block {b}").relative_to(folder.parent)) for b in tables]
    from bossnas.search.select import count_archs

    rated = [[space.parse_path(b, p) for p, _ in tables[b]] for b in tables]
    return {
        "variant": name, "overrides": {k: v for k, v in overrides.items() if k != "data.root"},
        "arch": done.record["arch"], "rating": done.record["rating"], "params": done.record["params"],
        "madds_run": done.record["madds"], "input": done.record["input"],
        "madds_224": madds_at(done.record, REFERENCE_SIZE),
        "best_paths": state.best_paths, "paths_rated": [len(tables[b]) for b in tables],
        "rated_architectures": count_archs(space, rated), "space_architectures": space.num_architectures(),
        "timing": {"wall_s": wall, "train_s": state.train_seconds, "rate_s": state.rate_seconds, "resumed": resume},
        "heatmaps": maps,
    }


def madds_at(record: dict, size: int) -> int:
    """Multiply-adds of the chosen architecture's standalone network at ``size`` x ``size`` input."""
    from bossnas.search.costs import arch_cost
    from bossnas.spaces import create_space

    space = create_space("hytra", in_channels=record["input"][0], image_size=size, num_classes=record["num_classes"],
                         **record["space_options"])
    return int(arch_cost(space, space.parse_arch(record["arch"])).macs)


def block_heatmap(space, block: int, ratings: dict[str, float], path: Path, title: str) -> Path:
    """Ratings of one block as a grid: rows = the first two layers' choices, columns = the last two
    (empty where no rated path has them); the best path is boxed. Lower (darker) is better."""
    import numpy as np
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.patches import Rectangle

    split = [p.split(space.separator) for p in ratings]
    rows = sorted({tuple(s[:2]) for s in split}, key=lambda r: [_order(c) for c in r])
    cols = sorted({tuple(s[2:]) for s in split}, key=lambda c: [_order(x) for x in c])
    grid = np.full((len(rows), len(cols)), np.nan)
    for parts, value in zip(split, ratings.values()):
        grid[rows.index(tuple(parts[:2])), cols.index(tuple(parts[2:]))] = value
    fig = Figure(figsize=(max(5.0, 0.45 * len(cols) + 3), max(3.0, 0.3 * len(rows) + 2)))
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    image = ax.imshow(np.ma.masked_invalid(grid), cmap="viridis", aspect="auto")
    fig.colorbar(image, ax=ax, label="rating (lower = better)")
    ax.set_xticks(range(len(cols)), [" ".join(c) for c in cols], rotation=90, fontsize=6)
    ax.set_yticks(range(len(rows)), [" ".join(r) for r in rows], fontsize=6)
    ax.set_xlabel("layers 3-4 of the block")
    ax.set_ylabel("layers 1-2 of the block")
    best = min(ratings, key=ratings.__getitem__).split(space.separator)
    r, c = rows.index(tuple(best[:2])), cols.index(tuple(best[2:]))
    ax.add_patch(Rectangle((c - 0.5, r - 0.5), 1, 1, fill=False, edgecolor="red", lw=2))
    ax.set_title(f"{title} ({len(ratings)} paths; best boxed)", fontsize=9)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    return path


def _order(choice: str) -> tuple[int, str]:
    """Fine scales first, then the op name: ResConv@56 < ResConv@28 < ResAtt@14 < ResConv@14 < ..."""
    op, _, side = choice.partition("@")
    return -int(side), op


# ----------------------------------------------------------------------------- report
def render_markdown(report: dict) -> str:
    lines = [
        "# HyTra search on CIFAR-10: new defaults against the old choices",
        "",
        f"Preset `{report['preset']}`, seed {report['seed']}, {report['machine'].get('cpu_count')} CPU(s), "
        f"torch {report['machine'].get('torch')}, {report['machine'].get('date')}. Command: `{report['command']}`.",
        "",
        "| | new (defaults) | old |",
        "|---|---|---|",
    ]
    new, old = report["variants"]["new"], report["variants"]["old"]

    def row(label: str, get) -> None:
        lines.append(f"| {label} | {get(new)} | {get(old)} |")

    row("overrides", lambda v: ", ".join(f"`{k}={x}`" for k, x in v["overrides"].items() if k in v["side_overrides"]) or "none")
    row("chosen architecture", lambda v: f"`{v['arch']}`")
    row("rating (lower = better)", lambda v: f"{v['rating']:.5f}")
    row(f"MAdds at {REFERENCE_SIZE}x{REFERENCE_SIZE}", lambda v: f"{v['madds_224'] / 1e6:,.1f} M")
    row("MAdds at the run's input", lambda v: f"{v['madds_run'] / 1e6:,.2f} M ({v['input'][1]}x{v['input'][2]})")
    row("parameters", lambda v: f"{v['params'] / 1e6:.3f} M")
    row("paths rated per block", lambda v: " / ".join(map(str, v["paths_rated"])))
    row("architectures the ratings combine into", lambda v: f"{v['rated_architectures']:,} (space: {v['space_architectures']:,})")
    row("wall time", lambda v: f"{v['timing']['wall_s']:.0f} s (train {v['timing']['train_s']:.0f} s, "
                               f"rate {v['timing']['rate_s']:.0f} s)")
    lines += ["", "Ratings of the two runs come from different supernets and path sets, so their values are "
              "not comparable with each other; the chosen architectures and their costs are.", ""]
    for name in ("new", "old"):
        lines += [f"## {name}: rating heat maps", ""]
        lines += [f"![{m}]({m})" for m in report["variants"][name]["heatmaps"]]
        lines.append("")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", choices=sorted(PRESETS), default="smoke")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--extra-old", action="append", default=[], metavar="KEY=VALUE",
                        help="config override for the old side only (repeatable)")
    parser.add_argument("--extra-new", action="append", default=[], metavar="KEY=VALUE",
                        help="config override for the new side only (repeatable)")
    parser.add_argument("--data-dir", type=Path, default=DEFAULT_CACHE)
    parser.add_argument("--archive", type=Path, default=SHARED_DATA / "cifar10-jpeg.tar.gz",
                        help="CIFAR-10 JPEG archive to unpack where ../shared is absent")
    parser.add_argument("--out", type=Path, default=None, help="output folder (default bench-out/hytra-defaults-<preset>)")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--fresh", action="store_true", help="start both variants over")
    parser.add_argument("--threads", type=int, default=None,
                        help="torch threads (default: torch's); on a small shared machine 1 avoids oversubscription")
    parser.add_argument("--quiet", action="store_true")
    args = parser.parse_args(argv)
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    extras = {"old": parse_pairs(args.extra_old, "--extra-old"), "new": parse_pairs(args.extra_new, "--extra-new")}
    out = args.out or REPO / "bench-out" / f"hytra-defaults-{args.preset}"
    out.mkdir(parents=True, exist_ok=True)
    data_dir = ensure_cifar10(args.data_dir, args.archive)

    variants = {}
    for name in ("new", "old"):
        side = {**VARIANTS[name], **extras[name]}
        overrides = {**PRESETS[args.preset], **side, "data.name": "cifar10", "data.root": str(data_dir),
                     "device": args.device, "seed": args.seed}
        folder = out / name
        done = folder / "result.json"
        if done.is_file() and not args.fresh and json.loads(done.read_text())["overrides"] == {
                k: v for k, v in overrides.items() if k != "data.root"}:
            result = json.loads(done.read_text())
        else:
            folder.mkdir(parents=True, exist_ok=True)
            result = run_variant(name, overrides, folder, args.fresh, args.quiet)
            write_json(done, result)
        result["side_overrides"] = sorted(side)
        variants[name] = result
    report = {"preset": args.preset, "seed": args.seed, "machine": machine(), "variants": variants,
              "command": "python benchmarks/hytra_defaults.py " + " ".join(argv if argv is not None else sys.argv[1:])}
    write_json(out / "report.json", report)
    md = render_markdown(report)
    (out / "report.md").write_text(md)
    print(md)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
