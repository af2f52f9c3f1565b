"""Data sets: digits (embedded), CIFAR-10/100 (python-pickle layout) and image folders.

Every data set is a train and a held-out split of uint8 images ``[N, C, H, W]`` with
integer labels. Small data sets live in memory as one tensor, so augmentation runs on
whole batches; an image folder too large for memory is decoded lazily by worker processes.
The channel count and image size come from the data, never from a constant.
"""

from __future__ import annotations

import dataclasses
import hashlib
import math
import os
import pickle
import tarfile
import tempfile
import urllib.request
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from bossnas.errors import BossNASError

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff", ".ppm", ".pgm")
#: folders bigger than this many bytes of decoded pixels are decoded lazily instead
IN_MEMORY_LIMIT_BYTES = 4 * 1024**3
#: image modes PIL reads as one grey channel (with or without alpha)
GRAY_MODES = frozenset({"1", "L", "LA", "La", "I", "I;16", "I;16B", "I;16L", "I;16N", "F"})
#: files whose headers decide an image folder's channels and size (spread over the whole set)
HEADER_SAMPLE = 4096
#: bytes of a float32 pixel: a batch is float32 once augmented
FLOAT_BYTES = 4

CIFAR = {
    "cifar10": {
        "folder": "cifar-10-batches-py",
        "url": "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz",
        "md5": "c58f30108f718f92721af3b95e74349a",
        "train": [f"data_batch_{i}" for i in range(1, 6)],
        "test": ["test_batch"],
        "labels": "labels",
        "meta": ("batches.meta", "label_names"),
    },
    "cifar100": {
        "folder": "cifar-100-python",
        "url": "https://www.cs.toronto.edu/~kriz/cifar-100-python.tar.gz",
        "md5": "eb9058c3a382ffc7106e4002c42a8d85",
        "train": ["train"],
        "test": ["test"],
        "labels": "fine_labels",
        "meta": ("meta", "fine_label_names"),
    },
}


class ImageSet:
    """A split of a data set: ``load(indices)`` gives uint8 images and int64 labels."""

    labels: torch.Tensor

    def __len__(self) -> int:
        return len(self.labels)

    def load(self, indices: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        raise NotImplementedError

    @property
    def in_memory(self) -> bool:
        return False


class TensorImageSet(ImageSet):
    def __init__(self, images: torch.Tensor, labels: torch.Tensor):
        if images.dtype != torch.uint8 or images.dim() != 4:
            raise ValueError("images must be a uint8 tensor [N, C, H, W]")
        self.images = images.contiguous()
        self.labels = labels.long()

    def load(self, indices: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.images[indices], self.labels[indices]

    @property
    def in_memory(self) -> bool:
        return True

    def subset(self, indices: torch.Tensor) -> TensorImageSet:
        return TensorImageSet(self.images[indices], self.labels[indices])


class FolderImageSet(ImageSet):
    """Images decoded from files on each ``load`` (run it in DataLoader workers)."""

    def __init__(self, files: list[Path], labels: list[int], image_size: int, channels: int):
        self.files = files
        self.labels = torch.tensor(labels, dtype=torch.long)
        self.image_size = image_size
        self.channels = channels

    def load(self, indices: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        images = torch.stack([read_image(self.files[i], self.image_size, self.channels) for i in indices.tolist()])
        return images, self.labels[indices]

    def subset(self, indices: torch.Tensor) -> FolderImageSet:
        idx = indices.tolist()
        return FolderImageSet([self.files[i] for i in idx], self.labels[indices].tolist(), self.image_size, self.channels)


@dataclass
class SplitData:
    name: str
    train: ImageSet
    test: ImageSet
    classes: list[str]
    in_channels: int
    image_size: int
    #: per-channel mean and std of the training pixels in [0, 1]
    mean: tuple[float, ...]
    std: tuple[float, ...]

    #: how the channels and size were decided when the data did not say it alone (image folders)
    note: str = ""
    #: training images set aside for rating paths (search.rate_split=train), never trained on;
    #: None: the search rates on the test split
    held_out: ImageSet | None = None

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    @property
    def rating_images(self) -> ImageSet:
        """The images a search rates its paths on: the held-out training images, else the test split."""
        return self.held_out if self.held_out is not None else self.test


# --------------------------------------------------------------------------- helpers
def memory_bytes() -> int | None:
    """Physical memory of this machine, or None where the OS does not say."""
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        return None


def check_fits(need: int, what: str, size: int, per_side_squared: int, memory: int | None = None) -> None:
    """Refuse ``data.image_size=size`` when ``what`` (``need`` bytes, ``per_side_squared`` bytes
    per pixel of side) would not fit in memory: one line instead of a failed allocation."""
    memory = memory_bytes() if memory is None else memory
    if memory is None or need <= memory:
        return
    largest = math.isqrt(memory // per_side_squared)
    raise BossNASError(f"data.image_size={size} is too large: {what} needs {need / 1e9:,.1f} GB, more than the "
                       f"{memory / 1e9:,.1f} GB of memory here; the largest side that fits is {largest}")


def check_image_size(size: int, batch_size: int, memory: int | None = None) -> None:
    """One training batch of two augmented views (float32, counted as 3 channels) must fit in
    memory; activations need far more, so this bound only turns absurd sizes into one line."""
    per_pixel = 2 * batch_size * 3 * FLOAT_BYTES
    check_fits(per_pixel * size * size, f"one batch of two views ({batch_size} x 2 x 3x{size}x{size} float32)", size,
               per_pixel, memory)


def check_in_memory_set(count: int, channels: int, size: int, memory: int | None = None) -> None:
    """A set resized in memory holds uint8 images plus the float32 copy ``resize_uint8`` makes."""
    per_pixel = count * channels * (1 + FLOAT_BYTES)
    check_fits(per_pixel * size * size, f"resizing {count:,} images to {channels}x{size}x{size}", size, per_pixel, memory)


def resize_uint8(images: torch.Tensor, size: int) -> torch.Tensor:
    """Resize a uint8 batch to ``size`` x ``size`` (bilinear, antialiased when shrinking)."""
    if images.shape[-1] == size and images.shape[-2] == size:
        return images
    out = F.interpolate(images.float(), size=(size, size), mode="bilinear", align_corners=False, antialias=True)
    return out.round_().clamp_(0, 255).to(torch.uint8)


def channel_stats(images: torch.Tensor, limit: int = 10000) -> tuple[tuple[float, ...], tuple[float, ...]]:
    sample = images[:: max(1, len(images) // limit)].float() / 255.0  # spread over the whole set
    mean = sample.mean(dim=(0, 2, 3))
    std = sample.std(dim=(0, 2, 3)).clamp_min(1e-3)
    return tuple(round(float(m), 4) for m in mean), tuple(round(float(s), 4) for s in std)


def read_image(path: Path, size: int, channels: int) -> torch.Tensor:
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as img:
            img = img.convert("L" if channels == 1 else "RGB")
            if img.size != (size, size):
                img = img.resize((size, size), Image.BILINEAR)
            array = np.asarray(img, dtype=np.uint8)
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError, EOFError, Image.DecompressionBombError) as exc:
        # PIL reports damaged files with any of these, depending on the format and the damage
        raise BossNASError(f"cannot read image '{path}': {type(exc).__name__}; remove or replace the file") from None
    if array.ndim == 2:
        array = array[:, :, None]
    return torch.from_numpy(array.copy()).permute(2, 0, 1)


def _split_indices(labels: np.ndarray, test_fraction: float, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Stratified, seeded train/test split (the same for every run)."""
    rng = np.random.default_rng(seed)
    train, test = [], []
    for cls in np.unique(labels):
        idx = np.flatnonzero(labels == cls)
        rng.shuffle(idx)
        n_test = max(1, int(round(len(idx) * test_fraction)))
        test.append(idx[:n_test])
        train.append(idx[n_test:])
    return np.sort(np.concatenate(train)), np.sort(np.concatenate(test))


# --------------------------------------------------------------------------- data sets
def load_digits(image_size: int) -> SplitData:
    """The 1,797 8x8 handwritten digits that ship inside scikit-learn, resized to ``image_size``."""
    from sklearn.datasets import load_digits as sk_digits

    bunch = sk_digits()
    check_in_memory_set(len(bunch.images), 1, image_size)
    # sklearn stores 17 grey levels (0..16); spread them over 0..255
    pixels = torch.from_numpy((bunch.images * (255.0 / 16.0)).round().astype(np.uint8)).unsqueeze(1)
    images = resize_uint8(pixels, image_size)
    labels = np.asarray(bunch.target)
    train_idx, test_idx = _split_indices(labels, test_fraction=0.2)
    train = TensorImageSet(images[train_idx], torch.from_numpy(labels[train_idx]))
    test = TensorImageSet(images[test_idx], torch.from_numpy(labels[test_idx]))
    mean, std = channel_stats(train.images)
    return SplitData("digits", train, test, [str(i) for i in range(10)], 1, image_size, mean, std)


def md5_of(path: Path) -> str:
    digest = hashlib.md5()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def download_cifar(name: str, root: Path, url: str | None = None, md5: str | None = None) -> None:
    """Download and unpack a CIFAR archive into ``root``; the MD5 must match or nothing is kept."""
    info = CIFAR[name]
    url, md5 = url or info["url"], md5 or info["md5"]
    root.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=root, suffix=".part")
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        try:
            urllib.request.urlretrieve(url, tmp_path)  # noqa: S310 (fixed https URL)
        except OSError as exc:
            raise BossNASError(f"cannot download {name} from {url}: {exc}; download it by hand into {root}") from None
        got = md5_of(tmp_path)
        if got != md5:
            raise BossNASError(f"{name} archive from {url} has MD5 {got}, expected {md5}; not unpacked")
        with tarfile.open(tmp_path) as tar:
            tar.extractall(root, filter="data")
    finally:
        tmp_path.unlink(missing_ok=True)


def _read_pickle(path: Path) -> dict:
    try:
        with open(path, "rb") as f:
            return pickle.load(f, encoding="latin1")
    except (OSError, pickle.UnpicklingError, EOFError, ValueError) as exc:
        raise BossNASError(f"cannot read CIFAR file '{path}': {type(exc).__name__}") from None


def load_cifar(name: str, root: str | None, download: bool, image_size: int | None) -> SplitData:
    info = CIFAR[name]
    if root is None:
        raise BossNASError(f"data.root is not set; point it at the folder holding {info['folder']}/ (--data-dir DIR)")
    base = Path(root).expanduser()
    folder = base / info["folder"] if (base / info["folder"]).is_dir() else base
    if not (folder / info["test"][0]).is_file():
        if download:
            download_cifar(name, base)
            folder = base / info["folder"]
        else:
            raise BossNASError(
                f"{name} not found under '{base}' (expected {info['folder']}/{info['test'][0]}); "
                "fix data.root or add data.download=true"
            )
    splits = {}
    for split in ("train", "test"):
        data, labels = [], []
        for file in info[split]:
            entry = _read_pickle(folder / file)
            data.append(np.asarray(entry["data"], dtype=np.uint8).reshape(-1, 3, 32, 32))
            labels.append(np.asarray(entry[info["labels"]], dtype=np.int64))
        images = torch.from_numpy(np.concatenate(data))
        if image_size is not None:
            check_in_memory_set(len(images), 3, image_size)
            images = resize_uint8(images, image_size)
        splits[split] = TensorImageSet(images, torch.from_numpy(np.concatenate(labels)))
    meta_file, meta_key = info["meta"]
    meta_path = folder / meta_file
    classes = list(_read_pickle(meta_path)[meta_key]) if meta_path.is_file() else [str(i) for i in range(int(splits["train"].labels.max()) + 1)]
    mean, std = channel_stats(splits["train"].images)
    size = int(splits["train"].images.shape[-1])
    return SplitData(name, splits["train"], splits["test"], classes, 3, size, mean, std)


def _scan_classes(folder: Path) -> tuple[list[Path], list[int], list[str]]:
    classes = sorted(d.name for d in folder.iterdir() if d.is_dir() and not d.name.startswith("."))
    files, labels = [], []
    for label, cls in enumerate(classes):
        for file in sorted((folder / cls).rglob("*")):
            if file.suffix.lower() in IMAGE_SUFFIXES and file.is_file():
                files.append(file)
                labels.append(label)
    return files, labels, classes


def _header(path: Path) -> tuple[str, tuple[int, int]]:
    """Mode and size of an image from its header (PIL decodes no pixels for this)."""
    from PIL import Image

    try:
        with Image.open(path) as img:
            return img.mode, img.size
    except (OSError, ValueError, SyntaxError, EOFError, Image.DecompressionBombError) as exc:
        raise BossNASError(f"cannot read image '{path}': {type(exc).__name__}; remove or replace the file") from None


def folder_shape(files: list[Path], image_size: int | None) -> tuple[int, int, str]:
    """Channels, side and a one-line note for a folder of images of any modes and sizes.

    The data set decides, not the first file: RGB unless every image is grayscale (a grey
    image is read as three equal channels; colour cannot be recovered from one), and the
    side of the most images (ties: the smaller) unless ``image_size`` is given. Up to
    :data:`HEADER_SAMPLE` files spread over the set are read (headers only).
    """
    sample = files[:: max(1, math.ceil(len(files) / HEADER_SAMPLE))]
    headers = [_header(f) for f in sample]
    gray = sum(mode in GRAY_MODES for mode, _ in headers)
    channels = 1 if gray == len(headers) else 3
    sides = Counter(max(wh) for _, wh in headers)
    common, count = min(sides.items(), key=lambda item: (-item[1], item[0]))
    size = image_size or common
    read = f"{len(headers)} of {len(files)}" if len(headers) < len(files) else f"all {len(files)}"
    if channels == 1:
        colour = "1 channel (all grayscale)"
    else:
        colour = f"3 channels ({gray} grayscale read as RGB)" if gray else "3 channels (RGB)"
    if image_size:
        side = f"{size}x{size} (data.image_size)"
    else:
        side = f"{size}x{size} (the longer side of {count}; the rest resized; data.image_size chooses another)"
    return channels, size, f"image folder: headers of {read} files read: {colour}, {side}"


def load_imagefolder(root: str | None, image_size: int | None, workers: int, batch_size: int = 2) -> SplitData:
    """A folder of class sub-folders; ``train/`` + ``test/`` (or ``val/``) splits when present."""
    if root is None:
        raise BossNASError("data.root is not set; point it at a folder of class sub-folders (--data-dir DIR)")
    base = Path(root).expanduser()
    if not base.is_dir():
        raise BossNASError(f"data folder '{base}' does not exist; fix data.root (--data-dir)")
    test_dir = next((base / n for n in ("test", "val") if (base / n).is_dir()), None)
    if (base / "train").is_dir() and test_dir is not None:
        train_files, train_labels, classes = _scan_classes(base / "train")
        test_files, test_labels, test_classes = _scan_classes(test_dir)
        if test_classes != classes:
            raise BossNASError(f"class folders of '{base / 'train'}' and '{test_dir}' differ; give both the same classes")
    else:
        files, labels, classes = _scan_classes(base)
        if not files:
            raise BossNASError(f"no images found in class sub-folders of '{base}'; expected ROOT/<class>/<image>")
        train_idx, test_idx = _split_indices(np.asarray(labels), test_fraction=0.1)
        train_files, train_labels = [files[i] for i in train_idx], [labels[i] for i in train_idx]
        test_files, test_labels = [files[i] for i in test_idx], [labels[i] for i in test_idx]
    if len(classes) < 2 or not train_files or not test_files:
        raise BossNASError(f"'{base}' needs at least two class folders with images in each split")
    channels, size, note = folder_shape(train_files + test_files, image_size)
    check_image_size(size, batch_size)
    train = FolderImageSet(train_files, train_labels, size, channels)
    test = FolderImageSet(test_files, test_labels, size, channels)
    if (len(train) + len(test)) * channels * size * size <= IN_MEMORY_LIMIT_BYTES:
        train, test = _decode_all(train, workers), _decode_all(test, workers)
        mean, std = channel_stats(train.images)
    else:
        sample, _ = train.load(torch.arange(0, len(train), max(1, len(train) // 512)))
        mean, std = channel_stats(sample)
    return SplitData(base.name, train, test, classes, channels, size, mean, std, note)


def _decode_all(images: FolderImageSet, workers: int) -> TensorImageSet:
    chunks = torch.arange(len(images)).split(256)
    if workers > 0:
        from concurrent.futures import ProcessPoolExecutor

        with ProcessPoolExecutor(workers) as pool:
            loaded = list(pool.map(images.load, chunks))
    else:
        loaded = [images.load(c) for c in chunks]
    return TensorImageSet(torch.cat([x for x, _ in loaded]), torch.cat([y for _, y in loaded]))


def load_data(name: str, root: str | None = None, image_size: int | None = None, download: bool = False,
              workers: int = 0, default_size: int = 32, batch_size: int = 2) -> SplitData:
    """Load a data set by name (``digits``, ``cifar10``, ``cifar100``, ``imagefolder``).

    ``batch_size`` bounds the side: one batch of two augmented views must fit in memory.
    """
    if image_size is not None:
        check_image_size(image_size, batch_size)
    if name == "digits":
        return load_digits(image_size or default_size)
    if name in CIFAR:
        return load_cifar(name, root, download, image_size)
    if name == "imagefolder":
        return load_imagefolder(root, image_size, workers, batch_size)
    raise BossNASError(f"unknown data set '{name}'; choose digits, cifar10, cifar100 or imagefolder")


def limit_test(data: SplitData, count: int | None, seed: int = 0) -> SplitData:
    """Keep ``count`` test images of a fixed shuffle (quicker evaluations while retraining)."""
    if count is None or count >= len(data.test):
        return data
    order = torch.randperm(len(data.test), generator=torch.Generator().manual_seed(seed))[:count].sort().values
    test = data.test.subset(order)  # type: ignore[attr-defined]
    return SplitData(data.name, data.train, test, data.classes, data.in_channels, data.image_size, data.mean, data.std,
                     data.note)


def limit_train(data: SplitData, count: int | None, seed: int = 0) -> SplitData:
    """Keep ``count`` training images of a fixed shuffle (quick runs and benchmarks); more
    than there are is a one-line error (silently training on fewer would misreport the run)."""
    if count is None:
        return data
    if count > len(data.train):
        held = (f" left after the {len(data.held_out)} held out for rating (search.rate_split=train)"
                if data.held_out is not None else "")
        available = len(data.train)
        raise BossNASError(f"data.train_images={count} is more than the {available} training images of {data.name}{held}; "
                           f"expected 2..{available}, or leave it unset to train on all")
    if count == len(data.train):
        return data
    order = torch.randperm(len(data.train), generator=torch.Generator().manual_seed(seed))[:count].sort().values
    return dataclasses.replace(data, train=data.train.subset(order))  # type: ignore[attr-defined]


#: generator key of the draw of held-out rating images (apart from every other draw of a run)
HOLD_OUT_KEY = 505


def hold_out_for_rating(data: SplitData, count: int, seed: int = 0) -> SplitData:
    """Set ``count`` training images of a fixed, seeded draw aside for rating; the training
    split shrinks by them, so no path is rated on an image the supernet was trained on."""
    from bossnas.data.batches import seeded_generator

    total = len(data.train)
    if count > total - 2:
        raise BossNASError(f"search.rate_images={count} leaves {max(total - count, 0)} of the {total} training images of "
                           f"{data.name} to train on (search.rate_split=train holds them out); lower it or rate on the "
                           "test split with search.rate_split=test")
    order = torch.randperm(total, generator=seeded_generator(seed, HOLD_OUT_KEY))
    held, kept = order[:count].sort().values, order[count:].sort().values
    return dataclasses.replace(data, train=data.train.subset(kept), held_out=data.train.subset(held))  # type: ignore[attr-defined]
