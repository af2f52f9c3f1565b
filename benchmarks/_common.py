"""Helpers shared by the benchmark scripts (not part of the library)."""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
from datetime import datetime, timezone
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "data"
DEFAULT_CACHE = Path(os.environ.get("BOSSNAS_DATA", Path.home() / ".cache" / "bossnas-data"))


CLASSES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]


def ensure_cifar10(data_dir: Path, archive: Path | None = None) -> Path:
    """Unpack the shared CIFAR-10 copy once into ``data_dir`` (benchmarks may read ../shared).

    Uses ``../shared/data/prepare_cifar10.py`` when it is there; else (on a machine that
    only received the archive, such as a lent GPU) decodes ``archive`` itself, in parallel.
    """
    if (data_dir / "cifar-10-batches-py" / "batches.meta").is_file():
        return data_dir
    script = SHARED_DATA / "prepare_cifar10.py"
    if script.is_file():
        subprocess.run([sys.executable, str(script), str(data_dir)], check=True)
        return data_dir
    if archive is None or not archive.is_file():
        sys.exit(f"CIFAR-10 not found under {data_dir} and no {script} to prepare it; pass --data-dir or --archive")
    unpack_cifar10(archive, data_dir)
    return data_dir


def _decode(item: tuple[str, bytes]) -> tuple[str, bytes]:
    import io

    import numpy as np
    from PIL import Image

    name, data = item
    return name, np.asarray(Image.open(io.BytesIO(data)).convert("RGB"), dtype=np.uint8).transpose(2, 0, 1).tobytes()


def unpack_cifar10(archive: Path, dest: Path) -> None:
    """The python-pickle layout of CIFAR-10 from the shared JPEG archive (canonical class order).

    The split into batch files differs from the shared script's; loaders read all five
    training files, so the data set is the same.
    """
    import pickle
    import tarfile
    from concurrent.futures import ProcessPoolExecutor

    import numpy as np

    items = []
    with tarfile.open(archive) as tar:
        for member in tar.getmembers():
            if member.name.endswith(".jpg"):
                items.append((member.name, tar.extractfile(member).read()))
    with ProcessPoolExecutor() as pool:
        decoded = dict(pool.map(_decode, items, chunksize=512))
    out = dest / "cifar-10-batches-py"
    out.mkdir(parents=True, exist_ok=True)
    for split, files in (("train", [f"data_batch_{i}" for i in range(1, 6)]), ("test", ["test_batch"])):
        names = sorted(n for n in decoded if n.split("/")[1] == split)
        labels = [CLASSES.index(n.split("/")[2]) for n in names]
        data = np.frombuffer(b"".join(decoded[n] for n in names), dtype=np.uint8).reshape(len(names), 3072)
        for i, chunk in enumerate(np.array_split(np.arange(len(names)), len(files))):
            with open(out / files[i], "wb") as f:
                pickle.dump({"data": data[chunk], "labels": [labels[j] for j in chunk]}, f)
    with open(out / "batches.meta", "wb") as f:
        pickle.dump({"label_names": CLASSES}, f)


def machine() -> dict:
    import torch

    info = {
        "machine": platform.machine(),
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "python": platform.python_version(),
        "date": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
    }
    if torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name()
    return info


def write_json(path: Path, obj: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(obj, indent=2) + "\n")
