"""How far the ratings can be trusted: their own noise, from two halves of the rating images.

Every path of a block is rated on the same images, so each path's rating is also known on
the first and on the second half of them (the per-image losses the rating computes anyway).
For two paths i and j, the difference of their ratings d = r_i - r_j is the mean of the two
halves' differences, so its standard error is about |d_1 - d_2| / 2. Pooled over all pairs
of the block's paths (with e_p = r_p(half 1) - r_p(half 2), the mean of (e_i - e_j)^2 is
2 var(e)), the standard error of a difference of two ratings is

    noise = std_p(e_p) / sqrt(2)

A path whose rating is within ``NOISE_MULTIPLE`` x noise of the best one cannot be told apart
from it by these images: more rating images (``search.rate_images``) would be needed.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Hashable, Sequence
from dataclasses import dataclass

#: a gap below this many standard errors of a difference is not a distinguishable one
#: (two standard errors: about 95% for a normal error)
NOISE_MULTIPLE = 2.0


def split_half_noise(halves: Sequence[Sequence[float]]) -> float | None:
    """The standard error of a difference of two of the block's ratings, from each path's
    ``(half 1, half 2)`` ratings; None with fewer than 3 paths (no spread to pool)."""
    differences = [a - b for a, b in halves]
    if len(differences) < 3 or not all(math.isfinite(d) for d in differences):
        return None
    return statistics.stdev(differences) / math.sqrt(2.0)


@dataclass(frozen=True)
class BlockNoise:
    """One block's rating noise and the paths it cannot tell from the best one."""

    block: int
    #: standard error of a difference of two ratings (None: not measured, e.g. an older run)
    noise: float | None
    best: Hashable
    best_rating: float
    #: paths (best first excluded) rated within NOISE_MULTIPLE x noise of the best, closest first
    ties: list[Hashable]

    @property
    def margin(self) -> float | None:
        return None if self.noise is None else NOISE_MULTIPLE * self.noise


def block_noise(block: int, table: dict[Hashable, float], halves: dict[Hashable, tuple[float, float]] | None) -> BlockNoise:
    """The noise of one block's ratings (``table``: path -> rating; ``halves``: path -> the two half ratings)."""
    best = min(table, key=table.__getitem__)
    noise = split_half_noise([halves[p] for p in table if p in halves]) if halves else None
    ties = []
    if noise is not None:
        ties = sorted((p for p in table if p != best and table[p] - table[best] < NOISE_MULTIPLE * noise),
                      key=table.__getitem__)
    return BlockNoise(block, noise, best, table[best], ties)


def noise_note(space, noise: BlockNoise, shown: int = 3) -> str:
    """``"; warning: 2 more path(s) (a, b) within ..."``, or "" when the best path stands out."""
    if not noise.ties:
        return ""
    names = ", ".join(space.format_path(p) for p in noise.ties[:shown]) + (", ..." if len(noise.ties) > shown else "")
    return (f"; warning: {len(noise.ties)} more path(s) ({names}) within {NOISE_MULTIPLE:g} x the ratings' noise "
            f"({noise.noise:.2g}) of it, not told apart by these images")


def noise_summary(noises: Sequence[BlockNoise]) -> str | None:
    """One line for the end of a search: in which blocks the best path is not told apart, or None."""
    tied = [n for n in noises if n.ties]
    if not tied:
        return None
    where = ", ".join(f"block {n.block} ({len(n.ties)} more path(s))" for n in tied)
    return (f"the ratings cannot tell the best path from the next ones within {NOISE_MULTIPLE:g} x their split-half "
            f"noise in {where}; more search.rate_images narrow the noise")


def difference_noise(noises: Sequence[BlockNoise], a: Sequence[Hashable], b: Sequence[Hashable]) -> float | None:
    """Standard error of the rating difference of two architectures: the blocks where their paths
    differ add their noise in quadrature (each block is rated on its own)."""
    parts = [n.noise for n, p, q in zip(noises, a, b) if p != q]
    if any(x is None for x in parts):
        return None
    return math.sqrt(sum(x * x for x in parts))  # type: ignore[operator]


__all__ = ["NOISE_MULTIPLE", "BlockNoise", "block_noise", "difference_noise", "noise_note", "noise_summary", "split_half_noise"]
