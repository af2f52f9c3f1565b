"""Reliability: kill -9 and --resume, SIGTERM in training and rating, damaged checkpoints,
refused resumes, guards against bad input, unreadable images. Runs use one torch thread."""

import json
import os
import random
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import torch
from conftest import (
    HANG_S,
    TINY,
    assert_steps_once_in_order,
    logged_steps,
    search_checkpoint_state,
    start_bossnas,
    stop_at_augment_call,
    wait_until_paused,
)

from bossnas.config import load_config
from bossnas.data.batches import iterate
from bossnas.data.datasets import FolderImageSet, _decode_all, load_data
from bossnas.errors import BossNASError
from bossnas.train import runner
from bossnas.train.runner import BlockwiseSearch, read_table
from bossnas.utils.io import CHECKSUM_MARKER, load_checkpoint, save_checkpoint

#: TINY with K=2 paths per step and a checkpoint after every step; rating without BN
#: recalibration reads the BatchNorm statistics left by training, so a resume that lost any
#: of them would show in the ratings
QUICK = TINY + ["train.paths_per_step=2", "train.checkpoint_every=1", "search.bn_recalibration=false"]



def _pause_at(state):
    """The ``pause_at`` fields of a search checkpoint state (block, phase, epoch, step)."""
    return dict(zip(("block", "phase", "epoch", "step"), state))


def _results(run_dir):
    """The ratings, the chosen architecture and the training curve (every step once, in order)."""
    tables = [read_table(run_dir / f"block_{b}_ratings.csv") for b in range(3)]
    best = json.loads((run_dir / "best_arch.json").read_text())
    steps = logged_steps(run_dir)
    assert_steps_once_in_order(steps, blocks=3, per_block=3)
    return tables, (best["arch"], best["rating"]), steps


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """An uninterrupted run, started in the background; call it for its (tables, best)."""
    out = tmp_path_factory.mktemp("reference") / "run"
    proc = start_bossnas("run", *QUICK, "--out", str(out), "--quiet")

    def result():
        _, err = proc.communicate(timeout=HANG_S)
        assert proc.returncode == 0, err
        return _results(out)

    yield result
    if proc.poll() is None:
        proc.kill()
        proc.wait()


#: every checkpoint of a QUICK run, in order (3 steps per epoch, 1 epoch per block), but the last
STATES = [(b, "train", 0, s) for b in range(3) for s in range(3)] + [(b, p, 1, 0) for b in range(3) for p in ("train", "rate")]
STATES.sort(key=lambda s: (s[0], s[2], s[1] == "rate", s[3]))


@pytest.mark.slow
def test_kill_9_at_a_random_step_then_resume_matches_uninterrupted_run(reference, tmp_path, launched):
    seed = int(os.environ.get("BOSSNAS_KILL_SEED", time.time_ns() % 10_000))
    rng = random.Random(seed)
    target = rng.choice(STATES)
    # after that checkpoint: at once, mid-step or mid-save, or well into the next step or the rating
    delay = rng.choice([0.0, rng.uniform(0.0, 0.1), rng.uniform(0.0, 0.6)])
    out = tmp_path / "run"
    proc = launched("run", *QUICK, "--out", str(out), "--quiet", pause_at=_pause_at(target))
    paused = wait_until_paused(proc)
    if delay:
        os.kill(paused, signal.SIGCONT)
        time.sleep(delay)
    os.kill(proc.pid, signal.SIGKILL)
    proc.communicate()
    where = f"killed after checkpoint {target} + {delay:.2f}s (BOSSNAS_KILL_SEED={seed}), resumed from {search_checkpoint_state(out / 'checkpoint.pt')}"
    print(where)  # shown with -s / -rP
    resumed = launched("run", "--resume", "--out", str(out), "--quiet")
    _, err = resumed.communicate(timeout=HANG_S)
    assert resumed.returncode == 0, f"{where}: {err}"
    assert _results(out) == reference(), where


@pytest.mark.slow
def test_sigterm_in_training_and_in_rating_saves_and_resumes(reference, tmp_path, launched):
    out = tmp_path / "run"
    ckpt = out / "checkpoint.pt"
    proc = launched("run", *QUICK, "--out", str(out), "--quiet", pause_at=_pause_at((0, "train", 0, 0)))
    # the CLI handles signals from before the first checkpoint on: this one stops block 0's training
    paused = wait_until_paused(proc)
    proc.send_signal(signal.SIGTERM)
    os.kill(paused, signal.SIGCONT)
    _, err = proc.communicate(timeout=HANG_S)
    assert proc.returncode == 128 + signal.SIGTERM, err
    assert "Traceback" not in err
    last = err.strip().splitlines()[-1]
    assert last.startswith("error: interrupted by SIGTERM at block 0, epoch 1, step ") and last.endswith("continue with --resume")
    step = int(last.split("step ")[1].split(";")[0])
    assert load_checkpoint(ckpt)["state"]["step"] == step >= 1  # loadable, at the step the message names

    proc = launched("run", "--resume", "--out", str(out), "--quiet", pause_at=_pause_at((0, "rate", 1, 0)))
    paused = wait_until_paused(proc)
    proc.send_signal(signal.SIGTERM)
    os.kill(paused, signal.SIGCONT)
    _, err = proc.communicate(timeout=HANG_S)
    assert proc.returncode == 128 + signal.SIGTERM, err
    assert err.strip().splitlines()[-1].startswith("error: interrupted by SIGTERM while rating block 0 (")
    assert search_checkpoint_state(ckpt) == (0, "rate", 1, 0)

    proc = launched("run", "--resume", "--out", str(out), "--quiet")
    _, err = proc.communicate(timeout=HANG_S)
    assert proc.returncode == 0, err
    assert _results(out) == reference()


@pytest.fixture
def started(tmp_path):
    """A run folder holding a fresh run's first checkpoint (nothing trained)."""
    config = load_config("quickstart", QUICK)
    BlockwiseSearch.open(config, tmp_path / "r", show_progress=False)
    return config, tmp_path / "r"


def test_damaged_checkpoints_are_one_line_errors_naming_the_file(started):
    _, run_dir = started
    path = run_dir / "checkpoint.pt"
    good = path.read_bytes()
    rng = random.Random(0)
    cuts = sorted({0, 1, 2, 10, 100, len(good) // 2, len(good) - 100, len(good) - 1} | {rng.randrange(len(good)) for _ in range(40)})
    for cut in cuts:
        path.write_bytes(good[:cut])
        with pytest.raises(BossNASError, match="corrupt or truncated|not a bossnas checkpoint") as info:
            load_checkpoint(path)
        assert str(path) in str(info.value) and "\n" not in str(info.value), cut
    for _ in range(12):  # flipped bits anywhere, tensor data included: the checksum catches every one
        data = bytearray(good)
        for _ in range(rng.randint(1, 8)):
            data[rng.randrange(len(data))] ^= 1 << rng.randrange(8)
        path.write_bytes(bytes(data))
        with pytest.raises(BossNASError, match="corrupt or truncated") as info:
            load_checkpoint(path)
        assert str(path) in str(info.value) and "\n" not in str(info.value)
    path.write_bytes(good)
    assert load_checkpoint(path)["format"] == "bossnas-checkpoint-v1"
    path.write_bytes(good[len(CHECKSUM_MARKER) + 32:])  # written before checksums: still loads
    assert load_checkpoint(path)["format"] == "bossnas-checkpoint-v1"
    path.write_bytes(good[: len(good) // 3])
    res = subprocess.run([sys.executable, "-m", "bossnas", "run", "--resume", "--out", str(run_dir)],
                         capture_output=True, text=True)
    assert res.returncode == 2 and res.stderr.strip().splitlines() == [
        f"error: checkpoint '{path}' is corrupt or truncated (checksum mismatch); delete it or restore a copy"]


def test_resume_refuses_another_space_config_or_data(started):
    config, run_dir = started
    path = run_dir / "checkpoint.pt"
    with pytest.raises(BossNASError, match=r"different config \(train.lr \(0.05 -> 0.2\)\)"):
        BlockwiseSearch.open(load_config("quickstart", QUICK + ["train.lr=0.2"]), run_dir, resume=True)
    with pytest.raises(BossNASError, match=r"model.hidden_dim \(32 -> 64\)"):
        BlockwiseSearch.open(load_config("quickstart", QUICK + ["model.hidden_dim=64"]), run_dir, resume=True)
    ckpt = load_checkpoint(path)
    save_checkpoint(path, {**{k: v for k, v in ckpt.items() if k != "format"}, "data": {**ckpt["data"], "train_images": 95}})
    with pytest.raises(BossNASError, match=r"trained on other data \(train_images \(95 -> 96\)\)"):
        BlockwiseSearch.open(config, run_dir, resume=True)
    save_checkpoint(path, {**{k: v for k, v in ckpt.items() if k != "format"}, "space": "hytra"})
    with pytest.raises(BossNASError, match="is for space 'hytra', not 'nats-sss'"):
        BlockwiseSearch.open(config, run_dir, resume=True)
    # settings that do not change the weights may differ (search.rate_images does, when the
    # rating images are held out of the training images: tests/test_defaults.py)
    save_checkpoint(path, {k: v for k, v in ckpt.items() if k != "format"})
    BlockwiseSearch.open(load_config("quickstart", QUICK + ["train.checkpoint_every=5", "search.recal_batches=2"]),
                         run_dir, resume=True, show_progress=False)


def test_checkpoint_holds_everything_a_resume_needs(started):
    config, run_dir = started
    search = BlockwiseSearch.open(config, run_dir, resume=True, show_progress=False)
    with stop_at_augment_call(search), pytest.raises(runner.Interrupted) as info:
        search.run()
    assert info.value.exit_code == 130
    ckpt = load_checkpoint(run_dir / "checkpoint.pt")
    assert ckpt["state"]["step"] == 1 and ckpt["state"]["epoch_loss_count"] == 1
    assert ckpt["optimizer"]["state"], "momentum buffers"
    assert ckpt["schedule"] == {"opt_step": 1, "total_steps": 3, "warmup_steps": 0, "lr": 0.05,
                                "ema_momentum": pytest.approx(0.99 + 0.01 * 0.25)}
    assert ckpt["sampler"] == {"block": 0, "epoch": 0, "next_step": 1, "batch_size": 32, "per_process": 32, "seed": 0}
    assert set(ckpt["rng"]) >= {"torch", "python", "numpy"} and ckpt["world_size"] == 1
    assert ckpt["data"] == {"name": "digits", "train_images": 96, "test_images": 359, "in_channels": 1, "image_size": 8}


def test_non_finite_loss_names_step_block_and_paths_after_a_good_checkpoint(tmp_path, monkeypatch):
    real_step = runner.bossnas_step

    def nan_at_step_2(model, block, paths, *args, **kwargs):
        loss = real_step(model, block, paths, *args, **kwargs)
        nan_at_step_2.calls += 1
        return loss * float("nan") if nan_at_step_2.calls == 3 else loss

    for every, good_step in ((1, 2), (0, 0)):
        nan_at_step_2.calls = 0
        monkeypatch.setattr(runner, "bossnas_step", nan_at_step_2)
        config = load_config("quickstart", TINY + ["train.paths_per_step=2", f"train.checkpoint_every={every}"])
        run_dir = tmp_path / f"every{every}"
        search = BlockwiseSearch.open(config, run_dir, show_progress=False)
        with pytest.raises(BossNASError) as info:
            search.run()
        message = str(info.value)
        assert message.startswith("non-finite loss (nan) at block 0, epoch 1, step 2 (paths ")
        assert f"the last good checkpoint '{run_dir / 'checkpoint.pt'}' is at block 0, epoch 1, step {good_step}" in message
        assert "\n" not in message
        ckpt = load_checkpoint(run_dir / "checkpoint.pt")
        assert ckpt["state"]["step"] == good_step
        assert all(torch.isfinite(t).all() for t in ckpt["model"].values() if t.is_floating_point())


def test_force_with_bad_input_keeps_the_run(started):
    _, run_dir = started
    before = sorted(p.name for p in run_dir.iterdir())
    with pytest.raises(BossNASError, match="already holds a run; add --resume to continue it or --force"):
        BlockwiseSearch.open(load_config("quickstart", QUICK), run_dir)
    with pytest.raises(BossNASError, match="train.paths_per_step=9 is out of range .* expected 1..8"):
        BlockwiseSearch.open(load_config("quickstart", QUICK + ["train.paths_per_step=9"]), run_dir, force=True)
    assert sorted(p.name for p in run_dir.iterdir()) == before
    assert search_checkpoint_state(run_dir / "checkpoint.pt") == (0, "train", 0, 0)


@pytest.mark.parametrize("override, message", [
    ("train.epochs=-1", "config key 'train.epochs': -1 is out of range; expected an integer >= 1"),
    ("train.paths_per_step=9", "train.paths_per_step=9 is out of range for block 0 of 'nats-sss' with fair sampling; expected 1..8"),
    ("data.train_images=20", "train.batch_size=32 is larger than the 20 training images; expected 2..20"),
    ("seed=1e20", "config key 'seed': 100000000000000000000 is out of range; expected an integer in 0..2**63-1"),
    ("device=cuda:x", "config key 'device': 'cuda:x' is out of range; expected auto, cpu, cuda or cuda:N"),
])
def test_invalid_values_stop_before_any_work(tmp_path, override, message):
    with pytest.raises(BossNASError) as info:
        BlockwiseSearch.open(load_config("quickstart", TINY + [override]), tmp_path / "r")
    assert str(info.value) == message
    assert not (tmp_path / "r").exists()


def test_invalid_value_stops_the_cli_with_one_line(tmp_path):
    res = subprocess.run([sys.executable, "-m", "bossnas", "run", *TINY, "train.epochs=-1", "--out", str(tmp_path / "r")],
                         capture_output=True, text=True)
    assert res.returncode == 2 and res.stderr.strip().splitlines() == [
        "error: config key 'train.epochs': -1 is out of range; expected an integer >= 1"], res.stderr
    assert not (tmp_path / "r").exists()


@pytest.mark.slow
def test_budget_below_the_smallest_architecture_is_refused_before_training(tmp_path):
    config = load_config("quickstart", TINY + ["search.max_flops=100k"])
    with pytest.raises(BossNASError) as info:
        BlockwiseSearch.open(config, tmp_path / "r")
    assert str(info.value).startswith(
        "search.max_flops=100k is below the 541.856k FLOPs of the smallest architecture of 'nats-sss' (8:8:8:8:8 at 1x8x8 input); "
        "expected >= 541.856k")
    assert not (tmp_path / "r").exists()


# ------------------------------------------------------------------ images
def _image_folder(root, broken: dict[str, bytes]):
    from PIL import Image

    for split, n in (("train", 6), ("test", 2)):
        for cls in ("cat", "dog"):
            d = root / split / cls
            d.mkdir(parents=True)
            for i in range(n):
                Image.fromarray(np.full((8, 8, 3), i * 20, dtype=np.uint8)).save(d / f"{i}.png")
    for name, data in broken.items():
        (root / "train" / "cat" / name).write_bytes(data)


def _png_bytes() -> bytes:
    import io

    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (16, 16, 3), dtype=np.uint8)).save(buffer, format="PNG")
    return buffer.getvalue()


BROKEN = {"text.png": b"not an image", "empty.jpg": b"", "truncated.png": _png_bytes()[:60]}


@pytest.mark.parametrize("name", sorted(BROKEN))
def test_unreadable_images_are_reported_by_path(tmp_path, name):
    _image_folder(tmp_path, {name: BROKEN[name]})
    bad = tmp_path / "train" / "cat" / name
    pattern = f"cannot read image '{bad}'"
    with pytest.raises(BossNASError, match=pattern):  # decoded up front, in this process
        load_data("imagefolder", root=str(tmp_path))
    with pytest.raises(BossNASError, match=pattern):  # ... and in worker processes
        load_data("imagefolder", root=str(tmp_path), workers=1)
    files = sorted((tmp_path / "train").rglob("*.*"))
    lazy = FolderImageSet(files, [0] * len(files), 8, 3)
    with pytest.raises(BossNASError, match=pattern):
        _decode_all(lazy, workers=1)
    # decoded lazily batch by batch in a DataLoader worker (folders too large for memory)
    with pytest.raises(BossNASError) as info:
        list(iterate(lazy, list(torch.arange(len(files)).split(4)), workers=1))
    assert str(info.value).startswith(pattern) and "\n" not in str(info.value)


def test_unreadable_image_stops_the_cli_with_one_line(tmp_path):
    _image_folder(tmp_path / "data", {"zz.png": b"garbage"})
    res = subprocess.run([sys.executable, "-m", "bossnas", "run", "--data", "imagefolder", "--data-dir", str(tmp_path / "data"),
                          "--out", str(tmp_path / "r")], capture_output=True, text=True)
    bad = tmp_path / "data" / "train" / "cat" / "zz.png"
    assert res.returncode == 2 and res.stderr.strip().splitlines() == [
        f"error: cannot read image '{bad}': UnidentifiedImageError; remove or replace the file"]


# ------------------------------------------------------------------ retraining: the same guarantees
#: a digits retraining of 3 epochs x 4 steps; a checkpoint at every epoch end
RETRAIN = ["16:16:16:16:16", "data.image_size=16", "data.train_images=256", "train.epochs=3", "train.batch_size=64",
           "train.eval_every=0"]


def _retrain_state(path):
    try:
        s = load_checkpoint(path)["state"]
    except BossNASError:
        return None
    return s["epoch"], s["step"]


def _retrain_results(out):
    metrics = json.loads((out / "metrics.json").read_text())
    weights = load_checkpoint(out / "checkpoint.pt")["model"]
    history = [{k: v for k, v in h.items() if k != "seconds"} for h in metrics["history"]]
    steps = logged_steps(out)
    assert_steps_once_in_order(steps, blocks=None, per_block=3 * 4)
    return metrics["test"], metrics["test_ema"], history, steps, weights


def _same_retrain(a, b):
    assert a[:4] == b[:4]
    for x, y in zip(a[4].values(), b[4].values(), strict=True):
        torch.testing.assert_close(x, y, rtol=0, atol=0)


@pytest.fixture(scope="module")
def retrain_reference(tmp_path_factory):
    out = tmp_path_factory.mktemp("retrain-reference") / "r"
    res = subprocess.run([sys.executable, "-m", "bossnas", "retrain", *RETRAIN, "--out", str(out), "--quiet"],
                         capture_output=True, text=True, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert res.returncode == 0, res.stderr
    return _retrain_results(out)


@pytest.mark.slow
def test_retrain_kill_9_then_resume_matches_uninterrupted_run(retrain_reference, tmp_path, launched):
    seed = int(os.environ.get("BOSSNAS_KILL_SEED", time.time_ns() % 10_000))
    rng = random.Random(seed)
    target, delay = rng.choice([1, 2]), rng.uniform(0.0, 0.3)
    out = tmp_path / "r"
    proc = launched("retrain", *RETRAIN, "--out", str(out), "--quiet", pause_at={"epoch": target, "step": 0})
    os.kill(wait_until_paused(proc), signal.SIGCONT)
    time.sleep(delay)
    os.kill(proc.pid, signal.SIGKILL)
    proc.communicate()
    where = f"killed after epoch {target} + {delay:.2f}s (BOSSNAS_KILL_SEED={seed})"
    resumed = launched("retrain", "--resume", "--out", str(out), "--quiet")
    _, err = resumed.communicate(timeout=HANG_S)
    assert resumed.returncode == 0, f"{where}: {err}"
    _same_retrain(_retrain_results(out), retrain_reference)


@pytest.mark.slow
def test_retrain_sigterm_saves_names_the_signal_and_resumes(retrain_reference, tmp_path, launched):
    out = tmp_path / "r"
    proc = launched("retrain", *RETRAIN, "--out", str(out), "--quiet", pause_at={"epoch": 1, "step": 0})
    paused = wait_until_paused(proc)
    proc.send_signal(signal.SIGTERM)
    os.kill(paused, signal.SIGCONT)
    _, err = proc.communicate(timeout=HANG_S)
    assert proc.returncode == 128 + signal.SIGTERM, err  # as the search: 143, not 130
    assert "Traceback" not in err
    last = err.strip().splitlines()[-1]
    assert last.startswith("error: interrupted by SIGTERM at epoch ") and last.endswith("continue with --resume"), last
    epoch, step = _retrain_state(out / "checkpoint.pt")
    assert last.startswith(f"error: interrupted by SIGTERM at epoch {epoch + 1}, step {step};")
    proc = launched("retrain", "--resume", "--out", str(out), "--quiet")
    _, err = proc.communicate(timeout=HANG_S)
    assert proc.returncode == 0, err
    assert f"resuming '{out}' at epoch {epoch + 1}, step {step}" in err
    _same_retrain(_retrain_results(out), retrain_reference)


def test_retrain_damaged_checkpoint_is_one_line_naming_the_file(tmp_path):
    from bossnas.retrain import Retrainer, retrain_config

    config, out = retrain_config(RETRAIN[0], RETRAIN[1:] + ["train.epochs=1"], out=tmp_path / "r")
    Retrainer.open(config, out, show_progress=False).run()
    path = out / "checkpoint.pt"
    good = path.read_bytes()
    for cut in (0, 10, len(good) // 2, len(good) - 1):
        path.write_bytes(good[:cut])
        res = subprocess.run([sys.executable, "-m", "bossnas", "retrain", "--resume", "--out", str(out)],
                             capture_output=True, text=True)
        assert res.returncode == 2, res.stderr
        lines = res.stderr.strip().splitlines()
        assert len(lines) == 1 and f"'{path}'" in lines[0] and "corrupt or truncated" in lines[0], lines
    # a search checkpoint in a retraining folder is refused by kind, not by a failed load
    path.write_bytes(good)
    ckpt = load_checkpoint(path)
    save_checkpoint(path, {**{k: v for k, v in ckpt.items() if k != "format"}, "kind": "search"})
    with pytest.raises(BossNASError, match="is a search checkpoint, not a retrain one"):
        Retrainer.open(config, out, resume=True)
