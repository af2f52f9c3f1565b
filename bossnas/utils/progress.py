"""Progress bars (rich) that show rate and ETA, and fall back to plain lines off a terminal."""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from dataclasses import dataclass

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


# --------------------------------------------------------------------------- time left in a whole run
Clock = Callable[[], float]


def minutes(seconds: float) -> str:
    """A duration as a plan reads it: '40 s', '12 min', '3.5 h', '11 days'."""
    if seconds < 90:
        return f"{max(1, round(seconds))} s"
    if seconds < 90 * 60:
        return f"{round(seconds / 60)} min"
    if seconds < 48 * 3600:
        return f"{seconds / 3600:.1f} h"
    return f"{seconds / 86400:.0f} days"


class RateMeter:
    """Seconds per unit of one kind of work (a step, a rated path, a test image), timed as it runs.

    The first unit after :meth:`start` is left out once later ones are timed: it carries
    one-off costs (first calls of new modules, allocations) the others do not.
    """

    def __init__(self, clock: Clock = time.perf_counter):
        self.clock = clock
        self._start: float | None = None
        self._first: tuple[float, float] | None = None  # (units, time) when the first unit was done
        self._last: tuple[float, float] | None = None

    def start(self) -> None:
        self._start, self._first, self._last = self.clock(), None, None

    @property
    def started(self) -> bool:
        return self._start is not None

    def done(self, units: float) -> None:
        """``units`` done since :meth:`start`."""
        if self._start is None or units <= 0:
            return
        now = (units, self.clock())
        if self._first is None:
            self._first = now
        self._last = now

    @property
    def timed(self) -> float:
        """Units that went into :attr:`seconds_per_unit` (0: none yet)."""
        if self._last is None or self._first is None:
            return 0.0
        return self._last[0] - self._first[0] if self._last[0] > self._first[0] else self._last[0]

    @property
    def seconds_per_unit(self) -> float | None:
        if self._last is None or self._first is None or self._start is None:
            return None
        (u0, t0), (u1, t1) = self._first, self._last
        if u1 > u0:
            return max(t1 - t0, 0.0) / (u1 - u0)
        return max(t1 - self._start, 0.0) / u1


@dataclass(frozen=True)
class BlockPlan:
    """The work of one block of a search: training micro-steps and rated paths (whole block)."""

    steps: int
    paths: float
    #: seconds of rating one path per second of one training step, before a rating is timed
    rating_per_step: float


@dataclass
class KnownRates:
    """Per-block seconds per training step and per rated path measured earlier on this machine
    with the same step settings (None: that block was not measured)."""

    step_seconds: list[float | None]
    path_seconds: list[float | None]


class SearchProgress:
    """Where a search is in the whole run, and how long the rest will take on this machine.

    ``plans`` holds every block's work. The time of a training step and of a rated path is
    measured block by block as the run goes; for a block not reached yet the estimate takes
    the same seconds per step as the nearest block measured before it (in this run, else in
    ``known``, an earlier run of the same settings on this machine), and rating before a
    rating was timed costs ``rating_per_step`` training steps a path. The runner calls
    :meth:`training` / :meth:`rating` as it goes; they return the bar's ``run`` field
    (block k of n, time left). :meth:`estimate_line` is the sentence the run prints once its
    first steps are timed.
    """

    #: steps timed after a block's first before the estimate is printed
    PROBE_STEPS = 3

    def __init__(self, plans: list[BlockPlan], known: KnownRates | None = None, clock: Clock = time.perf_counter):
        self.plans = plans
        self.known = known
        self.clock = clock
        n = len(plans)
        self.steps_done = [0] * n
        self.paths_done = [0.0] * n
        self.step_meters = [RateMeter(clock) for _ in plans]
        self.path_meters = [RateMeter(clock) for _ in plans]
        self._first_done: list[int | None] = [None] * n
        self.started_at = clock()
        self.announced = False

    # ------------------------------------------------------------------ what the runner reports
    def resume_at(self, block: int, steps: int = 0, rated: bool = False) -> None:
        """The run continues at ``block`` with ``steps`` of its steps done (the blocks before are done)."""
        for b in range(block):
            self.steps_done[b], self.paths_done[b] = self.plans[b].steps, self.plans[b].paths
        self.steps_done[block] = steps
        if rated:
            self.paths_done[block] = self.plans[block].paths

    def training(self, block: int, steps_done: int) -> dict[str, str]:
        """``steps_done`` of block ``block``'s steps are done (all epochs); the bar's fields."""
        meter = self.step_meters[block]
        if not meter.started or self._first_done[block] is None:
            meter.start()
            self._first_done[block] = steps_done
        else:
            meter.done(steps_done - self._first_done[block])  # type: ignore[operator]
        self.steps_done[block] = steps_done
        return self.fields(block)

    def rating(self, block: int, paths_done: int) -> dict[str, str]:
        """``paths_done`` of block ``block``'s paths are rated; the bar's fields."""
        meter = self.path_meters[block]
        if not meter.started:
            meter.start()
        meter.done(paths_done)
        self.paths_done[block] = paths_done
        return self.fields(block)

    def rated(self, block: int) -> None:
        self.paths_done[block] = self.plans[block].paths
        self.steps_done[block] = self.plans[block].steps

    # ------------------------------------------------------------------ estimates
    def _nearest(self, block: int) -> list[int]:
        """The other blocks, nearest first (earlier before later at the same distance)."""
        n = len(self.plans)
        return sorted((b for b in range(n) if b != block), key=lambda b: (abs(b - block), b > block))

    def _known(self, name: str, block: int) -> float | None:
        values = getattr(self.known, name) if self.known is not None else []
        return values[block] if block < len(values) else None

    def step_seconds(self, block: int) -> float | None:
        """Seconds per training step of ``block``: measured; else the nearest block measured in this
        run (scaled by an earlier run's ratio of the two, where it timed both); else an earlier
        run's, of this block or the nearest it timed."""
        measured = self.step_meters[block].seconds_per_unit
        if measured is not None:
            return measured
        for b in self._nearest(block):
            other = self.step_meters[b].seconds_per_unit
            if other is not None:
                mine, theirs = self._known("step_seconds", block), self._known("step_seconds", b)
                return other * mine / theirs if mine and theirs else other
        for b in [block, *self._nearest(block)]:
            if self._known("step_seconds", b):
                return self._known("step_seconds", b)
        return None

    def path_seconds(self, block: int) -> float | None:
        """Seconds per rated path of ``block``: measured; an earlier block's in this run; an earlier
        run's (this block's, or the nearest it timed); else from its steps (``rating_per_step``)."""
        measured = self.path_meters[block].seconds_per_unit
        if measured is not None:
            return measured
        for b in range(block - 1, -1, -1):
            if self.path_meters[b].seconds_per_unit is not None:
                return self.path_meters[b].seconds_per_unit
        for b in [block, *self._nearest(block)]:
            if self._known("path_seconds", b):
                return self._known("path_seconds", b)
        step = self.step_seconds(block)
        return None if step is None else step * self.plans[block].rating_per_step

    def remaining_seconds(self) -> float | None:
        """Seconds to the end of the run (None: nothing measured or known yet)."""
        total = 0.0
        for b, plan in enumerate(self.plans):
            steps_left = plan.steps - self.steps_done[b]
            paths_left = plan.paths - self.paths_done[b]
            if steps_left > 0:
                step = self.step_seconds(b)
                if step is None:
                    return None
                total += steps_left * step
            if paths_left > 0:
                path = self.path_seconds(b)
                if path is None:
                    return None
                total += paths_left * path
        return total

    def fields(self, block: int) -> dict[str, str]:
        left = self.remaining_seconds()
        where = f"{block}/{len(self.plans)} blocks done"  # the blocks before this one
        return {"run": f"{where}, {minutes(left)} left" if left is not None else where}

    def estimate_line(self, block: int) -> str | None:
        """Once, when block ``block``'s first steps are timed (or the block is done): what the
        whole run will take on this machine."""
        if self.announced:
            return None
        meter = self.step_meters[block]
        if meter.timed < min(self.PROBE_STEPS, max(1, self.plans[block].steps - (self._first_done[block] or 0) - 1)):
            return None
        left = self.remaining_seconds()
        if left is None:
            return None
        self.announced = True
        elapsed = self.clock() - self.started_at
        basis = (f"block {block} at {meter.seconds_per_unit:.3g} s/step over {meter.timed:g} steps; blocks not "
                 "reached yet assumed to take the same per step")
        if self.known is not None:
            basis = f"block {block} at {meter.seconds_per_unit:.3g} s/step; the other blocks as an earlier run here"
        return f"estimate on this machine: about {minutes(elapsed + left)} for the whole run, {minutes(left)} left ({basis})"

    def known_line(self) -> str | None:
        """Before any step: the estimate from an earlier run's rates (None: no such run)."""
        if self.known is None:
            return None
        left = self.remaining_seconds()
        if left is None:
            return None
        return (f"estimate on this machine: about {minutes(left)} for the rest of the run (rates of an earlier run "
                "here with the same step settings; refined after the first steps)")


class RetrainProgress:
    """How long a retraining takes on this machine: its epochs and its test evaluations.

    ``evaluations`` test evaluations remain, each of ``eval_images`` forwards (the test images
    times the models tested: the plain one and the EMA). The seconds of a step are measured
    from the first read-outs; those of an evaluated image, until the first evaluation is timed,
    are a third of a trained image's (a forward without the backward).
    """

    PROBE_STEPS = SearchProgress.PROBE_STEPS

    def __init__(self, total_steps: int, steps_done: int, steps_per_epoch: int, batch_size: int, evaluations: int,
                 eval_images: int, test_images: int, models: int, clock: Clock = time.perf_counter):
        self.total_steps, self.steps_done, self.steps_per_epoch = total_steps, steps_done, steps_per_epoch
        self.batch_size = batch_size
        self.evaluations, self.eval_images, self.test_images, self.models = evaluations, eval_images, test_images, models
        self.clock = clock
        self.step_meter, self.eval_meter = RateMeter(clock), RateMeter(clock)
        self._first_done: int | None = None
        self.started_at = clock()
        self.announced = False

    def training(self, steps_done: int) -> dict[str, str]:
        """``steps_done`` steps of the whole retraining are done; the bar's fields."""
        if self._first_done is None:
            self.step_meter.start()
            self._first_done = steps_done
        else:
            self.step_meter.done(steps_done - self._first_done)
        self.steps_done = steps_done
        return self.fields()

    def evaluating(self, images_done: int) -> dict[str, str]:
        """``images_done`` forwards of the current evaluation are done; the bar's fields."""
        if images_done == 0:
            self.eval_meter.start()
        else:
            self.eval_meter.done(images_done)
        return self.fields(images_done)

    def evaluated(self) -> None:
        self.evaluations = max(0, self.evaluations - 1)

    def step_seconds(self) -> float | None:
        return self.step_meter.seconds_per_unit

    def image_seconds(self) -> float | None:
        measured = self.eval_meter.seconds_per_unit
        if measured is not None:
            return measured
        step = self.step_seconds()
        return None if step is None else step / self.batch_size / 3

    def remaining_seconds(self, images_in_current: int = 0) -> float | None:
        step, image = self.step_seconds(), self.image_seconds()
        if step is None or image is None:
            return None
        evals = self.evaluations * self.eval_images - images_in_current
        return (self.total_steps - self.steps_done) * step + max(0, evals) * image

    def fields(self, images_in_current: int = 0) -> dict[str, str]:
        left = self.remaining_seconds(images_in_current)
        return {"run": f"{minutes(left)} left" if left is not None else "timing"}

    def estimate_line(self) -> str | None:
        """Once its first steps are timed: an epoch's time, an evaluation's and the whole retraining's."""
        if self.announced or self.step_meter.timed < min(self.PROBE_STEPS, self.total_steps - (self._first_done or 0) - 1):
            return None
        left, step, image = self.remaining_seconds(), self.step_seconds(), self.image_seconds()
        if left is None or step is None or image is None:
            return None
        self.announced = True
        tested = "the plain and the EMA model" if self.models == 2 else "the model"
        return (f"estimate on this machine: an epoch about {minutes(self.steps_per_epoch * step)} ({step:.3g} s/step), "
                f"a test evaluation about {minutes(self.eval_images * image)} ({tested} on {self.test_images:,} images; "
                f"{self.evaluations} to go: train.eval_every=N tests every N epochs, data.test_images=N on fewer images), "
                f"the whole retraining about {minutes(self.clock() - self.started_at + left)}")
