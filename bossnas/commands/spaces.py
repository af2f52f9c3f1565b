"""``bossnas spaces``: the search spaces."""

from __future__ import annotations

import typer


def spaces() -> None:
    """List the search spaces."""
    from bossnas.spaces import create_space, list_spaces

    for name in list_spaces():
        space = create_space(name)
        blocks = "/".join(str(len(space.block_paths(b.index))) for b in space.blocks)
        typer.echo(f"{name:10s} {space.num_architectures():>22,} architectures, paths per block {blocks}: {space.description}")


def register(app: typer.Typer) -> None:
    app.command()(spaces)
