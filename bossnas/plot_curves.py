"""Pictures of a run's training (``bossnas plot RUN``), drawn from its files without TensorBoard.

``loss.png``: the loss of every optimizer step against the step, one panel per block of a
search (one panel for a retraining, and a second one with the test accuracy when it was
evaluated), the learning rate on a second axis. ``ratings.png`` (search): the distribution
of the ratings of every block's paths, the best (lowest-rated) path, on which the next
blocks were trained, marked. The series are returned as well as drawn, so what a picture
shows can be checked against metrics.jsonl.

>>> plots = plot_run("runs/quickstart")   # doctest: +SKIP
>>> plots.written                          # doctest: +SKIP
[PosixPath('runs/quickstart/loss.png'), PosixPath('runs/quickstart/ratings.png')]
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, field
from pathlib import Path

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from bossnas.curves import METRICS_LOG, not_a_record, read_metrics_lines
from bossnas.errors import BossNASError
from bossnas.plot import save_figure
from bossnas.runs import CHECKPOINT, CONFIG, check_writable_folder

LOSS_PNG, RATINGS_PNG = "loss.png", "ratings.png"
#: histogram bins of a block's ratings: about one per three paths, within these bounds
BINS = (5, 40)


@dataclass
class Curve:
    """What one loss panel shows: a search block's steps (``block``), or a retraining's (None)."""

    block: int | None
    steps: list[int] = field(default_factory=list)
    loss: list[float] = field(default_factory=list)
    lr: list[float] = field(default_factory=list)
    #: test evaluations (retraining): the step after which each ran, and its top-1 (%)
    eval_steps: list[int] = field(default_factory=list)
    top1: list[float] = field(default_factory=list)

    @property
    def label(self) -> str:
        return "retraining" if self.block is None else f"block {self.block}"


@dataclass
class BlockRatings:
    """The ratings of one block's paths (lower = better) and its best (lowest-rated) path."""

    block: int
    ratings: list[float]
    best_path: str
    best_rating: float


@dataclass
class RunPlots:
    """The files ``plot_run`` wrote and the data drawn in them."""

    written: list[Path]
    curves: list[Curve]
    ratings: list[BlockRatings]
    #: what the pictures leave out and why (repeated records, no rated block yet), one line each
    notes: list[str] = field(default_factory=list)


# --------------------------------------------------------------------------- data
def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number_or_null(value: object) -> bool:
    return value is None or (isinstance(value, (int, float)) and not isinstance(value, bool))


def record_problem(record: dict) -> str | None:
    """Why a step or eval record cannot be drawn (None: it can; other kinds are not drawn).

    ``null`` losses, learning rates and accuracies are the writer's own for a non-finite value
    (docs/metrics.md): drawn as gaps, not refused.
    """
    kind = record["kind"]
    if kind not in ("step", "eval"):
        return None
    if not (_is_int(record.get("step")) and record["step"] >= 0):
        return f"its step is {record.get('step')!r}, not a count"
    block = record.get("block")
    if block is not None and not (_is_int(block) and block >= 0):
        return f"its block is {block!r}, not a block number"
    fields = ("loss", "lr") if kind == "step" else ("top1",)
    for name in fields:
        if not _is_number_or_null(record.get(name)):
            return f"its {name} is {record.get(name)!r}, not a number"
    if kind == "eval" and "top1" not in record:
        return "an eval record without top1"
    return None


def _value(x: float | None) -> float:
    """A drawn value: None (the writer's non-finite) and numbers beyond floats are gaps."""
    try:
        value = math.nan if x is None else float(x)
    except OverflowError:  # an integer too large for a float
        return math.nan
    return value if math.isfinite(value) else math.nan


def loss_curves(records: list[dict], notes: list[str] | None = None) -> list[Curve]:
    """The step and eval records of metrics.jsonl as one curve per block (search) or one (retraining).

    A step logged twice (the file appended to twice, or a resume that did not cut it back)
    is drawn once, from its last record, and counted in ``notes``.
    """
    latest: dict[tuple, dict] = {}
    for r in records:
        if r["kind"] in ("step", "eval"):
            latest[(r["kind"], r.get("block"), r["step"])] = r  # a repeat replaces the earlier record
    repeated = sum(r["kind"] in ("step", "eval") for r in records) - len(latest)
    if repeated and notes is not None:
        notes.append(f"{repeated} record(s) repeat a step logged before (a file appended twice or a resume that "
                     "did not cut it back); each step is drawn once, from its last record")
    curves: dict[int | None, Curve] = {}
    for (kind, block, step), r in sorted(latest.items(), key=lambda item: (item[0][2], item[0][0])):
        curve = curves.setdefault(block, Curve(block))
        if kind == "step":
            curve.steps.append(step)
            curve.loss.append(_value(r.get("loss")))
            curve.lr.append(_value(r.get("lr")))
        else:
            curve.eval_steps.append(step)
            curve.top1.append(_value(r.get("top1")))
    return [curves[k] for k in sorted(curves, key=lambda b: -1 if b is None else b)]


def block_ratings(run_dir: Path, notes: list[str] | None = None) -> list[BlockRatings]:
    """The rating tables of a search, in block order (those rated so far), from its checkpoint:
    the tables `bossnas rate` and `search` choose from (the block CSVs are a copy for reading,
    and a damaged copy must not change what is drawn)."""
    from bossnas.utils.io import load_checkpoint

    ckpt = load_checkpoint(run_dir / CHECKPOINT)
    tables = ckpt.get("state", {}).get("tables", {}) if isinstance(ckpt.get("state"), dict) else {}
    out = []
    while str(len(out)) in tables:
        block = len(out)
        rows = [(str(p), float(r)) for p, r in tables[str(block)]]
        finite = [(p, r) for p, r in rows if math.isfinite(r)]
        if len(finite) < len(rows) and notes is not None:
            notes.append(f"block {block}: {len(rows) - len(finite)} of {len(rows)} ratings are not finite and are not drawn")
        if not finite:
            break
        best_path, best_rating = min(finite, key=lambda row: row[1])
        out.append(BlockRatings(block, [r for _, r in finite], best_path, best_rating))
    return out


# --------------------------------------------------------------------------- figures
def loss_figure(curves: list[Curve], title: str) -> Figure:
    """One panel per curve: loss (left axis) and learning rate (right axis) against the step;
    a retraining's test top-1 in a panel of its own."""
    with_eval = [c for c in curves if c.eval_steps]
    panels = len(curves) + len(with_eval)
    fig = Figure(figsize=(7.0, 2.4 * panels + 0.6))
    FigureCanvasAgg(fig)
    axes = fig.subplots(panels, 1, squeeze=False)[:, 0]
    for ax, curve in zip(axes, curves):
        steps, loss, log = _readable_loss(curve)
        ax.plot(steps, loss, color="tab:blue", lw=1.2, label="loss")
        if log:
            ax.set_yscale("log")
        ax.set_ylabel(f"{curve.label}\nloss{' (log)' if log else ', from step 2'}", color="tab:blue")
        lr_ax = ax.twinx()
        lr_ax.plot(curve.steps, curve.lr, color="tab:orange", lw=1.0, ls="--", label="lr")
        lr_ax.set_ylabel("lr", color="tab:orange")
        ax.set_xlabel("optimizer step")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.grid(alpha=0.3)
    for ax, curve in zip(axes[len(curves):], with_eval):
        ax.plot(curve.eval_steps, curve.top1, "o-", color="tab:green")
        ax.set_ylabel(f"{curve.label}\ntest top-1 (%)")
        ax.set_xlabel("optimizer step")
        ax.grid(alpha=0.3)
    axes[0].set_title(title, fontsize=9)
    fig.tight_layout()
    return fig


def _readable_loss(curve: Curve) -> tuple[list[int], list[float], bool]:
    """The steps and losses to draw, and whether on a log axis: the first steps' loss is often
    many times the rest, which flattens a linear axis. Positive losses (BYOL, cross-entropy)
    go on a log axis; otherwise the first step is left out."""
    pairs = [(s, v) for s, v in zip(curve.steps, curve.loss) if isinstance(v, (int, float)) and math.isfinite(v)]
    if pairs and all(v > 0 for _, v in pairs):
        return [s for s, _ in pairs], [v for _, v in pairs], True
    pairs = pairs[1:] if len(pairs) > 1 else pairs
    return [s for s, _ in pairs], [v for _, v in pairs], False


def ratings_figure(blocks: list[BlockRatings], title: str) -> Figure:
    """One histogram of path ratings per block, the best (lowest) rating marked; the ratings
    written out on the axis (no '+1.594' offset) and the legend beside the bars, not over them."""
    fig = Figure(figsize=(8.0, 2.2 * len(blocks) + 0.6))
    FigureCanvasAgg(fig)
    axes = fig.subplots(len(blocks), 1, squeeze=False)[:, 0]
    for ax, b in zip(axes, blocks):
        bins = min(BINS[1], max(BINS[0], len(b.ratings) // 3))
        ax.hist(b.ratings, bins=bins, color="tab:blue", alpha=0.8, label=f"{len(b.ratings)} paths")
        ax.axvline(b.best_rating, color="tab:red", lw=1.5, label=f"best {b.best_path}\n({b.best_rating:.5f})")
        ax.ticklabel_format(axis="x", useOffset=False, style="plain")
        ax.tick_params(axis="x", labelrotation=20, labelsize=7)
        ax.set_ylabel(f"block {b.block}\npaths")
        ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0), borderaxespad=0.0, frameon=False)
    axes[-1].set_xlabel("rating (lower = better)")
    axes[0].set_title(title, fontsize=9)
    fig.tight_layout()
    return fig


# --------------------------------------------------------------------------- the command's work
def run_records(run_dir: Path) -> list[dict]:
    """The records of a run folder's metrics.jsonl, or a one-line error saying why there are none
    (or which line cannot be drawn)."""
    if run_dir.is_file():
        raise BossNASError(f"'{run_dir}' is a file, not a run folder; give the folder that holds it ('{run_dir.parent}')")
    if not run_dir.is_dir():
        raise BossNASError(f"run folder '{run_dir}' does not exist")
    if not ((run_dir / CHECKPOINT).is_file() or (run_dir / CONFIG).is_file()):
        raise BossNASError(f"'{run_dir}' is not a run folder (no {CHECKPOINT} or {CONFIG}); "
                           "give the --out folder of `bossnas run` or `bossnas retrain`")
    path = run_dir / METRICS_LOG
    if not path.is_file():
        raise BossNASError(f"the run in '{run_dir}' logged no training curves (no {METRICS_LOG}: it was made by a "
                           "bossnas before they were logged); start it over with --force to get them")
    numbered = read_metrics_lines(path)
    for number, record in numbered:
        why = record_problem(record)
        if why is not None:
            raise not_a_record(path, number, why)
    records = [r for _, r in numbered]
    if not any(r["kind"] == "step" for r in records):
        raise BossNASError(f"the run in '{run_dir}' has logged no training step yet; plot it once it has trained")
    return records


def _is_search(run_dir: Path) -> bool:
    from bossnas.models import is_retrain_folder

    return not is_retrain_folder(run_dir)


def plot_run(run_dir: str | os.PathLike, out_dir: str | os.PathLike | None = None) -> RunPlots:
    """Draw ``loss.png`` (and, for a search, ``ratings.png``) of a run folder into ``out_dir`` (default: the folder)."""
    run_dir = Path(run_dir)
    out_dir = Path(out_dir) if out_dir is not None else run_dir
    records = run_records(run_dir)
    check_writable_folder(out_dir, "plot folder")
    notes: list[str] = []
    curves = loss_curves(records, notes)
    ratings = []
    if any(c.block is not None for c in curves) and _is_search(run_dir):
        if (run_dir / CHECKPOINT).is_file():
            ratings = block_ratings(run_dir, notes)
            if not ratings:
                notes.append(f"no block of '{run_dir}' is rated yet: {RATINGS_PNG} not drawn")
        else:
            notes.append(f"'{run_dir / CHECKPOINT}' is missing, and the rating tables are read from it: "
                         f"{RATINGS_PNG} not drawn")
    written = [save_figure(loss_figure(curves, f"training curves of {run_dir}"), out_dir / LOSS_PNG)]
    if ratings:
        written.append(save_figure(ratings_figure(ratings, f"path ratings of {run_dir}"), out_dir / RATINGS_PNG))
    return RunPlots(written, curves, ratings, notes)


def draw_run_pictures(run_dir: str | os.PathLike, console) -> list[Path]:
    """The pictures every finished ``run`` / ``train`` writes into its folder (``loss.png``,
    ``ratings.png``), with one line naming them; a run that cannot have them (one made before
    its curves were logged) gets a note instead of a failed run."""
    from bossnas.errors import one_line

    try:
        written = plot_run(run_dir).written
    except BossNASError as exc:
        console.print(f"[yellow]note[/]: no pictures of the run: {one_line(exc)}")
        return []
    console.print(f"pictures: {', '.join(str(p) for p in written)}")
    return written


__all__ = ["BlockRatings", "Curve", "RunPlots", "block_ratings", "draw_run_pictures", "loss_curves", "loss_figure",
           "plot_run", "ratings_figure", "record_problem", "run_records"]
