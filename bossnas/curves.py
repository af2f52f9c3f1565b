"""Training curves: ``metrics.jsonl`` in the run folder, and TensorBoard when it is installed.

Both ``bossnas run`` and ``bossnas retrain`` append one JSON object a line (schema in
``docs/metrics.md``): a ``step`` record per optimizer step, an ``epoch`` record per finished
epoch and, when retraining, an ``eval`` record per test evaluation. Every line is flushed
when written, so a killed run loses only what no checkpoint counted yet; each checkpoint
records the file's length (:attr:`MetricsLog.offset`, synced to disk first), and a resume
cuts the file back to it, so the steps retrained after a resume are logged once, in order.

>>> log = MetricsLog(run_dir)          # doctest: +SKIP
>>> log.start(offset=None)             # resume: cut to the checkpoint's offset (None: last whole line)
>>> log.write({"kind": "step", "block": 0, "epoch": 0, "step": 0, "loss": 0.93})
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Any

from bossnas.errors import BossNASError

METRICS_LOG = "metrics.jsonl"
TENSORBOARD_DIR = "tensorboard"
#: the fields of each record kind mirrored to TensorBoard, and the tag each gets there (after
#: "block_<k>/" in a search, "train/" in a retraining; an evaluation's go under "test/")
SCALARS = {
    "step": {"loss": "loss", "lr": "lr", "momentum": "momentum", "images_per_s": "images_per_s",
             "prediction_spread": "prediction_spread"},
    "epoch": {"loss": "epoch_loss", "train_top1": "epoch_train_top1"},
    "eval": {"top1": "top1", "top5": "top5", "loss": "loss", "ema_top1": "ema_top1", "ema_top5": "ema_top5",
             "ema_loss": "ema_loss"},
}


def _clean(value: Any) -> Any:
    """JSON has no NaN / infinity: a non-finite float is written as null."""
    return value if not isinstance(value, float) or math.isfinite(value) else None


def whole_lines_length(path: Path) -> int:
    """The length of ``path`` up to and including its last line break (0 when missing)."""
    if not path.is_file():
        return 0
    data = path.read_bytes()
    return data.rfind(b"\n") + 1


class MetricsLog:
    """The append-only ``metrics.jsonl`` of one run (and its TensorBoard mirror).

    ``enabled=False`` (the other processes under torchrun) makes every method a no-op.
    ``tb_step`` maps a record to TensorBoard's one step axis, which must grow over the whole
    run (TensorBoard's purge on resume drops every tag's events from that step on).
    """

    def __init__(self, run_dir: str | os.PathLike, enabled: bool = True, tensorboard: bool = True):
        self.path = Path(run_dir) / METRICS_LOG
        self.tensorboard_dir = Path(run_dir) / TENSORBOARD_DIR
        self.enabled = enabled
        self.use_tensorboard = tensorboard and enabled and tensorboard_available()
        self._file: Any = None
        self._size = 0
        self._tb: Any = None
        #: whether the first TensorBoard event written drops the earlier events from its step on
        self._purge = False
        #: TensorBoard step of the last record written (histograms and text go there)
        self.last_step: int | None = None

    # ------------------------------------------------------------------ start / resume
    def start(self, offset: int | None = 0) -> str | None:
        """Begin writing: a new run (``offset=0``) empties the file; a resume cuts it to the
        ``offset`` its checkpoint recorded (None: a checkpoint older than the log, keep the
        whole lines). Returns a note when the file held less than the checkpoint counted."""
        if not self.enabled:
            return None
        self.close()
        note = None
        size = self.path.stat().st_size if self.path.is_file() else 0
        if offset is None or offset > size:
            have = whole_lines_length(self.path)
            if offset is not None:
                note = (f"'{self.path}' holds {have} of the {offset} bytes the checkpoint counted; "
                        "the training curves miss the steps in between")
            offset = have
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.path, "ab") as f:
            f.truncate(offset)
        self._size = offset
        # events from before (a resume, or a run whose checkpoint was deleted) may overlap the
        # steps this run logs: the first event drops those from its step on
        self._purge = self.tensorboard_dir.is_dir()
        return note

    @property
    def offset(self) -> int | None:
        """The file's length after the last record: what a checkpoint records (None: disabled)."""
        return self._size if self.enabled else None

    # ------------------------------------------------------------------ writing
    def write(self, record: dict, tb_step: int | None = None) -> None:
        """Append one record as a line and flush it; mirror its scalars to TensorBoard at ``tb_step``."""
        if not self.enabled:
            return
        if self._file is None:
            self._file = open(self.path, "ab")  # noqa: SIM115 - kept open for the run, closed by close()
        line = (json.dumps({k: _clean(v) for k, v in record.items()}, allow_nan=False) + "\n").encode()
        self._file.write(line)
        self._file.flush()
        self._size += len(line)
        if tb_step is not None:
            self.last_step = tb_step
        if self.use_tensorboard and tb_step is not None:
            self._scalars(record, tb_step)

    def _writer(self, purge: int) -> Any:
        if self._tb is None:
            from torch.utils.tensorboard import SummaryWriter

            self._tb = SummaryWriter(str(self.tensorboard_dir), purge_step=purge if self._purge else None)
        return self._tb

    def _scalars(self, record: dict, step: int) -> None:
        # on a resume, TensorBoard drops the earlier events from this step on: those logged
        # after the checkpoint. An epoch or eval record sits on its epoch's last step, after that
        # step's own record, which the checkpoint counted, so the purge starts one step later
        writer = self._writer(step + (record["kind"] != "step"))
        for tag, value in scalar_tags(record):
            writer.add_scalar(tag, value, step)

    def histogram(self, tag: str, values: list[float]) -> None:
        """A distribution (a block's path ratings) on TensorBoard, at the last record's step
        (metrics.jsonl does not hold it: the rating CSVs beside it do)."""
        finite = [v for v in values if math.isfinite(v)]
        if self.use_tensorboard and self.last_step is not None and finite:
            import numpy as np

            # after the step's own record, which the checkpoint counted: the purge starts one later
            self._writer(self.last_step + 1).add_histogram(tag, np.asarray(finite, dtype=np.float64), self.last_step)

    def text(self, tag: str, text: str) -> None:
        """A line of text (a block's best path) on TensorBoard, at the last record's step."""
        if self.use_tensorboard and self.last_step is not None:
            self._writer(self.last_step + 1).add_text(tag, text, self.last_step)

    def sync(self) -> None:
        """Put every record on disk before a checkpoint counts it."""
        if self._file is not None:
            os.fsync(self._file.fileno())
        if self._tb is not None:
            self._tb.flush()

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None
        if self._tb is not None:
            self._tb.close()
            self._tb = None


def scalar_tags(record: dict) -> list[tuple[str, float]]:
    """The TensorBoard (tag, value) pairs of one record (see :data:`SCALARS`)."""
    if record["kind"] == "eval":
        group = "test"
    else:
        group = f"block_{record['block']}" if "block" in record else "train"
    pairs = []
    for name, tag in SCALARS.get(record["kind"], {}).items():
        value = record.get(name)
        if isinstance(value, (int, float)) and math.isfinite(value):
            pairs.append((f"{group}/{tag}", float(value)))
    return pairs


class PendingSteps:
    """Step records whose loss is still a tensor on the device, written together every few
    steps with one device sync (a ``float(loss)`` each step would stall a GPU's queue)."""

    def __init__(self, log: MetricsLog):
        self.log = log
        self.records: list[tuple[dict, Any, int | None]] = []

    def add(self, record: dict, loss: Any, tb_step: int | None = None) -> None:
        self.records.append((record, loss.detach() if self.log.enabled else None, tb_step))

    def flush(self, images_per_s: float | None = None) -> None:
        """Write the held records (before every checkpoint, so that it counts them)."""
        if self.records and self.log.enabled:
            import torch

            losses = torch.stack([loss for _, loss, _ in self.records]).float().tolist()
            for (record, _, tb_step), loss in zip(self.records, losses, strict=True):
                self.log.write({**record, "loss": loss, "images_per_s": images_per_s}, tb_step)
        self.records = []


def log_choice(run_dir: str | os.PathLike, tag: str, text: str) -> None:
    """The architecture a search chose, as text in the run's TensorBoard logs (where the run
    has them: written when tensorboard was installed), at step 0 of its own tag."""
    folder = Path(run_dir) / TENSORBOARD_DIR
    if not folder.is_dir() or not tensorboard_available():
        return
    from torch.utils.tensorboard import SummaryWriter

    with SummaryWriter(str(folder)) as writer:
        writer.add_text(tag, text, 0)


def tensorboard_available() -> bool:
    """Whether ``torch.utils.tensorboard`` can be used (it needs the ``tensorboard`` package)."""
    try:
        import torch.utils.tensorboard  # noqa: F401
    except ImportError:
        return False
    return True


def read_metrics(path: str | os.PathLike) -> list[dict]:
    """The records of a ``metrics.jsonl``; an unfinished last line (a run killed mid-write,
    not resumed yet) is left out, a damaged line elsewhere is a one-line error."""
    return [record for _, record in read_metrics_lines(path)]


def read_metrics_lines(path: str | os.PathLike) -> list[tuple[int, dict]]:
    """The records of a ``metrics.jsonl`` with their line numbers (see :func:`read_metrics`).

    The writer writes ASCII JSON objects only, so an unfinished last line is the start of
    one (``{...``); anything else after the last line break is damage, not a cut write.
    """
    path = Path(path)
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise BossNASError(f"'{path}' does not exist") from None
    lines = data.split(b"\n")
    records = []
    for number, line in enumerate(lines[:-1], start=1):  # the last piece follows the last line break
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except (json.JSONDecodeError, UnicodeDecodeError):
            record = None
        if not isinstance(record, dict) or "kind" not in record:
            raise not_a_record(path, number)
        records.append((number, record))
    tail = lines[-1].strip()
    if tail and not (tail.isascii() and tail.startswith(b"{")):
        raise not_a_record(path, len(lines))
    return records


def not_a_record(path: Path, number: int, why: str = "") -> BossNASError:
    """The one-line error of a damaged metrics.jsonl line."""
    return BossNASError(f"'{path}' line {number} is not a metrics record{f' ({why})' if why else ''}; "
                        "restore the file or start the run over")


__all__ = ["METRICS_LOG", "TENSORBOARD_DIR", "MetricsLog", "PendingSteps", "log_choice", "not_a_record", "read_metrics",
           "read_metrics_lines", "tensorboard_available"]
