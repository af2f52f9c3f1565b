"""The interface every search space implements.

A search space is data plus small builders: its layers and their candidate choices, how
layers group into blocks, which paths through a block are allowed, how an architecture is
written as text, a weight-sharing supernet and a standalone builder. The Siamese supernet,
the trainer and the searcher only talk to this interface, so a new space never touches them.

Vocabulary
----------
choice : one candidate of one layer (an int width, an op name, ...); hashable, printable.
path   : a tuple of choices, one per layer of a block.
arch   : a tuple of paths, one per block; the whole architecture.
"""

from __future__ import annotations

import itertools
import math
from abc import ABC, abstractmethod
from collections.abc import Hashable, Sequence
from dataclasses import dataclass
from typing import ClassVar

import torch
from torch import nn

from bossnas.errors import BossNASError

Choice = Hashable
Path = tuple
Arch = tuple

SAMPLING_MODES = ("fair", "uniform")


@dataclass(frozen=True)
class BlockSpec:
    """One block: a group of consecutive searchable layers trained and rated together."""

    index: int
    layers: tuple[int, ...]


class SupernetBackbone(nn.Module, ABC):
    """The weight-sharing network of a space, run one block along one path at a time.

    The input tensor carries whatever the block needs to know about the blocks before it
    (channel count, resolution), so a block never needs the earlier blocks' paths.
    """

    @abstractmethod
    def forward_block(self, x: torch.Tensor, block: int, path: Path) -> torch.Tensor:
        """Run block ``block`` along ``path`` (block 0 takes the image and includes the stem)."""

    @abstractmethod
    def materialize_block(self, block: int, path: Path, prev_path: Path | None) -> nn.Module:
        """A plain module holding copies of the weights this path uses.

        ``prev_path`` is the previous block's path (None for block 0): it fixes the input
        this block receives.
        """

    def block_parameters(self, block: int) -> list[nn.Parameter]:
        """Parameters trained while ``block`` trains (all weights its paths can use)."""
        return list(self.block_module(block).parameters())

    @abstractmethod
    def block_module(self, block: int) -> nn.Module:
        """The sub-module that holds every weight of block ``block``."""


class StandaloneNet(nn.Module):
    """A plain network for one architecture: the space's blocks, then a classifier head."""

    def __init__(self, blocks: Sequence[nn.Module], head: nn.Module) -> None:
        super().__init__()
        self.blocks = nn.ModuleList(blocks)
        self.head = head

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        for block in self.blocks:
            x = block(x)
        return x

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.forward_features(x))

    # ----------------------------------------------------------------- timm's classifier API
    def _classifier_path(self) -> str:
        """Where the final linear layer sits (``head.4``), found once: a reset replaces it in place."""
        path = self.__dict__.get("_classifier_at")
        if path is None:
            linears = [name for name, m in self.head.named_modules() if isinstance(m, nn.Linear)]
            if not linears:
                raise BossNASError("this network's head has no linear classifier")
            path = self.__dict__["_classifier_at"] = f"head.{linears[-1]}"
        return path

    def get_classifier(self) -> nn.Module:
        """The final layer: an ``nn.Linear``, or ``nn.Identity`` after ``reset_classifier(0)`` (as in timm)."""
        return self.get_submodule(self._classifier_path())

    def reset_classifier(self, num_classes: int, global_pool: str | None = None) -> None:
        """A freshly initialised final layer for ``num_classes`` classes (0: none, the pooled
        features come out), on the old layer's device and dtype, as timm's ``reset_classifier``."""
        if global_pool is not None:
            raise BossNASError("reset_classifier: the pooling of a bossnas network is fixed; leave global_pool unset")
        if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 0:
            raise BossNASError(f"reset_classifier: num_classes must be an integer >= 0 (0: no classifier), got {num_classes!r}")
        path = self._classifier_path()
        old = self.get_submodule(path)
        features = old.in_features if isinstance(old, nn.Linear) else self.__dict__["_classifier_features"]
        parameter = next(self.parameters())
        new = nn.Linear(features, num_classes).to(parameter.device, parameter.dtype) if num_classes else nn.Identity()
        parent, _, name = path.rpartition(".")
        setattr(self.get_submodule(parent), name, new)
        self.__dict__["_classifier_features"] = features
        spec = getattr(self, "bossnas_spec", None)
        if isinstance(spec, dict):
            spec["num_classes"] = num_classes


class SearchSpace(ABC):
    """Base class of the search spaces; subclasses register with :func:`register_space`.

    Constructed for one input shape (``in_channels`` x ``image_size``) and class count, so
    that the same space searches on ImageNet, CIFAR or the user's own images.
    """

    name: ClassVar[str]
    description: ClassVar[str]
    default_image_size: ClassVar[int]
    #: how training samples the K paths of a block: "fair" needs every path of the block to
    #: be allowed (a product of per-layer choices); restricted spaces use "uniform".
    default_sampling: ClassVar[str] = "fair"
    #: the arch string's separator between layers
    separator: ClassVar[str] = ":"

    def __init__(self, in_channels: int = 3, image_size: int | None = None, num_classes: int = 10):
        if in_channels < 1:
            raise BossNASError(f"in_channels must be >= 1, got {in_channels}")
        self.in_channels = in_channels
        self.image_size = image_size or self.default_image_size
        self.num_classes = num_classes

    # ----------------------------------------------------------------- structure
    @property
    @abstractmethod
    def blocks(self) -> tuple[BlockSpec, ...]:
        """The blocks, in training order."""

    @abstractmethod
    def layer_choices(self, layer: int) -> tuple[Choice, ...]:
        """The candidate choices of searchable layer ``layer`` (global index)."""

    @property
    def num_layers(self) -> int:
        return sum(len(b.layers) for b in self.blocks)

    def is_allowed(self, block: int, path: Path) -> bool:
        """Whether ``path`` is an allowed path of ``block`` after some previous path (all product paths by default)."""
        return True

    def continues(self, block: int, prev_key: Hashable, path: Path) -> bool:
        """Whether ``path`` of ``block`` may follow a block-(k-1) path whose boundary key is ``prev_key``.

        True by default: every path of a block follows every path of the block before. A space
        whose block paths depend on the previous block's path (HyTra's official rule: a block
        starts where the previous one ended or one scale coarser) overrides it; it must depend
        on the previous path only through its :meth:`boundary_key`, because the costs and the
        constrained search are kept per key.
        """
        return True

    def block_paths(self, block: int, prev_path: Path | None = None) -> list[Path]:
        """The allowed paths of ``block``, in a fixed order.

        With ``prev_path`` (the path of block k-1), only those that may follow it; without,
        every path the block may take after some previous path.
        """
        spec = self.blocks[block]
        product = itertools.product(*(self.layer_choices(layer) for layer in spec.layers))
        return self.following(block, prev_path, [tuple(p) for p in product if self.is_allowed(block, tuple(p))])

    def following(self, block: int, prev_path: Path | None, paths: list[Path]) -> list[Path]:
        """The members of ``paths`` (of ``block``) that may follow ``prev_path`` (all of them when it is None)."""
        if prev_path is None or block == 0:
            return paths
        key = self.boundary_key(block - 1, prev_path)
        return [p for p in paths if self.continues(block, key, p)]

    @property
    def paths_follow_previous(self) -> bool:
        """True when some path of a block cannot follow some path of the block before it."""
        return any(count < len(self.block_paths(spec.index))
                   for spec in self.blocks[1:] for count in self.path_counts(spec.index).values())

    def prefixes(self, block: int) -> dict[Hashable, Arch]:
        """One legal prefix (paths of blocks 0..block-1) for every boundary key ``block`` can follow.

        ``{None: ()}`` for block 0. Costs and latencies of block ``block`` are measured once per
        key, on the input such a prefix produces.
        """
        reps: dict[Hashable, Arch] = {None: ()}
        for b in range(block):
            nxt: dict[Hashable, Arch] = {}
            for prefix in reps.values():
                for path in self.block_paths(b, prefix[-1] if prefix else None):
                    nxt.setdefault(self.boundary_key(b, path), prefix + (path,))
            reps = nxt
        return reps

    def path_counts(self, block: int) -> dict[Hashable, int]:
        """How many paths ``block`` has after a previous path with each boundary key.

        Cached per space (a space does not change once built): fair sampling asks on every step.
        """
        cache = self.__dict__.setdefault("_path_counts", {})
        if block not in cache:
            cache[block] = {key: len(self.block_paths(block, prefix[-1] if prefix else None))
                            for key, prefix in self.prefixes(block).items()}
        return dict(cache[block])

    def is_product_block(self, block: int) -> bool:
        """True when every combination of the block's layer choices is an allowed path."""
        spec = self.blocks[block]
        full = math.prod(len(self.layer_choices(layer)) for layer in spec.layers)
        return min(self.path_counts(block).values()) == full

    def num_architectures(self) -> int:
        """Every legal chain of block paths, counted per boundary key (the product when paths never depend
        on the previous block)."""
        counts: dict[Hashable, int] = {None: 1}
        reps: dict[Hashable, Path | None] = {None: None}
        for spec in self.blocks:
            nxt: dict[Hashable, int] = {}
            nxt_reps: dict[Hashable, Path] = {}
            for key, n in counts.items():
                for path in self.block_paths(spec.index, reps[key]):
                    new_key = self.boundary_key(spec.index, path)
                    nxt[new_key] = nxt.get(new_key, 0) + n
                    nxt_reps.setdefault(new_key, path)
            counts, reps = nxt, nxt_reps
        return sum(counts.values())

    def max_fair_k(self, block: int) -> int:
        """The path count of one fair draw: the fewest candidates of any layer of the block."""
        return min(len(self.layer_choices(layer)) for layer in self.blocks[block].layers)

    # ----------------------------------------------------------------- sampling
    def sample_paths(
        self, block: int, k: int, mode: str, generator: torch.Generator, prev_path: Path | None = None
    ) -> list[Path]:
        """Draw the ``k`` paths of one training step.

        ``fair``: each layer takes a random permutation of its candidates and path i takes
        the i-th entry of every permutation, so with k = the candidate count each candidate
        of each layer is used exactly once per step (as in the official NATS/MBConv runs).
        ``uniform``: k distinct paths drawn uniformly from the allowed paths of the block
        (those that may follow ``prev_path``, the previous block's path, where that matters).
        """
        if mode == "fair":
            if not self.is_product_block(block):
                raise BossNASError(
                    f"fair sampling needs every path of block {block} of '{self.name}' to be "
                    "allowed; set train.sampling=uniform"
                )
            spec = self.blocks[block]
            columns = []
            for layer in spec.layers:
                choices = self.layer_choices(layer)
                if k > len(choices):
                    raise BossNASError(
                        f"train.paths_per_step={k} is larger than the {len(choices)} candidates "
                        f"of layer {layer}; fair sampling allows 1..{len(choices)}"
                    )
                order = torch.randperm(len(choices), generator=generator).tolist()
                columns.append([choices[i] for i in order[:k]])
            return [tuple(col[i] for col in columns) for i in range(k)]
        if mode == "uniform":
            paths = self.block_paths(block, prev_path)
            if k > len(paths):
                after = f" after {self.format_path(prev_path)}" if prev_path is not None and block else ""
                raise BossNASError(
                    f"train.paths_per_step={k} is larger than the {len(paths)} paths of block {block}{after}; "
                    f"expected 1..{len(paths)}"
                )
            order = torch.randperm(len(paths), generator=generator)[:k].tolist()
            return [paths[i] for i in order]
        raise BossNASError(f"unknown sampling mode '{mode}'; choose one of {', '.join(SAMPLING_MODES)}")

    # ----------------------------------------------------------------- text form
    def format_choice(self, choice: Choice) -> str:
        return str(choice)

    def parse_choice(self, layer: int, text: str) -> Choice:
        for choice in self.layer_choices(layer):
            if self.format_choice(choice) == text:
                return choice
        options = ", ".join(self.format_choice(c) for c in self.layer_choices(layer))
        raise BossNASError(
            f"'{text}' is not a candidate of layer {layer + 1} of '{self.name}'; choose one of {options}"
        )

    def format_path(self, path: Path) -> str:
        return self.separator.join(self.format_choice(c) for c in path)

    def format_arch(self, arch: Arch) -> str:
        return self.separator.join(self.format_path(p) for p in arch)

    def arch_example(self) -> str:
        return self.format_arch(tuple(self.block_paths(b.index)[-1] for b in self.blocks))

    def parse_path(self, block: int, text: str) -> Path:
        spec = self.blocks[block]
        parts = text.strip().split(self.separator)
        if len(parts) != len(spec.layers):
            raise BossNASError(
                f"malformed path '{text}' for block {block} of '{self.name}': expected "
                f"{len(spec.layers)} choices separated by '{self.separator}'"
            )
        path = tuple(self.parse_choice(layer, p.strip()) for layer, p in zip(spec.layers, parts))
        if not self.is_allowed(block, path):
            raise BossNASError(f"path '{text}' is not an allowed path of block {block} of '{self.name}'")
        return path

    def parse_arch(self, text: str) -> Arch:
        """Parse an architecture string, with a one-line error naming what is wrong."""
        if not isinstance(text, str) or not text.strip():
            raise BossNASError(f"empty architecture string; expected e.g. '{self.arch_example()}'")
        parts = text.strip().split(self.separator)
        if len(parts) != self.num_layers:
            raise BossNASError(
                f"malformed architecture '{text}' for '{self.name}': expected {self.num_layers} "
                f"choices separated by '{self.separator}' (e.g. '{self.arch_example()}'), got {len(parts)}"
            )
        arch, start = [], 0
        for spec in self.blocks:
            chunk = parts[start : start + len(spec.layers)]
            start += len(spec.layers)
            path = tuple(self.parse_choice(layer, p.strip()) for layer, p in zip(spec.layers, chunk))
            if not self.is_allowed(spec.index, path):
                raise BossNASError(
                    f"'{self.format_path(path)}' is not an allowed path of block {spec.index} "
                    f"of '{self.name}' in architecture '{text}'"
                )
            if arch and not self.continues(spec.index, self.boundary_key(spec.index - 1, arch[-1]), path):
                raise BossNASError(
                    f"'{self.format_path(path)}' (block {spec.index}) cannot follow '{self.format_path(arch[-1])}' "
                    f"(block {spec.index - 1}) in '{self.name}' architecture '{text}'"
                )
            arch.append(path)
        return tuple(arch)

    # ----------------------------------------------------------------- builders
    @abstractmethod
    def build_supernet(self) -> SupernetBackbone:
        """A fresh weight-sharing supernet."""

    @abstractmethod
    def build_block(self, block: int, path: Path, prev_path: Path | None) -> nn.Module:
        """A fresh standalone module for one block along one path (block 0 includes the stem).

        ``prev_path`` is the previous block's path, None for block 0.
        """

    @abstractmethod
    def build_head(self, arch: Arch) -> nn.Module:
        """The classifier head placed after the last block."""

    @abstractmethod
    def out_channels(self, block: int, path: Path) -> int:
        """Channel count of the block's output along ``path``."""

    @staticmethod
    def previous_path(arch: Arch, block: int) -> Path | None:
        return None if block == 0 else arch[block - 1]

    def build_standalone(self, arch: Arch) -> StandaloneNet:
        """A plain, freshly initialised network for one architecture."""
        blocks = [
            self.build_block(spec.index, arch[spec.index], self.previous_path(arch, spec.index))
            for spec in self.blocks
        ]
        return StandaloneNet(blocks, self.build_head(arch))

    def extract_standalone(self, supernet: SupernetBackbone, arch: Arch) -> StandaloneNet:
        """A standalone network holding copies of the supernet's weights along ``arch``."""
        blocks = [
            supernet.materialize_block(spec.index, arch[spec.index], self.previous_path(arch, spec.index))
            for spec in self.blocks
        ]
        return StandaloneNet(blocks, self.build_head(arch))

    def boundary_key(self, block: int, path: Path) -> Hashable:
        """What the next block depends on from this block's path (its last choice by default).

        Two paths with the same key must give the next block the same input shape, so the
        cost of block k+1 is a function of (key of block k, path of block k+1); the
        constrained search relies on it.
        """
        return path[-1]

    def canonical_arch(self, arch: Arch) -> Arch:
        """One representative of the architectures that build the same network.

        Two architectures are the same network exactly when their canonical forms are equal;
        by default every architecture is its own (``nasbench-macro`` overrides it).
        """
        return arch

    def describe_layers(self, arch: Arch) -> list[dict]:
        """One row per searchable layer, for `bossnas show`."""
        rows = []
        for spec in self.blocks:
            for layer, choice in zip(spec.layers, arch[spec.index]):
                rows.append({"layer": layer + 1, "block": spec.index, "choice": self.format_choice(choice)})
        return rows
