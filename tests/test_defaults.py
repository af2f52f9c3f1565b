"""Issue 20's defaults that gave the wrong thing without a word: a preset's data-bound keys
on other data (default 1), and rating paths on the test split (default 2)."""

import json
from pathlib import Path

import pytest
import torch
import yaml
from conftest import TINY, run_cli

from bossnas.commands.train import _resolve_config
from bossnas.config import DATA_BOUND_KEYS, RunConfig, load_config, read_preset
from bossnas.data.datasets import SplitData, TensorImageSet, hold_out_for_rating
from bossnas.errors import BossNASError
from bossnas.train.runner import BlockwiseSearch, load_run, prepare_data
from bossnas.utils.io import load_checkpoint, save_checkpoint

QUICK = TINY + ["train.paths_per_step=2", "search.bn_recalibration=false"]


def _resolve(preset=None, overrides=(), data=None, out=None, resume=False):
    return _resolve_config(preset, list(overrides), None, data, None, None, out, resume)


# ------------------------------------------------------------------ default 1: a preset sizes its own data only
@pytest.mark.parametrize("data, overrides", [("cifar10", []), (None, ["data.name=imagefolder"])])
def test_default_1_other_data_without_a_preset_runs_with_the_key_tables_defaults(data, overrides):
    config, run_dir, how = _resolve(data=data, overrides=overrides)
    name = data or "imagefolder"
    defaults = RunConfig()
    assert config.data.name == name and run_dir == Path("runs") / name
    # the data's own size and all its images, the documented head widths: nothing of the quickstart's toy settings
    for key in ("data.image_size", "data.train_images", "model.hidden_dim", "model.proj_dim", "train.batch_size",
                "search.rate_images", "train.epochs"):
        section, field = key.split(".")
        assert getattr(getattr(config, section), field) == getattr(getattr(defaults, section), field), key
    assert how == (f"config: no preset; {name} with the defaults of the key table (the default preset quickstart is "
                   "sized for digits; --preset NAME applies one anyway)")


def test_default_1_the_quickstart_applies_to_its_own_data():
    for data in (None, "digits"):
        config, run_dir, how = _resolve(data=data)
        assert (config.data.image_size, config.data.train_images, config.model.hidden_dim) == (16, 768, 256)
        assert run_dir == Path("runs/quickstart")
        assert how.startswith("config: preset quickstart (space=nats-sss, data.name=digits, data.image_size=16, ")


def test_default_1_a_preset_on_other_data_leaves_out_its_data_bound_keys():
    config, run_dir, how = _resolve("hytra-cifar10", data="imagefolder")
    assert run_dir == Path("runs/hytra-cifar10-imagefolder")
    # the recipe is kept, the data sizing is the data's own
    assert (config.space, config.train.epochs, config.model.space_options) == ("hytra", 6, {"width_mult": 0.25})
    assert config.search.rate_images == RunConfig().search.rate_images != 1024
    assert how.endswith("left out, as sized for cifar10, not imagefolder: search.rate_images=1024")
    official, _, how = _resolve("nats-cifar10-official", data="imagefolder")
    assert (official.data.augment, official.search.rate_split) == (None, "train")  # no CIFAR test split to rate on
    assert "data.augment=small, search.rate_images=10000, search.rate_split=test" in how
    assert set(DATA_BOUND_KEYS) >= {"data.image_size", "data.train_images", "search.rate_images", "search.rate_split"}


def test_default_1_a_resume_names_the_runs_own_config(tmp_path):
    search = BlockwiseSearch.open(load_config("quickstart", QUICK), tmp_path / "r", show_progress=False)
    search.folder.unlock()
    config, _, how = _resolve(out=str(tmp_path / "r"), resume=True)
    assert how == f"config: the run's own ({tmp_path / 'r' / 'config.yaml'})"
    assert config.to_dict() == load_checkpoint(tmp_path / "r" / "checkpoint.pt")["config"]


# ------------------------------------------------------------------ default 2: rating on held-out training images
def _numbered(n: int) -> SplitData:
    """A data set whose every image carries its index as its label."""
    images = torch.zeros(n, 1, 4, 4, dtype=torch.uint8)
    labels = torch.arange(n)
    return SplitData("numbered", TensorImageSet(images, labels), TensorImageSet(images[:10], labels[:10]), ["x"], 1, 4,
                     (0.5,), (0.25,))


def test_default_2_held_out_images_are_a_seeded_draw_of_training_images_never_trained_on():
    data = hold_out_for_rating(_numbered(100), 20, seed=3)
    trained, held = set(data.train.labels.tolist()), set(data.held_out.labels.tolist())
    assert len(held) == 20 and len(trained) == 80 and not trained & held and trained | held == set(range(100))
    assert data.rating_images is data.held_out
    assert held == set(hold_out_for_rating(_numbered(100), 20, seed=3).held_out.labels.tolist())  # fixed by the seed
    assert held != set(hold_out_for_rating(_numbered(100), 20, seed=4).held_out.labels.tolist())
    assert _numbered(100).rating_images.labels.tolist() == list(range(10))  # no hold-out: the test split
    with pytest.raises(BossNASError, match=r"search.rate_images=99 leaves 1 of the 100 training images of numbered to "
                                           r"train on .* search.rate_split=test"):
        hold_out_for_rating(_numbered(100), 99)


def test_default_2_a_run_rates_on_held_out_training_images_and_says_so(tmp_path, monkeypatch, capsys):
    assert RunConfig().search.rate_split == "train"
    data = prepare_data(load_config("quickstart", QUICK))
    assert (len(data.train), len(data.held_out)) == (96, 24)  # data.train_images counts the images trained on
    test_split = prepare_data(load_config("quickstart", QUICK + ["search.rate_split=test"]))
    assert test_split.held_out is None and test_split.rating_images is test_split.test
    out = tmp_path / "r"
    # what the command prints before the loop starts; the loop itself is not what is tested here
    monkeypatch.setattr(BlockwiseSearch, "run", lambda self, **kwargs: self.state)
    code, _, err = run_cli(monkeypatch, capsys, "train", *QUICK, "--out", str(out), "--quiet")
    assert code == 0, err
    lines = err.splitlines()
    assert lines[0].startswith("config: preset quickstart (space=nats-sss, data.name=digits, ")
    assert lines[1].startswith("bossnas: space nats-sss (32,768 architectures), data digits (96 train, 1x8x8)")
    assert lines[2] == "rating: 24 training images held out of training, a fixed draw of seed 0 (search.rate_split=train)"
    assert yaml.safe_load((out / "config.yaml").read_text())["search"]["rate_split"] == "train"
    # with the held-out images, their number decides the training images: a resume must keep it
    monkeypatch.undo()
    with pytest.raises(BossNASError, match=r"different config \(search.rate_images \(24 -> 32\)\)"):
        BlockwiseSearch.open(load_config("quickstart", QUICK + ["search.rate_images=32"]), out, resume=True)


def _strip_rate_split(run_dir: Path) -> None:
    """Make a test-split run look as a run written before search.rate_split existed."""
    tree = yaml.safe_load((run_dir / "config.yaml").read_text())
    del tree["search"]["rate_split"]
    (run_dir / "config.yaml").write_text(yaml.safe_dump(tree, sort_keys=False))
    ckpt = load_checkpoint(run_dir / "checkpoint.pt")
    del ckpt["config"]["search"]["rate_split"]
    save_checkpoint(run_dir / "checkpoint.pt", {k: v for k, v in ckpt.items() if k != "format"})


def test_default_2_runs_written_before_the_key_resume_and_rate_as_before(tmp_path):
    old = tmp_path / "old"
    reference = BlockwiseSearch.open(load_config("quickstart", QUICK + ["search.rate_split=test"]), old, show_progress=False)
    reference.folder.unlock()
    expected = reference.rating_inputs(0)
    _strip_rate_split(old)
    config, _, _ = _resolve(out=str(old), resume=True)
    assert config.search.rate_split == "test"  # the saved config's missing key is the old behaviour, not the new default
    assert load_run(old)[0].search.rate_split == "test"  # search / rate / re-rating read it the same way
    resumed = BlockwiseSearch.open(config, old, resume=True, show_progress=False)  # the same fingerprint: accepted
    resumed.folder.unlock()
    assert resumed.data.held_out is None and len(resumed.data.train) == 96
    recal, rate = resumed.rating_inputs(0)
    assert all(torch.equal(a, b) for a, b in zip(recal, expected[0])) and all(torch.equal(a, b) for a, b in zip(rate, expected[1]))


def test_default_2_benchmark_presets_keep_rating_on_the_test_split():
    import importlib.util
    import sys

    for name in ("nats-cifar10-official", "hytra-imagenet-official", "mbconv-imagenet-official"):
        assert read_preset(name)["search"]["rate_split"] == "test", name
    root = Path(__file__).resolve().parents[1]
    spec = importlib.util.spec_from_file_location("rating_bench_presets", root / "benchmarks" / "rating.py")
    bench = importlib.util.module_from_spec(spec)
    sys.path.insert(0, str(root / "benchmarks"))
    spec.loader.exec_module(bench)
    assert {p["search.rate_split"] for p in bench.PRESETS.values()} == {"test"}
    assert json.dumps(sorted(bench.PRESETS)) == json.dumps(["cpu", "gpu", "smoke"])
