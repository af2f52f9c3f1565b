"""What several commands share: their options, the console and the torchrun launcher."""

from __future__ import annotations

import sys

import typer

from bossnas.errors import BossNASError

OverridesArg = typer.Argument(None, help="config overrides key=value, e.g. train.epochs=2 data.name=cifar10 "
                             "(every key: README, Configuration keys)")
PresetOpt = typer.Option(None, "--preset", "-p", help="preset name (see `bossnas presets`) or a YAML file (default: quickstart)")
SpaceOpt = typer.Option(None, "--space", help="search space (see `bossnas spaces`), or module:Class of your own")
DataOpt = typer.Option(None, "--data", help="data.name: digits | cifar10 | cifar100 | imagefolder")
DataDirOpt = typer.Option(None, "--data-dir", help="data.root: folder of the data set")
OutOpt = typer.Option(None, "--out", "-o", help="run folder (default: runs/<preset>)")
ResumeOpt = typer.Option(False, "--resume", help="continue the run in the run folder from its last checkpoint")
ForceOpt = typer.Option(False, "--force", help="start over in a run folder that already holds a run")
DeviceOpt = typer.Option(None, "--device", help="device key: auto | cpu | cuda | cuda:N (default: auto)")
QuietOpt = typer.Option(False, "--quiet", "-q", help="no progress bars")
MaxFlopsOpt = typer.Option(None, "--max-flops", help="FLOPs budget (e.g. 100M, 3.4G); FLOPs = 2 x multiply-adds")
MaxParamsOpt = typer.Option(None, "--max-params", help="parameter budget (e.g. 500k, 1.5M)")
NprocOpt = typer.Option(None, "--nproc", min=1, help="processes on this machine (one per GPU): runs the command under torchrun")
#: the shortcuts of the training keys that `run` / `train` and `retrain` share (the same flags
#: for the same keys on every command; any key also works as key=value)
SearchEpochsOpt = typer.Option(None, "--epochs", help="train.epochs: epochs per block (default: the preset's)")
SearchBatchSizeOpt = typer.Option(None, "--batch-size", help="train.batch_size: images per step (default: the preset's)")
SearchLrOpt = typer.Option(None, "--lr", help="train.lr: peak learning rate (default: the preset's)")


def shortcut_keys(epochs: int | None, batch_size: int | None, lr: float | None) -> dict:
    """The config keys the --epochs / --batch-size / --lr shortcuts set (None: not given)."""
    return {"train.epochs": epochs, "train.batch_size": batch_size, "train.lr": lr}

def _console():
    from rich.console import Console

    from bossnas import distributed as dist
    from bossnas.utils.progress import make_console

    # under torchrun only rank 0 prints
    return make_console() if dist.env_rank() == 0 else Console(quiet=True)


def _launch(nproc: int) -> None:
    """Run this same command line under torchrun with ``nproc`` processes; never returns.

    torchrun's launcher runs in this process (``--standalone``: a free local port, so two
    runs on one machine do not collide). The workers print their own one-line errors; a
    failed worker's exit status becomes this command's, without torchrun's error report.
    """
    import logging
    import os
    import uuid

    from bossnas import distributed as dist

    if dist.launched():
        raise BossNASError("--nproc inside torchrun: start either `bossnas ... --nproc N` or `torchrun ... -m bossnas ...`, not both")
    args, skip = [], False
    for a in sys.argv[1:]:
        if skip:
            skip = False
        elif a == "--nproc":
            skip = True
        elif not a.startswith("--nproc="):
            args.append(a)
    from torch.distributed.elastic.multiprocessing.api import SignalException
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
    from torch.distributed.launcher.api import elastic_launch
    from torch.distributed.run import config_from_args, parse_args

    for name in ("torch.distributed.run", "torch.distributed.elastic", "torch.distributed.launcher"):
        logging.getLogger(name).setLevel(logging.CRITICAL)
    os.environ.setdefault("OMP_NUM_THREADS", str(max(1, (os.cpu_count() or 1) // nproc)))
    torchrun_args = parse_args(["--standalone", "--nproc-per-node", str(nproc), "--max-restarts", "0",
                                # time for every process to finish its step and rank 0 its checkpoint
                                "--shutdown-timeout", "120", "-m", "bossnas", *args])
    # what torchrun's run() does for --standalone, without its banner
    torchrun_args.rdzv_backend, torchrun_args.rdzv_endpoint = "c10d", "localhost:0"
    torchrun_args.rdzv_id = str(uuid.uuid4())
    config, cmd, cmd_args = config_from_args(torchrun_args)
    try:
        elastic_launch(config=config, entrypoint=cmd)(*cmd_args)
    except ChildFailedError as exc:
        _, failure = exc.get_first_failure()
        code = failure.exitcode
        sys.exit(code if code > 0 else 128 - code)
    except SignalException as exc:
        sys.exit(128 + int(exc.sigval))
    sys.exit(0)


__all__ = ["DataDirOpt", "DataOpt", "DeviceOpt", "ForceOpt", "MaxFlopsOpt", "MaxParamsOpt", "NprocOpt", "OutOpt",
           "OverridesArg", "PresetOpt", "QuietOpt", "ResumeOpt", "SearchBatchSizeOpt", "SearchEpochsOpt", "SearchLrOpt",
           "SpaceOpt", "shortcut_keys"]
