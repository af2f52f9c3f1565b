"""The run folder (bossnas/runs.py) against the defects of issue 12: one regression test per
item, each failing on the code before the fix. Search and retraining share the folder code;
where a defect showed in one, the test drives that one and, where cheap, the other."""

import errno
import json
import os
import signal
import stat
import subprocess
import sys
import tempfile

import pytest
from conftest import TINY, FakeClock, bossnas, run_cli, stop_at_augment_call, wait_until_paused

from bossnas.config import load_config
from bossnas.errors import BossNASError
from bossnas.retrain import Retrainer, retrain_config
from bossnas.train.runner import BlockwiseSearch
from bossnas.utils.io import load_checkpoint

QUICK = TINY + ["train.paths_per_step=2", "search.bn_recalibration=false"]
RETRAIN = ["16:16:16:16:16", "data.image_size=16", "data.train_images=128", "train.epochs=1", "train.batch_size=64",
           "train.eval_every=0"]


def _release(run) -> None:
    """Drop this process's lock on a run's folder: the tests start other processes on it.
    (Code without run-folder locks has nothing to release.)"""
    folder = getattr(run, "folder", None)
    if folder is not None:
        folder.unlock()


@pytest.fixture
def started(tmp_path):
    """A run folder holding a fresh run's first checkpoint (nothing trained)."""
    search = BlockwiseSearch.open(load_config("quickstart", QUICK), tmp_path / "r", show_progress=False)
    _release(search)  # the tests start other processes on this folder
    return tmp_path / "r"


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    """A finished QUICK search run folder (read-only use; copy it to change it)."""
    out = tmp_path_factory.mktemp("finished") / "run"
    res = bossnas("run", *QUICK, "--out", str(out), "--quiet")
    assert res.returncode == 0, res.stderr
    return out


def _one_line_error(res) -> str:
    lines = res.stderr.strip().splitlines()
    assert res.returncode == 2 and len(lines) == 1 and "Traceback" not in res.stderr, res.stderr
    return lines[0]


def _copy(src, dst):
    import shutil

    shutil.copytree(src, dst, ignore=shutil.ignore_patterns(".lock"))
    return dst


# ------------------------------------------------------------------ 1: the lock
#: holds the lock until the test closes its stdin or kills it (no sleep that a slow machine could outlast)
HOLD = ("import sys; from bossnas.runs import RunFolder, SEARCH; f = RunFolder(sys.argv[1], SEARCH); "
        "f.lock(); print('locked', flush=True); sys.stdin.read()")


def test_item_1_a_live_run_locks_its_folder_and_a_dead_ones_lock_is_stale(started):
    before = {p.name: p.read_bytes() for p in started.iterdir() if p.is_file() and p.name != ".lock"}
    holder = subprocess.Popen([sys.executable, "-c", HOLD, str(started)], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                              text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        for args in (["--resume"], ["--force", *QUICK], QUICK):
            line = _one_line_error(bossnas("run", *args, "--out", str(started), "--quiet"))
            assert line == (f"error: run folder '{started}' is in use by process {holder.pid} (a live run); "
                            "wait for it to end or stop it, then --resume or --force"), args
        # --force on a live run deleted nothing
        assert {p.name: p.read_bytes() for p in started.iterdir() if p.is_file() and p.name != ".lock"} == before
        with pytest.raises(BossNASError, match="is in use by process"):
            BlockwiseSearch.open(load_config("quickstart", QUICK), started, force=True)
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait()
    # the dead process's lock file is still there, naming it, and blocks nothing
    assert (started / ".lock").read_text().strip() == str(holder.pid)
    search = BlockwiseSearch.open(load_config("quickstart", QUICK), started, resume=True, show_progress=False)
    assert search.folder.locked
    _release(search)


def test_item_1_retraining_folders_are_locked_too(tmp_path):
    out = tmp_path / "r"
    out.mkdir()
    holder = subprocess.Popen([sys.executable, "-c", HOLD.replace("SEARCH", "RETRAIN"), str(out)], stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        config, _ = retrain_config(RETRAIN[0], RETRAIN[1:], out=out)
        with pytest.raises(BossNASError, match=f"output folder '{out}' is in use by process {holder.pid}"):
            Retrainer.open(config, out, force=True)
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait()


# ------------------------------------------------------------------ 2: --force scope
def test_item_2_force_removes_everything_the_old_run_wrote(started):
    old = ["best_arch.json", "report.md", "block_0_ratings.csv", "ratings.csv", "arch.png", "best_arch-flops-1M.json",
           "report-flops-1M.md", "retrain/checkpoint.pt", "retrain/metrics.json", "retrain/export/model.pt",
           "metrics.jsonl", "tensorboard/events.out.tfevents.1", "loss.png", "ratings.png"]
    for name in old:
        (started / name).parent.mkdir(parents=True, exist_ok=True)
        (started / name).write_text("old run")
    (started / "notes.txt").write_text("mine")  # not a run's output: kept
    search = BlockwiseSearch.open(load_config("quickstart", QUICK + ["seed=1"]), started, force=True, show_progress=False)
    _release(search)
    # metrics.jsonl is the new run's, empty until its first step
    assert sorted(p.name for p in started.iterdir()) == [".lock", "checkpoint.pt", "config.yaml", "metrics.jsonl", "notes.txt"]
    assert load_checkpoint(started / "checkpoint.pt")["config"]["seed"] == 1
    assert (started / "metrics.jsonl").read_bytes() == b""


def test_item_2_force_on_a_retraining_removes_its_export(tmp_path):
    config, out = retrain_config(RETRAIN[0], RETRAIN[1:], out=tmp_path / "r")
    _release(Retrainer.open(config, out, show_progress=False))
    (out / "metrics.json").write_text("{}")
    (out / "export").mkdir()
    (out / "export" / "model.pt").write_text("old")
    (out / "metrics.jsonl").write_text("old")
    _release(Retrainer.open(config, out, force=True, show_progress=False))
    assert sorted(p.name for p in out.iterdir()) == [".lock", "config.yaml", "metrics.jsonl"]
    assert (out / "metrics.jsonl").read_bytes() == b""


# ------------------------------------------------------------------ 3: a folder where a file goes
def test_item_3_force_with_a_checkpoint_directory_is_one_line_and_deletes_nothing(tmp_path):
    run = tmp_path / "r"
    (run / "checkpoint.pt").mkdir(parents=True)
    (run / "block_0_ratings.csv").write_text("block,path,rating\n")
    (run / "best_arch.json").write_text("{}")
    line = _one_line_error(bossnas("run", *QUICK, "--out", str(run), "--force"))
    assert line == f"error: '{run / 'checkpoint.pt'}' is not a file; move it out of the run folder (nothing was changed)"
    assert (run / "block_0_ratings.csv").exists() and (run / "best_arch.json").exists()


# ------------------------------------------------------------------ 4, 5: budgets of a finished run
def test_item_4_search_under_another_budget_writes_its_own_files(finished, tmp_path):
    run = _copy(finished, tmp_path / "run")
    best, report = (run / "best_arch.json").read_bytes(), (run / "report.md").read_bytes()
    record = json.loads(best)
    cap = record["flops"] - 1  # the unconstrained choice no longer fits
    res = bossnas("search", str(run), "--max-flops", str(cap))
    assert res.returncode == 0, res.stderr
    assert (run / "best_arch.json").read_bytes() == best and (run / "report.md").read_bytes() == report
    name = f"best_arch-max_flops={cap}.json"
    chosen = json.loads((run / name).read_text())
    assert chosen["constraints"]["max_flops"] == cap and chosen["flops"] <= cap and chosen["arch"] != record["arch"]
    assert (run / f"report-max_flops={cap}.md").is_file() and name in res.stderr + res.stdout
    # --out FOLDER: best_arch.json and report.md there
    res = bossnas("search", str(run), "--max-flops", str(cap), "--out", str(tmp_path / "budget"))
    assert res.returncode == 0, res.stderr
    assert json.loads((tmp_path / "budget" / "best_arch.json").read_text()) == chosen


def test_item_5_resume_of_a_finished_run_honours_a_new_budget(finished, tmp_path, monkeypatch, capsys):
    """Issue 20 default 3: the new budget is honoured, in its own record; the run's choice stays."""
    run = _copy(finished, tmp_path / "run")
    best, report = (run / "best_arch.json").read_bytes(), (run / "report.md").read_bytes()
    record = json.loads(best)
    cap = record["flops"] - 1
    code, _, err = run_cli(monkeypatch, capsys, "run", "--resume", "--out", str(run), f"search.max_flops={cap}", "--quiet")
    assert code == 0, err
    assert (run / "best_arch.json").read_bytes() == best and (run / "report.md").read_bytes() == report
    chosen = json.loads((run / f"best_arch-max_flops={cap}.json").read_text())
    assert chosen["constraints"]["max_flops"] == cap and chosen["flops"] <= cap < record["flops"]
    assert f"best_arch-max_flops={cap}.json" in err and (run / f"report-max_flops={cap}.md").is_file()
    assert f"max_flops: {cap}" in (run / "config.yaml").read_text()


# ------------------------------------------------------------------ 6, 7: unwritable folders, --out a file
def _read_only(monkeypatch, folder):
    """Make ``folder`` read-only for this process's writers (root ignores permission bits)."""
    real = tempfile.mkstemp

    def mkstemp(*args, dir=None, **kwargs):
        if dir is not None and os.path.realpath(dir).startswith(os.path.realpath(folder)):
            raise OSError(errno.EROFS, os.strerror(errno.EROFS), str(dir))
        return real(*args, dir=dir, **kwargs)

    monkeypatch.setattr(tempfile, "mkstemp", mkstemp)


@pytest.mark.parametrize("command", ["run --resume", "run --new", "search", "rate", "retrain"])
def test_item_6_read_only_folders_are_one_line_before_any_work(started, finished, tmp_path, monkeypatch, capsys, command):
    run = _copy(finished, tmp_path / "finished")
    args = {"run --resume": ["run", "--resume", "--out", str(started)],
            "run --new": ["run", *QUICK, "--out", str(tmp_path / "ro" / "new")],
            "search": ["search", str(run)],
            "rate": ["rate", str(run)],
            "retrain": ["retrain", str(run), *RETRAIN[1:]]}[command]
    folder = {"run --resume": started, "run --new": tmp_path / "ro", "search": run, "rate": run,
              "retrain": run}[command]
    (tmp_path / "ro").mkdir()
    before = load_checkpoint(started / "checkpoint.pt")["state"]
    _read_only(monkeypatch, folder)
    code, _, err = run_cli(monkeypatch, capsys, *args)
    assert code == 2, err
    assert err.strip().splitlines() == [f"error: cannot write in '{folder}' (read-only file system); "
                                        f"choose another {'output folder' if command == 'retrain' else 'run folder'} or make it writable"]
    assert load_checkpoint(started / "checkpoint.pt")["state"] == before  # no epoch was trained


def test_item_7_out_is_a_file_is_one_line(tmp_path):
    afile = tmp_path / "file"
    afile.write_text("x")
    assert _one_line_error(bossnas("run", *QUICK, "--out", str(afile))) == (
        f"error: '{afile}' is a file, not a folder; give a folder for the run folder")
    assert _one_line_error(bossnas("run", *QUICK, "--out", str(afile / "sub"))) == (
        f"error: '{afile}' is a file, not a folder (in the way of '{afile / 'sub'}'); give a folder for the run folder")
    assert _one_line_error(bossnas("retrain", *RETRAIN, "--out", str(afile))) == (
        f"error: '{afile}' is a file, not a folder; give a folder for the output folder")
    assert afile.read_text() == "x"


# ------------------------------------------------------------------ 10: a binary preset
def test_item_10_binary_preset_is_one_line(tmp_path):
    preset = tmp_path / "p.yaml"
    preset.write_bytes(b"\x80\x81\xfe\xff\x00binary")
    assert _one_line_error(bossnas("run", "--preset", str(preset), "--out", str(tmp_path / "r"))) == (
        f"error: config '{preset}' is not a text (UTF-8) file")
    assert not (tmp_path / "r").exists()


# ------------------------------------------------------------------ 17: config.yaml messages
def test_item_17_deleted_config_yaml_resumes_from_the_checkpoints_copy(started, monkeypatch):
    from bossnas.commands.train import _resolve_config

    saved = (started / "config.yaml").read_text()
    (started / "config.yaml").unlink()
    config, _, _ = _resolve_config(None, [], None, None, None, None, str(started), True)
    assert config.to_dict() == load_checkpoint(started / "checkpoint.pt")["config"]
    search = BlockwiseSearch.open(config, started, resume=True, show_progress=False)  # not "a different config"
    _release(search)
    assert saved  # the file existed before


@pytest.mark.parametrize("text, problem", [("train: [1,\n", "is not valid YAML at line 2"),
                                           ("- a list\n", "must be a mapping of keys to values")])
def test_item_17_garbage_config_yaml_names_the_file(started, text, problem):
    (started / "config.yaml").write_text(text)
    line = _one_line_error(bossnas("run", "--resume", "--out", str(started)))
    assert line.startswith(f"error: '{started / 'config.yaml'}' {problem}"), line
    line = _one_line_error(bossnas("retrain", "--resume", "--out", str(started)))
    assert line.startswith(f"error: '{started / 'config.yaml'}' {problem}"), line


# ------------------------------------------------------------------ 19: file modes, long lines
def test_item_19_output_files_follow_the_umask(started, monkeypatch):
    old = os.umask(0o022)
    try:
        search = BlockwiseSearch.open(load_config("quickstart", QUICK), started, force=True, show_progress=False)
        _release(search)
        modes = {p.name: stat.S_IMODE(p.stat().st_mode) for p in started.iterdir() if p.name != ".lock"}
        os.umask(0o027)
        from bossnas.utils.io import atomic_write_text

        atomic_write_text(started / "x.txt", "x")
        assert stat.S_IMODE((started / "x.txt").stat().st_mode) == 0o640
    finally:
        os.umask(old)
    assert modes == {"checkpoint.pt": 0o644, "config.yaml": 0o644, "metrics.jsonl": 0o644}


def test_item_19_logs_do_not_hard_wrap_long_lines(capsys):
    from bossnas.utils.progress import make_console

    arch = ":".join(["ResConv@56"] * 30)  # 329 characters
    make_console().print(f"  block 0: best path {arch} (rating 0.12345)")
    err = capsys.readouterr().err
    assert err == f"  block 0: best path {arch} (rating 0.12345)\n"


# ------------------------------------------------------------------ 18, 20: resumes say where; time-based checkpoints
def test_item_18_20_a_resumed_epoch_reports_its_own_rate_and_mean_loss(started, monkeypatch):
    from io import StringIO

    from rich.console import Console

    from bossnas.train import runner

    search = BlockwiseSearch.open(load_config("quickstart", QUICK), started, resume=True, show_progress=False)
    with stop_at_augment_call(search), pytest.raises(BossNASError, match="interrupted"):
        search.run()
    _release(search)
    log = StringIO()
    console = Console(file=log, width=300, soft_wrap=True)
    resumed = BlockwiseSearch.open(load_config("quickstart", QUICK), started, resume=True, console=console)
    first = load_checkpoint(started / "checkpoint.pt")["state"]
    assert (first["step"], first["epoch_loss_count"]) == (1, 1)
    resumed.config.search.rate_images = 24
    # the progress bar's clock advances exactly one second per training step: the summary's
    # duration and rate are then exact, whatever the machine's speed (CI must not flake)
    clock = FakeClock()
    monkeypatch.setattr("bossnas.utils.progress.time", clock)
    real_step = runner.bossnas_step

    def one_second_step(*args, **kwargs):
        clock.advance(1.0)
        return real_step(*args, **kwargs)

    monkeypatch.setattr(runner, "bossnas_step", one_second_step)
    resumed.train_block(0)
    _release(resumed)
    text = log.getvalue()
    assert f"resuming '{started}' at block 0, epoch 1, step 1" in text
    summary = next(line for line in text.splitlines() if line.startswith("  block 0 epoch 1/1: 3/3 in "))
    # the summary's loss is the epoch's mean loss (as in the history), and its rate counts the
    # 2 steps this process ran (2 in 2 s), not the 3 of the epoch (which would read 1.50)
    loss = resumed.state.history[0]["loss"]
    assert summary.startswith("  block 0 epoch 1/1: 3/3 in 2.0s (1.00 step/s) "), summary
    assert f"loss {loss:.4f}" in summary, summary


def test_item_20_checkpoints_every_few_minutes_by_default(tmp_path, monkeypatch):
    from bossnas.config import RetrainConfig, RunConfig

    assert RunConfig().train.checkpoint_minutes == RetrainConfig().train.checkpoint_minutes == 10.0
    # the checkpoint clock reads a clock that moves a minute at every look: a checkpoint is due
    # at every step by the clock, not by how fast this machine runs
    monkeypatch.setattr("bossnas.runs.time", FakeClock(tick=60.0))
    saved = []
    config = load_config("quickstart", QUICK + ["train.checkpoint_minutes=0.5"])
    search = BlockwiseSearch.open(config, tmp_path / "s", show_progress=False)
    real_save = search.save

    def record():
        saved.append((search.state.block, search.state.phase, search.state.epoch, search.state.step))
        real_save()

    search.save = record
    search.train_block(0)
    _release(search)
    # a checkpoint after every step (the time cadence), not only at the epoch end
    assert [s for s in saved if s[1] == "train" and s[2] == 0] == [(0, "train", 0, 1), (0, "train", 0, 2)]
    config, out = retrain_config(RETRAIN[0], RETRAIN[1:] + ["train.checkpoint_minutes=0.5"], out=tmp_path / "r")
    trainer = Retrainer.open(config, out, show_progress=False)
    steps = []
    real = trainer.save
    trainer.save = lambda: (steps.append((trainer.state.epoch, trainer.state.step)), real())
    trainer.train_epoch()
    _release(trainer)
    assert steps == [(0, 1), (1, 0)]
    # the cadence does not change the trained weights: a resume with another cadence is accepted
    assert "train.checkpoint_minutes" not in json.dumps(config.training_view())


def _pid_alive(pid):
    try:
        os.kill(pid, 0)
    except OSError:
        return False
    return True


def test_item_1_kill_9_leaves_a_stale_lock_that_the_resume_takes(started, launched):
    # the resumed run stops itself after its first step record, holding the lock: no polling race
    proc = launched("run", "--resume", "--out", str(started), "--quiet", pause_after_record={"kind": "step"})
    assert wait_until_paused(proc) == proc.pid
    assert (started / ".lock").read_text().strip() == str(proc.pid)
    os.kill(proc.pid, signal.SIGKILL)
    proc.communicate()
    assert not _pid_alive(proc.pid) and (started / ".lock").read_text().strip() == str(proc.pid)
    res = bossnas("run", "--resume", "--out", str(started), "--quiet")
    assert res.returncode == 0, res.stderr
