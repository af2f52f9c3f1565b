import contextlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
import torch

SHARED = Path(__file__).resolve().parents[2] / "shared"
SHARED_DATA = SHARED / "data"

# The networks in the tests are tiny: one thread runs them as fast as two, and on a busy
# shared 2-core machine two threads made them crawl (up to 100x). Subprocesses get the same.
torch.set_num_threads(1)
os.environ.setdefault("OMP_NUM_THREADS", "1")
# runs record their step rates in the user's cache folder: the tests (and the commands they
# start) keep theirs in a folder of their own, never in the user's
os.environ["BOSSNAS_CACHE_DIR"] = tempfile.mkdtemp(prefix="bossnas-test-cache-")


@pytest.fixture
def shared_data() -> Path:
    if not SHARED_DATA.is_dir():
        pytest.skip(f"shared data folder {SHARED_DATA} not present")
    return SHARED_DATA


#: overrides for a run that covers every block in a few seconds on a CPU
TINY = [
    "data.image_size=8",
    "data.train_images=96",
    "train.batch_size=32",
    "model.hidden_dim=32",
    "model.proj_dim=16",
    "search.rate_images=24",
    "search.recal_batches=1",
]


class FakeClock:
    """A stand-in for the ``time`` module of code under test (``monkeypatch.setattr(module,
    "time", clock)``): its clocks move only when the test advances them (or by ``tick`` at
    every reading), so durations and rates come out exact on any machine, however busy."""

    def __init__(self, start: float = 1000.0, tick: float = 0.0):
        self.now = start
        #: seconds every reading moves the clock on (0: only advance() moves it)
        self.tick = tick

    def advance(self, seconds: float) -> None:
        self.now += seconds

    def _read(self) -> float:
        self.now += self.tick
        return self.now

    def perf_counter(self) -> float:
        return self._read()

    def monotonic(self) -> float:
        return self._read()

    def time(self) -> float:
        return self._read()


#: how long a test waits for a tiny run in a child process before calling it hung: far above
#: what any such run takes on a loaded 2-core machine, so only a real hang trips it
HANG_S = 900


def bossnas(*args: str) -> subprocess.CompletedProcess:
    """``python -m bossnas ARGS`` in a fresh interpreter, output captured."""
    return subprocess.run([sys.executable, "-m", "bossnas", *args], capture_output=True, text=True)


def run_cli(monkeypatch, capsys, *args: str) -> tuple[int, str, str]:
    """``bossnas ARGS`` in this process (no interpreter start-up): (exit code, stdout, stderr)."""
    from bossnas.cli import main

    monkeypatch.setattr(sys, "argv", ["bossnas", *args])
    code = 0
    try:
        main()
    except SystemExit as exc:
        code = exc.code or 0
    out = capsys.readouterr()
    return code, out.out, out.err


#: Installed as ``sitecustomize`` (on PYTHONPATH) in a child started with ``pause_at`` or
#: ``pause_after_record``, so that it also reaches the workers torchrun starts for ``--nproc``:
#: the process that writes a checkpoint whose state has every field of $BOSSNAS_TEST_PAUSE_AT
#: (JSON), or a metrics.jsonl record with every field of $BOSSNAS_TEST_PAUSE_AFTER_RECORD,
#: writes its pid to $BOSSNAS_TEST_PAUSED_PID and stops itself (SIGSTOP). Polling files from
#: outside can miss a state that lasts a few milliseconds on a busy machine (the rating of a
#: tiny last block); a paused process cannot run past it.
_PAUSE_HOOK = """
import json, os, signal

def _pause_after(cls, name, fields, of):
    original = getattr(cls, name)
    def then_pause(self, payload, *args, **kwargs):
        original(self, payload, *args, **kwargs)
        if all(of(payload).get(k) == v for k, v in fields.items()):
            with open(os.environ["BOSSNAS_TEST_PAUSED_PID"] + ".part", "w") as f:
                f.write(str(os.getpid()))
            os.replace(os.environ["BOSSNAS_TEST_PAUSED_PID"] + ".part", os.environ["BOSSNAS_TEST_PAUSED_PID"])
            os.kill(os.getpid(), signal.SIGSTOP)
    setattr(cls, name, then_pause)

if "BOSSNAS_TEST_PAUSED_PID" in os.environ:
    from bossnas import curves, runs
    if "BOSSNAS_TEST_PAUSE_AT" in os.environ:
        _pause_after(runs.RunFolder, "save", json.loads(os.environ["BOSSNAS_TEST_PAUSE_AT"]), lambda p: p["state"])
    if "BOSSNAS_TEST_PAUSE_AFTER_RECORD" in os.environ:
        _pause_after(curves.MetricsLog, "write", json.loads(os.environ["BOSSNAS_TEST_PAUSE_AFTER_RECORD"]), lambda r: r)
"""


def start_bossnas(*args: str, pause_at: dict | None = None, pause_after_record: dict | None = None) -> subprocess.Popen:
    """``python -m bossnas ARGS`` in the background, in its own process group (so the
    launcher of ``--nproc`` and its workers can be killed together). With ``pause_at``
    (checkpoint state fields, e.g. ``{"block": 2, "phase": "rate"}``) or ``pause_after_record``
    (metrics.jsonl record fields, e.g. ``{"kind": "step", "step": 3}``) the process that writes
    the first matching checkpoint or record stops itself; see :func:`wait_until_paused`."""
    import tempfile

    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc_pause = None
    if pause_at is not None or pause_after_record is not None:
        hook = Path(tempfile.mkdtemp(prefix="bossnas-pause-"))
        (hook / "sitecustomize.py").write_text(_PAUSE_HOOK)
        env["PYTHONPATH"] = os.pathsep.join(p for p in (str(hook), env.get("PYTHONPATH")) if p)
        env["BOSSNAS_TEST_PAUSED_PID"] = proc_pause = str(hook / "paused.pid")
        if pause_at is not None:
            env["BOSSNAS_TEST_PAUSE_AT"] = json.dumps(pause_at)
        if pause_after_record is not None:
            env["BOSSNAS_TEST_PAUSE_AFTER_RECORD"] = json.dumps(pause_after_record)
    proc = subprocess.Popen([sys.executable, "-m", "bossnas", *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, env=env, start_new_session=True)
    proc.paused_pid_file = proc_pause
    return proc


def search_checkpoint_state(path: Path) -> tuple | None:
    """(block, phase, epoch, step) of a search checkpoint; None while it is missing or half-written."""
    from bossnas.errors import BossNASError
    from bossnas.utils.io import load_checkpoint

    try:
        s = load_checkpoint(path)["state"]
    except BossNASError:
        return None
    return s["block"], s["phase"], s["epoch"], s["step"]


def wait_until_paused(proc: subprocess.Popen, timeout: float = HANG_S) -> int:
    """Wait until the child of a process started with ``pause_at`` or ``pause_after_record``
    (the process itself, or a torchrun worker) has stopped itself; returns its pid. It stays
    stopped (Linux /proc state T) until it gets SIGCONT or SIGKILL."""
    import time

    pid_file = Path(proc.paused_pid_file)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert proc.poll() is None, f"the run ended before its pause point: {proc.communicate()}"
        if pid_file.is_file():
            pid = int(pid_file.read_text())
            with open(f"/proc/{pid}/stat") as f:
                if f.read().rsplit(")", 1)[1].split()[0] == "T":
                    return pid
        time.sleep(0.01)
    raise AssertionError(f"the run did not reach its pause point in {timeout}s")


@pytest.fixture
def launched():
    """Start `bossnas ...` with :func:`start_bossnas`; whatever is left of it is killed at the end."""
    import signal

    procs = []

    def start(*args: str, **pause: dict) -> subprocess.Popen:
        procs.append(start_bossnas(*args, **pause))
        return procs[-1]

    yield start
    for proc in procs:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.communicate()
        if proc.paused_pid_file is not None:
            shutil.rmtree(Path(proc.paused_pid_file).parent, ignore_errors=True)


def tiny_search(out: Path, space: str, overrides: list[str]) -> tuple[dict, list[list[tuple[str, float]]]]:
    """``bossnas run --space SPACE OVERRIDES --out OUT`` in this process, checked to succeed:
    (its best_arch.json, the rating table of every block in block order)."""
    import json

    from typer.testing import CliRunner

    from bossnas.cli import app
    from bossnas.train.runner import read_table

    res = CliRunner().invoke(app, ["run", "--space", space, *overrides, "--out", str(out), "--quiet"])
    assert res.exit_code == 0, res.output + repr(res.exception)
    record = json.loads((out / "best_arch.json").read_text())
    tables = []
    while (out / f"block_{len(tables)}_ratings.csv").is_file():
        tables.append(read_table(out / f"block_{len(tables)}_ratings.csv"))
    return record, tables


def standalone_and_supernet_features(space, supernet, arch, x: torch.Tensor, mode: str):
    """(standalone model, its features, the supernet's features along the same path): a
    fresh standalone build of ``arch`` loaded with the weights the supernet extracts, both
    networks in ``mode``."""
    fresh = space.build_standalone(arch)
    fresh.load_state_dict(space.extract_standalone(supernet, arch).state_dict())  # same keys and shapes
    getattr(supernet, mode)()
    getattr(fresh, mode)()
    with torch.no_grad():
        h = x
        for b, path in enumerate(arch):
            h = supernet.forward_block(h, b, path)
        return fresh, fresh.forward_features(x), h


def logged_steps(run_dir: Path) -> list[tuple]:
    """The step records of a run's metrics.jsonl as (block, epoch, step, loss, lr, momentum):
    everything but the throughput, which differs between two runs of the same config."""
    from bossnas.curves import read_metrics

    return [(r.get("block"), r["epoch"], r["step"], r["loss"], r["lr"], r.get("momentum"))
            for r in read_metrics(run_dir / "metrics.jsonl") if r["kind"] == "step"]


def assert_steps_once_in_order(steps: list[tuple], blocks: int | None, per_block: int) -> None:
    """Every optimizer step logged exactly once, in order: 0..per_block-1 in each block
    (``blocks=None``: a retraining, one sequence)."""
    expected = [(b, s) for b in range(blocks) for s in range(per_block)] if blocks else [(None, s) for s in range(per_block)]
    assert [(b, s) for b, _, s, *_ in steps] == expected


@contextlib.contextmanager
def stop_at_augment_call(search, n: int = 1):
    """Ask ``search`` to stop, as a signal would, from its n-th augmentation call on."""
    cls = type(search.augment)
    original = cls.__call__
    calls = 0

    def counting(aug, images, g):
        nonlocal calls
        calls += 1
        if calls >= n:
            search._stop.set()
        return original(aug, images, g)

    cls.__call__ = counting
    try:
        yield
    finally:
        cls.__call__ = original


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory) -> Path:
    """A finished TINY search of nats-sss (K=2), trained once per test session in this process.
    Read it as it is; to change it, work on a :func:`copy_run` of it."""
    out = tmp_path_factory.mktemp("tiny-run") / "run"
    tiny_search(out, "nats-sss", TINY + ["train.paths_per_step=2"])
    return out


def copy_run(src: Path, dst: Path) -> Path:
    """A copy of a run folder (without its lock file) to change."""
    shutil.copytree(src, dst, ignore=shutil.ignore_patterns(".lock"))
    return dst
