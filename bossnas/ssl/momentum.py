"""The EMA (momentum) target network: schedule and update."""

from __future__ import annotations

import math
from collections.abc import Iterable

import torch


def cosine_momentum(step: int, total_steps: int, base: float = 0.99, final: float = 1.0) -> float:
    """BYOL's schedule: ``final - (final - base) * (cos(pi * step / total) + 1) / 2``.

    Starts at ``base`` and rises to ``final`` at the last step.

    >>> cosine_momentum(0, 100), cosine_momentum(100, 100)
    (0.99, 1.0)
    """
    if total_steps <= 0:
        return final
    progress = min(max(step / total_steps, 0.0), 1.0)
    return final - (final - base) * (math.cos(math.pi * progress) + 1) / 2


@torch.no_grad()
def ema_update_(target: Iterable[torch.Tensor], online: Iterable[torch.Tensor], momentum: float) -> None:
    """In place: ``target = momentum * target + (1 - momentum) * online`` for each pair.

    One fused multi-tensor call (``torch._foreach_lerp_``) instead of a Python loop.

    >>> t, o = [torch.zeros(2)], [torch.ones(2)]
    >>> ema_update_(t, o, 0.75); t[0]
    tensor([0.2500, 0.2500])
    """
    target, online = list(target), list(online)
    if len(target) != len(online):
        raise ValueError(f"{len(target)} target tensors but {len(online)} online tensors")
    if target:
        torch._foreach_lerp_(target, online, 1.0 - momentum)
