"""Choosing architectures from the block-wise rating tables.

An architecture's rating is the sum of its block ratings. Without a budget the best
architecture is each block's best path. With budgets on additive costs (FLOPs, parameters,
measured latency: anything that sums over the blocks given each block's path and the
previous block's boundary key) the choice is exact: a dynamic programme over blocks that
keeps, for each boundary state, the Pareto front of (costs, rating) of partial
architectures; nothing that could still lead to the optimum is dropped, so the result is
the true best sum under the budgets.
"""

from __future__ import annotations

import heapq
import math
from collections.abc import Hashable
from dataclasses import dataclass

import numpy as np

from bossnas.errors import BossNASError
from bossnas.search.costs import BlockCostTable, Cost
from bossnas.spaces.base import Arch, Path, SearchSpace

RatingTables = list[dict[Path, float]]


@dataclass(frozen=True)
class Selection:
    arch: Arch
    rating: float
    cost: Cost | None = None


def arch_rating(tables: RatingTables, arch: Arch) -> float:
    return float(sum(table[path] for table, path in zip(tables, arch)))


def best_unconstrained(tables: RatingTables) -> Selection:
    arch = tuple(min(table, key=table.__getitem__) for table in tables)
    return Selection(arch, arch_rating(tables, arch))


def top_k(tables: RatingTables, k: int) -> list[Selection]:
    """The k best-rated architectures (lowest rating sums), best first, without enumerating the space."""
    ordered = [sorted(t.items(), key=lambda kv: kv[1]) for t in tables]
    start = (0,) * len(ordered)

    def total(idx: tuple[int, ...]) -> float:
        return sum(ordered[b][i][1] for b, i in enumerate(idx))

    heap, seen, out = [(total(start), start)], {start}, []
    while heap and len(out) < k:
        rating, idx = heapq.heappop(heap)
        out.append(Selection(tuple(ordered[b][i][0] for b, i in enumerate(idx)), rating))
        for b in range(len(idx)):
            if idx[b] + 1 < len(ordered[b]):
                nxt = idx[:b] + (idx[b] + 1,) + idx[b + 1 :]
                if nxt not in seen:
                    seen.add(nxt)
                    heapq.heappush(heap, (total(nxt), nxt))
    return out


#: one additive cost of every (previous-block key, path) of each block: an architecture's cost
#: is ``sum_k table[k][(key of path k-1, path k)]`` (FLOPs, parameters, measured latency)
CostTable = list[dict[tuple[Hashable, Path], float]]


@dataclass(frozen=True)
class Budget:
    """An upper bound on one additive cost; ``name`` is what the user raises in the error message."""

    name: str
    table: CostTable
    limit: float


#: a partial architecture in the dynamic programme: (summed costs, summed rating, paths)
_Partial = tuple[tuple[float, ...], float, tuple]


def _pareto(items: list[_Partial]) -> list[_Partial]:
    """Drop partial solutions that another one beats or ties on every cost and the rating."""
    if len(items) <= 1:
        return items
    if len(items[0][0]) == 1:
        items.sort(key=lambda it: (it[0][0], it[1]))
        front, best = [], math.inf
        for it in items:
            if it[1] < best:
                front.append(it)
                best = it[1]
        return front
    arr = np.array([[*it[0], it[1]] for it in items])
    order = np.lexsort(arr.T[::-1])
    keep: list[int] = []
    kept = np.empty((0, arr.shape[1]))
    for i in order:
        row = arr[i]
        if len(kept) and np.any(np.all(kept <= row, axis=1)):
            continue
        keep.append(i)
        kept = np.vstack([kept, row])
    return [items[i] for i in keep]


def _fronts(space: SearchSpace, tables: RatingTables, cost_tables: list[CostTable],
            limits: list[float]) -> list[_Partial]:
    """Every complete architecture on a boundary-key's Pareto front of (costs, rating) within the limits.

    Block by block, partial architectures are grouped by the key the next block depends on;
    within a group, one that another beats on every cost and the rating can never lead to
    the optimum (the rest adds the same to both), so only each group's front is kept.
    """
    blocks = space.blocks
    # lowest cost any suffix of blocks can add: a safe bound for pruning
    min_rest = [[0.0] * len(cost_tables) for _ in range(len(blocks) + 1)]
    for b in range(len(blocks) - 1, -1, -1):
        min_rest[b] = [min(t[b].values()) + rest for t, rest in zip(cost_tables, min_rest[b + 1])]
    states: dict[Hashable, list[_Partial]] = {None: [((0.0,) * len(cost_tables), 0.0, ())]}
    for spec in blocks:
        rest = min_rest[spec.index + 1]
        grouped: dict[Hashable, list[_Partial]] = {}
        for key, partials in states.items():
            for path, rating in tables[spec.index].items():
                step = [t[spec.index][(key, path)] for t in cost_tables]
                new_key = space.boundary_key(spec.index, path)
                for costs, r, paths in partials:
                    summed = tuple(c + s for c, s in zip(costs, step))
                    if any(c + m > limit for c, m, limit in zip(summed, rest, limits)):
                        continue
                    grouped.setdefault(new_key, []).append((summed, r + rating, paths + (path,)))
        states = {k: _pareto(v) for k, v in grouped.items()}
    return [it for items in states.values() for it in items]


def best_within(space: SearchSpace, tables: RatingTables, budgets: list[Budget]) -> tuple[Selection, tuple[float, ...]]:
    """The best-rated architecture whose every additive cost fits its budget (exact), and its costs.

    >>> best_within(space, tables, [Budget("--max-latency", latency_table, 3e-3)])   # doctest: +SKIP
    """
    if not budgets:
        best = best_unconstrained(tables)
        return best, ()
    smallest = [sum(min(t[b.index].values()) for b in space.blocks) for t in (bd.table for bd in budgets)]
    if any(s > bd.limit for s, bd in zip(smallest, budgets)):
        needs = ", ".join(f"{bd.name} {s:.4g}" for s, bd in zip(smallest, budgets))
        raise BossNASError(f"no architecture of '{space.name}' fits the budget: the smallest needs {needs}; "
                           f"raise {' / '.join(bd.name for bd in budgets)} above those")
    finals = _fronts(space, tables, [bd.table for bd in budgets], [bd.limit for bd in budgets])
    if not finals:
        raise BossNASError(f"no rated architecture fits the budget; raise {' / '.join(bd.name for bd in budgets)}")
    costs, rating, arch = min(finals, key=lambda it: (it[1], it[0]))
    return Selection(arch, rating), costs


def pareto_front(space: SearchSpace, tables: RatingTables, cost: CostTable) -> list[tuple[float, float, Arch]]:
    """The exact front of (cost, rating) over the whole space, cheapest first: (cost, rating, arch)."""
    finals = _pareto(_fronts(space, tables, [cost], [math.inf]))
    return [(c[0], r, arch) for c, r, arch in finals]


def flops_table(costs: BlockCostTable, what: str = "flops") -> CostTable:
    """One column (``"flops"`` or ``"params"``) of a BlockCostTable as an additive cost table."""
    return [{k: float(getattr(c, what)) for k, c in table.items()} for table in costs.tables]


def best_constrained(space: SearchSpace, tables: RatingTables, costs: BlockCostTable,
                     max_flops: float | None = None, max_params: float | None = None,
                     extra: list[Budget] | None = None) -> Selection:
    """The best-rated architecture whose FLOPs and parameters (and ``extra`` budgets) fit (exact)."""
    budgets = [Budget(name, flops_table(costs, what), limit)
               for name, what, limit in (("search.max_flops", "flops", max_flops), ("search.max_params", "params", max_params))
               if limit is not None] + list(extra or [])
    choice, _ = best_within(space, tables, budgets)
    return Selection(choice.arch, choice.rating, costs.cost(choice.arch))


def all_ratings(tables: RatingTables, limit: int = 2_000_000) -> tuple[list[Arch], np.ndarray]:
    """Every architecture and its rating (block sums), for spaces small enough to list."""
    count = math.prod(len(t) for t in tables)
    if count > limit:
        raise BossNASError(
            f"the space has {count:,} architectures, too many to list; give architectures or use --top N"
        )
    paths = [list(t.keys()) for t in tables]
    values = [np.array([t[p] for p in ps]) for t, ps in zip(tables, paths)]
    grid = values[0]
    for v in values[1:]:
        grid = (grid[:, None] + v[None, :]).reshape(-1)
    import itertools

    archs = [tuple(a) for a in itertools.product(*paths)]
    return archs, grid
