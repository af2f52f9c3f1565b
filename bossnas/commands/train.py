"""``bossnas train``: train the supernet block by block (and the config / run-folder steps ``run`` shares)."""

from __future__ import annotations

from pathlib import Path

import typer

from bossnas.commands.common import (
    DataDirOpt,
    DataOpt,
    DeviceOpt,
    ForceOpt,
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
    _console,
    _launch,
    shortcut_keys,
)


def _resolve_config(preset, overrides, space, data, data_dir, device, out, resume, extra=None):
    from bossnas.config import RunConfig, build_config, read_preset
    from bossnas.runs import saved_config_tree

    preset_name = preset or "quickstart"
    run_dir = Path(out) if out else Path("runs") / Path(preset_name).stem
    options = {"space": space, "data.name": data, "data.root": data_dir, "device": device, **(extra or {})}
    # a resume continues with the run's own config (config.yaml, or the checkpoint's copy)
    saved = saved_config_tree(run_dir) if resume and preset is None else None
    base = saved if saved is not None else (read_preset(preset_name), preset_name)
    return build_config(RunConfig, base, options, overrides, saved=saved is not None), run_dir


def _train(preset, overrides, space, data, data_dir, out, resume, force, device, quiet, extra=None):
    from bossnas import distributed as dist
    from bossnas.runs import StopSignals
    from bossnas.train.runner import BlockwiseSearch

    config, run_dir = _resolve_config(preset, overrides, space, data, data_dir, device, out, resume, extra)
    if dist.launched():
        # rank 0's config is the run's (other nodes may not see the run folder's config.yaml)
        dist.init_from_env(config.device)
        config = dist.broadcast_object(config)
    console = _console()
    # from here on a SIGINT / SIGTERM ends in a checkpoint and one line, not a traceback
    signals = StopSignals(announce=dist.is_main())
    with signals:
        search = BlockwiseSearch.open(config, run_dir, resume=resume, force=force, console=console,
                                      show_progress=not quiet, signals=signals)
        console.print(
            f"bossnas: space {search.space.name} ({search.space.num_architectures():,} architectures), data {config.data.name} "
            f"({len(search.data.train)} train / {len(search.data.test)} held-out, {search.data.in_channels}x{search.data.image_size}x"
            f"{search.data.image_size}), device {search.device}, run folder {run_dir}"
        )
        if search.data.note:  # how an image folder's channels and size were decided
            console.print(search.data.note, soft_wrap=True)
        search.run()
    return search, search.config, run_dir, console  # with the space defaults filled in


def train(
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
    quiet: bool = QuietOpt,
    nproc: int | None = NprocOpt,
) -> None:
    """Train the Siamese supernet block by block (each block's paths are rated to fix its best path)."""
    if nproc is not None:
        _launch(nproc)
    _, _, run_dir, console = _train(preset, overrides, space, data, data_dir, out, resume, force, device, quiet,
                                    shortcut_keys(epochs, batch_size, lr))
    from bossnas import distributed as dist

    if dist.is_main():
        from bossnas.plot_curves import draw_run_pictures

        draw_run_pictures(run_dir, console)
    console.print(f"trained; choose the architecture with `bossnas search {run_dir}`")


def register(app: typer.Typer) -> None:
    app.command()(train)
