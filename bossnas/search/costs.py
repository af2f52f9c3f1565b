"""FLOPs and parameter counts, measured with ``torch.utils.flop_counter`` on meta tensors.

FLOPs are what the flop counter reports (2 per multiply-add, convolutions and matrix
products; normalisation and activations are not counted); MAdds = FLOPs / 2. Models are
built on the meta device, so counting costs no memory and no arithmetic.
"""

from __future__ import annotations

from collections.abc import Hashable
from dataclasses import dataclass

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from bossnas.spaces.base import Arch, Path, SearchSpace


@dataclass(frozen=True)
class Cost:
    flops: float
    params: float

    def __add__(self, other: Cost) -> Cost:
        return Cost(self.flops + other.flops, self.params + other.params)

    @property
    def macs(self) -> float:
        return self.flops / 2


def count_params(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


_aten = torch.ops.aten
#: Element-wise and pooling ops. The flop counter counts them as 0 after decomposing them
#: into primitives in Python, which made counting 7x slower; mapping them to 0 directly
#: gives the same totals.
_ZERO_FLOP_OPS = {
    op: (lambda *args, **kwargs: 0)
    for op in (
        _aten.relu, _aten.add, _aten.sub, _aten.mul, _aten.div, _aten.mean, _aten.sum,
        _aten.avg_pool2d, _aten.max_pool2d_with_indices, _aten._adaptive_avg_pool2d,
        _aten.silu, _aten.sigmoid, _aten.hardswish, _aten.gelu, _aten._softmax, _aten.cat,
        _aten.clone, _aten.hardtanh, _aten.where, _aten.neg, _aten.exp,
    )
}


def flop_counter() -> FlopCounterMode:
    return FlopCounterMode(display=False, custom_mapping=_ZERO_FLOP_OPS)


def _skip_norms(module: nn.Module) -> None:
    """Make norm layers identities: the flop counter counts them as 0 anyway, and on meta
    tensors it decomposes them op by op, which made counting 20x slower."""
    for m in module.modules():
        if isinstance(m, (nn.modules.batchnorm._NormBase, nn.LayerNorm, nn.GroupNorm)):
            m.forward = _identity  # type: ignore[method-assign]


def _identity(x: torch.Tensor) -> torch.Tensor:
    return x


def count_flops(module: nn.Module, example: torch.Tensor, counter: FlopCounterMode | None = None) -> int:
    """FLOPs of one forward of ``module`` on ``example`` (norm layers are disabled on the way)."""
    _skip_norms(module)
    if counter is not None:
        before = counter.get_total_flops()
        module(example)
        return int(counter.get_total_flops() - before)
    with torch.no_grad(), flop_counter() as own:
        module(example)
    return int(own.get_total_flops())


def arch_cost(space: SearchSpace, arch: Arch, image_size: int | None = None) -> Cost:
    """Cost of the whole standalone network at ``image_size`` (default: the space's)."""
    size = image_size or space.image_size
    with torch.device("meta"):
        model = space.build_standalone(arch).eval()
    example = torch.empty(1, space.in_channels, size, size, device="meta")
    return Cost(count_flops(model, example), count_params(model))


def _block_input(space: SearchSpace, block: int, prefix: Arch, size: int) -> torch.Tensor:
    """A meta tensor shaped like block ``block``'s input: the image run through ``prefix``, a legal
    sequence of paths of the blocks before it (any prefix whose last path has the same boundary
    key gives the same shape)."""
    x = torch.empty(1, space.in_channels, size, size, device="meta")
    for b, path in enumerate(prefix[:block]):
        with torch.device("meta"):
            # eval: a 1x1 map of batch 1 (an 8 px input at @7) is no batch for BatchNorm in training mode
            module = space.build_block(b, path, None if b == 0 else prefix[b - 1]).eval()
        x = module(x)
    return x


class BlockCostTable:
    """Cost of every (previous-block key, path) of each block, summing to any architecture's cost.

    The stem is part of block 0 and the classifier head part of the last block, so an
    architecture costs ``sum_k table[k][(key of path k-1, path k)]``.
    """

    def __init__(self, space: SearchSpace, image_size: int | None = None):
        self.space = space
        self.size = image_size or space.image_size
        self.tables: list[dict[tuple[Hashable, Path], Cost]] = []
        last = len(space.blocks) - 1
        for spec in space.blocks:
            table: dict[tuple[Hashable, Path], Cost] = {}
            # one entry per legal (previous key, path): where paths depend on the previous
            # block's (HyTra), a path that cannot follow a key has no entry
            for key, prefix in space.prefixes(spec.index).items():
                prev_path = prefix[-1] if prefix else None
                paths = space.block_paths(spec.index, prev_path)
                x = _block_input(space, spec.index, prefix, self.size)
                # build outside the counter: weight init under it would be counted op by op
                with torch.device("meta"):
                    modules = [space.build_block(spec.index, p, prev_path).eval() for p in paths]
                    heads = [space.build_head(((),) * last + (p,)).eval() for p in paths] if spec.index == last else []
                for m in modules + heads:
                    _skip_norms(m)
                with torch.no_grad(), flop_counter() as counter:
                    for i, (path, module) in enumerate(zip(paths, modules)):
                        flops = count_flops(module, x, counter)
                        params = count_params(module)
                        if heads:
                            flops += count_flops(heads[i], module(x), counter)
                            params += count_params(heads[i])
                        table[(key, path)] = Cost(flops, params)
            self.tables.append(table)

    def cost(self, arch: Arch) -> Cost:
        total = Cost(0, 0)
        key = None
        for spec in self.space.blocks:
            path = arch[spec.index]
            total = total + self.tables[spec.index][(key, path)]
            key = self.space.boundary_key(spec.index, path)
        return total

    def cheapest(self, what: str = "flops") -> tuple[Arch, Cost]:
        """The architecture with the fewest ``"flops"`` or ``"params"``, exactly.

        A shortest path over the blocks: for each boundary key keep the cheapest prefix.
        """
        states: dict[Hashable, tuple[float, Arch, Cost]] = {None: (0.0, (), Cost(0, 0))}
        for spec in self.space.blocks:
            nxt: dict[Hashable, tuple[float, Arch, Cost]] = {}
            for (key, path), cost in self.tables[spec.index].items():
                if key not in states:
                    continue
                value, arch, total = states[key]
                value += getattr(cost, what)
                new_key = self.space.boundary_key(spec.index, path)
                if new_key not in nxt or value < nxt[new_key][0]:
                    nxt[new_key] = (value, arch + (path,), total + cost)
            states = nxt
        _, arch, total = min(states.values(), key=lambda s: s[0])
        return arch, total


def cost_rows_csv(table: BlockCostTable, archs: list[Arch]) -> str:
    """``arch,params,flops`` lines of the given architectures, the cost file ``bossnas correlate --costs`` reads."""
    space = table.space
    lines = ["arch,params,flops"]
    for arch in archs:
        cost = table.cost(arch)
        lines.append(f"{space.format_arch(arch)},{int(cost.params)},{int(cost.flops)}")
    return "\n".join(lines) + "\n"


_COST_TABLES: dict[tuple, BlockCostTable] = {}


def cost_table(space: SearchSpace) -> BlockCostTable:
    """``BlockCostTable(space)``, built once per process for each space configuration.

    Building it measures every (previous key, path) of every block and takes seconds; a
    run checks its budget against it before training and uses it again to choose.
    """
    simple = (int, float, str, bool, tuple, type(None))
    key = (type(space).__qualname__, repr(sorted((k, v) for k, v in vars(space).items() if isinstance(v, simple))))
    if key not in _COST_TABLES:
        _COST_TABLES[key] = BlockCostTable(space)
    return _COST_TABLES[key]
