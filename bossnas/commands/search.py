"""``bossnas search``: choose the architecture of a trained run (and the report ``run`` writes)."""

from __future__ import annotations

import math
from pathlib import Path

import typer

from bossnas.commands.common import MaxFlopsOpt, MaxParamsOpt, _console
from bossnas.errors import BossNASError


def _finish(run_dir: Path, max_flops: float | None, max_params: float | None, console, wall: float | None = None,
            out: Path | None = None, max_latency: float | None = None, latency_device: str = "cpu",
            budget_names: tuple[str, str] | None = None, result_console=None) -> dict:
    """Choose, write the record and report, and print the result (on ``result_console``, default
    ``console``) and any warning that the ratings cannot tell the best paths apart (on ``console``)."""
    from bossnas.search.noise import noise_summary
    from bossnas.search.report import finish_run

    done = finish_run(run_dir, max_flops, max_params, wall, out, max_latency, latency_device, budget_names)
    record, result = done.record, result_console or console
    from bossnas.curves import log_choice

    log_choice(run_dir, f"search/{done.best_arch.stem}", f"{record['arch']}  rating {record['rating']:.5f}  "
               f"params {record['params']:,}  FLOPs {record['flops'] / 1e6:.2f}M")
    result.print(
        f"[bold green]chosen architecture[/] {record['arch']}  rating {record['rating']:.5f}  "
        f"params {record['params']:,}  FLOPs {record['flops'] / 1e6:.2f}M  -> {done.best_arch}"
    )
    if done.latency is not None:
        result.print(f"latency {record['latency_ms']:.3f} ms (table sum, {latency_device}); rating vs latency / FLOPs: "
                     f"{done.pareto}")
    summary = noise_summary(done.noises or [])
    if summary:
        console.print(f"[yellow]warning[/]: {summary} (details: {done.report})")
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
    out: Path | None = typer.Option(None, "--out", "-o", help="folder for the record and report (default: the run folder); "
                                    "best_arch.json there unless it holds one of another budget, then best_arch-<budget>.json"),
) -> None:
    """Choose the best-rated architecture of a trained run, optionally under a FLOPs/params/latency budget.

    The run's own best_arch.json / report.md are never overwritten by a choice under another
    budget: that choice goes to best_arch-<budget>.json / report-<budget>.md (in --out, too).
    """
    from rich.console import Console

    from bossnas.search.latency import latency_device as check_device
    from bossnas.search.latency import parse_duration

    flops, params = _parse_budget(max_flops, "--max-flops"), _parse_budget(max_params, "--max-params")
    limit = None if max_latency is None else parse_duration(max_latency)
    check_device(latency_device, "--latency-device")
    # the result on stdout (to read or pipe), warnings on stderr
    _finish(run_dir, flops, params, _console(), out=out, max_latency=limit, latency_device=latency_device,
            result_console=Console(highlight=False, soft_wrap=True))


def register(app: typer.Typer) -> None:
    app.command()(search)
