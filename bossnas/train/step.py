"""One BossNAS training step: K sampled paths, two views, ensemble-bootstrapped target."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Sequence

import torch

from bossnas.spaces.base import Path
from bossnas.ssl.losses import byol_regression_loss
from bossnas.ssl.targets import ensemble_target
from bossnas.supernet.siamese import SiameseSupernet


def target_projections(model: SiameseSupernet, features: torch.Tensor, block: int, paths: Sequence[Path],
                       autocast: Callable[[], contextlib.AbstractContextManager]) -> torch.Tensor:
    """Target projections of every path, ``[K, B, D]`` float32, computed without autograd."""
    with torch.inference_mode(), autocast():
        out = torch.stack([model.project_target(features, block, p).float() for p in paths])
    return out.clone()  # leave inference mode: the loss keeps the target for backward


def bossnas_step(
    model: SiameseSupernet,
    block: int,
    paths: Sequence[Path],
    view_1: torch.Tensor,
    view_2: torch.Tensor,
    best_paths: Sequence[Path] = (),
    ensemble: bool = True,
    loss_scale: float = 1.0,
    autocast: Callable[[], contextlib.AbstractContextManager] = contextlib.nullcontext,
) -> torch.Tensor:
    """Forward + backward of one step; returns the mean per-path loss (detached).

    The frozen earlier blocks run once per view (both views in one batch: they are in
    eval mode, so batching them changes nothing). The target runs all K paths on each view;
    with ``ensemble`` every online path regresses onto the mean of the K normalised target
    projections of the other view, else onto its own path's projection (plain BYOL). The
    K path losses are summed, as their gradients are in the paper; ``loss_scale`` divides
    for gradient accumulation.
    """
    with torch.no_grad(), autocast():
        if best_paths:
            both = model.forward_prefix(torch.cat([view_1, view_2]), list(best_paths))
            feat_1, feat_2 = both.chunk(2)
        else:
            feat_1, feat_2 = view_1, view_2
    target_1 = target_projections(model, feat_1, block, paths, autocast)
    target_2 = target_projections(model, feat_2, block, paths, autocast)
    if ensemble:
        mean_1, mean_2 = ensemble_target(target_1), ensemble_target(target_2)
    total = torch.zeros((), device=view_1.device)
    for i, path in enumerate(paths):
        t1, t2 = (mean_1, mean_2) if ensemble else (target_1[i], target_2[i])
        with autocast():
            pred_1 = model.predict(feat_1, block, path).float()
            pred_2 = model.predict(feat_2, block, path).float()
        loss = byol_regression_loss(pred_1, t2) + byol_regression_loss(pred_2, t1)
        (loss * loss_scale).backward()
        total += loss.detach()
    return total / len(paths)
