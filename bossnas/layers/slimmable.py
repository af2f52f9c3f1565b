"""Slimmable convolution and per-width BatchNorm: the weight sharing of width search.

A width-w slice of a slimmable conv uses the first w output channels (and the first
in-channels of its input) of one full-size weight, as in slimmable networks and the NATS
size-space supernet; each width keeps its own BatchNorm, because the statistics of a
channel change with the number of channels feeding it.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn


class SlimConv2d(nn.Conv2d):
    """A conv whose output width is chosen per call; input width follows the input tensor.

    >>> conv = SlimConv2d(64, 64, 3, padding=1)
    >>> conv(torch.zeros(2, 16, 8, 8), out_width=24).shape
    torch.Size([2, 24, 8, 8])
    """

    def __init__(self, max_in: int, max_out: int, kernel_size: int, stride: int = 1, padding: int = 0):
        super().__init__(max_in, max_out, kernel_size, stride=stride, padding=padding, bias=False)

    def forward(self, x: torch.Tensor, out_width: int | None = None) -> torch.Tensor:  # type: ignore[override]
        out_width = self.out_channels if out_width is None else out_width
        weight = self.weight[:out_width, : x.shape[1]]
        return F.conv2d(x, weight, None, self.stride, self.padding)


class WidthBatchNorm2d(nn.Module):
    """One BatchNorm2d per candidate width, chosen by the channel count of the input."""

    def __init__(self, widths: Sequence[int]):
        super().__init__()
        self.widths = tuple(int(w) for w in widths)
        self.norms = nn.ModuleList(nn.BatchNorm2d(w) for w in self.widths)
        self._index = {w: i for i, w in enumerate(self.widths)}

    def norm_for(self, width: int) -> nn.BatchNorm2d:
        return self.norms[self._index[width]]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.norm_for(x.shape[1])(x)


@torch.no_grad()
def copy_conv_(dest: nn.Conv2d, source: nn.Conv2d) -> None:
    """Copy the leading slice of ``source``'s weight that fits ``dest`` into ``dest``."""
    out_c, in_c = dest.weight.shape[:2]
    dest.weight.copy_(source.weight[:out_c, :in_c])
    if dest.bias is not None and source.bias is not None:
        dest.bias.copy_(source.bias[:out_c])


@torch.no_grad()
def copy_bn_(dest: nn.BatchNorm2d, source: WidthBatchNorm2d | nn.BatchNorm2d) -> None:
    """Copy the BatchNorm that ``source`` keeps for ``dest``'s width into ``dest``."""
    if isinstance(source, WidthBatchNorm2d):
        source = source.norm_for(dest.num_features)
    dest.load_state_dict(source.state_dict())
