"""``bossnas latency RUN``: measure the latency table of a run's space on this machine."""

from __future__ import annotations

import time
from pathlib import Path

import typer

from bossnas.errors import BossNASError


def latency(
    run_dir: Path = typer.Argument(..., help="a run folder (trained or finished)"),
    device: str = typer.Option("cpu", "--device", help="cpu | cuda | cuda:N: the device you deploy on, which need not be "
                               "the one you search on (default: cpu)"),
    batch: int = typer.Option(1, "--batch", min=1, help="images per call"),
    threads: int | None = typer.Option(None, "--threads", min=1, help="intra-op threads (default: torch's)"),
    rounds: int = typer.Option(15, "--rounds", min=1, help="interleaved timing rounds per entry"),
    statistic: str = typer.Option("min", "--statistic",
                                  help="min of the rounds (repeatable, sums to whole networks) or median (with the current load)"),
    force: bool = typer.Option(False, "--force", help="measure again over an existing table"),
) -> None:
    """Time every path of every block (stem in block 0, head in the last) into RUN/latency_<device>.csv."""
    from bossnas.search.latency import latency_file, measure_latency, plot_pareto
    from bossnas.search.report import read_best_arch, run_space, tables_from_state
    from bossnas.train.runner import load_run
    from bossnas.utils.device import resolve_device

    config, ckpt = load_run(run_dir)
    space = run_space(config, ckpt)
    target = resolve_device(device)
    out = latency_file(run_dir, str(target))
    if out.exists() and not force:
        raise BossNASError(f"'{out}' exists; add --force to measure again")
    # one entry per legal (previous boundary, path): where paths depend on the previous block, fewer than all pairs
    entries = sum(sum(space.path_counts(b.index).values()) for b in space.blocks)
    typer.echo(f"measuring {space.name} at {space.in_channels}x{space.image_size}x{space.image_size}, batch {batch}, "
               f"on {target} ({threads or 'default'} threads), {statistic} of {rounds} rounds; {len(space.blocks)} blocks, "
               f"{entries} entries (each path after every boundary the previous block can end with)")
    start = time.perf_counter()
    table = measure_latency(space, target, batch, threads, rounds, statistic,
                            progress=lambda b, n: typer.echo(f"  block {b}: {n} entries timed"))
    table.write_csv(out)
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
