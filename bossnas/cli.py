"""The ``bossnas`` command line.

Importing this module (and asking for ``--help`` or ``--version``) loads no torch: every
command imports what it needs inside its body, so only a command that computes pays for it.
"""

from __future__ import annotations

import os
import sys

import typer

from bossnas.commands.help import BossNASGroup, register_conventions
from bossnas.entry import SignalStop
from bossnas.errors import BossNASError, one_line

app = typer.Typer(
    cls=BossNASGroup,
    add_completion=False,
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
    help="Block-wisely self-supervised neural architecture search (BossNAS).",
)


def _register_commands() -> None:
    import importlib

    from bossnas.commands import COMMAND_MODULES

    for module in COMMAND_MODULES:
        importlib.import_module(module).register(app)
    register_conventions(app)


_register_commands()


def main() -> None:
    """Run the CLI: a :class:`BossNASError` is one line on stderr and exit status 2 (an
    interrupted run: 128 + the signal number). Under torchrun, rank 0 prints the errors
    every process meets; another process prints only its own (a file only it read)."""
    # torchrun's rank, read without importing torch (bossnas.distributed does)
    rank = int(os.environ.get("RANK", "0"))
    try:
        app()
    except BossNASError as exc:
        if rank == 0 or getattr(exc, "rank_local", False):
            print(f"error{f' (rank {rank})' if rank else ''}: {one_line(exc)}", file=sys.stderr)
        sys.exit(getattr(exc, "exit_code", 2))
    except (SignalStop, KeyboardInterrupt) as exc:
        if rank == 0:
            print(f"error: {exc or 'interrupted'}", file=sys.stderr)
        sys.exit(getattr(exc, "exit_code", 130))
    finally:
        if "bossnas.distributed" in sys.modules:  # a command that ran under torchrun set up a process group
            sys.modules["bossnas.distributed"].shutdown()


if __name__ == "__main__":
    main()
