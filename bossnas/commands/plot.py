"""``bossnas plot``: the training curves and rating distributions of a run, as PNGs."""

from __future__ import annotations

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
        if curve.loss:
            line += f", loss {curve.loss[0]:.4f} -> {curve.loss[-1]:.4f}"
        if curve.top1:
            line += f", test top-1 {curve.top1[-1]:.2f}%"
        typer.echo(line)
    for b in plots.ratings:
        typer.echo(f"block {b.block}: {len(b.ratings)} paths rated, best {b.best_path} ({b.best_rating:.5f})")
    for path in plots.written:
        typer.echo(f"plot -> {path}")


def register(app: typer.Typer) -> None:
    app.command()(plot)
