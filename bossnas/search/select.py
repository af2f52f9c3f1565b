"""Choosing architectures from the block-wise rating tables.

An architecture's rating is the sum of its block ratings. Without a budget the best
architecture is each block's best path. With budgets on additive costs (FLOPs, parameters,
measured latency: anything that sums over the blocks given each block's path and the
previous block's boundary key) the choice is exact: a dynamic programme over blocks that
keeps, for each boundary state, the Pareto front of (costs, rating) of partial
architectures; nothing that could still lead to the optimum is dropped, so the result is
the true best sum under the budgets.

In a space whose block paths depend on the previous block's path (``paths=official`` HyTra:
a block starts where the previous one ended or one scale coarser), every function here
combines a block-k path only with block-(k-1) paths it may follow
(``SearchSpace.continues``); pass the space. Block k's rating table then holds the paths
after the best path of block k-1, so the architectures a search can choose are the legal
chains of rated paths (:func:`count_archs`).
"""

from __future__ import annotations

import heapq
import itertools
import math
import random
from collections.abc import Callable, Hashable, Sequence
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


def unrated_block(tables: RatingTables, arch: Arch) -> int | None:
    """The first block of ``arch`` whose path has no rating, or None."""
    return next((b for b, (table, path) in enumerate(zip(tables, arch)) if path not in table), None)


def _dynamic(space: SearchSpace | None) -> bool:
    return space is not None and space.paths_follow_previous


def _may_follow(space: SearchSpace, block: int, key: Hashable, path: Path) -> bool:
    return block == 0 or space.continues(block, key, path)


def best_unconstrained(tables: RatingTables, space: SearchSpace | None = None) -> Selection:
    """The best-rated architecture: each block's best path, or (where paths depend on the previous
    block's, ``space`` given) the best legal chain of rated paths."""
    if _dynamic(space):
        return top_k(tables, 1, space)[0]
    arch = tuple(min(table, key=table.__getitem__) for table in tables)
    return Selection(arch, arch_rating(tables, arch))


def top_k(tables: RatingTables, k: int, space: SearchSpace | None = None) -> list[Selection]:
    """The k best-rated architectures (lowest rating sums), best first, without enumerating the space.

    With a ``space`` whose paths depend on the previous block's, only legal chains: a dynamic
    programme keeps, per boundary key, the k best prefixes (a prefix outside its key's k best
    has k better ones with the same continuations, so it is never among the k best).
    """
    if _dynamic(space):
        return _top_k_chains(space, tables, k)
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


def _top_k_chains(space: SearchSpace, tables: RatingTables, k: int) -> list[Selection]:
    states: dict[Hashable, list[tuple[float, Arch]]] = {None: [(0.0, ())]}
    for b, table in enumerate(tables):
        grouped: dict[Hashable, list[tuple[float, Arch]]] = {}
        for key, partials in states.items():
            for path, rating in table.items():
                if _may_follow(space, b, key, path):
                    grouped.setdefault(space.boundary_key(b, path), []).extend(
                        (r + rating, arch + (path,)) for r, arch in partials)
        states = {key: heapq.nsmallest(k, items, key=lambda it: it[0]) for key, items in grouped.items()}
    best = heapq.nsmallest(k, (it for items in states.values() for it in items), key=lambda it: it[0])
    return [Selection(arch, arch_rating(tables, arch)) for _, arch in best]


def count_archs(space: SearchSpace, candidates: Sequence[Sequence[Path]]) -> int:
    """How many legal architectures take block k's path from ``candidates[k]`` (e.g. the rated paths)."""
    counts: dict[Hashable, int] = {None: 1}
    for b, paths in enumerate(candidates):
        nxt: dict[Hashable, int] = {}
        for key, n in counts.items():
            for path in paths:
                if _may_follow(space, b, key, path):
                    new_key = space.boundary_key(b, path)
                    nxt[new_key] = nxt.get(new_key, 0) + n
        counts = nxt
    return sum(counts.values())


def _viable(space: SearchSpace, candidates: Sequence[Sequence[Path]]) -> list[list[Path]]:
    """The candidates that some legal chain through all blocks uses (a backward pass drops dead ends)."""
    viable = [list(candidates[-1])]
    for b in range(len(candidates) - 2, -1, -1):
        after = viable[0]
        viable.insert(0, [p for p in candidates[b]
                          if any(space.continues(b + 1, space.boundary_key(b, p), q) for q in after)])
    return viable


def legal_archs(space: SearchSpace, candidates: Sequence[Sequence[Path]], limit: int, seed: int = 0) -> list[Arch]:
    """Every legal chain of the per-block ``candidates`` when there are at most ``limit``, else a seeded
    sample of ``limit`` (each block drawn uniformly among the viable paths that follow the block before)."""
    if count_archs(space, candidates) <= limit:
        archs: list[Arch] = [()]
        for b, paths in enumerate(candidates):
            archs = [a + (p,) for a in archs for p in paths
                     if b == 0 or space.continues(b, space.boundary_key(b - 1, a[-1]), p)]
        return archs
    viable, rng, out = _viable(space, candidates), random.Random(seed), []
    for _ in range(limit):
        arch: Arch = ()
        for b, paths in enumerate(viable):
            options = paths if b == 0 else [p for p in paths if space.continues(b, space.boundary_key(b - 1, arch[-1]), p)]
            arch += (rng.choice(options),)
        out.append(arch)
    return out


#: one additive cost of every (previous-block key, path) of each block: an architecture's cost
#: is ``sum_k table[k][(key of path k-1, path k)]`` (FLOPs, parameters, measured latency)
CostTable = list[dict[tuple[Hashable, Path], float]]


def ceil_significant(x: float, digits: int = 4) -> float:
    """``x`` rounded up to ``digits`` significant digits: a bound printed this way still holds."""
    if x <= 0 or not math.isfinite(x):
        return x
    scale = 10.0 ** (digits - 1 - math.floor(math.log10(x)))
    up = math.ceil(x * scale)
    return up / scale if up / scale >= x else (up + 1) / scale


def show_count(x: float, up: bool = True) -> str:
    """A count as the budget options accept it: 2167345 -> '2.168M' (rounded up with ``up``,
    so a bound printed this way still holds; else to 6 digits)."""
    for suffix, unit in (("G", 1e9), ("M", 1e6), ("k", 1e3), ("", 1.0)):
        if abs(x) >= unit or unit == 1.0:
            return f"{ceil_significant(x / unit) if up else x / unit:.6g}{suffix}"
    raise AssertionError("unreachable")


def show_seconds(x: float, up: bool = True) -> str:
    """Seconds as ``--max-latency`` takes them: 0.00080512 -> '0.8052ms' (rounded up with ``up``)."""
    return f"{ceil_significant(x * 1e3) if up else x * 1e3:.6g}ms"


@dataclass(frozen=True)
class Budget:
    """An upper bound on one additive cost; ``name`` is what the user raises in the error message
    (the option or config key they gave), ``show`` writes a value of it as they would type it."""

    name: str
    table: CostTable
    limit: float
    show: Callable[..., str] = show_count


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
                if not _may_follow(space, spec.index, key, path):
                    continue  # no such network: cost tables hold only legal (key, path) entries
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
        return best_unconstrained(tables, space), ()
    rated = (" (block k was rated only on the paths that follow block k-1's best path, so fewer "
             "architectures were rated than the space holds)") if space.paths_follow_previous else ""
    too_low = []
    for bd in budgets:
        least, arch = cheapest_rated(space, tables, bd.table)
        if least > bd.limit:
            too_low.append(f"{bd.name} {bd.show(bd.limit, up=False)} is below the {bd.show(least)} of the cheapest "
                           f"({space.format_arch(arch)}); raise {bd.name} to at least {bd.show(least)}")
    if too_low:
        raise BossNASError(f"no rated architecture of '{space.name}' fits{rated}: {'; '.join(too_low)}")
    finals = _fronts(space, tables, [bd.table for bd in budgets], [bd.limit for bd in budgets])
    if not finals:  # each budget alone is met by some architecture, but none meets all of them
        given = " and ".join(f"{bd.name} {bd.show(bd.limit, up=False)}" for bd in budgets)
        raise BossNASError(f"no rated architecture of '{space.name}' fits {given} together{rated}; "
                           f"each alone is met, so raise one of {' / '.join(bd.name for bd in budgets)}")
    costs, rating, arch = min(finals, key=lambda it: (it[1], it[0]))
    return Selection(arch, rating), costs


def cheapest_rated(space: SearchSpace, tables: RatingTables, cost: CostTable) -> tuple[float, Arch]:
    """The least additive ``cost`` of any architecture of rated paths (a legal chain where paths
    depend on the previous block's), and that architecture: exact, by a min-sum over blocks
    per boundary key (summing each block's cheapest entry ignores which key an entry needs)."""
    states: dict[Hashable, tuple[float, Arch]] = {None: (0.0, ())}
    for b, table in enumerate(tables):
        nxt: dict[Hashable, tuple[float, Arch]] = {}
        for key, (spent, arch) in states.items():
            for path in table:
                if not _may_follow(space, b, key, path):
                    continue
                total, new_key = spent + cost[b][(key, path)], space.boundary_key(b, path)
                if new_key not in nxt or total < nxt[new_key][0]:
                    nxt[new_key] = (total, arch + (path,))
        states = nxt
    return min(states.values(), key=lambda it: it[0])


def pareto_front(space: SearchSpace, tables: RatingTables, cost: CostTable) -> list[tuple[float, float, Arch]]:
    """The exact front of (cost, rating) over the whole space, cheapest first: (cost, rating, arch)."""
    finals = _pareto(_fronts(space, tables, [cost], [math.inf]))
    return [(c[0], r, arch) for c, r, arch in finals]


def flops_table(costs: BlockCostTable, what: str = "flops") -> CostTable:
    """One column (``"flops"`` or ``"params"``) of a BlockCostTable as an additive cost table."""
    return [{k: float(getattr(c, what)) for k, c in table.items()} for table in costs.tables]


def best_constrained(space: SearchSpace, tables: RatingTables, costs: BlockCostTable,
                     max_flops: float | None = None, max_params: float | None = None,
                     extra: list[Budget] | None = None,
                     names: tuple[str, str] = ("search.max_flops", "search.max_params")) -> Selection:
    """The best-rated architecture whose FLOPs and parameters (and ``extra`` budgets) fit (exact).
    ``names``: how the FLOPs and parameter budgets were given (options or config keys), for messages."""
    budgets = [Budget(name, flops_table(costs, what), limit)
               for name, what, limit in ((names[0], "flops", max_flops), (names[1], "params", max_params))
               if limit is not None] + list(extra or [])
    choice, _ = best_within(space, tables, budgets)
    return Selection(choice.arch, choice.rating, costs.cost(choice.arch))


def all_ratings(tables: RatingTables, limit: int = 2_000_000,
                space: SearchSpace | None = None) -> tuple[list[Arch], np.ndarray]:
    """Every architecture and its rating (block sums), for spaces small enough to list.

    With a ``space`` whose paths depend on the previous block's: every legal chain of rated paths.
    """
    if _dynamic(space):
        count = count_archs(space, [list(t) for t in tables])
        if count > limit:
            raise BossNASError(f"the run rated {count:,} architectures, too many to list; give architectures or use --top N")
        archs = legal_archs(space, [list(t) for t in tables], limit)
        return archs, np.array([arch_rating(tables, a) for a in archs])
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
    archs = [tuple(a) for a in itertools.product(*paths)]
    return archs, grid
