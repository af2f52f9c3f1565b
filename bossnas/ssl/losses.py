"""The BYOL regression loss used for training and rating."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def byol_regression_loss(prediction: torch.Tensor, target: torch.Tensor, reduction: str = "mean") -> torch.Tensor:
    """``2 - 2 * cos(prediction, target)`` per sample, averaged (or not) over the batch.

    Equal to the squared distance of the two L2-normalised vectors; 0 when aligned, 4 when
    opposite. ``target`` need not be normalised (the ensemble average is not).

    >>> byol_regression_loss(torch.tensor([[1.0, 0.0]]), torch.tensor([[0.0, 2.0]]))
    tensor(2.)
    """
    per_sample = 2 - 2 * F.cosine_similarity(prediction, target, dim=-1, eps=1e-8)
    if reduction == "none":
        return per_sample
    if reduction == "mean":
        return per_sample.mean()
    raise ValueError(f"unknown reduction {reduction!r}")


class BYOLRegressionLoss(nn.Module):
    """Symmetric BYOL loss: ``L(p1, t2) + L(p2, t1)``.

    >>> loss = BYOLRegressionLoss()
    >>> float(loss(torch.ones(2, 3), torch.ones(2, 3), torch.ones(2, 3), torch.ones(2, 3)))
    0.0
    """

    def forward(
        self, pred_1: torch.Tensor, pred_2: torch.Tensor, target_1: torch.Tensor, target_2: torch.Tensor
    ) -> torch.Tensor:
        return byol_regression_loss(pred_1, target_2) + byol_regression_loss(pred_2, target_1)
