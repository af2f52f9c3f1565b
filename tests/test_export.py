import json
import os
import subprocess
import sys

import pytest
import torch
from conftest import run_cli

from bossnas.errors import BossNASError
from bossnas.export import (
    PROGRAM_EXTRA,
    export_model,
    load_exported,
    model_from_retrain,
    strip_ema_prefix,
)
from bossnas.models import create_model
from bossnas.retrain import Retrainer, retrain_config
from bossnas.utils.io import load_checkpoint

ARCH = "16:16:16:16:16"



@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A retraining folder: one epoch over 128 digits at 16x16 (about a second)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    out = tmp_path_factory.mktemp("retrain") / "run"
    config, _ = retrain_config(ARCH, ["data.image_size=16", "data.train_images=128", "train.epochs=1",
                                      "train.batch_size=32", "train.eval_every=0"], out=out)
    Retrainer.open(config, out, show_progress=False).run()
    yield out
    torch.set_num_threads(threads)


def _batch(seed=0):
    return torch.randn(4, 1, 16, 16, generator=torch.Generator().manual_seed(seed))


@torch.no_grad()
def test_export_round_trip(trained, tmp_path):
    model, extra = model_from_retrain(trained)
    assert extra["weights"] == "ema" and extra["finished"] and len(extra["mean"]) == 1
    ema_state = strip_ema_prefix(load_checkpoint(trained / "checkpoint.pt")["ema"])
    torch.testing.assert_close(model.state_dict()["head.4.weight"], ema_state["head.4.weight"])
    x = _batch()
    expected = model(x)
    result = export_model(model, tmp_path / "exp", extra)
    assert {f.name for f in result.files} == {"model.pt", "model.json", "model.pt2"}
    assert result.max_abs_diff < 1e-5
    # (a) the bundle: through load_exported and through create_model with the spec of model.json
    torch.testing.assert_close(load_exported(tmp_path / "exp")(x), expected)
    spec = json.loads((tmp_path / "exp" / "model.json").read_text())
    assert (spec["name"], spec["arch"], spec["in_channels"], spec["image_size"], spec["num_classes"]) == (
        f"nats-sss/{ARCH}", ARCH, 1, 16, 10)
    assert spec["test"]["top1"] > 0 and spec["classes"][0] == "0"
    rebuilt = create_model(spec["name"], num_classes=spec["num_classes"], in_channels=spec["in_channels"],
                           image_size=spec["image_size"], pretrained_path=tmp_path / "exp" / "model.pt").eval()
    torch.testing.assert_close(rebuilt(x), expected)
    # (b) the torch.export program, with the spec inside it and a dynamic batch size
    extra_files = {PROGRAM_EXTRA: ""}
    program = torch.export.load(tmp_path / "exp" / "model.pt2", extra_files=extra_files).module()
    assert json.loads(extra_files[PROGRAM_EXTRA])["arch"] == ARCH
    torch.testing.assert_close(program(x), expected)
    torch.testing.assert_close(program(x[:1]), expected[:1])
    # ... which loads with plain torch, bossnas not importable
    code = ("import sys; sys.modules['bossnas'] = None; import torch; "
            f"m = torch.export.load({str(tmp_path / 'exp' / 'model.pt2')!r}).module(); "
            "print(tuple(m(torch.zeros(3, 1, 16, 16)).shape))")
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         env={**os.environ, "OMP_NUM_THREADS": "1"}, cwd=tmp_path)
    assert res.returncode == 0, res.stderr
    assert res.stdout.strip() == "(3, 10)"
    # the plain weights are another export
    plain, _ = model_from_retrain(trained, "model")
    assert not torch.allclose(plain(x), expected)


def test_export_cli_and_errors(trained, tmp_path, monkeypatch, capsys):
    out = tmp_path / "exp"
    code, stdout, err = run_cli(monkeypatch, capsys, "export", str(trained), "--out", str(out), "--format", "state-dict")
    assert code == 0, err
    assert "reloaded outputs match" in stdout and (out / "model.pt").is_file() and not (out / "model.pt2").exists()
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"not a torch file")
    plain = tmp_path / "plain.pt"
    torch.save(create_model(f"nats-sss/{ARCH}", num_classes=10, in_channels=1).state_dict(), plain)
    cases = [
        (["export", str(trained), "--out", str(out), "--format", "state-dict"], "exists; add --force"),
        (["export", str(bad), "--arch", ARCH], "cannot read weights"),
        (["export", str(out / "model.pt"), "--arch", "8:8:8:8:8"], "do not fit this architecture"),
        (["export", str(out / "model.pt"), "--num-classes", "7"], "do not fit this architecture"),
        (["export", str(plain)], "carries no architecture; give it with --arch"),
        (["export", str(tmp_path / "nowhere")], "does not exist"),
        (["export", str(tmp_path)], "checkpoint"),
        (["export", str(trained), "--weights", "best"], "--weights must be ema or model"),
        (["export", str(trained), "--format", "onnx", "--out", str(tmp_path / "o")], "unknown export format 'onnx'"),
    ]
    for args, message in cases:
        code, _, err = run_cli(monkeypatch, capsys, *args)
        assert code == 2 and message in err, (args, err)
        assert len(err.strip().splitlines()) == 1 and "Traceback" not in err
    # a plain state dict exports once its architecture and input are given
    code, _, err = run_cli(monkeypatch, capsys, "export", str(plain), "--arch", ARCH, "--in-channels", "1",
                           "--num-classes", "10", "--image-size", "16", "--format", "state-dict")
    assert code == 0, err
    assert json.loads((tmp_path / "plain-export" / "model.json").read_text())["arch"] == ARCH


def test_create_model_weight_errors(tmp_path):
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"\x00" * 10)
    with pytest.raises(BossNASError, match="cannot read weights"):
        create_model(ARCH, num_classes=10, pretrained_path=bad)
    other = tmp_path / "other.pt"
    torch.save(create_model("8:8:8:8:8", num_classes=10).state_dict(), other)
    with pytest.raises(BossNASError, match="do not fit this architecture") as info:
        create_model(ARCH, num_classes=10, pretrained_path=other)
    assert "\n" not in str(info.value)
