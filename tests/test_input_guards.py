"""Issue 12 defects outside the run machinery: each input below used to end in a traceback or
a silently wrong answer; each now gets one line naming the problem and the fix (or the
documented behaviour). Runs use one torch thread."""

import json
import math
import os
import signal
import subprocess
import sys

import numpy as np
import pytest
import torch
from conftest import HANG_S, TINY, bossnas

import bossnas as package
from bossnas.commands.search import _parse_budget
from bossnas.config import load_config
from bossnas.data.datasets import check_image_size, folder_shape, load_data
from bossnas.errors import BossNASError, one_line
from bossnas.evaluation.correlation import correlate_files
from bossnas.export import ema_warning, export_model
from bossnas.models import create_model, is_search_record, resolve_model
from bossnas.retrain import Retrainer, resolve_arch_source, retrain_config
from bossnas.train.runner import BlockwiseSearch
from bossnas.utils.io import atomic_write_json, existing_path, save_checkpoint

ARCH = "nats-sss/8:8:8:8:8"
#: an architecture string longer than a file name may be (255 bytes): probing it as a path raised OSError 36
LONG_ARCH = ":".join(["8"] * 200)


def _one_line(exc: BaseException) -> str:
    assert type(exc) is BossNASError and str(exc).strip()
    return one_line(exc)


# ------------------------------------------------------------------ 8: image size beyond memory
def test_image_size_beyond_memory_is_refused_before_any_work(tmp_path):
    config = load_config(None, [*TINY, "data.image_size=100000"])
    with pytest.raises(BossNASError) as info:
        BlockwiseSearch.open(config, tmp_path / "r", show_progress=False)
    message = _one_line(info.value)
    assert message.startswith("data.image_size=100000 is too large: one batch of two views (32 x 2 x 3x100000x100000 float32)")
    assert "the largest side that fits is" in message
    assert not (tmp_path / "r").exists()
    retrain, _ = retrain_config(ARCH, ["data.image_size=100000", "train.batch_size=16"], out=tmp_path / "rr")
    with pytest.raises(BossNASError, match=r"^data.image_size=100000 is too large: one batch of two views \(16 x 2"):
        Retrainer.open(retrain, tmp_path / "rr", show_progress=False)
    assert not (tmp_path / "rr").exists()
    res = bossnas("run", *TINY, "data.image_size=100000", "--out", str(tmp_path / "cli"))
    assert res.returncode == 2 and len(res.stderr.strip().splitlines()) == 1 and "too large" in res.stderr


def test_image_size_bound_is_the_largest_side_whose_batch_fits():
    memory = 2 * 32 * 3 * 4 * 100 * 100  # exactly one batch of two float32 views of 3x100x100
    check_image_size(100, 32, memory=memory)
    with pytest.raises(BossNASError, match="needs 0.0 GB.*largest side that fits is 100$"):
        check_image_size(101, 32, memory=memory)
    with pytest.raises(BossNASError, match="largest side that fits is 70$"):  # 100 / sqrt(2): twice the batch
        check_image_size(101, 64, memory=memory)


def test_in_memory_data_set_beyond_memory_is_one_line(monkeypatch):
    # the digits are resized in memory: 1,797 images x (1 uint8 + 4 float32 bytes) per pixel
    monkeypatch.setattr("bossnas.data.datasets.memory_bytes", lambda: 1797 * 5 * 64 * 64)
    assert load_data("digits", image_size=64).image_size == 64
    with pytest.raises(BossNASError, match="resizing 1,797 images to 1x65x65 .*largest side that fits is 64$"):
        load_data("digits", image_size=65)


# ------------------------------------------------------------------ 9: arch strings of any length
def test_arch_string_longer_than_a_file_name_is_one_line(tmp_path):
    assert existing_path(LONG_ARCH) is None and not is_search_record(LONG_ARCH)
    for call in (lambda: create_model(LONG_ARCH), lambda: resolve_model("nats-sss/" + LONG_ARCH),
                 lambda: resolve_model(LONG_ARCH + ".json"),  # found by the fuzz campaign
                 lambda: resolve_arch_source(LONG_ARCH), lambda: resolve_arch_source(LONG_ARCH + ".json")):
        with pytest.raises(BossNASError) as info:
            call()
        _one_line(info.value)
    res = bossnas("show", LONG_ARCH)
    assert res.returncode == 2 and len(res.stderr.strip().splitlines()) == 1 and "Errno" not in res.stderr
    assert res.stderr.startswith(f"error: '{LONG_ARCH}' is neither a model name nor an architecture of any space")


# ------------------------------------------------------------------ 11: Ctrl-C while torch loads
def test_sigint_during_start_up_imports_exits_130_in_one_line(tmp_path):
    # a module the command line imports at start-up, shadowed by one that delivers a real SIGINT
    # to its own process while it is being imported (torch takes seconds there)
    shadow = tmp_path / "typer"
    shadow.mkdir()
    (shadow / "__init__.py").write_text("import os, signal, time\nos.kill(os.getpid(), signal.SIGINT)\ntime.sleep(30)\n")
    env = {**os.environ, "PYTHONPATH": f"{tmp_path}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    # a shell starts background jobs with SIGINT ignored, and Python keeps an inherited SIG_IGN:
    # give the child the disposition a terminal's Ctrl-C meets
    res = subprocess.run([sys.executable, "-m", "bossnas", "spaces"], capture_output=True, text=True, env=env, timeout=HANG_S,
                         preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    assert res.returncode == 130
    assert res.stderr.strip().splitlines() == ["error: interrupted by SIGINT while starting"]
    # and `import bossnas` stays light: the spaces (and torch) load on first use
    code = "import sys, bossnas; print('torch' in sys.modules, bossnas.list_spaces()[0], 'torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()
    assert out == ["False", package.list_spaces()[0], "True"]


# ------------------------------------------------------------------ 12: image folders of mixed modes and sizes
def _save(path, mode: str, size: tuple[int, int], value: int = 100) -> None:
    from PIL import Image

    path.parent.mkdir(parents=True, exist_ok=True)
    channels = {"L": None, "RGB": 3, "RGBA": 4, "LA": 2}[mode]
    shape = (size[1], size[0]) if channels is None else (size[1], size[0], channels)
    Image.fromarray(np.full(shape, value, dtype=np.uint8), mode=mode).save(path)


def _mixed_folder(root, modes_first: str = "L", big: bool = True):
    """Two classes of 8x8 RGB images; the file sorting first is grayscale and one is 40x30."""
    for cls in ("a", "b"):
        for i in range(6):
            _save(root / cls / f"{i}.png", "RGB", (8, 8), 20 * i)
    _save(root / "a" / "00.png", modes_first, (8, 8))
    if big:
        _save(root / "b" / "00.png", "RGB", (40, 30))


def test_image_folder_channels_and_size_come_from_the_data_set(tmp_path):
    _mixed_folder(tmp_path)
    data = load_data("imagefolder", root=str(tmp_path))
    assert (data.in_channels, data.image_size) == (3, 8)  # the first file used to give (1, 8); a 40x30 first file 40
    assert data.train.images.shape[1:] == (3, 8, 8)
    assert data.note == ("image folder: headers of all 14 files read: 3 channels (1 grayscale read as RGB), 8x8 "
                         "(the longer side of 13; the rest resized; data.image_size chooses another)")
    chosen = load_data("imagefolder", root=str(tmp_path), image_size=12)
    assert chosen.image_size == 12 and chosen.note.endswith("12x12 (data.image_size)")


def test_all_grayscale_folder_is_one_channel_and_ties_take_the_smaller_side(tmp_path):
    files = []
    for i, side in enumerate([16, 16, 8, 8, 24]):
        files.append(tmp_path / f"{i}.png")
        _save(files[-1], "L" if i % 2 else "LA", (side, side // 2))
    assert folder_shape(files, None)[:2] == (1, 8)
    _save(files[0], "RGBA", (16, 16))
    assert folder_shape(files, None)[:2] == (3, 8)


def test_image_folder_decision_is_printed_in_one_line(tmp_path):
    _mixed_folder(tmp_path / "data")
    res = bossnas("retrain", ARCH, "--data", "imagefolder", "--data-dir", str(tmp_path / "data"), "--out",
                  str(tmp_path / "r"), "--quiet", "train.epochs=1", "train.batch_size=4", "train.eval_every=0")
    assert res.returncode == 0, res.stderr
    lines = [line for line in res.stderr.splitlines() if line.startswith("image folder:")]  # the console is stderr
    assert lines == ["image folder: headers of all 14 files read: 3 channels (1 grayscale read as RGB), 8x8 "
                     "(the longer side of 13; the rest resized; data.image_size chooses another)"]


# ------------------------------------------------------------------ 15: create_model arguments
@pytest.mark.parametrize("kwargs, message", [
    ({"num_classes": 0}, "num_classes must be an integer >= 1 or None, got 0"),
    ({"num_classes": -3}, "num_classes must be an integer >= 1 or None, got -3"),
    ({"num_classes": "10"}, "num_classes must be an integer >= 1 or None, got '10'"),
    ({"num_classes": 2.0}, "num_classes must be an integer >= 1 or None, got 2.0"),
    ({"image_size": 0}, "image_size must be an integer >= 4 or None, got 0"),
    ({"image_size": 2}, "image_size must be an integer >= 4 or None, got 2"),
    ({"in_channels": 0}, "in_channels must be an integer >= 1 or None, got 0"),
    ({"in_channels": True}, "in_channels must be an integer >= 1 or None, got True"),
])
def test_create_model_bad_counts_are_one_line(kwargs, message):
    with pytest.raises(BossNASError) as info:
        create_model(ARCH, **kwargs)
    assert _one_line(info.value) == f"create_model: {message}"


def test_create_model_none_means_the_models_own():
    model = create_model(ARCH, num_classes=None, image_size=None, in_channels=None)
    spec = model.bossnas_spec
    assert (spec["num_classes"], spec["image_size"], spec["in_channels"]) == (1000, 32, 3)
    assert model(torch.zeros(2, 3, 32, 32)).shape == (2, 1000)
    small = create_model(ARCH, num_classes=3, image_size=4, in_channels=1)
    assert small(torch.zeros(2, 1, 4, 4)).shape == (2, 3)


# ------------------------------------------------------------------ 16: non-finite budgets and JSON
@pytest.mark.parametrize("text", ["inf", "Infinity", "-inf", "nan", "1e400", "infM"])
def test_non_finite_budgets_are_refused_at_parsing(tmp_path, text):
    with pytest.raises(BossNASError) as info:
        _parse_budget(text, "--max-flops")
    assert "must be a finite number > 0" in _one_line(info.value)
    res = bossnas("search", str(tmp_path), "--max-flops", text)
    assert res.returncode == 2 and "finite" in res.stderr and len(res.stderr.strip().splitlines()) == 1


def test_json_records_are_strict(tmp_path):
    for value in (math.inf, -math.inf, math.nan):
        with pytest.raises(ValueError, match="not JSON compliant"):
            atomic_write_json(tmp_path / "best_arch.json", {"constraints": {"max_flops": value}})
        assert list(tmp_path.iterdir()) == []  # nothing written, not even a temporary file
    atomic_write_json(tmp_path / "best_arch.json", {"constraints": {"max_flops": 3.0e7}})
    assert json.loads((tmp_path / "best_arch.json").read_text()) == {"constraints": {"max_flops": 3.0e7}}


# ------------------------------------------------------------------ 17: messages that say what a thing is
@pytest.fixture(scope="module")
def retrained(tmp_path_factory):
    """A retraining folder with EMA: one epoch over 128 digits at 16x16 (about a second)."""
    out = tmp_path_factory.mktemp("retrain") / "run" / "retrain"
    config, _ = retrain_config(ARCH, ["data.image_size=16", "data.train_images=128", "train.epochs=1",
                                      "train.batch_size=32"], out=out)
    Retrainer.open(config, out, show_progress=False).run()
    return out


def test_correlate_without_an_arch_column_names_no_missing_option(tmp_path):
    (tmp_path / "s.csv").write_text("name,rating\n8:8:8:8:8,1\n16:8:8:8:8,2\n8:16:8:8:8,3\n")
    (tmp_path / "t.csv").write_text("arch,accuracy\n8:8:8:8:8,1\n16:8:8:8:8,2\n8:16:8:8:8,3\n")
    with pytest.raises(BossNASError) as info:
        correlate_files(tmp_path / "s.csv", tmp_path / "t.csv")
    message = _one_line(info.value)
    assert "--arch-col" not in message and message.endswith("its columns are name, rating; name the architecture column arch")


def test_show_says_what_a_file_or_folder_is(retrained, tmp_path):
    export_model(create_model(ARCH, num_classes=10), tmp_path / "export", fmt="state-dict")
    cases = {
        str(tmp_path / "export" / "model.pt"): f"'{tmp_path / 'export' / 'model.pt'}' is a weights file, not an architecture",
        "": "no architecture given (''); give an architecture string",
        "  ": "no architecture given ('  '); give an architecture string",
        str(retrained): f"'{retrained}' is a `bossnas retrain` folder, not a search: show its architecture with the search's run folder",
        str(retrained / "checkpoint.pt"): f"'{retrained / 'checkpoint.pt'}' is a bossnas training checkpoint, not an architecture",
        str(tmp_path): f"folder '{tmp_path}' holds no best_arch.json and no checkpoint.pt, so it is no search's run folder",
    }
    for arg, start in cases.items():
        res = bossnas("show", arg)
        assert res.returncode == 2 and len(res.stderr.strip().splitlines()) == 1, res.stderr
        assert res.stderr.startswith(f"error: {start}"), res.stderr


def test_run_checkpoint_given_as_weights_says_so(retrained, tmp_path):
    save_checkpoint(tmp_path / "checkpoint.pt", {"state": {}})  # a search's checkpoint has the same header
    for path in (retrained / "checkpoint.pt", tmp_path / "checkpoint.pt"):
        with pytest.raises(BossNASError) as info:
            create_model(ARCH, num_classes=10, image_size=16, in_channels=1, pretrained_path=path)
        assert _one_line(info.value) == (f"'{path}' is a bossnas run checkpoint (search or retrain), not weights; give the "
                                         "model.pt that `bossnas export RETRAIN_FOLDER` writes")


# ------------------------------------------------------------------ 20: version, EMA warning, .pt2 eval
def test_version_option_prints_the_package_version():
    res = bossnas("--version")
    assert res.returncode == 0 and res.stdout == f"bossnas {package.__version__} (torch {torch.__version__})\n"


def test_export_warns_when_ema_weights_test_worse(retrained, tmp_path):
    metrics_path = retrained / "metrics.json"
    metrics = json.loads(metrics_path.read_text())
    assert metrics["test_ema"] is not None
    worse = {**metrics, "test": {**metrics["test"], "top1": metrics["test_ema"]["top1"] + 5.0}}
    metrics_path.write_text(json.dumps(worse))
    try:
        warning = ema_warning(retrained, None)
        assert warning.startswith(f"exporting the EMA weights (test top-1 {metrics['test_ema']['top1']:.2f}%), but the plain "
                                  f"model tests better ({metrics['test_ema']['top1'] + 5:.2f}%); add --weights model")
        assert ema_warning(retrained, "ema") is None and ema_warning(retrained, "model") is None
        res = bossnas("export", str(retrained), "--out", str(tmp_path / "e"), "--format", "state-dict")
        assert res.returncode == 0 and res.stderr.splitlines() == [f"warning: {warning}"]
        res = bossnas("export", str(retrained), "--out", str(tmp_path / "m"), "--format", "state-dict", "--weights", "model")
        assert res.returncode == 0 and "warning" not in res.stderr
        better = {**metrics, "test": {**metrics["test"], "top1": metrics["test_ema"]["top1"]}}
        metrics_path.write_text(json.dumps(better))
        assert ema_warning(retrained, None) is None  # a tie keeps the default quiet
    finally:
        metrics_path.write_text(json.dumps(metrics))


def test_program_module_is_in_eval_mode_and_eval_raises_as_documented(tmp_path):
    model = create_model(ARCH, num_classes=10, image_size=8)
    with torch.no_grad():  # move the BatchNorm statistics away from their initial values
        model.train()(torch.randn(8, 3, 8, 8))
    export_model(model, tmp_path, fmt="program")
    program = torch.export.load(tmp_path / "model.pt2").module()
    x = torch.randn(3, 3, 8, 8)
    torch.testing.assert_close(program(x), model.eval()(x))  # running statistics, as in eval mode
    assert not torch.allclose(program(x), model.train()(x))
    with pytest.raises(NotImplementedError):  # torch's exported modules: docs/retrain-export.md says so
        program.eval()
