"""Run configuration: typed dataclasses, YAML presets and ``key=value`` overrides.

Every key is checked: an unknown key, a value of the wrong type or out of range is a
one-line :class:`BossNASError` that names the key and what it accepts.
"""

from __future__ import annotations

import copy
import dataclasses
import hashlib
import json
import math
import re
import types
import typing
from dataclasses import dataclass, field
from decimal import Decimal
from importlib import resources
from pathlib import Path as FsPath
from typing import Any, TypeVar

import yaml

from bossnas.errors import BossNASError, closest

#: the augmentations both commands accept (the search draws two views of each, the
#: retraining one): "small" pad-crop + flip, "small-noflip" the same without the flip
#: (digits), "imagenet" resized crop + flip (+ colour jitter and random grey in the search),
#: "none"
AUGMENTS = ("small", "small-noflip", "imagenet", "none")
#: the search's two-view BYOL augmentations (resized crop, flip, colour jitter, grey, blur,
#: solarisation): "byol" with BYOL's asymmetric views, "byol-bossnas" as the official
#: BossNAS configs pair them (see bossnas/data/augment.py); not for supervised retraining
SEARCH_AUGMENTS = (*AUGMENTS, "byol", "byol-bossnas")
#: images of this side and more are ImageNet-style: the automatic augmentation of both
#: commands switches there (search: byol-bossnas, retraining: imagenet)
IMAGENET_STYLE_SIDE = 64
#: values of the supernet-training keys (see TrainConfig.prefix, ModelConfig.target_adapter, ...)
PREFIX_MODES = ("online", "frozen")
LARS_EXCLUDES = ("official", "norms")
TARGET_ADAPTERS = ("fixed", "ema")
HEAD_INITS = ("official", "torch")


@dataclass
class DataConfig:
    """The data set; the same keys and values for ``bossnas run`` and ``bossnas retrain``."""

    #: digits | cifar10 | cifar100 | imagefolder
    name: str = "digits"
    #: folder of the data set (cifar: the folder holding cifar-10-batches-py; imagefolder: the root)
    root: str | None = None
    #: cifar only: download the archive (checksum verified) when it is not under root
    download: bool = False
    #: side of the square images fed to the network; default: the data's own size, or the
    #: space's (model's) input size for digits
    image_size: int | None = None
    #: use only the first N training images of a fixed shuffle (None: all)
    train_images: int | None = None
    #: worker processes decoding image folders (0: in the main process)
    workers: int = 0
    #: small | small-noflip | imagenet | none (see AUGMENTS), search also byol | byol-bossnas;
    #: None: automatic, decided from the data when the run starts and written to config.yaml
    #: (search: byol-bossnas for images of 64 px and more, as the official ImageNet searches,
    #: small otherwise; retraining: small-noflip for digits, imagenet from 64 px, small otherwise)
    augment: str | None = None


@dataclass
class ModelConfig:
    #: hidden width of the projection and prediction MLPs (BYOL: 4096)
    hidden_dim: int = 1024
    #: output width of the projection (BYOL: 256)
    proj_dim: int = 256
    #: channels the per-width adapters map to (None: the widest block output)
    adapter_width: int | None = None
    #: extra keyword arguments of the search space (e.g. width_mult for hytra / mbconv)
    space_options: dict = field(default_factory=dict)
    #: the target's per-width channel adapters: fixed (a copy of the online adapter taken
    #: when the block starts, never updated, as in the official code) | ema (an EMA of the
    #: online adapter, like the rest of the target)
    target_adapter: str = "fixed"
    #: official (neck Linear layers Kaiming-normal, predictor normal(0, 0.01), biases 0, as the
    #: official code initialises its heads) | torch (PyTorch's default Linear init)
    head_init: str = "official"


@dataclass
class TrainBase:
    """Optimiser and schedule keys both loops share (each command sets its own defaults)."""

    epochs: int = 1
    batch_size: int = 128
    optimizer: str = "sgd"
    momentum: float = 0.9
    #: linear warm-up of the learning rate, then a cosine to 0
    warmup_epochs: float = 0.0
    #: auto (bf16 autocast on CUDA only) | bf16 | off
    amp: str = "auto"
    #: also write a checkpoint when this many minutes passed since the last one (0: off), so
    #: that a kill before the first epoch end loses at most this much work
    checkpoint_minutes: float = 10.0


@dataclass
class TrainConfig(TrainBase):
    #: K, paths per step (None: the candidate count for fair sampling, 4 for uniform)
    paths_per_step: int | None = None
    #: fair | uniform (None: the space's default)
    sampling: str | None = None
    #: P, augmentation pairs drawn per batch; path i of the K paths uses pair i mod P (None:
    #: the published method's, resolved when the run starts: 4 for hytra and mbconv, else 1)
    augment_pairs: int | None = None
    #: ensemble bootstrapping (True) or a plain per-path BYOL target (False, an ablation)
    ensemble: bool = True
    lr: float = 0.05
    weight_decay: float = 1e-4
    #: BYOL target momentum at the start of each block (rises to 1.0 on a cosine)
    base_momentum: float = 0.99
    #: micro-batches per optimizer step
    accumulate: int = 1
    channels_last: bool = False
    #: also write a checkpoint every N steps inside an epoch (0: only at epoch ends)
    checkpoint_every: int = 0
    #: how the blocks before the one being trained run: online (the online side runs them
    #: through the online network in train mode with gradients, so they keep learning, and the
    #: EMA moves their target copies; the target side runs them through the target network,
    #: as in the official code) | frozen (both sides take the target's features in eval mode,
    #: without gradients)
    prefix: str = "online"
    #: LARS only: which tensors get neither trust-ratio adaptation nor weight decay. official:
    #: every bias and the BatchNorms of the projection / prediction MLPs (the official config's
    #: name patterns); norms: every tensor of one dimension (biases and every norm's weights)
    lars_exclude: str = "official"


@dataclass
class SearchConfig:
    #: held-out images (two views each) on which every path is rated
    rate_images: int = 512
    #: where they come from: "train", a fixed, seeded draw of training images held out of
    #: training (the train split shrinks by them), or "test", the test split (the official
    #: NATS evaluation's choice, kept by the official presets); docs/reliability.md says why
    rate_split: str = "train"
    #: training batches used to recalibrate BatchNorm along each path
    recal_batches: int = 4
    bn_recalibration: bool = True
    #: recalibrate the predictor's BatchNorm too (False: its statistics are reset to mean 0 /
    #: variance 1 and left there during rating, as in the official code)
    recalibrate_predictor: bool = True
    #: batch size of rating forwards (None: train.batch_size)
    batch_size: int | None = None
    max_flops: float | None = None
    max_params: float | None = None


#: where a search's rating images come from (search.rate_split)
RATE_SPLITS = ("train", "test")

#: key -> (predicate, description of the valid range)
Checks = dict[str, tuple[typing.Callable[[Any], bool], str]]


@dataclass
class ConfigBase:
    """What every command's configuration shares: seed, device, and one way to set keys,
    compare and fingerprint. A command's config adds its sections and says which keys do
    not change the trained weights (``UNTRAINED``) and how its values are checked."""

    seed: int = 0
    #: auto | cpu | cuda | cuda:N
    device: str = "auto"

    #: dotted keys (or whole sections) that do not change the trained weights
    UNTRAINED: typing.ClassVar[tuple[str, ...]] = ()
    #: keys added after runs were already written -> the value that trains as those runs did;
    #: at that value a key is left out of the training view, so their fingerprints still match
    ADDED: typing.ClassVar[dict[str, Any]] = {}
    #: value checks of this command's keys
    CHECKS: typing.ClassVar[Checks] = {}
    #: how messages call a key ("config key", "retrain key")
    LABEL: typing.ClassVar[str] = "config key"

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    def training_view(self) -> dict:
        """The keys that change the trained weights: what a resumed run must share with its checkpoint."""
        d = self.to_dict()
        dropped = list(self.UNTRAINED) + [key for key, old in self.ADDED.items() if _lookup(d, key) == old]
        for key in dropped:
            *parents, last = key.split(".")
            section = d
            for part in parents:
                section = section.get(part, {})  # a key of a section dropped as a whole
            section.pop(last, None)
        return d

    def fingerprint(self) -> str:
        """Hash of :meth:`training_view`."""
        return hashlib.sha256(json.dumps(self.training_view(), sort_keys=True).encode()).hexdigest()[:16]

    @classmethod
    def from_dict(cls, tree: dict, source: str = ""):  # noqa: ANN206 - the subclass
        """The config a run folder or checkpoint saved (see :meth:`saved_tree`)."""
        config = cls()
        apply_mapping(config, cls.saved_tree(tree), source)
        return config

    @classmethod
    def saved_tree(cls, tree: dict) -> dict:
        """A saved config with every key it predates (``ADDED``) set to the value it trained with.

        A run written before a key existed has no value for it; the class default is what new
        runs do, so a resume, a re-rating or a fingerprint check of the old run would otherwise
        quietly switch it to the new behaviour.
        """
        if not isinstance(tree, dict):
            return tree
        filled = copy.deepcopy(tree)
        for key, old in cls.ADDED.items():
            *parents, last = key.split(".")
            section = filled
            for part in parents:
                section = section.get(part) if isinstance(section, dict) else None
                if section is None:
                    break
            if isinstance(section, dict) and last not in section:
                section[last] = old
        return filled


def _lookup(tree: dict, key: str) -> Any:
    for part in key.split("."):
        tree = tree[part]
    return tree


#: the value checks of the search's keys (the shared ones are the retraining's too)
_CHECKS: Checks = {
    "train.epochs": (lambda v: v >= 1, "an integer >= 1"),
    "train.batch_size": (lambda v: v >= 2, "an integer >= 2 (BatchNorm needs two samples)"),
    "train.paths_per_step": (lambda v: v is None or v >= 1, "an integer >= 1"),
    "train.sampling": (lambda v: v in (None, "fair", "uniform"), "fair or uniform"),
    "train.augment_pairs": (lambda v: v is None or v >= 1, "an integer >= 1 (or none: the space's default)"),
    "train.optimizer": (lambda v: v in ("sgd", "lars"), "sgd or lars"),
    "train.lr": (lambda v: v > 0, "a number > 0"),
    "train.momentum": (lambda v: 0 <= v < 1, "a number in [0, 1)"),
    "train.weight_decay": (lambda v: v >= 0, "a number >= 0"),
    "train.warmup_epochs": (lambda v: v >= 0, "a number >= 0"),
    "train.base_momentum": (lambda v: 0 <= v <= 1, "a number in [0, 1]"),
    "train.accumulate": (lambda v: v >= 1, "an integer >= 1"),
    "train.amp": (lambda v: v in ("auto", "bf16", "off"), "auto, bf16 or off"),
    "train.checkpoint_every": (lambda v: v >= 0, "an integer >= 0"),
    "train.checkpoint_minutes": (lambda v: v >= 0, "a number >= 0 (0: off)"),
    "train.prefix": (lambda v: v in PREFIX_MODES, " or ".join(PREFIX_MODES)),
    "train.lars_exclude": (lambda v: v in LARS_EXCLUDES, " or ".join(LARS_EXCLUDES)),
    "model.target_adapter": (lambda v: v in TARGET_ADAPTERS, " or ".join(TARGET_ADAPTERS)),
    "model.head_init": (lambda v: v in HEAD_INITS, " or ".join(HEAD_INITS)),
    "data.name": (lambda v: v in ("digits", "cifar10", "cifar100", "imagefolder"), "digits, cifar10, cifar100 or imagefolder"),
    "data.image_size": (lambda v: v is None or v >= 4, "an integer >= 4"),
    "data.train_images": (lambda v: v is None or v >= 2, "an integer >= 2"),
    "data.workers": (lambda v: v >= 0, "an integer >= 0"),
    "data.augment": (lambda v: v is None or v in SEARCH_AUGMENTS, ", ".join(SEARCH_AUGMENTS)),
    "model.hidden_dim": (lambda v: v >= 1, "an integer >= 1"),
    "model.proj_dim": (lambda v: v >= 1, "an integer >= 1"),
    "model.adapter_width": (lambda v: v is None or v >= 1, "an integer >= 1"),
    "search.rate_images": (lambda v: v >= 2, "an integer >= 2"),
    "search.rate_split": (lambda v: v in RATE_SPLITS, " or ".join(RATE_SPLITS)),
    "search.recal_batches": (lambda v: v >= 1, "an integer >= 1"),
    "search.batch_size": (lambda v: v is None or v >= 2, "an integer >= 2"),
    "search.max_flops": (lambda v: v is None or v > 0, "a number > 0"),
    "search.max_params": (lambda v: v is None or v > 0, "a number > 0"),
    "device": (lambda v: v in ("auto", "cpu", "cuda") or (v.startswith("cuda:") and v[5:].isascii() and v[5:].isdigit()),
               "auto, cpu, cuda or cuda:N"),
    # torch.manual_seed takes at most 64 bits
    "seed": (lambda v: 0 <= v < 2**63, "an integer in 0..2**63-1"),
}


@dataclass
class RunConfig(ConfigBase):
    """``bossnas run`` / ``train``: the search."""

    space: str = "nats-sss"
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    search: SearchConfig = field(default_factory=SearchConfig)

    #: not device, workers, checkpoint cadence or search budgets
    UNTRAINED: typing.ClassVar[tuple[str, ...]] = ("device", "data.workers", "data.download", "train.checkpoint_every",
                                                   "train.checkpoint_minutes", "search")
    CHECKS: typing.ClassVar[Checks] = _CHECKS
    #: how runs written before each key existed trained: one augmentation pair, a frozen
    #: prefix fed by the target in eval mode, an EMA target adapter, LARS excluding every 1-D
    #: tensor, PyTorch's default head init, rating on the test split (and training on every
    #: training image)
    ADDED: typing.ClassVar[dict[str, Any]] = {"train.augment_pairs": 1, "train.prefix": "frozen",
                                              "model.target_adapter": "ema", "train.lars_exclude": "norms",
                                              "model.head_init": "torch", "search.rate_split": "test"}

    def training_view(self) -> dict:
        """As :meth:`ConfigBase.training_view`; with rating images held out of the training
        images, how many are held out decides which images are trained on, so the split and
        ``search.rate_images`` are training keys then."""
        view = super().training_view()
        if self.search.rate_split == "train":
            view["search"] = {"rate_split": self.search.rate_split, "rate_images": self.search.rate_images}
        return view


#: augmentation pairs per batch in the official search configs: the HyTra and MBConv ones
#: load a MultiAugBYOLDataset with num_pairs=4; the NATS ones a BYOLDataset (one pair)
OFFICIAL_AUGMENT_PAIRS: dict[str, int] = {"hytra": 4, "mbconv": 4}


def resolve_run_config(config: RunConfig) -> RunConfig:
    """A copy of ``config`` with the space-dependent defaults filled in (``train.augment_pairs``),
    as the run records them in config.yaml and its checkpoints."""
    resolved = copy.deepcopy(config)
    if resolved.train.augment_pairs is None:
        resolved.train.augment_pairs = OFFICIAL_AUGMENT_PAIRS.get(resolved.space, 1)
    return resolved


def search_augment_for(image_size: int) -> str:
    """The search's automatic ``data.augment``: the official ImageNet searches' BYOL pipeline
    for ImageNet-style images, the official NATS (CIFAR) pipeline below that."""
    return "byol-bossnas" if image_size >= IMAGENET_STYLE_SIDE else "small"


@dataclass
class RetrainModelConfig:
    #: a registered model name (bossnet-t0) or space/arch (nats-sss/64:40:48:64:56)
    name: str = ""
    #: keyword arguments of the space (merged over the named model's own)
    space_options: dict = field(default_factory=dict)
    #: what the user gave (best_arch.json path, name, string); informational
    source: str = ""


@dataclass
class RetrainDataConfig(DataConfig):
    #: None: small-noflip for digits, imagenet for images of 64 px and more, small otherwise
    augment: str | None = None
    #: test on a fixed subset of N test images (None: all); every evaluation, the final one too
    test_images: int | None = None


@dataclass
class RetrainTrainConfig(TrainBase):
    epochs: int = 30
    #: sgd | adamw
    optimizer: str = "sgd"
    #: None: the optimizer's default (sgd 0.1, adamw 1e-3)
    lr: float | None = None
    #: None: the optimizer's default (sgd 5e-4, adamw 0.05); weight matrices only
    weight_decay: float | None = None
    warmup_epochs: float = 1.0
    label_smoothing: float = 0.1
    #: per-step EMA decay of the weights; None: auto (averages the last ~10% of the steps); 0: no EMA
    ema_decay: float | None = None
    #: evaluate on the test split every N epochs (0: only at the end)
    eval_every: int = 1


RETRAIN_OPTIMIZERS = ("sgd", "adamw")

#: value checks of the retraining keys; the shared keys (data.*, seed, device, ...) keep the search's
RETRAIN_CHECKS: Checks = {**_CHECKS, **{
    "train.optimizer": (lambda v: v in RETRAIN_OPTIMIZERS, " or ".join(RETRAIN_OPTIMIZERS)),
    "train.lr": (lambda v: v is None or v > 0, "a number > 0"),
    "train.weight_decay": (lambda v: v is None or v >= 0, "a number >= 0"),
    "train.label_smoothing": (lambda v: 0 <= v < 1, "a number in [0, 1)"),
    "train.ema_decay": (lambda v: v is None or 0 <= v < 1, "a number in [0, 1) (0: no EMA)"),
    "train.eval_every": (lambda v: v >= 0, "an integer >= 0"),
    "data.test_images": (lambda v: v is None or v >= 1, "an integer >= 1"),
    "data.augment": (lambda v: v is None or v in AUGMENTS,
                     ", ".join(AUGMENTS) + " (byol and byol-bossnas are two-view search augmentations)"),
    "model.name": (lambda v: bool(v), "a model name or an architecture"),
}}


@dataclass
class RetrainConfig(ConfigBase):
    """``bossnas retrain``: supervised training of one architecture."""

    model: RetrainModelConfig = field(default_factory=RetrainModelConfig)
    data: RetrainDataConfig = field(default_factory=RetrainDataConfig)
    train: RetrainTrainConfig = field(default_factory=RetrainTrainConfig)

    #: not device, workers, evaluation cadence or where the architecture was read
    UNTRAINED: typing.ClassVar[tuple[str, ...]] = ("device", "model.source", "data.workers", "data.download",
                                                   "data.test_images", "train.eval_every", "train.checkpoint_minutes")
    CHECKS: typing.ClassVar[Checks] = RETRAIN_CHECKS
    LABEL: typing.ClassVar[str] = "retrain key"


C = TypeVar("C", bound=ConfigBase)

_SUFFIXES = {"k": 1e3, "K": 1e3, "M": 1e6, "G": 1e9, "B": 1e9, "T": 1e12}
#: an integer as the config accepts it: ASCII digits, optionally written with a decimal point
#: or exponent that leaves an integer (1e6, 20.0); no underscores, suffixes or other digits
_INTEGER_TEXT = re.compile(r"[+-]?[0-9]+(\.[0-9]*)?([eE][+-]?[0-9]{1,2})?", re.ASCII)


def parse_number(text: str) -> float:
    """'3.4G' -> 3.4e9, '500M' -> 5e8, '1e6' -> 1e6 (ASCII only: Python's float() would also
    take '1_0' and non-ASCII digits)."""
    text = text.strip()
    if not text.isascii() or "_" in text:
        raise ValueError(text)
    if text and text[-1] in _SUFFIXES:
        return float(text[:-1]) * _SUFFIXES[text[-1]]
    return float(text)


def parse_integer(text: str) -> int:
    """'123456789012345678' -> exactly that, '1e6' -> 1000000; never through a float (which
    rounds past 2**53), and no '1_0', '2k' or non-ASCII digits."""
    text = text.strip()
    if not _INTEGER_TEXT.fullmatch(text):
        raise ValueError(text)
    value = Decimal(text)
    if value != value.to_integral_value():
        raise ValueError(text)
    return int(value)


def _field_types(cls: type) -> dict[str, Any]:
    """The annotation of every dataclass field (class-level settings such as CHECKS are not keys)."""
    hints = typing.get_type_hints(cls)
    return {f.name: hints[f.name] for f in dataclasses.fields(cls)}


def _convert(key: str, raw: Any, annotation: Any) -> Any:
    """Convert a YAML/CLI value to the field's type, or raise a one-line error."""
    origin = typing.get_origin(annotation)
    args = typing.get_args(annotation)
    optional = origin in (typing.Union, types.UnionType) and type(None) in args
    if optional:
        if raw is None or (isinstance(raw, str) and raw.strip().lower() in ("none", "null", "")):
            return None
        annotation = next(a for a in args if a is not type(None))
    try:
        if annotation is bool:
            if isinstance(raw, bool):
                return raw
            text = str(raw).strip().lower()
            if text in ("true", "yes", "1", "on"):
                return True
            if text in ("false", "no", "0", "off"):
                return False
            raise ValueError
        if annotation is int:
            if isinstance(raw, bool):
                raise ValueError
            if isinstance(raw, int):
                return raw
            if isinstance(raw, float) and raw.is_integer():  # YAML 2.0
                return int(raw)
            if isinstance(raw, str):
                return parse_integer(raw)
            raise ValueError
        if annotation is float:
            if isinstance(raw, bool):
                raise ValueError
            value = parse_number(raw) if isinstance(raw, str) else float(raw)
            if value != value or value in (float("inf"), float("-inf")):
                raise ValueError
            return float(value)
        if annotation is str:
            if isinstance(raw, (dict, list)):
                raise ValueError
            return str(raw)
        if annotation is dict:
            if not isinstance(raw, dict):
                raise ValueError
            return _plain(key, dict(raw))
    except (ValueError, TypeError, OverflowError):
        pass
    kind = getattr(annotation, "__name__", str(annotation))
    raise BossNASError(f"config key '{key}': cannot read {raw!r} as {kind}")


def _plain(key: str, value: Any) -> Any:
    """A free-form option value (``model.space_options``) as JSON holds it, or a one-line error.

    The options are hashed into the checkpoint's fingerprint and written to config.yaml, so
    YAML's dates, sets and bytes, non-text keys and non-finite numbers are refused here.
    """
    if value is None or isinstance(value, (bool, int, str)):
        return value
    if isinstance(value, float):
        if not math.isfinite(value):
            raise BossNASError(f"config key '{key}': {value!r} is not a finite number")
        return value
    if isinstance(value, list):
        return [_plain(key, v) for v in value]
    if isinstance(value, dict):
        bad = [k for k in value if not isinstance(k, str)]
        if bad:
            raise BossNASError(f"config key '{key}': option name {bad[0]!r} is not text")
        return {k: _plain(f"{key}.{k}", v) for k, v in value.items()}
    raise BossNASError(f"config key '{key}': {value!r} is not a number, text, true/false, list or mapping")


def _check(key: str, value: Any, checks: Checks, label: str) -> None:
    if key in checks:
        predicate, valid = checks[key]
        if not predicate(value):
            raise BossNASError(f"{label} '{key}': {value!r} is out of range; expected {valid}")


def all_keys(cls: type = RunConfig, prefix: str = "") -> list[str]:
    keys = []
    hints = _field_types(cls)
    for f in dataclasses.fields(cls):
        if dataclasses.is_dataclass(hints[f.name]):
            keys += all_keys(hints[f.name], prefix + f.name + ".")
        else:
            keys.append(prefix + f.name)
    return keys


def set_key(config: Any, key: str, raw: Any, checks: Checks | None = None, label: str | None = None) -> None:
    """Set one dotted key (``train.epochs``) of a config dataclass from a raw value, converting
    it to the field's type and checking it against ``checks`` (default: the config's own CHECKS).
    """
    checks = getattr(config, "CHECKS", _CHECKS) if checks is None else checks
    label = getattr(config, "LABEL", "config key") if label is None else label
    parts = key.split(".")
    target: Any = config
    for i, part in enumerate(parts):
        hints = _field_types(type(target))
        if part not in hints:
            raise BossNASError(f"unknown {label} '{key}'{closest(key, all_keys(type(config)))}")
        annotation = hints[part]
        if i == len(parts) - 1:
            value = _convert(key, raw, annotation)
            _check(key, value, checks, label)
            setattr(target, part, value)
            return
        current = getattr(target, part)
        if isinstance(current, dict):
            # free-form option dicts (model.space_options.width_mult=0.5)
            sub = ".".join(parts[i + 1 :])
            if isinstance(raw, str):
                try:
                    raw = yaml.safe_load(raw)
                except yaml.YAMLError:
                    raise BossNASError(f"config key '{key}': cannot read {raw!r} as a YAML value") from None
            current[sub] = _plain(key, raw)
            return
        if not dataclasses.is_dataclass(current):
            raise BossNASError(f"unknown {label} '{key}'{closest(key, all_keys(type(config)))}")
        target = current


def _flatten(tree: dict, prefix: str = "") -> list[tuple[str, Any]]:
    items = []
    for k, v in tree.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict) and key != "model.space_options":
            items += _flatten(v, key + ".")
        else:
            items.append((key, v))
    return items


def apply_mapping(config: Any, tree: dict, source: str = "", checks: Checks | None = None,
                  label: str | None = None) -> None:
    """Set every key of a nested mapping (a YAML preset or a saved config)."""
    if not isinstance(tree, dict):
        raise BossNASError(f"{source or 'config'} must be a mapping of keys to values")
    for key, value in _flatten(tree):
        set_key(config, key, value, checks, label)


def list_presets() -> list[str]:
    folder = resources.files("bossnas") / "presets"
    return sorted(p.name[:-5] for p in folder.iterdir() if p.name.endswith(".yaml"))


def read_preset(name_or_path: str) -> dict:
    """A preset by name (``quickstart``) or a YAML file path."""
    path = FsPath(name_or_path)
    if path.suffix in (".yaml", ".yml") or path.exists():
        if not path.is_file():
            raise BossNASError(f"config file '{name_or_path}' not found")
        try:
            text = path.read_text(encoding="utf-8")
        except UnicodeDecodeError:
            raise BossNASError(f"config '{name_or_path}' is not a text (UTF-8) file") from None
    else:
        presets = list_presets()
        if name_or_path not in presets:
            raise BossNASError(
                f"unknown preset '{name_or_path}'{closest(name_or_path, presets)}; choose one of {', '.join(presets)} or give a .yaml file"
            )
        text = (resources.files("bossnas") / "presets" / f"{name_or_path}.yaml").read_text()
    try:
        tree = yaml.safe_load(text) or {}
    except yaml.YAMLError as exc:
        line = getattr(getattr(exc, "problem_mark", None), "line", None)
        where = f" at line {line + 1}" if line is not None else ""
        raise BossNASError(f"config '{name_or_path}' is not valid YAML{where}") from None
    if not isinstance(tree, dict):
        raise BossNASError(f"config '{name_or_path}' must be a mapping of keys to values")
    return tree


#: the preset ``bossnas run`` / ``train`` use when neither --preset nor other data is given
DEFAULT_PRESET = "quickstart"
#: keys a preset sizes for its own data set (input side, image counts, augmentation, where
#: and on how many images to rate): left out when the preset runs on other data
DATA_BOUND_KEYS = ("data.image_size", "data.train_images", "data.augment", "data.download", "search.rate_images",
                   "search.rate_split")


def preset_data(tree: dict) -> str:
    """The data set a preset is written for (the default data when it names none)."""
    data = tree.get("data") if isinstance(tree.get("data"), dict) else {}
    return str(data.get("name") or DataConfig.name)


def without_data_keys(tree: dict) -> tuple[dict, list[str]]:
    """A preset without the keys it sizes for its own data (:data:`DATA_BOUND_KEYS`), and those keys."""
    tree = copy.deepcopy(tree)
    dropped = []
    for key in DATA_BOUND_KEYS:
        section, name = key.split(".")
        if isinstance(tree.get(section), dict) and name in tree[section]:
            value = tree[section].pop(name)
            dropped.append(f"{key}={value}")
    return tree, dropped


def parse_override(text: str) -> tuple[str, str]:
    if "=" not in text:
        raise BossNASError(f"override '{text}' is not of the form key=value (e.g. train.epochs=2)")
    key, value = text.split("=", 1)
    key = key.strip()
    if not key:
        raise BossNASError(f"override '{text}' has no key; use key=value (e.g. train.epochs=2)")
    return key, value.strip()


def load_config(preset: str | FsPath | None = None, overrides: list[str] | None = None,
                extra: dict | None = None) -> RunConfig:
    """Defaults, then the preset (name or YAML file), then ``extra`` keys, then ``key=value`` overrides."""
    if preset is not None and (isinstance(preset, bool) or not isinstance(preset, (str, FsPath))):
        raise BossNASError(f"load_config: preset must be a preset name or a YAML file (str or Path), got {preset!r}; "
                           "give single keys as overrides, e.g. ['train.epochs=2']")
    if isinstance(overrides, str):
        raise BossNASError(f"load_config: overrides must be a list of key=value texts, got the text {overrides!r}; "
                           f"write [{overrides!r}]")
    if overrides is not None and (not isinstance(overrides, (list, tuple)) or not all(isinstance(o, str) for o in overrides)):
        raise BossNASError(f"load_config: overrides must be a list of key=value texts, got {overrides!r}")
    if extra is not None and not isinstance(extra, dict):
        raise BossNASError(f"load_config: extra must be a mapping of dotted keys to values, got {extra!r}")
    return build_config(RunConfig, (read_preset(str(preset)), str(preset)) if preset else None, extra, list(overrides or []))


def _strictly(value: Any, annotation: Any) -> bool:
    """Whether ``value`` already is of the field's type (no conversion: a '1' is not an int here)."""
    origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    if origin in (typing.Union, types.UnionType) and type(None) in args:
        if value is None:
            return True
        annotation = next(a for a in args if a is not type(None))
    if annotation is bool:
        return isinstance(value, bool)
    if annotation is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if annotation is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
    if annotation is str:
        return isinstance(value, str)
    if annotation is dict:
        return isinstance(value, dict)
    return True


def validate_config(config: ConfigBase, where: str = "config") -> None:
    """Check a config built or changed in Python as the CLI checks its keys: every value of its
    field's type (no conversion) and in range; the first that is not is one line naming it."""
    def walk(obj: Any, prefix: str) -> None:
        for name, annotation in _field_types(type(obj)).items():
            value, key = getattr(obj, name), prefix + name
            if dataclasses.is_dataclass(annotation):
                if not isinstance(value, annotation):
                    raise BossNASError(f"{where}: '{key}' must be a {annotation.__name__}, got {value!r}")
                walk(value, key + ".")
                continue
            if not _strictly(value, annotation):
                kind = config.CHECKS.get(key, (None, getattr(annotation, "__name__", str(annotation))))[1]
                raise BossNASError(f"{where}: {config.LABEL} '{key}' is {value!r} ({type(value).__name__}); expected {kind}")
            if annotation is dict:
                _plain(key, value)
            _check(key, value, config.CHECKS, f"{where}: {config.LABEL}")

    walk(config, "")


def config_from_dict(tree: dict) -> RunConfig:
    return RunConfig.from_dict(tree)


def build_config(cls: type[C], base: tuple[dict, str] | None = None, options: dict | None = None,
                 overrides: list[str] | None = None, saved: bool = False) -> C:
    """The one way every command builds its config: ``cls``'s defaults, then ``base`` (a preset
    or, with ``saved``, a run folder's saved config, with where it came from), then ``options``
    (CLI flags as dotted keys; None: not given), then ``key=value`` overrides."""
    config = cls()
    if base is not None:
        apply_mapping(config, cls.saved_tree(base[0]) if saved else base[0], base[1])
    apply_options(config, options, overrides)
    return config


def apply_options(config: Any, options: dict | None = None, overrides: list[str] | None = None) -> None:
    """Set ``options`` (CLI flags as dotted keys; None: not given), then ``key=value`` overrides."""
    for key, value in (options or {}).items():
        if value is not None:
            set_key(config, key, value)
    for text in overrides or []:
        set_key(config, *parse_override(text))
