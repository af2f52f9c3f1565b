"""Rate every path of a block: BN recalibration, population centre, loss against the centre."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from bossnas.spaces.base import Path
from bossnas.ssl.losses import byol_regression_loss
from bossnas.supernet.siamese import SiameseSupernet


def _norm_layers(modules: Sequence[nn.Module]) -> list[nn.modules.batchnorm._BatchNorm]:
    return [m for mod in modules for m in mod.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]


@torch.no_grad()
def recalibrate_bn(modules: Sequence[nn.Module], forward: Callable[[torch.Tensor], object], batches: Sequence[torch.Tensor]) -> None:
    """Reset the BatchNorm statistics in ``modules`` and re-estimate them as an exact average over ``batches``.

    Shared weights leave running statistics that belong to no single path; a few training
    batches along the path give it its own. Leaves the modules in eval mode.
    """
    norms = _norm_layers(modules)
    saved = [n.momentum for n in norms]
    for n in norms:
        n.reset_running_stats()
        n.momentum = None  # cumulative moving average: every batch weighs the same
        n.train()
    for batch in batches:
        forward(batch)
    for n, m in zip(norms, saved):
        n.momentum = m
    for mod in modules:
        mod.eval()


def _batched(fn: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor, batch_size: int) -> torch.Tensor:
    return torch.cat([fn(chunk) for chunk in x.split(batch_size)])


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
) -> list[float]:
    """The rating (lower is better) of each path of ``block``.

    ``recal_features`` / ``rate_features`` are the inputs of the block (the frozen prefix
    already applied, once for all paths). For each path: recalibrate BN along it, then the
    target projections of both rating views feed a running sum (the population centre is
    their mean over all paths) and the online predictions are kept. A path's rating is the
    symmetric BYOL loss of its predictions against the centre of the other view, averaged
    over the rating images.
    """
    online_mods = model.online_block_modules(block)
    target_mods = model.target_block_modules(block)
    view_1, view_2 = rate_features
    n = view_1.shape[0]
    centre = None
    predictions = []
    for i, path in enumerate(paths):
        if bn_recalibration:
            def both(x: torch.Tensor, path: Path = path) -> None:
                with autocast():
                    model.predict(x, block, path)
                    model.project_target(x, block, path)
            recalibrate_bn(online_mods + target_mods, both, recal_features)
        for mod in online_mods + target_mods:
            mod.eval()
        with autocast():
            t = torch.stack([
                F.normalize(_batched(lambda x: model.project_target(x, block, path), v, batch_size).float(), dim=-1)
                for v in (view_1, view_2)
            ])
            p = torch.stack([
                F.normalize(_batched(lambda x: model.predict(x, block, path), v, batch_size).float(), dim=-1)
                for v in (view_1, view_2)
            ])
        centre = t if centre is None else centre.add_(t)
        predictions.append(p)
        if progress is not None:
            progress(i + 1)
    if centre is None:
        return []
    centre = centre / len(paths)
    ratings = []
    for p in predictions:
        loss = byol_regression_loss(p[0], centre[1], reduction="none") + byol_regression_loss(p[1], centre[0], reduction="none")
        ratings.append(float(loss.sum()) / n)
    return ratings
