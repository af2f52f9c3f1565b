"""The ``bossnas`` console script, and what a signal does before a command handles its own.

Importing torch takes seconds, and a command imports it wherever it first needs it. A
Ctrl-C in that time used to end in a ``KeyboardInterrupt`` traceback (or click's "Aborted!"
and exit status 1). So the first thing the script does, before importing anything heavy,
is to turn SIGINT / SIGTERM into :class:`SignalStop`: one ``error: ...`` line and the
shell's status for the signal (128 + its number). A long command (``run``, ``train``,
``retrain``) replaces the handler with its own once it starts (a checkpoint, then the same
kind of line) and puts this one back when it ends. This module imports only the standard
library.
"""

from __future__ import annotations

import signal
import sys


class SignalStop(BaseException):
    """SIGINT / SIGTERM ended the command at once.

    A ``BaseException`` but not a ``KeyboardInterrupt``: click turns a ``KeyboardInterrupt``
    inside a command into "Aborted!" and exit status 1, while this one reaches
    :func:`bossnas.cli.main`, which prints it as one line and exits with :attr:`exit_code`.
    """

    def __init__(self, signum: int, message: str | None = None):
        super().__init__(message or f"interrupted by {signal.Signals(signum).name}")
        self.signum = int(signum)

    @property
    def exit_code(self) -> int:
        return 128 + self.signum


def _stop(signum: int, _frame: object) -> None:
    raise SignalStop(signum)


def install_signal_guard() -> None:
    """SIGINT / SIGTERM raise :class:`SignalStop` from now on, where their handling is the default.

    A disposition the process inherited as ignored (``nohup``, a shell's background job)
    stays ignored.
    """
    for sig, default in ((signal.SIGINT, signal.default_int_handler), (signal.SIGTERM, signal.SIG_DFL)):
        if signal.getsignal(sig) is default:
            signal.signal(sig, _stop)


def main() -> None:
    install_signal_guard()
    try:
        from bossnas.cli import main as cli_main
    except SignalStop as exc:
        print(f"error: {exc} while starting", file=sys.stderr)
        sys.exit(exc.exit_code)
    cli_main()
