"""Parameters, FLOPs and output shape of every layer of one architecture (``bossnas show``).

The standalone network is built on the meta device (no memory, no weights initialised)
and run once under the same FLOP counter as :func:`bossnas.search.costs.arch_cost`, so the
rows add up to the totals ``show`` prints under them. A row is a child module of a block:
the stem (block 0's first child, where a block has one child more than layers), one row
per searchable layer, and the classifier head.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from bossnas.search.costs import _skip_norms, count_params, flop_counter
from bossnas.spaces.base import Arch, SearchSpace


@dataclass(frozen=True)
class LayerRow:
    #: "stem", the searchable layer's number (from 1) or "head"
    name: str
    block: int
    #: the layer's choice and what it is ("-" for the stem and the head)
    choice: str
    op: str
    module: str
    #: the output's shape without the batch (C x H x W, or the logits)
    output: tuple[int, ...]
    params: int
    flops: int


def _shape(output: object) -> tuple[int, ...]:
    return tuple(output.shape[1:]) if isinstance(output, torch.Tensor) else ()


def layer_rows(space: SearchSpace, arch: Arch) -> list[LayerRow]:
    """One :class:`LayerRow` per stem, searchable layer and head of ``arch``, in order."""
    with torch.device("meta"):
        model = space.build_standalone(arch).eval()
    _skip_norms(model)
    described = {row["layer"]: row for row in space.describe_layers(arch)}
    units: list[tuple[str, int, str, nn.Module]] = []  # (name, block, module path, module)
    for spec in space.blocks:
        children = list(model.blocks[spec.index].named_children())
        stem = len(children) == len(spec.layers) + 1
        names = (["stem"] if stem else []) + [str(layer + 1) for layer in spec.layers]
        if len(children) != len(names):  # a block laid out otherwise: one row for the whole block
            units.append((f"block {spec.index}", spec.index, f"blocks.{spec.index}", model.blocks[spec.index]))
            continue
        units += [(name, spec.index, f"blocks.{spec.index}.{child}", module) for name, (child, module) in zip(names, children)]
    units.append(("head", space.blocks[-1].index, "head", model.head))
    shapes: dict[str, tuple[int, ...]] = {}
    hooks = [module.register_forward_hook(lambda _m, _i, out, path=path: shapes.__setitem__(path, _shape(out)))
             for _, _, path, module in units]
    example = torch.empty(1, space.in_channels, space.image_size, space.image_size, device="meta")
    try:
        with torch.no_grad(), flop_counter() as counter:
            model(example)
    finally:
        for hook in hooks:
            hook.remove()
    counts = counter.get_flop_counts()
    root = type(model).__name__
    rows = []
    for name, block, path, module in units:
        info = described.get(int(name)) if name.isdigit() else None
        flops = sum(counts.get(f"{root}.{path}", {}).values())
        rows.append(LayerRow(name, block, str(info["choice"]) if info else "-", str(info.get("op", "-")) if info else "-",
                             type(module).__name__, shapes.get(path, ()), count_params(module), int(flops)))
    return rows


def _amount(n: float) -> str:
    for unit, suffix in ((1e9, "G"), (1e6, "M"), (1e3, "k")):
        if n >= unit:
            return f"{n / unit:.2f}{suffix}"
    return str(int(n))


def render_layer_table(rows: list[LayerRow]) -> list[str]:
    """The rows as an aligned text table, with a total line (parameters exactly, FLOPs = 2 x multiply-adds)."""
    header = ("layer", "block", "choice", "op", "module", "output", "params", "FLOPs")
    body = [(r.name, str(r.block), r.choice, r.op, r.module, "x".join(map(str, r.output)) or "-", f"{r.params:,}",
             _amount(r.flops)) for r in rows]
    body.append(("total", "", "", "", "", "", f"{sum(r.params for r in rows):,}", _amount(sum(r.flops for r in rows))))
    widths = [max(len(line[i]) for line in (header, *body)) for i in range(len(header))]
    numeric = {1, 6, 7}  # right-aligned columns

    def fmt(line: tuple[str, ...]) -> str:
        cells = [c.rjust(w) if i in numeric else c.ljust(w) for i, (c, w) in enumerate(zip(line, widths))]
        return "  ".join(cells).rstrip()

    return [fmt(header), *(fmt(line) for line in body)]


__all__ = ["LayerRow", "layer_rows", "render_layer_table"]
