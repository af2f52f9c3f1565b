"""The rating-accuracy benchmark pipeline runs end to end, over seeds, and its numbers are well-formed.

No thresholds on the noisy figures of our own ratings: only that they exist, are valid and
aggregate correctly over seeds. The baselines and the official ratings are deterministic, so
those are checked exactly.
"""

import importlib.util
import json
import os
import sys
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[1]


def _load_benchmark(script: str = "rating.py"):
    """A benchmark script as a module, under its own name, so that the scripts importing each
    other (``from rating import Universe``) share one module and its per-process caches (the
    universe of 32,768 architectures costs seconds to build)."""
    name = script.removesuffix(".py")
    if name in sys.modules:
        return sys.modules[name]
    if str(REPO / "benchmarks") not in sys.path:
        sys.path.insert(0, str(REPO / "benchmarks"))
    spec = importlib.util.spec_from_file_location(name, REPO / "benchmarks" / script)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


#: the smoke preset shrunk further: this checks the pipeline, not the figures
TINY = ["--preset", "smoke", "--quiet", "--set", "data.train_images=128", "--set", "search.rate_images=32",
        "--set", "data.image_size=8"]


@pytest.mark.slow
def test_rating_benchmark_over_seeds(shared_data, tmp_path):
    bench = _load_benchmark()
    data_dir = Path(os.environ.get("BOSSNAS_DATA", Path.home() / ".cache" / "bossnas-data"))
    out = tmp_path / "bench"
    assert bench.main([*TINY, "--data-dir", str(data_dir), "--out", str(out), "--seeds", "0"]) == 0
    first = json.loads((out / "seed-0" / "result.json").read_text())
    # a second call with one more seed reuses seed 0 as it is and adds seed 1
    assert bench.main([*TINY, "--data-dir", str(data_dir), "--out", str(out), "--seeds", "0,1"]) == 0
    assert json.loads((out / "seed-0" / "result.json").read_text()) == first
    report = json.loads((out / "report.json").read_text())
    assert report["seeds"] == [0, 1] and report["architectures"] == 32768
    seeds = report["ours"]["per_seed"]
    assert [s["seed"] for s in seeds] == [0, 1]
    for s in seeds:
        a = s["archs"]
        for key in ("kendall", "spearman", "pearson", "top10_kendall"):
            assert -1.0 <= a[key] <= 1.0, key
        assert set(a["decile"]) == {"log params", "FLOPs", "log width"}
        for cost in ("FLOPs", "params"):
            picks = a["picks"][cost]
            assert [p["fraction"] for p in picks] == [0.1, 0.25, 0.5, 1.0]
            for p in picks:
                assert 79.0 <= p["picked"] <= p["best"] <= 93.65 and p["regret"] == pytest.approx(p["best"] - p["picked"])
                assert p["cost_of_pick"] <= p["budget"]
        assert s["chosen"]["accuracy"] == a["picks"]["FLOPs"][-1]["picked"]
        assert [b["block"] for b in s["blocks"]] == [0, 1, 2]
    # mean and sd over the two seeds are those of the per-seed figures
    ms = report["ours"]["mean_sd"]
    values = [s["archs"]["spearman"] for s in seeds]
    assert ms["archs/spearman"]["mean"] == pytest.approx(np.mean(values))
    assert ms["archs/spearman"]["sd"] == pytest.approx(np.std(values, ddof=1))
    assert ms["blocks/0/partial/log width"]["n"] == 2
    # deterministic rows: the official ratings and the width prior, exactly
    official = report["baselines"]["official BossNAS ratings"]
    assert round(official["archs"]["spearman"], 3) == 0.734 and round(official["archs"]["top10_kendall"], 2) == 0.09
    assert [round(b["partial"]["log width"], 2) for b in official["blocks"]] == [0.67, 0.69, -0.26]
    widths = report["baselines"]["sum of log widths"]["archs"]
    assert round(widths["spearman"], 3) == 0.952 and round(widths["top10_kendall"], 2) == 0.46
    assert round(widths["decile"]["log width"], 2) == 0.38
    assert abs(report["baselines"]["random"]["archs"]["spearman"]) < 0.05
    # every architecture's rating is written, for bossnas correlate
    lines = (out / "seed-1" / "ratings.csv").read_text().splitlines()
    assert lines[0] == "arch,rating" and len(lines) == 32769
    assert (out / "costs.csv").read_text().splitlines()[0] == "arch,params,flops"
    md = (out / "report.md").read_text()
    assert "| official BossNAS ratings | 0.734 | 0.534 |" in md and "± " in md
    # the diagnostics recompute each block's rating from the checkpoint exactly as the run rated it
    diag = _load_benchmark("rating_diagnostics.py")
    assert diag.main(["--from", str(out), "--seeds", "0,1", "--out", str(tmp_path / "diag")]) == 0
    found = json.loads((tmp_path / "diag" / "diagnostics.json").read_text())["seeds"]
    for seed in ("0", "1"):
        assert [b["block"] for b in found[seed]] == [0, 1, 2]
        for b in found[seed]:
            # the same order; paths whose ratings differ by float32 rounding (1e-7 of 0.16 in a
            # 1-epoch smoke run) may swap, which costs ~2e-5 of Spearman over 64 paths
            assert b["official_vs_table_spearman"] == pytest.approx(1.0, abs=1e-4)
            assert b["formulas"]["official (ours)"]["spearman"] == pytest.approx(
                next(x for x in report["ours"]["per_seed"] if x["seed"] == int(seed))["blocks"][b["block"]]["spearman"], abs=0.01)
            assert -1 <= b["split_half"]["spearman"] <= 1 and -1 <= b["centrality"]["rating_vs_prediction_spread"] <= 1
        assert found[seed][1]["conditional"]["prefix"] == next(x for x in seeds if x["seed"] == int(seed))["best_paths"][:1]
    assert "Split-half reliability" in (tmp_path / "diag" / "diagnostics.md").read_text()
    # training block 1 again on top of seed 0's block 0, without overrides, gives its table back exactly;
    # another setting trains it differently
    study = _load_benchmark("block_study.py")
    assert study.main(["--from", str(out), "--block", "1", "--seeds", "0", "--out", str(tmp_path / "same")]) == 0
    again = json.loads((tmp_path / "same" / "seed-0" / "block.json").read_text())
    assert again["table"] == dict(first["tables"][1]) and again["best_path"] == first["best_paths"][1]
    assert study.main(["--from", str(out), "--block", "1", "--seeds", "0", "--out", str(tmp_path / "other-k"),
                       "--set", "train.paths_per_step=2"]) == 0
    assert json.loads((tmp_path / "other-k" / "seed-0" / "block.json").read_text())["table"] != again["table"]
    # the released code's stacking, through the last block (16x16: block 1 stacked on itself
    # ends at 2x2), with the architecture figures of the new later blocks
    assert study.main(["--from", str(out), "--block", "1", "--seeds", "0", "--out", str(tmp_path / "stacked"),
                       "--to-end", "--stack", "2", "--set", "data.image_size=16"]) == 0
    stacked = json.loads((tmp_path / "stacked" / "report.json").read_text())["per_seed"][0]
    assert [len(stacked["provisional_paths"][b]) for b in ("1", "2")] == [1, 1]
    assert -1 <= stacked["arch_spearman"] <= 1 and len(stacked["best_paths"]) == 3 and "block_2_spearman" in stacked
    # re-rating the trained runs with the same rating settings gives their tables back exactly
    again = tmp_path / "again"
    assert bench.main([*TINY, "--data-dir", str(data_dir), "--out", str(again), "--seeds", "0,1",
                       "--rerate-from", str(out)]) == 0
    for seed in (0, 1):
        original = json.loads((out / f"seed-{seed}" / "result.json").read_text())["tables"]
        rerated = json.loads((again / f"seed-{seed}" / "result.json").read_text())["tables"]
        assert rerated == original
    # other rating settings change the ratings, not the trained weights
    other = tmp_path / "other"
    assert bench.main([*TINY, "--data-dir", str(data_dir), "--out", str(other), "--seeds", "0",
                       "--rerate-from", str(out), "--ablation", "predictor-bn-fixed"]) == 0
    changed = json.loads((other / "seed-0" / "result.json").read_text())["tables"]
    assert changed[0].keys() == first["tables"][0].keys() and changed[0] != first["tables"][0]


@pytest.mark.slow
def test_rating_benchmark_seeds_side_by_side(shared_data, tmp_path, monkeypatch):
    """--jobs 2 runs each seed in its own process: the same tables as running that seed here."""
    import torch

    bench = _load_benchmark()
    data_dir = Path(os.environ.get("BOSSNAS_DATA", Path.home() / ".cache" / "bossnas-data"))
    monkeypatch.setenv("OMP_NUM_THREADS", "1")  # the workers' thread count, and ours below
    out = tmp_path / "jobs"
    # block 0 only: what is checked is that a worker's tables are this process's, not the blocks
    one_block = [*TINY, "--blocks", "1"]
    assert bench.main([*one_block, "--data-dir", str(data_dir), "--out", str(out), "--seeds", "0,1", "--jobs", "2"]) == 0
    report = json.loads((out / "report.json").read_text())
    assert [s["seed"] for s in report["ours"]["per_seed"]] == [0, 1]
    assert report["ours"]["mean_sd"]["blocks/0/spearman"]["n"] == 2
    assert all((out / f"seed-{s}" / "log.txt").is_file() for s in (0, 1))
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        here = tmp_path / "here"
        assert bench.main([*one_block, "--data-dir", str(data_dir), "--out", str(here), "--seeds", "1"]) == 0
    finally:
        torch.set_num_threads(threads)
    assert (json.loads((here / "seed-1" / "result.json").read_text())["tables"]
            == json.loads((out / "seed-1" / "result.json").read_text())["tables"])
    # a worker that fails ends the benchmark with its log, not a hang or a half report
    bad = tmp_path / "bad"
    monkeypatch.setattr(bench, "check_overrides", lambda args, extra: None)  # as if the parent had not caught it
    with pytest.raises(SystemExit, match=r"seed \d failed .*log.txt"):
        bench.main([*TINY, "--data-dir", str(data_dir), "--out", str(bad), "--seeds", "0,1", "--jobs", "2",
                    "--set", "train.epohcs=2"])
    assert "epohcs" in (bad / "seed-0" / "log.txt").read_text() and not (bad / "report.json").exists()


@pytest.mark.slow
def test_rating_benchmark_one_block(shared_data, tmp_path):
    """--blocks 1 trains and rates block 0 only and reports its per-block figures."""
    bench = _load_benchmark()
    data_dir = Path(os.environ.get("BOSSNAS_DATA", Path.home() / ".cache" / "bossnas-data"))
    out = tmp_path / "one"
    assert bench.main([*TINY, "--data-dir", str(data_dir), "--out", str(out), "--blocks", "1"]) == 0
    report = json.loads((out / "report.json").read_text())
    (seed,) = report["ours"]["per_seed"]
    assert [b["block"] for b in seed["blocks"]] == [0] and "archs" not in seed
    assert len(seed["best_paths"]) == 1
    assert -1 <= seed["blocks"][0]["partial"]["log params"] <= 1


@pytest.mark.slow
def test_hytra_defaults_benchmark_smoke(shared_data, tmp_path):
    spec = importlib.util.spec_from_file_location("hytra_bench", REPO / "benchmarks" / "hytra_defaults.py")
    bench = importlib.util.module_from_spec(spec)
    sys.path.insert(0, str(REPO / "benchmarks"))
    spec.loader.exec_module(bench)
    data_dir = Path(os.environ.get("BOSSNAS_DATA", Path.home() / ".cache" / "bossnas-data"))
    out = tmp_path / "bench"
    assert bench.main(["--preset", "smoke", "--quiet", "--threads", "1", "--data-dir", str(data_dir), "--out", str(out),
                       "--extra-old", "train.epochs=1"]) == 0
    report = json.loads((out / "report.json").read_text())
    new, old = report["variants"]["new"], report["variants"]["old"]
    assert new["paths_rated"][0] == 51 and old["paths_rated"] == [43, 80, 16, 16]
    assert old["overrides"]["model.space_options.paths"] == "static" and "model.space_options.paths" not in new["overrides"]
    for v in (new, old):
        assert v["madds_224"] > 50 * v["madds_run"]  # 224x224 against 8x8 input
        assert all((out / m).stat().st_size > 5_000 for m in v["heatmaps"]) and len(v["heatmaps"]) == 4
    assert "MAdds at 224x224" in (out / "report.md").read_text()



def test_diagnostic_formulas_rate_a_path_that_predicts_the_centre_best_and_measure_its_spread():
    import torch

    diag = _load_benchmark("rating_diagnostics.py")
    g = torch.Generator().manual_seed(0)
    target = torch.randn(5, 2, 16, 8, generator=g)  # [paths, views, images, dims]
    pred = torch.randn(5, 2, 16, 8, generator=g)
    centre = target.mean(0)
    pred[2] = centre.flip(0) * 3.0  # path 2 predicts, for each view, the other view's centre (scale is irrelevant)
    pred[4] = torch.ones(2, 16, 8)  # path 4 predicts one vector for every image
    ratings = diag.rating_formulas(target, pred)
    assert int(np.argmin(ratings["official (ours)"])) == 2 and ratings["official (ours)"][2] == pytest.approx(0.0, abs=1e-5)
    # each path's own loss: zero where the prediction is the path's own target of the other view
    pred[3] = target[3].flip(0)
    assert diag.rating_formulas(target, pred)["own BYOL loss"][3] == pytest.approx(0.0, abs=1e-5)
    # retrieval: a path predicting one vector for every image does no better than chance (log 16 a
    # view, by Jensen's inequality); the path predicting the centre does far better
    retrieval = diag.rating_formulas(target, pred)["image retrieval against the centre (InfoNCE, τ 0.1)"]
    assert retrieval[4] >= 2 * np.log(16) - 1e-4 and retrieval[2] < 2 * np.log(16) - 1.0
    spread = diag.prediction_spread(pred)
    assert spread[4] == pytest.approx(0.0, abs=1e-6) and (spread[[0, 1]] > 0.5).all()


def test_report_counts_a_resumed_seeds_earlier_calls():
    """A resumed seed's wall time is its training and rating over all calls, not the last call's."""
    bench = _load_benchmark()
    resumed = {"seed": 0, "resumed": True, "timing": {"wall_s": 12.0, "train_s": 420.0, "rate_s": 6.0}}
    assert bench._seed_wall(resumed) == "seed 0 7.1 min of training and rating (resumed: 0.2 min in the last call)"
    fresh = {"seed": 1, "resumed": False, "timing": {"wall_s": 150.0, "train_s": 140.0, "rate_s": 5.0}}
    assert bench._seed_wall(fresh) == "seed 1 2.5 min"


def test_a_learning_prefix_run_without_its_rated_copies_names_the_block_and_the_fix(tmp_path):
    """Re-rating needs each block as it was rated; a learning prefix kept training, so without
    ``rated-block-K.pt`` the final checkpoint is refused, naming the block (not a template)."""
    from types import SimpleNamespace

    bench = _load_benchmark()
    learning = SimpleNamespace(train=SimpleNamespace(prefix="online"))
    with pytest.raises(SystemExit) as stop:
        bench.rated_checkpoint(tmp_path, 1, learning, final={"unused": True})
    message = str(stop.value)
    assert "rated-block-1.pt" in message and "block 1 as it was rated" in message and "{" not in message
    frozen = SimpleNamespace(train=SimpleNamespace(prefix="frozen"))
    assert bench.rated_checkpoint(tmp_path, 1, frozen, final={"kept": 7}) == {"kept": 7}


# ------------------------------------------------------------------ adversarial pass 2026-12-02: benchmarks/rating.py
@pytest.mark.parametrize("extra, line", [
    (["--set", "train.epoch=2"], "error: unknown config key 'train.epoch' (did you mean 'train.epochs'?)"),
    (["--set", "train.epochs=abc"], "error: config key 'train.epochs': cannot read 'abc' as int"),
    (["--set", "space=hytra"], "error: --set space=...: the benchmark sets space itself; use --space"),
    (["--set", "seed=3", "--seeds", "0,1", "--jobs", "2"], "error: --set seed=...: the benchmark sets seed itself; use --seeds"),
    (["--set", "device=cuda"], "error: --set device=...: the benchmark sets device itself; use --device"),
    (["--set", "data.name=cifar100"], "error: --set data.name=...: the benchmark sets data.name itself; use nothing "
                                      "(the benchmark searches CIFAR-10)"),
    (["--rerate-from", "elsewhere", "--set", "search.rate_imagez=9"],
     "error: unknown config key 'search.rate_imagez' (did you mean 'search.rate_images'?)"),
])
def test_adv_17_26_bad_or_ignored_set_keys_are_one_line_before_anything_is_written(tmp_path, capsys, extra, line):
    bench = _load_benchmark()
    out = tmp_path / "bench"
    assert bench.main(["--preset", "smoke", "--out", str(out), "--data-dir", str(tmp_path / "data"), *extra]) == 2
    assert capsys.readouterr().err.strip().splitlines() == [line]
    assert not out.exists() and not (tmp_path / "data").exists()


#: a stand-in for one seed's worker: it says it is ready, seed 0 then signals the benchmark
#: (its parent) once seed 1 is ready too, and each waits for the signal the benchmark passes on
FAKE_WORKER = """
import os, signal, sys, time
from pathlib import Path
seed, out, signum = int(sys.argv[1]), Path(sys.argv[2]), int(sys.argv[3])
signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT, signal.SIGTERM})
(out / f"ready-{seed}").write_text("")
if seed == 0:
    while not (out / "ready-1").exists():
        time.sleep(0.01)
    os.kill(os.getppid(), signum)
got = signal.sigtimedwait({signal.SIGINT, signal.SIGTERM}, 60)
(out / f"got-{seed}").write_text(str(got.si_signo if got else 0))
sys.exit(128 + got.si_signo if got else 1)
"""


@pytest.mark.parametrize("signum", ["SIGTERM", "SIGINT"])
def test_adv_42_a_signal_to_the_benchmark_reaches_every_worker_and_ends_in_one_line(tmp_path, monkeypatch, signum):
    import signal

    from bossnas.errors import BossNASError

    bench = _load_benchmark()
    sig = getattr(signal, signum)
    (tmp_path / "worker.py").write_text(FAKE_WORKER)
    monkeypatch.setattr(bench, "worker_command",
                        lambda args, seed, out: [sys.executable, str(tmp_path / "worker.py"), str(seed), str(out), str(int(sig))])
    args = bench.argparse.Namespace(jobs=2)
    seen = []  # old code installs no handler for SIGTERM: this one keeps pytest alive and shows it
    previous = {s: signal.signal(s, lambda *a, seen=seen: seen.append(a)) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        with pytest.raises(BossNASError) as info:
            bench.run_side_by_side(args, [0, 1], tmp_path)
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)
    assert seen == []
    assert getattr(info.value, "exit_code", None) == 128 + int(sig)
    assert str(info.value) == (f"interrupted by {signum}: every running seed saved its checkpoint; run the same "
                               "command again to resume every seed")
    assert [(tmp_path / f"got-{s}").read_text() for s in (0, 1)] == [str(int(sig))] * 2  # both got it, none orphaned
