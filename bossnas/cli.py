"""The ``bossnas`` command line."""

from __future__ import annotations

import sys

import typer

from bossnas.errors import BossNASError, one_line

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    help="Block-wisely self-supervised neural architecture search (BossNAS).",
)


def _register_commands() -> None:
    import importlib

    from bossnas.commands import COMMAND_MODULES

    for module in COMMAND_MODULES:
        importlib.import_module(module).register(app)


_register_commands()


def main() -> None:
    """Run the CLI: a :class:`BossNASError` is one line on stderr and exit status 2 (an
    interrupted run: 128 + the signal number). Under torchrun, rank 0 prints the errors
    every process meets; another process prints only its own (a file only it read)."""
    from bossnas import distributed as dist

    rank = dist.env_rank()
    try:
        app()
    except BossNASError as exc:
        if rank == 0 or getattr(exc, "rank_local", False):
            print(f"error{f' (rank {rank})' if rank else ''}: {one_line(exc)}", file=sys.stderr)
        sys.exit(getattr(exc, "exit_code", 2))
    except KeyboardInterrupt as exc:
        if rank == 0:
            print(f"error: {exc or 'interrupted'}", file=sys.stderr)
        sys.exit(130)
    finally:
        dist.shutdown()


if __name__ == "__main__":
    main()
