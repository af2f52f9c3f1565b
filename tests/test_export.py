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


# ------------------------------------------------------------------ adversarial pass 2026-12-02
def _retrain_copy(trained, dst):
    import shutil

    shutil.copytree(trained, dst, ignore=shutil.ignore_patterns(".lock", "export"))
    return dst


def _fake_export(folder, names):
    """A finished earlier export holding ``names`` (bytes that are no model: nothing reads them here)."""
    folder.mkdir(parents=True, exist_ok=True)
    for name in names:
        (folder / name).write_bytes(b"an earlier export's " + name.encode())
    files = {"weights": "model.pt" if "model.pt" in names else None, "program": "model.pt2" if "model.pt2" in names else None,
             "onnx": "model.onnx" if "model.onnx" in names else None}
    (folder / "model.json").write_text(json.dumps({"format": "bossnas-model-v1", "files": files}))


def test_adv_3_export_force_removes_stale_forms(trained, tmp_path, monkeypatch, capsys):
    out = tmp_path / "exp"
    _fake_export(out, ["model.pt", "model.pt2", "model.onnx"])
    code, stdout, err = run_cli(monkeypatch, capsys, "export", str(trained), "--out", str(out), "--force",
                                "--weights", "model", "--format", "state-dict", "--no-onnx")
    assert code == 0, err
    # only the forms of this export are left, and the manifest says so
    assert sorted(p.name for p in out.iterdir()) == ["model.json", "model.pt"]
    record = json.loads((out / "model.json").read_text())
    assert record["files"] == {"weights": "model.pt", "program": None, "onnx": None} and record["weights"] == "model"
    assert f"note: removed model.pt2, model.onnx of the earlier export in '{out}' (this export does not write them)" in err
    plain, _ = model_from_retrain(trained, "model")
    torch.testing.assert_close(load_exported(out)(_batch()), plain(_batch()))
    # without --force a finished export is still refused, and nothing is touched
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    code, _, err = run_cli(monkeypatch, capsys, "export", str(trained), "--out", str(out), "--format", "state-dict")
    assert code == 2 and "exists; add --force to overwrite or choose another --out" in err
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before


def test_adv_4_an_interrupted_export_is_completed_by_the_rerun(trained, tmp_path, monkeypatch, capsys):
    from bossnas.export import export_state

    out = tmp_path / "exp"
    out.mkdir()
    (out / "model.pt").write_bytes(b"half of an export killed after its first file")
    assert export_state(out) == ("incomplete", ["model.pt"])
    code, stdout, err = run_cli(monkeypatch, capsys, "export", str(trained), "--out", str(out), "--format", "state-dict")
    assert code == 0, err
    assert (f"note: '{out}' held an interrupted export (model.pt without a complete model.json); completed it"
            in err.splitlines())
    assert export_state(out) == ("complete", ["model.pt", "model.json"])
    torch.testing.assert_close(load_exported(out)(_batch()), model_from_retrain(trained)[0](_batch()))
    # a manifest naming a form that is missing (an old export killed after model.json) is incomplete too
    _fake_export(tmp_path / "old", ["model.pt", "model.pt2"])
    (tmp_path / "old" / "model.pt2").unlink()
    assert export_state(tmp_path / "old")[0] == "incomplete"


def test_adv_29_export_interrupted_by_a_signal_is_one_line_and_the_rerun_completes(trained, tmp_path, monkeypatch,
                                                                                   capsys):
    import signal

    import bossnas.export as export_module

    out = tmp_path / "exp"
    real_check = export_module.check_export
    for signum, code_expected in ((signal.SIGINT, 130), (signal.SIGTERM, 143)):
        def interrupted_check(*args, signum=signum, **kwargs):  # the signal arrives after model.pt is written
            assert (out / "model.pt").is_file() and not (out / "model.json").exists()
            os.kill(os.getpid(), signum)
            return real_check(*args, **kwargs)

        caught = []  # old code: no handler of its own, so this one sees SIGTERM (and pytest survives it)
        previous = signal.signal(signal.SIGTERM, lambda *a, caught=caught: caught.append(a))
        # a shell starts a background job with SIGINT ignored, and Python then keeps it ignored:
        # give this process the Ctrl-C a terminal user has
        previous_int = signal.signal(signal.SIGINT, signal.default_int_handler)
        monkeypatch.setattr(export_module, "check_export", interrupted_check)
        try:
            code, _, err = run_cli(monkeypatch, capsys, "export", str(trained), "--out", str(out), "--format", "state-dict")
        finally:
            signal.signal(signal.SIGTERM, previous)
            signal.signal(signal.SIGINT, previous_int)
        name = signal.Signals(signum).name
        assert (code, caught) == (code_expected, []), err
        assert err.strip().splitlines()[-1] == (f"error: interrupted by {name} while exporting to '{out}'; it holds an "
                                                "incomplete export; run the same command again to complete it")
    monkeypatch.setattr(export_module, "check_export", real_check)
    code, _, err = run_cli(monkeypatch, capsys, "export", str(trained), "--out", str(out), "--format", "state-dict")
    assert code == 0 and "completed it" in err, err


def test_adv_11_export_folder_problems_are_one_line_before_any_work(trained, tmp_path, monkeypatch, capsys):
    import errno
    import tempfile

    import bossnas.export as export_module

    def no_capture(*args, **kwargs):
        raise AssertionError("the graph was captured before the folder was checked")

    monkeypatch.setattr(export_module, "export_program", no_capture)
    afile = tmp_path / "afile"
    afile.write_text("x")
    cases = {
        str(afile): f"error: '{afile}' is a file, not a folder; give a folder for the export folder",
        str(afile / "sub"): f"error: '{afile}' is a file, not a folder (in the way of '{afile / 'sub'}'); give a folder "
                            "for the export folder",
    }
    ro = tmp_path / "ro"
    ro.mkdir()
    real = tempfile.mkstemp

    def mkstemp(*args, dir=None, **kwargs):  # a read-only mount (root ignores permission bits)
        if dir is not None and os.path.realpath(dir).startswith(os.path.realpath(ro)):
            raise OSError(errno.EROFS, os.strerror(errno.EROFS), str(dir))
        return real(*args, dir=dir, **kwargs)

    monkeypatch.setattr(tempfile, "mkstemp", mkstemp)
    cases[str(ro / "exp")] = f"error: cannot write in '{ro}' (read-only file system); choose another export folder or make it writable"
    for where, line in cases.items():
        code, _, err = run_cli(monkeypatch, capsys, "export", str(trained), "--out", where, "--no-onnx")
        assert code == 2 and err.strip().splitlines() == [line], err
    assert afile.read_text() == "x" and not list(ro.iterdir())


@pytest.mark.parametrize("content", ['{"test": {"top1": 5', "[1, 2]", '{"test": {"top1": "x"}, "test_ema": {"top1": 3}}'])
def test_adv_12_a_damaged_metrics_json_does_not_stop_the_export(trained, tmp_path, monkeypatch, capsys, content):
    run = _retrain_copy(trained, tmp_path / "r")
    (run / "metrics.json").write_text(content)
    code, _, err = run_cli(monkeypatch, capsys, "export", str(run), "--format", "state-dict")
    assert code == 0 and "Traceback" not in err, err
    record = json.loads((run / "export" / "model.json").read_text())
    if content.startswith("{\"test\": {\"top1\": 5") or content.startswith("["):
        kind = "is not valid JSON" if content.startswith("{") else "does not hold a mapping"
        assert f"warning: '{run / 'metrics.json'}' {kind}; the export records no test accuracy" in err.splitlines()
        assert "test" not in record
    else:  # a top-1 that is no number: no comparison, no warning; the EMA's valid entry is recorded
        assert "warning" not in err and record["test"] == {"top1": 3}


def test_adv_40_export_weights_empty_is_refused(trained, tmp_path, monkeypatch, capsys):
    code, _, err = run_cli(monkeypatch, capsys, "export", str(trained), "--weights", "", "--out", str(tmp_path / "e"))
    assert code == 2 and err.strip().splitlines() == ["error: --weights must be ema or model, got ''"], err
    assert not (tmp_path / "e").exists()
