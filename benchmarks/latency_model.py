"""How well the additive latency model predicts a whole network's latency.

Measures a latency table (``bossnas.search.latency.measure_latency``: every (previous key,
path) of every block, stem in block 0, head in the last), picks ``--archs`` architectures
spread evenly over the table's latency range (quantiles of the modelled latency of every
architecture, or of a seeded sample of 20,000 for large spaces), builds each one as a
standalone network and measures it end to end with the same interleaved method
(``bossnas.utils.timing.interleaved_times``), then reports the error of the table's sum
against the measurement.

    python benchmarks/latency_model.py                         # nats-sss, 1x16x16 (quickstart), CPU, batch 1
    python benchmarks/latency_model.py --device cuda --image-size 32 --in-channels 3
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import REPO, machine, write_json  # noqa: E402


def spread_archs(space, table, count: int) -> list:
    """``count`` architectures at evenly spaced quantiles of the modelled latency."""
    from bossnas.search.latency import PLOT_SAMPLE, sample_archs

    ranked = sorted(sample_archs(space, PLOT_SAMPLE), key=table.latency)
    picks = [ranked[round(i * (len(ranked) - 1) / (count - 1))] for i in range(count)]
    return list(dict.fromkeys(picks))


def main(argv: list[str] | None = None) -> int:
    from bossnas.search.latency import LatencyTable, measure_latency
    from bossnas.spaces import create_space
    from bossnas.utils.device import resolve_device
    from bossnas.utils.timing import interleaved_times, medians

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--space", default="nats-sss")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--image-size", type=int, default=16)
    parser.add_argument("--in-channels", type=int, default=1)
    parser.add_argument("--width-mult", type=float, default=0.25, help="for hytra / mbconv")
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--archs", type=int, default=24)
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args(argv)
    device = resolve_device(args.device)
    options = {} if args.space == "nats-sss" else {"width_mult": args.width_mult}
    space = create_space(args.space, in_channels=args.in_channels, image_size=args.image_size, num_classes=10, **options)
    start = time.perf_counter()
    # medians as the table, minima from its spread: both statistics from the same rounds
    table = measure_latency(space, device, args.batch, args.threads, args.rounds, statistic="median")
    table_s = time.perf_counter() - start
    archs = spread_archs(space, table, args.archs)
    x = torch.randn(args.batch, args.in_channels, args.image_size, args.image_size, device=device)
    nets = [space.build_standalone(a).eval().to(device) for a in archs]

    def call(net):
        def run() -> None:
            with torch.inference_mode():
                net(x)
        return run

    times = interleaved_times([call(n) for n in nets], args.rounds, args.threads)
    # the same rounds give both statistics: the table's minima are its spread's lower ends
    lowest = LatencyTable(space, [{e: lo for e, (lo, _) in t.items()} for t in table.spread], table.spread,
                          table.prev_paths, table.meta)
    rows = []
    for arch, seconds, fastest in zip(archs, medians(times), map(min, times)):
        modelled, modelled_min = table.latency(arch), lowest.latency(arch)
        rows.append({"arch": space.format_arch(arch), "modelled_ms": modelled * 1e3, "measured_ms": seconds * 1e3,
                     "error": (modelled - seconds) / seconds, "modelled_min_ms": modelled_min * 1e3,
                     "measured_min_ms": fastest * 1e3, "error_min": (modelled_min - fastest) / fastest})
    errors = [abs(r["error"]) for r in rows]
    errors_min = [abs(r["error_min"]) for r in rows]
    report = {
        "machine": machine(), "device": str(device), "space": space.name,
        "input": [args.in_channels, args.image_size, args.image_size], "batch": args.batch, "threads": args.threads,
        "rounds": args.rounds, "table_entries": sum(len(t) for t in table.seconds), "table_seconds": table_s,
        "median_abs_error": statistics.median(errors), "max_abs_error": max(errors),
        "mean_signed_error": statistics.mean(r["error"] for r in rows),
        "median_abs_error_min": statistics.median(errors_min), "max_abs_error_min": max(errors_min),
        "mean_signed_error_min": statistics.mean(r["error_min"] for r in rows), "rows": rows,
        "command": "python benchmarks/latency_model.py " + " ".join(argv if argv is not None else sys.argv[1:]),
        "wall_seconds": time.perf_counter() - start,
    }
    out = args.out or REPO / "bench-out" / f"latency-model-{device.type}"
    write_json(out / "latency_model.json", report)
    (out / "latency_model.md").write_text(render(report))
    print(render(report))
    return 0


def render(r: dict) -> str:
    m = r["machine"]
    lines = [
        f"Additive latency model on {r['device']}" + (f" ({m['gpu']})" if "gpu" in m else f" ({m['cpu_count']} cores)")
        + f", torch {m['torch']}, {m['date']}: {r['space']} at {'x'.join(map(str, r['input']))}, batch {r['batch']}, "
        f"{r['threads']} thread(s), {r['rounds']} interleaved rounds; table of {r['table_entries']} entries measured in "
        f"{r['table_seconds']:.0f} s, whole run {r['wall_seconds']:.0f} s.",
        "",
        f"Command: `{r['command']}`",
        "",
        f"**{len(r['rows'])} architectures, medians of the rounds: median |error| {r['median_abs_error']:.1%}, max |error| "
        f"{r['max_abs_error']:.1%}, mean signed error {r['mean_signed_error']:+.1%}; minima of the rounds: median |error| "
        f"{r['median_abs_error_min']:.1%}, max |error| {r['max_abs_error_min']:.1%}, mean signed error "
        f"{r['mean_signed_error_min']:+.1%}** (error = (table sum - measured) / measured).",
        "",
        "| architecture | table sum ms (median) | measured ms (median) | error | table sum ms (min) | measured ms (min) | error |",
        "|---|---|---|---|---|---|---|",
    ]
    lines += [f"| `{row['arch']}` | {row['modelled_ms']:.3f} | {row['measured_ms']:.3f} | {row['error']:+.1%} | "
              f"{row['modelled_min_ms']:.3f} | {row['measured_min_ms']:.3f} | {row['error_min']:+.1%} |"
              for row in r["rows"]]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    raise SystemExit(main())
