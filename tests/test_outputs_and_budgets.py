"""Issue 20 (helper 20a): the second adversarial pass's defects in search / rate / latency /
correlate / the run folder / the report, the output-file rule, one rule for every budget, the
ratings' own noise; and issue 21's latency progress, search's stdout and the end-of-run pictures.

Tests are named after the item (``test_adv_N_...``: defect N of
docs/findings/adversarial-2026-12-02.md). They share the session's finished tiny run
(``tiny_run``) and copy it where they change it; latency tables are made up (the DP and the
checks do not care what the numbers are), so nothing here measures or trains but where said.
"""

from __future__ import annotations

import errno
import json
import math
import os
import random
import signal
import tempfile

import numpy as np
import pytest
import torch
from conftest import TINY, copy_run, run_cli

from bossnas.errors import BossNASError
from bossnas.runs import SEARCH, RunFolder, check_output_file
from bossnas.search.costs import cost_table
from bossnas.search.latency import LatencyTable, measure_latency, timings_count
from bossnas.search.noise import block_noise, split_half_noise
from bossnas.search.report import run_space, tables_from_state
from bossnas.search.select import (
    Budget,
    best_within,
    cheapest_rated,
    flops_table,
    show_count,
    show_seconds,
)
from bossnas.spaces import create_space
from bossnas.train.runner import load_run
from bossnas.utils.io import load_checkpoint, save_checkpoint


# ------------------------------------------------------------------ helpers
def one_line(code: int, err: str) -> str:
    lines = err.strip().splitlines()
    assert code == 2 and len(lines) == 1 and "Traceback" not in err, err
    return lines[0]


def fake_latency(space, seed: int = 0, scale: float = 1.0) -> LatencyTable:
    """A latency table of every legal (key, path) of ``space`` with made-up times (0.2-1 ms)."""
    rng = random.Random(seed)
    seconds, spread, prev_paths = [], [], []
    for spec in space.blocks:
        table, representatives = {}, {}
        for key, prefix in space.prefixes(spec.index).items():
            prev = representatives[key] = prefix[-1] if prefix else None
            for p in space.block_paths(spec.index, prev):
                table[(key, p)] = rng.uniform(2e-4, 1e-3) * scale
        seconds.append(table)
        spread.append({e: (s, s) for e, s in table.items()})
        prev_paths.append(representatives)
    meta = {"space": space.name, "input": [space.in_channels, space.image_size, space.image_size],
            "num_classes": space.num_classes, "device": "cpu", "device_name": "made up", "batch": 1, "threads": 1,
            "space_options": {}}
    return LatencyTable(space, seconds, spread, prev_paths, meta)


@pytest.fixture(scope="module")
def tiny(tiny_run):
    """(space, rating tables, checkpoint) of the session's tiny run."""
    config, ckpt = load_run(tiny_run)
    space = run_space(config, ckpt)
    return space, tables_from_state(space, ckpt["state"]["tables"]), ckpt


@pytest.fixture
def run(tiny_run, tiny, tmp_path):
    """A copy of the tiny run to change, with a made-up CPU latency table."""
    copied = copy_run(tiny_run, tmp_path / "R")
    fake_latency(tiny[0]).write_csv(copied / "latency_cpu.csv")
    return copied


def _chosen_latency(space, run_dir) -> float:
    table = LatencyTable.read_csv(space, run_dir / "latency_cpu.csv")
    return table.latency(space.parse_arch(json.loads((run_dir / "best_arch.json").read_text())["arch"]))


# ------------------------------------------------------------------ A. data lost or mixed
def test_adv_1_rate_out_refuses_run_files(run, tmp_path, monkeypatch, capsys):
    checkpoint, config = (run / "checkpoint.pt").read_bytes(), (run / "config.yaml").read_bytes()
    line = one_line(*run_cli(monkeypatch, capsys, "rate", str(run), "--top", "3", "--out", str(run / "checkpoint.pt"))[::2])
    assert "is a file of the run in" in line and "never overwritten" in line
    line = one_line(*run_cli(monkeypatch, capsys, "rate", str(run), "--top", "2", "--costs", str(run / "config.yaml"))[::2])
    assert "--costs" in line and "never overwritten" in line
    (tmp_path / "link.csv").symlink_to(run / "checkpoint.pt")  # a link to the checkpoint is the checkpoint
    one_line(*run_cli(monkeypatch, capsys, "rate", str(run), "--top", "2", "--out", str(tmp_path / "link.csv"), "--force")[::2])
    one_line(*run_cli(monkeypatch, capsys, "rate", str(run), "--top", "2", "--out", str(run / ".." / "R" / "report.md"))[::2])
    assert (run / "checkpoint.pt").read_bytes() == checkpoint and (run / "config.yaml").read_bytes() == config
    # another existing file: only with --force; a new one, and the run's own ratings.csv, as before
    (tmp_path / "mine.csv").write_text("keep")
    line = one_line(*run_cli(monkeypatch, capsys, "rate", str(run), "--top", "2", "--out", str(tmp_path / "mine.csv"))[::2])
    assert "exists; add --force" in line and (tmp_path / "mine.csv").read_text() == "keep"
    code, _, err = run_cli(monkeypatch, capsys, "rate", str(run), "--top", "2", "--out", str(tmp_path / "mine.csv"), "--force")
    assert code == 0, err
    assert (tmp_path / "mine.csv").read_text().startswith("arch,rating\n")
    code, _, err = run_cli(monkeypatch, capsys, "rate", str(run), "--top", "2", "--out", str(run / "ratings.csv"))
    assert code == 0, err


def test_issue20_output_files_rule(tmp_path, monkeypatch):
    """check_output_file: a run's own files (search, retraining, export) never; a folder never;
    an existing file with force only; an unwritable folder before any work."""
    retrain, export = tmp_path / "T", tmp_path / "T" / "export"
    export.mkdir(parents=True)
    (retrain / "metrics.json").write_text("{}")
    (export / "model.json").write_text("{}")
    for path in (retrain / "metrics.json", retrain / "checkpoint.pt", export / "model.onnx", retrain / ".lock"):
        with pytest.raises(BossNASError, match="never overwritten"):
            check_output_file(path, "--out", force=True)
    assert check_output_file(retrain / "notes.csv", "--out") == retrain / "notes.csv"  # a new file of the user's
    (tmp_path / "plain").mkdir()
    with pytest.raises(BossNASError, match="is a folder; give a file name"):
        check_output_file(tmp_path / "plain", "--out", force=True)
    (tmp_path / "x.csv").write_text("")
    with pytest.raises(BossNASError, match="exists; add --force"):
        check_output_file(tmp_path / "x.csv", "--out")
    assert check_output_file(tmp_path / "x.csv", "--out", force=True) == tmp_path / "x.csv"
    _read_only(monkeypatch, tmp_path / "ro")
    (tmp_path / "ro").mkdir()
    with pytest.raises(BossNASError, match="read-only file system"):
        check_output_file(tmp_path / "ro" / "y.csv", "--costs")


def test_adv_2_search_out_run_keeps_the_runs_choice(run, tiny_run, tmp_path, monkeypatch, capsys):
    best, report = (run / "best_arch.json").read_bytes(), (run / "report.md").read_bytes()
    code, out, err = run_cli(monkeypatch, capsys, "search", str(run), "--max-flops", "10M", "--out", str(run))
    assert code == 0, err
    assert (run / "best_arch.json").read_bytes() == best and (run / "report.md").read_bytes() == report
    record = json.loads((run / "best_arch-max_flops=10000000.json").read_text())
    assert record["flops"] <= 10e6 and "best_arch-max_flops=10000000.json" in out
    # the folder of another run is no --out for a choice
    line = one_line(*run_cli(monkeypatch, capsys, "search", str(run), "--out", str(tiny_run))[::2])
    assert "holds another run" in line


def test_issue20_default_3_every_way_of_choosing_follows_one_rule(run, tmp_path, monkeypatch, capsys):
    best = (run / "best_arch.json").read_bytes()
    # the run's own budget again: the same file, the same choice
    assert run_cli(monkeypatch, capsys, "search", str(run))[0] == 0
    assert (run / "best_arch.json").read_bytes() == best
    assert not list(run.glob("best_arch-*.json"))
    # another budget, asked three ways, never replaces it
    for args in (["search", str(run), "--max-flops", "10M"], ["search", str(run), "--max-flops", "10M", "--out", str(run)],
                 ["run", "--resume", "--out", str(run), "search.max_flops=10M", "--quiet"]):
        code, _, err = run_cli(monkeypatch, capsys, *args)
        assert code == 0, err
        assert (run / "best_arch.json").read_bytes() == best
        assert json.loads((run / "best_arch-max_flops=10000000.json").read_text())["constraints"]["max_flops"] == 10e6
    # --out a folder of its own: best_arch.json there, and the same rule inside it
    other = tmp_path / "budgets"
    assert run_cli(monkeypatch, capsys, "search", str(run), "--max-flops", "10M", "--out", str(other))[0] == 0
    first = (other / "best_arch.json").read_bytes()
    assert run_cli(monkeypatch, capsys, "search", str(run), "--max-flops", "8M", "--out", str(other))[0] == 0
    assert (other / "best_arch.json").read_bytes() == first
    assert json.loads((other / "best_arch-max_flops=8000000.json").read_text())["flops"] <= 8e6


def test_adv_5_force_removes_latency_tables_and_pictures(tmp_path, tiny):
    folder = tmp_path / "RF"
    folder.mkdir()
    names = ["latency_cpu.csv", "latency_meta.csv", "pareto_cpu.png", "pareto_meta.png", "pareto_cpu-max_latency=3ms.png"]
    for name in [*names, "notes.txt"]:
        (folder / name).write_text("old")
    RunFolder(folder, SEARCH).clear()
    assert sorted(p.name for p in folder.iterdir()) == ["notes.txt"]
    # a table kept from a run with other space options is refused when read
    space = tiny[0]
    table = fake_latency(space)
    table.meta["space_options"] = {"width_mult": 0.25}
    table.write_csv(tmp_path / "latency_cpu.csv")
    with pytest.raises(BossNASError, match="measured with space options"):
        LatencyTable.read_csv(space, tmp_path / "latency_cpu.csv", {})
    del table.meta["space_options"]  # a table from before options were recorded: only for a run without options
    table.write_csv(tmp_path / "latency_cpu.csv")
    assert LatencyTable.read_csv(space, tmp_path / "latency_cpu.csv", {}).missing_entries() == 0
    with pytest.raises(BossNASError, match="not recorded"):
        LatencyTable.read_csv(space, tmp_path / "latency_cpu.csv", {"width_mult": 0.5})


def test_adv_6_latency_budgets_that_differ_as_typed_get_their_own_records(run, tiny, monkeypatch, capsys):
    space, tables, _ = tiny
    table = LatencyTable.read_csv(space, run / "latency_cpu.csv")
    least, _ = cheapest_rated(space, tables, table.seconds)
    limit_ms = (least + 0.7 * (_chosen_latency(space, run) - least)) * 1e3
    typed = f"{limit_ms:.6f}"
    if typed[-1] == "0":
        typed = typed[:-1] + "3"
    shorter = f"{float(typed):.6g}"  # the same to six digits: the same file name before
    assert float(typed) != float(shorter)
    for text in (typed, shorter):
        code, out, err = run_cli(monkeypatch, capsys, "search", str(run), "--max-latency", f"{text}ms")
        assert code == 0, err
    for text in (typed, shorter):
        label = f"max_latency={float(text):.12g}ms"
        record = json.loads((run / f"best_arch-{label}.json").read_text())
        assert record["constraints"]["max_latency_ms"] == float(text) and record["latency_ms"] <= float(text)
        assert f"Budget: max_latency_ms = {float(text):.12g}." in (run / f"report-{label}.md").read_text()
        # a picture per record, linked from its report
        assert (run / f"pareto_cpu-{label}.png").stat().st_size > 10_000
        assert f"(pareto_cpu-{label}.png)" in (run / f"report-{label}.md").read_text()


# ------------------------------------------------------------------ B. one line, not a traceback
@pytest.mark.parametrize("device", ["gpu", "CUDA", "", "cuda:-1", "mps", "meta", " cpu", "cuda:x"])
def test_adv_7_19_latency_devices_other_than_cpu_and_cuda_are_one_line(run, device, monkeypatch, capsys):
    monkeypatch.setattr("bossnas.search.latency.measure_latency", _never)
    code, out, err = run_cli(monkeypatch, capsys, "latency", str(run), "--device", device, "--force")
    assert "is not a latency device; expected cpu, cuda or cuda:N" in one_line(code, err) and out == ""
    code, _, err = run_cli(monkeypatch, capsys, "search", str(run), "--max-latency", "3ms", "--latency-device", device)
    assert "--latency-device" in one_line(code, err)


def test_adv_19_meta_tensors_are_not_measured(tiny):
    with pytest.raises(BossNASError, match="cannot measure latency on 'meta'"):
        measure_latency(tiny[0], "meta", rounds=1)


def test_adv_7_cuda_without_cuda_is_one_line(run, monkeypatch, capsys):
    monkeypatch.setattr("torch.cuda.is_available", lambda: False)
    line = one_line(*run_cli(monkeypatch, capsys, "latency", str(run), "--device", "cuda:0", "--force")[::2])
    assert "CUDA is not available" in line


def _never(*args, **kwargs):
    raise AssertionError("measured although the command should have stopped before")


def test_adv_8_41_latency_batch_threads_statistic_are_checked_before_measuring(run, tiny, monkeypatch, capsys):
    monkeypatch.setattr("bossnas.search.latency.measure_latency", _never)
    code, out, err = run_cli(monkeypatch, capsys, "latency", str(run), "--force", "--batch", "1000000000")
    assert "--batch 1000000000 is too large" in one_line(code, err) and out == ""
    code, out, err = run_cli(monkeypatch, capsys, "latency", str(run), "--force", "--threads", "100000")
    assert f"more than the {os.cpu_count()} CPUs here" in one_line(code, err) and out == ""
    code, out, err = run_cli(monkeypatch, capsys, "latency", str(run), "--force", "--statistic", "mean")
    assert "--statistic 'mean'" in one_line(code, err) and out == ""  # no "measuring ..." header first (41)
    from bossnas.search.latency import check_latency_batch

    check_latency_batch(tiny[0], 2, torch.device("cpu"), memory=10**6)  # a few kB of block inputs fit
    with pytest.raises(BossNASError, match="the largest batch that fits them is"):
        check_latency_batch(tiny[0], 10**6, torch.device("cpu"), memory=10**6)


def _read_only(monkeypatch, folder):
    """Make ``folder`` read-only for this process's writers (root ignores permission bits)."""
    real = tempfile.mkstemp

    def mkstemp(*args, dir=None, **kwargs):
        if dir is not None and os.path.realpath(dir).startswith(os.path.realpath(folder)):
            raise OSError(errno.EROFS, os.strerror(errno.EROFS), str(dir))
        return real(*args, dir=dir, **kwargs)

    monkeypatch.setattr(tempfile, "mkstemp", mkstemp)


def test_adv_9_latency_on_a_read_only_run_folder_stops_before_measuring(run, monkeypatch, capsys):
    (run / "latency_cpu.csv").unlink()
    monkeypatch.setattr("bossnas.search.latency.measure_latency", _never)
    _read_only(monkeypatch, run)
    code, out, err = run_cli(monkeypatch, capsys, "latency", str(run))
    assert "read-only file system" in one_line(code, err) and out == ""


def _edited(run, space, edit) -> str:
    """The one-line error of `search --max-latency` against the run's table after ``edit(lines)``."""
    path = run / "latency_cpu.csv"
    fake_latency(space).write_csv(path)
    lines = path.read_text().splitlines()
    edit(lines)
    path.write_text("\n".join(lines) + "\n")
    with pytest.raises(BossNASError) as info:
        LatencyTable.read_csv(space, path)
    return str(info.value)


def _data_line(lines, block=0):
    return next(i for i, line in enumerate(lines) if line.startswith(f"{block},"))


@pytest.mark.parametrize("case, expected", [
    ("header not JSON", "is not 'key: JSON value'"),
    ("device gpu", "header device 'gpu'"),
    ("nan", "each must be a finite number > 0"),
    ("inf", "each must be a finite number > 0"),
    ("negative", "each must be a finite number > 0"),
    ("zero", "each must be a finite number > 0"),
    ("duplicate", "is already on line"),
    ("block -1", "block -1 is not one of"),
    ("block 3", "block 3 is not one of"),
])
def test_adv_10_20_damaged_or_impossible_latency_tables_are_one_line(run, tiny, case, expected):
    space = tiny[0]

    def edit(lines):
        i = _data_line(lines)
        block, prev, path, *_ = lines[i].split(",")
        if case == "header not JSON":
            lines.insert(0, "# batch 1")
        elif case == "device gpu":
            lines[next(k for k, line in enumerate(lines) if line.startswith("# device:"))] = '# device: "gpu"'
        elif case in ("nan", "inf", "negative", "zero"):
            value = {"nan": "nan", "inf": "inf", "negative": "-100", "zero": "0"}[case]
            lines[i] = f"{block},{prev},{path},{value},1,1"
        elif case == "duplicate":
            lines.append(f"{block},{prev},{path},0.01,0.01,0.01")
        else:
            last = lines[_data_line(lines, 2)].split(",")
            lines.append(f"{case.split()[1]},{last[1]},{last[2]},0.01,0.01,0.01")

    message = _edited(run, space, edit)
    assert expected in message and "\n" not in message
    assert "bossnas latency" in message and "--force" in message  # the command that measures it again (31)


def test_adv_10_binary_latency_table_and_nan_choice_leave_nothing_written(run, tiny, monkeypatch, capsys):
    (run / "latency_cpu.csv").write_bytes(bytes(range(256)) * 4)
    line = one_line(*run_cli(monkeypatch, capsys, "search", str(run), "--max-latency", "3ms")[::2])
    assert "not text" in line
    _edited(run, tiny[0], lambda lines: lines.__setitem__(_data_line(lines), "0,,8:8,nan,1,1"))
    line = one_line(*run_cli(monkeypatch, capsys, "search", str(run), "--max-latency", "0.9ms")[::2])
    assert "finite number > 0" in line
    assert not list(run.glob("best_arch-*")) and not list(run.glob("pareto_*"))


def test_adv_33_search_rate_latency_on_a_retraining_folder_say_what_it_is(tmp_path, monkeypatch, capsys):
    done, running = tmp_path / "T", tmp_path / "T2"
    done.mkdir()
    (done / "metrics.json").write_text("{}")
    (done / "config.yaml").write_text("model:\n  name: x\n")
    save_checkpoint(done / "checkpoint.pt", {"kind": "retrain", "config": {"model": {"name": "x"}}})
    running.mkdir()  # a retraining whose metrics.json is not written yet
    save_checkpoint(running / "checkpoint.pt", {"kind": "retrain", "config": {"model": {"name": "x"}}})
    for folder in (done, running):
        for command in (["search"], ["rate"], ["latency"]):
            line = one_line(*run_cli(monkeypatch, capsys, *command, str(folder))[::2])
            assert "is a `bossnas retrain` folder, not a search run folder" in line, line


def test_adv_34_rate_takes_the_space_prefixed_form(run, tiny, monkeypatch, capsys):
    space, tables, _ = tiny
    arch = space.format_arch(tuple(next(iter(t)) for t in tables))
    code, out, err = run_cli(monkeypatch, capsys, "rate", str(run), f"nats-sss/{arch}")
    assert code == 0, err
    assert out.split() == [arch, f"{sum(t[p] for t, p in zip(tables, space.parse_arch(arch))):.6f}"]
    line = one_line(*run_cli(monkeypatch, capsys, "rate", str(run), f"hytra/{arch}")[::2])
    assert line == f"error: 'hytra/{arch}' is an architecture of 'hytra', not of this run's 'nats-sss'"


def test_adv_35_a_file_given_as_the_run_folder_says_so(run, tmp_path, monkeypatch, capsys):
    record = run / "best_arch.json"
    for command in ("latency", "plot", "search", "rate"):
        line = one_line(*run_cli(monkeypatch, capsys, command, str(record))[::2])
        assert f"'{record}' is a file, not a run folder" in line and "does not exist" not in line, line
    line = one_line(*run_cli(monkeypatch, capsys, "correlate", str(record), str(run))[::2])
    assert f"'{run}' is a folder, not a CSV file" in line and "bossnas rate" in line


def test_adv_36_unfinished_search_hints_agree(tmp_path, monkeypatch, capsys):
    from bossnas.config import load_config
    from bossnas.train.runner import BlockwiseSearch

    started = BlockwiseSearch.open(load_config("quickstart", TINY), tmp_path / "RF", show_progress=False)
    started.folder.unlock()
    hint = f"`bossnas run --resume --out {tmp_path / 'RF'}`"
    for command in ("search", "retrain"):
        line = one_line(*run_cli(monkeypatch, capsys, command, str(tmp_path / "RF"))[::2])
        assert hint in line and "bossnas train" not in line and "bossnas search" not in line, line


# ------------------------------------------------------------------ C / D. messages
def test_adv_30_an_infinite_latency_budget_is_called_infinite(run, monkeypatch, capsys):
    line = one_line(*run_cli(monkeypatch, capsys, "search", str(run), "--max-latency", "1e400ms")[::2])
    assert "'1e400ms' is not finite" in line and "> 0" not in line


def test_adv_31_missing_table_hint_names_the_device(run, monkeypatch, capsys):
    line = one_line(*run_cli(monkeypatch, capsys, "search", str(run), "--max-latency", "3ms", "--latency-device", "cuda")[::2])
    assert f"measure one with `bossnas latency {run} --device cuda`" in line


def test_adv_32_over_budget_names_the_option_given_and_only_the_one_to_raise(run, tiny, monkeypatch, capsys):
    space, tables, _ = tiny
    line = one_line(*run_cli(monkeypatch, capsys, "search", str(run), "--max-flops", "1k", "--max-latency", "3ms")[::2])
    flops = flops_table(cost_table(space))
    least_flops, arch = cheapest_rated(space, tables, flops)
    assert f"--max-flops 1k is below the {show_count(least_flops)} of the cheapest ({space.format_arch(arch)})" in line
    assert "search.max_flops" not in line and "--max-latency" not in line
    # each budget alone is met, both together are not: say so, not "raise both above"
    latency = LatencyTable.read_csv(space, run / "latency_cpu.csv")
    (f_least, f_arch), (l_least, l_arch) = cheapest_rated(space, tables, flops), cheapest_rated(space, tables, latency.seconds)
    assert f_arch != l_arch
    budgets = [Budget("--max-flops", flops, f_least), Budget("--max-latency", latency.seconds, l_least, show_seconds)]
    with pytest.raises(BossNASError, match="fits --max-flops .* and --max-latency .* together; each alone is met"):
        best_within(space, tables, budgets)


def test_adv_24_38_34_correlate_block_tables_and_prefixes(tmp_path, monkeypatch, capsys):
    blocks = [["8:8", "8:16", "16:8"], ["8:8", "16:16"], ["8", "16", "24"]]
    rng = random.Random(0)
    ratings = {(b, p): rng.random() for b, paths in enumerate(blocks) for p in paths}
    archs = [f"{a}:{b}:{c}" for a in blocks[0] for b in blocks[1] for c in blocks[2]]
    truth = tmp_path / "truth.csv"
    truth.write_text("arch,accuracy\n" + "".join(f"{a},{rng.random()}\n" for a in archs))

    def table(rows):
        path = tmp_path / "scores.csv"
        path.write_text("block,path,rating\n" + "".join(f"{b},{p},{r}\n" for (b, p), r in rows.items()))
        return path

    code, out, err = run_cli(monkeypatch, capsys, "correlate", str(table(ratings)), str(truth))
    assert code == 0 and "architectures: 18" in out and out.count("Spearman vs marginal accuracy") == 3, err
    # 24: one mistyped path used to drop its block's figure (and its architectures) without a word
    typo = {((b, "8:17") if (b, p) == (0, "8:16") else (b, p)): r for (b, p), r in ratings.items()}
    line = one_line(*run_cli(monkeypatch, capsys, "correlate", str(table(typo)), str(truth))[::2])
    assert "block 0 path '8:17' is in no architecture of" in line
    # 38: a block table without its last block
    line = one_line(*run_cli(monkeypatch, capsys, "correlate", str(table({k: v for k, v in ratings.items() if k[0] < 2})),
                             str(truth))[::2])
    assert "is a block table of 2 block(s)" in line and "is a block missing" in line
    # 34: space-prefixed names match bare ones; another space's do not
    flat = tmp_path / "flat.csv"
    flat.write_text("arch,rating\n" + "".join(f"nats-sss/{a},{rng.random()}\n" for a in archs))
    code, out, err = run_cli(monkeypatch, capsys, "correlate", str(flat), str(truth))
    assert code == 0 and "architectures: 18" in out, err
    (tmp_path / "other.csv").write_text("arch,accuracy\n" + "".join(f"hytra/{a},{rng.random()}\n" for a in archs))
    line = one_line(*run_cli(monkeypatch, capsys, "correlate", str(flat), str(tmp_path / "other.csv"))[::2])
    assert "different spaces" in line


# ------------------------------------------------------------------ signals and progress of `latency`
def _fake_measure(ticks: int, then=None):
    def measure(space, device, batch, threads, rounds, statistic, tick=None, progress=None, space_options=None):
        for _ in range(ticks):
            tick(0)
        if then is not None:
            then()
        return fake_latency(space)
    return measure


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_adv_29_latency_interrupted_prints_one_line_and_keeps_the_table(run, tiny, sig, monkeypatch, capsys):
    before = (run / "latency_cpu.csv").read_bytes()
    monkeypatch.setattr("bossnas.search.latency.measure_latency", _fake_measure(5, lambda: signal.raise_signal(sig)))
    code, _, err = run_cli(monkeypatch, capsys, "latency", str(run), "--force", "--rounds", "1")
    lines = err.strip().splitlines()
    assert code == 128 + sig and "Traceback" not in err
    assert lines[-1] == (f"error: interrupted by {signal.Signals(sig).name} while timing block 0 (5 of "
                         f"{timings_count(tiny[0], 1)} timings); "
                         f"'{run / 'latency_cpu.csv'}' is as it was; run the same command again")
    assert (run / "latency_cpu.csv").read_bytes() == before and not list(run.glob(".*.tmp"))
    assert signal.getsignal(signal.SIGINT) is not None  # the handlers were put back


def test_issue21_5_latency_shows_a_progress_bar_over_every_timing(run, tiny, monkeypatch, capsys):
    space = tiny[0]
    total = timings_count(space, 2)
    monkeypatch.setattr("bossnas.search.latency.measure_latency", _fake_measure(total))
    code, out, err = run_cli(monkeypatch, capsys, "latency", str(run), "--force", "--rounds", "2")
    assert code == 0, err
    assert f"latency: {total}/{total} in" in err and "timing/s" in err
    # the real measurement calls it once per timing: a warm-up and each round of every entry
    small = create_space("nasbench-macro", in_channels=1, image_size=8, num_classes=10)
    ticks = []
    measure_latency(small, "cpu", threads=1, rounds=1, tick=ticks.append)
    assert len(ticks) == timings_count(small, 1) and sorted(set(ticks)) == list(range(len(small.blocks)))


# ------------------------------------------------------------------ issue 20 default 4: the ratings' noise
def test_issue20_default_4_split_half_noise_is_the_error_of_a_difference():
    rng = np.random.default_rng(0)
    # 40 paths rated on 2 x 500 images whose per-image loss has sd 1: a difference of two ratings
    # (means over 1000 images) has standard error sqrt(2 / 1000)
    losses = rng.normal(0, 1, size=(40, 1000))
    halves = [(row[:500].mean(), row[500:].mean()) for row in losses]
    assert split_half_noise(halves) == pytest.approx(math.sqrt(2 / 1000), rel=0.25)
    assert split_half_noise(halves[:2]) is None
    table = {p: float(r.mean()) for p, r in enumerate(losses)}
    noise = block_noise(0, table, dict(enumerate(halves)))
    assert noise.best == min(table, key=table.get)
    assert noise.ties == sorted((p for p in table if p != noise.best and table[p] - table[noise.best] < 2 * noise.noise),
                                key=table.get)
    clear = {0: 0.0, 1: 1.0, 2: 2.0, 3: 3.0}
    assert block_noise(0, clear, {p: (r, r + 0.01 * p) for p, r in clear.items()}).ties == []


def _with_halves(run, spread: float):
    """Rewrite the run's checkpoint with half ratings spread by ``spread`` around each rating."""
    ckpt = load_checkpoint(run / "checkpoint.pt")
    state = ckpt["state"]
    state["rating_halves"] = {b: [[r + spread * (-1) ** i * (i % 3), r - spread * (-1) ** i * (i % 3)]
                                  for i, (_, r) in enumerate(rows)] for b, rows in state["tables"].items()}
    save_checkpoint(run / "checkpoint.pt", {k: v for k, v in ckpt.items() if k != "format"})


def test_issue20_default_4_noise_is_measured_at_rating_and_warned_about(tiny_run, run, monkeypatch, capsys):
    state = load_checkpoint(tiny_run / "checkpoint.pt")["state"]
    for b, rows in state["tables"].items():  # 24 rating images: two halves of 12, whose mean is the rating
        halves = state["rating_halves"][b]
        assert len(halves) == len(rows)
        assert [(a + c) / 2 for a, c in halves] == pytest.approx([r for _, r in rows], abs=1e-6)
    assert "noise (split-half)" in (tiny_run / "report.md").read_text()
    _with_halves(run, 1.0)  # noise far above every gap: every block's best is tied with the rest
    code, out, err = run_cli(monkeypatch, capsys, "search", str(run))
    assert code == 0 and "cannot tell the best path from the next ones" in err and "block 2 (7 more path(s))" in err, err
    report = (run / "report.md").read_text()
    assert "**Warning: the ratings cannot tell the best path from the next ones**" in report
    _with_halves(run, 0.0)  # no noise: nothing to warn about
    code, out, err = run_cli(monkeypatch, capsys, "search", str(run))
    assert code == 0 and "cannot tell" not in err + (run / "report.md").read_text()


# ------------------------------------------------------------------ the report ("also seen", issue 21 item 12)
def test_issue20_hytra_report_table_has_its_rows_and_names_k_and_both_resolutions(tmp_path):
    from bossnas.config import load_config
    from bossnas.search.report import select, write_best_arch, write_report

    config = load_config(None, ["space=hytra", "model.space_options.width_mult=0.0625", "data.image_size=32"])
    space = create_space("hytra", in_channels=3, image_size=32, num_classes=10, width_mult=0.0625)
    rng = random.Random(1)
    tables, best = [], None
    for spec in space.blocks:
        paths = space.block_paths(spec.index, best)
        tables.append({p: rng.random() for p in paths})
        best = min(tables[-1], key=tables[-1].get)
    state = {"tables": {str(b): [[space.format_path(p), r] for p, r in t.items()] for b, t in enumerate(tables)},
             "best_paths": [space.format_path(min(t, key=t.get)) for t in tables]}
    record = write_best_arch(tmp_path, space, select(space, tables, None, None), config, None, None)
    lines = write_report(tmp_path, space, config, state, tables, record).splitlines()
    header = lines.index("| rank | architecture | rating | gap to rank 1 | noise of the gap |")
    assert lines[header + 1].startswith("|---") and [line[:4] for line in lines[header + 2: header + 7]] == [
        f"| {i} " for i in range(1, 6)]
    assert "legal architectures" in "\n".join(lines[:header])  # the rule's sentence comes before the table
    text = "\n".join(lines)
    assert "all candidates" not in text and "K = 4 / 4 / 4 / 4 per block, the default (uniform sampling)" in text
    side = space.resolutions[1]
    assert f"`@28` = {side}x{side}" in text and "224 x 224" in text and "32x32 input" in text


# ------------------------------------------------------------------ issue 21: stdout, pictures
def test_issue21_8_search_prints_its_result_on_stdout(run, monkeypatch, capsys):
    code, out, err = run_cli(monkeypatch, capsys, "search", str(run), "--max-flops", "10M")
    assert code == 0 and out.startswith("chosen architecture ") and "chosen architecture" not in err


def test_issue21_11_run_writes_and_links_its_pictures(tiny_run):
    report = (tiny_run / "report.md").read_text()
    for name in ("loss.png", "ratings.png"):
        assert (tiny_run / name).read_bytes().startswith(b"\x89PNG") and f"[`{name}`]({name})" in report
    assert "`pareto_cpu.png` (written by `bossnas latency" in report


def test_issue21_11_train_writes_its_pictures(tiny_run, tmp_path, monkeypatch, capsys):
    from bossnas.commands import train as train_command
    from bossnas.utils.progress import make_console

    copied = copy_run(tiny_run, tmp_path / "R")
    for name in ("loss.png", "ratings.png"):
        (copied / name).unlink()
    monkeypatch.setattr(train_command, "_train", lambda *a, **k: (None, None, copied, make_console()))
    code, _, err = run_cli(monkeypatch, capsys, "train", "--out", str(copied))
    assert code == 0, err
    assert (copied / "loss.png").is_file() and (copied / "ratings.png").is_file() and "pictures:" in err


def test_issue21_11_ratings_picture_has_no_offset_and_its_legend_beside_the_bars(tiny_run):
    from bossnas.curves import read_metrics
    from bossnas.plot_curves import BlockRatings, loss_curves, loss_figure, ratings_figure

    # ratings 1.59432-1.59443, as in the HyTra run that drew "+1.594"
    rng = random.Random(0)
    values = [1.59432 + 1.1e-4 * rng.random() for _ in range(60)]
    fig = ratings_figure([BlockRatings(0, values, "a", min(values))], "t")
    fig.canvas.draw()
    ax = fig.axes[0]
    assert ax.xaxis.get_major_formatter().get_offset() == ""
    labels = [t.get_text() for t in ax.get_xticklabels() if t.get_text()]
    assert labels and all(label.replace("−", "-").startswith("1.594") for label in labels)
    legend = ax.get_legend().get_window_extent()
    assert legend.x0 >= ax.get_window_extent().x1  # beside the axes: over no bar
    loss = loss_figure(loss_curves(read_metrics(tiny_run / "metrics.jsonl")), "t")
    assert all(a.get_yscale() == "log" for a in loss.axes if a.get_ylabel().endswith("(log)"))
    assert sum(a.get_ylabel().endswith("loss (log)") for a in loss.axes) == 3
