"""Latency tables, latency budgets (exact DP) and the shared interleaved timing."""

import itertools
import json

import numpy as np
import pytest
from conftest import FakeClock, copy_run, run_cli

from bossnas.errors import BossNASError
from bossnas.search.latency import LatencyTable, measure_latency, parse_duration
from bossnas.search.select import Budget, best_within, pareto_front, show_seconds
from bossnas.spaces import create_space
from bossnas.utils.timing import Spread, interleaved_times, ratio_spread


@pytest.fixture(scope="module")
def space():
    return create_space("nats-sss", in_channels=1, image_size=8, num_classes=10)


def _fake_table(space, seed=0) -> LatencyTable:
    """A latency table with made-up seconds: the DP must be exact whatever the numbers."""
    rng = np.random.default_rng(seed)
    seconds, spread, prev_paths, keys = [], [], [], {None: None}
    for spec in space.blocks:
        paths = space.block_paths(spec.index)
        table = {(k, p): float(rng.uniform(1e-4, 1e-3)) for k in keys for p in paths}
        seconds.append(table)
        spread.append({e: (s * 0.9, s * 1.2) for e, s in table.items()})
        prev_paths.append(dict(keys))
        keys = {}
        for p in paths:
            keys.setdefault(space.boundary_key(spec.index, p), p)
    return LatencyTable(space, seconds, spread, prev_paths, {"device": "cpu", "batch": 1})


@pytest.fixture(scope="module")
def brute(space):
    """(rating, latency, arch) of every architecture of the space, by enumeration."""
    rng = np.random.default_rng(1)
    tables = [{p: float(rng.normal()) for p in space.block_paths(b.index)} for b in space.blocks]
    latency = _fake_table(space)
    rows = [(sum(t[p] for t, p in zip(tables, arch)), latency.latency(arch), arch)
            for arch in itertools.product(*(space.block_paths(b.index) for b in space.blocks))]
    return tables, latency, rows


@pytest.mark.parametrize("fraction", [0.2, 0.45, 0.7, 1.0])
def test_latency_budget_choice_is_exact(space, brute, fraction):
    tables, latency, rows = brute
    low, high = min(r[1] for r in rows), max(r[1] for r in rows)
    limit = low + (high - low) * fraction
    expected = min((r for r in rows if r[1] <= limit), key=lambda r: r[0])
    choice, (cost,) = best_within(space, tables, [Budget("--max-latency", latency.seconds, limit)])
    assert choice.arch == expected[2]
    assert choice.rating == pytest.approx(expected[0])
    assert cost == pytest.approx(latency.latency(choice.arch)) and cost <= limit


def test_latency_and_flops_budgets_together_are_exact(space, brute):
    from bossnas.search.costs import BlockCostTable
    from bossnas.search.select import best_constrained

    tables, latency, rows = brute
    costs = BlockCostTable(space)
    max_flops = float(np.median([costs.cost(a).flops for *_, a in rows[::37]]))
    limit = float(np.median([r[1] for r in rows]))
    feasible = [r for r in rows if r[1] <= limit and costs.cost(r[2]).flops <= max_flops]
    expected = min(feasible, key=lambda r: r[0])
    got = best_constrained(space, tables, costs, max_flops, None, [Budget("--max-latency", latency.seconds, limit)])
    assert got.arch == expected[2] and got.cost.flops <= max_flops


def test_pareto_front_matches_brute_force(space, brute):
    tables, latency, rows = brute
    front = pareto_front(space, tables, latency.seconds)
    best_so_far, expected = np.inf, []
    for rating, _seconds, arch in sorted(rows, key=lambda r: (r[1], r[0])):
        if rating < best_so_far:
            expected.append(arch)
            best_so_far = rating
    assert [a for _, _, a in front] == expected
    assert all(a[0] < b[0] and a[1] > b[1] for a, b in zip(front, front[1:]))


def test_adv_21_over_budget_message_names_the_fastest_real_architecture_in_ms(space, brute):
    tables, latency, rows = brute
    fastest = min(rows, key=lambda r: r[1])
    budget = [Budget("--max-latency", latency.seconds, fastest[1] * 0.5, show_seconds)]
    with pytest.raises(BossNASError) as info:
        best_within(space, tables, budget)
    message = str(info.value)
    # the bound is the fastest architecture there is (by enumeration), in the unit the option takes, rounded up
    shown = show_seconds(fastest[1])
    assert f"below the {shown} of the cheapest ({space.format_arch(fastest[2])}); raise --max-latency to at least {shown}" in message
    assert "\n" not in message and parse_duration(shown) >= fastest[1] > parse_duration(shown) * 0.999
    # the old bound (each block's cheapest entry, whatever boundary it needs) lies below every architecture
    assert sum(min(t.values()) for t in latency.seconds) < fastest[1]
    # a budget at the bound it names is met, by exactly the fastest architecture
    choice, (spent,) = best_within(space, tables, [Budget("--max-latency", latency.seconds, parse_duration(shown))])
    assert spent == pytest.approx(fastest[1]) and choice.arch == fastest[2]


def test_csv_round_trip(space, tmp_path):
    table = _fake_table(space, seed=3)
    table.meta.update(batch=4, threads=2, method="made up")
    path = table.write_csv(tmp_path / "latency_cpu.csv")
    back = LatencyTable.read_csv(space, path)
    assert back.meta["batch"] == 4 and back.meta["method"] == "made up"
    assert back.seconds[1].keys() == table.seconds[1].keys()
    for b in range(len(space.blocks)):
        for entry, seconds in table.seconds[b].items():
            assert back.seconds[b][entry] == pytest.approx(seconds, abs=1e-9)
            assert back.spread[b][entry] == pytest.approx(table.spread[b][entry], abs=1e-9)
    arch = space.parse_arch("64:40:48:64:56")
    assert back.latency(arch) == pytest.approx(table.latency(arch), abs=1e-8)
    # a table of another space, a cut file and a missing file are one-line errors
    other = create_space("nats-sss", in_channels=1, image_size=8, num_classes=10)
    lines = path.read_text().splitlines()
    (tmp_path / "cut.csv").write_text("\n".join(lines[:-5]) + "\n")
    with pytest.raises(BossNASError, match="lacks 5 entries"):
        LatencyTable.read_csv(other, tmp_path / "cut.csv")
    (tmp_path / "bad.csv").write_text("block,prev_path,path,ms,min_ms,max_ms\n0,,8:99,1,1,1\n")
    with pytest.raises(BossNASError, match="is not a latency table"):
        LatencyTable.read_csv(other, tmp_path / "bad.csv")
    with pytest.raises(BossNASError, match="bossnas latency"):
        LatencyTable.read_csv(other, tmp_path / "none" / "latency_cpu.csv")
    # the same paths at another input size: every entry is there, but the times are of other shapes
    table.meta.update(space="nats-sss", input=[1, 8, 8])
    table.write_csv(tmp_path / "sized.csv")
    assert LatencyTable.read_csv(space, tmp_path / "sized.csv").missing_entries() == 0
    bigger = create_space("nats-sss", in_channels=1, image_size=16, num_classes=10)
    with pytest.raises(BossNASError, match=r"measured for nats-sss at input \[1, 8, 8\], not nats-sss at \[1, 16, 16\]"):
        LatencyTable.read_csv(bigger, tmp_path / "sized.csv")


def test_measured_table_covers_every_entry(space):
    table = measure_latency(space, "cpu", batch=2, threads=1, rounds=2)
    assert table.missing_entries() == 0
    assert len(table.seconds[0]) == len(space.block_paths(0))
    assert len(table.seconds[1]) == len(space.block_paths(1)) * 8  # after each of the 8 widths block 0 ends with
    for b, t in enumerate(table.seconds):
        for entry, seconds in t.items():
            low, high = table.spread[b][entry]
            assert 0 < low <= seconds <= high < 1.0
    assert table.meta["batch"] == 2 and table.meta["threads"] == 1 and table.meta["rounds"] == 2


@pytest.mark.parametrize("text, seconds", [("3ms", 3e-3), ("800us", 8e-4), ("0.5 s", 0.5), ("2.5e-1ms", 2.5e-4)])
def test_parse_duration(text, seconds):
    assert parse_duration(text) == pytest.approx(seconds)


@pytest.mark.parametrize("text", ["3", "fast", "-1ms", "0ms", "3 min"])
def test_parse_duration_errors(text):
    with pytest.raises(BossNASError, match="--max-latency"):
        parse_duration(text)


def test_interleaved_times_measure_what_they_time():
    # each function "takes" an exact time on a clock only the functions advance: the
    # measurement arithmetic (calls per measurement, per-call seconds, ratios) is checked
    # exactly, without sleeping on a machine whose load would decide the outcome
    clock = FakeClock()
    calls = []

    def takes(seconds):
        def fn():
            calls.append(seconds)
            clock.advance(seconds)
        return fn

    short, long = interleaved_times([takes(0.001), takes(0.003)], rounds=3, threads=1, warmup=1,
                                    clock=clock.perf_counter)
    assert len(short) == len(long) == 3
    assert short == pytest.approx([0.001] * 3, rel=1e-9) and long == pytest.approx([0.003] * 3, rel=1e-9)
    spread = ratio_spread(long, short)
    assert spread.median == pytest.approx(3.0, rel=1e-9) and spread.trusted
    assert spread.low <= spread.median <= spread.high
    # a measurement repeats the call until it lasts MIN_MEASUREMENT_S: the short one more often
    assert calls.count(0.001) > calls.count(0.003)


def test_spread_flags_wide_rounds():
    assert Spread.of([1.0, 1.02, 0.99]).trusted
    wide = Spread.of([3.10, 0.51, 1.10])  # the rating ratios of the busy-machine run
    assert not wide.trusted and wide.median == pytest.approx(1.10) and "too wide" in str(wide)


def test_latency_command_and_search_under_latency(tiny_run, tmp_path, monkeypatch, capsys):
    run = copy_run(tiny_run, tmp_path / "run")
    code, _, err = run_cli(monkeypatch, capsys, "search", str(run), "--max-latency", "3ms")
    assert code == 2 and "bossnas latency" in err and len(err.strip().splitlines()) == 1
    code, out, err = run_cli(monkeypatch, capsys, "latency", str(run), "--rounds", "1", "--threads", "1")
    assert code == 0, err
    assert (run / "latency_cpu.csv").is_file() and (run / "pareto_cpu.png").stat().st_size > 10_000
    assert "chosen architecture" in out
    code, _, err = run_cli(monkeypatch, capsys, "latency", str(run))
    assert code == 2 and "exists; add --force" in err
    space = create_space("nats-sss", in_channels=1, image_size=8, num_classes=10)
    table = LatencyTable.read_csv(space, run / "latency_cpu.csv")
    unconstrained = json.loads((run / "best_arch.json").read_text())
    limit = table.latency(space.parse_arch(unconstrained["arch"])) * 0.8
    code, out, err = run_cli(monkeypatch, capsys, "search", str(run), "--max-latency", f"{limit * 1e6:.1f}us")
    assert code == 0, err
    # a budget other than the run's own writes its own record, named after the budget in ms
    label = f"max_latency={float(f'{limit * 1e6:.1f}') / 1e3:g}ms"
    written = run / f"best_arch-{label}.json"
    assert json.loads((run / "best_arch.json").read_text()) == unconstrained
    record = json.loads(written.read_text())
    assert record["latency_ms"] <= limit * 1e3 + 1e-6 and record["arch"] != unconstrained["arch"]
    assert record["rating"] >= unconstrained["rating"]
    assert record["constraints"]["max_latency_ms"] == pytest.approx(float(f"{limit * 1e6:.1f}") / 1e3)
    assert "Latency (sum of the measured block table" in (run / f"report-{label}.md").read_text()
    code, _, err = run_cli(monkeypatch, capsys, "search", str(run), "--max-latency", "1us")
    assert code == 2 and "raise --max-latency to at least" in err
    code, _, err = run_cli(monkeypatch, capsys, "search", str(run), "--max-latency", "3")
    assert code == 2 and "with a unit" in err
