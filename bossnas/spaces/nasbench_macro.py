"""NAS-Bench-Macro: the macro CIFAR space of Su et al., "Prioritized Architecture Sampling
with Monte-Carlo Tree Search" (CVPR 2021), with all 6,561 networks trained in the benchmark.

Stem: 3x3 conv to 32 channels, BN, ReLU. Then 8 searchable layers in three stages of
2 / 3 / 3 layers; each layer is one of

- ``0`` identity: a plain skip, except in the first layer of a stage, where it becomes a
  1x1 stride-2 conv + BN (the stage must still halve the side and double the channels);
- ``1`` MobileNetV2 inverted residual, expand 3, depthwise kernel 3;
- ``2`` MobileNetV2 inverted residual, expand 6, depthwise kernel 5.

The inverted residuals are 1x1 expand + BN + ReLU, depthwise conv + BN + ReLU, 1x1
project + BN (no squeeze-excite, no biases), with a residual when the shape is kept. The
first layer of each stage has stride 2 and doubles the channels: 64 / 128 / 256. Head:
1x1 conv to 1280, BN, ReLU, global pooling, linear classifier.

An architecture is 8 digits without separator, e.g. ``02012100``. Blocks are the stages:
layers (1, 2), (3, 4, 5), (6, 7, 8) with 9 / 27 / 27 paths; the stem belongs to block 0 and
the head to block 2. Identities after the first layer of a stage are plain skips, so strings
that differ only in where those sit are the same network: :meth:`canonical_arch` gives one
representative (3,969 distinct networks among the 6,561 strings).
"""

from __future__ import annotations

from collections.abc import Hashable

from torch import nn

from bossnas.errors import BossNASError
from bossnas.layers.ops import MBConv, make_shortcut
from bossnas.spaces import register_space
from bossnas.spaces.base import Arch, BlockSpec, Path, SearchSpace
from bossnas.spaces.mbconv import MBConvSupernet

STEM_WIDTH = 32
#: searchable layers per stage (= per block); the first of each has stride 2
STAGE_LAYERS: tuple[int, ...] = (2, 3, 3)
HEAD_WIDTH = 1280
IDENTITY = "0"
#: (expand ratio, depthwise kernel) of the inverted-residual candidates, by digit
INVERTED_RESIDUALS: dict[str, tuple[int, int]] = {"1": (3, 3), "2": (6, 5)}
CHOICES: tuple[str, ...] = (IDENTITY, *INVERTED_RESIDUALS)
#: op names for `bossnas show`, by digit
OP_NAMES: dict[str, str] = {IDENTITY: "identity", "1": "IR e3 k3", "2": "IR e6 k5"}
STRIDED_IDENTITY_NAME = "1x1 conv stride 2"


def _ceil_half(side: int) -> int:
    return -(-side // 2)


class Stem(nn.Sequential):
    """3x3 conv (stride 1) to 32 channels, BN, ReLU."""

    def __init__(self, c_in: int, width: int):
        super().__init__(nn.Conv2d(c_in, width, 3, padding=1, bias=False), nn.BatchNorm2d(width), nn.ReLU())


class Head(nn.Sequential):
    """1x1 conv to 1280, BN, ReLU, global pooling and a linear classifier."""

    def __init__(self, c_in: int, width: int, num_classes: int):
        super().__init__(
            nn.Conv2d(c_in, width, 1, bias=False),
            nn.BatchNorm2d(width),
            nn.ReLU(),
            nn.AdaptiveAvgPool2d(1),
            nn.Flatten(),
            nn.Linear(width, num_classes),
        )


@register_space
class NASBenchMacroSpace(SearchSpace):
    name = "nasbench-macro"
    description = "NAS-Bench-Macro (CVPR 2021): identity / IR e3k3 / IR e6k5 in 8 layers, 6,561 CIFAR networks"
    default_image_size = 32
    default_sampling = "fair"
    separator = ""

    def __init__(self, in_channels: int = 3, image_size: int | None = None, num_classes: int = 10):
        super().__init__(in_channels, image_size, num_classes)
        #: per searchable layer: (in channels, out channels, stride, output side)
        self.layer_specs: list[tuple[int, int, int, int]] = []
        c_in, side = STEM_WIDTH, self.image_size
        blocks = []
        for b, count in enumerate(STAGE_LAYERS):
            layers = []
            for i in range(count):
                stride = 2 if i == 0 else 1
                c_out = 2 * c_in if i == 0 else c_in
                side = _ceil_half(side) if stride == 2 else side
                layers.append(len(self.layer_specs))
                self.layer_specs.append((c_in, c_out, stride, side))
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
        return CHOICES

    def boundary_key(self, block: int, path: Path) -> Hashable:
        """Every path of a block ends with the same shape: nothing to carry over."""
        return None

    def out_channels(self, block: int, path: Path) -> int:
        return self.layer_specs[self.blocks[block].layers[-1]][1]

    def canonical_path(self, path: Path) -> Path:
        """The block path with its non-first identities moved to the end (same network).

        The first layer of a stage is kept: as identity it is a strided 1x1 conv, not a skip.
        The order of the other ops is kept: ``('1', '0', '2')`` -> ``('1', '2', '0')``.
        """
        rest = [c for c in path[1:] if c != IDENTITY]
        return (path[0], *rest, *[IDENTITY] * (len(path) - 1 - len(rest)))

    def canonical_arch(self, arch: Arch) -> Arch:
        """One representative of the architectures that build the same network.

        Identities after the first layer of a stage are plain skips, so only the order of
        the other ops counts; they move to the end of their stage:
        ``02012100`` -> ``02012100``, ``00102001`` -> ``00120010``. Two architectures are
        the same network exactly when their canonical forms are equal.
        """
        return tuple(self.canonical_path(path) for path in arch)

    # ----------------------------------------------------------------- text form
    def _parse_digits(self, layers: tuple[int, ...], digits: str) -> Path:
        return tuple(self.parse_choice(layer, digit) for layer, digit in zip(layers, digits))

    def parse_path(self, block: int, text: str) -> Path:
        spec = self.blocks[block]
        digits = text.strip() if isinstance(text, str) else ""
        if len(digits) != len(spec.layers):
            raise BossNASError(
                f"malformed path '{text}' for block {block} of '{self.name}': expected "
                f"{len(spec.layers)} digits 0/1/2 without separator, got {len(digits)} characters"
            )
        return self._parse_digits(spec.layers, digits)

    def parse_arch(self, text: str) -> Arch:
        """Parse 8 digits ``0/1/2`` (e.g. ``02012100``), with a one-line error naming what is wrong."""
        if not isinstance(text, str) or not text.strip():
            raise BossNASError(f"empty architecture string; expected 8 digits 0/1/2 such as '{self.arch_example()}'")
        digits = text.strip()
        if len(digits) != self.num_layers:
            raise BossNASError(
                f"malformed architecture '{text}' for '{self.name}': expected {self.num_layers} digits 0/1/2 "
                f"without separator (e.g. '{self.arch_example()}'), got {len(digits)} characters"
            )
        return tuple(self._parse_digits(spec.layers, digits[spec.layers[0] : spec.layers[-1] + 1])
                     for spec in self.blocks)

    def arch_example(self) -> str:
        return "02012100"

    # ----------------------------------------------------------------- builders
    def build_stem(self) -> Stem:
        return Stem(self.in_channels, STEM_WIDTH)

    def build_layer(self, layer: int, choice: str) -> nn.Module:
        """One candidate op; a stage's first identity is its own strided 1x1 conv + BN."""
        c_in, c_out, stride, _ = self.layer_specs[layer]
        if choice == IDENTITY:
            return make_shortcut(c_in, c_out, stride, avg_down=False)
        expand, kernel = INVERTED_RESIDUALS[choice]
        return MBConv(c_in, c_out, expand, kernel, stride, se_ratio=0, act="relu")

    def build_supernet(self) -> MBConvSupernet:
        # one module per (layer, candidate), as in mbconv: paths share the layers they have in common
        return MBConvSupernet(self)  # type: ignore[arg-type]

    def build_block(self, block: int, path: Path, prev_path: Path | None) -> nn.Sequential:
        modules: list[nn.Module] = [self.build_stem()] if block == 0 else []
        modules += [self.build_layer(layer, choice) for layer, choice in zip(self.blocks[block].layers, path)]
        return nn.Sequential(*modules)

    def build_head(self, arch: Arch) -> nn.Module:
        return Head(self.out_channels(len(self.blocks) - 1, arch[-1]), HEAD_WIDTH, self.num_classes)

    def describe_layers(self, arch: Arch) -> list[dict]:
        rows = super().describe_layers(arch)
        for row in rows:
            _, c_out, stride, side = self.layer_specs[row["layer"] - 1]
            strided_identity = row["choice"] == IDENTITY and stride == 2
            row.update(op=STRIDED_IDENTITY_NAME if strided_identity else OP_NAMES[row["choice"]],
                       resolution=side, channels=c_out, downsample=stride == 2, stride=stride)
        return rows
