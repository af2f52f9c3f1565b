"""One BossNAS training step: K sampled paths, two views, ensemble-bootstrapped target."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Sequence

import torch

from bossnas.spaces.base import Path
from bossnas.ssl.losses import byol_regression_loss
from bossnas.ssl.targets import ensemble_target
from bossnas.supernet.siamese import SiameseSupernet

#: features -> (shuffled features, restore(outputs, dim)); see ``distributed.batch_shuffle``
TargetShuffle = Callable[[torch.Tensor], tuple[torch.Tensor, Callable[..., torch.Tensor]]]


def target_projections(model: SiameseSupernet, features: torch.Tensor, block: int, paths: Sequence[Path],
                       autocast: Callable[[], contextlib.AbstractContextManager],
                       shuffle: TargetShuffle | None = None) -> torch.Tensor:
    """Target projections of every path, ``[K, B, D]`` float32, computed without autograd.

    ``shuffle`` (multi-process runs): the target runs on a batch shuffled across processes
    and its outputs are put back in this process's order (see ``distributed.batch_shuffle``).
    """
    restore = None
    if shuffle is not None:
        features, restore = shuffle(features)
    with torch.inference_mode(), autocast():
        out = torch.stack([model.project_target(features, block, p).float() for p in paths])
    out = out.clone()  # leave inference mode: the loss keeps the target for backward
    return restore(out, dim=1) if restore is not None else out


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
    share_prefix: bool = True,
    target_shuffle: TargetShuffle | None = None,
) -> torch.Tensor:
    """Forward + backward of one step; returns the mean per-path loss (detached).

    The frozen earlier blocks run once per view (both views in one batch: they are in
    eval mode, so batching them changes nothing). The target runs all K paths on each view;
    with ``ensemble`` every online path regresses onto the mean of the K normalised target
    projections of the other view, else onto its own path's projection (plain BYOL). The
    K path losses are summed, as their gradients are in the paper; ``loss_scale`` divides
    for gradient accumulation. ``share_prefix=False`` recomputes the prefix for every online
    path (and once more for the targets), the naive implementation; only for benchmarks.
    ``target_shuffle`` shuffles the target's batch across processes for its BatchNorm
    (multi-process runs only; see ``distributed.batch_shuffle``).
    """
    with torch.no_grad(), autocast():
        if best_paths:
            both = model.forward_prefix(torch.cat([view_1, view_2]), list(best_paths))
            feat_1, feat_2 = both.chunk(2)
        else:
            feat_1, feat_2 = view_1, view_2
    if not share_prefix and best_paths:
        target_1 = torch.cat([target_projections(model, model.forward_prefix(view_1, list(best_paths)), block, [p], autocast, target_shuffle) for p in paths])
        target_2 = torch.cat([target_projections(model, model.forward_prefix(view_2, list(best_paths)), block, [p], autocast, target_shuffle) for p in paths])
    else:
        target_1 = target_projections(model, feat_1, block, paths, autocast, target_shuffle)
        target_2 = target_projections(model, feat_2, block, paths, autocast, target_shuffle)
    if ensemble:
        mean_1, mean_2 = ensemble_target(target_1), ensemble_target(target_2)
    total = torch.zeros((), device=view_1.device)
    for i, path in enumerate(paths):
        t1, t2 = (mean_1, mean_2) if ensemble else (target_1[i], target_2[i])
        if not share_prefix and best_paths:
            # the naive way, kept only so benchmarks/throughput.py can measure what sharing saves
            with torch.no_grad(), autocast():
                feat_1, feat_2 = model.forward_prefix(torch.cat([view_1, view_2]), list(best_paths)).chunk(2)
        with autocast():
            pred_1 = model.predict(feat_1, block, path).float()
            pred_2 = model.predict(feat_2, block, path).float()
        loss = byol_regression_loss(pred_1, t2) + byol_regression_loss(pred_2, t1)
        (loss * loss_scale).backward()
        total += loss.detach()
    return total / len(paths)
