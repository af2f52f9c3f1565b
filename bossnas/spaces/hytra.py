"""HyTra: the hybrid CNN-transformer fabric of BossNAS (section 4.1 of docs/bossnas.md).

A stem, then 16 searchable layers in 4 blocks of 4. Each layer picks an op and a scale:

======  ===========  ==========  ============  ==========================
level   choice name  224 input   channels      ops
======  ===========  ==========  ============  ==========================
0       ``@56``      56 x 56     256           ResConv
1       ``@28``      28 x 28     512           ResConv
2       ``@14``      14 x 14     1024          ResConv, ResAtt
3       ``@7``       7 x 7       2048          ResConv, ResAtt
======  ===========  ==========  ============  ==========================

Choice strings (``ResConv@56`` ... ``ResAtt@7``) are the paper's names: the number is the
side of that scale at the 224 x 224 reference input (strides 4, 8, 16, 32), and it stays
the same at any input size; ``describe_layers`` gives the real side. An architecture is
16 choices joined by ``:``; ResAtt (attention over all positions) exists only at the two
coarsest scales.

The fabric (why paths look the way they do):

- resolution never increases; inside a block a layer keeps the previous layer's scale or
  moves one scale coarser (the searchable down-sampling positions, one stride-2 step a
  layer, as the official supernet);
- ``paths=official`` (default), the official search's restricted lists: block 0 starts at
  @56 or @28; a later block starts where the previous block's path ended or one scale
  coarser (``continues``), so block k's paths depend on block k-1's path: 51 / 99 / 80 / 16
  paths after an end at @56 (or the stem) / @28 / @14 / @7. The trainer trains and rates
  block k after the best path of block k-1 is fixed, on ``block_paths(k, prev_path)``;
  1,703,991 architectures;
- ``paths=static``: fixed per-block start / end scales (``BLOCK_RULES``), block 0 starts
  anywhere and ends at @14 or finer, block 1 starts at @14 or @7, blocks 2 and 3 stay at @7,
  so every path of block k follows every path of block k-1 and ratings need no previous
  path: 43 / 80 / 16 / 16 paths, 880,640 architectures. The first layer of a block may move
  several scales at once from the block's input (an average pool, then the op's stride-2
  step).

Two forms of the ops. The standalone (retrained) network, ``build_block`` /
``build_standalone`` / ``create_model``, always has average-pool shortcuts (``avg_down``) and
standard attention, as the official retraining code. The supernet (``search=True``) follows
``search_shortcut`` (``official``: 3x3 stride-2 conv + BN + act when down-sampling, 1x1 conv
+ BN + act when only the width changes, a learned depthwise stem down-sampler into block 0;
``standalone``: the standalone form) and ``attention`` (``standard`` or the official search
op ``official-search``). docs/spaces.md and docs/method.md say why.

Weight sharing: one op per (layer, op, scale). Its input side (first 1x1 conv, position
conv, first BN, shortcut) is kept per input route (same scale, one scale finer, the stem,
several scales finer at a block start), because those shapes differ; the rest of the op
is shared by all its routes, like the official supernet's ``_d`` down-sampling branches.

Small inputs: below 128 px the stem does not down-sample (3x3 conv, stride 1), so at 32 x 32
the four scales are 32, 16, 8, 4; from 128 px on it is the ImageNet stem (7x7 conv stride 2,
max-pool stride 2: 56/28/14/7 at 224). ``width_mult`` scales every width (stem, scales,
bottlenecks); attention uses heads of 64 channels, fewer heads (down to one narrower head)
where a scaled layer is narrower. ``last_stride=1`` keeps the coarsest scale at the
resolution of @14 (BossNet-T1).
"""

from __future__ import annotations

import itertools
from collections.abc import Hashable
from typing import NamedTuple

import torch
from torch import nn

from bossnas.errors import BossNASError
from bossnas.layers.ops import (
    ATTENTION_FORMS,
    BOTTLENECK_EXPANSION,
    ResAtt,
    ResConv,
    activation,
    conv_shortcut,
    make_divisible,
    pool_down,
)
from bossnas.models import ModelSpec, register_model
from bossnas.spaces import register_space
from bossnas.spaces.base import Arch, BlockSpec, Path, SearchSpace, SupernetBackbone

#: scale names: the side of each scale at the 224 x 224 reference input (level 0 = finest)
REFERENCE_SIDES: tuple[int, ...] = (56, 28, 14, 7)
#: output channels of each scale at width_mult 1 (ResNet-50 stages)
BASE_CHANNELS: tuple[int, ...] = (256, 512, 1024, 2048)
#: stem width at width_mult 1 (ResNet)
STEM_WIDTH = 64
#: ResAtt is offered only at the two coarsest scales: attention over 56x56 costs too much
ATTENTION_LEVELS: frozenset[int] = frozenset({2, 3})
LAYERS_PER_BLOCK = 4
NUM_BLOCKS = 4
#: ``paths=static``: (finest start level, coarsest end level) of each block; see the module docstring
BLOCK_RULES: tuple[tuple[int, int], ...] = ((0, 2), (2, 3), (3, 3), (3, 3))
#: ``paths``: ``official`` (the official search's restricted lists: a block starts at the previous
#: block's end scale or one coarser, block 0 at most one step below the stem) or ``static``
PATH_RULES = ("official", "static")
#: ``search_shortcut``: the supernet's shortcuts, ``official`` (conv_shortcut, a learned stem
#: down-sampler) or ``standalone`` (the standalone network's own, average pool + 1x1 + BN)
SEARCH_SHORTCUTS = ("official", "standalone")
#: inputs smaller than this get the stride-1 stem
SMALL_INPUT = 128
STEMS = ("auto", "imagenet", "small")


class HyTraChoice(NamedTuple):
    """One layer's choice: an op (``ResConv`` / ``ResAtt``) at a scale level (0 = finest)."""

    op: str
    level: int

    def __str__(self) -> str:
        return f"{self.op}@{REFERENCE_SIDES[self.level]}"


#: the 6 choices of every layer, fine to coarse
CHOICES: tuple[HyTraChoice, ...] = tuple(
    HyTraChoice(op, level)
    for level in range(len(REFERENCE_SIDES))
    for op in ("ResConv", "ResAtt")
    if op == "ResConv" or level in ATTENTION_LEVELS
)


def _ceil_div(a: int, b: int) -> int:
    return -(-a // b)


def encoding_to_arch(encoding: list[list[int]]) -> str:
    """The arch string of a BossNet stage encoding (stages 56, 28, 14, 7; 1 = ResConv, 0 = ResAtt).

    >>> encoding_to_arch([[1], [1], [1, 1, 1, 0, 1], [0, 0, 0, 1, 0, 0, 0, 0, 0]]).split(":")[:3]
    ['ResConv@56', 'ResConv@28', 'ResConv@14']
    """
    layers = [HyTraChoice("ResConv" if bit else "ResAtt", level) for level, stage in enumerate(encoding) for bit in stage]
    return ":".join(str(c) for c in layers)


# --------------------------------------------------------------------------- modules
class ImageNetStem(nn.Sequential):
    """7x7 conv stride 2, BN, activation, 3x3 max-pool stride 2 (ResNet)."""

    def __init__(self, c_in: int, width: int, act: str):
        super().__init__(
            nn.Conv2d(c_in, width, 7, stride=2, padding=3, bias=False),
            nn.BatchNorm2d(width),
            activation(act),
            nn.MaxPool2d(3, stride=2, padding=1),
        )


class SmallStem(nn.Sequential):
    """3x3 conv stride 1, BN, activation: keeps the resolution of small images (CIFAR ResNets)."""

    def __init__(self, c_in: int, width: int, act: str):
        super().__init__(nn.Conv2d(c_in, width, 3, padding=1, bias=False), nn.BatchNorm2d(width), activation(act))


class StemDown(nn.Module):
    """The official search supernet's way from the stem into block 0's first op.

    A learned depthwise conv with kernel = stride = the scale step (1, 2, 4 or 8), a 1x1 conv
    to the op's bottleneck width, BN. Sides that are not a multiple of the stride are
    zero-padded at the bottom / right first, so the output side is ceil(n / stride) like every
    other route's (at 224 px nothing is padded).
    """

    def __init__(self, c_in: int, c_out: int, stride: int):
        super().__init__()
        self.stride = stride
        self.depthwise = nn.Conv2d(c_in, c_in, stride, stride=stride, groups=c_in, bias=False)
        self.conv = nn.Conv2d(c_in, c_out, 1, bias=False)
        self.bn = nn.BatchNorm2d(c_out)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pad_h, pad_w = -x.shape[-2] % self.stride, -x.shape[-1] % self.stride
        if pad_h or pad_w:
            x = nn.functional.pad(x, (0, pad_w, 0, pad_h))
        return self.bn(self.conv(self.depthwise(x)))


class FabricLayer(nn.Module):
    """One fabric layer: an optional down-sampler (average pool for multi-scale jumps at block
    starts, or the search supernet's StemDown), then the op."""

    def __init__(self, pool: nn.Module, op: nn.Module):
        super().__init__()
        self.pool = pool
        self.op = op

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.op(self.pool(x))


class ClassifierHead(nn.Sequential):
    """Global average pooling and a linear classifier (ResNet / BossNet)."""

    def __init__(self, channels: int, num_classes: int):
        super().__init__(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(channels, num_classes))


def _route_key(choice: HyTraChoice, src: int) -> str:
    return f"{choice.op}{REFERENCE_SIDES[choice.level]}_from{REFERENCE_SIDES[src]}"


class HyTraSupernet(SupernetBackbone):
    """Per layer, one module per (input scale, choice) route; routes of a choice share its body."""

    def __init__(self, space: HyTraSpace):
        super().__init__()
        self.space = space
        self.stem = space.build_stem()
        self.layers = nn.ModuleList()
        for layer in range(space.num_layers):
            routes = nn.ModuleDict()
            bodies: dict[HyTraChoice, nn.Module] = {}
            for src, choice in space.routes(layer):
                module = space.build_layer(layer, choice, src, search=True)
                owner = bodies.setdefault(choice, module.op)
                if owner is not module.op:
                    for name in type(owner).body:
                        setattr(module.op, name, getattr(owner, name))
                routes[_route_key(choice, src)] = module
            self.layers.append(routes)

    def block_module(self, block: int) -> nn.Module:
        layers = [self.layers[i] for i in self.space.blocks[block].layers]
        return nn.ModuleList(([self.stem] if block == 0 else []) + layers)

    def _route(self, layer: int, choice: HyTraChoice, src: int) -> nn.Module:
        key = _route_key(choice, src)
        if key not in self.layers[layer]:
            raise RuntimeError(f"hytra layer {layer + 1} has no route {key}: the path is not in the space")
        return self.layers[layer][key]

    def forward_block(self, x: torch.Tensor, block: int, path: Path) -> torch.Tensor:
        if block == 0:
            x, src = self.stem(x), 0
        else:
            src = self.space.level_of_channels(x.shape[1])
        for layer, choice in zip(self.space.blocks[block].layers, path):
            x = self._route(layer, choice, src)(x)
            src = choice.level
        return x

    def materialize_block(self, block: int, path: Path, prev_path: Path | None) -> nn.Module:
        """A plain copy of this path, in the supernet's (search-time) form: with ``search_shortcut=official``
        or ``attention=official-search`` it is not the standalone network's form."""
        module = self.space.build_block(block, path, prev_path, search=True)
        parts = list(module)
        if block == 0:
            parts.pop(0).load_state_dict(self.stem.state_dict())
        src = 0 if block == 0 else prev_path[-1].level
        for layer, choice, dest in zip(self.space.blocks[block].layers, path, parts):
            dest.load_state_dict(self._route(layer, choice, src).state_dict())
            src = choice.level
        return module


# --------------------------------------------------------------------------- the space
@register_space
class HyTraSpace(SearchSpace):
    name = "hytra"
    description = "hybrid CNN-transformer fabric: ResConv / ResAtt x 4 scales, 4 blocks x 4 layers"
    default_image_size = 224
    default_sampling = "uniform"

    def __init__(self, in_channels: int = 3, image_size: int | None = None, num_classes: int = 10,
                 width_mult: float = 1.0, act: str = "relu", se: bool = False, avg_down: bool = True,
                 last_stride: int = 2, stem: str = "auto", paths: str = "official",
                 search_shortcut: str = "official", attention: str = "standard"):
        super().__init__(in_channels, image_size, num_classes)
        for key, value, allowed in (("paths", paths, PATH_RULES), ("search_shortcut", search_shortcut, SEARCH_SHORTCUTS),
                                    ("attention", attention, ATTENTION_FORMS)):
            if value not in allowed:
                raise BossNASError(f"hytra {key} must be one of {', '.join(allowed)}, got {value!r}; "
                                   f"set model.space_options.{key}={allowed[0]} (the default) or another of those")
        self.paths, self.search_shortcut, self.attention = paths, search_shortcut, attention
        if isinstance(width_mult, bool) or not isinstance(width_mult, (int, float)) or not 0 < width_mult <= 4:
            raise BossNASError(f"hytra width_mult must be a number in (0, 4], got {width_mult!r}")
        if act not in ("relu", "silu"):
            raise BossNASError(f"hytra act must be relu or silu, got {act!r}")
        if not isinstance(se, bool) or not isinstance(avg_down, bool):
            raise BossNASError(f"hytra se and avg_down must be true or false, got se={se!r}, avg_down={avg_down!r}")
        if last_stride not in (1, 2) or isinstance(last_stride, bool):
            raise BossNASError(f"hytra last_stride must be 1 or 2, got {last_stride!r}")
        if stem not in STEMS:
            raise BossNASError(f"hytra stem must be one of {', '.join(STEMS)}, got {stem!r}")
        if self.image_size < 8:
            raise BossNASError(f"hytra needs images of at least 8x8 pixels, got {self.image_size}")
        self.width_mult = float(width_mult)
        self.act, self.se, self.avg_down, self.last_stride = act, se, avg_down, last_stride
        self.stem_kind = ("imagenet" if self.image_size >= SMALL_INPUT else "small") if stem == "auto" else stem
        self.stem_width = make_divisible(STEM_WIDTH * width_mult)
        base = make_divisible(BASE_CHANNELS[0] * width_mult)
        #: channels per level: exact doublings, so a tensor's width names its scale
        self.channels = tuple(base * 2**level for level in range(len(BASE_CHANNELS)))
        #: stride of each level relative to the stem output
        self.level_strides = (1, 2, 4, 4 if last_stride == 1 else 8)
        stem_side = _ceil_div(_ceil_div(self.image_size, 2), 2) if self.stem_kind == "imagenet" else self.image_size
        self.stem_side = stem_side
        #: side of each level at this space's image_size
        self.resolutions = tuple(_ceil_div(stem_side, s) for s in self.level_strides)
        self._blocks = tuple(
            BlockSpec(b, tuple(range(b * LAYERS_PER_BLOCK, (b + 1) * LAYERS_PER_BLOCK))) for b in range(NUM_BLOCKS)
        )
        self._paths = [self._enumerate(b) for b in range(NUM_BLOCKS)]

    # ----------------------------------------------------------------- structure
    @property
    def blocks(self) -> tuple[BlockSpec, ...]:
        return self._blocks

    def layer_choices(self, layer: int) -> tuple[HyTraChoice, ...]:
        if not 0 <= layer < NUM_BLOCKS * LAYERS_PER_BLOCK:
            raise IndexError(layer)
        return CHOICES

    def path_problem(self, block: int, path: Path) -> str | None:
        """Why ``path`` is not an allowed path of ``block`` (one line), or None when it is."""
        first_layer = self.blocks[block].layers[0] + 1
        if len(path) != LAYERS_PER_BLOCK:
            return f"block {block} of 'hytra' has {LAYERS_PER_BLOCK} layers, got {len(path)} choices"
        for i, choice in enumerate(path):
            if choice not in CHOICES:
                return f"'{choice}' at layer {first_layer + i} is not a hytra choice"
        if self.paths == "official" and block == 0 and path[0].level > 1:
            return (f"block 0 must start at scale @56 or @28, at most one step below the stem "
                    f"(layer {first_layer} is {path[0]})")
        start, end = BLOCK_RULES[block] if self.paths == "static" else (0, len(REFERENCE_SIDES) - 1)
        if path[0].level < start:
            allowed = " or ".join(f"@{REFERENCE_SIDES[lv]}" for lv in range(start, len(REFERENCE_SIDES)))
            return f"block {block} must start at scale {allowed} (layer {first_layer} is {path[0]})"
        for i in range(1, LAYERS_PER_BLOCK):
            prev, cur = path[i - 1], path[i]
            if cur.level < prev.level:
                return (f"layer {first_layer + i} ({cur}) is finer than layer {first_layer + i - 1} ({prev}): "
                        f"resolution never increases; use @{REFERENCE_SIDES[prev.level]} or coarser")
            if cur.level > prev.level + 1:
                return (f"layer {first_layer + i} ({cur}) skips a scale after {prev}: a layer moves at most "
                        f"one scale coarser; use @{REFERENCE_SIDES[prev.level]} or @{REFERENCE_SIDES[prev.level + 1]}")
        if path[-1].level > end:
            allowed = " or ".join(f"@{REFERENCE_SIDES[lv]}" for lv in range(end + 1))
            return (f"block {block} must end at scale {allowed}, where block {block + 1} may start "
                    f"(layer {first_layer + LAYERS_PER_BLOCK - 1} is {path[-1]})")
        return None

    def is_allowed(self, block: int, path: Path) -> bool:
        return self.path_problem(block, path) is None

    def continues(self, block: int, prev_key: Hashable, path: Path) -> bool:
        """``paths=official``: a block starts at the scale the previous block ended at (``prev_key``,
        its level) or one scale coarser. ``static``: every path may follow every previous one."""
        return self.paths == "static" or path[0].level - prev_key in (0, 1)

    def chain_problem(self, block: int, prev_path: Path, path: Path) -> str | None:
        """Why ``path`` of ``block`` cannot follow ``prev_path`` of the block before (one line), or None."""
        if self.continues(block, prev_path[-1].level, path):
            return None
        end = prev_path[-1].level
        allowed = " or ".join(f"@{REFERENCE_SIDES[lv]}" for lv in (end, end + 1) if lv < len(REFERENCE_SIDES))
        return (f"block {block} must start at scale {allowed}, where block {block - 1} ended ({prev_path[-1]}) "
                f"or one scale coarser (layer {self.blocks[block].layers[0] + 1} is {path[0]})")

    def _enumerate(self, block: int) -> list[Path]:
        product = itertools.product(CHOICES, repeat=LAYERS_PER_BLOCK)
        return [tuple(p) for p in product if self.is_allowed(block, tuple(p))]

    def block_paths(self, block: int, prev_path: Path | None = None) -> list[Path]:
        return self.following(block, prev_path, list(self._paths[block]))

    def routes(self, layer: int) -> list[tuple[int, HyTraChoice]]:
        """The (input level, choice) pairs some allowed architecture uses at ``layer``."""
        block, pos = divmod(layer, LAYERS_PER_BLOCK)
        found = set()
        for path in self._paths[block]:
            if pos > 0:
                sources = {path[pos - 1].level}
            elif block == 0:
                sources = {0}
            else:
                sources = {p[-1].level for p in self._paths[block - 1] if self.continues(block, p[-1].level, path)}
            found |= {(src, path[pos]) for src in sources}
        return sorted(found)

    def level_of_channels(self, channels: int) -> int:
        if channels not in self.channels:
            raise RuntimeError(f"a {channels}-channel input matches no hytra scale {self.channels}")
        return self.channels.index(channels)

    def boundary_key(self, block: int, path: Path) -> Hashable:
        """The next block's input is the scale (level) this block ends at."""
        return path[-1].level

    # ----------------------------------------------------------------- text form
    def format_choice(self, choice: HyTraChoice) -> str:
        return str(choice)

    def parse_choice(self, layer: int, text: str) -> HyTraChoice:
        for choice in CHOICES:
            if str(choice) == text:
                return choice
        if text.startswith("ResAtt@") and text[7:] in ("56", "28"):
            raise BossNASError(
                f"'{text}' at layer {layer + 1} of 'hytra': ResAtt exists only at @14 and @7 (attention at "
                "fine scales costs too much); use ResConv there"
            )
        options = ", ".join(str(c) for c in CHOICES)
        raise BossNASError(f"'{text}' is not a candidate of layer {layer + 1} of 'hytra'; choose one of {options}")

    def _check_chunks(self, text: str, parts: list[str], blocks: tuple[BlockSpec, ...]) -> None:
        """Raise the specific reason when a well-formed string holds a path the fabric forbids."""
        start, prev = 0, None
        for spec in blocks:
            chunk = parts[start : start + len(spec.layers)]
            start += len(spec.layers)
            path = tuple(self.parse_choice(layer, p.strip()) for layer, p in zip(spec.layers, chunk))
            problem = self.path_problem(spec.index, path)
            if problem is None and prev is not None:
                problem = self.chain_problem(spec.index, prev, path)
            if problem:
                raise BossNASError(f"architecture '{text}' is not in 'hytra': {problem}")
            prev = path

    def parse_arch(self, text: str) -> Arch:
        if isinstance(text, str) and len(text.strip().split(self.separator)) == self.num_layers:
            self._check_chunks(text, text.strip().split(self.separator), self.blocks)
        return super().parse_arch(text)

    def parse_path(self, block: int, text: str) -> Path:
        parts = text.strip().split(self.separator)
        if len(parts) == LAYERS_PER_BLOCK:
            self._check_chunks(text, parts, (self.blocks[block],))
        return super().parse_path(block, text)

    # ----------------------------------------------------------------- builders
    def build_stem(self) -> nn.Module:
        stem = ImageNetStem if self.stem_kind == "imagenet" else SmallStem
        return stem(self.in_channels, self.stem_width, self.act)

    def build_op(self, op: str, c_in: int, c_out: int, stride: int, search: bool = False) -> nn.Module:
        """One op; ``search``: in the supernet's form (``search_shortcut``, ``attention``), else the standalone one."""
        official = search and self.search_shortcut == "official"
        shortcut = conv_shortcut(c_in, c_out, stride, self.act) if official else None
        if op == "ResConv":
            return ResConv(c_in, c_out, stride, act=self.act, se=self.se, avg_down=self.avg_down, shortcut=shortcut)
        return ResAtt(c_in, c_out, stride, act=self.act, avg_down=self.avg_down, shortcut=shortcut,
                      attention=self.attention if search else "standard")

    def build_layer(self, layer: int, choice: HyTraChoice, src: int, search: bool = False) -> FabricLayer:
        """Layer ``layer`` running ``choice`` on an input at level ``src`` (the stem for layer 0).

        ``search``: the supernet's form. With ``search_shortcut=official`` the first layer takes
        the stem through a StemDown to its bottleneck width and runs at stride 1, as the
        official supernet; elsewhere a step of several scales is an average pool, then the
        op's stride-2 step.
        """
        factor = self.level_strides[choice.level] // self.level_strides[src]
        c_out = self.channels[choice.level]
        if layer == 0 and search and self.search_shortcut == "official":
            mid = max(1, c_out // BOTTLENECK_EXPANSION)
            return FabricLayer(StemDown(self.stem_width, mid, factor), self.build_op(choice.op, mid, c_out, 1, search))
        c_in = self.stem_width if layer == 0 else self.channels[src]
        op = self.build_op(choice.op, c_in, c_out, min(factor, 2), search)
        return FabricLayer(pool_down(max(1, factor // 2)), op)

    def build_supernet(self) -> HyTraSupernet:
        return HyTraSupernet(self)

    def build_block(self, block: int, path: Path, prev_path: Path | None, search: bool = False) -> nn.Sequential:
        """The standalone block (the retrained network's form); ``search=True``: the supernet's form."""
        modules: list[nn.Module] = []
        if block == 0:
            modules.append(self.build_stem())
            src = 0
        else:
            if prev_path is None:
                raise ValueError(f"block {block} needs the previous block's path")
            src = prev_path[-1].level
        for layer, choice in zip(self.blocks[block].layers, path):
            modules.append(self.build_layer(layer, choice, src, search))
            src = choice.level
        return nn.Sequential(*modules)

    def build_head(self, arch: Arch) -> nn.Module:
        return ClassifierHead(self.channels[arch[-1][-1].level], self.num_classes)

    def out_channels(self, block: int, path: Path) -> int:
        return self.channels[path[-1].level]

    def describe_layers(self, arch: Arch) -> list[dict]:
        rows = super().describe_layers(arch)
        side = self.stem_side
        for row, choice in zip(rows, (c for path in arch for c in path)):
            out = self.resolutions[choice.level]
            row.update(op=choice.op, scale=REFERENCE_SIDES[choice.level], resolution=out,
                       channels=self.channels[choice.level], downsample=out < side)
            side = out
        return rows


# --------------------------------------------------------------------------- named models
#: the searched BossNet-T0, per stage (56, 28, 14, 7): 1 = ResConv, 0 = ResAtt (paper, Fig. 4)
BOSSNET_T0_ENCODING: list[list[int]] = [[1], [1], [1, 1, 1, 0, 1], [0, 0, 0, 1, 0, 0, 0, 0, 0]]
BOSSNET_T0_ARCH = encoding_to_arch(BOSSNET_T0_ENCODING)

register_model(ModelSpec(
    name="bossnet-t0", space="hytra", arch=BOSSNET_T0_ARCH, image_size=224, num_classes=1000,
    space_options={"act": "silu", "se": True},
    description="BossNet-T0: SiLU + SE ResConv; paper 3.4B MAdds, 80.8% ImageNet top-1",
))
register_model(ModelSpec(
    name="bossnet-t0-nose", space="hytra", arch=BOSSNET_T0_ARCH, image_size=224, num_classes=1000,
    space_options={"act": "relu", "se": False},
    description="BossNet-T0 without SE (ReLU, as the official code); paper 3.4B MAdds, 80.5% top-1",
))
register_model(ModelSpec(
    name="bossnet-t1", space="hytra", arch=BOSSNET_T0_ARCH, image_size=224, num_classes=1000,
    space_options={"act": "silu", "se": True, "last_stride": 1},
    description="BossNet-T1: T0 with the last stage at stride 16 (14x14); paper 7.9B MAdds, 81.9% top-1",
))
