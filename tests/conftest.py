import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

SHARED = Path(__file__).resolve().parents[2] / "shared"
SHARED_DATA = SHARED / "data"

# The networks in the tests are tiny: one thread runs them as fast as two, and on a busy
# shared 2-core machine two threads made them crawl (up to 100x). Subprocesses get the same.
torch.set_num_threads(1)
os.environ.setdefault("OMP_NUM_THREADS", "1")


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
