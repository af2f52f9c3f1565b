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
from bossnas.ssl.heads import ChannelAdapter, PredictionHead, ProjectionHead


class BlockHeads(nn.Module):
    """Channel adapter + projection neck (+ predictor on the online side) of one block."""

    def __init__(self, out_widths: list[int], adapter_width: int, hidden_dim: int, proj_dim: int, predictor: bool):
        super().__init__()
        self.adapter = ChannelAdapter(out_widths, adapter_width)
        self.projector = ProjectionHead(self.adapter.out_width, hidden_dim, proj_dim)
        self.predictor = PredictionHead(proj_dim, hidden_dim, proj_dim) if predictor else None

    def project(self, features: torch.Tensor) -> torch.Tensor:
        return self.projector(self.adapter(features))

    def ema_modules(self) -> list[nn.Module]:
        """The modules shared with the target copy (everything but the predictor)."""
        return [self.adapter, self.projector]


class SiameseSupernet(nn.Module):
    """BYOL-style pair of supernets: ``online`` (trained) and ``target`` (EMA of online).

    ``predict`` runs a block path through the online backbone, projector and predictor;
    ``project_target`` runs it through the target backbone and projector. Earlier, frozen
    blocks are run by ``forward_prefix`` on the target backbone along their best paths.
    """

    def __init__(self, space: SearchSpace, hidden_dim: int = 1024, proj_dim: int = 256, adapter_width: int | None = None):
        super().__init__()
        self.space = space
        self.online = space.build_supernet()
        heads = []
        for spec in space.blocks:
            widths = sorted({space.out_channels(spec.index, p) for p in space.block_paths(spec.index)})
            heads.append(BlockHeads(widths, adapter_width or max(widths), hidden_dim, proj_dim, predictor=True))
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
        """Features entering block ``len(best_paths)``: the frozen target blocks along their best paths."""
        x = images
        for block, path in enumerate(best_paths):
            x = self.target.forward_block(x, block, path)
        return x

    # ------------------------------------------------------------------ parameter groups
    def online_block_modules(self, block: int) -> list[nn.Module]:
        return [self.online.block_module(block), self.online_heads[block]]

    def target_block_modules(self, block: int) -> list[nn.Module]:
        return [self.target.block_module(block), self.target_heads[block]]

    def trainable_parameters(self, block: int) -> list[nn.Parameter]:
        return [p for m in self.online_block_modules(block) for p in m.parameters()]

    def ema_pairs(self, block: int) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        """Matching (target, online) parameter lists of the block, predictor excluded."""
        online = list(self.online.block_module(block).parameters())
        for m in self.online_heads[block].ema_modules():
            online += list(m.parameters())
        target = list(self.target.block_module(block).parameters()) + list(self.target_heads[block].parameters())
        if len(online) != len(target) or any(a.shape != b.shape for a, b in zip(online, target)):
            raise RuntimeError("online and target supernets are out of step")
        return target, online

    @torch.no_grad()
    def sync_target(self, block: int) -> None:
        """Start a block with target == online (the EMA then drifts from there)."""
        target, online = self.ema_pairs(block)
        torch._foreach_copy_(target, online)
        for t_mod, o_mod in zip(self.target_block_modules(block), [self.online.block_module(block), nn.ModuleList(self.online_heads[block].ema_modules())]):
            for t_buf, o_buf in zip(t_mod.buffers(), o_mod.buffers()):
                t_buf.copy_(o_buf)


def normalized(x: torch.Tensor) -> torch.Tensor:
    return F.normalize(x.float(), dim=-1)
