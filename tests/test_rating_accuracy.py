"""Size-controlled rating accuracy: hand-made cases, and the official BossNAS figures reproduced."""

import json
import math

import numpy as np
import pytest
from conftest import bossnas
from scipy import stats

from bossnas.errors import BossNASError
from bossnas.evaluation import rating_accuracy_files
from bossnas.evaluation.size_controlled import (
    budget_picks,
    partial_spearman,
    path_marginals,
    pick_under_budget,
    size_bins,
    top_fraction_kendall,
    within_size_spearman,
)


def test_top_fraction_kendall_looks_only_at_the_most_accurate():
    truth = np.arange(100.0)
    score = truth.copy()
    score[90:] = score[90:][::-1]  # the best ten reversed, the rest perfect
    assert top_fraction_kendall(score, truth, 0.1) == pytest.approx(-1.0)
    assert stats.kendalltau(score, truth).statistic > 0.9


def test_within_size_spearman_holds_size_fixed():
    rng = np.random.default_rng(0)
    size = np.repeat(np.arange(10.0), 30)
    quality = rng.normal(size=300)
    truth = 10 * size + quality
    # ranks by size only: perfect overall, nothing inside a size class
    size_only = size + 1e-9 * rng.normal(size=300)
    assert stats.spearmanr(size_only, truth).statistic > 0.95
    assert abs(within_size_spearman(size_only, truth, size)) < 0.2
    # knows the quality but not the size: poor overall, perfect inside each class
    assert within_size_spearman(quality, truth, size) == pytest.approx(1.0)
    assert len(np.unique(size_bins(size))) == 10


def test_budget_picks_and_regret():
    score = np.array([5.0, 4, 3, 2, 1])
    truth = np.array([90.0, 93, 91, 85, 80])
    cost = np.array([10.0, 8, 4, 2, 1])
    picks = budget_picks(score, truth, cost, "flops", (0.1, 0.4, 1.0))
    assert [p.index for p in picks] == [4, 2, 0]
    assert [p.best for p in picks] == [80.0, 91.0, 93.0]
    assert [p.regret for p in picks] == [0.0, 0.0, 3.0]
    assert pick_under_budget(np.array([1.0, 1.0]), np.array([5.0, 3.0]), None) == 1  # tie -> cheaper
    with pytest.raises(BossNASError, match="no architecture fits"):
        pick_under_budget(score, cost, 0.5)
    assert np.isnan(budget_picks(score, None, cost, "flops", (1.0,))[0].picked)


def test_partial_spearman_removes_the_covariate():
    rng = np.random.default_rng(1)
    a, b = rng.normal(size=50), rng.normal(size=50)
    b = a + 0.5 * b
    size = np.linspace(-1, 1, 50)
    # a covariate that both follow strongly: the raw correlation is about size ...
    x, y = a + 40 * size, b + 40 * size
    assert stats.spearmanr(x, y).statistic > 0.95
    # ... the partial one recovers the relation between what is left
    expected = stats.spearmanr(a - np.polyval(np.polyfit(size, a, 1), size), b - np.polyval(np.polyfit(size, b, 1), size)).statistic
    assert partial_spearman(x, y, size) == pytest.approx(expected)
    assert 0.6 < partial_spearman(x, y, size) < 0.99


def test_path_marginals_refuse_a_path_without_truth():
    assert path_marginals(np.array([1, 1, 0]), np.array([2.0, 4.0, 7.0]), 2).tolist() == [7.0, 3.0]
    with pytest.raises(BossNASError, match="path 2"):
        path_marginals(np.array([0, 1]), np.array([1.0, 2.0]), 3)


@pytest.fixture(scope="module")
def nats_costs(tmp_path_factory):
    from bossnas.search.costs import BlockCostTable, cost_rows_csv
    from bossnas.spaces import create_space

    space = create_space("nats-sss")
    archs = [(p0, p1, p2) for p0 in space.block_paths(0) for p1 in space.block_paths(1) for p2 in space.block_paths(2)]
    path = tmp_path_factory.mktemp("costs") / "costs.csv"
    path.write_text(cost_rows_csv(BlockCostTable(space), archs))
    return path


def test_official_ratings_size_controlled_figures(shared_data, nats_costs):
    """The published diagnostics of the official NATS ratings, from the files alone."""
    r = rating_accuracy_files(shared_data / "nats-sss/bossnas-official-block-scores.csv",
                              shared_data / "nats-sss/cifar10-test-accuracy.csv", nats_costs)
    assert round(r.correlation.spearman, 3) == 0.734 and round(r.correlation.kendall, 3) == 0.534
    assert round(r.size_controlled["top10_kendall"], 2) == 0.09
    assert [round(b.spearman, 2) for b in r.blocks] == [0.83, 0.76, 0.60]
    assert set(r.size_controlled["decile_spearman"]) == {"params", "flops"}
    picks = r.size_controlled["picks"]["flops"]
    assert r.picked_archs["flops"][-1] == "64:40:48:64:56" and picks[-1]["picked"] == pytest.approx(93.29)
    assert picks[-1]["best"] == pytest.approx(93.65)
    for p in picks:
        assert 0 <= p["regret"] == pytest.approx(p["best"] - p["picked"])
    for b in r.blocks:
        assert set(b.partial) == {"log params", "log flops"} and -1 <= b.partial["log params"] <= 1


def test_correlate_cli_reports_size_controlled_figures(shared_data, nats_costs):
    res = bossnas("correlate", str(shared_data / "nats-sss/bossnas-official-block-scores.csv"),
                  str(shared_data / "nats-sss/cifar10-test-accuracy.csv"), "--costs", str(nats_costs))
    assert res.returncode == 0, res.stderr
    assert "Kendall inside the true top 10%: 0.091" in res.stdout
    assert "pick under 100% of max flops: 64:40:48:64:56  truth 93.290  best 93.650  regret 0.360" in res.stdout
    assert "block 0 (64 paths): Spearman vs marginal accuracy 0.834, partial after log params" in res.stdout
    res = bossnas("correlate", str(shared_data / "nats-sss/bossnas-official-block-scores.csv"),
                  str(shared_data / "nats-sss/cifar10-test-accuracy.csv"), "--json")
    data = json.loads(res.stdout)
    assert round(data["size_controlled"]["top10_kendall"], 3) == 0.091 and len(data["blocks"]) == 3


@pytest.mark.parametrize("which, text, message", [
    ("scores", "arch,rating\n8:8:8:8:8,1\n16:8:8:8:8,2\n8:8:8:8:8,3\n", "line 4: architecture '8:8:8:8:8' already appears on line 2"),
    ("truth", "arch,accuracy\n8:8:8:8:8,90\n8:8:8:8:8,91\n16:8:8:8:8,92\n", "line 3: architecture '8:8:8:8:8' already appears on line 2"),
    ("scores", "block,path,loss\n0,8:8,1\n0,8:8,2\n1,8:8,1\n2,8,1\n", "line 3: block 0 path '8:8' already appears on line 2"),
])
def test_duplicates_are_refused_with_line_numbers(tmp_path, which, text, message):
    files = {"scores": "arch,rating\n8:8:8:8:8,1\n16:8:8:8:8,2\n8:16:8:8:8,3\n",
             "truth": "arch,accuracy\n8:8:8:8:8,90\n16:8:8:8:8,91\n8:16:8:8:8,92\n"}
    files[which] = text
    for name, content in files.items():
        (tmp_path / f"{name}.csv").write_text(content)
    res = bossnas("correlate", str(tmp_path / "scores.csv"), str(tmp_path / "truth.csv"))
    assert res.returncode == 2 and message in res.stderr and "Traceback" not in res.stderr


def test_budget_below_the_cheapest_architecture_has_no_pick():
    # NAS-Bench-Macro's smallest network has more than 10% of the largest one's parameters:
    # that budget is left out instead of failing the whole report
    from bossnas.evaluation.size_controlled import budget_picks

    score, cost = np.array([0.3, 0.9, 0.5]), np.array([20.0, 100.0, 60.0])
    picks = budget_picks(score, None, cost, "params", (0.1, 0.25, 0.6, 1.0))
    assert [(p.fraction, p.index) for p in picks] == [(0.25, 0), (0.6, 2), (1.0, 1)]
    assert all(math.isnan(p.picked) for p in picks)
