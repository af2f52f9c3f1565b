"""Finishing a search: the chosen architecture (best_arch.json) and a short report.md."""

from __future__ import annotations

import json
import platform
from pathlib import Path as FsPath
from typing import TYPE_CHECKING

import torch

from bossnas.config import RunConfig
from bossnas.search.costs import arch_cost, cost_table
from bossnas.search.select import (
    Budget,
    RatingTables,
    Selection,
    best_constrained,
    best_unconstrained,
    top_k,
)
from bossnas.spaces.base import SearchSpace
from bossnas.utils.io import atomic_write_json, atomic_write_text

if TYPE_CHECKING:  # the latency module draws with matplotlib: imported only where a table is used
    from bossnas.search.latency import LatencyTable


def tables_from_state(space: SearchSpace, tables: dict[str, list]) -> RatingTables:
    return [{space.parse_path(int(b), p): float(r) for p, r in tables[str(b)]} for b in range(len(space.blocks))]


def select(space: SearchSpace, tables: RatingTables, max_flops: float | None, max_params: float | None,
           extra: list[Budget] | None = None) -> Selection:
    """The best-rated architecture under the FLOPs / parameter budgets and ``extra`` ones (e.g. latency)."""
    if max_flops is None and max_params is None and not extra:
        best = best_unconstrained(tables)
        return Selection(best.arch, best.rating, arch_cost(space, best.arch))
    return best_constrained(space, tables, cost_table(space), max_flops, max_params, extra)


def write_best_arch(run_dir: FsPath, space: SearchSpace, choice: Selection, config: RunConfig,
                    max_flops: float | None, max_params: float | None, latency: LatencyTable | None = None,
                    max_latency: float | None = None) -> dict:
    """``best_arch.json``; with a latency table also the choice's modelled latency and how it was measured."""
    cost = choice.cost or arch_cost(space, choice.arch)
    record = {
        "space": space.name,
        "arch": space.format_arch(choice.arch),
        "rating": round(choice.rating, 8),
        "params": int(cost.params),
        "flops": int(cost.flops),
        "madds": int(cost.macs),
        "input": [space.in_channels, space.image_size, space.image_size],
        "num_classes": space.num_classes,
        "space_options": dict(config.model.space_options),
        "constraints": {"max_flops": max_flops, "max_params": max_params},
        "data": config.data.name,
        "seed": config.seed,
    }
    if latency is not None:
        record["constraints"]["max_latency_ms"] = None if max_latency is None else max_latency * 1e3
        record["latency_ms"] = round(latency.latency(choice.arch) * 1e3, 6)
        record["latency"] = {k: latency.meta.get(k) for k in ("device", "device_name", "batch", "threads")}
    atomic_write_json(run_dir / "best_arch.json", record)
    return record


def write_report(run_dir: FsPath, space: SearchSpace, config: RunConfig, state: dict, tables: RatingTables,
                 record: dict, wall_seconds: float | None = None) -> str:
    lines = [
        f"# BossNAS search: {space.name} on {config.data.name}",
        "",
        f"Chosen architecture: **`{record['arch']}`** (rating {record['rating']:.5f}, lower is better), "
        f"{record['params']:,} parameters, {record['flops'] / 1e6:.2f} MFLOPs ({record['madds'] / 1e6:.2f} M multiply-adds) "
        f"at {space.image_size}x{space.image_size}x{space.in_channels}.",
        "",
    ]
    constraints = {k: v for k, v in record["constraints"].items() if v is not None}
    if constraints:
        lines += [f"Budget: {', '.join(f'{k} = {v:.4g}' for k, v in constraints.items())}.", ""]
    if "latency_ms" in record:
        how = record["latency"]
        lines += [f"Latency (sum of the measured block table, {how['device']} {how['device_name']}, batch {how['batch']}, "
                  f"{how['threads']} thread(s)): {record['latency_ms']:.3f} ms; rating against latency and FLOPs "
                  f"with the Pareto fronts: `pareto_{how['device'].split(':')[0]}.png`.", ""]
    lines += ["## Blocks", "", "| block | paths | best path | its rating | worst rating |", "|---|---|---|---|---|"]
    for b, table in enumerate(tables):
        best = min(table, key=table.__getitem__)
        lines.append(f"| {b} | {len(table)} | `{space.format_path(best)}` | {table[best]:.5f} | {max(table.values()):.5f} |")
    lines += ["", "## Best-rated architectures", "", "| rank | architecture | rating |", "|---|---|---|"]
    for i, sel in enumerate(top_k(tables, 5), 1):
        lines.append(f"| {i} | `{space.format_arch(sel.arch)}` | {sel.rating:.5f} |")
    train_s, rate_s = state.get("train_seconds", 0.0), state.get("rate_seconds", 0.0)
    lines += [
        "",
        "## Run",
        "",
        f"- data: {config.data.name}, {config.train.epochs} epoch(s) per block, batch {config.train.batch_size}, "
        f"K = {config.train.paths_per_step or 'all candidates'} ({config.train.sampling or space.default_sampling} sampling), "
        f"ensemble bootstrapping {'on' if config.train.ensemble else 'off'}",
        f"- rating: {config.search.rate_images} held-out images x 2 views, BN recalibration on "
        f"{config.search.recal_batches} batch(es) {'on' if config.search.bn_recalibration else 'off'}",
        f"- time: training {train_s:.1f} s, rating {rate_s:.1f} s" + (f", wall {wall_seconds:.1f} s" if wall_seconds else ""),
        f"- machine: {platform.machine()}, torch {torch.__version__}, {torch.get_num_threads()} threads, device {config.device}",
        "",
        "Ratings are BYOL losses against the population centre (lower = better). Per-block tables: "
        "`block_<k>_ratings.csv`.",
    ]
    text = "\n".join(lines) + "\n"
    atomic_write_text(run_dir / "report.md", text)
    return text


def read_best_arch(path: str | FsPath) -> dict:
    from bossnas.errors import BossNASError

    path = FsPath(path)
    try:
        record = json.loads(path.read_text())
    except FileNotFoundError:
        raise BossNASError(f"'{path}' not found") from None
    except OSError as exc:  # a name too long to be a file (OSError 36), a folder, no permission
        raise BossNASError(f"cannot read '{path}' ({exc.strerror or type(exc).__name__})") from None
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise BossNASError(f"'{path}' is not valid JSON") from None
    if not isinstance(record, dict) or "arch" not in record or "space" not in record:
        raise BossNASError(f"'{path}' is not a best_arch.json (needs 'space' and 'arch')")
    return record
