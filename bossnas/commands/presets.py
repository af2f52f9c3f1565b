"""``bossnas presets``: the built-in presets."""

from __future__ import annotations

import typer


def presets() -> None:
    """List the built-in presets."""
    from bossnas.config import list_presets

    for name in list_presets():
        typer.echo(name)


def register(app: typer.Typer) -> None:
    app.command()(presets)
