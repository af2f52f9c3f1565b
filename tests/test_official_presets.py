"""The official recipes as presets (issue 13 item 6): they resolve without data, say what
they cost, fail in one line without their data, and run a tiny step with overrides."""

import math

import numpy as np
import pytest
from conftest import run_cli

from bossnas.config import list_presets, load_config, resolve_run_config
from bossnas.train.budget import search_cost
from bossnas.train.runner import BlockwiseSearch

OFFICIAL = ("hytra-imagenet-official", "mbconv-imagenet-official", "nats-cifar10-official")


def test_every_preset_resolves_without_data():
    assert set(OFFICIAL) <= set(list_presets())
    for name in list_presets():
        config = resolve_run_config(load_config(name))
        assert config.train.augment_pairs >= 1
        search_cost(config)


def test_official_recipes_hold_the_official_numbers():
    hytra, mbconv, nats = (resolve_run_config(load_config(n)) for n in OFFICIAL)
    for c in (hytra, mbconv):
        assert (c.data.image_size, c.data.augment, c.train.epochs) == (224, "byol-bossnas", 6)
        assert (c.train.optimizer, c.train.lr, c.train.weight_decay, c.train.warmup_epochs) == ("lars", 4.8, 1e-6, 1.0)
        assert c.train.batch_size * c.train.accumulate == 4096 and c.train.augment_pairs == 4
        assert (c.model.hidden_dim, c.model.proj_dim) == (4096, 256)
    assert mbconv.model.space_options == {"shortcut": "official"}
    assert (nats.train.optimizer, nats.train.lr, nats.train.weight_decay, nats.train.warmup_epochs) == ("lars", 0.48, 1e-6, 2.0)
    assert nats.train.batch_size * nats.train.accumulate == 4096 and nats.train.augment_pairs == 1
    assert (nats.train.epochs, nats.model.adapter_width, nats.model.hidden_dim) == (50, 2048, 4096)


def test_costs_are_counted_from_the_recipe():
    nats = search_cost(load_config("nats-cifar10-official"))
    # 50,000 // 1024 = 48 micro-batches = 12 optimizer steps an epoch; 50 epochs; 3 blocks
    assert (nats.blocks, nats.images, nats.steps) == (3, 50_000, 12 * 50 * 3)
    # 8 fair paths (one per width) on the 12 * 4 * 1024 images of an epoch that reach a step
    assert nats.path_passes == 8 * 12 * 4 * 1024 * 50 * 3 == 58_982_400
    assert nats.rating_passes == (64 + 64 + 8) * 10_000
    mbconv = search_cost(load_config("mbconv-imagenet-official"))
    assert mbconv.steps == 1_281_167 // 512 // 8 * 6 * 5 == 9360
    assert mbconv.rating_passes == (16 + 4 * 256) * 5000


def test_presets_command_lists_recipes_and_costs(monkeypatch, capsys):
    code, out, _ = run_cli(monkeypatch, capsys, "presets")
    assert code == 0
    lines = out.splitlines()
    row = lines.index(next(line for line in lines if line.startswith("nats-cifar10-official:")))
    assert "batch 1024 x 4 = 4096, lars lr 0.48, small augmentation x 1 pair(s)" in lines[row]
    assert lines[row + 1].strip().startswith("3 blocks x 50 epochs x 50k images: 1.8k optimizer steps, 59M path passes")
    assert "published: 3 h on 4 GPUs" in lines[row + 1]


@pytest.mark.parametrize("name", OFFICIAL[:2])
def test_imagenet_presets_fail_in_one_line_without_their_data(monkeypatch, capsys, tmp_path, name):
    code, out, err = run_cli(monkeypatch, capsys, "run", "--preset", name, "--out", str(tmp_path / "r"))
    assert code == 2 and "data.root is not set" in err and len(err.strip().splitlines()) == 1
    code, _, err = run_cli(monkeypatch, capsys, "run", "--preset", name, "--out", str(tmp_path / "r"),
                           "--data-dir", str(tmp_path / "imagenet"))
    assert code == 2 and "does not exist" in err and len(err.strip().splitlines()) == 1


def _fake_imagenet(root):
    from PIL import Image

    rng = np.random.default_rng(0)
    for split, n in (("train", 5), ("val", 3)):
        for cls in ("n01", "n02"):
            d = root / split / cls
            d.mkdir(parents=True)
            for i in range(n):
                Image.fromarray(rng.integers(0, 256, (20, 20, 3), dtype=np.uint8)).save(d / f"{i}.png")
    return root


#: one optimizer step of two accumulated micro-batches of 4 images, tiny heads and rating
TINY_STEP = ["data.train_images=8", "train.batch_size=4", "train.accumulate=2", "train.epochs=1",
             "model.hidden_dim=16", "model.proj_dim=8", "search.rate_images=4", "search.batch_size=4"]


@pytest.mark.parametrize("name, overrides", [
    ("hytra-imagenet-official", ["data.image_size=16", "model.space_options.width_mult=0.0625"]),
    ("mbconv-imagenet-official", ["data.image_size=16", "model.space_options.width_mult=0.125"]),
    ("nats-cifar10-official", ["data.name=digits", "data.image_size=8", "model.adapter_width=32"]),
])
def test_official_preset_trains_one_tiny_step(tmp_path, name, overrides):
    root = _fake_imagenet(tmp_path / "imagenet")
    config = load_config(name, TINY_STEP + [f"data.root={root}"] + overrides)
    search = BlockwiseSearch.open(config, tmp_path / "run", show_progress=False)
    before = [p.detach().clone() for p in search.model.trainable_parameters(0)]
    search.train_block(0)
    [entry] = search.state.history
    assert entry["block"] == 0 and math.isfinite(entry["loss"])
    assert search.state.epoch == 1 and search.state.phase == "rate"  # one epoch of one optimizer step
    after = list(search.model.trainable_parameters(0))
    assert any(not a.equal(b) for a, b in zip(after, before))  # the LARS step moved the weights
    saved = (tmp_path / "run" / "config.yaml").read_text()
    assert f"augment_pairs: {search.config.train.augment_pairs}" in saved and "optimizer: lars" in saved
