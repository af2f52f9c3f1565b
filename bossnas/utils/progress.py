"""Progress bars (rich) that show rate and ETA, and fall back to plain lines off a terminal."""

from __future__ import annotations

import sys
import time

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)


def make_console() -> Console:
    """The console of every command (stderr). Long lines are not hard-wrapped: off a terminal
    (a log file, CI) rich would otherwise break an architecture string at 80 columns, mid-token."""
    return Console(stderr=True, highlight=False, soft_wrap=True)


class Bar:
    """One progress bar: ``update(n, **fields)``; prints a summary line when done.

    On a terminal it is a live rich bar (count, rate, elapsed, ETA and any fields such as
    the loss); elsewhere (CI logs, files) it prints a line every ``every_s`` seconds.
    """

    def __init__(self, console: Console, label: str, total: int, unit: str = "step", enabled: bool = True,
                 every_s: float = 30.0, first: int = 0):
        self.console, self.label, self.total, self.unit = console, label, total, unit
        self.enabled = enabled
        self.live = enabled and console.is_terminal
        self.fields: dict[str, str] = {}
        self.start = time.perf_counter()
        self.last_print = self.start
        self.every_s = every_s
        #: units done before this bar started (a resumed epoch): counted, but not in the rate
        self.first = first
        self.done = first
        if self.live:
            self.progress = Progress(
                TextColumn("[bold]{task.description}"),
                BarColumn(),
                MofNCompleteColumn(),
                TextColumn("{task.fields[rate]}"),
                TimeElapsedColumn(),
                TextColumn("eta"),
                TimeRemainingColumn(),
                TextColumn("{task.fields[info]}"),
                console=console,
                transient=True,
            )
            self.progress.start()
            self.task = self.progress.add_task(label, total=total, completed=first, rate="", info="")

    @property
    def rate(self) -> float:
        """Units per second since the bar started (units done before it, in a resumed epoch, not counted)."""
        elapsed = max(time.perf_counter() - self.start, 1e-9)
        return (self.done - self.first) / elapsed

    def _rate(self) -> str:
        return f"{self.rate:.2f} {self.unit}/s"

    def update(self, done: int, **fields: float | str) -> None:
        self.done = done
        for k, v in fields.items():
            self.fields[k] = f"{v:.4f}" if isinstance(v, float) else str(v)
        info = " ".join(f"{k} {v}" for k, v in self.fields.items())
        if self.live:
            self.progress.update(self.task, completed=done, rate=self._rate(), info=info)
        elif self.enabled and time.perf_counter() - self.last_print >= self.every_s:
            self.last_print = time.perf_counter()
            elapsed = self.last_print - self.start
            eta = elapsed / max(done - self.first, 1) * (self.total - done)
            print(f"  {self.label}: {done}/{self.total} {self._rate()} eta {eta:.0f}s {info}", file=sys.stderr, flush=True)

    def abort(self) -> None:
        """Take a live bar off the terminal without a summary line (the run is stopping)."""
        if self.live:
            self.progress.stop()
            self.live = False

    def close(self) -> float:
        elapsed = time.perf_counter() - self.start
        if self.live:
            self.progress.stop()
        if self.enabled:
            info = " ".join(f"{k} {v}" for k, v in self.fields.items())
            self.console.print(f"  {self.label}: {self.done}/{self.total} in {elapsed:.1f}s ({self._rate()}) {info}")
        return elapsed
