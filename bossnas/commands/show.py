"""``bossnas show``: layers, parameters and FLOPs of one architecture or named model."""

from __future__ import annotations

from pathlib import Path

import typer

from bossnas.commands.common import SpaceOpt
from bossnas.errors import BossNASError


def show(
    arch: str = typer.Argument(..., help="architecture string (64:40:48:64:56, nats-sss/64:40:48:64:56), model name "
                               "(bossnet-t0), or a search's best_arch.json / run folder"),
    space: str | None = SpaceOpt,
    image_size: int | None = typer.Option(None, "--image-size", help="input side (default: the model's or the space's)"),
    in_channels: int | None = typer.Option(None, "--in-channels", help="default: the model's, else 3"),
    num_classes: int | None = typer.Option(None, "--num-classes", help="default: the named model's, else 10"),
    plot: Path | None = typer.Option(None, "--plot", help="also draw the architecture into this .png/.pdf/.svg"),
) -> None:
    """Layers, parameters and FLOPs of one architecture or named model (and a picture with --plot).

    One row per layer (the stem, every searchable layer, the head) with its choice, module,
    output shape, parameters and FLOPs (2 x multiply-adds), then the totals.
    """
    from bossnas.models import is_search_record, list_models, resolve_model
    from bossnas.search.costs import arch_cost
    from bossnas.search.layer_costs import layer_rows, render_layer_table
    from bossnas.spaces import create_space

    if plot is not None:
        from bossnas.plot import plot_kind

        plot_kind(plot)
    spec = resolve_model(arch, space)
    in_channels = spec.in_channels if in_channels is None else in_channels
    named = spec.name in list_models()
    num_classes = num_classes if num_classes is not None else (spec.num_classes if named or is_search_record(arch) else 10)
    try:
        s = create_space(spec.space, in_channels=in_channels, image_size=image_size or spec.image_size,
                         num_classes=num_classes, **spec.space_options)
    except TypeError as exc:
        raise BossNASError(f"options for space '{spec.space}': {exc}") from None
    parsed = s.parse_arch(spec.arch)
    cost = arch_cost(s, parsed)
    label = f"{spec.name}: " if named else ""
    typer.echo(f"{label}{s.name} {s.format_arch(parsed)}  input {in_channels}x{s.image_size}x{s.image_size}, {num_classes} classes")
    for line in render_layer_table(layer_rows(s, parsed)):
        typer.echo("  " + line)
    typer.echo(f"params {int(cost.params):,}  FLOPs {cost.flops / 1e6:.2f}M  multiply-adds {cost.macs / 1e6:.2f}M")
    if plot is not None:
        from bossnas.plot import plot_arch

        title = f"{label}{s.name} {s.format_arch(parsed)}  ({in_channels}x{s.image_size}x{s.image_size} input)"
        typer.echo(f"plot -> {plot_arch(s, parsed, plot, title)}")


def register(app: typer.Typer) -> None:
    app.command()(show)
