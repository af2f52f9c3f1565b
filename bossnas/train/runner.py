"""The block-wise BossNAS loop: train block k, rate all its paths, fix its best path, go on.

``for block in space.blocks:`` is the whole method; everything around it is bookkeeping
that makes the loop resumable: the data order and every random draw are pure functions of
(seed, block, epoch, step), so a checkpoint only needs weights, optimizer state and the
position in the loop to continue exactly where it stopped. Under torchrun each process
trains on its shard of every global batch, gradients are averaged before each optimizer
step, and each process rates a share of the paths (see ``docs/reliability.md``).
"""

from __future__ import annotations

import contextlib
import csv
import dataclasses
import functools
import math
import random
import time
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path as FsPath

import numpy as np
import torch
from rich.console import Console

from bossnas import distributed as dist
from bossnas.config import RunConfig, config_from_dict, resolve_run_config, search_augment_for
from bossnas.curves import MetricsLog
from bossnas.data.augment import build_augment
from bossnas.data.batches import epoch_batches, iterate, seeded_generator
from bossnas.data.datasets import SplitData, hold_out_for_rating, limit_train, load_data
from bossnas.errors import BossNASError
from bossnas.runs import (
    CHECKPOINT,
    CONFIG,
    SEARCH,
    CheckpointClock,
    Interrupted,
    RunFolder,
    StopSignals,
    check_same_training,
    diff_keys,
)
from bossnas.search.costs import cost_table
from bossnas.search.noise import block_noise, noise_note
from bossnas.search.rating import rate_block_with_halves, recalibrate_bn
from bossnas.spaces import create_space, space_class
from bossnas.spaces.base import Path, SearchSpace
from bossnas.ssl.momentum import cosine_momentum, ema_update_
from bossnas.supernet.siamese import SiameseSupernet
from bossnas.train.estimate import SearchTimer
from bossnas.train.optim import build_optimizer, set_lr, warmup_cosine_lr
from bossnas.train.step import bossnas_step
from bossnas.utils.device import autocast_factory
from bossnas.utils.io import atomic_write_text, load_checkpoint
from bossnas.utils.progress import Bar, make_console

#: generator keys of the random draws that are not training steps
RATE_VIEWS_KEY, RECAL_KEY = 101, 202
#: generator keys of a step's augmentation (per process) and target batch shuffle (shared);
#: the step's paths come from the plain (seed, block, epoch, step) generator, the same on
#: every process
AUGMENT_KEY, SHUFFLE_KEY = 303, 404


@dataclass
class RunState:
    """Where the loop is; saved in every checkpoint."""

    block: int = 0
    #: train -> rate -> (next block) ... -> done
    phase: str = "train"
    epoch: int = 0
    #: micro-steps finished in the current epoch
    step: int = 0
    best_paths: list[str] = field(default_factory=list)
    #: block index (as str) -> [[path, rating], ...] in the block's path order
    tables: dict[str, list] = field(default_factory=dict)
    #: block index (as str) -> [[rating on the first half of the rating images, on the second], ...]
    #: in the same order: the ratings' own noise (bossnas.search.noise); absent in older runs
    rating_halves: dict[str, list] = field(default_factory=dict)
    #: one dict per finished epoch: block, epoch, loss, seconds
    history: list[dict] = field(default_factory=list)
    train_seconds: float = 0.0
    rate_seconds: float = 0.0
    #: loss sum and count of the finished steps of the current epoch (its history entry
    #: comes out the same when the epoch is resumed half-way)
    epoch_loss_sum: float = 0.0
    epoch_loss_count: int = 0


def build_space(config: RunConfig, data: SplitData) -> SearchSpace:
    cls = space_class(config.space)
    try:
        return cls(in_channels=data.in_channels, image_size=data.image_size, num_classes=data.num_classes,
                   **config.model.space_options)
    except TypeError as exc:
        raise BossNASError(f"model.space_options for '{config.space}': {exc}") from None


def prepare_data(config: RunConfig) -> SplitData:
    default_size = space_class(config.space).default_image_size
    data = load_data(config.data.name, config.data.root, config.data.image_size, config.data.download,
                     config.data.workers, default_size=default_size, batch_size=config.train.batch_size)
    if config.search.rate_split == "train":  # before the subset: no image is both trained and rated on
        data = hold_out_for_rating(data, config.search.rate_images, seed=config.seed)
    return limit_train(data, config.data.train_images, seed=config.seed)


def validate(config: RunConfig, space: SearchSpace, data: SplitData, world: int = 1) -> None:
    """Reject settings that would fail later, before any work starts.

    ``world`` is the number of processes sharing each global batch. The FLOPs / parameter
    budget is checked separately (:func:`check_budget`): it needs the space's cost table.
    """
    sampling = config.train.sampling or space.default_sampling
    for spec in space.blocks:
        # block k's paths are known once block k-1's best path is: K must fit the fewest it can have
        fewest = min(space.path_counts(spec.index).values())
        k = config.train.paths_per_step or (space.max_fair_k(spec.index) if sampling == "fair" else min(4, fewest))
        limit = space.max_fair_k(spec.index) if sampling == "fair" else fewest
        if sampling == "fair" and not space.is_product_block(spec.index):
            raise BossNASError(f"train.sampling=fair needs a product block; block {spec.index} of '{space.name}' is restricted: use uniform")
        if k > limit:
            raise BossNASError(f"train.paths_per_step={k} is out of range for block {spec.index} of '{space.name}' with {sampling} sampling; expected 1..{limit}")
    if config.train.batch_size > len(data.train):
        raise BossNASError(f"train.batch_size={config.train.batch_size} is larger than the {len(data.train)} training images; expected 2..{len(data.train)}")
    if config.search.rate_images > len(data.rating_images):
        raise BossNASError(f"search.rate_images={config.search.rate_images} is larger than the {len(data.test)} test images; expected 2..{len(data.test)}")
    steps = len(data.train) // config.train.batch_size
    if steps < config.train.accumulate:
        raise BossNASError(f"train.accumulate={config.train.accumulate} exceeds the {steps} steps of an epoch; expected 1..{steps}")
    if world > 1:
        batch = config.train.batch_size
        if batch % world or batch // world < 2:
            raise BossNASError(
                f"train.batch_size={batch} cannot be split over {world} processes; expected a multiple of {world} "
                f"that is at least {2 * world} (each process needs 2 or more images for BatchNorm)"
            )


def _amount(x: float) -> str:
    """A count in the suffixes the config accepts, rounded up: 2312345 -> '2.313M', 548202 -> '548.202k'."""
    for suffix, unit in (("G", 1e9), ("M", 1e6), ("k", 1e3), ("", 1.0)):
        if abs(x) >= unit or unit == 1.0:
            return f"{math.ceil(x / unit * 1000) / 1000:g}{suffix}"
    raise AssertionError("unreachable")


def check_budget(config: RunConfig, space: SearchSpace) -> None:
    """Reject a ``search.max_flops`` / ``search.max_params`` that no architecture meets.

    The smallest architecture is found exactly from the space's cost table (at the run's
    input size), so the check costs seconds, not a failed search at the end of the run.
    """
    budgets = [("search.max_flops", "flops", "FLOPs", config.search.max_flops),
               ("search.max_params", "params", "parameters", config.search.max_params)]
    for key, what, unit, cap in budgets:
        if cap is None:
            continue
        arch, cost = cost_table(space).cheapest(what)
        least = getattr(cost, what)
        if cap < least:
            raise BossNASError(
                f"{key}={_amount(cap)} is below the {_amount(least)} {unit} of the smallest architecture of "
                f"'{space.name}' ({space.format_arch(arch)} at {space.in_channels}x{space.image_size}x{space.image_size} input); "
                f"expected >= {_amount(least)}"
            )


def default_k(space: SearchSpace, block: int, sampling: str, prev_path: Path | None = None) -> int:
    """K when train.paths_per_step is not set: a fair draw's size, or 4 (the official HyTra runs)."""
    if sampling == "fair":
        return space.max_fair_k(block)
    return min(4, len(space.block_paths(block, prev_path)))


class BlockwiseSearch:
    """Trains and rates every block of a space on a data set, writing into a run folder.

    Under torchrun (``WORLD_SIZE`` > 1) every process builds one; they share the work of
    each step and of each block's rating, and only rank 0 prints and writes files.
    """

    def __init__(self, config: RunConfig, run_dir: str | FsPath | RunFolder, console: Console | None = None,
                 show_progress: bool = True, signals: StopSignals | None = None):
        self.config = config = resolve_run_config(config)
        self.folder = run_dir if isinstance(run_dir, RunFolder) else RunFolder(run_dir, SEARCH)
        self.run_dir = self.folder.path
        self.device = dist.init_from_env(config.device)
        self.rank, self.world = dist.rank(), dist.world_size()
        self.is_main = self.rank == 0
        self.console = (console or make_console()) if self.is_main else Console(quiet=True)
        self.show_progress = show_progress and self.is_main
        self.autocast = autocast_factory(config.train.amp, self.device)
        self.data = prepare_data(config)
        if config.data.augment is None:  # decided by the data; config.yaml records the decision
            config.data.augment = search_augment_for(self.data.image_size)
        self.space = build_space(config, self.data)
        validate(config, self.space, self.data, self.world)
        dist.on_main(lambda: check_budget(config, self.space))
        torch.manual_seed(config.seed)
        self.model = SiameseSupernet(self.space, config.model.hidden_dim, config.model.proj_dim, config.model.adapter_width,
                                     target_adapter=config.model.target_adapter, head_init=config.model.head_init).to(self.device)
        if config.train.channels_last:
            self.model.to(memory_format=torch.channels_last)
        self.augment = build_augment(config.data.augment, self.data.mean, self.data.std)
        self.sampling = config.train.sampling or self.space.default_sampling
        self.state = RunState()
        self.optimizer: torch.optim.Optimizer | None = None
        self._pending_optimizer: dict | None = None
        self._schedule: dict = {}
        #: (block, phase, epoch, step) of the checkpoint on disk
        self._saved_at: tuple | None = None
        #: SIGINT / SIGTERM: run() installs handlers unless the caller already did (the CLI)
        self.signals = signals or StopSignals(announce=self.is_main)
        self._stop = self.signals.event
        self.clock = CheckpointClock(config.train.checkpoint_minutes)
        #: training curves (metrics.jsonl, TensorBoard): rank 0 writes them
        self.metrics = MetricsLog(self.run_dir, enabled=self.is_main)

    # ------------------------------------------------------------------ run folder
    @classmethod
    def open(cls, config: RunConfig, run_dir: str | FsPath, resume: bool = False, force: bool = False,
             console: Console | None = None, show_progress: bool = True, signals: StopSignals | None = None) -> BlockwiseSearch:
        """Start a run in ``run_dir``, or resume the one there (``resume``).

        Every check (run folder, lock, checkpoint, config, data, budget) happens before
        anything in the folder is written or deleted; rank 0 holds the folder's lock while
        this object lives.
        """
        folder = RunFolder(run_dir, SEARCH)
        dist.init_from_env(config.device)
        # rank 0 checks the folder and reads the checkpoint, and hands it to the others: no
        # shared file system needed
        saved = dist.on_main(lambda: folder.prepare(resume, force))
        try:
            search = cls(config, folder, console, show_progress, signals)
            # the config with its automatic values decided (space and data defaults): what
            # trains, what config.yaml records and what a resumed checkpoint must match
            config = search.config
            if saved is not None:
                dist.on_main(lambda: check_compatible(saved, config, folder.checkpoint))
                search.load_state(saved)
                dist.on_main(lambda: folder.resumed(config.to_dict()))
                note = search.metrics.start(saved.get("metrics_offset"))
                if note:
                    search.console.print(f"[yellow]note[/]: {note}")
                search.console.print(f"resuming '{folder.path}' at {search._position()}")
            else:
                dist.on_main(lambda: folder.begin(config.to_dict(), force))
                search.metrics.start()
                # a first checkpoint: the folder now holds a run, and a failure at any later step
                # has a good checkpoint to point at
                search.save()
        except BaseException:
            folder.unlock()
            raise
        return search

    def data_info(self) -> dict:
        """What the checkpoint must agree with about the data (a changed folder changes the schedule)."""
        return {"name": self.data.name, "train_images": len(self.data.train), "test_images": len(self.data.test),
                "in_channels": self.data.in_channels, "image_size": self.data.image_size}

    def checkpoint_state(self) -> dict:
        """Everything a resumed run needs to continue exactly (see docs/reliability.md)."""
        training = self.optimizer is not None and self.state.phase == "train"
        rng = {"torch": torch.get_rng_state(), "python": random.getstate(),
               "numpy": _numpy_rng_state()}
        if torch.cuda.is_available() and self.device.type == "cuda":
            rng["cuda"] = torch.cuda.get_rng_state(self.device)
        return {
            "space": self.space.name,
            "input": {"in_channels": self.space.in_channels, "image_size": self.space.image_size,
                      "num_classes": self.space.num_classes},
            "fingerprint": self.config.fingerprint(),
            "config": self.config.to_dict(),
            "data": self.data_info(),
            "world_size": self.world,
            "state": dataclasses.asdict(self.state),
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict() if training else None,
            # recomputed from the position on resume; kept to read and to check against
            "schedule": dict(self._schedule) if training else None,
            "sampler": {"block": self.state.block, "epoch": self.state.epoch, "next_step": self.state.step,
                        "batch_size": self.config.train.batch_size, "per_process": self.config.train.batch_size // self.world,
                        "seed": self.config.seed},
            "rng": rng,
            # metrics.jsonl's length when this checkpoint was taken: a resume cuts it back to it
            "metrics_offset": self.metrics.offset,
        }

    def save(self) -> None:
        """Rank 0 writes the checkpoint (atomically); every process waits until it is on disk."""
        if self.is_main:
            self.metrics.sync()
            self.folder.save(self.checkpoint_state())
            self.clock.saved()
        dist.barrier()
        self._saved_at = (self.state.block, self.state.phase, self.state.epoch, self.state.step)

    def load_state(self, ckpt: dict) -> None:
        where = self.run_dir / CHECKPOINT
        saved_data = ckpt.get("data")
        if saved_data is not None and saved_data != self.data_info():
            differs = diff_keys(saved_data, self.data_info())
            raise BossNASError(
                f"checkpoint '{where}' was trained on other data ({'; '.join(differs[:4])}); "
                "resume with the data the run started with"
            )
        try:
            self.model.load_state_dict(ckpt["model"])
            self.state = RunState(**ckpt["state"])
        except (KeyError, TypeError, RuntimeError) as exc:
            raise BossNASError(f"checkpoint '{where}' does not fit this model ({type(exc).__name__}); was it written by another version?") from None
        self._pending_optimizer = ckpt.get("optimizer")
        rng = ckpt.get("rng") or {}
        if "torch" in rng:
            torch.set_rng_state(rng["torch"])
        if "python" in rng:
            random.setstate(rng["python"])
        if "numpy" in rng:
            _set_numpy_rng_state(rng["numpy"])
        if "cuda" in rng and self.device.type == "cuda":
            torch.cuda.set_rng_state(rng["cuda"], self.device)
        saved_world = ckpt.get("world_size", 1)
        if saved_world != self.world:
            self.console.print(
                f"[yellow]note[/]: the checkpoint was written by a run on {saved_world} process(es), this one has "
                f"{self.world}; the global batches are the same, but per-process BatchNorm statistics are not, so "
                "the result can differ slightly from an uninterrupted run"
            )
        self._saved_at = (self.state.block, self.state.phase, self.state.epoch, self.state.step)

    # ------------------------------------------------------------------ helpers
    def best_paths(self) -> list[Path]:
        return [self.space.parse_path(b, text) for b, text in enumerate(self.state.best_paths)]

    def _set_modes(self, block: int) -> None:
        """Train mode for the block being trained; a frozen prefix runs in eval mode, a learning
        one (``train.prefix=online``) in train mode on both sides, as in the official code."""
        self.model.train()
        if self.config.train.prefix == "online":
            return
        for b in range(block):
            self.model.target.block_module(b).eval()
            self.model.online.block_module(b).eval()

    def _to_device(self, images: torch.Tensor) -> torch.Tensor:
        images = images.to(self.device, non_blocking=True)
        if self.config.train.channels_last:
            images = images.contiguous(memory_format=torch.channels_last)
        return images

    def _batches(self, batches: list[torch.Tensor]):
        """The images of ``batches``; a decoding error names the file, and the process it happened on."""
        try:
            yield from iterate(self.data.train, batches, self.config.data.workers)
        except BossNASError as exc:
            exc.rank_local = True  # type: ignore[attr-defined]
            raise

    def _views(self, images: torch.Tensor, pairs: int, g: torch.Generator) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        """``pairs`` augmentation pairs of a batch, drawn one after the other from ``g`` (so
        pair j is the same whatever the count, and one pair is the single-pair run's)."""
        x = self._to_device(images)
        drawn = [self.augment(x, g) for _ in range(pairs)]
        return [v for v, _ in drawn], [v for _, v in drawn]

    def _checkpoint_note(self) -> str:
        if self._saved_at is None:
            return "no checkpoint was written"
        return f"the last good checkpoint '{self.run_dir / CHECKPOINT}' is at {self._position(*self._saved_at)}"

    def _position(self, block: int | None = None, phase: str | None = None, epoch: int | None = None,
                  step: int | None = None) -> str:
        """'block 1, epoch 2, step 3' (training) or 'block 1, rate': a place in the loop (default: the current one)."""
        s = self.state
        block, phase = s.block if block is None else block, s.phase if phase is None else phase
        epoch, step = s.epoch if epoch is None else epoch, s.step if step is None else step
        if phase == "done":
            return "the end (every block is trained and rated)"
        return f"block {block}, epoch {epoch + 1}, step {step}" if phase == "train" else f"block {block}, {phase}"

    @functools.cached_property
    def timer(self) -> SearchTimer:
        """The whole run's progress and time left, from where the run starts or resumes."""
        return SearchTimer.for_search(self)

    # ------------------------------------------------------------------ the loop
    def run(self, stop_after_block: int | None = None) -> RunState:
        """Train and rate every remaining block; returns the final state.

        ``stop_after_block=N`` stops once the first N blocks are rated (a per-block study of
        the early blocks costs a fraction of a full run); a later ``run()`` continues.
        """
        with contextlib.ExitStack() as stack:
            if not self.signals.installed:
                stack.enter_context(self.signals)
            stack.callback(self.metrics.close)
            dist.broadcast_module_(self.model)  # every process starts from rank 0's weights
            self.timer.begin()
            while self.state.phase != "done" and (stop_after_block is None or self.state.block < stop_after_block):
                block = self.state.block
                if self.state.phase == "train":
                    self.train_block(block)
                if self.state.phase == "rate":
                    self.rate_and_fix(block)
        return self.state

    def train_block(self, block: int) -> None:
        cfg, space, seed = self.config.train, self.space, self.config.seed
        best = self.best_paths()
        prev = best[-1] if best else None  # block k's paths may depend on block k-1's best (HyTra)
        k = cfg.paths_per_step or default_k(space, block, self.sampling, prev)
        n_batches = len(epoch_batches(len(self.data.train), cfg.batch_size, seed, block, 0))
        opt_steps_per_epoch = n_batches // cfg.accumulate
        total = cfg.epochs * opt_steps_per_epoch
        warmup = int(round(cfg.warmup_epochs * opt_steps_per_epoch))
        if self.state.epoch == 0 and self.state.step == 0:
            self.model.sync_target(block)
        prefix_learns = cfg.prefix == "online"
        params = self.model.trainable_parameters(block, prefix_learns)
        excluded = self.model.official_lars_excluded(params) if cfg.lars_exclude == "official" else None
        self.optimizer = build_optimizer(cfg.optimizer, params, cfg.lr, cfg.momentum, cfg.weight_decay, excluded)
        if self._pending_optimizer is not None:
            self.optimizer.load_state_dict(self._pending_optimizer)
            self._pending_optimizer = None
        target_params, online_params = self.model.ema_pairs(block, prefix_learns)
        after = f" after {space.format_path(prev)}" if prev is not None and space.paths_follow_previous else ""
        self.console.print(
            f"[bold]block {block}[/] ({len(space.block_paths(block, prev))} paths{after}): training {cfg.epochs} epoch(s) x "
            f"{n_batches} steps, K={k} {self.sampling} paths, {min(k, cfg.augment_pairs)} augmentation pair(s), batch {cfg.batch_size}"
            + (f" ({cfg.batch_size // self.world} on each of {self.world} processes)" if self.world > 1 else "")
        )
        while self.state.epoch < cfg.epochs:
            epoch = self.state.epoch
            batches = epoch_batches(len(self.data.train), cfg.batch_size, seed, block, epoch, rank=self.rank, world=self.world)
            usable = opt_steps_per_epoch * cfg.accumulate
            first = self.state.step
            bar = Bar(self.console, f"block {block} epoch {epoch + 1}/{cfg.epochs}", usable, "step", self.show_progress,
                      first=first)
            self.timer.training(block, epoch * usable + first)
            self._set_modes(block)
            start = time.perf_counter()
            recent: deque[float] = deque(maxlen=20)
            window: list[tuple[int, list[Path], float]] = []  # micro-steps since the last optimizer step
            spreads: list[float] = []  # their prediction spreads
            try:
                for step, (images, _) in enumerate(self._batches(batches[first:usable]), start=first):
                    # the paths are the same on every process; the augmentation is each process's own
                    paths = space.sample_paths(block, k, self.sampling, seeded_generator(seed, block, epoch, step), prev)
                    view_1, view_2 = self._views(images, min(k, cfg.augment_pairs),
                                                 seeded_generator(seed, block, epoch, step, AUGMENT_KEY, self.rank))
                    shuffle = None
                    if self.world > 1:
                        g_shuffle = seeded_generator(seed, block, epoch, step, SHUFFLE_KEY)
                        shuffle = lambda x, g=g_shuffle: dist.batch_shuffle(x, g)  # noqa: E731
                    stats: dict = {}
                    loss = bossnas_step(self.model, block, paths, view_1, view_2, best, cfg.ensemble,
                                        1.0 / cfg.accumulate, self.autocast, target_shuffle=shuffle,
                                        prefix=cfg.prefix, stats=stats)
                    window.append((step, paths, float(loss)))
                    spreads.append(stats["prediction_spread"])
                    if (step + 1) % cfg.accumulate:
                        continue
                    losses, stop, due = self._agree([v for *_, v in window])
                    for (bad_step, bad_paths, _), value in zip(window, losses):
                        if not math.isfinite(value):
                            raise BossNASError(
                                f"non-finite loss ({value}) at block {block}, epoch {epoch + 1}, step {bad_step} "
                                f"(paths {', '.join(space.format_path(p) for p in bad_paths)}); no optimizer step was taken "
                                f"with it and {self._checkpoint_note()}; lower train.lr and start again with --force"
                            )
                    dist.average_gradients_(params)
                    opt_step = epoch * opt_steps_per_epoch + step // cfg.accumulate
                    lr = warmup_cosine_lr(opt_step, total, cfg.lr, warmup)
                    momentum = cosine_momentum(opt_step + 1, total, cfg.base_momentum)
                    set_lr(self.optimizer, lr)
                    self.optimizer.step()
                    self.optimizer.zero_grad(set_to_none=True)
                    ema_update_(target_params, online_params, momentum)
                    spread = sum(spreads) / len(spreads)
                    window, spreads = [], []
                    self.state.step = step + 1
                    self.state.epoch_loss_sum += sum(losses)
                    self.state.epoch_loss_count += len(losses)
                    self._schedule = {"opt_step": opt_step + 1, "total_steps": total, "warmup_steps": warmup,
                                      "lr": lr, "ema_momentum": momentum}
                    recent.extend(losses)
                    bar.update(step + 1, loss=sum(recent) / len(recent), **self.timer.training(block, epoch * usable + step + 1))
                    self.metrics.write(*step_record(block, epoch, opt_step, total, losses, lr, momentum,
                                                    bar.rate * cfg.batch_size, spread))
                    if stop:
                        self._checkpoint_mid_epoch(start)
                        bar.abort()
                        raise self.signals.interrupted(f"at block {block}, epoch {epoch + 1}, step {self.state.step}", self.run_dir)
                    every = cfg.checkpoint_every and self.state.step % cfg.checkpoint_every == 0
                    if (every or due) and self.state.step < usable:
                        self._checkpoint_mid_epoch(start)
                        start = time.perf_counter()
            except BaseException:
                bar.abort()
                raise
            seconds = time.perf_counter() - start
            mean_loss = self.state.epoch_loss_sum / max(1, self.state.epoch_loss_count)
            bar.update(usable, loss=mean_loss)  # the summary line shows the epoch's loss, not the last steps'
            bar.close()
            self.state.train_seconds += seconds
            self.state.history.append({"block": block, "epoch": epoch, "loss": mean_loss, "seconds": round(seconds, 3)})
            self.metrics.write({"kind": "epoch", **self.state.history[-1]}, block * total + (epoch + 1) * opt_steps_per_epoch - 1)
            self.state.epoch += 1
            self.state.step = 0
            self.state.epoch_loss_sum, self.state.epoch_loss_count = 0.0, 0
            self.save()
        self.timer.trained(block)
        # every process takes rank 0's BatchNorm statistics (each saw only its shard), so
        # that every process rates the block from exactly the state in the checkpoint
        dist.broadcast_module_(self.model, parameters=False)
        self.state.phase = "rate"
        self.optimizer = None
        self.save()

    def _agree(self, losses: list[float]) -> tuple[list[float], bool, bool]:
        """The losses averaged over processes, whether any process was asked to stop, and
        whether rank 0's clock says a checkpoint is due.

        One small all-reduce per optimizer step, so that every process takes the same
        decision about a non-finite loss, a stop request or a checkpoint at the same step.
        """
        due = self.is_main and self.clock.due()
        if self.world == 1:
            return losses, self._stop.is_set(), due
        flags = [1.0 if self._stop.is_set() else 0.0, 1.0 if due else 0.0]
        values = torch.tensor(losses + flags, dtype=torch.float64, device=self.device)
        dist.all_reduce_sum_(values)
        out = values.tolist()
        return [v / self.world for v in out[:-2]], out[-2] > 0, out[-1] > 0

    def _checkpoint_mid_epoch(self, start: float) -> None:
        self.state.train_seconds += time.perf_counter() - start
        self.save()

    # ------------------------------------------------------------------ rating
    def rating_inputs(self, block: int) -> tuple[list[torch.Tensor], tuple[torch.Tensor, torch.Tensor]]:
        """Block inputs for BN recalibration and rating, with the frozen prefix applied once.

        The same on every process: each rates its share of the paths on all rating images
        and recalibrates BatchNorm on all recalibration batches, as a single process does.
        """
        cfg = self.config
        batch = cfg.search.batch_size or cfg.train.batch_size
        rating = self.data.rating_images  # held-out training images, or the test split (search.rate_split)
        order = torch.randperm(len(rating), generator=seeded_generator(cfg.seed, RATE_VIEWS_KEY))[: cfg.search.rate_images]
        images, _ = rating.load(order.sort().values)
        g = seeded_generator(cfg.seed, RATE_VIEWS_KEY, 1)
        views = self.augment(self._to_device(images), g)
        recal = epoch_batches(len(self.data.train), cfg.train.batch_size, cfg.seed, RECAL_KEY, block)[: cfg.search.recal_batches]
        g_recal = seeded_generator(cfg.seed, RECAL_KEY, block)
        recal_views = [self.augment.view(self._to_device(self.data.train.load(b)[0]), g_recal) for b in recal]
        best = self.best_paths()
        if best and cfg.train.prefix == "online":
            self.recalibrate_prefix(best, recal_views)
        for b in range(block):
            self.model.target.block_module(b).eval()
        with torch.no_grad(), self.autocast():
            prefix = (lambda x: torch.cat([self.model.forward_prefix(c, best) for c in x.split(batch)])) if best else (lambda x: x)
            recal_feats = [prefix(x) for x in recal_views]
            rate_feats = (prefix(views[0]), prefix(views[1]))
        return recal_feats, rate_feats

    def recalibrate_prefix(self, best: list[Path], batches: list[torch.Tensor]) -> None:
        """Re-estimate the BatchNorm statistics of the target's earlier blocks along their best
        paths (an exact average over ``batches``), before they feed a rating.

        A learning prefix kept training after its own rating, so the statistics it was fixed
        with are stale; the official rating resets every BatchNorm of the model and
        re-estimates it along the best paths the same way.
        """
        def prefix(x: torch.Tensor) -> None:
            with self.autocast():
                self.model.forward_prefix(x, best)

        recalibrate_bn([self.model.target.block_module(b) for b in range(len(best))], prefix, batches)

    def block_paths(self, block: int) -> list[Path]:
        """The paths block ``block`` trains and is rated on: those that may follow the best path
        of the block before it (all of the block's paths in spaces where that does not matter)."""
        best = self.best_paths()[:block]
        return self.space.block_paths(block, best[-1] if block and best else None)

    def rate_and_fix(self, block: int) -> None:
        cfg = self.config
        paths = self.block_paths(block)
        start = time.perf_counter()
        recal_feats, rate_feats = self.rating_inputs(block)
        bar = Bar(self.console, f"block {block} rating", len(paths), "path", self.show_progress)

        def progress(done: int) -> None:
            bar.update(done, **self.timer.rating(block, done))
            # collective: called once per round of paths on every process
            if dist.any_true(self._stop.is_set(), self.device):
                bar.abort()
                raise Interrupted(
                    f"interrupted by {self.signals.name} while rating block {block} ({done} of {len(paths)} paths rated); "
                    f"the checkpoint in '{self.run_dir}' holds the trained block, --resume rates it again",
                    self.signals.signum,
                )

        try:
            rated = rate_block_with_halves(
                self.model, block, paths, recal_feats, rate_feats,
                batch_size=cfg.search.batch_size or cfg.train.batch_size,
                bn_recalibration=cfg.search.bn_recalibration, autocast=self.autocast,
                recalibrate_predictor=cfg.search.recalibrate_predictor,
                progress=progress, distributed=self.world > 1,
            )
        except BaseException:
            bar.abort()
            raise
        ratings = rated.ratings
        best_index = min(range(len(paths)), key=ratings.__getitem__)
        best = paths[best_index]
        bar.update(len(paths), best=self.space.format_path(best))
        bar.close()
        # the next blocks see this block along its best path, with that path's own BN statistics
        def project_best(x: torch.Tensor) -> None:
            with self.autocast():  # the features were computed under autocast (bf16 on CUDA)
                self.model.project_target(x, block, best)

        recalibrate_bn([self.model.target.block_module(block), self.model.target_heads[block]], project_best, recal_feats)
        # rating left each process with the statistics of the paths it rated: take rank 0's
        dist.broadcast_module_(self.model, parameters=False)
        table = [[self.space.format_path(p), r] for p, r in zip(paths, ratings)]
        self.state.tables[str(block)] = table
        self.state.rating_halves[str(block)] = [list(h) for h in rated.halves]
        self.state.best_paths.append(self.space.format_path(best))
        self.state.rate_seconds += time.perf_counter() - start
        self.timer.rated(block)
        if self.is_main:
            write_table(self.run_dir / f"block_{block}_ratings.csv", block, table)
            self.metrics.histogram(f"block_{block}/ratings", ratings)
            self.metrics.text(f"block_{block}/best_path", f"{self.space.format_path(best)} (rating {ratings[best_index]:.5f})")
        noise = block_noise(block, dict(zip(paths, ratings)), dict(zip(paths, rated.halves)))
        self.console.print(f"  block {block}: best path {self.space.format_path(best)} (rating {ratings[best_index]:.5f})"
                           + noise_note(self.space, noise))
        self.state.block += 1
        self.state.phase = "done" if self.state.block == len(self.space.blocks) else "train"
        self.state.epoch = self.state.step = 0
        self.save()


def step_record(block: int, epoch: int, opt_step: int, total: int, losses: list[float], lr: float,
                momentum: float, images_per_s: float, prediction_spread: float | None = None) -> tuple[dict, int]:
    """The metrics.jsonl record of one optimizer step (its loss and prediction spread: the means
    over its micro-steps), and its TensorBoard step, which counts on over the blocks."""
    record = {"kind": "step", "block": block, "epoch": epoch, "step": opt_step, "loss": sum(losses) / len(losses),
              "lr": lr, "momentum": momentum, "images_per_s": round(images_per_s, 2)}
    if prediction_spread is not None:
        record["prediction_spread"] = prediction_spread
    return record, block * total + opt_step


def _numpy_rng_state() -> dict:
    name, keys, pos, has_gauss, cached = np.random.get_state()
    return {"name": name, "keys": torch.from_numpy(keys.astype(np.int64)), "pos": int(pos),
            "has_gauss": int(has_gauss), "cached": float(cached)}


def _set_numpy_rng_state(state: dict) -> None:
    np.random.set_state((state["name"], state["keys"].numpy().astype(np.uint32), state["pos"],
                         state["has_gauss"], state["cached"]))


def write_table(path: FsPath, block: int, table: list) -> None:
    lines = ["block,path,rating"] + [f"{block},{p},{r:.8f}" for p, r in table]
    atomic_write_text(path, "\n".join(lines) + "\n")


def read_table(path: FsPath) -> list[tuple[str, float]]:
    with open(path, newline="") as f:
        return [(row["path"], float(row["rating"])) for row in csv.DictReader(f)]


def check_compatible(ckpt: dict, config: RunConfig, where: FsPath) -> None:
    """Refuse to resume a checkpoint written for another space or training config."""
    if ckpt.get("space") != config.space:
        raise BossNASError(f"checkpoint '{where}' is for space '{ckpt.get('space')}', not '{config.space}'; use the run's own config or another --out")
    check_same_training(ckpt, config, where, RunConfig.from_dict(ckpt["config"]))


def load_run(run_dir: str | FsPath) -> tuple[RunConfig, dict]:
    """The config and checkpoint of a run folder (for search / rate / report)."""
    from bossnas.runs import RETRAIN, check_search_folder

    run_dir = check_search_folder(run_dir)
    ckpt = load_checkpoint(run_dir / CHECKPOINT)
    if ckpt.get("kind") == RETRAIN.name:  # a retraining folder whose metrics.json is not written yet
        raise BossNASError(f"'{run_dir}' is a `bossnas retrain` folder, not a search run folder; give the folder of `bossnas run`")
    return config_from_dict(ckpt["config"]), ckpt


__all__ = ["CONFIG", "BlockwiseSearch", "Interrupted", "RunState", "StopSignals", "create_space", "load_run", "read_table"]
