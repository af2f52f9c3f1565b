"""Finishing a search: the chosen architecture (best_arch.json) and a short report.md."""

from __future__ import annotations

import json
import platform
from dataclasses import dataclass
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
    count_archs,
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
        best = best_unconstrained(tables, space)
        return Selection(best.arch, best.rating, arch_cost(space, best.arch))
    return best_constrained(space, tables, cost_table(space), max_flops, max_params, extra)


def write_best_arch(run_dir: FsPath, space: SearchSpace, choice: Selection, config: RunConfig,
                    max_flops: float | None, max_params: float | None, latency: LatencyTable | None = None,
                    max_latency: float | None = None, name: str = "best_arch.json") -> dict:
    """``best_arch.json`` (or ``name``); with a latency table also the choice's modelled latency and how it was measured."""
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
    atomic_write_json(run_dir / name, record)
    return record


def write_report(run_dir: FsPath, space: SearchSpace, config: RunConfig, state: dict, tables: RatingTables,
                 record: dict, wall_seconds: float | None = None, name: str = "report.md") -> str:
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
    if space.paths_follow_previous:
        lines += ["", f"Block k was trained and rated on the paths that may follow block k-1's best path "
                  f"(`{space.name}` rule); the rated paths combine into "
                  f"{count_archs(space, [list(t) for t in tables]):,} legal architectures "
                  f"(the space holds {space.num_architectures():,})."]
    for i, sel in enumerate(top_k(tables, 5, space), 1):
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
    atomic_write_text(run_dir / name, text)
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
    options = record.get("space_options")
    if options is not None and not (isinstance(options, dict) and all(isinstance(k, str) for k in options)):
        raise BossNASError(f"'{path}' has space_options {json.dumps(options)[:80]}, not a mapping of option names to "
                           "values (e.g. {\"width_mult\": 0.25}); restore the file")
    return record


def run_space(config: RunConfig, ckpt: dict) -> SearchSpace:
    """The run's space, built for the run's input shape (stored in the checkpoint)."""
    from bossnas.spaces import space_class

    shape = ckpt.get("input") or {}
    cls = space_class(config.space)
    return cls(in_channels=shape.get("in_channels", 3), image_size=shape.get("image_size"),
               num_classes=shape.get("num_classes", 10), **config.model.space_options)


def _budget_label(max_flops: float | None, max_params: float | None, max_latency: float | None = None) -> str:
    """'max_flops=30000000' / 'max_flops=3e7-max_params=500000' / 'max_latency=3ms': the budget, in a file name."""
    parts = [f"{k}={int(v) if float(v).is_integer() else v}" for k, v in (("max_flops", max_flops), ("max_params", max_params))
             if v is not None]
    # seconds would read 'max_latency=0.00097'; milliseconds is how budgets are given
    parts += [] if max_latency is None else [f"max_latency={max_latency * 1e3:g}ms"]
    return "-".join(parts)


@dataclass(frozen=True)
class Finished:
    """What :func:`finish_run` chose and where it wrote it."""

    record: dict
    tables: RatingTables
    best_arch: FsPath
    report: FsPath
    space: SearchSpace | None = None
    #: the latency table a --max-latency choice was made against
    latency: LatencyTable | None = None
    arch: tuple | None = None


def finish_run(run_dir: str | FsPath, max_flops: float | None = None, max_params: float | None = None,
               wall_seconds: float | None = None, out_dir: str | FsPath | None = None,
               own_budget: bool = True, max_latency: float | None = None, latency_device: str = "cpu") -> Finished:
    """Choose the architecture of a finished run and write its best_arch.json and report.md.

    Budgets not given are the run's own (``search.max_flops`` / ``search.max_params``).
    ``own_budget``: the budgets are the run's (``bossnas run``), so best_arch.json and
    report.md are the run's own files. Otherwise (``bossnas search RUN --max-flops X``) a
    budget that differs from the run's writes ``best_arch-<budget>.json`` and
    ``report-<budget>.md`` beside them, so the run's choice (and a retraining of it) stays
    as it was. ``out_dir`` writes best_arch.json and report.md there instead. ``max_latency``
    (seconds) chooses against the run's ``latency_<latency_device>.csv`` (``bossnas latency``).
    """
    from bossnas.errors import BossNASError
    from bossnas.runs import check_writable_folder
    from bossnas.search.latency import latency_budget
    from bossnas.train.runner import load_run

    run_dir = FsPath(run_dir)
    config, ckpt = load_run(run_dir)
    state = ckpt["state"]
    if state["phase"] != "done":
        raise BossNASError(f"run in '{run_dir}' has not finished training (block {state['block']}, {state['phase']}); continue it with `bossnas train --resume -o {run_dir}`")
    own = (config.search.max_flops, config.search.max_params)
    max_flops = max_flops if max_flops is not None else own[0]
    max_params = max_params if max_params is not None else own[1]
    target = FsPath(out_dir) if out_dir is not None else run_dir
    same = (max_flops, max_params) == own and max_latency is None
    suffix = "" if own_budget or out_dir is not None or same else "-" + _budget_label(max_flops, max_params, max_latency)
    check_writable_folder(target, "run folder" if out_dir is None else "--out folder")
    space = run_space(config, ckpt)
    tables = tables_from_state(space, state["tables"])
    latency_budgets, latency = latency_budget(run_dir, space, max_latency, latency_device)
    choice = select(space, tables, max_flops, max_params, latency_budgets)
    best, report = f"best_arch{suffix}.json", f"report{suffix}.md"
    record = write_best_arch(target, space, choice, config, max_flops, max_params, latency, max_latency, best)
    write_report(target, space, config, state, tables, record, wall_seconds, report)
    return Finished(record, tables, target / best, target / report, space, latency, choice.arch)
