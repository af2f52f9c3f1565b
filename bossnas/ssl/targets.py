"""Ensemble bootstrapping target and population centre.

Both are averages of target projections: of the L2-normalised projections of the K paths
sampled in a training step (the regression target of every online path), and of the raw,
unnormalised projections of every path of the block (the centre that rates each path), as
the official training and rating code compute them.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F


def ensemble_target(projections: Sequence[torch.Tensor] | torch.Tensor) -> torch.Tensor:
    """Mean over paths of the L2-normalised projections: ``[K, B, D]`` (or K tensors) -> ``[B, D]``.

    >>> ensemble_target([torch.tensor([[2.0, 0.0]]), torch.tensor([[0.0, 3.0]])])
    tensor([[0.5000, 0.5000]])
    """
    stacked = projections if isinstance(projections, torch.Tensor) else torch.stack(list(projections))
    return F.normalize(stacked, dim=-1).mean(dim=0)


def population_centre(projection_sum: torch.Tensor, count: int) -> torch.Tensor:
    """The centre from a running sum of raw (unnormalised) projections over ``count`` paths."""
    if count <= 0:
        raise ValueError("population centre of zero paths")
    return projection_sum / count
