"""``bossnas plot``: the training curves and rating distributions of a run, as PNGs."""

from __future__ import annotations

import math
from pathlib import Path

import typer


def plot(
    run_dir: Path = typer.Argument(..., help="a search run folder or a retraining folder"),
    out: Path | None = typer.Option(None, "--out", "-o", help="folder for the PNGs (default: the run folder)"),
) -> None:
    """Draw loss.png (loss and learning rate per block) and, for a search, ratings.png (ratings per block)."""
    from bossnas.plot_curves import plot_run

    plots = plot_run(run_dir, out)
    for curve in plots.curves:
        line = f"{curve.label}: {len(curve.steps)} steps"
        losses = [x for x in curve.loss if math.isfinite(x)]  # a non-finite loss is logged as null
        if losses:
            line += f", loss {losses[0]:.4f} -> {losses[-1]:.4f}"
        top1 = [x for x in curve.top1 if math.isfinite(x)]
        if top1:
            line += f", test top-1 {top1[-1]:.2f}%"
        typer.echo(line)
    for b in plots.ratings:
        typer.echo(f"block {b.block}: {len(b.ratings)} paths rated, best {b.best_path} ({b.best_rating:.5f})")
    for note in plots.notes:
        typer.echo(f"note: {note}", err=True)
    for path in plots.written:
        typer.echo(f"plot -> {path}")


def register(app: typer.Typer) -> None:
    app.command()(plot)
