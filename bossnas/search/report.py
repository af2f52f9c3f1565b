"""Finishing a search: the chosen architecture (best_arch.json) and a short report.md."""

from __future__ import annotations

import json
import os
import platform
from dataclasses import dataclass
from pathlib import Path as FsPath
from typing import TYPE_CHECKING

import torch

from bossnas.config import RunConfig
from bossnas.search.costs import arch_cost, cost_table
from bossnas.search.noise import NOISE_MULTIPLE, BlockNoise, block_noise, difference_noise
from bossnas.search.select import (
    Budget,
    RatingTables,
    Selection,
    best_constrained,
    best_unconstrained,
    count_archs,
    top_k,
)
from bossnas.spaces.base import Arch, SearchSpace
from bossnas.utils.io import atomic_write_json, atomic_write_text

if TYPE_CHECKING:  # the latency module draws with matplotlib: imported only where a table is used
    from bossnas.search.latency import LatencyTable


def tables_from_state(space: SearchSpace, tables: dict[str, list]) -> RatingTables:
    return [{space.parse_path(int(b), p): float(r) for p, r in tables[str(b)]} for b in range(len(space.blocks))]


def select(space: SearchSpace, tables: RatingTables, max_flops: float | None, max_params: float | None,
           extra: list[Budget] | None = None,
           names: tuple[str, str] = ("search.max_flops", "search.max_params")) -> Selection:
    """The best-rated architecture under the FLOPs / parameter budgets and ``extra`` ones (e.g. latency);
    ``names``: how the FLOPs / parameter budgets were given, for messages."""
    if max_flops is None and max_params is None and not extra:
        best = best_unconstrained(tables, space)
        return Selection(best.arch, best.rating, arch_cost(space, best.arch))
    return best_constrained(space, tables, cost_table(space), max_flops, max_params, extra, names)


def write_best_arch(run_dir: FsPath, space: SearchSpace, choice: Selection, config: RunConfig,
                    max_flops: float | None, max_params: float | None, latency: LatencyTable | None = None,
                    max_latency: float | None = None, name: str = "best_arch.json") -> dict:
    """``best_arch.json`` (or ``name``); with a latency table also the choice's modelled latency and how it was measured."""
    cost = choice.cost or arch_cost(space, choice.arch)
    record = {
        # the run's own way to name it: the same as space.name, or the module:Class of a space of one's own
        "space": config.space,
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
        # 12 significant digits: the budget as typed (2.4000004ms), without the float noise of ms <-> s
        record["constraints"]["max_latency_ms"] = None if max_latency is None else float(f"{max_latency * 1e3:.12g}")
        record["latency_ms"] = round(latency.latency(choice.arch) * 1e3, 6)
        record["latency"] = {k: latency.meta.get(k) for k in ("device", "device_name", "batch", "threads")}
    atomic_write_json(run_dir / name, record)
    return record


def block_noises(space: SearchSpace, state: dict, tables: RatingTables) -> list[BlockNoise]:
    """Every block's rating noise from the checkpoint's half-image ratings (None where a run made
    before they were kept has none)."""
    halves = state.get("rating_halves") or {}
    out = []
    for b, table in enumerate(tables):
        rows = halves.get(str(b))
        paths = [space.parse_path(b, p) for p, _ in state["tables"][str(b)]]
        pairs = dict(zip(paths, (tuple(h) for h in rows))) if rows and len(rows) == len(paths) else None
        out.append(block_noise(b, table, pairs))
    return out


def _k_per_block(space: SearchSpace, config: RunConfig, state: dict) -> str:
    """'K = 2 (fair sampling)' (train.paths_per_step), or each block's default K as the run drew it:
    'K = 8 / 4 / 4 per block, the default (uniform sampling)'."""
    sampling = config.train.sampling or space.default_sampling
    if config.train.paths_per_step:
        return f"K = {config.train.paths_per_step} ({sampling} sampling)"
    from bossnas.train.runner import default_k

    best = [space.parse_path(b, p) for b, p in enumerate(state.get("best_paths", []))]
    ks = [default_k(space, b, sampling, best[b - 1] if 0 < b <= len(best) else None) for b in range(len(space.blocks))]
    return f"K = {' / '.join(map(str, ks))} per block, the default ({sampling} sampling)"


def _scale_note(space: SearchSpace, archs: list[Arch]) -> list[str]:
    """Where path names carry a reference scale (HyTra's ``@28``: the side at 224 x 224 input),
    the sides those scales have at this run's input."""
    sides: dict[int, int] = {}
    for arch in archs:
        for row in space.describe_layers(arch):
            if "scale" in row and "resolution" in row:
                sides.setdefault(int(row["scale"]), int(row["resolution"]))
    if not sides or all(k == v for k, v in sides.items()):
        return []
    pairs = ", ".join(f"`@{k}` = {v}x{v}" for k, v in sorted(sides.items(), reverse=True))
    return [f"Scale names (`@{max(sides)}` ... `@{min(sides)}`) are each scale's side at the 224 x 224 input of "
            f"the paper; at this run's {space.image_size}x{space.image_size} input the sides are: {pairs}.", ""]


def _pictures(run_dir: FsPath, target: FsPath, latency_picture: FsPath | None, device: str) -> list[str]:
    """Links to the run's pictures (relative to the report's folder), and how to get the latency one."""
    def link(path: FsPath) -> str:
        rel = os.path.relpath(path, target)
        return f"[`{rel}`]({rel.replace(' ', '%20')})"

    lines = []
    for name, what in (("loss.png", "training loss and learning rate per block"),
                       ("ratings.png", "the distribution of every block's path ratings, the best marked")):
        if (run_dir / name).is_file():
            lines.append(f"- {link(run_dir / name)}: {what}")
    if latency_picture is not None:
        lines.append(f"- {link(latency_picture)}: rating against latency and FLOPs, the Pareto fronts and this choice")
    else:
        pareto = run_dir / f"pareto_{device}.png"
        tail = (link(pareto) if pareto.is_file() else f"`pareto_{device}.png` (written by `bossnas latency {run_dir}`)")
        lines.append(f"- {tail}: rating against measured latency and FLOPs, with the Pareto fronts")
    for name in ("arch.png", "arch.svg", "arch.pdf"):
        if (run_dir / name).is_file():
            lines.append(f"- {link(run_dir / name)}: the architecture")
    return ["## Pictures", "", *lines, ""]


def write_report(run_dir: FsPath, space: SearchSpace, config: RunConfig, state: dict, tables: RatingTables,
                 record: dict, wall_seconds: float | None = None, name: str = "report.md",
                 target: FsPath | None = None, latency_picture: FsPath | None = None) -> str:
    """``report.md`` (or ``name``) of a choice into ``target`` (default: the run folder ``run_dir``)."""
    target = run_dir if target is None else target
    noises = block_noises(space, state, tables)
    best_k = top_k(tables, 5, space)
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
        lines += [f"Budget: {', '.join(f'{k} = {v:.12g}' for k, v in constraints.items())}.", ""]
    if "latency_ms" in record:
        how = record["latency"]
        lines += [f"Latency (sum of the measured block table, {how['device']} {how['device_name']}, batch {how['batch']}, "
                  f"{how['threads']} thread(s)): {record['latency_ms']:.3f} ms.", ""]
    lines += noise_warnings(space, noises, record, tables)
    lines += _scale_note(space, [space.parse_arch(record["arch"])] + [sel.arch for sel in best_k])
    lines += ["## Blocks", "", "| block | paths | best path | its rating | worst rating | noise (split-half) | "
              "paths within the noise of the best |", "|---|---|---|---|---|---|---|"]
    for b, table in enumerate(tables):
        n = noises[b]
        noise = "not measured" if n.noise is None else f"{n.noise:.2g}"
        ties = "-" if n.noise is None else str(len(n.ties))
        lines.append(f"| {b} | {len(table)} | `{space.format_path(n.best)}` | {n.best_rating:.5f} | "
                     f"{max(table.values()):.5f} | {noise} | {ties} |")
    lines += ["", "## Best-rated architectures", ""]
    if space.paths_follow_previous:  # before the table: a line between a table's header and its rows ends the table
        lines += [f"Block k was trained and rated on the paths that may follow block k-1's best path "
                  f"(`{space.name}` rule); the rated paths combine into "
                  f"{count_archs(space, [list(t) for t in tables]):,} legal architectures "
                  f"(the space holds {space.num_architectures():,}).", ""]
    lines += ["| rank | architecture | rating | gap to rank 1 | noise of the gap |", "|---|---|---|---|---|"]
    for i, sel in enumerate(best_k, 1):
        gap_noise = difference_noise(noises, best_k[0].arch, sel.arch) if i > 1 else None
        lines.append(f"| {i} | `{space.format_arch(sel.arch)}` | {sel.rating:.5f} | "
                     f"{'-' if i == 1 else f'{sel.rating - best_k[0].rating:.2g}'} | "
                     f"{'-' if gap_noise is None else f'{gap_noise:.2g}'} |")
    train_s, rate_s = state.get("train_seconds", 0.0), state.get("rate_seconds", 0.0)
    lines += [
        "",
        *_pictures(run_dir, target, latency_picture, str(record.get("latency", {}).get("device", "cpu")).split(":")[0]),
        "## Run",
        "",
        f"- data: {config.data.name}, {config.train.epochs} epoch(s) per block, batch {config.train.batch_size}, "
        f"{_k_per_block(space, config, state)}, "
        f"ensemble bootstrapping {'on' if config.train.ensemble else 'off'}",
        f"- rating: {config.search.rate_images} held-out images x 2 views, BN recalibration on "
        f"{config.search.recal_batches} batch(es) {'on' if config.search.bn_recalibration else 'off'}",
        f"- time: training {train_s:.1f} s, rating {rate_s:.1f} s" + (f", wall {wall_seconds:.1f} s" if wall_seconds else ""),
        f"- machine: {platform.machine()}, torch {torch.__version__}, {torch.get_num_threads()} threads, device {config.device}",
        "",
        "Ratings are BYOL losses against the population centre (lower = better). Per-block tables: "
        "`block_<k>_ratings.csv`. The noise of a rating difference is measured from the two halves of the rating "
        f"images (docs/reliability.md); a path or architecture within {NOISE_MULTIPLE:g} x that noise of the best "
        "cannot be told apart from it by these images.",
    ]
    text = "\n".join(lines) + "\n"
    atomic_write_text(target / name, text)
    return text


def noise_warnings(space: SearchSpace, noises: list[BlockNoise], record: dict, tables: RatingTables) -> list[str]:
    """Report lines warning where the ratings cannot tell the best path from the next ones."""
    lines = []
    for n in noises:
        if n.ties:
            shown = ", ".join(f"`{space.format_path(p)}`" for p in n.ties[:3]) + (", ..." if len(n.ties) > 3 else "")
            lines.append(f"- block {n.block}: {len(n.ties)} more path(s) ({shown}) are rated within "
                         f"{NOISE_MULTIPLE:g} x the ratings' noise ({n.noise:.2g}) of the best `{space.format_path(n.best)}`")
    if not lines:
        return []
    return ["**Warning: the ratings cannot tell the best path from the next ones** in some blocks (the gaps are "
            "smaller than the ratings' own noise, measured from two halves of the rating images); the chosen "
            "architecture is one of several that these ratings rank alike. More rating images "
            "(`search.rate_images`) narrow the noise.", "", *lines, ""]


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


def budget_label(max_flops: float | None, max_params: float | None, max_latency: float | None = None,
                 latency_device: str = "cpu") -> str:
    """'max_flops=30000000' / 'max_flops=3e7-max_params=500000' / 'max_latency=2.403388ms' /
    'max_latency_cuda=3ms': the budget, in a file name ('' for none). Latency in milliseconds
    to 12 significant digits, so two budgets that differ as typed get two names."""
    parts = [f"{k}={int(v) if float(v).is_integer() else v!r}" for k, v in (("max_flops", max_flops), ("max_params", max_params))
             if v is not None]
    if max_latency is not None:
        key = "max_latency" if latency_device == "cpu" else f"max_latency_{latency_device}"
        parts.append(f"{key}={max_latency * 1e3:.12g}ms")
    return "-".join(parts)


def record_budget_label(record: dict) -> str | None:
    """The :func:`budget_label` of the budget a best_arch.json record was chosen under (None: unreadable)."""
    constraints = record.get("constraints")
    latency = record.get("latency") if isinstance(record.get("latency"), dict) else {}
    if not isinstance(constraints, dict):
        return None
    values = [constraints.get(k) for k in ("max_flops", "max_params", "max_latency_ms")]
    if not all(v is None or (isinstance(v, (int, float)) and not isinstance(v, bool)) for v in values):
        return None
    device = str(latency.get("device") or "cpu").split(":")[0]
    return budget_label(values[0], values[1], None if values[2] is None else values[2] / 1e3, device)


#: the suffix of a choice's files when it was made under no budget, beside a run's choice made under one
NO_BUDGET = "no_budget"


def choice_names(target: FsPath, label: str) -> tuple[str, str]:
    """The rule for every way of choosing (``run``, ``run --resume search.max_flops=X``, ``search
    --max-flops X``, ``search --out``): ``best_arch.json`` / ``report.md`` when the folder holds no
    best_arch.json yet, or one chosen under this same budget; otherwise ``best_arch-<budget>.json`` /
    ``report-<budget>.md``. So the first choice of a run stays the run's, and no other budget replaces it.
    """
    from bossnas.errors import BossNASError

    best = target / "best_arch.json"
    if not best.exists():
        return "best_arch.json", "report.md"
    try:
        existing = record_budget_label(read_best_arch(best))
    except BossNASError as exc:
        raise BossNASError(f"{exc}; move it away to choose again (the choice is made from the checkpoint)") from None
    if existing == label:
        return "best_arch.json", "report.md"
    suffix = "-" + (label or NO_BUDGET)
    return f"best_arch{suffix}.json", f"report{suffix}.md"


def _check_out_folder(out_dir: FsPath, run_dir: FsPath) -> None:
    """--out of ``search``: a folder of its own for the choice's files, not another run's folder."""
    from bossnas.errors import BossNASError
    from bossnas.runs import CHECKPOINT, check_writable_folder

    check_writable_folder(out_dir, "--out folder")
    if out_dir.is_dir() and (out_dir / CHECKPOINT).exists() and out_dir.resolve() != run_dir.resolve():
        raise BossNASError(f"--out '{out_dir}' holds another run (its {CHECKPOINT}); give a folder of its own for the "
                           "choice, or leave --out out to write beside the run's files")
    for name in ("best_arch.json",):
        if (out_dir / name).exists() and not (out_dir / name).is_file():
            raise BossNASError(f"'{out_dir / name}' is not a file; move it out of the --out folder (nothing was changed)")


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
    #: each block's rating noise (bossnas.search.noise)
    noises: list[BlockNoise] | None = None
    #: the picture of rating against latency drawn for this choice (with --max-latency)
    pareto: FsPath | None = None


def finish_run(run_dir: str | FsPath, max_flops: float | None = None, max_params: float | None = None,
               wall_seconds: float | None = None, out_dir: str | FsPath | None = None,
               max_latency: float | None = None, latency_device: str = "cpu",
               budget_names: tuple[str, str] | None = None) -> Finished:
    """Choose the architecture of a finished run and write its record and report.

    Budgets not given are the run's own (``search.max_flops`` / ``search.max_params`` in its
    config). Where the files go follows one rule (:func:`choice_names`): the run's first
    choice is ``best_arch.json`` / ``report.md``; a choice under another budget, however it is
    asked for, is ``best_arch-<budget>.json`` / ``report-<budget>.md``. ``out_dir`` puts the
    files in another folder, under the same rule there. ``max_latency`` (seconds) chooses
    against the run's ``latency_<latency_device>.csv`` (``bossnas latency``), and draws this
    choice's own ``pareto_<device>[-<budget>].png``. ``budget_names``: how the FLOPs and
    parameter budgets were given, for messages (default: ``--max-flops`` / ``--max-params`` for
    budgets given here, the config keys for the run's own).
    """
    from bossnas.errors import BossNASError
    from bossnas.runs import check_writable_folder
    from bossnas.search.latency import latency_budget, plot_pareto
    from bossnas.search.latency import latency_device as parse_device
    from bossnas.train.runner import load_run

    run_dir = FsPath(run_dir)
    config, ckpt = load_run(run_dir)
    state = ckpt["state"]
    if state["phase"] != "done":
        raise BossNASError(f"run in '{run_dir}' has not finished training (block {state['block']}, {state['phase']}); "
                           f"continue it with `bossnas run --resume --out {run_dir}` (it trains what is left, then chooses)")
    own = (config.search.max_flops, config.search.max_params)
    if budget_names is None:
        budget_names = ("--max-flops" if max_flops is not None else "search.max_flops",
                        "--max-params" if max_params is not None else "search.max_params")
    max_flops = max_flops if max_flops is not None else own[0]
    max_params = max_params if max_params is not None else own[1]
    device = parse_device(latency_device, "--latency-device").type
    target = FsPath(out_dir) if out_dir is not None else run_dir
    if out_dir is not None:
        _check_out_folder(target, run_dir)
    else:
        check_writable_folder(target, "run folder")
    space = run_space(config, ckpt)
    tables = tables_from_state(space, state["tables"])
    latency_budgets, latency = latency_budget(run_dir, space, max_latency, latency_device, dict(config.model.space_options))
    choice = select(space, tables, max_flops, max_params, latency_budgets, budget_names)
    label = budget_label(max_flops, max_params, max_latency, device)
    best, report = choice_names(target, label)
    pareto = None
    if latency is not None:  # a picture per record: its star is this choice
        suffix = best.removeprefix("best_arch").removesuffix(".json")
        pareto = plot_pareto(target, space, tables, latency, choice.arch, suffix)
    record = write_best_arch(target, space, choice, config, max_flops, max_params, latency, max_latency, best)
    write_report(run_dir, space, config, state, tables, record, wall_seconds, report, target, pareto)
    return Finished(record, tables, target / best, target / report, space, latency, choice.arch,
                    block_noises(space, state, tables), pareto)
