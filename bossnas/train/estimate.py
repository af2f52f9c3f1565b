"""How long a search takes on this machine: its plan of work, and the rates earlier runs measured here.

A search's time is its training steps and its rated paths, block by block. The time of one
step depends on the machine, its load, the space, the input size, the batch, K and the
neck widths, so it is measured, not modelled: :class:`SearchTimer` times the first steps of
the run and says what the whole run will take, then keeps the progress bars' "time left"
up to date as every block is measured in turn.

Each finished block also records its seconds per step and per rated path in a small cache
of this machine's rates (``rates.json`` in the user's cache folder: ``$BOSSNAS_CACHE_DIR``,
else ``$XDG_CACHE_HOME/bossnas``, else ``~/.cache/bossnas``), keyed by the settings that
decide those times (:func:`step_signature`; not the epochs, learning rate or number of
images). A later run with the same settings starts with an estimate before its first step,
and ``bossnas presets`` turns a preset's counts into minutes once a run with its settings
has run here. The cache holds only timings; deleting it loses nothing else, and a cache
that cannot be read or written is ignored.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import time
from pathlib import Path
from typing import Any

from rich.console import Console

from bossnas.config import RunConfig
from bossnas.utils.progress import BlockPlan, KnownRates, SearchProgress, minutes

RATE_CACHE = "rates.json"
#: entries kept in the cache (the most recently measured)
MAX_ENTRIES = 64
#: config keys that do not change how long one training step or one rated path takes
NOT_TIMING = ("seed", "device", "train.epochs", "train.lr", "train.momentum", "train.weight_decay",
              "train.warmup_epochs", "train.base_momentum", "train.checkpoint_every", "train.checkpoint_minutes",
              "data.root", "data.download", "data.train_images", "search.max_flops", "search.max_params")


def cache_dir() -> Path:
    """The folder of this machine's rate cache."""
    if os.environ.get("BOSSNAS_CACHE_DIR"):
        return Path(os.environ["BOSSNAS_CACHE_DIR"]).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base).expanduser() / "bossnas"


def device_name(device: Any) -> str:
    """'cpu' or 'cuda:<GPU model>': what decides a step's time, not which of several same GPUs."""
    import torch

    device = torch.device(device)
    if device.type == "cuda":
        return f"cuda:{torch.cuda.get_device_name(device)}"
    return device.type


def step_signature(config: RunConfig, in_channels: int, image_size: int, device: Any, processes: int = 1) -> dict:
    """The settings that decide the time of a step and of a rated path, on this machine."""
    import torch

    from bossnas.config import resolve_run_config

    tree = resolve_run_config(config).to_dict()
    for key in NOT_TIMING:
        *parents, last = key.split(".")
        section = tree
        for part in parents:
            section = section[part]
        section.pop(last, None)
    tree["data"]["image_size"], tree["data"]["in_channels"] = image_size, in_channels
    return {"config": tree, "device": device_name(device), "threads": torch.get_num_threads(), "processes": processes}


def _key(signature: dict) -> str:
    return hashlib.sha256(json.dumps(signature, sort_keys=True).encode()).hexdigest()[:20]


def _read_cache() -> dict:
    try:
        data = json.loads((cache_dir() / RATE_CACHE).read_text())
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def known_rates(signature: dict) -> KnownRates | None:
    """The per-block rates an earlier run with ``signature`` measured here (None: none did)."""
    entry = _read_cache().get(_key(signature))
    if not isinstance(entry, dict):
        return None

    def numbers(values: Any) -> list[float | None]:
        ok = isinstance(values, list)
        return [v if isinstance(v, (int, float)) and math.isfinite(v) and v > 0 else None for v in (values if ok else [])]

    rates = KnownRates(numbers(entry.get("step_seconds")), numbers(entry.get("path_seconds")))
    return rates if any(rates.step_seconds) else None


def record_rates(signature: dict, blocks: int, step_seconds: dict[int, float], path_seconds: dict[int, float]) -> None:
    """Merge measured per-block rates into the cache (best effort: a cache that cannot be written is skipped)."""
    from bossnas.utils.io import atomic_write_text

    cache = _read_cache()
    key = _key(signature)
    entry = cache.get(key) if isinstance(cache.get(key), dict) else {}
    for name, values in (("step_seconds", step_seconds), ("path_seconds", path_seconds)):
        old = entry.get(name) if isinstance(entry.get(name), list) and len(entry.get(name)) == blocks else [None] * blocks
        entry[name] = [round(values[b], 6) if b in values else old[b] for b in range(blocks)]
    entry["signature"], entry["measured_at"] = signature, time.time()
    cache[key] = entry
    newest = sorted(cache.items(), key=lambda kv: kv[1].get("measured_at", 0) if isinstance(kv[1], dict) else 0)
    try:
        atomic_write_text(cache_dir() / RATE_CACHE, json.dumps(dict(newest[-MAX_ENTRIES:]), indent=1) + "\n")
    except OSError:
        pass


def rating_per_step(config: RunConfig, k: int) -> float:
    """Seconds of rating one path per second of one training step, by their forwards: a step runs
    K paths forward and backward (about 3 forwards) on two views plus the K target forwards
    (8 K batch image-forwards); rating a path recalibrates BatchNorm on ``recal_batches`` batches
    and runs the online path and the target on two views of ``rate_images`` images."""
    batch = config.train.batch_size
    rating = config.search.recal_batches * batch + 4 * config.search.rate_images
    return rating / (8 * max(1, k) * batch)


def block_plans(config: RunConfig, space: Any, steps_per_block: int, current_paths: dict[int, int]) -> list[BlockPlan]:
    """Every block's work: ``steps_per_block`` micro-steps, and its rated paths (those of the blocks
    whose paths are known in ``current_paths``, else the mean over the previous block's choices)."""
    from bossnas.train.runner import default_k

    sampling = config.train.sampling or space.default_sampling
    plans = []
    for spec in space.blocks:
        counts = space.path_counts(spec.index)
        paths = current_paths.get(spec.index, sum(counts.values()) / max(1, len(counts)))
        k = config.train.paths_per_step or default_k(space, spec.index, sampling)
        plans.append(BlockPlan(steps_per_block, paths, rating_per_step(config, k)))
    return plans


class SearchTimer:
    """The run-wide progress of a search: what the run prints about its time, and what it records.

    :class:`~bossnas.train.runner.BlockwiseSearch` calls :meth:`training` after every step and
    :meth:`rating` after every round of rated paths (both return the progress bar's fields),
    and :meth:`trained` / :meth:`rated` when a block's training / rating is done.
    """

    def __init__(self, progress: SearchProgress, console: Console, signature: dict | None, record: bool = True):
        self.progress = progress
        self.console = console
        self.signature = signature
        self.record = record and signature is not None

    @classmethod
    def for_search(cls, search: Any) -> SearchTimer:
        """The timer of ``search`` (a :class:`~bossnas.train.runner.BlockwiseSearch`) at its current position."""
        from bossnas.data.batches import epoch_batches

        config, state, space = search.config, search.state, search.space
        cfg = config.train
        n_batches = len(epoch_batches(len(search.data.train), cfg.batch_size, config.seed, 0, 0))
        steps_per_block = cfg.epochs * (n_batches // cfg.accumulate) * cfg.accumulate
        paths = {b: len(search.block_paths(b)) for b in range(min(state.block + 1, len(space.blocks)))}
        signature = step_signature(config, search.data.in_channels, search.data.image_size, search.device, search.world)
        known = known_rates(signature)
        progress = SearchProgress(block_plans(config, space, steps_per_block, paths), known)
        if state.phase == "done":
            progress.resume_at(len(space.blocks) - 1, steps_per_block, rated=True)
        else:
            done = state.epoch * (n_batches // cfg.accumulate) * cfg.accumulate + state.step
            progress.resume_at(state.block, steps_per_block if state.phase == "rate" else done)
        return cls(progress, search.console, signature, record=search.is_main)

    def begin(self) -> None:
        line = self.progress.known_line()
        if line:
            self.console.print(line)

    def training(self, block: int, steps_done: int) -> dict[str, str]:
        fields = self.progress.training(block, steps_done)
        line = self.progress.estimate_line(block)
        if line:
            self.console.print(line)
            self._record(block)  # a run stopped right after its estimate still teaches the cache this rate
        return fields

    def rating(self, block: int, paths_done: int) -> dict[str, str]:
        return self.progress.rating(block, paths_done)

    def trained(self, block: int) -> None:
        self._record(block)

    def rated(self, block: int) -> None:
        self.progress.rated(block)
        self._record(block)

    def _record(self, block: int) -> None:
        if not self.record:
            return
        step = self.progress.step_meters[block].seconds_per_unit
        path = self.progress.path_meters[block].seconds_per_unit
        record_rates(self.signature, len(self.progress.plans),  # type: ignore[arg-type]
                     {block: step} if step else {}, {block: path} if path else {})


def preset_seconds(config: RunConfig, images: int, in_channels: int, image_size: int | None) -> float | None:
    """What a search with ``config`` on ``images`` training images takes here, from the rates an
    earlier run with the same step settings measured (None: no such run, or the size is unknown)."""
    import torch

    from bossnas.spaces import space_class

    if image_size is None:
        return None
    device = "cuda" if config.device in ("auto", "cuda") and torch.cuda.is_available() else config.device
    if device == "auto":
        device = "cpu"
    known = known_rates(step_signature(config, in_channels, image_size, device))
    if known is None:
        return None
    space = space_class(config.space)(in_channels=in_channels, image_size=image_size, num_classes=10,
                                      **config.model.space_options)
    t = config.train
    steps = t.epochs * (images // t.batch_size // t.accumulate) * t.accumulate
    progress = SearchProgress(block_plans(config, space, steps, {}), known)
    return progress.remaining_seconds()


__all__ = ["RATE_CACHE", "SearchTimer", "block_plans", "cache_dir", "known_rates", "minutes", "preset_seconds",
           "record_rates", "step_signature"]
