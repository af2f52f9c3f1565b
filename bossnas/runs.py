"""The run folder: one way to start, resume, lock and write a run, for search and retraining.

A run folder holds ``config.yaml`` (what ran), ``checkpoint.pt`` (where the loop is, with a
SHA-256 header, written atomically) and the outputs of its kind. :class:`RunFolder` does
everything around the loop that both ``bossnas run`` and ``bossnas retrain`` need:

- refuse an occupied folder without ``--resume`` / ``--force``, and a folder of another kind;
- check, before any work, that the folder can be written (not a file, not read-only, no
  folder where a file goes);
- hold an exclusive lock (``.lock``, a POSIX record lock) for the life of the run, so a
  second run, a ``--force`` or a ``--resume`` cannot write into a live run; the lock dies
  with its process, so a run killed with ``kill -9`` leaves no stale lock behind;
- on ``--force``, remove everything a run of that kind wrote (``FolderKind.outputs``);
- read the saved config (``config.yaml``, or the checkpoint's own copy when it was deleted)
  and refuse a resume whose training config differs, naming the keys.

:class:`StopSignals` is the one SIGINT / SIGTERM handler of both loops.
"""

from __future__ import annotations

import contextlib
import errno
import os
import shutil
import signal
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import yaml

from bossnas.entry import SignalStop
from bossnas.errors import BossNASError
from bossnas.utils.io import atomic_write_text, load_checkpoint, save_checkpoint

CHECKPOINT = "checkpoint.pt"
CONFIG = "config.yaml"
LOCK = ".lock"


# --------------------------------------------------------------------------- signals
class Interrupted(BossNASError):
    """A run stopped on request (SIGINT / SIGTERM) with its checkpoint saved.

    ``exit_code`` is the shell's 128 + signal number (130 for Ctrl-C, 143 for SIGTERM).
    """

    def __init__(self, message: str, signum: int = signal.SIGINT):
        super().__init__(message)
        self.exit_code = 128 + int(signum)


class StopSignals:
    """SIGINT / SIGTERM handling: the first signal asks the run to stop after its current step.

    A second signal more than a second after the first stops at once
    (:class:`bossnas.entry.SignalStop`: one line and 128 + the signal number, like the first);
    the first repeat within a second is ignored, because under torchrun a Ctrl-C reaches
    each worker twice (from the terminal and from the launcher). Use as a context manager
    around everything that should stop cleanly; the CLI installs it before the run folder
    is even opened, so a signal at any time after start-up ends in a checkpoint.
    """

    def __init__(self, announce: bool = True):
        self.event = threading.Event()
        self.signum: int = signal.SIGINT
        self.announce = announce
        self._first_at = 0.0
        self._previous: list = []

    @property
    def name(self) -> str:
        return signal.Signals(self.signum).name

    def __call__(self, signum: int, _frame: object) -> None:
        now = time.monotonic()
        if self.event.is_set():
            if now - self._first_at > 1.0:
                raise SignalStop(signum, f"stopped at once by a second {signal.Signals(signum).name}; the last checkpoint is kept")
            return
        self.signum, self._first_at = signum, now
        self.event.set()
        if self.announce:
            print(f"{signal.Signals(signum).name}: stopping after the current step and saving a checkpoint "
                  "(signal again to stop at once)", file=sys.stderr, flush=True)

    @property
    def installed(self) -> bool:
        return bool(self._previous)

    def __enter__(self) -> StopSignals:
        if threading.current_thread() is threading.main_thread() and not self._previous:
            for sig in (signal.SIGINT, signal.SIGTERM):
                self._previous.append((sig, signal.getsignal(sig)))
                signal.signal(sig, self)
        return self

    def __exit__(self, *exc: object) -> None:
        for sig, handler in self._previous:
            signal.signal(sig, handler)
        self._previous = []

    def interrupted(self, where: str, run_dir: Path) -> Interrupted:
        """The error a loop raises once it has saved its checkpoint after a stop request."""
        return Interrupted(f"interrupted by {self.name} {where}; checkpoint saved in '{run_dir}', continue with --resume",
                           self.signum)


@contextlib.contextmanager
def interrupt_on_signals(where: Callable[[], str]) -> Iterator[None]:
    """SIGINT / SIGTERM stop the work inside at once with :class:`Interrupted` (one line, exit
    status 128 + the signal), for work that has nothing to checkpoint (timing a latency table).

    ``where()`` says what was being done and what happens next ("while timing block 1 ...;
    nothing was written"). Outside the main thread nothing is installed.
    """
    def stop(signum: int, _frame: object) -> None:
        raise Interrupted(f"interrupted by {signal.Signals(signum).name} {where()}", signum)

    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = [(sig, signal.signal(sig, stop)) for sig in (signal.SIGINT, signal.SIGTERM)]
    try:
        yield
    finally:
        for sig, handler in previous:
            signal.signal(sig, handler)


class CheckpointClock:
    """When a loop should write a checkpoint because ``minutes`` passed since the last one (0: never)."""

    def __init__(self, minutes: float):
        self.seconds = minutes * 60.0
        self.last = time.monotonic()

    def due(self) -> bool:
        return self.seconds > 0 and time.monotonic() - self.last >= self.seconds

    def saved(self) -> None:
        self.last = time.monotonic()


# --------------------------------------------------------------------------- configs
def diff_keys(a: dict, b: dict, prefix: str = "") -> list[str]:
    """The dotted keys whose values differ between two config trees, with both values."""
    keys = []
    for k in sorted(set(a) | set(b)):
        va, vb = a.get(k), b.get(k)
        if isinstance(va, dict) and isinstance(vb, dict) and k != "space_options":
            keys += diff_keys(va, vb, f"{prefix}{k}.")
        elif va != vb:
            keys.append(f"{prefix}{k} ({va!r} -> {vb!r})")
    return keys


# --------------------------------------------------------------------------- folders
@dataclass(frozen=True)
class FolderKind:
    """What a run of one kind writes, and how its messages name the folder."""

    #: the ``kind`` recorded in its checkpoints
    name: str
    #: how messages call the folder ("run folder", "output folder")
    label: str
    #: files whose presence means the folder holds a run of this kind
    markers: tuple[str, ...]
    #: what ``--force`` removes (glob patterns, files or folders): everything the run and the
    #: commands that work on it (search, rate, show --plot, retrain, export) write there
    outputs: tuple[str, ...]
    #: outputs that must be plain files (a folder in their place is refused before anything is removed)
    files: tuple[str, ...]
    #: files that mark a folder of the *other* kind, with what to do instead
    foreign: tuple[str, ...] = ()


SEARCH = FolderKind(
    name="search", label="run folder",
    markers=(CHECKPOINT, "best_arch.json"),
    outputs=(CHECKPOINT, CONFIG, "best_arch.json", "best_arch-*.json", "report.md", "report-*.md",
             "block_*_ratings.csv", "ratings.csv", "arch.png", "arch.pdf", "arch.svg", "retrain", "retrain-*",
             "metrics.jsonl", "tensorboard", "loss.png", "ratings.png", "latency_*.csv", "pareto_*.png"),
    files=(CHECKPOINT, CONFIG, "best_arch.json", "report.md"),
    foreign=("metrics.json",),
)
RETRAIN = FolderKind(
    name="retrain", label="output folder",
    markers=(CHECKPOINT, "metrics.json", CONFIG),
    outputs=(CHECKPOINT, CONFIG, "metrics.json", "export", "metrics.jsonl", "tensorboard", "loss.png"),
    files=(CHECKPOINT, CONFIG, "metrics.json"),
    foreign=("best_arch.json", "block_0_ratings.csv"),
)


def _nearest_existing(path: Path) -> Path:
    for candidate in (path, *path.parents):
        if candidate.exists():
            return candidate
    return Path(".")


def check_writable_folder(path: str | os.PathLike, what: str = "folder") -> None:
    """Refuse, in one line, a folder that cannot hold a run: a file in its place (or above it),
    or no permission / a read-only file system where it is or would be created.

    Writes and removes a probe file, because permission bits do not tell about read-only
    mounts, and root passes every ``os.access`` check.
    """
    path = Path(path)
    base = _nearest_existing(path)
    if not base.is_dir():
        where = "" if base == path else f" (in the way of '{path}')"
        raise BossNASError(f"'{base}' is a file, not a folder{where}; give a folder for the {what}")
    try:
        fd, probe = tempfile.mkstemp(dir=base, prefix=".bossnas-write-test-")
        os.close(fd)
        os.unlink(probe)
    except OSError as exc:
        reason = "read-only file system" if exc.errno == errno.EROFS else (exc.strerror or str(exc))
        raise BossNASError(f"cannot write in '{base}' ({reason}); choose another {what} or make it writable") from None


#: the files of a ``bossnas export`` folder (it holds model.json)
EXPORT_FILES = ("model.pt", "model.json", "model.pt2", "model.onnx")
#: files whose presence makes a folder a run's (search or retraining)
RUN_MARKERS = (CHECKPOINT, CONFIG, "best_arch.json", "metrics.json", "metrics.jsonl")


def run_file_of(path: str | os.PathLike) -> str | None:
    """What ``path`` is when it is one of a run's own files (the checkpoint, config.yaml, a
    record, a rating table, a latency table, a picture, an export), else None.

    The path is resolved first, so a symlink to a checkpoint or ``RUN/../RUN/config.yaml``
    counts as the file itself.
    """
    import fnmatch

    resolved = Path(path).expanduser().resolve()
    folder, name = resolved.parent, resolved.name
    if name == LOCK:
        return f"the lock file of '{folder}'"
    if (folder / "model.json").is_file() and name in EXPORT_FILES:
        return f"a file of the export in '{folder}'"
    if not any((folder / marker).exists() for marker in RUN_MARKERS):
        return None
    for kind in (SEARCH, RETRAIN):
        if any(fnmatch.fnmatchcase(name, pattern) for pattern in kind.outputs):
            return f"a file of the run in '{folder}'"
    return None


def check_output_file(path: str | os.PathLike, option: str, force: bool = False) -> Path:
    """Check, before any work, that a file the user named (``rate --out x.csv``) may be written.

    Refused in one line: one of a run's own files (:func:`run_file_of`; never, whatever
    ``force`` says: a rating CSV over ``checkpoint.pt`` loses the run), a folder, an existing
    file without ``force``, and a folder that cannot be written. Write the file afterwards
    with :func:`bossnas.utils.io.atomic_write_text` (or ``atomic_write_bytes``), so a crash
    leaves the old file or the new one.
    """
    path = Path(path).expanduser()
    owner = run_file_of(path)
    if owner is not None:
        raise BossNASError(f"{option} '{path}' is {owner}; it is never overwritten, choose another file name")
    if path.is_dir():
        raise BossNASError(f"{option} '{path}' is a folder; give a file name")
    if (path.exists() or path.is_symlink()) and not force:
        raise BossNASError(f"{option} '{path}' exists; add --force to overwrite it or choose another file name")
    check_writable_folder(path.parent, f"{option} folder")
    return path


class RunFolder:
    """A run folder of one kind: checks, lock, --force, config.yaml and checkpoint.pt."""

    def __init__(self, path: str | os.PathLike, kind: FolderKind):
        self.path = Path(path)
        self.kind = kind
        self._lock: IO[str] | None = None

    @property
    def checkpoint(self) -> Path:
        return self.path / CHECKPOINT

    @property
    def config_file(self) -> Path:
        return self.path / CONFIG

    def __repr__(self) -> str:
        return f"RunFolder({str(self.path)!r}, {self.kind.name})"

    # ------------------------------------------------------------------ checks
    def holds_run(self) -> bool:
        return any((self.path / name).exists() for name in self.kind.markers)

    def check_usable(self) -> None:
        """A folder (or nothing yet) that can be written, with no folder where a file goes,
        and not a folder of the other kind."""
        check_writable_folder(self.path, self.kind.label)
        for name in self.kind.files:
            p = self.path / name
            if p.exists() and not p.is_file():
                raise BossNASError(f"'{p}' is not a file; move it out of the {self.kind.label} (nothing was changed)")
        for name in self.kind.foreign:
            if (self.path / name).exists():
                other = RETRAIN if self.kind is SEARCH else SEARCH
                hint = f" (default: {self.path / 'retrain'})" if self.kind is RETRAIN else ""
                raise BossNASError(f"'{self.path}' is a {other.name} {other.label}; use another --out{hint}")

    def check_free(self, force: bool) -> None:
        if self.holds_run() and not force:
            raise BossNASError(f"{self.kind.label} '{self.path}' already holds a run; add --resume to continue it or --force "
                               "to start over (or give another --out)")

    # ------------------------------------------------------------------ lock
    def lock(self) -> None:
        """Take the folder's exclusive lock for the life of this object (or of the process).

        A POSIX record lock (``fcntl.lockf``): the kernel drops it when its process ends, so
        the lock of a killed run never blocks the next one. A process may retake its own lock.
        """
        import fcntl

        if self._lock is not None:
            return
        self.path.mkdir(parents=True, exist_ok=True)
        handle = open(self.path / LOCK, "a+")  # noqa: SIM115 - kept open: the lock lives as long as the file
        try:
            fcntl.lockf(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            handle.seek(0)
            owner = handle.read().strip() or "another process"
            handle.close()
            owner = f"process {owner}" if owner.isdigit() else owner
            raise BossNASError(f"{self.kind.label} '{self.path}' is in use by {owner} (a live run); "
                               "wait for it to end or stop it, then --resume or --force") from None
        handle.seek(0)
        handle.truncate()
        handle.write(f"{os.getpid()}\n")
        handle.flush()
        self._lock = handle

    def unlock(self) -> None:
        if self._lock is not None:
            self._lock.close()
            self._lock = None

    @property
    def locked(self) -> bool:
        return self._lock is not None

    # ------------------------------------------------------------------ start / resume
    def prepare(self, resume: bool, force: bool) -> dict | None:
        """Every check on the folder before any work: usable, not live, free (or --force), and
        with --resume the checkpoint (returned). Takes the lock when the folder exists."""
        self.check_usable()
        if self.path.is_dir():
            self.lock()
        try:
            if resume:
                return self.read_checkpoint()
            self.check_free(force)
        except BaseException:
            self.unlock()
            raise
        return None

    def resumed(self, config_tree: dict) -> None:
        """A resume passed its checks: config.yaml records the config it runs with (only keys
        that do not change the weights can differ, e.g. a new search budget)."""
        self.write_config(config_tree)

    def begin(self, config_tree: dict, force: bool) -> None:
        """Start a run: lock (a new folder), clear what an earlier run wrote (--force), write config.yaml."""
        self.lock()
        self.check_free(force)  # again under the lock: another run may have started meanwhile
        if force:
            self.clear()
        self.write_config(config_tree)

    def clear(self) -> None:
        """Remove everything a run of this kind wrote (``--force``); the checks ran before."""
        for pattern in self.kind.outputs:
            for p in sorted(self.path.glob(pattern)):
                if p.is_dir() and not p.is_symlink():
                    shutil.rmtree(p)
                else:
                    p.unlink(missing_ok=True)

    def write_config(self, config_tree: dict) -> None:
        atomic_write_text(self.config_file, yaml.safe_dump(config_tree, sort_keys=False))

    # ------------------------------------------------------------------ checkpoint
    def read_checkpoint(self) -> dict:
        if not self.checkpoint.is_file():
            raise BossNASError(f"nothing to resume: '{self.checkpoint}' does not exist; start without --resume")
        state = load_checkpoint(self.checkpoint)
        kind = state.get("kind", SEARCH.name)  # search checkpoints written before kinds were recorded
        if kind != self.kind.name:
            raise BossNASError(f"'{self.checkpoint}' is a {kind} checkpoint, not a {self.kind.name} one; use another --out")
        return state

    def save(self, state: dict) -> None:
        save_checkpoint(self.checkpoint, {"kind": self.kind.name, **state})


def check_search_folder(path: str | os.PathLike) -> Path:
    """A search run folder to read (``search`` / ``rate`` / ``latency``), or one line saying what
    ``path`` is instead: missing, a file (a record inside the folder, say), a retraining folder."""
    path = Path(path)
    if path.is_file():
        inside = f"; give the run folder '{path.parent}'" if (path.parent / CHECKPOINT).is_file() else ""
        raise BossNASError(f"'{path}' is a file, not a run folder{inside}")
    if not path.is_dir():
        raise BossNASError(f"run folder '{path}' does not exist")
    if (path / "metrics.json").is_file() and not (path / "best_arch.json").exists():
        search = f" (its search: '{path.parent}')" if (path.parent / "best_arch.json").is_file() else ""
        raise BossNASError(f"'{path}' is a `bossnas retrain` folder, not a search run folder{search}; search, rate "
                           "and latency work on the folder of `bossnas run`")
    return path


def check_same_training(saved: dict, config: Any, where: Path, saved_config: Any) -> None:
    """Refuse to resume a checkpoint trained with another config, naming the keys that differ.

    ``saved_config`` is the checkpoint's config rebuilt as the same class as ``config``.
    """
    if saved.get("fingerprint") != config.fingerprint():
        differs = diff_keys(saved_config.training_view(), config.training_view())
        raise BossNASError(
            f"checkpoint '{where}' was trained with a different config ({'; '.join(differs[:4]) or 'fingerprint'}); "
            "resume with the run's own config or start another --out"
        )


def saved_config_tree(run_dir: str | os.PathLike) -> tuple[dict, str] | None:
    """The config a run folder was started with, and where it was read: its config.yaml, or,
    when that file was deleted, the copy every checkpoint holds. None when the folder has neither.
    """
    run_dir = Path(run_dir)
    path = run_dir / CONFIG
    if path.is_file():
        try:
            tree = yaml.safe_load(path.read_text(encoding="utf-8"))
        except (yaml.YAMLError, UnicodeDecodeError) as exc:
            mark = getattr(exc, "problem_mark", None)
            where = f" at line {mark.line + 1}" if mark is not None else ""
            raise BossNASError(f"'{path}' is not valid YAML{where}; restore it or delete it (the checkpoint holds a copy)") from None
        if not isinstance(tree, dict):
            raise BossNASError(f"'{path}' must be a mapping of keys to values; restore it or delete it (the checkpoint holds a copy)")
        return tree, str(path)
    if (run_dir / CHECKPOINT).is_file():
        config = load_checkpoint(run_dir / CHECKPOINT).get("config")
        if isinstance(config, dict):
            return config, str(run_dir / CHECKPOINT)
    return None


__all__ = [
    "CHECKPOINT", "CONFIG", "RETRAIN", "SEARCH", "CheckpointClock", "FolderKind", "Interrupted", "RunFolder", "StopSignals",
    "check_output_file", "check_same_training", "check_search_folder", "check_writable_folder", "diff_keys", "interrupt_on_signals", "run_file_of",
    "saved_config_tree",
]
