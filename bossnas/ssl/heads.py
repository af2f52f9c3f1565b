"""Projection ("neck"), prediction and channel-adapter heads."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn


class MLPHead(nn.Module):
    """An MLP built from ``(in, out, batch_norm, activation)`` layer specs.

    >>> head = MLPHead([(8, 16, nn.BatchNorm1d(16), nn.ReLU()), (16, 4, None, None)])
    >>> head(torch.randn(3, 8)).shape
    torch.Size([3, 4])
    """

    def __init__(self, layers: Sequence[tuple[int, int, nn.Module | None, nn.Module | None]]):
        super().__init__()
        modules: list[nn.Module] = []
        for c_in, c_out, norm, act in layers:
            modules.append(nn.Linear(c_in, c_out, bias=norm is None))
            if norm is not None:
                modules.append(norm)
            if act is not None:
                modules.append(act)
        self.layers = nn.Sequential(*modules)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layers(x)


class ProjectionHead(MLPHead):
    """BYOL projection: global average pooling, then Linear-BN-ReLU-Linear.

    "a multi-layer perceptron ... a linear layer with output size 4096 followed by batch
    normalization, rectified linear units, and a final linear layer with output dimension
    256" (Grill et al., BYOL, 2020); BossNAS uses it per block as the "neck".
    """

    def __init__(self, in_dim: int, hidden_dim: int = 4096, out_dim: int = 256):
        super().__init__([(in_dim, hidden_dim, nn.BatchNorm1d(hidden_dim), nn.ReLU()), (hidden_dim, out_dim, None, None)])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() == 4:
            x = x.mean(dim=(2, 3))
        return self.layers(x)


class PredictionHead(MLPHead):
    """BYOL predictor on the online branch only: the same MLP shape as the projection."""

    def __init__(self, in_dim: int = 256, hidden_dim: int = 4096, out_dim: int = 256):
        super().__init__([(in_dim, hidden_dim, nn.BatchNorm1d(hidden_dim), nn.ReLU()), (hidden_dim, out_dim, None, None)])


@torch.no_grad()
def kaiming_init_(head: MLPHead) -> MLPHead:
    """Kaiming-normal Linear weights (fan in, ReLU gain), zero biases: how the official BossNAS
    code (OpenSelfSup's neck ``init_weights(init_linear='kaiming')``) starts its projection necks.

    >>> head = kaiming_init_(ProjectionHead(8, 16, 4))
    >>> float(head.layers[-1].bias.abs().sum())
    0.0
    """
    for m in head.modules():
        if isinstance(m, nn.Linear):
            nn.init.kaiming_normal_(m.weight, mode="fan_in", nonlinearity="relu")
            if m.bias is not None:
                nn.init.zeros_(m.bias)
    return head


@torch.no_grad()
def normal_init_(head: MLPHead, std: float = 0.01) -> MLPHead:
    """Normal(0, ``std``) Linear weights, zero biases: the official predictor init (std 0.01)."""
    for m in head.modules():
        if isinstance(m, nn.Linear):
            nn.init.normal_(m.weight, 0.0, std)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
    return head


class ChannelAdapter(nn.Module):
    """Maps block outputs of several widths to one width: a 1x1 conv + BN per input width.

    Where every path of a block ends with the same width there is nothing to adapt and the
    adapter is the identity.
    """

    def __init__(self, in_widths: Sequence[int], out_width: int):
        super().__init__()
        widths = sorted(set(int(w) for w in in_widths))
        self.identity = len(widths) == 1 and widths[0] == out_width
        self.out_width = widths[0] if self.identity else out_width
        self.maps = nn.ModuleDict()
        if not self.identity:
            for w in widths:
                self.maps[str(w)] = nn.Sequential(nn.Conv2d(w, out_width, 1, bias=False), nn.BatchNorm2d(out_width))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.identity:
            return x
        return self.maps[str(x.shape[1])](x)
