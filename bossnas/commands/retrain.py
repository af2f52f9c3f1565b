"""``bossnas retrain``: supervised training of one architecture (logic in :mod:`bossnas.retrain`)."""

from __future__ import annotations

import time
from pathlib import Path

import typer

from bossnas.commands.common import DataDirOpt, DataOpt, DeviceOpt, QuietOpt
from bossnas.errors import BossNASError

ARCH_HELP = ("best_arch.json (or the search folder holding it), a model name (bossnet-t0, see `bossnas models`) "
             "or an architecture (64:40:48:64:56, nats-sss/64:40:48:64:56); optional with --resume")


def retrain(
    arch: str | None = typer.Argument(None, help=ARCH_HELP),
    overrides: list[str] | None = typer.Argument(None, help="retrain keys key=value, e.g. train.epochs=100 data.image_size=32; "
                                                 "train.eval_every=N tests every N epochs (0: only at the end), "
                                                 "data.test_images=N tests on a fixed subset of N test images"),
    data: str | None = DataOpt,
    data_dir: str | None = DataDirOpt,
    epochs: int | None = typer.Option(None, "--epochs", help="train.epochs: epochs (default: 30)"),
    batch_size: int | None = typer.Option(None, "--batch-size", help="train.batch_size: images per step (default: 128)"),
    lr: float | None = typer.Option(None, "--lr", help="train.lr: peak learning rate (default: sgd 0.1, adamw 1e-3)"),
    optimizer: str | None = typer.Option(None, "--optimizer", help="train.optimizer: sgd | adamw (default: sgd)"),
    weight_decay: float | None = typer.Option(None, "--weight-decay", help="train.weight_decay (default: sgd 5e-4, adamw 0.05)"),
    label_smoothing: float | None = typer.Option(None, "--label-smoothing", help="train.label_smoothing (default: 0.1)"),
    ema_decay: float | None = typer.Option(None, "--ema-decay", help="train.ema_decay; 0: no EMA (default: auto)"),
    out: str | None = typer.Option(None, "--out", "-o", help="output folder (default: SEARCH/retrain or runs/retrain-<arch>)"),
    resume: bool = typer.Option(False, "--resume", help="continue the retraining in --out from its last checkpoint"),
    force: bool = typer.Option(False, "--force", help="start over in a folder that already holds a retraining"),
    device: str | None = DeviceOpt,
    quiet: bool = QuietOpt,
) -> None:
    """Train an architecture with labels and report top-1 / top-5 on the test split.

    Writes config.yaml, checkpoint.pt (every epoch, atomic) and metrics.json into the output folder.
    """
    from bossnas.retrain import METRICS, Retrainer, retrain_config
    from bossnas.runs import StopSignals
    from bossnas.utils.progress import make_console

    overrides = list(overrides or [])
    if arch is not None and "=" in arch and not Path(arch).exists():
        overrides.insert(0, arch)  # `bossnas retrain --resume -o DIR train.epochs=5`: no architecture given
        arch = None
    options = {"data.name": data, "data.root": data_dir, "device": device, "train.epochs": epochs,
               "train.batch_size": batch_size, "train.lr": lr, "train.optimizer": optimizer,
               "train.weight_decay": weight_decay, "train.label_smoothing": label_smoothing,
               "train.ema_decay": ema_decay}
    start = time.perf_counter()
    config, out_dir = retrain_config(arch, overrides, options, out, resume)
    console = make_console()
    # from here on a SIGINT / SIGTERM ends in a checkpoint and one line, not a traceback
    with StopSignals() as signals:
        trainer = Retrainer.open(config, out_dir, resume=resume, force=force, console=console, show_progress=not quiet,
                                 signals=signals)
        console.print(trainer.describe(), soft_wrap=True)
        if trainer.data.note:  # how an image folder's channels and size were decided
            console.print(trainer.data.note, soft_wrap=True)
        metrics = trainer.run()
    line = f"test top-1 {metrics['test']['top1']:.2f}%  top-5 {metrics['test']['top5']:.2f}%"
    if metrics["test_ema"] is not None:
        line += f"  (EMA: top-1 {metrics['test_ema']['top1']:.2f}%  top-5 {metrics['test_ema']['top5']:.2f}%)"
    console.print(f"[bold green]{line}[/]  params {metrics['params']:,}  MAdds {metrics['madds'] / 1e6:.2f}M  "
                  f"-> {out_dir / METRICS}  (wall {time.perf_counter() - start:.1f} s)", soft_wrap=True)
    console.print(f"export it with `bossnas export {out_dir}`")


def register(app: typer.Typer) -> None:
    app.command()(retrain)


__all__ = ["BossNASError", "register", "retrain"]
