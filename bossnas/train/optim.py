"""Optimizers (SGD, LARS) and the cosine learning-rate schedule with linear warm-up."""

from __future__ import annotations

import math
from collections.abc import Iterable

import torch
from torch import nn

from bossnas.errors import BossNASError


def warmup_cosine_lr(step: int, total_steps: int, base_lr: float, warmup_steps: int, final_lr: float = 0.0) -> float:
    """Linear warm-up from 0 to ``base_lr`` over ``warmup_steps``, then cosine decay to ``final_lr``.

    >>> warmup_cosine_lr(0, 10, 1.0, 0), warmup_cosine_lr(10, 10, 1.0, 0)
    (1.0, 0.0)
    """
    if warmup_steps > 0 and step < warmup_steps:
        return base_lr * (step + 1) / warmup_steps
    span = max(1, total_steps - warmup_steps)
    progress = min(1.0, (step - warmup_steps) / span)
    return final_lr + (base_lr - final_lr) * 0.5 * (1 + math.cos(math.pi * progress))


class LARS(torch.optim.Optimizer):
    """Layer-wise adaptive rate scaling (You et al., 2017), as in BYOL and the BossNAS configs.

    Weight matrices get ``trust_coef * ||w|| / (||g|| + wd * ||w||)`` times the step; biases
    and norm parameters (1-D) get neither weight decay nor adaptation, the usual exclusion.
    """

    def __init__(self, params: Iterable, lr: float, momentum: float = 0.9, weight_decay: float = 1e-6,
                 trust_coef: float = 0.001):
        super().__init__(params, dict(lr=lr, momentum=momentum, weight_decay=weight_decay, trust_coef=trust_coef))

    @torch.no_grad()
    def step(self, closure=None):  # type: ignore[override]
        loss = closure() if closure is not None else None
        for group in self.param_groups:
            for p in group["params"]:
                if p.grad is None:
                    continue
                grad = p.grad
                if p.dim() > 1:
                    grad = grad.add(p, alpha=group["weight_decay"])
                    w_norm, g_norm = torch.linalg.vector_norm(p), torch.linalg.vector_norm(grad)
                    trust = torch.where(
                        (w_norm > 0) & (g_norm > 0), group["trust_coef"] * w_norm / g_norm, torch.ones_like(w_norm)
                    )
                    grad = grad.mul(trust)
                state = self.state[p]
                if "momentum_buffer" not in state:
                    state["momentum_buffer"] = grad.clone()
                else:
                    state["momentum_buffer"].mul_(group["momentum"]).add_(grad)
                p.add_(state["momentum_buffer"], alpha=-group["lr"])
        return loss


def build_optimizer(name: str, params: list[nn.Parameter], lr: float, momentum: float, weight_decay: float) -> torch.optim.Optimizer:
    """SGD (weight decay on weight matrices only) or LARS; fused multi-tensor kernels where PyTorch has them."""
    decay = [p for p in params if p.dim() > 1]
    no_decay = [p for p in params if p.dim() <= 1]
    if name == "sgd":
        groups = [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
        return torch.optim.SGD(groups, lr=lr, momentum=momentum, foreach=True)
    if name == "lars":
        return LARS(params, lr=lr, momentum=momentum, weight_decay=weight_decay)
    raise BossNASError(f"unknown optimizer '{name}'; choose sgd or lars")


def set_lr(optimizer: torch.optim.Optimizer, lr: float) -> None:
    for group in optimizer.param_groups:
        group["lr"] = lr
