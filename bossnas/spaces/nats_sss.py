"""NATS-Bench size search space (SSS): the channel counts of a fixed-cell CIFAR network.

Macro skeleton (NATS-Bench's tiny network with one cell per stage): a 3x3 conv stem + BN,
then five layers [cell, residual reduction, cell, residual reduction, cell], BN-ReLU,
global pooling and a linear classifier. The cell is the best cell of the NATS topology
space: node1 = conv(x0); node2 = conv(x0) + conv(x1); node3 = skip(x0) + conv(x1) + conv(x2),
every conv ReLU-Conv3x3-BN. The stem has the width of the first layer; where a cell's input
and output widths differ its skip is ReLU + 1x1 conv + BN (NATS-Bench's stride-1 factorised
reduce). Each layer's width is searched in {8, 16, ..., 64}: 8^5 = 32,768 architectures,
written like ``64:40:48:64:56``. Blocks for the search: layers (1,2), (3,4), (5).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from bossnas.errors import BossNASError
from bossnas.layers.slimmable import SlimConv2d, WidthBatchNorm2d, copy_bn_, copy_conv_
from bossnas.spaces import register_space
from bossnas.spaces.base import Arch, BlockSpec, Path, SearchSpace, SupernetBackbone

WIDTHS: tuple[int, ...] = (8, 16, 24, 32, 40, 48, 56, 64)
#: layer kinds of the macro skeleton, in order
LAYER_KINDS: tuple[str, ...] = ("cell", "reduction", "cell", "reduction", "cell")
#: the CIFAR-10 block split of the BossNAS paper: 64, 64 and 8 paths
BLOCK_LAYERS: tuple[tuple[int, ...], ...] = ((0, 1), (2, 3), (4,))


# --------------------------------------------------------------------------- standalone
def relu_conv_bn(c_in: int, c_out: int, kernel: int, stride: int = 1) -> nn.Sequential:
    return nn.Sequential(
        nn.ReLU(),
        nn.Conv2d(c_in, c_out, kernel, stride=stride, padding=kernel // 2, bias=False),
        nn.BatchNorm2d(c_out),
    )


class Stem(nn.Sequential):
    def __init__(self, c_in: int, c_out: int):
        super().__init__(nn.Conv2d(c_in, c_out, 3, padding=1, bias=False), nn.BatchNorm2d(c_out))


class Cell(nn.Module):
    """The fixed NATS cell at one width (see the module docstring)."""

    def __init__(self, c_in: int, c_out: int):
        super().__init__()
        self.conv_1_0 = relu_conv_bn(c_in, c_out, 3)
        self.conv_2_0 = relu_conv_bn(c_in, c_out, 3)
        self.conv_2_1 = relu_conv_bn(c_out, c_out, 3)
        # NATS-Bench's stride-1 FactorizedReduce: ReLU, 1x1 conv, BN (the ReLU matters: the
        # official BossNAS supernet and the benchmark's trained networks both apply it)
        self.skip_3_0: nn.Module = nn.Identity() if c_in == c_out else relu_conv_bn(c_in, c_out, 1)
        self.conv_3_1 = relu_conv_bn(c_out, c_out, 3)
        self.conv_3_2 = relu_conv_bn(c_out, c_out, 3)

    def forward(self, x0: torch.Tensor) -> torch.Tensor:
        x1 = self.conv_1_0(x0)
        x2 = self.conv_2_0(x0) + self.conv_2_1(x1)
        return self.skip_3_0(x0) + self.conv_3_1(x1) + self.conv_3_2(x2)


class Reduction(nn.Module):
    """NATS-Bench's residual reduction block: two ReLU-conv-BN (first stride 2) + pooled 1x1 shortcut."""

    def __init__(self, c_in: int, c_out: int):
        super().__init__()
        self.conv_a = relu_conv_bn(c_in, c_out, 3, stride=2)
        self.conv_b = relu_conv_bn(c_out, c_out, 3)
        self.shortcut = nn.Sequential(nn.AvgPool2d(2, 2), nn.Conv2d(c_in, c_out, 1, bias=False))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv_b(self.conv_a(x)) + self.shortcut(x)


def build_layer(kind: str, c_in: int, c_out: int) -> nn.Module:
    return Cell(c_in, c_out) if kind == "cell" else Reduction(c_in, c_out)


class ClassifierHead(nn.Sequential):
    def __init__(self, channels: int, num_classes: int):
        super().__init__(
            nn.BatchNorm2d(channels),
            nn.ReLU(),
            nn.AdaptiveAvgPool2d(1),
            nn.Flatten(),
            nn.Linear(channels, num_classes),
        )


# --------------------------------------------------------------------------- supernet
class SlimReLUConvBN(nn.Module):
    def __init__(self, kernel: int, widths: Sequence[int], stride: int = 1):
        super().__init__()
        top = max(widths)
        self.conv = SlimConv2d(top, top, kernel, stride=stride, padding=kernel // 2)
        self.bn = WidthBatchNorm2d(widths)

    def forward(self, x: torch.Tensor, width: int) -> torch.Tensor:
        return self.bn(self.conv(torch.relu(x), width))

    def export_into(self, dest: nn.Sequential) -> None:
        copy_conv_(dest[1], self.conv)
        copy_bn_(dest[2], self.bn)


class SlimStem(nn.Module):
    def __init__(self, in_channels: int, widths: Sequence[int]):
        super().__init__()
        self.conv = SlimConv2d(in_channels, max(widths), 3, padding=1)
        self.bn = WidthBatchNorm2d(widths)

    def forward(self, x: torch.Tensor, width: int) -> torch.Tensor:
        return self.bn(self.conv(x, width))

    def export_into(self, dest: Stem) -> None:
        copy_conv_(dest[0], self.conv)
        copy_bn_(dest[1], self.bn)


class SlimCell(nn.Module):
    def __init__(self, widths: Sequence[int]):
        super().__init__()
        top = max(widths)
        for name in ("conv_1_0", "conv_2_0", "conv_2_1", "conv_3_1", "conv_3_2"):
            setattr(self, name, SlimReLUConvBN(3, widths))
        self.skip_conv = SlimConv2d(top, top, 1)
        self.skip_bn = WidthBatchNorm2d(widths)

    def forward(self, x0: torch.Tensor, width: int) -> torch.Tensor:
        x1 = self.conv_1_0(x0, width)
        x2 = self.conv_2_0(x0, width) + self.conv_2_1(x1, width)
        skip = x0 if x0.shape[1] == width else self.skip_bn(self.skip_conv(torch.relu(x0), width))
        return skip + self.conv_3_1(x1, width) + self.conv_3_2(x2, width)

    def export_into(self, dest: Cell) -> None:
        for name in ("conv_1_0", "conv_2_0", "conv_2_1", "conv_3_1", "conv_3_2"):
            getattr(self, name).export_into(getattr(dest, name))
        if isinstance(dest.skip_3_0, nn.Sequential):
            copy_conv_(dest.skip_3_0[1], self.skip_conv)
            copy_bn_(dest.skip_3_0[2], self.skip_bn)


class SlimReduction(nn.Module):
    def __init__(self, widths: Sequence[int]):
        super().__init__()
        top = max(widths)
        self.conv_a = SlimReLUConvBN(3, widths, stride=2)
        self.conv_b = SlimReLUConvBN(3, widths)
        self.pool = nn.AvgPool2d(2, 2)
        self.shortcut_conv = SlimConv2d(top, top, 1)

    def forward(self, x: torch.Tensor, width: int) -> torch.Tensor:
        return self.conv_b(self.conv_a(x, width), width) + self.shortcut_conv(self.pool(x), width)

    def export_into(self, dest: Reduction) -> None:
        self.conv_a.export_into(dest.conv_a)
        self.conv_b.export_into(dest.conv_b)
        copy_conv_(dest.shortcut[1], self.shortcut_conv)


class NATSSupernet(SupernetBackbone):
    def __init__(self, space: NATSSizeSpace):
        super().__init__()
        self.space = space
        widths = space.widths
        self.stem = SlimStem(space.in_channels, widths)
        self.layers = nn.ModuleList(
            SlimCell(widths) if kind == "cell" else SlimReduction(widths) for kind in LAYER_KINDS
        )

    def block_module(self, block: int) -> nn.Module:
        layers = [self.layers[i] for i in BLOCK_LAYERS[block]]
        return nn.ModuleList(([self.stem] if block == 0 else []) + layers)

    def forward_block(self, x: torch.Tensor, block: int, path: Path) -> torch.Tensor:
        layers = BLOCK_LAYERS[block]
        if block == 0:
            x = self.stem(x, path[0])
        for layer, width in zip(layers, path):
            x = self.layers[layer](x, width)
        return x

    def materialize_block(self, block: int, path: Path, prev_path: Path | None) -> nn.Module:
        module = self.space.build_block(block, path, prev_path)
        parts = list(module)
        if block == 0:
            self.stem.export_into(parts.pop(0))
        for layer, dest in zip(BLOCK_LAYERS[block], parts):
            self.layers[layer].export_into(dest)
        return module


# --------------------------------------------------------------------------- the space
@register_space
class NATSSizeSpace(SearchSpace):
    name = "nats-sss"
    description = "NATS-Bench size space: 5 layer widths in {8..64}, 32,768 CIFAR networks"
    default_image_size = 32

    def __init__(self, in_channels: int = 3, image_size: int | None = None, num_classes: int = 10):
        super().__init__(in_channels, image_size, num_classes)
        if self.image_size < 4:
            raise BossNASError(f"nats-sss needs images of at least 4x4 pixels, got {self.image_size}")
        self.widths = WIDTHS
        self._blocks = tuple(BlockSpec(i, layers) for i, layers in enumerate(BLOCK_LAYERS))

    @property
    def blocks(self) -> tuple[BlockSpec, ...]:
        return self._blocks

    def layer_choices(self, layer: int) -> tuple[int, ...]:
        if not 0 <= layer < len(LAYER_KINDS):
            raise IndexError(layer)
        return self.widths

    def parse_choice(self, layer: int, text: str) -> int:
        if not (text.isascii() and text.isdigit()) or int(text) not in self.widths:
            options = ", ".join(map(str, self.widths))
            raise BossNASError(
                f"'{text}' is not a width of layer {layer + 1} of 'nats-sss'; choose one of {options}"
            )
        return int(text)

    def out_channels(self, block: int, path: Path) -> int:
        return int(path[-1])

    def build_supernet(self) -> NATSSupernet:
        return NATSSupernet(self)

    def build_block(self, block: int, path: Path, prev_path: Path | None) -> nn.Sequential:
        modules: list[nn.Module] = []
        if block == 0:
            modules.append(Stem(self.in_channels, path[0]))
            c_in = path[0]
        else:
            c_in = self.out_channels(block - 1, prev_path)
        for layer, width in zip(BLOCK_LAYERS[block], path):
            modules.append(build_layer(LAYER_KINDS[layer], c_in, width))
            c_in = width
        return nn.Sequential(*modules)

    def build_head(self, arch: Arch) -> nn.Module:
        return ClassifierHead(self.out_channels(len(BLOCK_LAYERS) - 1, arch[-1]), self.num_classes)

    def describe_layers(self, arch: Arch) -> list[dict]:
        rows = super().describe_layers(arch)
        for row in rows:
            row["op"] = LAYER_KINDS[row["layer"] - 1]
            row["stride"] = 2 if row["op"] == "reduction" else 1
        return rows
