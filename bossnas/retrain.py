"""Supervised retraining of one architecture: what a user does with the winner of a search.

A plain supervised loop (cross-entropy with label smoothing, SGD or AdamW, cosine schedule
with linear warm-up, bf16 autocast on CUDA, a model EMA) around ``create_model``, so it
trains any architecture of any space and any registered model. Like the search, the data
order and every augmentation draw are pure functions of (seed, epoch, step): a checkpoint
holds weights, EMA, optimizer state and the position, and ``--resume`` continues exactly.

>>> config = retrain_config("nats-sss/16:16:16:16:16", ["train.epochs=2", "data.image_size=16"])
>>> metrics = Retrainer.open(config, "runs/r").run()   # doctest: +SKIP
>>> metrics["test"]["top1"]                           # doctest: +SKIP
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import platform
import time
import typing
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import torch
from rich.console import Console
from torch import nn
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

from bossnas.config import RetrainConfig, apply_options, build_config, set_key
from bossnas.curves import MetricsLog, PendingSteps
from bossnas.data.augment import hflip, pad_crop, resized_crop
from bossnas.data.batches import epoch_batches, iterate, seeded_generator
from bossnas.data.datasets import SplitData, limit_test, limit_train, load_data
from bossnas.errors import BossNASError
from bossnas.models import ModelSpec, best_arch_path, create_model, resolve_model
from bossnas.runs import (
    CHECKPOINT,
    CONFIG,
    RETRAIN,
    CheckpointClock,
    RunFolder,
    StopSignals,
    check_same_training,
    saved_config_tree,
)
from bossnas.search.costs import arch_cost
from bossnas.search.report import read_best_arch
from bossnas.spaces import create_space, space_class
from bossnas.train.optim import build_optimizer, set_lr, warmup_cosine_lr
from bossnas.utils.device import autocast_factory, resolve_device
from bossnas.utils.io import atomic_write_json, existing_path
from bossnas.utils.progress import Bar, RetrainProgress, make_console

METRICS = "metrics.json"
#: the kind recorded in a retraining checkpoint (bossnas.export checks it)
CHECKPOINT_KIND = RETRAIN.name
#: generator key that keeps retraining draws apart from the search's (seed, block, ...) draws
RETRAIN_KEY = 303
#: default learning rate / weight decay per optimizer (SGD: the NATS-Bench CIFAR recipe,
#: AdamW: the DeiT recipe scaled to batch 128)
DEFAULT_LR = {"sgd": 0.1, "adamw": 1e-3}
DEFAULT_WEIGHT_DECAY = {"sgd": 5e-4, "adamw": 0.05}
#: automatic EMA decay averages over the last ~1/EMA_HORIZON_FRACTION of the steps ...
EMA_HORIZON_FRACTION = 10
#: ... kept within these bounds (0.9999 is timm's usual ImageNet value)
EMA_DECAY_RANGE = (0.9, 0.9999)
#: training-loss read-outs (a device sync) every this many steps
LOG_EVERY = 10


# --------------------------------------------------------------------------- configuration
def set_retrain_key(config: RetrainConfig, key: str, raw: typing.Any) -> None:
    """Set one dotted key (``train.epochs``) from a raw value, converting and checking it."""
    set_key(config, key, raw)


@dataclass(frozen=True)
class ArchSource:
    """Where the architecture comes from: the model to build and defaults it brings along."""

    name: str
    space_options: dict
    source: str
    #: defaults taken from a best_arch.json (the data and input size it was searched on)
    defaults: dict
    #: the run folder holding the best_arch.json, if any
    run_dir: Path | None = None


def resolve_arch_source(text: str) -> ArchSource:
    """A best_arch.json (or the run folder holding one), a model name, or an architecture string."""
    # an architecture string may be too long to probe as a path (OSError 36): existing_path says None
    path = existing_path(text)
    if path is not None and path.is_dir():
        path = best_arch_path(path)
    if text.endswith(".json") or (path is not None and path.suffix == ".json"):
        path = path or Path(text).expanduser()
        record = read_best_arch(path)
        spec = resolve_model(str(record["arch"]), str(record["space"]))
        defaults = {"data.name": record.get("data")}
        shape = record.get("input")
        if isinstance(shape, list) and len(shape) == 3:
            defaults["data.image_size"] = shape[1]
        return ArchSource(spec.name, dict(record.get("space_options") or {}), str(path), defaults, path.parent)
    spec = resolve_model(text)
    return ArchSource(spec.name, dict(spec.space_options), text, {})


def default_out(source: ArchSource) -> Path:
    """``RUN/retrain`` next to a best_arch.json, ``RUN/retrain-<budget>`` next to a
    ``best_arch-<budget>.json`` (each record of a search its own folder), else ``runs/retrain-<arch>``."""
    if source.run_dir is not None:
        stem = Path(source.source).stem
        return source.run_dir / ("retrain" + (stem[len("best_arch"):] if stem.startswith("best_arch") else f"-{stem}"))
    return Path("runs") / ("retrain-" + source.name.replace("/", "-").replace(":", "-"))


def retrain_config(arch: str | None = None, overrides: list[str] | None = None, options: dict | None = None,
                   out: str | Path | None = None, resume: bool = False) -> tuple[RetrainConfig, Path]:
    """Defaults, then the run folder's config.yaml (resume) or the architecture's defaults,
    then ``options`` (CLI flags as keys), then ``key=value`` overrides."""
    source = resolve_arch_source(arch) if arch else None
    if source is None and not resume:
        raise BossNASError("no architecture given; pass a best_arch.json, a model name (see `bossnas models`) or an architecture string")
    if out is None and source is None:
        raise BossNASError("--resume needs --out (the retraining folder)")
    out_dir = Path(out) if out is not None else default_out(source)  # type: ignore[arg-type]
    config = build_config(RetrainConfig, saved_config_tree(out_dir) if resume else None, saved=True)
    if source is not None:
        if not (resume and config.model.name):
            for key, value in source.defaults.items():
                if value is not None:
                    set_retrain_key(config, key, value)
        config.model.name, config.model.space_options, config.model.source = source.name, source.space_options, source.source
    apply_options(config, options, overrides)
    if not config.model.name:
        if not (out_dir / CHECKPOINT).is_file():
            raise BossNASError(f"nothing to resume: '{out_dir / CHECKPOINT}' does not exist; start without --resume")
        raise BossNASError(f"'{out_dir / CONFIG}' names no architecture; pass it (a best_arch.json, model name or architecture string)")
    return config, out_dir


def resolve_defaults(config: RetrainConfig, data: SplitData) -> None:
    """Fill the automatic values (lr, weight decay, augmentation) so config.yaml holds what ran."""
    t = config.train
    t.lr = t.lr if t.lr is not None else DEFAULT_LR[t.optimizer]
    t.weight_decay = t.weight_decay if t.weight_decay is not None else DEFAULT_WEIGHT_DECAY[t.optimizer]
    if config.data.augment is None:
        if data.name == "digits":
            config.data.augment = "small-noflip"  # a flipped digit is another glyph
        else:
            config.data.augment = "imagenet" if data.image_size >= 64 else "small"


def ema_decay_for(decay: float | None, total_steps: int) -> float:
    """The EMA decay: as given, or (None) one whose horizon is ~10% of the training steps."""
    if decay is not None:
        return decay
    low, high = EMA_DECAY_RANGE
    return min(high, max(low, 1.0 - EMA_HORIZON_FRACTION / max(1, total_steps)))


# --------------------------------------------------------------------------- pieces
@dataclass
class SupervisedAugment:
    """One augmented, normalised float view of a uint8 batch (the batch-level ops of data.augment).

    ``small``: pad by 1/8 of the side, random crop, horizontal flip (the CIFAR recipe);
    ``small-noflip`` the same without the flip; ``imagenet``: random-resized crop (area
    0.08-1) and flip; ``none``: normalisation only.
    """

    mean: tuple[float, ...]
    std: tuple[float, ...]
    kind: str = "small"

    def normalize(self, x: torch.Tensor) -> torch.Tensor:
        x = x.float().div_(255.0) if x.dtype == torch.uint8 else x.float()
        mean = torch.tensor(self.mean, device=x.device)[None, :, None, None]
        std = torch.tensor(self.std, device=x.device)[None, :, None, None]
        return (x - mean) / std

    def __call__(self, images: torch.Tensor, g: torch.Generator) -> torch.Tensor:
        x = images.float().div_(255.0) if images.dtype == torch.uint8 else images.float()
        if self.kind in ("small", "small-noflip"):
            x = pad_crop(x, int(round(x.shape[-1] / 8)), g)
        elif self.kind == "imagenet":
            x = resized_crop(x, (0.08, 1.0), g)
        if self.kind in ("small", "imagenet"):
            x = hflip(x, 0.5, g)
        return self.normalize(x)


def build_retrain_optimizer(name: str, model: nn.Module, lr: float, momentum: float,
                            weight_decay: float) -> torch.optim.Optimizer:
    """SGD (the search's builder) or AdamW; weight decay on weight matrices only in both."""
    params = [p for p in model.parameters() if p.requires_grad]
    if name == "adamw":
        groups = [{"params": [p for p in params if p.dim() > 1], "weight_decay": weight_decay},
                  {"params": [p for p in params if p.dim() <= 1], "weight_decay": 0.0}]
        return torch.optim.AdamW(groups, lr=lr, foreach=True)
    return build_optimizer(name, params, lr, momentum, weight_decay)


def build_ema(model: nn.Module, decay: float) -> AveragedModel | None:
    """torch's AveragedModel with an EMA of the parameters and the BN statistics (None: decay 0)."""
    if decay <= 0:
        return None
    return AveragedModel(model, multi_avg_fn=get_ema_multi_avg_fn(decay), use_buffers=True)


@torch.no_grad()
def evaluate(model: nn.Module, images: Iterator[tuple[torch.Tensor, torch.Tensor]], normalize: Callable,
             device: torch.device, autocast: Callable, num_classes: int) -> dict:
    """Top-1 / top-5 accuracy (%) and mean cross-entropy of ``model`` over (uint8 images, labels) batches.

    With fewer than 5 classes "top5" is top-(class count), i.e. 100.
    """
    was_training = model.training
    model.eval()
    k = min(5, num_classes)
    seen, top1, topk, loss = 0, 0.0, 0.0, 0.0
    for x, y in images:
        x, y = normalize(x.to(device, non_blocking=True)), y.to(device, non_blocking=True)
        with autocast():
            logits = model(x).float()
        best = logits.topk(k, dim=1).indices
        top1 += float((best[:, 0] == y).sum())
        topk += float((best == y[:, None]).any(dim=1).sum())
        loss += float(nn.functional.cross_entropy(logits, y, reduction="sum"))
        seen += len(y)
    model.train(was_training)
    n = max(seen, 1)
    return {"top1": round(100 * top1 / n, 3), "top5": round(100 * topk / n, 3), "loss": round(loss / n, 5),
            "images": seen}


@dataclass
class RetrainState:
    """Where the loop is; saved in every checkpoint."""

    #: epochs finished
    epoch: int = 0
    #: steps finished in the current epoch
    step: int = 0
    #: one dict per finished epoch
    history: list[dict] = field(default_factory=list)
    train_seconds: float = 0.0
    eval_seconds: float = 0.0
    done: bool = False
    #: loss sum and correct count of the finished steps of the current epoch (its history
    #: entry comes out the same when the epoch is resumed half-way)
    epoch_loss_sum: float = 0.0
    epoch_correct: int = 0


def prepare_data(config: RetrainConfig, spec: ModelSpec) -> SplitData:
    default_size = spec.image_size or space_class(spec.space).default_image_size
    d = config.data
    data = load_data(d.name, d.root, d.image_size, d.download, d.workers, default_size=default_size,
                     batch_size=config.train.batch_size)
    return limit_test(limit_train(data, d.train_images, seed=config.seed), d.test_images, seed=config.seed)


# --------------------------------------------------------------------------- the loop
class Retrainer:
    """Trains one architecture on a data set, writing into an output folder."""

    def __init__(self, config: RetrainConfig, out_dir: str | Path | RunFolder, console: Console | None = None,
                 show_progress: bool = True, signals: StopSignals | None = None):
        self.config = config
        self.folder = out_dir if isinstance(out_dir, RunFolder) else RunFolder(out_dir, RETRAIN)
        self.out_dir = self.folder.path
        self.console = console or make_console()
        self.show_progress = show_progress
        self.device = resolve_device(config.device)
        self.autocast = autocast_factory(config.train.amp, self.device)
        self.spec = resolve_model(config.model.name)
        self.data = prepare_data(config, self.spec)
        resolve_defaults(config, self.data)
        cfg = config.train
        if cfg.batch_size > len(self.data.train):
            raise BossNASError(f"train.batch_size={cfg.batch_size} is larger than the {len(self.data.train)} "
                               f"training images; expected 2..{len(self.data.train)}")
        torch.manual_seed(config.seed)
        self.model = create_model(config.model.name, num_classes=self.data.num_classes,
                                  in_channels=self.data.in_channels, image_size=self.data.image_size,
                                  **config.model.space_options).to(self.device)
        self.steps_per_epoch = len(self.data.train) // cfg.batch_size
        self.total_steps = cfg.epochs * self.steps_per_epoch
        self.warmup_steps = int(round(cfg.warmup_epochs * self.steps_per_epoch))
        self.ema_decay = ema_decay_for(cfg.ema_decay, self.total_steps)
        self.ema = build_ema(self.model, self.ema_decay)
        self.optimizer = build_retrain_optimizer(cfg.optimizer, self.model, cfg.lr, cfg.momentum, cfg.weight_decay)
        self.criterion = nn.CrossEntropyLoss(label_smoothing=cfg.label_smoothing)
        self.augment: Callable[[torch.Tensor, torch.Generator], torch.Tensor] = SupervisedAugment(
            self.data.mean, self.data.std, config.data.augment or "small")
        #: test images are only normalised
        self.normalize = SupervisedAugment(self.data.mean, self.data.std, "none").normalize
        self.state = RetrainState()
        #: SIGINT / SIGTERM: run() installs handlers unless the caller already did (the CLI)
        self.signals = signals or StopSignals()
        self._stop = self.signals.event
        self.clock = CheckpointClock(cfg.checkpoint_minutes)
        #: training curves (metrics.jsonl, TensorBoard); step losses wait on the device until the next read-out
        self.metrics = MetricsLog(self.out_dir)
        self.pending = PendingSteps(self.metrics)

    # ------------------------------------------------------------------ output folder
    @classmethod
    def open(cls, config: RetrainConfig, out_dir: str | Path, resume: bool = False, force: bool = False,
             console: Console | None = None, show_progress: bool = True,
             signals: StopSignals | None = None) -> Retrainer:
        """Start a retraining in ``out_dir``, or continue the one there (``resume``).

        Every check (folder, lock, checkpoint, config, data) passes before anything in the
        folder is written or removed; the folder stays locked while this object lives.
        """
        folder = RunFolder(out_dir, RETRAIN)
        saved = folder.prepare(resume, force)
        try:
            trainer = cls(config, folder, console, show_progress, signals)
            if saved is not None:
                check_same_training(saved, config, folder.checkpoint, RetrainConfig.from_dict(saved["config"]))
                trainer.load_state(saved)
                folder.resumed(config.to_dict())
                note = trainer.metrics.start(saved.get("metrics_offset"))
                if note:
                    trainer.console.print(f"[yellow]note[/]: {note}")
                trainer.console.print(f"resuming '{folder.path}' at epoch {trainer.state.epoch + 1}, step {trainer.state.step}")
            else:
                folder.begin(config.to_dict(), force)
                trainer.metrics.start()
        except BaseException:
            folder.unlock()
            raise
        return trainer

    def checkpoint_state(self) -> dict:
        return {
            "fingerprint": self.config.fingerprint(),
            "config": self.config.to_dict(),
            "spec": dict(self.model.bossnas_spec),  # type: ignore[attr-defined]
            "data": self.data_info(),
            "state": dataclasses.asdict(self.state),
            "model": self.model.state_dict(),
            "ema": self.ema.state_dict() if self.ema is not None else None,
            "ema_decay": self.ema_decay,
            "optimizer": self.optimizer.state_dict(),
            "rng": {"torch": torch.get_rng_state()},
            # metrics.jsonl's length when this checkpoint was taken: a resume cuts it back to it
            "metrics_offset": self.metrics.offset,
        }

    def save(self) -> None:
        self.metrics.sync()
        self.folder.save(self.checkpoint_state())
        self.clock.saved()

    def load_state(self, ckpt: dict) -> None:
        self.model.load_state_dict(ckpt["model"])
        if self.ema is not None and ckpt.get("ema") is not None:
            self.ema.load_state_dict(ckpt["ema"])
        self.optimizer.load_state_dict(ckpt["optimizer"])
        self.state = RetrainState(**ckpt["state"])
        torch.set_rng_state(ckpt["rng"]["torch"])

    def data_info(self) -> dict:
        d = self.data
        return {"name": d.name, "train_images": len(d.train), "test_images": len(d.test),
                "input": [d.in_channels, d.image_size, d.image_size], "num_classes": d.num_classes,
                "classes": list(d.classes), "mean": list(d.mean), "std": list(d.std)}

    # ------------------------------------------------------------------ training
    @functools.cached_property
    def timer(self) -> RetrainProgress:
        """The time left, from where the retraining starts or resumes."""
        cfg, s = self.config.train, self.state
        every = cfg.eval_every
        epochs_left = range(s.epoch + 1, cfg.epochs)  # epochs after which an evaluation may come (the last: the final one)
        evaluations = sum(1 for e in epochs_left if every and e % every == 0) + (0 if s.done else 1)
        models = 2 if self.ema is not None else 1
        return RetrainProgress(self.total_steps, s.epoch * self.steps_per_epoch + s.step, self.steps_per_epoch,
                               cfg.batch_size, evaluations, models * len(self.data.test), len(self.data.test), models)

    def describe(self) -> str:
        cfg, d = self.config.train, self.data
        ema = f"EMA {self.ema_decay:.5g}" if self.ema is not None else "no EMA"
        return (f"bossnas retrain: {self.config.model.name} on {d.name} ({len(d.train)} train / {len(d.test)} test, "
                f"{d.in_channels}x{d.image_size}x{d.image_size}, {d.num_classes} classes), device {self.device}; "
                f"{cfg.epochs} epochs x {self.steps_per_epoch} steps, {cfg.optimizer} lr {cfg.lr:g} wd {cfg.weight_decay:g}, "
                f"label smoothing {cfg.label_smoothing:g}, {ema}, augment {self.config.data.augment}; folder {self.out_dir}")

    def run(self) -> dict:
        """Train the remaining epochs, evaluate, write metrics.json; returns the metrics."""
        with contextlib.ExitStack() as stack:
            if not self.signals.installed:
                stack.enter_context(self.signals)
            stack.callback(self.metrics.close)
            while self.state.epoch < self.config.train.epochs:
                self.train_epoch()
            metrics = self.final_metrics()
            if not self.state.done:  # a resumed finished run has logged its final evaluation
                self.metrics.write(eval_record(self.state.epoch - 1, self.total_steps - 1, metrics["test"], metrics["test_ema"]),
                                   self.total_steps - 1)
        self.state.done = True
        self.save()
        atomic_write_json(self.out_dir / METRICS, metrics)
        return metrics

    def train_epoch(self) -> None:
        cfg, seed, epoch = self.config.train, self.config.seed, self.state.epoch
        batches = epoch_batches(len(self.data.train), cfg.batch_size, seed, RETRAIN_KEY, epoch)
        first = self.state.step
        bar = Bar(self.console, f"epoch {epoch + 1}/{cfg.epochs}", len(batches), "step", self.show_progress, first=first)
        self.model.train()
        start = time.perf_counter()
        loss_sum = torch.tensor(self.state.epoch_loss_sum, device=self.device)
        correct = torch.tensor(self.state.epoch_correct, device=self.device)
        lr = warmup_cosine_lr(epoch * self.steps_per_epoch + first, self.total_steps, cfg.lr, self.warmup_steps)
        try:
            lr = self._train_steps(epoch, batches, first, bar, lr, loss_sum, correct)
        finally:
            bar.close()
            seconds = time.perf_counter() - start
            self.state.train_seconds += seconds
        if self._stop.is_set() and self.state.step < len(batches):
            self.state.epoch_loss_sum, self.state.epoch_correct = float(loss_sum), int(correct)
            self.save()
            raise self.signals.interrupted(f"at epoch {epoch + 1}, step {self.state.step}", self.out_dir)
        record = {"epoch": epoch + 1, "loss": round(float(loss_sum) / max(1, len(batches)), 5),
                  "train_top1": round(100 * float(correct) / max(1, len(batches) * cfg.batch_size), 3), "lr": round(lr, 8),
                  "seconds": round(seconds, 3)}
        self.state.epoch += 1
        self.state.step = 0
        self.state.epoch_loss_sum, self.state.epoch_correct = 0.0, 0
        every = cfg.eval_every
        last_step = self.state.epoch * self.steps_per_epoch - 1
        summary = {k: v for k, v in record.items() if k != "epoch"}  # the history counts epochs from 1
        self.metrics.write({"kind": "epoch", "epoch": epoch, "step": last_step, **summary}, last_step)
        if every and (self.state.epoch % every == 0) and self.state.epoch < cfg.epochs:
            test, test_ema = self._evaluate_both(f"epoch {epoch + 1} test")
            record["test_top1"] = test["top1"]
            if test_ema is not None:
                record["ema_test_top1"] = test_ema["top1"]
            self.metrics.write(eval_record(epoch, last_step, test, test_ema), last_step)
        self.state.history.append(record)
        self.save()
        line = "  ".join(f"{k} {v}" for k, v in record.items() if k not in ("epoch", "seconds", "lr"))
        self.console.print(f"  epoch {epoch + 1}/{cfg.epochs}: {line}")

    def _train_steps(self, epoch: int, batches: list[torch.Tensor], first: int, bar: Bar, lr: float,
                     loss_sum: torch.Tensor, correct: torch.Tensor) -> float:
        """The steps of one epoch from step ``first`` (until done or stopped); sums loss and correct
        counts in place and returns the last learning rate."""
        cfg, seed = self.config.train, self.config.seed
        for step, (images, labels) in enumerate(iterate(self.data.train, batches[first:], self.config.data.workers), start=first):
            global_step = epoch * self.steps_per_epoch + step
            lr = warmup_cosine_lr(global_step, self.total_steps, cfg.lr, self.warmup_steps)
            set_lr(self.optimizer, lr)
            x = self.augment(images.to(self.device, non_blocking=True), seeded_generator(seed, RETRAIN_KEY, epoch, step))
            y = labels.to(self.device, non_blocking=True)
            with self.autocast():
                logits = self.model(x)
            loss = self.criterion(logits.float(), y)
            # one read of the loss a step (as in the search): no optimizer step on a non-finite loss
            if not bool(torch.isfinite(loss)):
                raise BossNASError(f"non-finite loss ({float(loss.detach())}) at epoch {epoch + 1}, step {step + 1}; no optimizer "
                                   f"step was taken with it and {self._checkpoint_note()}; start over with --force and "
                                   "a lower train.lr")
            self.optimizer.zero_grad(set_to_none=True)
            loss.backward()
            self.optimizer.step()
            if self.ema is not None:
                self.ema.update_parameters(self.model)
            loss_sum += loss.detach()
            correct += (logits.detach().argmax(1) == y).sum()
            self.state.step = step + 1
            self.pending.add({"kind": "step", "epoch": epoch, "step": global_step, "loss": None, "lr": lr,
                              "images_per_s": None}, loss, global_step)
            due = self.state.step < len(batches) and self.clock.due()
            early = step - first in (0, RetrainProgress.PROBE_STEPS)  # read-outs that time the first steps
            if early or (step + 1 - first) % LOG_EVERY == 0 or step + 1 == len(batches) or self._stop.is_set() or due:
                mean_loss = float(loss_sum) / (step + 1)  # the sum holds the steps before a resume too
                bar.update(step + 1, loss=mean_loss, lr=f"{lr:.3g}", **self.timer.training(global_step + 1))
                line = self.timer.estimate_line()
                if line:
                    self.console.print(line)
                self.pending.flush(round(bar.rate * cfg.batch_size, 2))  # before any checkpoint counts these steps
            if self._stop.is_set():
                break
            if due:
                self.state.epoch_loss_sum, self.state.epoch_correct = float(loss_sum), int(correct)
                self.save()
        return lr

    def _evaluate_both(self, label: str) -> tuple[dict, dict | None]:
        """The plain model's and the EMA's (None: no EMA) test results, under one progress bar."""
        models = [self.model] + ([self.ema.module] if self.ema is not None else [])
        count = len(self.data.test)
        bar = Bar(self.console, label + (" (model, EMA)" if len(models) == 2 else ""), count * len(models), "image",
                  self.show_progress)
        self.timer.evaluating(0)
        results = []
        try:
            for i, model in enumerate(models):
                def seen(n: int, offset: int = i * count) -> None:
                    bar.update(offset + n, **self.timer.evaluating(offset + n))
                results.append(self._evaluate(model, seen))
        except BaseException:
            bar.abort()
            raise
        bar.close()
        self.timer.evaluated()
        return results[0], (results[1] if len(results) == 2 else None)

    def _checkpoint_note(self) -> str:
        path = self.out_dir / CHECKPOINT
        if path.is_file():
            return f"the last good checkpoint is '{path}'"
        return "no checkpoint was written yet (the first is written at the end of epoch 1)"

    def _evaluate(self, model: nn.Module, seen: Callable[[int], None] | None = None) -> dict:
        start = time.perf_counter()
        batch = self.config.train.batch_size
        order = list(torch.arange(len(self.data.test)).split(batch))
        images = iterate(self.data.test, order, self.config.data.workers)
        if seen is not None:
            images = _counted(images, seen)
        result = evaluate(model, images, self.normalize, self.device, self.autocast, self.data.num_classes)
        self.state.eval_seconds += time.perf_counter() - start
        return result

    def final_metrics(self) -> dict:
        spec = dict(self.model.bossnas_spec)  # type: ignore[attr-defined]
        space = create_space(spec["space"], in_channels=spec["in_channels"], image_size=spec["image_size"],
                             num_classes=spec["num_classes"], **spec["space_options"])
        cost = arch_cost(space, space.parse_arch(spec["arch"]))
        test, test_ema = self._evaluate_both("final test")
        if self.state.history:
            self.state.history[-1]["test_top1"] = test["top1"]
            if test_ema is not None:
                self.state.history[-1]["ema_test_top1"] = test_ema["top1"]
        cfg = self.config.train
        return {
            "model": {"name": spec["name"], "space": spec["space"], "arch": spec["arch"],
                      "space_options": spec["space_options"], "source": self.config.model.source},
            "data": self.data_info(),
            "params": int(cost.params), "flops": int(cost.flops), "madds": int(cost.macs),
            "test": test,
            "test_ema": test_ema,
            "epochs": cfg.epochs, "steps": self.total_steps, "batch_size": cfg.batch_size,
            "optimizer": cfg.optimizer, "lr": cfg.lr, "weight_decay": cfg.weight_decay,
            "label_smoothing": cfg.label_smoothing, "ema_decay": self.ema_decay if self.ema is not None else None,
            "augment": self.config.data.augment,
            "train_seconds": round(self.state.train_seconds, 3), "eval_seconds": round(self.state.eval_seconds, 3),
            "device": str(self.device), "torch": torch.__version__, "machine": platform.machine(),
            "history": self.state.history,
        }


def _counted(batches: Iterator[tuple[torch.Tensor, torch.Tensor]],
             seen: Callable[[int], None]) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """``batches`` as they are, calling ``seen(images so far)`` after each has been used."""
    done = 0
    for images, labels in batches:
        yield images, labels
        done += len(labels)
        seen(done)


def eval_record(epoch: int, step: int, test: dict, test_ema: dict | None) -> dict:
    """The metrics.jsonl record of a test evaluation after ``epoch`` (0-based), whose last step was ``step``."""
    record = {"kind": "eval", "epoch": epoch, "step": step, "top1": test["top1"], "top5": test["top5"], "loss": test["loss"]}
    if test_ema is not None:
        record.update(ema_top1=test_ema["top1"], ema_top5=test_ema["top5"], ema_loss=test_ema["loss"])
    return record


__all__ = [
    "RetrainConfig", "Retrainer", "SupervisedAugment", "build_ema", "ema_decay_for", "evaluate",
    "resolve_arch_source", "retrain_config", "set_retrain_key",
]
