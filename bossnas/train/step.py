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


#: one view of the batch, or one per augmentation pair (``[v_0, ..., v_{P-1}]``)
Views = torch.Tensor | Sequence[torch.Tensor]


def view_pairs(view_1: Views, view_2: Views) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """The P augmentation pairs ``[(v1_0, v2_0), ...]`` of a step's views (one tensor each: P = 1)."""
    if isinstance(view_1, torch.Tensor) and isinstance(view_2, torch.Tensor):
        return [(view_1, view_2)]
    if isinstance(view_1, torch.Tensor) or isinstance(view_2, torch.Tensor) or len(view_1) != len(view_2) or not view_1:
        raise ValueError("view_1 and view_2 must both be tensors or both non-empty lists of the same length")
    return list(zip(view_1, view_2))


def pair_of_path(index: int, pairs: int) -> int:
    """The augmentation pair that path ``index`` of a step uses: ``index mod pairs``.

    >>> [pair_of_path(i, 4) for i in range(6)]
    [0, 1, 2, 3, 0, 1]
    """
    return index % pairs


def bossnas_step(
    model: SiameseSupernet,
    block: int,
    paths: Sequence[Path],
    view_1: Views,
    view_2: Views,
    best_paths: Sequence[Path] = (),
    ensemble: bool = True,
    loss_scale: float = 1.0,
    autocast: Callable[[], contextlib.AbstractContextManager] = contextlib.nullcontext,
    share_prefix: bool = True,
    target_shuffle: TargetShuffle | None = None,
) -> torch.Tensor:
    """Forward + backward of one step; returns the mean per-path loss (detached).

    ``view_1`` / ``view_2``: the two views of the batch, or lists of P views (P augmentation
    pairs of the same images); path i of the K paths sees pair ``i mod P`` only, in the
    target and in the online network (pairs past the K-th are not used). The frozen earlier
    blocks run once on all views (in one batch: they are in eval mode, so batching changes
    nothing). The target runs each path on its own pair; with ``ensemble`` every online path
    regresses onto the mean of the K normalised target projections of the other view (so,
    with P > 1, the ensemble spans paths and augmentations, as in the official multi-pair
    search), else onto its own path's projection (plain BYOL). The K path losses are
    summed, as their gradients are in the paper; ``loss_scale`` divides for gradient
    accumulation. ``share_prefix=False`` recomputes the prefix for every online path (and
    once more for the targets), the naive implementation; only for benchmarks.
    ``target_shuffle`` shuffles the target's batch across processes for its BatchNorm
    (multi-process runs only; see ``distributed.batch_shuffle``).
    """
    pairs = view_pairs(view_1, view_2)[: len(paths)]
    n_pairs = len(pairs)
    best = list(best_paths)
    with torch.no_grad(), autocast():
        if best:
            flat = torch.cat([v for pair in pairs for v in pair])
            chunks = model.forward_prefix(flat, best).chunk(2 * n_pairs)
            features = [(chunks[2 * j], chunks[2 * j + 1]) for j in range(n_pairs)]
        else:
            features = pairs
    if not share_prefix and best:
        target_1, target_2 = (
            torch.cat([target_projections(model, model.forward_prefix(pairs[pair_of_path(i, n_pairs)][view], best),
                                          block, [p], autocast, target_shuffle) for i, p in enumerate(paths)])
            for view in (0, 1)
        )
    else:
        target_1 = _paired_targets(model, [f[0] for f in features], block, paths, autocast, target_shuffle)
        target_2 = _paired_targets(model, [f[1] for f in features], block, paths, autocast, target_shuffle)
    if ensemble:
        mean_1, mean_2 = ensemble_target(target_1), ensemble_target(target_2)
    total = torch.zeros((), device=pairs[0][0].device)
    for i, path in enumerate(paths):
        t1, t2 = (mean_1, mean_2) if ensemble else (target_1[i], target_2[i])
        feat_1, feat_2 = features[pair_of_path(i, n_pairs)]
        if not share_prefix and best:
            # the naive way, kept only so benchmarks/throughput.py can measure what sharing saves
            with torch.no_grad(), autocast():
                feat_1, feat_2 = model.forward_prefix(torch.cat(pairs[pair_of_path(i, n_pairs)]), best).chunk(2)
        with autocast():
            pred_1 = model.predict(feat_1, block, path).float()
            pred_2 = model.predict(feat_2, block, path).float()
        loss = byol_regression_loss(pred_1, t2) + byol_regression_loss(pred_2, t1)
        (loss * loss_scale).backward()
        total += loss.detach()
    return total / len(paths)


def _paired_targets(model: SiameseSupernet, features: Sequence[torch.Tensor], block: int, paths: Sequence[Path],
                    autocast: Callable[[], contextlib.AbstractContextManager],
                    shuffle: TargetShuffle | None) -> torch.Tensor:
    """``[K, B, D]`` target projections, path i on ``features[i mod P]`` (one view of each pair).

    The paths sharing a pair run in one call, so one pair is exactly the single-pair step.
    """
    n_pairs = len(features)
    if n_pairs == 1:
        return target_projections(model, features[0], block, paths, autocast, shuffle)
    rows: list[torch.Tensor | None] = [None] * len(paths)
    for j, feats in enumerate(features):
        users = list(range(j, len(paths), n_pairs))
        out = target_projections(model, feats, block, [paths[i] for i in users], autocast, shuffle)
        for i, row in zip(users, out):
            rows[i] = row
    return torch.stack(rows)  # type: ignore[arg-type]
