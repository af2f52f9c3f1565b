"""The block-wise BossNAS loop: train block k, rate all its paths, fix its best path, go on.

``for block in space.blocks:`` is the whole method; everything around it is bookkeeping
that makes the loop resumable: the data order and every random draw are pure functions of
(seed, block, epoch, step), so a checkpoint only needs weights, optimizer state and the
position in the loop to continue exactly where it stopped.
"""

from __future__ import annotations

import csv
import dataclasses
import math
import signal
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path as FsPath

import torch
import yaml
from rich.console import Console

from bossnas.config import RunConfig, config_from_dict
from bossnas.data.augment import build_augment
from bossnas.data.batches import epoch_batches, iterate, seeded_generator
from bossnas.data.datasets import SplitData, limit_train, load_data
from bossnas.errors import BossNASError
from bossnas.search.rating import rate_block, recalibrate_bn
from bossnas.spaces import create_space, space_class
from bossnas.spaces.base import Path, SearchSpace
from bossnas.ssl.momentum import cosine_momentum, ema_update_
from bossnas.supernet.siamese import SiameseSupernet
from bossnas.train.optim import build_optimizer, set_lr, warmup_cosine_lr
from bossnas.train.step import bossnas_step
from bossnas.utils.device import autocast_factory, resolve_device
from bossnas.utils.io import atomic_write_text, load_checkpoint, save_checkpoint
from bossnas.utils.progress import Bar, make_console

CHECKPOINT = "checkpoint.pt"
CONFIG = "config.yaml"
#: generator keys of the random draws that are not training steps
RATE_VIEWS_KEY, RECAL_KEY = 101, 202


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
    #: one dict per finished epoch: block, epoch, loss, seconds
    history: list[dict] = field(default_factory=list)
    train_seconds: float = 0.0
    rate_seconds: float = 0.0


class Interrupted(BossNASError):
    pass


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
                     config.data.workers, default_size=default_size)
    return limit_train(data, config.data.train_images, seed=config.seed)


def validate(config: RunConfig, space: SearchSpace, data: SplitData) -> None:
    """Reject settings that would fail later, before any work starts."""
    sampling = config.train.sampling or space.default_sampling
    for spec in space.blocks:
        k = config.train.paths_per_step or default_k(space, spec.index, sampling)
        limit = space.max_fair_k(spec.index) if sampling == "fair" else len(space.block_paths(spec.index))
        if sampling == "fair" and not space.is_product_block(spec.index):
            raise BossNASError(f"train.sampling=fair needs a product block; block {spec.index} of '{space.name}' is restricted: use uniform")
        if k > limit:
            raise BossNASError(f"train.paths_per_step={k} is out of range for block {spec.index} of '{space.name}' with {sampling} sampling; expected 1..{limit}")
    if config.train.batch_size > len(data.train):
        raise BossNASError(f"train.batch_size={config.train.batch_size} is larger than the {len(data.train)} training images; expected 2..{len(data.train)}")
    if config.search.rate_images > len(data.test):
        raise BossNASError(f"search.rate_images={config.search.rate_images} is larger than the {len(data.test)} held-out images; expected 2..{len(data.test)}")
    steps = len(data.train) // config.train.batch_size
    if steps < config.train.accumulate:
        raise BossNASError(f"train.accumulate={config.train.accumulate} exceeds the {steps} steps of an epoch; expected 1..{steps}")


def default_k(space: SearchSpace, block: int, sampling: str) -> int:
    if sampling == "fair":
        return space.max_fair_k(block)
    return min(4, len(space.block_paths(block)))


def diff_keys(a: dict, b: dict, prefix: str = "") -> list[str]:
    keys = []
    for k in sorted(set(a) | set(b)):
        va, vb = a.get(k), b.get(k)
        if isinstance(va, dict) and isinstance(vb, dict) and k != "space_options":
            keys += diff_keys(va, vb, f"{prefix}{k}.")
        elif va != vb:
            keys.append(f"{prefix}{k} ({va!r} -> {vb!r})")
    return keys


class BlockwiseSearch:
    """Trains and rates every block of a space on a data set, writing into a run folder."""

    def __init__(self, config: RunConfig, run_dir: str | FsPath, console: Console | None = None, show_progress: bool = True):
        self.config = config
        self.run_dir = FsPath(run_dir)
        self.console = console or make_console()
        self.show_progress = show_progress
        self.device = resolve_device(config.device)
        self.autocast = autocast_factory(config.train.amp, self.device)
        self.data = prepare_data(config)
        self.space = build_space(config, self.data)
        validate(config, self.space, self.data)
        torch.manual_seed(config.seed)
        self.model = SiameseSupernet(self.space, config.model.hidden_dim, config.model.proj_dim, config.model.adapter_width).to(self.device)
        if config.train.channels_last:
            self.model.to(memory_format=torch.channels_last)
        self.augment = build_augment(config.data.augment, self.data.mean, self.data.std)
        self.sampling = config.train.sampling or self.space.default_sampling
        self.state = RunState()
        self.optimizer: torch.optim.Optimizer | None = None
        self._stop = threading.Event()

    # ------------------------------------------------------------------ run folder
    @classmethod
    def open(cls, config: RunConfig, run_dir: str | FsPath, resume: bool = False, force: bool = False,
             console: Console | None = None, show_progress: bool = True) -> BlockwiseSearch:
        """Start a run in ``run_dir``, or resume the one there (``resume``)."""
        run_dir = FsPath(run_dir)
        ckpt = run_dir / CHECKPOINT
        if resume:
            if not ckpt.is_file():
                raise BossNASError(f"nothing to resume: '{ckpt}' does not exist; start the run without --resume")
            state = load_checkpoint(ckpt)
            check_compatible(state, config, ckpt)
            search = cls(config, run_dir, console, show_progress)
            search.load_state(state)
            return search
        if ckpt.exists() or (run_dir / "best_arch.json").exists():
            if not force:
                raise BossNASError(f"run folder '{run_dir}' already holds a run; add --resume to continue it or --force to start over")
            for f in list(run_dir.glob("block_*_ratings.csv")) + [ckpt, run_dir / "best_arch.json", run_dir / "report.md"]:
                f.unlink(missing_ok=True)
        search = cls(config, run_dir, console, show_progress)
        run_dir.mkdir(parents=True, exist_ok=True)
        atomic_write_text(run_dir / CONFIG, yaml.safe_dump(config.to_dict(), sort_keys=False))
        return search

    def checkpoint_state(self) -> dict:
        return {
            "space": self.space.name,
            "input": {"in_channels": self.space.in_channels, "image_size": self.space.image_size,
                      "num_classes": self.space.num_classes},
            "fingerprint": self.config.fingerprint(),
            "config": self.config.to_dict(),
            "state": dataclasses.asdict(self.state),
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict() if self.optimizer is not None and self.state.phase == "train" else None,
            "rng": {"torch": torch.get_rng_state()},
        }

    def save(self) -> None:
        save_checkpoint(self.run_dir / CHECKPOINT, self.checkpoint_state())

    def load_state(self, ckpt: dict) -> None:
        self.model.load_state_dict(ckpt["model"])
        self.state = RunState(**ckpt["state"])
        self._pending_optimizer = ckpt.get("optimizer")
        torch.set_rng_state(ckpt["rng"]["torch"])

    # ------------------------------------------------------------------ helpers
    def best_paths(self) -> list[Path]:
        return [self.space.parse_path(b, text) for b, text in enumerate(self.state.best_paths)]

    def _set_modes(self, block: int) -> None:
        """Train mode for the block being trained; the frozen prefix blocks run in eval mode."""
        self.model.train()
        for b in range(block):
            self.model.target.block_module(b).eval()
            self.model.online.block_module(b).eval()

    def _to_device(self, images: torch.Tensor) -> torch.Tensor:
        images = images.to(self.device, non_blocking=True)
        if self.config.train.channels_last:
            images = images.contiguous(memory_format=torch.channels_last)
        return images

    def _install_signal_handlers(self) -> list:
        if threading.current_thread() is not threading.main_thread():
            return []
        previous = []
        for sig in (signal.SIGINT, signal.SIGTERM):
            previous.append((sig, signal.getsignal(sig)))
            signal.signal(sig, lambda *_: self._stop.set())
        return previous

    # ------------------------------------------------------------------ the loop
    def run(self) -> RunState:
        """Train and rate every remaining block; returns the final state."""
        previous = self._install_signal_handlers()
        try:
            while self.state.phase != "done":
                block = self.state.block
                if self.state.phase == "train":
                    self.train_block(block)
                if self.state.phase == "rate":
                    self.rate_and_fix(block)
        finally:
            for sig, handler in previous:
                signal.signal(sig, handler)
        return self.state

    def train_block(self, block: int) -> None:
        cfg, space = self.config.train, self.space
        k = cfg.paths_per_step or default_k(space, block, self.sampling)
        n_batches = len(epoch_batches(len(self.data.train), cfg.batch_size, self.config.seed, block, 0))
        opt_steps_per_epoch = n_batches // cfg.accumulate
        total = cfg.epochs * opt_steps_per_epoch
        warmup = int(round(cfg.warmup_epochs * opt_steps_per_epoch))
        if self.state.epoch == 0 and self.state.step == 0:
            self.model.sync_target(block)
        params = self.model.trainable_parameters(block)
        self.optimizer = build_optimizer(cfg.optimizer, params, cfg.lr, cfg.momentum, cfg.weight_decay)
        pending = getattr(self, "_pending_optimizer", None)
        if pending is not None:
            self.optimizer.load_state_dict(pending)
            self._pending_optimizer = None
        target_params, online_params = self.model.ema_pairs(block)
        best = self.best_paths()
        self.console.print(
            f"[bold]block {block}[/] ({len(space.block_paths(block))} paths): training {cfg.epochs} epoch(s) x "
            f"{n_batches} steps, K={k} {self.sampling} paths, batch {cfg.batch_size}"
        )
        while self.state.epoch < cfg.epochs:
            epoch = self.state.epoch
            batches = epoch_batches(len(self.data.train), cfg.batch_size, self.config.seed, block, epoch)
            usable = opt_steps_per_epoch * cfg.accumulate
            bar = Bar(self.console, f"block {block} epoch {epoch + 1}/{cfg.epochs}", usable, "step", self.show_progress)
            self._set_modes(block)
            start = time.perf_counter()
            losses = []
            first = self.state.step
            for step, (images, _) in enumerate(iterate(self.data.train, batches[first:usable], self.config.data.workers), start=first):
                g = seeded_generator(self.config.seed, block, epoch, step)
                view_1, view_2 = self.augment(self._to_device(images), g)
                paths = space.sample_paths(block, k, self.sampling, g)
                loss = bossnas_step(self.model, block, paths, view_1, view_2, best, cfg.ensemble,
                                    1.0 / cfg.accumulate, self.autocast)
                value = float(loss)
                if not math.isfinite(value):
                    raise BossNASError(
                        f"non-finite loss at block {block}, epoch {epoch + 1}, step {step} "
                        f"(paths {', '.join(space.format_path(p) for p in paths)}); the last good checkpoint is "
                        f"'{self.run_dir / CHECKPOINT}'; lower train.lr and resume"
                    )
                losses.append(value)
                if (step + 1) % cfg.accumulate == 0:
                    opt_step = epoch * opt_steps_per_epoch + step // cfg.accumulate
                    set_lr(self.optimizer, warmup_cosine_lr(opt_step, total, cfg.lr, warmup))
                    self.optimizer.step()
                    self.optimizer.zero_grad(set_to_none=True)
                    ema_update_(target_params, online_params, cosine_momentum(opt_step + 1, total, cfg.base_momentum))
                    self.state.step = step + 1
                    if cfg.checkpoint_every and self.state.step % cfg.checkpoint_every == 0 and self.state.step < usable:
                        self._checkpoint_mid_epoch(start)
                        start = time.perf_counter()
                    if self._stop.is_set():
                        self._checkpoint_mid_epoch(start)
                        raise Interrupted(
                            f"interrupted at block {block}, epoch {epoch + 1}, step {self.state.step}; "
                            f"checkpoint saved in '{self.run_dir}', continue with --resume"
                        )
                bar.update(step + 1, loss=sum(losses[-20:]) / len(losses[-20:]))
            seconds = time.perf_counter() - start
            bar.close()
            self.state.train_seconds += seconds
            self.state.history.append({"block": block, "epoch": epoch, "loss": sum(losses) / max(1, len(losses)), "seconds": round(seconds, 3)})
            self.state.epoch += 1
            self.state.step = 0
            self.save()
        self.state.phase = "rate"
        self.optimizer = None
        self.save()

    def _checkpoint_mid_epoch(self, start: float) -> None:
        self.state.train_seconds += time.perf_counter() - start
        self.save()

    # ------------------------------------------------------------------ rating
    def rating_inputs(self, block: int) -> tuple[list[torch.Tensor], tuple[torch.Tensor, torch.Tensor]]:
        """Block inputs for BN recalibration and rating, with the frozen prefix applied once."""
        cfg = self.config
        batch = cfg.search.batch_size or cfg.train.batch_size
        n_test = len(self.data.test)
        order = torch.randperm(n_test, generator=seeded_generator(cfg.seed, RATE_VIEWS_KEY))[: cfg.search.rate_images]
        images, _ = self.data.test.load(order.sort().values)
        g = seeded_generator(cfg.seed, RATE_VIEWS_KEY, 1)
        views = self.augment(self._to_device(images), g)
        recal = epoch_batches(len(self.data.train), cfg.train.batch_size, cfg.seed, RECAL_KEY, block)[: cfg.search.recal_batches]
        g_recal = seeded_generator(cfg.seed, RECAL_KEY, block)
        recal_views = [self.augment.view(self._to_device(self.data.train.load(b)[0]), g_recal) for b in recal]
        best = self.best_paths()
        for b in range(block):
            self.model.target.block_module(b).eval()
        with torch.no_grad(), self.autocast():
            prefix = (lambda x: torch.cat([self.model.forward_prefix(c, best) for c in x.split(batch)])) if best else (lambda x: x)
            recal_feats = [prefix(x) for x in recal_views]
            rate_feats = (prefix(views[0]), prefix(views[1]))
        return recal_feats, rate_feats

    def rate_and_fix(self, block: int) -> None:
        cfg = self.config
        paths = self.space.block_paths(block)
        start = time.perf_counter()
        recal_feats, rate_feats = self.rating_inputs(block)
        bar = Bar(self.console, f"block {block} rating", len(paths), "path", self.show_progress)
        ratings = rate_block(
            self.model, block, paths, recal_feats, rate_feats,
            batch_size=cfg.search.batch_size or cfg.train.batch_size,
            bn_recalibration=cfg.search.bn_recalibration, autocast=self.autocast,
            progress=lambda i: bar.update(i),
        )
        best_index = min(range(len(paths)), key=ratings.__getitem__)
        best = paths[best_index]
        bar.update(len(paths), best=self.space.format_path(best))
        bar.close()
        # the next blocks see this block along its best path, with that path's own BN statistics
        recalibrate_bn([self.model.target.block_module(block), self.model.target_heads[block]],
                       lambda x: self.model.project_target(x, block, best), recal_feats)
        table = [[self.space.format_path(p), r] for p, r in zip(paths, ratings)]
        self.state.tables[str(block)] = table
        self.state.best_paths.append(self.space.format_path(best))
        self.state.rate_seconds += time.perf_counter() - start
        write_table(self.run_dir / f"block_{block}_ratings.csv", block, table)
        self.console.print(f"  block {block}: best path {self.space.format_path(best)} (rating {ratings[best_index]:.5f})")
        self.state.block += 1
        self.state.phase = "done" if self.state.block == len(self.space.blocks) else "train"
        self.state.epoch = self.state.step = 0
        self.save()


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
    if ckpt.get("fingerprint") != config.fingerprint():
        saved = config_from_dict(ckpt["config"]).training_view()
        differs = diff_keys(saved, config.training_view())
        raise BossNASError(
            f"checkpoint '{where}' was trained with a different config ({'; '.join(differs[:4]) or 'fingerprint'}); "
            "resume with the run's own config or start another --out"
        )


def load_run(run_dir: str | FsPath) -> tuple[RunConfig, dict]:
    """The config and checkpoint of a run folder (for search / rate / report)."""
    run_dir = FsPath(run_dir)
    if not run_dir.is_dir():
        raise BossNASError(f"run folder '{run_dir}' does not exist")
    ckpt = load_checkpoint(run_dir / CHECKPOINT)
    return config_from_dict(ckpt["config"]), ckpt


__all__ = ["BlockwiseSearch", "RunState", "create_space", "load_run", "read_table"]
