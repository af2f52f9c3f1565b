"""Rating accuracy where size is held fixed.

On spaces where network size alone predicts accuracy well (NATS-Bench SSS: the sum of log
widths reaches Spearman 0.95), an overall rank correlation mostly measures whether a rating
has learnt size. What a rating adds beyond size shows only where size is held fixed:

- Kendall tau among the architectures whose true accuracy is in the top 10%;
- the mean Spearman inside quantile bins (deciles) of a size measure (log parameters, FLOPs);
- the accuracy of the architecture a rating picks under a cost budget, and its *regret* to the
  best accuracy reachable under that budget;
- per block: the Spearman of the block's path ratings against each path's *marginal accuracy*
  (the mean true accuracy of all architectures through the path), and the *partial* Spearman
  after removing what a size covariate of the path explains (residuals of a linear fit on it,
  of both the ratings and the marginal accuracies).

Every score here is oriented so that larger = predicted better (negate losses / ratings first).
All functions are pure functions of NumPy arrays, so they can be checked on hand-made inputs.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
from scipy import stats

from bossnas.errors import BossNASError

#: fractions of the largest cost that budgeted picks are reported for
BUDGET_FRACTIONS: tuple[float, ...] = (0.1, 0.25, 0.5, 1.0)
#: share of the most accurate architectures inside which Kendall tau is reported
TOP_FRACTION = 0.1
#: quantile bins of a size measure inside which Spearman is averaged
SIZE_BINS = 10


def _check_pair(score: np.ndarray, truth: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    score, truth = np.asarray(score, dtype=float), np.asarray(truth, dtype=float)
    if score.ndim != 1 or score.shape != truth.shape:
        raise BossNASError("scores and ground truth must be two equally long lists")
    return score, truth


def _spearman(x: np.ndarray, y: np.ndarray) -> float:
    """Spearman's rho, NaN where it is undefined (fewer than 3 values or a constant input)."""
    if len(x) < 3 or np.ptp(x) == 0 or np.ptp(y) == 0:
        return float("nan")
    return float(stats.spearmanr(x, y).statistic)


def top_fraction_kendall(score: np.ndarray, truth: np.ndarray, fraction: float = TOP_FRACTION) -> float:
    """Kendall tau between score and truth among architectures whose truth is in the top ``fraction``.

    Ties at the threshold are kept (``truth >= quantile(1 - fraction)``).

    >>> t = np.arange(10.0)
    >>> top_fraction_kendall(t, t, 0.3), top_fraction_kendall(-t, t, 0.3)
    (1.0, -1.0)
    """
    score, truth = _check_pair(score, truth)
    if not 0 < fraction <= 1:
        raise BossNASError(f"top fraction must be in (0, 1], got {fraction}")
    mask = truth >= np.quantile(truth, 1 - fraction)
    if mask.sum() < 3 or np.ptp(score[mask]) == 0 or np.ptp(truth[mask]) == 0:
        return float("nan")
    return float(stats.kendalltau(score[mask], truth[mask]).statistic)


def size_bins(size: np.ndarray, bins: int = SIZE_BINS) -> np.ndarray:
    """The quantile bin (0..bins-1) of each value of ``size``; equal sizes share a bin."""
    size = np.asarray(size, dtype=float)
    edges = np.quantile(size, np.linspace(0, 1, bins + 1))
    return np.clip(np.searchsorted(edges, size, side="right") - 1, 0, bins - 1)


def within_size_spearman(score: np.ndarray, truth: np.ndarray, size: np.ndarray, bins: int = SIZE_BINS) -> float:
    """Mean Spearman of score vs truth inside each quantile bin of ``size``.

    Bins with fewer than 3 architectures or a constant score or truth are left out. Any
    monotone transform of ``size`` (log parameters vs parameters) gives the same bins.

    >>> size = np.repeat(np.arange(4.0), 5); truth = np.tile(np.arange(5.0), 4) + size
    >>> round(within_size_spearman(-truth, truth, size, bins=4), 6)
    -1.0
    """
    score, truth = _check_pair(score, truth)
    size = np.asarray(size, dtype=float)
    if size.shape != score.shape:
        raise BossNASError("the size measure must have one value per architecture")
    which = size_bins(size, bins)
    values = [_spearman(score[which == b], truth[which == b]) for b in range(bins)]
    values = [v for v in values if np.isfinite(v)]
    return float(np.mean(values)) if values else float("nan")


@dataclass(frozen=True)
class BudgetPick:
    """The architecture a score ranks first under ``cost <= fraction * max(cost)``."""

    cost: str
    fraction: float
    budget: float
    index: int
    picked: float
    best: float

    @property
    def regret(self) -> float:
        """Best reachable truth under the budget minus the picked one (>= 0)."""
        return self.best - self.picked

    def as_dict(self) -> dict:
        return {"cost": self.cost, "fraction": self.fraction, "budget": self.budget, "index": self.index,
                "picked": self.picked, "best": self.best, "regret": self.regret}


def pick_under_budget(score: np.ndarray, cost: np.ndarray, budget: float | None) -> int:
    """Index of the best-scored architecture with ``cost <= budget`` (ties go to the cheaper one)."""
    score, cost = np.asarray(score, dtype=float), np.asarray(cost, dtype=float)
    idx = np.arange(len(score)) if budget is None else np.flatnonzero(cost <= budget)
    if len(idx) == 0:
        raise BossNASError(f"no architecture fits the budget {budget:g}")
    return int(idx[np.lexsort((cost[idx], -score[idx]))[0]])


def budget_picks(score: np.ndarray, truth: np.ndarray | None, cost: np.ndarray, cost_name: str,
                 fractions: Sequence[float] = BUDGET_FRACTIONS) -> list[BudgetPick]:
    """The pick, its truth and the best reachable truth under each fraction of the largest cost.

    Without ``truth`` (a space whose accuracy table is not at hand) ``picked`` / ``best`` are NaN
    and only the chosen index is meaningful. A fraction whose budget is below the cheapest
    architecture has no pick and is left out (on NAS-Bench-Macro the smallest network has more
    than 10% of the largest one's parameters).

    >>> p = budget_picks(np.array([3.0, 2, 1]), np.array([90.0, 95, 80]), np.array([4.0, 2, 1]), "flops", (0.5, 1.0))
    >>> [(x.index, x.picked, x.regret) for x in p]
    [(1, 95.0, 0.0), (0, 90.0, 5.0)]
    >>> [x.fraction for x in budget_picks(np.array([3.0, 2, 1]), None, np.array([4.0, 2, 1]), "flops", (0.1, 1.0))]
    [1.0]
    """
    score, cost = np.asarray(score, dtype=float), np.asarray(cost, dtype=float)
    picks = []
    for fraction in fractions:
        budget = fraction * float(cost.max())
        if budget < float(cost.min()):
            continue
        index = pick_under_budget(score, cost, budget)
        if truth is None:
            picked = best = float("nan")
        else:
            truth = np.asarray(truth, dtype=float)
            picked, best = float(truth[index]), float(truth[cost <= budget].max())
        picks.append(BudgetPick(cost_name, fraction, budget, index, picked, best))
    return picks


def residuals(y: np.ndarray, x: np.ndarray) -> np.ndarray:
    """``y`` minus its least-squares linear fit on ``x`` (with intercept)."""
    y, x = np.asarray(y, dtype=float), np.asarray(x, dtype=float)
    design = np.column_stack([np.ones_like(x), x])
    coef, *_ = np.linalg.lstsq(design, y, rcond=None)
    return y - design @ coef


def partial_spearman(score: np.ndarray, truth: np.ndarray, covariate: np.ndarray) -> float:
    """Spearman of score vs truth after removing what ``covariate`` explains linearly from both.

    The size-controlled per-block figure: with ``covariate`` = log width (or log parameters)
    of each path, it says whether the ratings know more than size. On the official BossNAS
    NATS-Bench ratings it gives 0.67 / 0.69 / -0.26 for blocks 0 / 1 / 2.
    """
    score, truth = _check_pair(score, truth)
    return _spearman(residuals(score, covariate), residuals(truth, covariate))


def path_marginals(path_index: np.ndarray, values: np.ndarray, num_paths: int) -> np.ndarray:
    """Mean of ``values`` over the architectures through each path (``path_index``: one id per arch).

    >>> path_marginals(np.array([0, 1, 0, 1]), np.array([1.0, 2, 3, 4]), 2)
    array([2., 3.])
    """
    path_index = np.asarray(path_index)
    counts = np.bincount(path_index, minlength=num_paths)
    if (counts == 0).any():
        missing = int(np.flatnonzero(counts == 0)[0])
        raise BossNASError(f"path {missing} of a block has no architecture with a ground-truth value")
    return np.bincount(path_index, weights=np.asarray(values, dtype=float), minlength=num_paths) / counts


@dataclass(frozen=True)
class BlockAccuracy:
    """How well one block's path ratings order its paths by their marginal accuracy."""

    block: int
    paths: int
    spearman: float
    #: covariate name -> partial Spearman after removing it
    partial: dict[str, float]

    def as_dict(self) -> dict:
        return {"block": self.block, "paths": self.paths, "spearman": self.spearman, "partial": dict(self.partial)}


def block_accuracy(block: int, path_score: np.ndarray, marginal_truth: np.ndarray,
                   covariates: Mapping[str, np.ndarray]) -> BlockAccuracy:
    """Spearman of the path scores vs the paths' marginal truth, and its partial per covariate."""
    path_score, marginal_truth = _check_pair(path_score, marginal_truth)
    partial = {name: partial_spearman(path_score, marginal_truth, cov) for name, cov in covariates.items()}
    return BlockAccuracy(block, len(path_score), _spearman(path_score, marginal_truth), partial)


def size_controlled(score: np.ndarray, truth: np.ndarray, costs: Mapping[str, np.ndarray],
                    fractions: Sequence[float] = BUDGET_FRACTIONS) -> dict:
    """The architecture-level figures of one score against truth.

    ``costs`` maps a cost name (``params``, ``flops``, ...) to one value per architecture:
    the within-size Spearman is reported inside deciles of each, and the budgeted picks under
    each fraction of each cost's maximum. Returns plain floats in a JSON-ready dict.
    """
    score, truth = _check_pair(score, truth)
    out: dict = {
        "top10_kendall": top_fraction_kendall(score, truth),
        "decile_spearman": {name: within_size_spearman(score, truth, cost) for name, cost in costs.items()},
        "picks": {name: [p.as_dict() for p in budget_picks(score, truth, cost, name, fractions)]
                  for name, cost in costs.items()},
    }
    return out


__all__ = [
    "BUDGET_FRACTIONS", "BlockAccuracy", "BudgetPick", "block_accuracy", "budget_picks", "partial_spearman",
    "path_marginals", "pick_under_budget", "residuals", "size_bins", "size_controlled", "top_fraction_kendall",
    "within_size_spearman",
]
