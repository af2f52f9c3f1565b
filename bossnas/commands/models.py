"""``bossnas models``: the registered named models, and the reminder that any architecture is a model."""

from __future__ import annotations

import json

import typer


def model_rows() -> list[dict]:
    """Name, space, arch, input, classes, parameters and multiply-adds of every registered model."""
    from bossnas.models import model_specs
    from bossnas.search.costs import arch_cost
    from bossnas.spaces import create_space

    rows = []
    for spec in model_specs():
        space = create_space(spec.space, image_size=spec.image_size, num_classes=spec.num_classes, **spec.space_options)
        cost = arch_cost(space, space.parse_arch(spec.arch))
        rows.append({"name": spec.name, "space": spec.space, "arch": spec.arch, "image_size": space.image_size,
                     "num_classes": spec.num_classes, "params": int(cost.params), "madds": int(cost.macs),
                     "description": spec.description})
    return rows


def models(as_json: bool = typer.Option(False, "--json", help="print JSON")) -> None:
    """List the named models (parameters, multiply-adds at their input size); any architecture is a model too."""
    from bossnas.spaces import create_space, list_spaces

    rows = model_rows()
    if as_json:
        typer.echo(json.dumps(rows, indent=2))
        return
    if not rows:
        typer.echo("no named models registered")
    for r in rows:
        typer.echo(f"{r['name']:18s} {r['space']:9s} {r['params'] / 1e6:7.2f}M params {r['madds'] / 1e9:7.3f}G MAdds "
                   f"at {r['image_size']}x{r['image_size']}, {r['num_classes']} classes  {r['description']}")
        typer.echo(f"{'':18s} arch {r['arch']}")
    typer.echo("\nAny architecture string of any space is also a model name, written `space/arch` or bare (the "
               "first space that parses it); `bossnas show`, `bossnas retrain` and bossnas.create_model accept "
               "them all, e.g.:")
    for name in list_spaces():
        typer.echo(f"  {name}/{create_space(name).arch_example()}")


def register(app: typer.Typer) -> None:
    app.command()(models)


__all__ = ["model_rows", "models", "register"]
