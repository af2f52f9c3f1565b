"""``bossnas presets``: the built-in presets and what each costs."""

from __future__ import annotations

import typer

#: a preset's comment line that gives the compute its source reported (shown as is)
PUBLISHED = "# published compute:"


def describe_preset(name: str) -> list[str]:
    """Two lines: the recipe in short, and its counts (see ``bossnas.train.budget``)."""
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
    cost = search_cost(config).summary()
    text = (resources.files("bossnas") / "presets" / f"{name}.yaml").read_text()
    published = [line[len(PUBLISHED):].strip() for line in text.splitlines() if line.startswith(PUBLISHED)]
    if published:
        cost += f"; published: {published[0]}"
    return [recipe, cost]


def presets() -> None:
    """List the built-in presets: the recipe, and what it costs in optimizer steps and path
    passes (forward + backward of one path on one image pair; counts on the data set's
    nominal size, not times)."""
    from bossnas.config import list_presets

    typer.echo("counts on each data set's nominal training size; a path pass is the forward + backward "
               "of one path on one image pair")
    for name in list_presets():
        recipe, cost = describe_preset(name)
        typer.echo(f"{name}: {recipe}")
        typer.echo(f"    {cost}")


def register(app: typer.Typer) -> None:
    app.command()(presets)
