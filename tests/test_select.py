import itertools

import numpy as np
import pytest

from bossnas.errors import BossNASError
from bossnas.search.costs import BlockCostTable, arch_cost
from bossnas.search.select import (
    all_ratings,
    best_constrained,
    best_unconstrained,
    show_count,
    top_k,
)
from bossnas.spaces import create_space


@pytest.fixture(scope="module")
def space():
    return create_space("nats-sss")


@pytest.fixture(scope="module")
def costs(space):
    return BlockCostTable(space)


@pytest.fixture(scope="module")
def tables(space):
    rng = np.random.default_rng(0)
    return [{p: float(rng.normal()) for p in space.block_paths(b.index)} for b in space.blocks]


@pytest.fixture(scope="module")
def brute(space, tables, costs):
    rows = []
    for arch in itertools.product(*(space.block_paths(b.index) for b in space.blocks)):
        c = costs.cost(arch)
        rows.append((sum(t[p] for t, p in zip(tables, arch)), c.flops, c.params, arch))
    return rows


def test_block_costs_add_up_to_whole_network(space, costs):
    rng = np.random.default_rng(1)
    for _ in range(6):
        arch = tuple(space.block_paths(b.index)[rng.integers(len(space.block_paths(b.index)))] for b in space.blocks)
        assert costs.cost(arch) == arch_cost(space, arch)


def test_unconstrained_best_is_blockwise_argmin(tables, brute):
    best = best_unconstrained(tables)
    assert best.rating == pytest.approx(min(r for r, *_ in brute))


@pytest.mark.parametrize("flop_frac, param_frac", [(0.25, None), (0.5, None), (None, 0.3), (0.4, 0.5), (0.1, 0.1)])
def test_constrained_choice_is_exact(space, tables, costs, brute, flop_frac, param_frac):
    max_f = max(r[1] for r in brute) * flop_frac if flop_frac else None
    max_p = max(r[2] for r in brute) * param_frac if param_frac else None
    feasible = [r for r in brute if (max_f is None or r[1] <= max_f) and (max_p is None or r[2] <= max_p)]
    expected = min(feasible, key=lambda r: r[0])
    got = best_constrained(space, tables, costs, max_f, max_p)
    assert got.rating == pytest.approx(expected[0])
    assert got.arch == expected[3]
    assert max_f is None or got.cost.flops <= max_f
    assert max_p is None or got.cost.params <= max_p


def test_budget_below_smallest_architecture_is_a_clear_error(space, tables, costs, brute):
    cheapest = min(brute, key=lambda r: r[1])
    with pytest.raises(BossNASError, match=rf"search.max_flops 1k is below the {show_count(cheapest[1])} of the cheapest "
                                           rf"\({space.format_arch(cheapest[3])}\); raise search.max_flops to at least"):
        best_constrained(space, tables, costs, max_flops=1000)


def test_top_k_matches_sorted_brute_force(tables, brute):
    expected = sorted(r for r, *_ in brute)[:20]
    got = [s.rating for s in top_k(tables, 20)]
    assert got == pytest.approx(expected)


def test_all_ratings_lists_every_architecture(space, tables, brute):
    archs, values = all_ratings(tables)
    assert len(archs) == 32768
    lookup = dict(zip(archs, values))
    for r, _, _, arch in brute[::997]:
        assert lookup[arch] == pytest.approx(r)
