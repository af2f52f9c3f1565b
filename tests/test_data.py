import pickle

import numpy as np
import pytest
import torch

from bossnas.data.augment import TwoViewAugment, pad_crop
from bossnas.data.batches import epoch_batches, seeded_generator
from bossnas.data.datasets import download_cifar, load_data, md5_of
from bossnas.errors import BossNASError


def test_digits_is_embedded_and_resized():
    data = load_data("digits", image_size=12)
    assert data.in_channels == 1 and data.image_size == 12 and data.num_classes == 10
    assert data.train.images.shape[1:] == (1, 12, 12) and data.train.images.dtype == torch.uint8
    assert len(data.train) + len(data.test) == 1797
    assert set(data.test.labels.tolist()) == set(range(10))


def _fake_cifar(root, n_train=20, n_test=10):
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for i in range(1, 6):
        entry = {"data": rng.integers(0, 255, (n_train, 3072), dtype=np.uint8), "labels": list(rng.integers(0, 10, n_train))}
        (folder / f"data_batch_{i}").write_bytes(pickle.dumps(entry))
    (folder / "test_batch").write_bytes(pickle.dumps({"data": rng.integers(0, 255, (n_test, 3072), dtype=np.uint8), "labels": list(range(n_test))}))
    (folder / "batches.meta").write_bytes(pickle.dumps({"label_names": [f"c{i}" for i in range(10)]}))
    return folder


def test_cifar_pickle_layout(tmp_path):
    _fake_cifar(tmp_path)
    data = load_data("cifar10", root=str(tmp_path))
    assert len(data.train) == 100 and len(data.test) == 10
    assert data.in_channels == 3 and data.image_size == 32 and data.classes[3] == "c3"
    resized = load_data("cifar10", root=str(tmp_path / "cifar-10-batches-py"), image_size=16)
    assert resized.train.images.shape[1:] == (3, 16, 16)


def test_missing_data_folder_is_a_clear_error(tmp_path):
    with pytest.raises(BossNASError, match="cifar10 not found under .*data.download=true"):
        load_data("cifar10", root=str(tmp_path / "nowhere"))
    with pytest.raises(BossNASError, match="data folder .* does not exist"):
        load_data("imagefolder", root=str(tmp_path / "nowhere"))
    with pytest.raises(BossNASError, match="data.root is not set"):
        load_data("cifar10")


def test_download_checks_md5_and_keeps_nothing_on_mismatch(tmp_path):
    import tarfile

    src = tmp_path / "src"
    folder = _fake_cifar(src)
    archive = tmp_path / "cifar.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        tar.add(folder, arcname="cifar-10-batches-py")
    dest = tmp_path / "dest"
    with pytest.raises(BossNASError, match="MD5"):
        download_cifar("cifar10", dest, url=archive.as_uri(), md5="0" * 32)
    assert list(dest.iterdir()) == []
    download_cifar("cifar10", dest, url=archive.as_uri(), md5=md5_of(archive))
    assert len(load_data("cifar10", root=str(dest)).train) == 100


def test_imagefolder_with_split_and_corrupt_file(tmp_path):
    from PIL import Image

    for split, n in (("train", 6), ("test", 2)):
        for cls in ("cat", "dog"):
            d = tmp_path / split / cls
            d.mkdir(parents=True)
            for i in range(n):
                Image.fromarray(np.full((10, 10, 3), i * 20, dtype=np.uint8)).save(d / f"{i}.png")
    data = load_data("imagefolder", root=str(tmp_path))
    assert data.classes == ["cat", "dog"] and len(data.train) == 12 and len(data.test) == 4
    assert data.in_channels == 3 and data.image_size == 10
    (tmp_path / "train" / "cat" / "broken.png").write_bytes(b"not an image")
    with pytest.raises(BossNASError, match="cannot read image '.*broken.png'"):
        load_data("imagefolder", root=str(tmp_path))


def test_epoch_batches_are_seeded_and_full():
    a = epoch_batches(100, 32, 0, 1, 2)
    b = epoch_batches(100, 32, 0, 1, 2)
    assert len(a) == 3 and all(len(x) == 32 for x in a)
    assert all(torch.equal(x, y) for x, y in zip(a, b))
    assert not torch.equal(a[0], epoch_batches(100, 32, 0, 1, 3)[0])
    shards = [epoch_batches(100, 32, 0, 1, 2, rank=r, world=2) for r in range(2)]
    assert torch.equal(torch.cat([shards[0][0], shards[1][0]]), a[0])


def test_pad_crop_is_a_shifted_window():
    x = torch.arange(2 * 1 * 6 * 6, dtype=torch.float32).view(2, 1, 6, 6)
    y = pad_crop(x, 2, seeded_generator(3))
    padded = torch.nn.functional.pad(x, (2, 2, 2, 2))
    for i in range(2):
        found = any(torch.equal(y[i], padded[i, :, oy:oy + 6, ox:ox + 6]) for oy in range(5) for ox in range(5))
        assert found


def test_two_views_are_reproducible_and_differ():
    aug = TwoViewAugment(mean=(0.5, 0.5, 0.5), std=(0.25, 0.25, 0.25))
    images = torch.randint(0, 255, (8, 3, 16, 16), dtype=torch.uint8)
    a1, a2 = aug(images, seeded_generator(5))
    b1, b2 = aug(images, seeded_generator(5))
    assert torch.equal(a1, b1) and torch.equal(a2, b2)
    assert not torch.equal(a1, a2)
    assert a1.shape == (8, 3, 16, 16) and a1.dtype == torch.float32
