"""Training curves (issue 14 part 3): metrics.jsonl kept in step with the checkpoints through
kill -9 and --resume, the TensorBoard mirror, and `bossnas plot`."""

import json
import math
import os
import signal
import subprocess
import sys

import pytest
import torch
from conftest import (
    HANG_S,
    TINY,
    assert_steps_once_in_order,
    logged_steps,
    run_cli,
    start_bossnas,
    wait_until_paused,
)

from bossnas.curves import METRICS_LOG, MetricsLog, PendingSteps, read_metrics, scalar_tags
from bossnas.errors import BossNASError
from bossnas.plot_curves import plot_run
from bossnas.runs import RETRAIN, SEARCH, RunFolder
from bossnas.train.runner import read_table
from bossnas.utils.io import load_checkpoint

PNG = b"\x89PNG\r\n\x1a\n"


def _records(n: int, block: int = 0) -> list[dict]:
    return [{"kind": "step", "block": block, "epoch": 0, "step": s, "loss": 1.0 / (s + 1), "lr": 0.1} for s in range(n)]


# ------------------------------------------------------------------ the log itself
def test_resume_cuts_the_log_to_the_checkpoint_offset_and_drops_a_partial_line(tmp_path):
    log = MetricsLog(tmp_path, tensorboard=False)
    assert log.start() is None and log.offset == 0
    first = _records(5)
    for r in first[:3]:
        log.write(r)
    saved = log.offset  # what a checkpoint after step 2 records
    assert saved == len((tmp_path / METRICS_LOG).read_bytes())
    for r in first[3:]:
        log.write(r)
    log.close()
    with open(tmp_path / METRICS_LOG, "ab") as f:  # a kill in the middle of a write
        f.write(b'{"kind": "step", "blo')
    assert len(read_metrics(tmp_path / METRICS_LOG)) == 5  # a reader skips the unfinished line
    resumed = MetricsLog(tmp_path, tensorboard=False)
    assert resumed.start(saved) is None and resumed.offset == saved
    for r in first[3:]:  # the resumed run takes steps 3 and 4 again
        resumed.write(r)
    resumed.close()
    assert read_metrics(tmp_path / METRICS_LOG) == first
    assert resumed.offset == (tmp_path / METRICS_LOG).stat().st_size


def test_a_checkpoint_without_offset_keeps_the_whole_lines_and_a_short_file_is_a_note(tmp_path):
    path = tmp_path / METRICS_LOG
    path.write_text("".join(json.dumps(r) + "\n" for r in _records(2)) + '{"kind": "st')
    log = MetricsLog(tmp_path, tensorboard=False)
    assert log.start(None) is None  # a checkpoint written before the log: cut only the partial line
    whole = path.stat().st_size
    assert whole == len("".join(json.dumps(r) + "\n" for r in _records(2)))
    note = MetricsLog(tmp_path, tensorboard=False).start(whole + 100)
    assert note == (f"'{path}' holds {whole} of the {whole + 100} bytes the checkpoint counted; "
                    "the training curves miss the steps in between")
    assert path.stat().st_size == whole and len(read_metrics(path)) == 2


def test_damaged_line_is_one_line_error_and_a_disabled_log_writes_nothing(tmp_path):
    path = tmp_path / METRICS_LOG
    path.write_text(json.dumps(_records(1)[0]) + "\nnot json\n" + json.dumps(_records(1)[0]) + "\n")
    with pytest.raises(BossNASError, match=r"metrics.jsonl' line 2 is not a metrics record; restore the file or start"):
        read_metrics(path)
    other = tmp_path / "rank1"
    log = MetricsLog(other, enabled=False)  # another process under torchrun
    log.start()
    log.write(_records(1)[0])
    assert log.offset is None and not other.exists()


def test_pending_steps_write_the_device_losses_in_order_with_the_throughput(tmp_path):
    log = MetricsLog(tmp_path, tensorboard=False)
    log.start()
    pending = PendingSteps(log)
    losses = [torch.tensor(2.5), torch.tensor(1.0 / 3.0), torch.tensor(float("nan"))]
    for s, loss in enumerate(losses):
        pending.add({"kind": "step", "epoch": 0, "step": s, "loss": None, "lr": 0.1 * s, "images_per_s": None}, loss)
    assert not (tmp_path / METRICS_LOG).read_bytes()  # nothing until the read-out
    pending.flush(123.5)
    records = read_metrics(tmp_path / METRICS_LOG)
    assert [list(r) for r in records] == [["kind", "epoch", "step", "loss", "lr", "images_per_s"]] * 3
    assert [r["loss"] for r in records] == [2.5, float(torch.tensor(1.0 / 3.0)), None]  # NaN: JSON null
    assert [r["step"] for r in records] == [0, 1, 2] and {r["images_per_s"] for r in records} == {123.5}
    assert scalar_tags({**records[0], "block": 2}) == [("block_2/loss", 2.5), ("block_2/lr", 0.0),
                                                       ("block_2/images_per_s", 123.5)]
    assert scalar_tags(records[2]) == [("train/lr", pytest.approx(0.2)), ("train/images_per_s", 123.5)]  # null left out
    assert scalar_tags({"kind": "eval", "epoch": 0, "step": 3, "top1": 50.0, "top5": 90.0, "loss": 1.5}) == [
        ("test/top1", 50.0), ("test/top5", 90.0), ("test/loss", 1.5)]


def test_force_removes_the_curves_of_both_kinds(tmp_path):
    for kind in (SEARCH, RETRAIN):
        folder = tmp_path / kind.name
        (folder / "tensorboard").mkdir(parents=True)
        (folder / "tensorboard" / "events.out.tfevents.1").write_bytes(b"x")
        for name in ("metrics.jsonl", "loss.png", "ratings.png", "notes.txt"):
            (folder / name).write_text("x")
        RunFolder(folder, kind).clear()
        left = sorted(p.name for p in folder.iterdir())
        assert left == (["notes.txt"] if kind is SEARCH else ["notes.txt", "ratings.png"]), kind.name


# ------------------------------------------------------------------ kill -9 between two checkpoints
#: 6 steps an epoch and no checkpoint inside an epoch: a kill mid-epoch leaves steps in the log
#: that no checkpoint counted
BETWEEN = TINY + ["train.batch_size=16", "train.paths_per_step=2", "search.bn_recalibration=false"]
RETRAIN_LONG = ["16:16:16:16:16", "data.image_size=16", "data.train_images=1024", "train.epochs=2",
                "train.batch_size=32"]


def _kill_resume(cmd, args, out, record, launched):
    """Start ``bossnas CMD ARGS``, kill -9 it right after it logs ``record`` (fields of a
    metrics.jsonl record), leave a half-written line, resume it; returns the number of step
    records the checkpoint did not count at the kill."""
    proc = launched(cmd, *args, "--out", str(out), "--quiet", pause_after_record=record)
    wait_until_paused(proc)
    os.kill(proc.pid, signal.SIGKILL)
    proc.communicate()
    offset = load_checkpoint(out / "checkpoint.pt")["metrics_offset"]
    data = (out / METRICS_LOG).read_bytes()
    uncounted = data[offset:].count(b'"kind": "step"')
    with open(out / METRICS_LOG, "ab") as f:
        f.write(b'{"kind": "step", "epo')
    resumed = launched(cmd, "--resume", "--out", str(out), "--quiet")
    _, err = resumed.communicate(timeout=HANG_S)
    assert resumed.returncode == 0, err
    return uncounted


def _background(cmd, args, out):
    proc = start_bossnas(cmd, *args, "--out", str(out), "--quiet")

    def result():
        _, err = proc.communicate(timeout=HANG_S)
        assert proc.returncode == 0, err
        return out

    return proc, result


@pytest.fixture(scope="module")
def references(tmp_path_factory):
    """Uninterrupted runs of BETWEEN (search) and RETRAIN_LONG, started in the background."""
    base = tmp_path_factory.mktemp("curves-reference")
    procs = {"run": _background("run", BETWEEN, base / "run"), "retrain": _background("retrain", RETRAIN_LONG, base / "r")}
    yield {name: result for name, (_, result) in procs.items()}
    for proc, _ in procs.values():
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def _tensorboard_steps(run_dir, tag):
    accumulator = pytest.importorskip("tensorboard.backend.event_processing.event_accumulator")
    events = accumulator.EventAccumulator(str(run_dir / "tensorboard"))
    events.Reload()
    return [(e.step, e.value) for e in events.Scalars(tag)]


@pytest.mark.slow
def test_search_killed_between_checkpoints_logs_every_step_once_like_an_uninterrupted_run(references, tmp_path, launched):
    out = tmp_path / "run"
    # block 1's steps 0-1 are logged; its only checkpoint so far is at the block's start
    uncounted = _kill_resume("run", BETWEEN, out, {"kind": "step", "block": 1, "step": 1}, launched)
    assert uncounted >= 2, "the kill came after a checkpoint that counted every logged step"
    steps = logged_steps(out)
    assert_steps_once_in_order(steps, blocks=3, per_block=6)
    reference = references["run"]()
    assert steps == logged_steps(reference)  # losses, lr and EMA momentum to the last bit
    def epochs(run_dir):
        return [(r["block"], r["epoch"], r["loss"]) for r in read_metrics(run_dir / METRICS_LOG) if r["kind"] == "epoch"]

    assert epochs(out) == epochs(reference) and len(epochs(out)) == 3
    try:
        import tensorboard  # noqa: F401
    except ImportError:
        return
    for b in range(3):  # TensorBoard dropped the events logged after the checkpoint (purge on resume)
        logged = _tensorboard_steps(out, f"block_{b}/loss")
        assert [s for s, _ in logged] == [6 * b + s for s in range(6)]
        assert [v for _, v in logged] == pytest.approx([loss for blk, _, _, loss, *_ in steps if blk == b], rel=1e-6)


@pytest.mark.slow
def test_retrain_killed_between_checkpoints_logs_every_step_once_like_an_uninterrupted_run(references, tmp_path, launched):
    out = tmp_path / "r"
    # epoch 2's first read-out (10 steps) is logged; the checkpoint is at the end of epoch 1
    uncounted = _kill_resume("retrain", RETRAIN_LONG, out, {"kind": "step", "step": 32 + 9}, launched)
    assert uncounted >= 10, "the kill came after a checkpoint that counted every logged step"
    steps = logged_steps(out)
    assert_steps_once_in_order(steps, blocks=None, per_block=2 * 32)
    reference = references["retrain"]()
    assert steps == logged_steps(reference)
    evals = [r for r in read_metrics(out / METRICS_LOG) if r["kind"] == "eval"]
    assert evals == [r for r in read_metrics(reference / METRICS_LOG) if r["kind"] == "eval"]
    assert [(r["epoch"], r["step"]) for r in evals] == [(0, 31), (1, 63)]
    final = json.loads((out / "metrics.json").read_text())
    assert (evals[-1]["top1"], evals[-1]["ema_top1"]) == (final["test"]["top1"], final["test_ema"]["top1"])


# ------------------------------------------------------------------ bossnas plot
@pytest.fixture(scope="module")
def search_run(tiny_run):
    """The session's finished tiny search (TINY, K=2): its folder, best_arch.json and rating tables."""
    record = json.loads((tiny_run / "best_arch.json").read_text())
    tables = [read_table(tiny_run / f"block_{b}_ratings.csv") for b in range(3)]
    return tiny_run, record, tables


def _png_size(path):
    from PIL import Image

    data = path.read_bytes()
    assert data.startswith(PNG) and len(data) > 10_000, path
    with Image.open(path) as image:
        return image.size


def test_plot_draws_the_logged_losses_and_the_ratings_of_every_block(search_run, tmp_path, monkeypatch, capsys):
    run_dir, record, tables = search_run
    code, out, err = run_cli(monkeypatch, capsys, "plot", str(run_dir), "--out", str(tmp_path))
    assert code == 0, err
    assert out.splitlines()[-2:] == [f"plot -> {tmp_path / 'loss.png'}", f"plot -> {tmp_path / 'ratings.png'}"]
    width, height = _png_size(tmp_path / "loss.png")
    assert width > 800 and height > 3 * 250  # three block panels
    width, height = _png_size(tmp_path / "ratings.png")
    assert width > 800 and height > 3 * 250
    # what was drawn is what the run logged
    plots = plot_run(run_dir, tmp_path)
    logged = read_metrics(run_dir / METRICS_LOG)
    assert [c.block for c in plots.curves] == [0, 1, 2]
    for curve in plots.curves:
        mine = [r for r in logged if r["kind"] == "step" and r["block"] == curve.block]
        assert curve.steps == [0, 1, 2] == [r["step"] for r in mine]
        assert curve.loss == [r["loss"] for r in mine] and curve.lr == [r["lr"] for r in mine]
        assert f"block {curve.block}: 3 steps, loss {mine[0]['loss']:.4f} -> {mine[-1]['loss']:.4f}" in out
    chosen = record["arch"].split(":")
    # the checkpoint's tables (those rate and search choose from); the CSVs are their 8-decimal copy
    state = load_checkpoint(run_dir / "checkpoint.pt")["state"]
    assert [b.ratings for b in plots.ratings] == [[r for _, r in state["tables"][str(b)]] for b in range(3)]
    assert [b.ratings for b in plots.ratings] == [pytest.approx([r for _, r in t], abs=1e-8) for t in tables]
    assert [len(b.ratings) for b in plots.ratings] == [64, 64, 8]
    assert ":".join(b.best_path for b in plots.ratings) == ":".join(chosen)  # nats-sss: one width per layer
    assert [b.best_rating for b in plots.ratings] == [min(r for _, r in state["tables"][str(b)]) for b in range(3)]
    assert [read_table(run_dir / f"block_{b}_ratings.csv") for b in range(3)] == tables


def test_tensorboard_mirrors_every_logged_scalar(search_run):
    pytest.importorskip("tensorboard")
    run_dir, _, _ = search_run
    logged = read_metrics(run_dir / METRICS_LOG)
    for b in range(3):
        steps = [r for r in logged if r["kind"] == "step" and r["block"] == b]
        for name in ("loss", "lr", "momentum", "images_per_s"):
            scalars = _tensorboard_steps(run_dir, f"block_{b}/{name}")
            assert [s for s, _ in scalars] == [3 * b + s for s in range(3)], name
            assert [v for _, v in scalars] == pytest.approx([r[name] for r in steps], rel=1e-6), name
        epoch = [r for r in logged if r["kind"] == "epoch" and r["block"] == b]
        assert _tensorboard_steps(run_dir, f"block_{b}/epoch_loss") == [(3 * b + 2, pytest.approx(epoch[0]["loss"], rel=1e-6))]


def test_tensorboard_shows_the_search_itself_rating_histograms_best_paths_and_the_choice(search_run):
    accumulator = pytest.importorskip("tensorboard.backend.event_processing.event_accumulator")
    run_dir, record, tables = search_run
    events = accumulator.EventAccumulator(str(run_dir / "tensorboard"), size_guidance={"histograms": 0, "tensors": 0})
    events.Reload()

    def text(tag):
        return [(e.step, e.tensor_proto.string_val[0].decode()) for e in events.Tensors(f"{tag}/text_summary")]

    for b, table in enumerate(tables):
        (hist,) = events.Histograms(f"block_{b}/ratings")
        ratings = [r for _, r in table]
        assert hist.step == 3 * b + 2  # the block's last training step
        h = hist.histogram_value
        assert (h.num, h.min, h.max) == (len(ratings), pytest.approx(min(ratings)), pytest.approx(max(ratings)))
        best_path, best = min(table, key=lambda row: row[1])
        assert text(f"block_{b}/best_path") == [(3 * b + 2, f"{best_path} (rating {best:.5f})")]
    (chosen,) = text("search/best_arch")
    assert chosen[1].startswith(f"{record['arch']}  rating {record['rating']:.5f}  params {record['params']:,}")


def test_plot_of_a_retraining_draws_loss_and_test_accuracy(tmp_path, monkeypatch, capsys):
    from bossnas.retrain import Retrainer, retrain_config

    config, out = retrain_config("16:16:16:16:16", ["data.image_size=16", "data.train_images=256", "train.epochs=2",
                                                    "train.batch_size=64"], out=tmp_path / "r")
    Retrainer.open(config, out, show_progress=False).run()
    code, printed, err = run_cli(monkeypatch, capsys, "plot", str(out))
    assert code == 0, err
    plots = plot_run(out)
    (curve,) = plots.curves
    logged = read_metrics(out / METRICS_LOG)
    assert curve.block is None and curve.steps == list(range(8)) == [r["step"] for r in logged if r["kind"] == "step"]
    assert curve.eval_steps == [3, 7] and curve.top1 == [r["top1"] for r in logged if r["kind"] == "eval"]
    assert curve.top1[-1] == json.loads((out / "metrics.json").read_text())["test"]["top1"]
    assert plots.ratings == [] and plots.written == [out / "loss.png"]
    assert printed.splitlines() == [f"retraining: 8 steps, loss {curve.loss[0]:.4f} -> {curve.loss[-1]:.4f}, "
                                    f"test top-1 {curve.top1[-1]:.2f}%", f"plot -> {out / 'loss.png'}"]
    assert _png_size(out / "loss.png")[1] > 2 * 250  # loss and accuracy panels


def test_plot_errors_are_one_line_naming_the_folder(search_run, tmp_path):
    run_dir, _, _ = search_run
    (tmp_path / "empty").mkdir()
    (tmp_path / "old").mkdir()
    (tmp_path / "old" / "config.yaml").write_text("space: nats-sss\n")  # a run made before metrics.jsonl
    (tmp_path / "fresh").mkdir()
    (tmp_path / "fresh" / "config.yaml").write_text("space: nats-sss\n")
    (tmp_path / "fresh" / METRICS_LOG).write_text("")
    cases = {
        tmp_path / "nowhere": f"error: run folder '{tmp_path / 'nowhere'}' does not exist",
        tmp_path / "empty": f"error: '{tmp_path / 'empty'}' is not a run folder (no checkpoint.pt or config.yaml); "
                            "give the --out folder of `bossnas run` or `bossnas retrain`",
        tmp_path / "old": f"error: the run in '{tmp_path / 'old'}' logged no training curves (no metrics.jsonl: it was made "
                          "by a bossnas before they were logged); start it over with --force to get them",
        tmp_path / "fresh": f"error: the run in '{tmp_path / 'fresh'}' has logged no training step yet; plot it once it has trained",
    }
    for folder, line in cases.items():
        res = subprocess.run([sys.executable, "-m", "bossnas", "plot", str(folder)], capture_output=True, text=True)
        assert res.returncode == 2 and res.stderr.strip().splitlines() == [line], res.stderr
    assert not list(tmp_path.rglob("*.png"))


# ------------------------------------------------------------------ adversarial pass 2026-12-02: bossnas plot input
def _copy_run(run_dir, dst):
    import shutil

    return shutil.copytree(run_dir, dst, ignore=shutil.ignore_patterns(".lock", "*.png"))


def _folder_with_log(folder, lines, search=True):
    folder.mkdir()
    (folder / "config.yaml").write_text("space: nats-sss\n" if search else "model:\n  name: nats-sss/8:8:8:8:8\n")
    (folder / METRICS_LOG).write_text("".join(json.dumps(r) + "\n" for r in lines))
    return folder


STEP = {"kind": "step", "block": 0, "epoch": 0, "step": 0, "loss": 1.5, "lr": 0.1}


@pytest.mark.parametrize("bad, why", [
    ({"kind": "step", "block": 0}, "its step is None, not a count"),
    ({**STEP, "step": 1, "block": "0"}, "its block is '0', not a block number"),
    ({**STEP, "step": 1, "loss": "x"}, "its loss is 'x', not a number"),
    ({**STEP, "step": True}, "its step is True, not a count"),
    ({"kind": "eval", "epoch": 0, "step": 0, "top5": 90.0}, "an eval record without top1"),
])
def test_adv_13_plot_refuses_a_record_it_cannot_draw_in_one_line(tmp_path, monkeypatch, capsys, bad, why):
    folder = _folder_with_log(tmp_path / "r", [STEP, bad], search="block" in bad)
    code, _, err = run_cli(monkeypatch, capsys, "plot", str(folder))
    assert code == 2 and err.strip().splitlines() == [
        f"error: '{folder / METRICS_LOG}' line 2 is not a metrics record ({why}); restore the file or start the run over"]
    assert not list(folder.glob("*.png"))


def test_adv_13_plot_draws_null_values_as_gaps(tmp_path, monkeypatch, capsys):
    # the writer itself logs a non-finite loss as null (docs/metrics.md)
    records = [{**STEP, "step": s, "loss": None if s == 1 else 2.0 - s * 0.5} for s in range(3)]
    records.append({"kind": "eval", "epoch": 0, "step": 2, "top1": None})
    folder = _folder_with_log(tmp_path / "r", [{k: v for k, v in r.items() if k != "block"} for r in records], search=False)
    code, out, err = run_cli(monkeypatch, capsys, "plot", str(folder))
    assert code == 0, err
    assert out.splitlines()[0] == "retraining: 3 steps, loss 2.0000 -> 1.0000"
    (curve,) = plot_run(folder).curves
    assert curve.loss[0] == 2.0 and math.isnan(curve.loss[1]) and len(curve.top1) == 1 and math.isnan(curve.top1[0])


def test_adv_14_22_plot_takes_the_ratings_from_the_checkpoint(search_run, tmp_path, monkeypatch, capsys):
    run_dir, record, _ = search_run
    run = _copy_run(run_dir, tmp_path / "run")
    state = load_checkpoint(run / "checkpoint.pt")["state"]
    (run / "block_0_ratings.csv").write_bytes((run / "block_0_ratings.csv").read_bytes()[:100])  # cut
    text = (run / "block_1_ratings.csv").read_text().splitlines()
    (run / "block_1_ratings.csv").write_text("\n".join(text[:2] + [text[2].rsplit(",", 1)[0] + ",nan"] + text[3:]) + "\n")
    (run / "block_2_ratings.csv").write_bytes(b"\x00\xff\xfe binary")
    code, out, err = run_cli(monkeypatch, capsys, "plot", str(run))
    assert code == 0 and "Traceback" not in err, err
    from bossnas.plot_curves import block_ratings

    assert [b.ratings for b in block_ratings(run)] == [[r for _, r in state["tables"][str(b)]] for b in range(3)]
    best = [min(state["tables"][str(b)], key=lambda row: row[1]) for b in range(3)]
    for b, (path, rating) in enumerate(best):
        assert f"block {b}: {len(state['tables'][str(b)])} paths rated, best {path} ({rating:.5f})" in out
    assert ":".join(p for p, _ in best) == record["arch"]
    # no checkpoint: no rating picture, and a line that says why
    (run / "checkpoint.pt").unlink()
    code, out, err = run_cli(monkeypatch, capsys, "plot", str(run), "--out", str(tmp_path / "again"))
    assert code == 0 and not (tmp_path / "again" / "ratings.png").exists()
    assert err.strip().splitlines() == [f"note: '{run / 'checkpoint.pt'}' is missing, and the rating tables are read "
                                        "from it: ratings.png not drawn"]


def test_adv_23_plot_draws_a_repeated_step_once_and_says_so(search_run, tmp_path, monkeypatch, capsys):
    run_dir, _, _ = search_run
    run = _copy_run(run_dir, tmp_path / "run")
    log = (run / METRICS_LOG).read_bytes()
    steps = log.count(b'"kind": "step"')
    (run / METRICS_LOG).write_bytes(log + log)  # written twice
    code, out, err = run_cli(monkeypatch, capsys, "plot", str(run))
    assert code == 0, err
    assert [line.split(",")[0] for line in out.splitlines()[:3]] == [f"block {b}: 3 steps" for b in range(3)]
    assert err.strip().splitlines() == [f"note: {steps} record(s) repeat a step logged before (a file appended twice "
                                        "or a resume that did not cut it back); each step is drawn once, from its last record"]
    from bossnas.plot_curves import loss_curves, run_records

    assert [c.steps for c in loss_curves(run_records(run))] == [[0, 1, 2]] * 3


def test_adv_39_a_binary_metrics_file_is_damage_not_an_empty_log(tmp_path, monkeypatch, capsys):
    folder = _folder_with_log(tmp_path / "r", [])
    (folder / METRICS_LOG).write_bytes(b"\x89PNG\r\x1a\x00\xff\xfe not a log")
    code, _, err = run_cli(monkeypatch, capsys, "plot", str(folder))
    assert code == 2 and err.strip().splitlines() == [
        f"error: '{folder / METRICS_LOG}' line 1 is not a metrics record; restore the file or start the run over"]
    # a cut last record (a kill mid-write) is still only left out
    (folder / METRICS_LOG).write_text(json.dumps(STEP) + "\n" + '{"kind": "step", "blo')
    assert read_metrics(folder / METRICS_LOG) == [STEP]
