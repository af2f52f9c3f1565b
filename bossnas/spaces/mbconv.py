"""MBConv: the canonical mobile search space (as in DNA; section 4.2 of docs/bossnas.md).

Stem: 3x3 conv stride 2 (32 channels), BN, Swish, then a fixed MBConv (expand 1, 3x3,
SE 0.25) to 16 channels. Then five blocks of searchable MBConv layers, written
(out channels, stride of the first layer, layers): (24, 2, 2), (40, 2, 4), (80, 2, 4),
(112, 1, 4), (192, 2, 4): 18 layers. Each layer is one of ``e3k3``, ``e3k5``, ``e6k3``,
``e6k5`` (expand ratio x depthwise kernel; SE 0.25, Swish), so a block has 4^L paths:
16 / 256 / 256 / 256 / 256. The head is fixed: MBConv e6 k3 to 320 channels, 1x1 conv to
1280, BN, Swish, global pooling and a linear classifier (EfficientNet-B0 / DNA).

An architecture is the 18 choices joined by ``:``, e.g. ``e3k3:e6k5:...``; the strings
never depend on the input size.

Weight sharing: every (layer, candidate) keeps its own MBConv (no slicing of kernels or
expansions between candidates), the simplest sharing that makes every path's weights its
own; paths share the layers they have in common. Every path of a block ends with the same
shape, so the next block's input never depends on the path (``boundary_key`` is None).

Small inputs: below 128 px the stem does not down-sample (stride 1), so 32 x 32 images
give feature maps of 32 / 16 / 8 / 4 / 4 / 2 after the stem and each block instead of
112 / 56 / 28 / 14 / 14 / 7 at 224. ``width_mult`` scales every width (rounded to a
multiple of 8, as in EfficientNet), the 1280-wide head conv included.

Shortcuts (``shortcut``): ``official`` (default) keeps a residual on the layers that change
stride or width, through a 2x2 average pool where the layer strides and a 1x1 conv + BN
where it widens, as the official BossNAS MBConv supernet does (one such shortcut per layer,
shared by its four candidates; the fixed 320-channel layer has one too); ``none`` is the
EfficientNet / DNA form, with no residual on those layers. See docs/method.md.
"""

from __future__ import annotations

from collections.abc import Hashable

import torch
from torch import nn

from bossnas.errors import BossNASError
from bossnas.layers.ops import MBConv, activation, make_divisible, mbconv_shortcut
from bossnas.spaces import register_space
from bossnas.spaces.base import Arch, BlockSpec, Path, SearchSpace, SupernetBackbone

STEM_WIDTH = 32
#: the fixed MBConv (expand 1, 3x3) after the stem conv
FIRST_WIDTH = 16
#: (out channels, stride of the first layer, searchable layers) per block
STAGES: tuple[tuple[int, int, int], ...] = ((24, 2, 2), (40, 2, 4), (80, 2, 4), (112, 1, 4), (192, 2, 4))
#: the fixed last layer: MBConv e6 k3 to 320 channels, stride 1
FINAL_WIDTH, FINAL_EXPAND, FINAL_KERNEL = 320, 6, 3
HEAD_WIDTH = 1280
SE_RATIO = 0.25
#: expand ratio and kernel of each candidate, by name
CANDIDATES: dict[str, tuple[int, int]] = {"e3k3": (3, 3), "e3k5": (3, 5), "e6k3": (6, 3), "e6k5": (6, 5)}
#: inputs smaller than this get a stride-1 stem
SMALL_INPUT = 128
STEMS = ("auto", "imagenet", "small")
#: residuals of the layers that change shape: the official BossNAS form, or none (EfficientNet)
SHORTCUTS = ("official", "none")


def _ceil_div(a: int, b: int) -> int:
    return -(-a // b)


class Stem(nn.Sequential):
    """3x3 conv (stride 2, or 1 for small inputs), BN, Swish, then MBConv e1 k3 SE 0.25."""

    def __init__(self, c_in: int, width: int, out: int, stride: int):
        super().__init__(
            nn.Conv2d(c_in, width, 3, stride=stride, padding=1, bias=False),
            nn.BatchNorm2d(width),
            activation("silu"),
            MBConv(width, out, expand=1, kernel=3, se_ratio=SE_RATIO),
        )


class Head(nn.Sequential):
    """The fixed MBConv e6 k3 to 320, 1x1 conv to 1280 + BN + Swish, pooling, classifier."""

    def __init__(self, c_in: int, final: int, width: int, num_classes: int, shortcut: bool = False):
        super().__init__(
            MBConv(c_in, final, FINAL_EXPAND, FINAL_KERNEL, se_ratio=SE_RATIO,
                   shortcut=mbconv_shortcut(c_in, final, 1) if shortcut else None),
            nn.Conv2d(final, width, 1, bias=False),
            nn.BatchNorm2d(width),
            activation("silu"),
            nn.AdaptiveAvgPool2d(1),
            nn.Flatten(),
            nn.Linear(width, num_classes),
        )


class MBConvSupernet(SupernetBackbone):
    """One module per (layer, candidate); a path runs one candidate per layer.

    Works for any space with ``build_stem()``, ``build_layer(layer, choice)`` and string
    choices (``nasbench-macro`` reuses it).
    """

    def __init__(self, space: MBConvSpace):
        super().__init__()
        self.space = space
        self.stem = space.build_stem()
        self.layers = nn.ModuleList(
            _share_shortcut(nn.ModuleDict({name: space.build_layer(layer, name) for name in space.layer_choices(layer)}))
            for layer in range(space.num_layers)
        )

    def block_module(self, block: int) -> nn.Module:
        layers = [self.layers[i] for i in self.space.blocks[block].layers]
        return nn.ModuleList(([self.stem] if block == 0 else []) + layers)

    def forward_block(self, x: torch.Tensor, block: int, path: Path) -> torch.Tensor:
        if block == 0:
            x = self.stem(x)
        for layer, choice in zip(self.space.blocks[block].layers, path):
            x = self.layers[layer][choice](x)
        return x

    def materialize_block(self, block: int, path: Path, prev_path: Path | None) -> nn.Module:
        module = self.space.build_block(block, path, prev_path)
        parts = list(module)
        if block == 0:
            parts.pop(0).load_state_dict(self.stem.state_dict())
        for layer, choice, dest in zip(self.space.blocks[block].layers, path, parts):
            dest.load_state_dict(self.layers[layer][choice].state_dict())
        return module


def _share_shortcut(candidates: nn.ModuleDict) -> nn.ModuleDict:
    """One shortcut per layer, used by all its candidates (the official supernet's sharing:
    the shortcut is not part of the searched op, so every path through the layer trains it)."""
    shortcuts = [m.shortcut for m in candidates.values() if isinstance(m, MBConv) and m.shortcut is not None]
    for m in candidates.values():
        if isinstance(m, MBConv) and m.shortcut is not None:
            m.shortcut = shortcuts[0]
    return candidates


@register_space
class MBConvSpace(SearchSpace):
    name = "mbconv"
    description = "mobile MBConv space (DNA): expand {3,6} x kernel {3,5} in 18 layers, 5 blocks"
    default_image_size = 224
    default_sampling = "fair"

    def __init__(self, in_channels: int = 3, image_size: int | None = None, num_classes: int = 10,
                 width_mult: float = 1.0, stem: str = "auto", shortcut: str = "official"):
        super().__init__(in_channels, image_size, num_classes)
        if isinstance(width_mult, bool) or not isinstance(width_mult, (int, float)) or not 0 < width_mult <= 4:
            raise BossNASError(f"mbconv width_mult must be a number in (0, 4], got {width_mult!r}")
        if stem not in STEMS:
            raise BossNASError(f"mbconv stem must be one of {', '.join(STEMS)}, got {stem!r}")
        if shortcut not in SHORTCUTS:
            raise BossNASError(f"mbconv shortcut must be one of {', '.join(SHORTCUTS)}, got {shortcut!r}")
        if self.image_size < 8:
            raise BossNASError(f"mbconv needs images of at least 8x8 pixels, got {self.image_size}")
        self.width_mult = float(width_mult)
        self.shortcut = shortcut
        self.stem_kind = ("imagenet" if self.image_size >= SMALL_INPUT else "small") if stem == "auto" else stem
        self.stem_stride = 2 if self.stem_kind == "imagenet" else 1
        self.stem_width = make_divisible(STEM_WIDTH * width_mult)
        self.first_width = make_divisible(FIRST_WIDTH * width_mult)
        self.final_width = make_divisible(FINAL_WIDTH * width_mult)
        self.head_width = make_divisible(HEAD_WIDTH * width_mult)
        #: per searchable layer: (block, in channels, out channels, stride, output side)
        self.layer_specs: list[tuple[int, int, int, int, int]] = []
        c_in, side = self.first_width, _ceil_div(self.image_size, self.stem_stride)
        self.stem_side = side
        blocks = []
        for b, (width, stride, count) in enumerate(STAGES):
            c_out = make_divisible(width * width_mult)
            layers = []
            for i in range(count):
                s = stride if i == 0 else 1
                side = _ceil_div(side, s)
                layers.append(len(self.layer_specs))
                self.layer_specs.append((b, c_in, c_out, s, side))
                c_in = c_out
            blocks.append(BlockSpec(b, tuple(layers)))
        self._blocks = tuple(blocks)

    # ----------------------------------------------------------------- structure
    @property
    def blocks(self) -> tuple[BlockSpec, ...]:
        return self._blocks

    def layer_choices(self, layer: int) -> tuple[str, ...]:
        if not 0 <= layer < len(self.layer_specs):
            raise IndexError(layer)
        return tuple(CANDIDATES)

    def boundary_key(self, block: int, path: Path) -> Hashable:
        """Every path of a block ends with the same shape: nothing to carry over."""
        return None

    def out_channels(self, block: int, path: Path) -> int:
        return self.layer_specs[self.blocks[block].layers[-1]][2]

    # ----------------------------------------------------------------- builders
    def build_stem(self) -> Stem:
        return Stem(self.in_channels, self.stem_width, self.first_width, self.stem_stride)

    def build_layer(self, layer: int, choice: str) -> MBConv:
        _, c_in, c_out, stride, _ = self.layer_specs[layer]
        expand, kernel = CANDIDATES[choice]
        shortcut = mbconv_shortcut(c_in, c_out, stride) if self.shortcut == "official" else None
        return MBConv(c_in, c_out, expand, kernel, stride, se_ratio=SE_RATIO, shortcut=shortcut)

    def build_supernet(self) -> MBConvSupernet:
        return MBConvSupernet(self)

    def build_block(self, block: int, path: Path, prev_path: Path | None) -> nn.Sequential:
        modules: list[nn.Module] = [self.build_stem()] if block == 0 else []
        modules += [self.build_layer(layer, choice) for layer, choice in zip(self.blocks[block].layers, path)]
        return nn.Sequential(*modules)

    def build_head(self, arch: Arch) -> nn.Module:
        return Head(self.out_channels(len(self.blocks) - 1, arch[-1]), self.final_width, self.head_width,
                    self.num_classes, shortcut=self.shortcut == "official")

    def describe_layers(self, arch: Arch) -> list[dict]:
        rows = super().describe_layers(arch)
        in_side = self.stem_side
        for row in rows:
            _, _, c_out, stride, side = self.layer_specs[row["layer"] - 1]
            expand, kernel = CANDIDATES[row["choice"]]
            row.update(op=f"MBConv e{expand} k{kernel}", resolution=side, channels=c_out,
                       downsample=side < in_side, stride=stride)
            in_side = side
        return rows
