"""``bossnas export``: a trained network as a weights bundle, a torch.export program and an ONNX graph."""

from __future__ import annotations

import contextlib
import signal
import threading
from collections.abc import Iterator
from pathlib import Path

import typer

from bossnas.errors import BossNASError


def export(
    source: Path = typer.Argument(..., help="a `bossnas retrain` folder, or a weights file (with --arch unless it is a bossnas bundle)"),
    arch: str | None = typer.Option(None, "--arch", help="model name or architecture of a plain state dict"),
    weights: str | None = typer.Option(None, "--weights", help="retrain folder: ema or model (default: ema when trained with EMA)"),
    out: Path | None = typer.Option(None, "--out", "-o", help="output folder (default: SOURCE/export, or next to the weights file)"),
    fmt: str = typer.Option("all", "--format", help="all | state-dict (model.pt) | program (model.pt2); model.json, written last, lists them"),
    num_classes: int | None = typer.Option(None, "--num-classes", help="weights file: classes of the head"),
    in_channels: int | None = typer.Option(None, "--in-channels", help="weights file: input channels (default 3)"),
    image_size: int | None = typer.Option(None, "--image-size", help="weights file: input side"),
    force: bool = typer.Option(False, "--force", help="replace a finished export (forms this export does not write are removed)"),
    onnx: bool | None = typer.Option(None, "--onnx/--no-onnx",
                                     help="also write model.onnx, checked in ONNX Runtime (default: with --format all "
                                          "when the onnx extra is installed)"),
) -> None:
    """Write model.pt + model.json (for bossnas.create_model), model.pt2 (torch.export, plain torch) and
    model.onnx (ONNX Runtime; needs `pip install -e ".[onnx]"` in your bossnas clone)."""
    with _signals_as_one_line() as target:
        _export(source, arch, weights, out, fmt, num_classes, in_channels, image_size, force, onnx, target)


def _export(source: Path, arch: str | None, weights: str | None, out: Path | None, fmt: str, num_classes: int | None,
            in_channels: int | None, image_size: int | None, force: bool, onnx: bool | None, target: list[Path]) -> None:
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
    target.append(out)
    result = export_model(model, out, extra, fmt, force, onnx=onnx)
    for note in result.notes:
        typer.echo(f"note: {note}", err=True)
    for f in result.files:
        typer.echo(f"{f}  ({f.stat().st_size / 1e6:.2f} MB)")
    spec = result.spec
    typer.echo(f"{spec['name']}: input {spec['in_channels']}x{spec['image_size']}x{spec['image_size']}, {spec['num_classes']} classes; "
               f"reloaded outputs match (max |diff| {result.max_abs_diff:.2e})")
    if result.onnx_max_abs_diff is not None:
        typer.echo(f"model.onnx (opset {ONNX_OPSET}, dynamic batch): ONNX Runtime matches PyTorch "
                   f"(max |diff| {result.onnx_max_abs_diff:.2e})")


@contextlib.contextmanager
def _signals_as_one_line() -> Iterator[list[Path]]:
    """Ctrl-C or SIGTERM during an export: exit 130 / 143 with one line saying what the output
    folder (appended to the yielded list once known) holds.

    An export cannot stop half-way and continue later; the next export completes an
    interrupted one (its model.json, written last, is missing), so the line says to rerun.
    """
    from bossnas.export import export_state
    from bossnas.runs import Interrupted

    received = [signal.SIGINT]
    target: list[Path] = []

    def on_sigterm(signum: int, _frame: object) -> None:
        received[0] = signum
        raise KeyboardInterrupt

    main_thread = threading.current_thread() is threading.main_thread()
    previous = signal.signal(signal.SIGTERM, on_sigterm) if main_thread else None
    try:
        yield target
    except KeyboardInterrupt:
        name = signal.Signals(received[0]).name
        if not target:
            raise Interrupted(f"interrupted by {name} before anything was written", received[0]) from None
        state, _ = export_state(target[0])
        left = ("it holds an incomplete export; run the same command again to complete it" if state == "incomplete"
                else "nothing in it was changed")
        raise Interrupted(f"interrupted by {name} while exporting to '{target[0]}'; {left}", received[0]) from None
    finally:
        if main_thread:
            signal.signal(signal.SIGTERM, previous)


def register(app: typer.Typer) -> None:
    app.command()(export)


__all__ = ["BossNASError", "export", "register"]
