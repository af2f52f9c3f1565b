"""The ``bossnas`` console script: loads the command line, which imports torch.

Importing torch takes seconds; a Ctrl-C in that time used to end in a KeyboardInterrupt
traceback. This module imports nothing heavy itself, so it can turn that into one line and
the exit status of an interrupt (130), like a Ctrl-C later in a command.
"""

from __future__ import annotations

import sys


def main() -> None:
    try:
        from bossnas.cli import main as cli_main
    except KeyboardInterrupt:
        print("error: interrupted while starting", file=sys.stderr)
        sys.exit(130)
    cli_main()
