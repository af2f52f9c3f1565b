"""Optimizers (SGD, LARS) and the cosine learning-rate schedule with linear warm-up."""

from __future__ import annotations

import math
from collections.abc import Collection, Iterable

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

    Adapted tensors get ``trust_coef * ||w|| / ||g + wd * w||`` times the step, with weight
    decay; excluded ones get neither. Which are excluded: a param group's ``lars_exclude``
    (True / False) where it has one, else every tensor of one dimension (biases and norm
    weights, the usual exclusion).
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
                if not group.get("lars_exclude", p.dim() <= 1):
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


def build_optimizer(name: str, params: list[nn.Parameter], lr: float, momentum: float, weight_decay: float,
                    lars_excluded: Collection[nn.Parameter] | None = None) -> torch.optim.Optimizer:
    """SGD (weight decay on weight matrices only) or LARS; fused multi-tensor kernels where PyTorch has them.

    ``lars_excluded`` (LARS only): the tensors that get neither adaptation nor weight decay;
    None: every 1-D tensor (``train.lars_exclude=norms``).
    """
    decay = [p for p in params if p.dim() > 1]
    no_decay = [p for p in params if p.dim() <= 1]
    if name == "sgd":
        groups = [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
        return torch.optim.SGD(groups, lr=lr, momentum=momentum, foreach=True)
    if name == "lars":
        if lars_excluded is None:
            return LARS(params, lr=lr, momentum=momentum, weight_decay=weight_decay)
        excluded = {id(p) for p in lars_excluded}
        groups = [{"params": [p for p in params if id(p) not in excluded], "lars_exclude": False},
                  {"params": [p for p in params if id(p) in excluded], "lars_exclude": True}]
        return LARS([g for g in groups if g["params"]], lr=lr, momentum=momentum, weight_decay=weight_decay)
    raise BossNASError(f"unknown optimizer '{name}'; choose sgd or lars")


def set_lr(optimizer: torch.optim.Optimizer, lr: float) -> None:
    for group in optimizer.param_groups:
        group["lr"] = lr
