"""``bossnas presets``: the built-in presets and what each costs."""

from __future__ import annotations

import typer

#: a preset's comment line that gives the compute its source reported (shown as is)
PUBLISHED = "# published compute:"


def describe_preset(name: str) -> list[str]:
    """Three lines: the recipe in short, its counts (see ``bossnas.train.budget``) and its time here."""
    from importlib import resources

    from bossnas.config import load_config, resolve_run_config
    from bossnas.train.budget import search_cost

    config = resolve_run_config(load_config(name))
    d, t = config.data, config.train
    size = f" {d.image_size} px" if d.image_size else ""
    batch = f"{t.batch_size} x {t.accumulate} = {t.batch_size * t.accumulate}" if t.accumulate > 1 else str(t.batch_size)
    augment = d.augment or "auto"
    recipe = (f"{config.space} on {d.name}{size}, batch {batch}, {t.optimizer} lr {t.lr:g}, "
              f"{augment} augmentation x {t.augment_pairs} pair(s)")
    counts = search_cost(config)
    cost = counts.summary()
    text = (resources.files("bossnas") / "presets" / f"{name}.yaml").read_text()
    published = [line[len(PUBLISHED):].strip() for line in text.splitlines() if line.startswith(PUBLISHED)]
    if published:
        cost += f"; published: {published[0]}"
    return [recipe, cost, time_here(config, counts.images)]


def time_here(config, images: int) -> str:
    """What the preset takes on this machine, from the rates an earlier run with its settings measured."""
    from bossnas.train.budget import nominal_input
    from bossnas.train.estimate import minutes, preset_seconds

    in_channels, image_size = nominal_input(config)
    seconds = preset_seconds(config, images, in_channels, image_size)
    if seconds is None:
        return "on this machine: not timed yet (a run with these settings times its first steps)"
    return f"on this machine: about {minutes(seconds)} (from the rates an earlier run with these settings measured here)"


def presets() -> None:
    """List the built-in presets: the recipe, what it costs, and how long it takes here once known.

    The cost is counted on the data set's nominal training size: optimizer steps and path
    passes (the forward + backward of one path on one image pair). The time on this machine
    comes from the rates that a run with the same step settings measured here: every run
    keeps them in a small cache (see docs/reliability.md), so `bossnas run --preset NAME`
    stopped with Ctrl-C after its estimate line is enough to time a preset.
    """
    from bossnas.config import list_presets

    typer.echo("counts on each data set's nominal training size; a path pass is the forward + backward "
               "of one path on one image pair")
    for name in list_presets():
        recipe, cost, here = describe_preset(name)
        typer.echo(f"{name}: {recipe}")
        typer.echo(f"    {cost}")
        typer.echo(f"    {here}")


def register(app: typer.Typer) -> None:
    app.command()(presets)
