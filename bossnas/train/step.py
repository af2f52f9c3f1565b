"""One BossNAS training step: K sampled paths, two views, ensemble-bootstrapped target."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F

from bossnas.config import PREFIX_MODES
from bossnas.spaces.base import Path
from bossnas.ssl.losses import byol_regression_loss
from bossnas.ssl.targets import ensemble_target
from bossnas.supernet.siamese import SiameseSupernet

#: features -> (shuffled features, restore(outputs, dim)); see ``distributed.batch_shuffle``
TargetShuffle = Callable[[torch.Tensor], tuple[torch.Tensor, Callable[..., torch.Tensor]]]


def target_projections(model: SiameseSupernet, features: torch.Tensor, block: int, paths: Sequence[Path],
                       autocast: Callable[[], contextlib.AbstractContextManager],
                       shuffle: TargetShuffle | None = None,
                       prefix: Callable[[torch.Tensor], torch.Tensor] | None = None) -> torch.Tensor:
    """Target projections of every path, ``[K, B, D]`` float32, computed without autograd.

    ``shuffle`` (multi-process runs): the target runs on a batch shuffled across processes
    and its outputs are put back in this process's order (see ``distributed.batch_shuffle``).
    ``prefix``: the target's earlier blocks, run on the (shuffled) input first, once for all
    paths (in train mode their BatchNorm sees the same shuffled batch as the block's).
    """
    restore = None
    if shuffle is not None:
        features, restore = shuffle(features)
    with torch.inference_mode(), autocast():
        if prefix is not None:
            features = prefix(features)
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


def prediction_spread(prediction: torch.Tensor) -> torch.Tensor:
    """How much a path's predictions ``[B, D]`` vary over the images: the mean distance of the
    L2-normalised predictions to their own mean (0: the same vector for every image).

    A path that predicts nearly the same vector for every image sits near the population
    centre and is rated well for it; watching this during training shows that forming.

    >>> float(prediction_spread(torch.ones(4, 3)))
    0.0
    """
    unit = F.normalize(prediction.detach().float(), dim=-1)
    return (unit - unit.mean(0, keepdim=True)).norm(dim=-1).mean()


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
    prefix: str = "online",
    stats: dict | None = None,
) -> torch.Tensor:
    """Forward + backward of one step; returns the mean per-path loss (detached).

    ``view_1`` / ``view_2``: the two views of the batch, or lists of P views (P augmentation
    pairs of the same images); path i of the K paths sees pair ``i mod P`` only, in the
    target and in the online network (pairs past the K-th are not used). The target runs
    each path on its own pair; with ``ensemble`` every online path regresses onto the mean of
    the K normalised target projections of the other view (so, with P > 1, the ensemble spans
    paths and augmentations, as in the official multi-pair search), else onto its own path's
    projection (plain BYOL). The K path losses are summed, as their gradients are in the
    paper; ``loss_scale`` divides for gradient accumulation.

    The earlier blocks (``best_paths``) run along their best paths:

    - ``prefix="online"`` (the official code): the online side runs them through the online
      network with gradients, once per view (each view its own BatchNorm batch, as there),
      so the block's loss trains them too; the target side runs them through the target
      network (after the cross-process shuffle, when there is one). The online prefix runs
      once per step, not once per path as in the official code: its outputs are leaves whose
      gradients add up over the K paths' backward passes, then one backward runs through the
      prefix with the sum, which is the same gradient.
    - ``prefix="frozen"``: both sides take the target prefix's features, without gradients,
      computed once on all views in one batch (the prefix must be in eval mode).

    ``share_prefix=False`` recomputes the prefix for every online path (and for every target
    path), the naive implementation the official code has; only for benchmarks and tests.
    ``target_shuffle`` shuffles the target's batch across processes for its BatchNorm
    (multi-process runs only; see ``distributed.batch_shuffle``). ``stats``, when given, gets
    ``prediction_spread``: the mean over paths and views of :func:`prediction_spread`.
    """
    if prefix not in PREFIX_MODES:
        raise ValueError(f"unknown prefix mode {prefix!r}; expected online or frozen")
    pairs = view_pairs(view_1, view_2)[: len(paths)]
    n_pairs = len(pairs)
    best = list(best_paths)
    online_prefix = bool(best) and prefix == "online"
    target_prefix = (lambda x: model.forward_prefix(x, best)) if online_prefix else None
    prefix_graph: list[tuple[torch.Tensor, torch.Tensor]] = []  # (online prefix output, its leaf)
    if online_prefix:
        if share_prefix:
            with autocast():
                outputs = [(model.online_prefix(v1, best), model.online_prefix(v2, best)) for v1, v2 in pairs]
            features = []
            for out_1, out_2 in outputs:
                leaf_1, leaf_2 = out_1.detach().requires_grad_(), out_2.detach().requires_grad_()
                prefix_graph += [(out_1, leaf_1), (out_2, leaf_2)]
                features.append((leaf_1, leaf_2))
        else:
            features = pairs  # recomputed per path below
    elif best:
        with torch.no_grad(), autocast():
            flat = torch.cat([v for pair in pairs for v in pair])
            chunks = model.forward_prefix(flat, best).chunk(2 * n_pairs)
            features = [(chunks[2 * j], chunks[2 * j + 1]) for j in range(n_pairs)]
    else:
        features = pairs
    if not share_prefix and best:
        target_1, target_2 = (
            torch.cat([target_projections(model, _naive_target_input(model, pairs[pair_of_path(i, n_pairs)][view], best, online_prefix),
                                          block, [p], autocast, target_shuffle, target_prefix) for i, p in enumerate(paths)])
            for view in (0, 1)
        )
    else:
        target_inputs = pairs if online_prefix else features
        target_1 = _paired_targets(model, [f[0] for f in target_inputs], block, paths, autocast, target_shuffle, target_prefix)
        target_2 = _paired_targets(model, [f[1] for f in target_inputs], block, paths, autocast, target_shuffle, target_prefix)
    if ensemble:
        mean_1, mean_2 = ensemble_target(target_1), ensemble_target(target_2)
    total = torch.zeros((), device=pairs[0][0].device)
    spread = torch.zeros((), device=pairs[0][0].device)
    for i, path in enumerate(paths):
        t1, t2 = (mean_1, mean_2) if ensemble else (target_1[i], target_2[i])
        feat_1, feat_2 = features[pair_of_path(i, n_pairs)]
        if not share_prefix and best:
            # the naive way, kept only so benchmarks/throughput.py can measure what sharing
            # saves and the tests can check that sharing changes nothing
            pair = pairs[pair_of_path(i, n_pairs)]
            if online_prefix:
                with autocast():
                    feat_1, feat_2 = model.online_prefix(pair[0], best), model.online_prefix(pair[1], best)
            else:
                with torch.no_grad(), autocast():
                    feat_1, feat_2 = model.forward_prefix(torch.cat(pair), best).chunk(2)
        with autocast():
            pred_1 = model.predict(feat_1, block, path).float()
            pred_2 = model.predict(feat_2, block, path).float()
        loss = byol_regression_loss(pred_1, t2) + byol_regression_loss(pred_2, t1)
        (loss * loss_scale).backward()
        total += loss.detach()
        if stats is not None:
            spread += (prediction_spread(pred_1) + prediction_spread(pred_2)) / 2
    # one backward through the online prefix with the gradient the K paths left on its outputs
    used = [(out, leaf.grad) for out, leaf in prefix_graph if leaf.grad is not None]
    if used:
        torch.autograd.backward([out for out, _ in used], [grad for _, grad in used])
    if stats is not None:
        stats["prediction_spread"] = float(spread) / len(paths)
    return total / len(paths)


def _naive_target_input(model: SiameseSupernet, view: torch.Tensor, best: list[Path], online_prefix: bool) -> torch.Tensor:
    """The naive step's target input of one path: the raw view when the target prefix runs
    inside :func:`target_projections` (online mode), else the eval-mode prefix features."""
    if online_prefix:
        return view
    with torch.no_grad():
        return model.forward_prefix(view, best)


def _paired_targets(model: SiameseSupernet, features: Sequence[torch.Tensor], block: int, paths: Sequence[Path],
                    autocast: Callable[[], contextlib.AbstractContextManager],
                    shuffle: TargetShuffle | None,
                    prefix: Callable[[torch.Tensor], torch.Tensor] | None = None) -> torch.Tensor:
    """``[K, B, D]`` target projections, path i on ``features[i mod P]`` (one view of each pair).

    The paths sharing a pair run in one call, so one pair is exactly the single-pair step.
    """
    n_pairs = len(features)
    if n_pairs == 1:
        return target_projections(model, features[0], block, paths, autocast, shuffle, prefix)
    rows: list[torch.Tensor | None] = [None] * len(paths)
    for j, feats in enumerate(features):
        users = list(range(j, len(paths), n_pairs))
        out = target_projections(model, feats, block, [paths[i] for i in users], autocast, shuffle, prefix)
        for i, row in zip(users, out):
            rows[i] = row
    return torch.stack(rows)  # type: ignore[arg-type]
