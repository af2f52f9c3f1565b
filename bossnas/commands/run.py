"""``bossnas run``: train, rate, choose and report in one command."""

from __future__ import annotations

import time

import typer

from bossnas.commands.common import (
    DataDirOpt,
    DataOpt,
    DeviceOpt,
    ForceOpt,
    MaxFlopsOpt,
    MaxParamsOpt,
    NprocOpt,
    OutOpt,
    OverridesArg,
    PresetOpt,
    QuietOpt,
    ResumeOpt,
    SearchBatchSizeOpt,
    SearchEpochsOpt,
    SearchLrOpt,
    SpaceOpt,
    _launch,
    shortcut_keys,
)
from bossnas.commands.search import _finish, _parse_budget
from bossnas.commands.train import _train


def run(
    overrides: list[str] | None = OverridesArg,
    preset: str | None = PresetOpt,
    space: str | None = SpaceOpt,
    data: str | None = DataOpt,
    data_dir: str | None = DataDirOpt,
    out: str | None = OutOpt,
    resume: bool = ResumeOpt,
    force: bool = ForceOpt,
    device: str | None = DeviceOpt,
    epochs: int | None = SearchEpochsOpt,
    batch_size: int | None = SearchBatchSizeOpt,
    lr: float | None = SearchLrOpt,
    max_flops: str | None = MaxFlopsOpt,
    max_params: str | None = MaxParamsOpt,
    quiet: bool = QuietOpt,
    nproc: int | None = NprocOpt,
) -> None:
    """Train every block, rate every path, choose the architecture and write the report.

    With no arguments: the quickstart (NATS size space on the embedded digits data).
    """
    if nproc is not None:
        _launch(nproc)
    from bossnas import distributed as dist

    start = time.perf_counter()
    flops, params = _parse_budget(max_flops, "--max-flops"), _parse_budget(max_params, "--max-params")
    extra = {**shortcut_keys(epochs, batch_size, lr), "search.max_flops": flops, "search.max_params": params}
    _, config, run_dir, console = _train(preset, overrides, space, data, data_dir, out, resume, force, device, quiet, extra)
    if not dist.is_main():
        return
    from bossnas.plot_curves import draw_run_pictures

    draw_run_pictures(run_dir, console)  # before the report, which links them
    # the run's budgets as this command resolved them (a --resume may set new ones)
    names = ("--max-flops" if flops is not None else "search.max_flops", "--max-params" if params is not None else "search.max_params")
    _finish(run_dir, config.search.max_flops, config.search.max_params, console, wall=time.perf_counter() - start,
            budget_names=names)
    console.print(f"report: {run_dir / 'report.md'}  (wall {time.perf_counter() - start:.1f} s)")


def register(app: typer.Typer) -> None:
    app.command()(run)
