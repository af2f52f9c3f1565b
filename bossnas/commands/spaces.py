"""``bossnas spaces``: the search spaces."""

from __future__ import annotations

import typer


def spaces() -> None:
    """List the search spaces."""
    from bossnas.spaces import create_space, list_spaces

    for name in list_spaces():
        space = create_space(name)
        # where a block's paths depend on the previous block's path: the range over previous paths
        counts = [sorted(set(space.path_counts(b.index).values())) for b in space.blocks]
        blocks = "/".join(str(c[0]) if len(c) == 1 else f"{c[0]}-{c[-1]}" for c in counts)
        typer.echo(f"{name:10s} {space.num_architectures():>22,} architectures, paths per block {blocks}: {space.description}")


def register(app: typer.Typer) -> None:
    app.command()(spaces)
