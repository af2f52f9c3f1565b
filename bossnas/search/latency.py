"""Measured latency tables: the time of every path of every block on this machine.

Like :class:`~bossnas.search.costs.BlockCostTable`, the table holds one entry per (previous
block's boundary key, path) of each block, with the stem inside block 0 and the classifier
head inside the last block, so an architecture's latency is modelled as the sum of its
blocks' entries, and the same exact dynamic programme as a FLOPs budget chooses under a
latency budget. Each entry is a real module in eval mode under ``torch.inference_mode`` on
an input of the block's shape (batch ``batch``), timed with ``torch.utils.benchmark``: warm-up,
then ``rounds`` interleaved rounds (every entry of a block once per round, so a busy spell of
the machine hits all paths alike), the minimum (or median) of the rounds per entry.

``latency_<device>.csv`` in the run folder holds the table and, in ``#`` lines, how it was
measured; ``benchmarks/latency_model.py`` checks the sum against whole networks.
"""

from __future__ import annotations

import csv
import functools
import io
import itertools
import json
import math
import platform
import random
import re
from collections.abc import Hashable
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path as FsPath

import torch
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from torch import nn

from bossnas.errors import BossNASError
from bossnas.search.costs import BlockCostTable, _block_input
from bossnas.search.select import (
    Budget,
    CostTable,
    RatingTables,
    arch_rating,
    flops_table,
    legal_archs,
    pareto_front,
    show_seconds,
)
from bossnas.spaces.base import Arch, Path, SearchSpace
from bossnas.utils.io import atomic_write_text
from bossnas.utils.timing import interleaved_times, medians

CSV_COLUMNS = ("block", "prev_path", "path", "ms", "min_ms", "max_ms")
#: what a table entry is, of the per-round times: their median, or their minimum (see measure_latency)
STATISTICS = ("median", "min")
#: interleaved rounds per entry: on a 2-core machine shared with four other jobs, 7 rounds left
#: whole-network minima still inflated by waits (10.8% median error), 15 did not (2.2%)
DEFAULT_ROUNDS = 15


#: the device types a latency table can be measured on (meta tensors run nothing; mps and others are untested)
LATENCY_DEVICES = ("cpu", "cuda")


def latency_device(text: str, option: str = "--device") -> torch.device:
    """``cpu``, ``cuda`` or ``cuda:N`` (``cpu:0`` too) as a device; one line for anything else
    (``gpu``, ``CUDA``, ``cuda:-1``, ``meta``, ``mps``). Whether it exists here is not checked."""
    match = re.fullmatch(r"(cpu|cuda)(?::([0-9]+))?", text if isinstance(text, str) else "")
    if match is None or not text.isascii():
        raise BossNASError(f"{option} '{text}' is not a latency device; expected cpu, cuda or cuda:N")
    return torch.device(match.group(1), int(match.group(2)) if match.group(2) else None)


def parse_latency_device(text: str, option: str = "--device") -> torch.device:
    """:func:`latency_device`, checked to exist on this machine (the device to measure on)."""
    device = latency_device(text, option)
    if device.type == "cuda":
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if count == 0:
            raise BossNASError(f"{option} '{text}' asked for, but CUDA is not available here; measure with --device cpu")
        if device.index is not None and device.index >= count:
            raise BossNASError(f"{option} '{text}': this machine has {count} CUDA device(s), cuda:0..cuda:{count - 1}")
    return device


def latency_file(run_dir: str | FsPath, device: str | torch.device) -> FsPath:
    """``RUN/latency_<device type>.csv`` (``cuda:1`` and ``cuda`` share ``latency_cuda.csv``)."""
    return FsPath(run_dir) / f"latency_{torch.device(device).type}.csv"


def _measure_hint(path: FsPath, force: bool = True) -> str:
    """The command that measures the table ``path`` (again): device from the file name."""
    device = path.stem.removeprefix("latency_")
    flags = ("" if device == "cpu" else f" --device {device}") + (" --force" if force else "")
    return f"`bossnas latency {path.parent}{flags}`"


@dataclass
class LatencyTable:
    """Seconds of every (previous key, path) of every block, and how they were measured."""

    space: SearchSpace
    #: ``seconds[b][(key, path)]``: seconds (``meta["statistic"]`` of the rounds) of block b's path after a
    #: block ending with key
    seconds: CostTable
    #: ``spread[b][(key, path)]``: (min, max) seconds over the rounds
    spread: list[dict[tuple[Hashable, Path], tuple[float, float]]]
    #: a representative previous path of every key (what was measured), per block
    prev_paths: list[dict[Hashable, Path | None]]
    meta: dict = field(default_factory=dict)

    def latency(self, arch: Arch) -> float:
        """Modelled seconds of the whole network: the sum of its blocks' entries."""
        total, key = 0.0, None
        for spec in self.space.blocks:
            path = arch[spec.index]
            total += self.seconds[spec.index][(key, path)]
            key = self.space.boundary_key(spec.index, path)
        return total

    def write_csv(self, path: str | FsPath) -> FsPath:
        buffer = io.StringIO()
        for k, v in self.meta.items():
            buffer.write(f"# {k}: {json.dumps(v)}\n")
        writer = csv.writer(buffer, lineterminator="\n")
        writer.writerow(CSV_COLUMNS)
        for b, table in enumerate(self.seconds):
            for (key, p), seconds in table.items():
                prev = self.prev_paths[b][key]
                low, high = self.spread[b][(key, p)]
                writer.writerow([b, "" if prev is None else self.space.format_path(prev), self.space.format_path(p),
                                 f"{seconds * 1e3:.6f}", f"{low * 1e3:.6f}", f"{high * 1e3:.6f}"])
        atomic_write_text(path, buffer.getvalue())
        return FsPath(path)

    @classmethod
    def read_csv(cls, space: SearchSpace, path: str | FsPath, space_options: dict | None = None) -> LatencyTable:
        """The table written by :meth:`write_csv`; it must cover every entry of ``space``, hold
        each entry once, with finite times > 0, and have been measured for this space, input,
        class count and (when given) ``space_options``. Anything else is one line naming the file."""
        path = FsPath(path)
        try:
            text = path.read_text(encoding="utf-8")
        except FileNotFoundError:
            raise BossNASError(f"no latency table '{path}'; measure one with {_measure_hint(path, force=False)}") from None
        except UnicodeDecodeError:
            raise BossNASError(f"'{path}' is not a latency table (not text); measure it again with {_measure_hint(path)}") from None
        except OSError as exc:
            raise BossNASError(f"cannot read '{path}' ({exc.strerror or type(exc).__name__})") from None
        again = f"measure it again with {_measure_hint(path)}"
        meta = {}
        lines = text.splitlines()
        while lines and lines[0].startswith("#"):
            line = lines.pop(0)
            key, _, value = line[1:].partition(":")
            try:
                meta[key.strip()] = json.loads(value)
            except json.JSONDecodeError:
                raise BossNASError(f"'{path}': header line {line!r} is not 'key: JSON value' as written by "
                                   f"`bossnas latency`; {again}") from None
        n = len(space.blocks)
        seconds: CostTable = [{} for _ in range(n)]
        spread: list[dict] = [{} for _ in range(n)]
        prev_paths: list[dict] = [{} for _ in range(n)]
        first_line: dict = {}
        header_lines = len(text.splitlines()) - len(lines)
        try:
            reader = csv.DictReader(lines)
            for row in reader:
                i = header_lines + reader.line_num
                b = int(row["block"])
                if not 0 <= b < n:
                    raise ValueError(f"line {i}: block {b} is not one of {space.name}'s blocks 0..{n - 1}")
                prev = space.parse_path(b - 1, row["prev_path"]) if row["prev_path"] and b > 0 else None
                if row["prev_path"] and b == 0:
                    raise ValueError(f"line {i}: block 0 follows no block, but prev_path is '{row['prev_path']}'")
                key = None if prev is None else space.boundary_key(b - 1, prev)
                entry = (key, space.parse_path(b, row["path"]))
                times = [float(row[c]) for c in ("ms", "min_ms", "max_ms")]
                if not all(math.isfinite(t) and t > 0 for t in times):
                    raise ValueError(f"line {i}: times {row['ms']}, {row['min_ms']}, {row['max_ms']} ms; each must be a finite number > 0")
                if entry in seconds[b]:
                    raise ValueError(f"line {i}: block {b} path '{row['path']}' after '{row['prev_path']}' "
                                     f"is already on line {first_line[(b, entry)]}")
                first_line[(b, entry)] = i
                seconds[b][entry] = times[0] / 1e3
                spread[b][entry] = (times[1] / 1e3, times[2] / 1e3)
                prev_paths[b].setdefault(key, prev)
        except (KeyError, ValueError, TypeError, IndexError, csv.Error, BossNASError) as exc:
            raise BossNASError(f"'{path}' is not a latency table of '{space.name}' ({type(exc).__name__}: {exc}); {again}") from None
        shape = [space.in_channels, space.image_size, space.image_size]
        if meta.get("space", space.name) != space.name or meta.get("input", shape) != shape:
            raise BossNASError(f"'{path}' was measured for {meta.get('space')} at input {meta.get('input')}, not "
                               f"{space.name} at {shape}; {again}")
        if meta.get("num_classes", space.num_classes) != space.num_classes:
            raise BossNASError(f"'{path}' was measured with a {meta['num_classes']}-class head, not "
                               f"{space.num_classes}; {again}")
        if space_options is not None and meta.get("space_options", {}) != dict(space_options):
            measured = meta.get("space_options", "not recorded (measured before tables recorded them)")
            raise BossNASError(f"'{path}' was measured with space options {measured}, not the run's "
                               f"{dict(space_options)}; {again}")
        device = meta.get("device", "cpu")
        if not isinstance(device, str) or re.fullmatch(r"(cpu|cuda)(:[0-9]+)?", device) is None:
            raise BossNASError(f"'{path}': header device {device!r} is not cpu, cuda or cuda:N; {again}")
        table = cls(space, seconds, spread, prev_paths, meta)
        missing = table.missing_entries()
        if missing:
            raise BossNASError(f"'{path}' lacks {missing} entries of '{space.name}' (another space or input size?); {again}")
        return table

    def missing_entries(self) -> int:
        """Entries of the space (every reachable, legal (key, path)) that the table does not hold."""
        missing = 0
        for spec in self.space.blocks:
            for key, prefix in self.space.prefixes(spec.index).items():
                paths = self.space.block_paths(spec.index, prefix[-1] if prefix else None)
                missing += sum((key, p) not in self.seconds[spec.index] for p in paths)
        return missing


class _BlockWithHead(nn.Module):
    """The last block followed by the classifier head: one table entry, as in BlockCostTable."""

    def __init__(self, block: nn.Module, head: nn.Module):
        super().__init__()
        self.block, self.head = block, head

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.block(x))


def _entry_module(space: SearchSpace, block: int, path: Path, prev_path: Path | None) -> nn.Module:
    module = space.build_block(block, path, prev_path)
    if block == len(space.blocks) - 1:
        module = _BlockWithHead(module, space.build_head(((),) * block + (path,)))
    return module.eval()


def _call(module: nn.Module, x: torch.Tensor):
    def run() -> None:
        with torch.inference_mode():
            module(x)
    return run


def block_input_shapes(space: SearchSpace) -> list[dict[Hashable, tuple[Path | None, torch.Size]]]:
    """Per block, every boundary key the block can follow: a representative previous path and
    the shape (batch 1) of the block's input after it. Built on the meta device: no memory."""
    shapes = []
    for spec in space.blocks:
        block = {}
        for key, prefix in space.prefixes(spec.index).items():
            block[key] = (prefix[-1] if prefix else None, _block_input(space, spec.index, prefix, space.image_size).shape)
        shapes.append(block)
    return shapes


def timings_count(space: SearchSpace, rounds: int) -> int:
    """How many timings :func:`measure_latency` makes (a warm-up and ``rounds`` per entry), for a progress bar."""
    return sum(sum(space.path_counts(b.index).values()) for b in space.blocks) * (rounds + 1)


def check_latency_batch(space: SearchSpace, batch: int, device: torch.device, memory: int | None = None) -> None:
    """Refuse a ``--batch`` whose block inputs alone (float32, all of one block's held at once
    while it is timed) exceed the device's memory: one line instead of a failed allocation.
    Activations need more, so this only turns absurd batches into one line."""
    from bossnas.data.datasets import memory_bytes

    if memory is None:
        memory = torch.cuda.get_device_properties(device).total_memory if device.type == "cuda" else memory_bytes()
    if memory is None:
        return
    per_image = max(sum(math.prod(shape[1:]) for _, shape in block.values()) for block in block_input_shapes(space)) * 4
    if batch * per_image > memory:
        raise BossNASError(f"--batch {batch} is too large: the block inputs alone need {batch * per_image / 1e9:,.1f} GB, "
                           f"more than the {memory / 1e9:,.1f} GB of {device.type} memory here; the largest batch "
                           f"that fits them is {memory // per_image:,}")


def measure_latency(space: SearchSpace, device: str | torch.device = "cpu", batch: int = 1,
                    threads: int | None = None, rounds: int = DEFAULT_ROUNDS, statistic: str = "min",
                    progress=None, space_options: dict | None = None, tick=None) -> LatencyTable:
    """Time every (previous key, path) of every block of ``space`` on ``device`` (see the module notes).

    ``statistic`` makes an entry the minimum of its rounds (the default: what the block costs
    when it has the core to itself, the figure that repeats and that sums to whole networks,
    2% off on a busy shared machine) or their median (what it costs amid this machine's
    current load; on that busy machine it moved with the load, 99% off). On a quiet machine
    the two agree. Measurements: BENCHMARKS.md, "Latency model".

    ``progress(block, entries)`` is called when a block is done, ``tick(block)`` after every
    timing (:func:`timings_count` in all). ``space_options`` (the run's) are recorded in the
    table, so a table of other options is refused when read.
    """
    if batch < 1 or rounds < 1 or (threads is not None and threads < 1):
        raise BossNASError("--batch, --threads and the rounds must be >= 1")
    if statistic not in STATISTICS:
        raise BossNASError(f"unknown latency statistic '{statistic}'; choose one of {', '.join(STATISTICS)}")
    device = torch.device(device)
    if device.type not in LATENCY_DEVICES:
        raise BossNASError(f"cannot measure latency on '{device}'; expected cpu, cuda or cuda:N")
    threads = threads or torch.get_num_threads()
    seconds: CostTable = []
    spread: list[dict] = []
    prev_paths: list[dict] = []
    for spec, inputs in zip(space.blocks, block_input_shapes(space)):
        entries, calls = [], []
        representatives: dict[Hashable, Path | None] = {}
        for key, (prev, shape) in inputs.items():
            representatives[key] = prev
            x = torch.randn(batch, *shape[1:], device=device)
            for p in space.block_paths(spec.index, prev):
                entries.append((key, p))
                calls.append(_call(_entry_module(space, spec.index, p, prev).to(device), x))
        times = interleaved_times(calls, rounds, threads, progress=None if tick is None else functools.partial(tick, spec.index))
        seconds.append(dict(zip(entries, medians(times) if statistic == "median" else map(min, times))))
        spread.append({e: (min(t), max(t)) for e, t in zip(entries, times)})
        prev_paths.append(representatives)
        if progress is not None:
            progress(spec.index, len(entries))
    meta = {
        "space": space.name, "input": [space.in_channels, space.image_size, space.image_size],
        "num_classes": space.num_classes, "device": str(device),
        "device_name": torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor() or platform.machine(),
        "batch": batch, "threads": threads, "rounds": rounds, "statistic": statistic,
        "method": "torch.utils.benchmark.Timer, eval mode, inference_mode, float32; 2 warm-up calls, "
                  f"then {rounds} rounds timing every entry of a block once per round (interleaved), "
                  f"each measurement repeated to last >= 2 ms; ms is the {statistic} over rounds",
        "torch": torch.__version__, "date": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
    }
    if space_options is not None:
        meta["space_options"] = dict(space_options)
    return LatencyTable(space, seconds, spread, prev_paths, meta)


def parse_duration(text: str, name: str = "--max-latency") -> float:
    """'3ms' -> 0.003, '800us' -> 0.0008, '0.5s' -> 0.5 (a unit is required)."""
    match = re.fullmatch(r"\s*([0-9]*\.?[0-9]+(?:[eE][-+]?[0-9]+)?)\s*(s|ms|us|µs)\s*", text or "")
    if match is None:
        raise BossNASError(f"{name} '{text}' is not a duration with a unit; write e.g. 3ms, 800us or 0.01s")
    value = float(match.group(1)) * {"s": 1.0, "ms": 1e-3, "us": 1e-6, "µs": 1e-6}[match.group(2)]
    if math.isinf(value):
        raise BossNASError(f"{name} '{text}' is not finite; give a finite duration (leave it out for no latency budget)")
    if not value > 0:
        raise BossNASError(f"{name} must be > 0, got '{text}'")
    return value


def latency_budget(run_dir: str | FsPath, space: SearchSpace, max_latency: float | None,
                   device: str = "cpu", space_options: dict | None = None) -> tuple[list[Budget], LatencyTable | None]:
    """The ``--max-latency`` budget of a run from its ``latency_<device>.csv`` (nothing without a limit)."""
    if max_latency is None:
        return [], None
    table = LatencyTable.read_csv(space, latency_file(run_dir, latency_device(device, "--latency-device")), space_options)
    return [Budget("--max-latency", table.seconds, max_latency, show_seconds)], table


#: architectures drawn at most as the cloud behind the Pareto fronts
PLOT_SAMPLE = 20000


def sample_archs(space: SearchSpace, limit: int, seed: int = 0, tables: RatingTables | None = None) -> list[Arch]:
    """Every architecture when there are at most ``limit``, else a seeded sample; only legal chains,
    and with ``tables`` only of rated paths."""
    candidates = [list(t) for t in tables] if tables is not None else [space.block_paths(b.index) for b in space.blocks]
    if not space.paths_follow_previous:
        if math.prod(len(p) for p in candidates) <= limit:
            return [tuple(a) for a in itertools.product(*candidates)]
        rng = random.Random(seed)
        return [tuple(rng.choice(p) for p in candidates) for _ in range(limit)]
    return legal_archs(space, candidates, limit, seed)


def pareto_figure(space: SearchSpace, tables: RatingTables, latency: LatencyTable, costs: BlockCostTable,
                  chosen: Arch | None = None) -> Figure:
    """Rating (lower = better) against modelled latency and against FLOPs: the architectures, the exact
    Pareto fronts (from the same dynamic programme as the budgets), and the chosen architecture."""
    cloud = sample_archs(space, PLOT_SAMPLE, tables=tables)
    ratings = [arch_rating(tables, a) for a in cloud]
    fig = Figure(figsize=(11, 4.5))
    FigureCanvasAgg(fig)
    for ax, (label, table, scale) in zip(fig.subplots(1, 2), (
            (f"latency (ms, {latency.meta.get('device', '?')}, batch {latency.meta.get('batch', '?')})", latency.seconds, 1e3),
            ("MFLOPs", flops_table(costs), 1e-6))):
        cost = [sum(table[b][e] for b, e in enumerate(_entries(space, a))) * scale for a in cloud]
        ax.scatter(cost, ratings, s=4, alpha=0.25, color="tab:gray", label=f"{len(cloud):,} architectures")
        front = pareto_front(space, tables, table)
        ax.step([c * scale for c, _, _ in front], [r for _, r, _ in front], where="post", color="tab:blue",
                marker="o", markersize=3, label=f"Pareto front ({len(front)})")
        if chosen is not None:
            x = sum(table[b][e] for b, e in enumerate(_entries(space, chosen))) * scale
            ax.scatter([x], [arch_rating(tables, chosen)], marker="*", s=220, color="tab:red", zorder=5,
                       label=f"chosen {space.format_arch(chosen)}")
        ax.set_xlabel(label)
        ax.set_ylabel("rating (lower = better)")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    fig.suptitle(f"{space.name}: rating against latency and FLOPs")
    return fig


def _entries(space: SearchSpace, arch: Arch) -> list[tuple[Hashable, Path]]:
    """The (previous key, path) table entry of every block of ``arch``."""
    keys = [None] + [space.boundary_key(b, p) for b, p in enumerate(arch[:-1])]
    return list(zip(keys, arch))


def plot_pareto(run_dir: str | FsPath, space: SearchSpace, tables: RatingTables, latency: LatencyTable,
                chosen: Arch | None = None, suffix: str = "") -> FsPath:
    """``RUN/pareto_<device><suffix>.png`` (see :func:`pareto_figure`); a budget's choice gets
    its own (``suffix`` ``-max_latency=3ms``), so each picture's star is its record's choice."""
    from bossnas.plot import save_figure
    from bossnas.search.costs import cost_table

    device = torch.device(latency.meta.get("device", "cpu")).type
    fig = pareto_figure(space, tables, latency, cost_table(space), chosen)
    return save_figure(fig, FsPath(run_dir) / f"pareto_{device}{suffix}.png")


__all__ = ["LatencyTable", "latency_budget", "latency_file", "measure_latency", "parse_duration", "pareto_figure",
           "plot_pareto"]
