"""Rate every path of a block: BN recalibration, population centre, loss against the centre."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from bossnas import distributed as dist
from bossnas.spaces.base import Path
from bossnas.ssl.losses import byol_regression_loss
from bossnas.ssl.targets import population_centre
from bossnas.supernet.siamese import SiameseSupernet


def _norm_layers(modules: Sequence[nn.Module]) -> list[nn.modules.batchnorm._BatchNorm]:
    return [m for mod in modules for m in mod.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]


def _reset_running_stats(norms: Sequence[nn.modules.batchnorm._BatchNorm]) -> None:
    # one foreach call per kind of buffer: a supernet block holds one BatchNorm per width
    # of every layer, and resetting them one by one cost more than some paths' forwards
    tracked = [n for n in norms if n.track_running_stats and n.running_mean is not None]
    if not tracked:
        return
    torch._foreach_zero_([n.running_mean for n in tracked] + [n.num_batches_tracked for n in tracked])
    variances = [n.running_var for n in tracked]
    torch._foreach_zero_(variances)
    torch._foreach_add_(variances, 1.0)


@torch.no_grad()
def _recalibrate_norms(norms: Sequence[nn.modules.batchnorm._BatchNorm], forward: Callable[[torch.Tensor], object],
                       batches: Sequence[torch.Tensor]) -> None:
    """Reset and re-estimate the statistics of ``norms``; they are left in eval mode."""
    _reset_running_stats(norms)
    saved = [n.momentum for n in norms]
    for n in norms:
        n.momentum = None  # cumulative moving average: every batch weighs the same
        n.train()
    for batch in batches:
        forward(batch)
    for n, m in zip(norms, saved):
        n.momentum = m
        n.eval()


@torch.no_grad()
def recalibrate_bn(modules: Sequence[nn.Module], forward: Callable[[torch.Tensor], object], batches: Sequence[torch.Tensor]) -> None:
    """Reset the BatchNorm statistics in ``modules`` and re-estimate them as an exact average over ``batches``.

    Shared weights leave running statistics that belong to no single path; a few training
    batches along the path give it its own. Leaves the modules in eval mode.
    """
    for mod in modules:
        mod.eval()
    _recalibrate_norms(_norm_layers(modules), forward, batches)


def _block_norms_in_eval(model: SiameseSupernet, block: int,
                         recalibrate_predictor: bool = True) -> list[nn.modules.batchnorm._BatchNorm]:
    """Put the block's online and target modules in eval mode; return the norm layers to recalibrate.

    Without ``recalibrate_predictor`` the predictor's norms are reset to mean 0 / variance 1
    here and left out: in eval mode they then only apply their affine weights.
    """
    modules = model.online_block_modules(block) + model.target_block_modules(block)
    for mod in modules:
        mod.eval()
    norms = _norm_layers(modules)
    if recalibrate_predictor:
        return norms
    predictor = _norm_layers([model.online_heads[block].predictor])
    _reset_running_stats(predictor)
    return [n for n in norms if all(n is not p for p in predictor)]


def _batched(fn: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor, batch_size: int) -> torch.Tensor:
    if x.shape[0] <= batch_size:
        return fn(x)
    return torch.cat([fn(chunk) for chunk in x.split(batch_size)])


@torch.no_grad()
def path_outputs(
    model: SiameseSupernet,
    block: int,
    path: Path,
    recal_features: Sequence[torch.Tensor],
    rate_features: tuple[torch.Tensor, torch.Tensor],
    batch_size: int,
    bn_recalibration: bool = True,
    autocast: Callable[[], contextlib.AbstractContextManager] = contextlib.nullcontext,
    norms: Sequence[nn.modules.batchnorm._BatchNorm] | None = None,
    recalibrate_predictor: bool = True,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Target projections and normalised online predictions of one path, each ``[2, N, D]``.

    ``recal_features`` / ``rate_features`` are the inputs of the block (the frozen prefix
    already applied, once for all paths). BN statistics are first recalibrated along the path.
    ``norms`` (the block's norm layers, with the block already in eval mode) lets a caller
    rating many paths find them once instead of once per path. ``recalibrate_predictor=False``
    leaves the predictor's norms out of the recalibration (see :func:`rate_block`).
    """
    if norms is None:
        norms = _block_norms_in_eval(model, block, recalibrate_predictor)
    if bn_recalibration:
        def both(x: torch.Tensor) -> None:
            with autocast():
                model.predict(x, block, path)
                model.project_target(x, block, path)
        _recalibrate_norms(norms, both, recal_features)
    with autocast():
        # raw target projections: the population centre is their plain average, as in the
        # official ratings (the training ensemble, in contrast, averages normalised ones)
        target = torch.stack([
            _batched(lambda x: model.project_target(x, block, path), v, batch_size).float() for v in rate_features
        ])
        prediction = torch.stack([
            F.normalize(_batched(lambda x: model.predict(x, block, path), v, batch_size).float(), dim=-1)
            for v in rate_features
        ])
    return target, prediction


def _image_losses(prediction: torch.Tensor, centre: torch.Tensor) -> torch.Tensor:
    """``[N]``: the symmetric BYOL loss of one path's predictions on each rating image."""
    return (byol_regression_loss(prediction[0], centre[1], reduction="none")
            + byol_regression_loss(prediction[1], centre[0], reduction="none"))


def ratings_against_centre(predictions: Sequence[torch.Tensor], centre: torch.Tensor) -> list[float]:
    """Symmetric BYOL loss of each path's predictions ``[2, N, D]`` against the centre ``[2, N, D]``.

    View 1's prediction is compared with view 2's centre and vice versa, as in training.
    """
    return [float(_image_losses(p, centre).mean()) for p in predictions]


def half_ratings_against_centre(predictions: Sequence[torch.Tensor], centre: torch.Tensor) -> list[tuple[float, float]]:
    """Each path's rating on the first and on the second half of the rating images (the centre
    of an image is the mean over paths of that image alone, so a half's rating is the same as
    rating on that half only): what :mod:`bossnas.search.noise` measures the ratings' noise with."""
    halves = []
    for p in predictions:
        losses = _image_losses(p, centre)
        cut = max(1, losses.shape[0] // 2)
        halves.append((float(losses[:cut].mean()), float(losses[cut:].mean()) if losses.shape[0] > cut else float("nan")))
    return halves


@dataclass(frozen=True)
class BlockRatings:
    """:func:`rate_block_with_halves`: each path's rating, and its ratings on the two halves of the images."""

    ratings: list[float]
    halves: list[tuple[float, float]]


@torch.no_grad()
def rate_block(
    model: SiameseSupernet,
    block: int,
    paths: Sequence[Path],
    recal_features: Sequence[torch.Tensor],
    rate_features: tuple[torch.Tensor, torch.Tensor],
    batch_size: int,
    bn_recalibration: bool = True,
    autocast: Callable[[], contextlib.AbstractContextManager] = contextlib.nullcontext,
    progress: Callable[[int], None] | None = None,
    distributed: bool = False,
    recalibrate_predictor: bool = True,
) -> list[float]:
    """The rating (lower is better) of each path of ``block`` (see :func:`rate_block_with_halves`)."""
    return rate_block_with_halves(model, block, paths, recal_features, rate_features, batch_size, bn_recalibration,
                                  autocast, progress, distributed, recalibrate_predictor).ratings


@torch.no_grad()
def rate_block_with_halves(
    model: SiameseSupernet,
    block: int,
    paths: Sequence[Path],
    recal_features: Sequence[torch.Tensor],
    rate_features: tuple[torch.Tensor, torch.Tensor],
    batch_size: int,
    bn_recalibration: bool = True,
    autocast: Callable[[], contextlib.AbstractContextManager] = contextlib.nullcontext,
    progress: Callable[[int], None] | None = None,
    distributed: bool = False,
    recalibrate_predictor: bool = True,
) -> BlockRatings:
    """The rating (lower is better) of each path of ``block``, and its ratings on the two
    halves of the rating images (the ratings' noise, :mod:`bossnas.search.noise`).

    For each path: recalibrate BN along it, add its raw (unnormalised) target projections of
    both rating views to a running sum (the population centre is their mean over all paths) and
    keep its online predictions. A path's rating is the symmetric BYOL loss of its
    predictions against the centre, averaged over the rating images.

    With ``distributed`` (inside a torchrun process group; every process passes the same
    inputs) each process rates every world-th path; the centre is summed in path order and
    the ratings gathered, so every process returns exactly the single-process ratings.
    ``progress(done)`` is called once per round of paths on every process, so it may run
    collectives (the runner checks for a stop request there). ``recalibrate_predictor=False``
    rates with the predictor's BatchNorm at mean 0 / variance 1, as the official code does.
    """
    world, me = (dist.world_size(), dist.rank()) if distributed else (1, 0)
    count = len(paths)
    if count == 0:
        return BlockRatings([], [])
    norms = _block_norms_in_eval(model, block, recalibrate_predictor)
    centre_sum = None
    predictions = []
    for start in range(0, count, world):
        target = None
        if start + me < count:
            target, prediction = path_outputs(model, block, paths[start + me], recal_features, rate_features,
                                              batch_size, bn_recalibration, autocast, norms)
            predictions.append(prediction)
        centre_sum = dist.add_round_(centre_sum, target, start, count) if world > 1 else (
            target if centre_sum is None else centre_sum.add_(target))
        if progress is not None:
            progress(min(count, start + world))
    centre = population_centre(centre_sum, count)
    mine, halves = ratings_against_centre(predictions, centre), half_ratings_against_centre(predictions, centre)
    if world == 1:
        return BlockRatings(mine, halves)
    first, second = (dist.gather_sharded([h[i] for h in halves], count, centre_sum.device) for i in (0, 1))
    return BlockRatings(dist.gather_sharded(mine, count, centre_sum.device), list(zip(first, second)))
