"""``bossnas export``: a trained network as a weights bundle, a torch.export program and an ONNX graph."""

from __future__ import annotations

from pathlib import Path

import typer

from bossnas.errors import BossNASError


def export(
    source: Path = typer.Argument(..., help="a `bossnas retrain` folder, or a weights file (with --arch unless it is a bossnas bundle)"),
    arch: str | None = typer.Option(None, "--arch", help="model name or architecture of a plain state dict"),
    weights: str | None = typer.Option(None, "--weights", help="retrain folder: ema or model (default: ema when trained with EMA)"),
    out: Path | None = typer.Option(None, "--out", "-o", help="output folder (default: SOURCE/export, or next to the weights file)"),
    fmt: str = typer.Option("all", "--format", help="all | state-dict (model.pt + model.json) | program (model.pt2)"),
    num_classes: int | None = typer.Option(None, "--num-classes", help="weights file: classes of the head"),
    in_channels: int | None = typer.Option(None, "--in-channels", help="weights file: input channels (default 3)"),
    image_size: int | None = typer.Option(None, "--image-size", help="weights file: input side"),
    force: bool = typer.Option(False, "--force", help="overwrite existing exported files"),
    onnx: bool | None = typer.Option(None, "--onnx/--no-onnx",
                                     help="also write model.onnx, checked in ONNX Runtime (default: with --format all "
                                          "when the onnx extra is installed)"),
) -> None:
    """Write model.pt + model.json (for bossnas.create_model), model.pt2 (torch.export, plain torch) and
    model.onnx (ONNX Runtime; needs `pip install -e ".[onnx]"` in your bossnas clone)."""
    from bossnas.export import (
        ONNX_HINT,
        ONNX_OPSET,
        ema_warning,
        export_model,
        model_from_retrain,
        model_from_weights,
        onnx_available,
    )

    if source.is_dir():
        model, extra = model_from_retrain(source, weights)
        out = out or source / "export"
        warning = ema_warning(source, weights)
        if warning:
            typer.echo(f"warning: {warning}", err=True)
        if not extra["finished"]:
            typer.echo(f"note: '{source}' has not finished training ({extra['epochs_trained']}/{extra['epochs']} epochs); "
                       "exporting its latest checkpoint", err=True)
    elif source.is_file():
        if weights is not None:
            raise BossNASError("--weights applies to a retrain folder; a weights file is exported as it is")
        model, extra = model_from_weights(source, arch, num_classes, in_channels, image_size), {"source": str(source)}
        out = out or source.with_name(source.stem + "-export")
    else:
        raise BossNASError(f"'{source}' does not exist; give a `bossnas retrain` folder or a weights file")
    if onnx is None:
        onnx = fmt == "all" and onnx_available()
        if fmt == "all" and not onnx:
            typer.echo(f"note: model.onnx not written; for ONNX export: {ONNX_HINT}", err=True)
    result = export_model(model, out, extra, fmt, force, onnx=onnx)
    for f in result.files:
        typer.echo(f"{f}  ({f.stat().st_size / 1e6:.2f} MB)")
    spec = result.spec
    typer.echo(f"{spec['name']}: input {spec['in_channels']}x{spec['image_size']}x{spec['image_size']}, {spec['num_classes']} classes; "
               f"reloaded outputs match (max |diff| {result.max_abs_diff:.2e})")
    if result.onnx_max_abs_diff is not None:
        typer.echo(f"model.onnx (opset {ONNX_OPSET}, dynamic batch): ONNX Runtime matches PyTorch "
                   f"(max |diff| {result.onnx_max_abs_diff:.2e})")


def register(app: typer.Typer) -> None:
    app.command()(export)


__all__ = ["BossNASError", "export", "register"]
