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


def _data_named(data: str | None, overrides: list[str] | None) -> str | None:
    """The data set the command line asks for: ``--data``, else the last ``data.name=`` override."""
    from bossnas.config import parse_override

    for text in reversed(overrides or []):
        if "=" in text and parse_override(text)[0] == "data.name":
            return parse_override(text)[1]
    return data


def _preset_line(name: str, tree: dict) -> str:
    from bossnas.config import _flatten

    return ", ".join(f"{k}={v}" for k, v in _flatten(tree))


def _resolve_config(preset, overrides, space, data, data_dir, device, out, resume, extra=None):
    """The run's config, its folder and the line saying where the config came from.

    A preset sizes its keys for its own data set: with other data (``--data`` or
    ``data.name=``) its data-bound keys are left out and the data's own defaults apply; with
    other data and no ``--preset`` no preset applies at all (the key table's defaults). The
    default folder is named after the preset, the preset and the data, or the data.
    """
    from bossnas.config import (
        DEFAULT_PRESET,
        RunConfig,
        build_config,
        preset_data,
        read_preset,
        without_data_keys,
    )
    from bossnas.runs import saved_config_tree

    options = {"space": space, "data.name": data, "data.root": data_dir, "device": device, **(extra or {})}
    data_name = _data_named(data, overrides)
    preset_name = preset or DEFAULT_PRESET
    tree = read_preset(preset_name)
    stem, own = Path(preset_name).stem, preset_data(tree)
    if data_name is None or data_name == own:
        folder, how = stem, f"config: preset {stem} ({_preset_line(stem, tree)})"
    elif preset is None:
        tree, folder = None, data_name
        how = (f"config: no preset; {data_name} with the defaults of the key table (the default preset {stem} is "
               f"sized for {own}; --preset NAME applies one anyway)")
    else:
        tree, dropped = without_data_keys(tree)
        folder = f"{stem}-{data_name}"
        how = (f"config: preset {stem} ({_preset_line(stem, tree)}); left out, as sized for {own}, not {data_name}: "
               f"{', '.join(dropped) or 'nothing'}")
    run_dir = Path(out) if out else Path("runs") / folder
    # a resume continues with the run's own config (config.yaml, or the checkpoint's copy)
    saved = saved_config_tree(run_dir) if resume and preset is None else None
    if saved is not None:
        base = (RunConfig.saved_tree(saved[0]), saved[1])
        how = f"config: the run's own ({saved[1]})"
    else:
        base = (tree, preset_name) if tree is not None else None
    return build_config(RunConfig, base, options, overrides), run_dir, how


def _train(preset, overrides, space, data, data_dir, out, resume, force, device, quiet, extra=None):
    from bossnas import distributed as dist
    from bossnas.runs import StopSignals
    from bossnas.train.runner import BlockwiseSearch

    config, run_dir, how = _resolve_config(preset, overrides, space, data, data_dir, device, out, resume, extra)
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
        d = search.data
        console.print(how, soft_wrap=True)
        console.print(
            f"bossnas: space {search.space.name} ({search.space.num_architectures():,} architectures), data {config.data.name} "
            f"({len(d.train)} train, {d.in_channels}x{d.image_size}x{d.image_size}), device {search.device}, run folder {run_dir}"
        )
        console.print(f"rating: {_rating_source(search.config)} (search.rate_split={search.config.search.rate_split})")
        if search.data.note:  # how an image folder's channels and size were decided
            console.print(search.data.note, soft_wrap=True)
        search.run()
    return search, search.config, run_dir, console  # with the space defaults filled in


def _rating_source(config) -> str:
    n = config.search.rate_images
    if config.search.rate_split == "train":
        return f"{n} training images held out of training, a fixed draw of seed {config.seed}"
    return f"{n} images of the test split"


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
