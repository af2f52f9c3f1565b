"""Online and target supernets with per-block projection / prediction heads.

Written once for every search space: it only uses the space's blocks, paths and output
widths, and the backbone's ``forward_block``.
"""

from __future__ import annotations

import copy

import torch
import torch.nn.functional as F
from torch import nn

from bossnas.spaces.base import Path, SearchSpace
from bossnas.ssl.heads import (
    ChannelAdapter,
    PredictionHead,
    ProjectionHead,
    kaiming_init_,
    normal_init_,
)


class BlockHeads(nn.Module):
    """Channel adapter + projection neck (+ predictor on the online side) of one block."""

    def __init__(self, out_widths: list[int], adapter_width: int, hidden_dim: int, proj_dim: int, predictor: bool,
                 init: str = "torch"):
        super().__init__()
        self.adapter = ChannelAdapter(out_widths, adapter_width)
        self.projector = ProjectionHead(self.adapter.out_width, hidden_dim, proj_dim)
        self.predictor = PredictionHead(proj_dim, hidden_dim, proj_dim) if predictor else None
        if init == "official":
            kaiming_init_(self.projector)
            if self.predictor is not None:
                normal_init_(self.predictor)
        elif init != "torch":
            raise ValueError(f"unknown head init {init!r}; expected official or torch")

    def project(self, features: torch.Tensor) -> torch.Tensor:
        return self.projector(self.adapter(features))

    def ema_modules(self) -> list[nn.Module]:
        """The modules the target copies (everything but the predictor)."""
        return [self.adapter, self.projector]


class SiameseSupernet(nn.Module):
    """BYOL-style pair of supernets: ``online`` (trained) and ``target`` (EMA of online).

    ``predict`` runs a block path through the online backbone, projector and predictor;
    ``project_target`` runs it through the target backbone and projector. The blocks before
    the one being trained run along their best paths: ``forward_prefix`` on the target
    backbone, ``online_prefix`` on the online one (when they keep learning).

    ``target_adapter="fixed"``: the target's channel adapters are copies of the online ones
    taken when their block starts and never EMA-updated (the official code copies them at
    initialisation and leaves them out of its momentum update); ``"ema"``: they follow the
    online adapters like the rest of the target. ``head_init``: ``"official"`` (Kaiming-normal
    necks, normal(0, 0.01) predictors, zero biases) or ``"torch"`` (PyTorch's defaults).
    """

    def __init__(self, space: SearchSpace, hidden_dim: int = 1024, proj_dim: int = 256, adapter_width: int | None = None,
                 target_adapter: str = "fixed", head_init: str = "official"):
        super().__init__()
        if target_adapter not in ("fixed", "ema"):
            raise ValueError(f"unknown target_adapter {target_adapter!r}; expected fixed or ema")
        self.space = space
        self.target_adapter = target_adapter
        self.online = space.build_supernet()
        heads = []
        for spec in space.blocks:
            widths = sorted({space.out_channels(spec.index, p) for p in space.block_paths(spec.index)})
            heads.append(BlockHeads(widths, adapter_width or max(widths), hidden_dim, proj_dim, predictor=True,
                                    init=head_init))
        self.online_heads = nn.ModuleList(heads)
        self.target = copy.deepcopy(self.online)
        self.target_heads = nn.ModuleList(copy.deepcopy(nn.ModuleList(h.ema_modules())) for h in heads)
        for p in list(self.target.parameters()) + list(self.target_heads.parameters()):
            p.requires_grad_(False)

    # ------------------------------------------------------------------ forward passes
    def predict(self, features: torch.Tensor, block: int, path: Path) -> torch.Tensor:
        """Online prediction ``q(g(f(x)))`` of one path (gradients flow)."""
        heads = self.online_heads[block]
        return heads.predictor(heads.project(self.online.forward_block(features, block, path)))

    def project_target(self, features: torch.Tensor, block: int, path: Path) -> torch.Tensor:
        """Target projection ``g'(f'(x))`` of one path."""
        adapter, projector = self.target_heads[block]
        return projector(adapter(self.target.forward_block(features, block, path)))

    def forward_prefix(self, images: torch.Tensor, best_paths: list[Path]) -> torch.Tensor:
        """Features entering block ``len(best_paths)``: the target's blocks along their best paths."""
        x = images
        for block, path in enumerate(best_paths):
            x = self.target.forward_block(x, block, path)
        return x

    def online_prefix(self, images: torch.Tensor, best_paths: list[Path]) -> torch.Tensor:
        """The same through the online blocks (with gradients, when they keep learning)."""
        x = images
        for block, path in enumerate(best_paths):
            x = self.online.forward_block(x, block, path)
        return x

    # ------------------------------------------------------------------ parameter groups
    def online_block_modules(self, block: int) -> list[nn.Module]:
        return [self.online.block_module(block), self.online_heads[block]]

    def target_block_modules(self, block: int) -> list[nn.Module]:
        return [self.target.block_module(block), self.target_heads[block]]

    def trainable_parameters(self, block: int, prefix_learns: bool = False) -> list[nn.Parameter]:
        """What block ``block``'s optimizer updates: the block and its heads, and with
        ``prefix_learns`` the online blocks before it too (only their best paths get gradients)."""
        earlier = [p for b in range(block) for p in self.online.block_module(b).parameters()] if prefix_learns else []
        return earlier + [p for m in self.online_block_modules(block) for p in m.parameters()]

    def ema_pairs(self, block: int, prefix_learns: bool = False) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        """Matching (target, online) parameter lists that the EMA updates while ``block`` trains.

        The block, its adapter (unless the target adapter is fixed) and its projector, not its
        predictor; with ``prefix_learns`` the earlier blocks' backbones too, as the official
        momentum update covers the whole backbone.
        """
        blocks = range(block + 1) if prefix_learns else [block]
        online = [p for b in blocks for p in self.online.block_module(b).parameters()]
        target = [p for b in blocks for p in self.target.block_module(b).parameters()]
        t_adapter, t_projector = self.target_heads[block]
        heads = self.online_heads[block]
        pairs = [(t_projector, heads.projector)] if self.target_adapter == "fixed" else [(t_adapter, heads.adapter), (t_projector, heads.projector)]
        for t_mod, o_mod in pairs:
            online += list(o_mod.parameters())
            target += list(t_mod.parameters())
        if len(online) != len(target) or any(a.shape != b.shape for a, b in zip(online, target)):
            raise RuntimeError("online and target supernets are out of step")
        return target, online

    def official_lars_excluded(self, params: list[nn.Parameter]) -> list[nn.Parameter]:
        """Of ``params``, those the official LARS config leaves unadapted and undecayed: every
        bias, and the weights of the projection / prediction MLPs' BatchNorms (its name
        patterns ``bias`` and ``(bn|gn)N.weight`` match only those); the backbone's per-width
        and the adapters' BatchNorm scales stay adapted."""
        head_norms = {id(p) for heads in self.online_heads for mlp in (heads.projector, heads.predictor) if mlp is not None
                      for m in mlp.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm) for p in m.parameters()}
        biases = {id(p) for name, p in self.named_parameters() if name.rsplit(".", 1)[-1] == "bias"}
        return [p for p in params if id(p) in head_norms or id(p) in biases]

    @torch.no_grad()
    def sync_target(self, block: int) -> None:
        """Start a block with target == online, its adapter included (the EMA then drifts from
        there; a fixed target adapter stays this copy of the online adapter's initial weights)."""
        online_modules = [self.online.block_module(block), nn.ModuleList(self.online_heads[block].ema_modules())]
        for t_mod, o_mod in zip(self.target_block_modules(block), online_modules):
            torch._foreach_copy_(list(t_mod.parameters()), list(o_mod.parameters()))
            for t_buf, o_buf in zip(t_mod.buffers(), o_mod.buffers()):
                t_buf.copy_(o_buf)


def normalized(x: torch.Tensor) -> torch.Tensor:
    return F.normalize(x.float(), dim=-1)
