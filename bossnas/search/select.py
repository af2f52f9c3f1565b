"""Choosing architectures from the block-wise rating tables.

An architecture's rating is the sum of its block ratings. Without a budget the best
architecture is each block's best path. With a FLOPs and/or parameter budget the choice
is exact: a dynamic programme over blocks that keeps, for each boundary state, the
Pareto front of (cost, rating) of partial architectures; nothing that could still lead to
the optimum is dropped, so the result is the true best sum under the budget.
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


def _pareto(items: list[tuple[float, float, float, tuple]], use_flops: bool, use_params: bool) -> list:
    """Drop partial solutions that another one beats or ties on every active cost and the rating."""
    if not items:
        return items
    if use_flops != use_params:
        axis = 0 if use_flops else 1
        items.sort(key=lambda it: (it[axis], it[2]))
        front, best = [], math.inf
        for it in items:
            if it[2] < best:
                front.append(it)
                best = it[2]
        return front
    arr = np.array([[it[0], it[1], it[2]] for it in items])
    order = np.lexsort((arr[:, 2], arr[:, 1], arr[:, 0]))
    keep: list[int] = []
    kept = np.empty((0, 3))
    for i in order:
        row = arr[i]
        if len(kept) and np.any(np.all(kept <= row, axis=1)):
            continue
        keep.append(i)
        kept = np.vstack([kept, row])
    return [items[i] for i in keep]


def best_constrained(space: SearchSpace, tables: RatingTables, costs: BlockCostTable,
                     max_flops: float | None = None, max_params: float | None = None) -> Selection:
    """The best-rated architecture whose FLOPs and parameters fit the budget (exact)."""
    if max_flops is None and max_params is None:
        best = best_unconstrained(tables)
        return Selection(best.arch, best.rating, costs.cost(best.arch))
    f_cap = math.inf if max_flops is None else max_flops
    p_cap = math.inf if max_params is None else max_params
    blocks = space.blocks
    # lowest cost any suffix of blocks can add: a safe bound for pruning
    min_rest = [(0.0, 0.0)] * (len(blocks) + 1)
    for b in range(len(blocks) - 1, -1, -1):
        t = costs.tables[b].values()
        min_rest[b] = (min(c.flops for c in t) + min_rest[b + 1][0], min(c.params for c in t) + min_rest[b + 1][1])
    if min_rest[0][0] > f_cap or min_rest[0][1] > p_cap:
        raise BossNASError(
            f"no architecture of '{space.name}' fits the budget: the smallest needs "
            f"{min_rest[0][0]:.4g} FLOPs and {min_rest[0][1]:.4g} parameters; raise "
            "search.max_flops / search.max_params above those"
        )
    states: dict[Hashable, list[tuple[float, float, float, tuple]]] = {None: [(0.0, 0.0, 0.0, ())]}
    for spec in blocks:
        rest_f, rest_p = min_rest[spec.index + 1]
        grouped: dict[Hashable, list] = {}
        for key, partials in states.items():
            for path, rating in tables[spec.index].items():
                c = costs.tables[spec.index][(key, path)]
                new_key = space.boundary_key(spec.index, path)
                for f, p, r, paths in partials:
                    nf, np_ = f + c.flops, p + c.params
                    if nf + rest_f > f_cap or np_ + rest_p > p_cap:
                        continue
                    grouped.setdefault(new_key, []).append((nf, np_, r + rating, paths + (path,)))
        states = {k: _pareto(v, max_flops is not None, max_params is not None) for k, v in grouped.items()}
    finals = [it for items in states.values() for it in items]
    if not finals:
        raise BossNASError("no rated architecture fits the budget; raise search.max_flops / search.max_params")
    f, p, r, arch = min(finals, key=lambda it: (it[2], it[0], it[1]))
    return Selection(arch, r, Cost(f, p))


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
