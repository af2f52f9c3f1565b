"""``bossnas latency RUN``: measure the latency table of a run's space on this machine."""

from __future__ import annotations

import os
import time
from pathlib import Path

import typer

from bossnas.errors import BossNASError


def latency(
    run_dir: Path = typer.Argument(..., help="a run folder (trained or finished)"),
    device: str = typer.Option("cpu", "--device", help="cpu | cuda | cuda:N: the device you deploy on, which need not be "
                               "the one you search on (default: cpu)"),
    batch: int = typer.Option(1, "--batch", min=1, help="images per call"),
    threads: int | None = typer.Option(None, "--threads", min=1, help="intra-op threads (default: torch's; at most the CPUs here)"),
    rounds: int = typer.Option(15, "--rounds", min=1, help="interleaved timing rounds per entry"),
    statistic: str = typer.Option("min", "--statistic",
                                  help="min of the rounds (repeatable, sums to whole networks) or median (with the current load)"),
    force: bool = typer.Option(False, "--force", help="measure again over an existing table"),
) -> None:
    """Time every path of every block (stem in block 0, head in the last) into RUN/latency_<device>.csv."""
    from bossnas.commands.common import _console
    from bossnas.runs import check_writable_folder, interrupt_on_signals
    from bossnas.search.latency import (
        STATISTICS,
        check_latency_batch,
        latency_file,
        measure_latency,
        parse_latency_device,
        plot_pareto,
        timings_count,
    )
    from bossnas.search.report import read_best_arch, run_space, tables_from_state
    from bossnas.train.runner import load_run
    from bossnas.utils.progress import Bar

    # every check before the first line about measuring, and before any time is spent
    config, ckpt = load_run(run_dir)
    space = run_space(config, ckpt)
    target = parse_latency_device(device)
    if statistic not in STATISTICS:
        raise BossNASError(f"--statistic '{statistic}' is not one of {', '.join(STATISTICS)}")
    cpus = os.cpu_count() or 1
    if threads is not None and threads > cpus:
        raise BossNASError(f"--threads {threads} is more than the {cpus} CPUs here; give at most {cpus}")
    check_latency_batch(space, batch, target)
    check_writable_folder(run_dir, "run folder")
    out = latency_file(run_dir, target)
    if out.exists() and not force:
        raise BossNASError(f"'{out}' exists; add --force to measure again")
    # one entry per legal (previous boundary, path): where paths depend on the previous block, fewer than all pairs
    entries = sum(sum(space.path_counts(b.index).values()) for b in space.blocks)
    typer.echo(f"measuring {space.name} at {space.in_channels}x{space.image_size}x{space.image_size}, batch {batch}, "
               f"on {target} ({threads or 'default'} threads), {statistic} of {rounds} rounds; {len(space.blocks)} blocks, "
               f"{entries} entries (each path after every boundary the previous block can end with)")
    start = time.perf_counter()
    bar = Bar(_console(), "latency", timings_count(space, rounds), "timing")
    done, where = 0, {"block": 0}

    def tick(block: int) -> None:
        nonlocal done
        done += 1
        where["block"] = block
        bar.update(done, block=f"{block + 1}/{len(space.blocks)}")

    def stopped() -> str:
        kept = f"'{out}' is as it was" if out.exists() else "nothing was written"
        return f"while timing block {where['block']} ({done} of {bar.total} timings); {kept}; run the same command again"

    try:
        with interrupt_on_signals(stopped):
            table = measure_latency(space, target, batch, threads, rounds, statistic, tick=tick,
                                    progress=lambda b, n: typer.echo(f"  block {b}: {n} entries timed"),
                                    space_options=dict(config.model.space_options))
            bar.close()
            table.write_csv(out)
    except BaseException:
        bar.abort()
        raise
    typer.echo(f"{out}  ({time.perf_counter() - start:.0f} s)")
    best = run_dir / "best_arch.json"
    chosen = space.parse_arch(read_best_arch(best)["arch"]) if best.is_file() else None
    if chosen is not None:
        typer.echo(f"chosen architecture {space.format_arch(chosen)}: {table.latency(chosen) * 1e3:.3f} ms (table sum)")
    rated = ckpt["state"]["tables"]
    if len(rated) == len(space.blocks):  # every block rated: draw where the architectures lie
        typer.echo(f"rating vs latency / FLOPs: {plot_pareto(run_dir, space, tables_from_state(space, rated), table, chosen)}")
    example = f"{table.latency(chosen) * 0.8e3:.2f}ms" if chosen is not None else "3ms"
    typer.echo(f"choose under a budget: bossnas search {run_dir} --max-latency {example}"
               + ("" if target.type == "cpu" else f" --latency-device {target.type}"))


def register(app: typer.Typer) -> None:
    app.command()(latency)


__all__ = ["latency", "register"]
