"""``bossnas search``: choose the architecture of a trained run (and the report ``run`` writes)."""

from __future__ import annotations

import math
from pathlib import Path

import typer

from bossnas.commands.common import MaxFlopsOpt, MaxParamsOpt, _console
from bossnas.errors import BossNASError


def _finish(run_dir: Path, max_flops: float | None, max_params: float | None, console, wall: float | None = None,
            out: Path | None = None, own_budget: bool = True, max_latency: float | None = None,
            latency_device: str = "cpu") -> dict:
    from bossnas.search.report import finish_run

    done = finish_run(run_dir, max_flops, max_params, wall, out, own_budget, max_latency, latency_device)
    record = done.record
    from bossnas.curves import log_choice

    log_choice(run_dir, f"search/{done.best_arch.stem}", f"{record['arch']}  rating {record['rating']:.5f}  "
               f"params {record['params']:,}  FLOPs {record['flops'] / 1e6:.2f}M")
    console.print(
        f"[bold green]chosen architecture[/] {record['arch']}  rating {record['rating']:.5f}  "
        f"params {record['params']:,}  FLOPs {record['flops'] / 1e6:.2f}M  -> {done.best_arch}"
    )
    if done.latency is not None:
        from bossnas.search.latency import plot_pareto

        console.print(f"latency {record['latency_ms']:.3f} ms (table sum, {latency_device}); rating vs latency / FLOPs: "
                      f"{plot_pareto(done.best_arch.parent, done.space, done.tables, done.latency, done.arch)}")
    return record


def _parse_budget(text: str | None, name: str) -> float | None:
    from bossnas.config import parse_number

    if text is None:
        return None
    try:
        value = parse_number(text)
    except ValueError:
        raise BossNASError(f"{name} '{text}' is not a number (e.g. 100M, 3.4G, 5e8)") from None
    # inf would be written into best_arch.json as the invalid JSON token Infinity; no budget is no option
    if not (value > 0 and math.isfinite(value)):
        raise BossNASError(f"{name} must be a finite number > 0 (leave it out for no budget), got '{text}'")
    return value


def search(
    run_dir: Path = typer.Argument(..., help="a finished run folder"),
    max_flops: str | None = MaxFlopsOpt,
    max_params: str | None = MaxParamsOpt,
    max_latency: str | None = typer.Option(None, "--max-latency", help="latency budget (e.g. 3ms, 800us) against "
                                           "RUN/latency_<device>.csv from `bossnas latency RUN`"),
    latency_device: str = typer.Option("cpu", "--latency-device", help="whose latency table: cpu or cuda"),
    out: Path | None = typer.Option(None, "--out", "-o", help="folder for best_arch.json and report.md (default: the run "
                                    "folder; under a budget other than the run's: best_arch-<budget>.json there)"),
) -> None:
    """Choose the best-rated architecture of a trained run, optionally under a FLOPs/params/latency budget.

    The run's own best_arch.json / report.md are never overwritten by another budget: that
    choice goes to best_arch-<budget>.json / report-<budget>.md, or to --out.
    """
    from bossnas.search.latency import parse_duration

    _finish(run_dir, _parse_budget(max_flops, "--max-flops"), _parse_budget(max_params, "--max-params"), _console(),
            out=out, own_budget=False, max_latency=None if max_latency is None else parse_duration(max_latency),
            latency_device=latency_device)


def register(app: typer.Typer) -> None:
    app.command()(search)
