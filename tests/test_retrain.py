import json

import pytest
import torch
from conftest import bossnas, run_cli

from bossnas.errors import BossNASError
from bossnas.retrain import Retrainer, ema_decay_for, retrain_config, set_retrain_key
from bossnas.utils.io import load_checkpoint

ARCH = "16:16:16:16:16"
#: a digits retraining at 16x16 that reaches ~90% test top-1 in a few seconds on one core
TINY = ["data.image_size=16", "train.epochs=4", "train.batch_size=64", "train.warmup_epochs=0.5", "train.eval_every=0"]


@pytest.mark.slow
def test_retrain_cli_learns_digits_and_refuses_to_overwrite(tmp_path, monkeypatch, capsys):
    out = tmp_path / "r"
    code, stdout, stderr = run_cli(monkeypatch, capsys, "retrain", ARCH, *TINY, "--out", str(out), "--quiet")
    assert code == 0, stderr
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["model"] == {"name": f"nats-sss/{ARCH}", "space": "nats-sss", "arch": ARCH, "space_options": {},
                                "source": ARCH}
    assert metrics["data"]["input"] == [1, 16, 16] and metrics["data"]["num_classes"] == 10
    assert metrics["test"]["images"] == metrics["data"]["test_images"] > 300
    assert metrics["test"]["top1"] > 75, metrics["test"]  # chance is 10%; measured ~90-94%
    assert metrics["test"]["top5"] >= metrics["test"]["top1"]
    assert metrics["test_ema"]["top1"] > 50, metrics["test_ema"]
    assert metrics["params"] > 0 and metrics["madds"] > 0 and metrics["ema_decay"] == pytest.approx(0.9)
    assert [h["epoch"] for h in metrics["history"]] == [1, 2, 3, 4]
    assert metrics["history"][-1]["loss"] < metrics["history"][0]["loss"]
    assert metrics["augment"] == "small-noflip" and metrics["lr"] == 0.1
    assert "optimizer: sgd" in (out / "config.yaml").read_text()
    assert "test top-1" in stderr + stdout
    before = (out / "metrics.json").read_bytes()
    res = bossnas("retrain", ARCH, *TINY, "--out", str(out))
    assert res.returncode == 2 and "--resume" in res.stderr and "Traceback" not in res.stderr
    assert len(res.stderr.strip().splitlines()) == 1
    assert (out / "metrics.json").read_bytes() == before


def test_interrupted_retrain_resumes_to_the_same_weights(tmp_path):
    overrides = ["data.image_size=16", "data.train_images=256", "train.epochs=3", "train.batch_size=64",
                 "train.eval_every=0"]
    config, _ = retrain_config(ARCH, overrides, out=tmp_path / "full")
    full = Retrainer.open(config, tmp_path / "full", show_progress=False)
    expected = full.run()

    config, _ = retrain_config(ARCH, overrides, out=tmp_path / "cut")
    cut = Retrainer.open(config, tmp_path / "cut", show_progress=False)
    original, calls = cut.augment, {"n": 0}

    def stop_in_epoch_two(images, g):
        calls["n"] += 1
        if calls["n"] == 6:  # 4 steps per epoch: epoch 2, step 2
            cut._stop.set()
        return original(images, g)

    cut.augment = stop_in_epoch_two
    with pytest.raises(BossNASError, match="--resume"):
        cut.run()
    state = load_checkpoint(tmp_path / "cut" / "checkpoint.pt")["state"]
    assert (state["epoch"], state["step"], len(state["history"])) == (1, 2, 1)
    assert not (tmp_path / "cut" / "metrics.json").exists()
    # continue from the folder's own config.yaml, as `bossnas retrain --resume --out DIR` does
    config, _ = retrain_config(None, out=tmp_path / "cut", resume=True)
    resumed = Retrainer.open(config, tmp_path / "cut", resume=True, show_progress=False)
    assert (resumed.state.epoch, resumed.state.step) == (1, 2)
    metrics = resumed.run()
    assert [h["epoch"] for h in metrics["history"]] == [1, 2, 3]
    for a, b in zip(resumed.model.state_dict().values(), full.model.state_dict().values(), strict=True):
        torch.testing.assert_close(a, b)
    assert metrics["test"] == expected["test"] and metrics["test_ema"] == expected["test_ema"]
    # another training config is refused, naming what differs
    config, _ = retrain_config(ARCH, overrides + ["train.lr=0.2"], out=tmp_path / "cut", resume=True)
    with pytest.raises(BossNASError, match=r"different config .*train\.lr"):
        Retrainer.open(config, tmp_path / "cut", resume=True)


@pytest.mark.parametrize(
    "args, message",
    [
        (["retrain", "nats-sss/64:40:48", "--out", "{tmp}/a"], "malformed architecture '64:40:48'"),
        (["retrain", "nonsense", "--out", "{tmp}/a"], "neither a model name nor an architecture"),
        (["retrain", "{tmp}/missing.json", "--out", "{tmp}/a"], "missing.json' not found"),
        (["retrain", "{tmp}", "--out", "{tmp}/a"], "holds no best_arch.json"),
        (["retrain", ARCH, "--data", "mnist", "--out", "{tmp}/a"], "'mnist' is out of range; expected digits, cifar10"),
        (["retrain", ARCH, "train.epoch=3", "--out", "{tmp}/a"], "unknown retrain key 'train.epoch' (did you mean 'train.epochs'?)"),
        (["retrain", ARCH, "--optimizer", "adam", "--out", "{tmp}/a"], "expected sgd or adamw"),
        (["retrain", ARCH, "--data", "cifar10", "--data-dir", "{tmp}/none", "--out", "{tmp}/a"], "cifar10 not found under"),
        (["retrain", ARCH, "--batch-size", "5000", "--out", "{tmp}/a"], "larger than the 1438 training images"),
        (["retrain", "--resume", "--out", "{tmp}/a"], "nothing to resume"),
        (["retrain"], "no architecture given"),
    ],
)
def test_retrain_user_errors_are_one_line(tmp_path, monkeypatch, capsys, args, message):
    code, _, err = run_cli(monkeypatch, capsys, *[a.replace("{tmp}", str(tmp_path)) for a in args])
    assert code == 2, err
    assert message in err
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err
    assert not (tmp_path / "a").exists()


def test_best_arch_json_brings_its_space_and_data(tmp_path):
    record = {"space": "nats-sss", "arch": "8:16:24:32:40", "data": "digits", "input": [1, 12, 12], "space_options": {}}
    (tmp_path / "best_arch.json").write_text(json.dumps(record))
    config, out = retrain_config(str(tmp_path), ["train.epochs=2"])
    assert config.model.name == "nats-sss/8:16:24:32:40" and config.data.image_size == 12
    assert out == tmp_path / "retrain" and config.train.epochs == 2
    with pytest.raises(BossNASError, match="search run folder"):
        Retrainer.open(config, tmp_path)


def test_keys_and_ema_decay():
    config, _ = retrain_config(ARCH, ["train.optimizer=adamw", "model.space_options.foo=1"])
    assert config.train.optimizer == "adamw" and config.model.space_options == {"foo": 1}
    with pytest.raises(BossNASError, match="train.label_smoothing"):
        set_retrain_key(config, "train.label_smoothing", "1.5")
    assert ema_decay_for(None, 100) == 0.9 and ema_decay_for(None, 10**7) == 0.9999
    assert ema_decay_for(None, 1000) == pytest.approx(0.99) and ema_decay_for(0.5, 10) == 0.5


# ------------------------------------------------------------------ adversarial pass 2026-12-02, issue 20
def test_issue_20_each_search_record_retrains_into_its_own_folder(tmp_path):
    record = {"space": "nats-sss", "arch": "8:16:24:32:40", "data": "digits", "input": [1, 12, 12], "space_options": {}}
    (tmp_path / "best_arch.json").write_text(json.dumps(record))
    (tmp_path / "best_arch-max_latency=1.34ms.json").write_text(json.dumps({**record, "arch": "8:8:8:8:8"}))
    assert retrain_config(str(tmp_path))[1] == tmp_path / "retrain"
    assert retrain_config(str(tmp_path / "best_arch.json"))[1] == tmp_path / "retrain"
    assert retrain_config(str(tmp_path / "best_arch-max_latency=1.34ms.json"))[1] == tmp_path / "retrain-max_latency=1.34ms"
    # the same record twice: the refusal says how to choose another folder
    from bossnas.runs import RETRAIN, RunFolder

    (tmp_path / "retrain").mkdir()
    (tmp_path / "retrain" / "metrics.json").write_text("{}")
    with pytest.raises(BossNASError, match=r"already holds a run; add --resume to continue it or --force to start over "
                                           r"\(or give another --out\)"):
        RunFolder(tmp_path / "retrain", RETRAIN).check_free(force=False)


def test_adv_15_space_options_that_are_not_a_mapping_are_one_line(tmp_path, monkeypatch, capsys):
    record = {"space": "nats-sss", "arch": "8:16:24:32:40", "space_options": [["width_mult", 0.5]]}
    path = tmp_path / "space_options_list.json"
    path.write_text(json.dumps(record))
    code, _, err = run_cli(monkeypatch, capsys, "retrain", str(path), "--out", str(tmp_path / "r"))
    assert code == 2 and err.strip().splitlines() == [
        f"error: '{path}' has space_options [[\"width_mult\", 0.5]], not a mapping of option names to values "
        "(e.g. {\"width_mult\": 0.25}); restore the file"], err
    assert not (tmp_path / "r").exists()


def test_adv_25_more_training_images_than_the_data_has_is_one_line(tmp_path):
    config, out = retrain_config(ARCH, ["data.image_size=8", "data.train_images=100000"], out=tmp_path / "r")
    with pytest.raises(BossNASError) as info:
        Retrainer.open(config, out)
    assert str(info.value) == ("data.train_images=100000 is more than the 1438 training images of digits; expected "
                               "2..1438, or leave it unset to train on all")
    assert not out.exists()


def test_adv_37_a_non_finite_loss_stops_before_the_step_and_names_no_missing_checkpoint(tmp_path, monkeypatch):
    config, out = retrain_config(ARCH, ["data.image_size=8", "data.train_images=128", "train.batch_size=32",
                                        "train.epochs=2", "train.eval_every=0"], out=tmp_path / "r")
    trainer = Retrainer.open(config, out, show_progress=False)
    steps = []
    real_step = trainer.optimizer.step
    monkeypatch.setattr(trainer.optimizer, "step", lambda *a, **k: (steps.append(1), real_step(*a, **k)))
    real_forward = trainer.model.forward
    monkeypatch.setattr(trainer.model, "forward", lambda x: real_forward(x) * float("inf"))
    with pytest.raises(BossNASError) as info:
        trainer.run()
    trainer.folder.unlock()
    assert steps == [] and not (out / "checkpoint.pt").exists()
    assert str(info.value) == ("non-finite loss (nan) at epoch 1, step 1; no optimizer step was taken with it and no "
                               "checkpoint was written yet (the first is written at the end of epoch 1); start over "
                               "with --force and a lower train.lr")
