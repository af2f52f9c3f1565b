import os
from pathlib import Path

import pytest
import torch

SHARED = Path(__file__).resolve().parents[2] / "shared"
SHARED_DATA = SHARED / "data"

torch.set_num_threads(min(2, os.cpu_count() or 1))


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
