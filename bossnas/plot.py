"""Pictures of one architecture (``bossnas show ARCH --plot out.png``), drawn with matplotlib.

Spaces whose ``describe_layers`` rows carry a ``"resolution"`` (HyTra, MBConv) are drawn as
their *fabric*: a grid of layers (x) by resolution (y) with the chosen path through it,
the op of every layer as a marker and colour, and the down-sampling positions marked.
Other spaces (NATS) get a table of their layer rows. Figures are drawn on matplotlib's Agg
canvas directly, never through pyplot, so importing this module does not change the
backend of the user's session.

>>> plot_arch(create_space("nats-sss"), parsed_arch, "arch.png")   # doctest: +SKIP
"""

from __future__ import annotations

import io
import re
from pathlib import Path

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from bossnas.errors import BossNASError
from bossnas.spaces.base import Arch, SearchSpace
from bossnas.utils.io import atomic_write_bytes

#: file types the Agg canvas writes
PLOT_SUFFIXES = ("png", "pdf", "svg", "jpg", "jpeg")
#: block paths enumerated at most when collecting the fabric's resolutions (beyond: the path's own)
LEVEL_PATH_LIMIT = 4096
MARKERS = ("o", "s", "^", "D", "P", "X", "v", "*", "h", "<", ">")
COLOURS = ("tab:blue", "tab:orange", "tab:green", "tab:purple", "tab:brown", "tab:pink",
           "tab:olive", "tab:cyan", "tab:gray", "tab:red")


def fabric_levels(space: SearchSpace, arch: Arch, rows: list[dict]) -> list[int]:
    """Every resolution a layer of the space can take (finest first), from the rows of all block paths."""
    levels = {r["resolution"] for r in rows}
    if sum(len(space.block_paths(b.index)) for b in space.blocks) <= LEVEL_PATH_LIMIT:
        for spec in space.blocks:
            for path in space.block_paths(spec.index):
                other = arch[: spec.index] + (path,) + arch[spec.index + 1 :]
                levels.update(r["resolution"] for r in space.describe_layers(other) if "resolution" in r)
    return sorted(levels, reverse=True)


def _downsampled(rows: list[dict]) -> list[bool]:
    """The rows' own "downsample" flags, or (when absent) where the resolution drops."""
    if all("downsample" in r for r in rows):
        return [bool(r["downsample"]) for r in rows]
    return [i > 0 and r["resolution"] < rows[i - 1]["resolution"] for i, r in enumerate(rows)]


def fabric_figure(rows: list[dict], levels: list[int], title: str) -> Figure:
    """The fabric: nodes (layer, resolution), the path, ops as markers, down-sampling marked."""
    fig = Figure(figsize=(max(6.0, 0.55 * len(rows) + 2.5), 1.0 * len(levels) + 2.4))
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    y_of = {level: i for i, level in enumerate(levels)}
    xs = list(range(1, len(rows) + 1))
    for x in xs:
        ax.scatter([x] * len(levels), range(len(levels)), s=16, color="0.85", zorder=1)
    # block boundaries and labels
    start = 0
    for i in range(1, len(rows) + 1):
        if i == len(rows) or rows[i]["block"] != rows[start]["block"]:
            if i < len(rows):
                ax.axvline(i + 0.5, color="0.6", ls="--", lw=0.8, zorder=0)
            ax.text((start + i + 1) / 2, -0.75, f"block {rows[start]['block']}", ha="center", va="bottom", fontsize=8)
            start = i
    ys = [y_of[r["resolution"]] for r in rows]
    ax.plot(xs, ys, color="0.3", lw=2, zorder=2)
    ops = list(dict.fromkeys(str(r.get("op", r["choice"])) for r in rows))
    for k, op in enumerate(ops):
        pts = [(x, y) for x, y, r in zip(xs, ys, rows, strict=True) if str(r.get("op", r["choice"])) == op]
        ax.scatter([p[0] for p in pts], [p[1] for p in pts], s=110, marker=MARKERS[k % len(MARKERS)],
                   color=COLOURS[k % len(COLOURS)], edgecolor="black", zorder=3, label=op)
    down = [(x, y) for x, y, d in zip(xs, ys, _downsampled(rows), strict=True) if d]
    if down:
        ax.scatter([p[0] for p in down], [p[1] - 0.38 for p in down], marker="v", s=60, color="red", zorder=4,
                   label="down-sampling")
    channels: dict[int, list] = {}
    for r in rows:
        if "channels" in r and r["channels"] not in channels.setdefault(r["resolution"], []):
            channels[r["resolution"]].append(r["channels"])
    ax.set_yticks(range(len(levels)))
    ax.set_yticklabels([f"{lv}x{lv}" + (f"\n{'/'.join(map(str, channels[lv]))} ch" if channels.get(lv) else "")
                        for lv in levels])
    ax.set_ylim(len(levels) - 0.5, -1.0)
    ax.set_xticks(xs)
    ax.set_xlim(0.4, len(rows) + 0.6)
    ax.set_xlabel("layer")
    ax.set_ylabel("resolution")
    ax.set_title(_wrap(title, int(fig.get_figwidth() * 14)), fontsize=9)
    ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.14), ncol=min(len(ops) + 1, 5), fontsize=8, frameon=False)
    return fig


def _wrap(title: str, width: int) -> str:
    """Long architecture strings (HyTra: 16 layers) wrapped at their separators."""
    lines, line = [], ""
    for piece in re.split(r"(?<=[: ])", title):
        if line and len(line) + len(piece) > width:
            lines.append(line.rstrip())
            line = ""
        line += piece
    return "\n".join(lines + [line.rstrip()])


def _cell(value: object) -> str:
    if isinstance(value, bool):
        return "yes" if value else ""
    return str(value)


def table_figure(rows: list[dict], title: str) -> Figure:
    """A table of the layer rows, blocks shaded alternately."""
    columns = list(dict.fromkeys(k for r in rows for k in r))
    cells = [[_cell(r.get(c, "")) for c in columns] for r in rows]
    fig = Figure(figsize=(max(4.0, 1.2 * len(columns)), 0.3 * (len(rows) + 1) + 0.4))
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    ax.axis("off")
    table = ax.table(cellText=cells, colLabels=columns, cellLoc="center", bbox=[0.0, 0.0, 1.0, 1.0])
    table.auto_set_font_size(False)
    table.set_fontsize(9)
    blocks = list(dict.fromkeys(r.get("block") for r in rows))
    for i, r in enumerate(rows, start=1):
        if blocks.index(r.get("block")) % 2:
            for j in range(len(columns)):
                table[i, j].set_facecolor("0.92")
    for j in range(len(columns)):
        table[0, j].set_text_props(weight="bold")
    ax.set_title(_wrap(title, int(fig.get_figwidth() * 14)), fontsize=9)
    return fig


def arch_figure(space: SearchSpace, arch: Arch, title: str | None = None) -> Figure:
    """The fabric when the space's rows carry resolutions, else the layer table."""
    rows = space.describe_layers(arch)
    if not rows:
        raise BossNASError(f"'{space.name}' describes no layers for this architecture; nothing to plot")
    title = title or f"{space.name}  {space.format_arch(arch)}  ({space.in_channels}x{space.image_size}x{space.image_size} input)"
    if all("resolution" in r for r in rows):
        return fabric_figure(rows, fabric_levels(space, arch, rows), title)
    return table_figure(rows, title)


def plot_kind(path: str | Path) -> str:
    """The file type of a plot path, checked before any drawing."""
    kind = Path(path).suffix.lower().lstrip(".")
    if kind not in PLOT_SUFFIXES:
        raise BossNASError(f"cannot write a plot to '{path}'; use one of .{', .'.join(PLOT_SUFFIXES)}")
    return kind


def save_figure(fig: Figure, path: str | Path) -> Path:
    """Write the figure atomically; the file type follows the suffix."""
    path = Path(path)
    kind = plot_kind(path)
    buffer = io.BytesIO()
    fig.savefig(buffer, format=kind, dpi=150, bbox_inches="tight")
    atomic_write_bytes(path, buffer.getvalue())
    return path


def plot_arch(space: SearchSpace, arch: Arch, path: str | Path, title: str | None = None) -> Path:
    """Draw ``arch`` of ``space`` into ``path`` (.png, .pdf, .svg, .jpg)."""
    plot_kind(path)
    return save_figure(arch_figure(space, arch, title), path)


__all__ = ["arch_figure", "fabric_figure", "plot_arch", "save_figure", "table_figure"]
