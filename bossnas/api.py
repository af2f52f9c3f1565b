"""A search from Python: what ``bossnas run`` does, returning the chosen architecture and the ratings.

>>> import bossnas
>>> config = bossnas.load_config("quickstart", ["train.epochs=1"])
>>> result = bossnas.run_search(config, "runs/api")    # doctest: +SKIP
>>> result.arch, result.rating, result.ratings[0]       # doctest: +SKIP
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from pathlib import Path

from bossnas.config import RunConfig, validate_config


@dataclass(frozen=True)
class SearchResult:
    """The outcome of :func:`run_search`."""

    #: the chosen architecture, as ``bossnas show`` / ``create_model`` accept it (with its space)
    arch: str
    #: its rating (the sum of its block ratings; lower is better)
    rating: float
    #: best_arch.json as written (space, arch, params, FLOPs, input, constraints, ...)
    record: dict
    #: per block, every path's rating: ``ratings[b][path string] = rating``
    ratings: list[dict[str, float]]
    run_dir: Path


def run_search(config: RunConfig, run_dir: str | Path = "runs/search", resume: bool = False, force: bool = False,
               show_progress: bool = False) -> SearchResult:
    """Train and rate every block, choose the architecture (under ``config.search``'s budgets)
    and write the run folder, exactly as ``bossnas run`` does; SIGINT / SIGTERM stop it with
    a checkpoint (``resume=True`` continues)."""
    from rich.console import Console

    from bossnas.errors import BossNASError
    from bossnas.plot_curves import draw_run_pictures
    from bossnas.search.report import finish_run
    from bossnas.train.runner import BlockwiseSearch

    if not isinstance(config, RunConfig):
        raise BossNASError(f"run_search: config must be a RunConfig (from bossnas.load_config(...)), got {config!r:.60}")
    if isinstance(run_dir, bool) or not isinstance(run_dir, (str, os.PathLike)):
        raise BossNASError(f"run_search: run_dir must be a folder path (str or Path), got {run_dir!r}")
    for name, flag in (("resume", resume), ("force", force), ("show_progress", show_progress)):
        if not isinstance(flag, bool):
            raise BossNASError(f"run_search: {name} must be True or False, got {flag!r}")
    # fields set in Python skipped the checks load_config makes: the same checks, now
    validate_config(config, "run_search")
    start = time.perf_counter()
    search = BlockwiseSearch.open(config, run_dir, resume=resume, force=force, show_progress=show_progress)
    try:
        search.run()
        draw_run_pictures(run_dir, Console(quiet=True))  # loss.png, ratings.png, as `bossnas run` draws them
        done = finish_run(run_dir, config.search.max_flops, config.search.max_params, time.perf_counter() - start)
        record, tables = done.record, done.tables
        space = search.space
    finally:
        search.folder.unlock()
    ratings = [{space.format_path(p): r for p, r in table.items()} for table in tables]
    return SearchResult(f"{record['space']}/{record['arch']}", float(record["rating"]), record, ratings, Path(run_dir))


__all__ = ["SearchResult", "run_search"]
