import json

import pytest
from conftest import TINY, bossnas, stop_at_augment_call

from bossnas.config import load_config
from bossnas.train.runner import BlockwiseSearch, Interrupted, read_table


def test_correlate_reproduces_official_numbers(shared_data):
    res = bossnas("correlate", str(shared_data / "nats-sss/bossnas-official-block-scores.csv"),
                  str(shared_data / "nats-sss/cifar10-test-accuracy.csv"))
    assert res.returncode == 0, res.stderr
    assert "architectures: 32768" in res.stdout
    assert "Kendall  0.534" in res.stdout
    assert "Spearman 0.734" in res.stdout
    assert "Pearson  0.718" in res.stdout
    assert "negated" in res.stdout


def test_correlate_errors(tmp_path, shared_data):
    bad = tmp_path / "bad.csv"
    bad.write_text("arch,rating\n8:8:8:8:8,abc\n")
    res = bossnas("correlate", str(bad), str(shared_data / "nats-sss/cifar10-test-accuracy.csv"))
    assert res.returncode == 2 and "line 2: column 'rating' holds 'abc'" in res.stderr
    assert "Traceback" not in res.stderr


@pytest.mark.parametrize(
    "args, message",
    [
        (["run", "--space", "nats", "--out", "{tmp}/a"], "unknown search space 'nats'"),
        (["show", "64:40:48", "--space", "nats-sss"], "malformed architecture '64:40:48'"),
        (["run", "--data", "cifar10", "--data-dir", "{tmp}/missing", "--out", "{tmp}/b"], "cifar10 not found under"),
        (["run", "train.epoch=2", "--out", "{tmp}/c"], "unknown config key 'train.epoch' (did you mean 'train.epochs'?)"),
        (["run", "train.paths_per_step=9", "--out", "{tmp}/d"], "train.paths_per_step=9 is out of range"),
        (["run", "--resume", "--out", "{tmp}/e"], "nothing to resume"),
        (["search", "{tmp}/nowhere"], "does not exist"),
    ],
)
def test_cli_user_errors_are_one_line(tmp_path, args, message):
    res = bossnas(*[a.replace("{tmp}", str(tmp_path)) for a in args])
    assert res.returncode == 2, res.stdout + res.stderr
    assert message in res.stderr
    assert "Traceback" not in res.stderr
    assert len(res.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()


def test_spaces_and_show(tmp_path):
    res = bossnas("spaces")
    assert res.returncode == 0 and "nats-sss" in res.stdout and "32,768" in res.stdout
    res = bossnas("show", "64:40:48:64:56")
    assert res.returncode == 0, res.stderr
    assert "params 548,202" in res.stdout and "FLOPs 480.24M" in res.stdout


@pytest.mark.slow
def test_tiny_end_to_end_run_and_commands(tmp_path):
    out = tmp_path / "run"
    res = bossnas("run", *TINY, "--out", str(out), "--quiet")
    assert res.returncode == 0, res.stderr
    record = json.loads((out / "best_arch.json").read_text())
    assert record["space"] == "nats-sss" and len(record["arch"].split(":")) == 5
    assert record["params"] > 0 and record["flops"] > 0
    tables = [read_table(out / f"block_{b}_ratings.csv") for b in range(3)]
    assert [len(t) for t in tables] == [64, 64, 8]
    assert record["rating"] == pytest.approx(sum(min(r for _, r in t) for t in tables), abs=1e-6)
    assert "Chosen architecture" in (out / "report.md").read_text()
    # a second run into the same folder must not overwrite it silently
    res = bossnas("run", *TINY, "--out", str(out))
    assert res.returncode == 2 and "--resume" in res.stderr
    # constrained choice, ratings of all and of given architectures
    res = bossnas("search", str(out), "--max-flops", "2M")
    assert res.returncode == 0, res.stderr
    # another budget than the run's goes to its own file; the run's choice stays (issue 12 item 4)
    assert json.loads((out / "best_arch-max_flops=2000000.json").read_text())["flops"] <= 2e6
    assert json.loads((out / "best_arch.json").read_text()) == record
    res = bossnas("rate", str(out), record["arch"], "8:8:8:8:8")
    assert res.returncode == 0 and record["arch"] in res.stdout
    res = bossnas("rate", str(out))
    assert res.returncode == 0 and (out / "ratings.csv").read_text().count("\n") == 32769
    res = bossnas("correlate", str(out / "ratings.csv"), str(out / "ratings.csv"), "--truth-col", "rating")
    assert res.returncode == 0 and "Kendall  -1.000" in res.stdout


def _tables(run_dir):
    return [read_table(run_dir / f"block_{b}_ratings.csv") for b in range(3)]


@pytest.mark.slow
def test_interrupted_run_resumes_to_identical_ratings(tmp_path):
    config = load_config("quickstart", TINY + ["train.epochs=2", "train.checkpoint_every=1"])
    full = BlockwiseSearch.open(config, tmp_path / "full", show_progress=False)
    full.run()

    stopped = BlockwiseSearch.open(config, tmp_path / "cut", show_progress=False)
    with stop_at_augment_call(stopped, 9), pytest.raises(Interrupted, match="--resume"):  # block 1, epoch 2, mid-epoch
        stopped.run()
    assert stopped.state.block == 1 and stopped.state.step > 0
    resumed = BlockwiseSearch.open(config, tmp_path / "cut", resume=True, show_progress=False)
    assert resumed.state.block == 1
    resumed.run()
    assert _tables(tmp_path / "cut") == _tables(tmp_path / "full")
    assert resumed.state.best_paths == full.state.best_paths


def test_resume_refuses_other_config(tmp_path):
    config = load_config("quickstart", TINY)
    search = BlockwiseSearch.open(config, tmp_path / "r", show_progress=False)
    search.save()
    other = load_config("quickstart", TINY + ["train.lr=0.2"])
    from bossnas.errors import BossNASError

    with pytest.raises(BossNASError, match="different config .*train.lr"):
        BlockwiseSearch.open(other, tmp_path / "r", resume=True)
    (tmp_path / "r" / "checkpoint.pt").write_bytes(b"truncated")
    with pytest.raises(BossNASError, match="corrupt or truncated"):
        BlockwiseSearch.open(config, tmp_path / "r", resume=True)
