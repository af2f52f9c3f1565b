"""``bossnas --version``: the package version (and the torch it runs on), then exit."""

from __future__ import annotations

import typer


def torch_version() -> str:
    """The installed torch's version, read from its package metadata: importing torch to
    ask would take seconds."""
    from importlib import metadata

    try:
        return metadata.version("torch")
    except metadata.PackageNotFoundError:  # a torch built from source without metadata
        import torch

        return torch.__version__


def _print_version(value: bool) -> None:
    if not value:
        return
    from bossnas import __version__

    typer.echo(f"bossnas {__version__} (torch {torch_version()})")
    raise typer.Exit()


def options(
    version: bool = typer.Option(False, "--version", callback=_print_version, is_eager=True,
                                 help="print the version and exit"),
) -> None:
    # options of `bossnas` itself, before the command; the help text stays the app's own
    pass


def register(app: typer.Typer) -> None:
    app.callback()(options)


__all__ = ["options", "register"]
