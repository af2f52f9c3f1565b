"""Run configuration: typed dataclasses, YAML presets and ``key=value`` overrides.

Every key is checked: an unknown key, a value of the wrong type or out of range is a
one-line :class:`BossNASError` that names the key and what it accepts.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import types
import typing
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path as FsPath
from typing import Any

import yaml

from bossnas.errors import BossNASError, closest


@dataclass
class DataConfig:
    #: digits | cifar10 | cifar100 | imagefolder
    name: str = "digits"
    #: folder of the data set (cifar: the folder holding cifar-10-batches-py; imagefolder: the root)
    root: str | None = None
    #: cifar only: download the archive (checksum verified) when it is not under root
    download: bool = False
    #: side of the square images fed to the network; default: the data's own size, or the
    #: space's input size for digits
    image_size: int | None = None
    #: use only the first N training images of a fixed shuffle (None: all)
    train_images: int | None = None
    #: worker processes decoding image folders (0: in the main process)
    workers: int = 0
    #: two-view augmentation: "small" (pad-crop + flip + colour jitter) or "imagenet" (resized crop)
    augment: str = "small"


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


@dataclass
class TrainConfig:
    epochs: int = 1
    batch_size: int = 128
    #: K, paths per step (None: the candidate count for fair sampling, 4 for uniform)
    paths_per_step: int | None = None
    #: fair | uniform (None: the space's default)
    sampling: str | None = None
    #: ensemble bootstrapping (True) or a plain per-path BYOL target (False, an ablation)
    ensemble: bool = True
    optimizer: str = "sgd"
    lr: float = 0.05
    momentum: float = 0.9
    weight_decay: float = 1e-4
    warmup_epochs: float = 0.0
    #: BYOL target momentum at the start of each block (rises to 1.0 on a cosine)
    base_momentum: float = 0.99
    #: micro-batches per optimizer step
    accumulate: int = 1
    #: auto (bf16 autocast on CUDA only) | bf16 | off
    amp: str = "auto"
    channels_last: bool = False
    #: also write a checkpoint every N steps inside an epoch (0: only at epoch ends)
    checkpoint_every: int = 0


@dataclass
class SearchConfig:
    #: held-out images (two views each) on which every path is rated
    rate_images: int = 512
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


@dataclass
class RunConfig:
    space: str = "nats-sss"
    seed: int = 0
    #: auto | cpu | cuda | cuda:N
    device: str = "auto"
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    search: SearchConfig = field(default_factory=SearchConfig)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    def fingerprint(self) -> str:
        """Hash of everything that changes the trained weights (not device, workers, search budgets)."""
        return hashlib.sha256(json.dumps(self.training_view(), sort_keys=True).encode()).hexdigest()[:16]

    def training_view(self) -> dict:
        """The keys that change the trained weights: what a resumed run must share with its checkpoint."""
        d = self.to_dict()
        d.pop("device")
        d["data"].pop("workers")
        d["data"].pop("download")
        d["train"].pop("checkpoint_every")
        d.pop("search")
        return d


# Value checks: key -> (predicate, description of the valid range)
#: key -> (predicate, description of the valid range)
Checks = dict[str, tuple[typing.Callable[[Any], bool], str]]

_CHECKS: Checks = {
    "train.epochs": (lambda v: v >= 1, "an integer >= 1"),
    "train.batch_size": (lambda v: v >= 2, "an integer >= 2 (BatchNorm needs two samples)"),
    "train.paths_per_step": (lambda v: v is None or v >= 1, "an integer >= 1"),
    "train.sampling": (lambda v: v in (None, "fair", "uniform"), "fair or uniform"),
    "train.optimizer": (lambda v: v in ("sgd", "lars"), "sgd or lars"),
    "train.lr": (lambda v: v > 0, "a number > 0"),
    "train.momentum": (lambda v: 0 <= v < 1, "a number in [0, 1)"),
    "train.weight_decay": (lambda v: v >= 0, "a number >= 0"),
    "train.warmup_epochs": (lambda v: v >= 0, "a number >= 0"),
    "train.base_momentum": (lambda v: 0 <= v <= 1, "a number in [0, 1]"),
    "train.accumulate": (lambda v: v >= 1, "an integer >= 1"),
    "train.amp": (lambda v: v in ("auto", "bf16", "off"), "auto, bf16 or off"),
    "train.checkpoint_every": (lambda v: v >= 0, "an integer >= 0"),
    "data.name": (lambda v: v in ("digits", "cifar10", "cifar100", "imagefolder"), "digits, cifar10, cifar100 or imagefolder"),
    "data.image_size": (lambda v: v is None or v >= 4, "an integer >= 4"),
    "data.train_images": (lambda v: v is None or v >= 2, "an integer >= 2"),
    "data.workers": (lambda v: v >= 0, "an integer >= 0"),
    "data.augment": (lambda v: v in ("small", "imagenet"), "small or imagenet"),
    "model.hidden_dim": (lambda v: v >= 1, "an integer >= 1"),
    "model.proj_dim": (lambda v: v >= 1, "an integer >= 1"),
    "model.adapter_width": (lambda v: v is None or v >= 1, "an integer >= 1"),
    "search.rate_images": (lambda v: v >= 2, "an integer >= 2"),
    "search.recal_batches": (lambda v: v >= 1, "an integer >= 1"),
    "search.batch_size": (lambda v: v is None or v >= 2, "an integer >= 2"),
    "search.max_flops": (lambda v: v is None or v > 0, "a number > 0"),
    "search.max_params": (lambda v: v is None or v > 0, "a number > 0"),
    "device": (lambda v: v in ("auto", "cpu", "cuda") or (v.startswith("cuda:") and v[5:].isascii() and v[5:].isdigit()),
               "auto, cpu, cuda or cuda:N"),
    # torch.manual_seed takes at most 64 bits
    "seed": (lambda v: 0 <= v < 2**63, "an integer in 0..2**63-1"),
}

_SUFFIXES = {"k": 1e3, "K": 1e3, "M": 1e6, "G": 1e9, "B": 1e9, "T": 1e12}


def parse_number(text: str) -> float:
    """'3.4G' -> 3.4e9, '500M' -> 5e8, '1e6' -> 1e6."""
    text = text.strip()
    if text and text[-1] in _SUFFIXES:
        return float(text[:-1]) * _SUFFIXES[text[-1]]
    return float(text)


def _field_types(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls)


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
            if isinstance(raw, float) and raw.is_integer():
                return int(raw)
            value = parse_number(raw) if isinstance(raw, str) else raw
            if not float(value).is_integer():
                raise ValueError
            return int(value)
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


def set_key(config: Any, key: str, raw: Any, checks: Checks | None = None, label: str = "config key") -> None:
    """Set one dotted key (``train.epochs``) of a config dataclass from a raw value, converting
    it to the field's type and checking it against ``checks`` (default: the search config's).

    Other configs (``bossnas retrain``'s) pass their own dataclass, checks and label.
    """
    checks = _CHECKS if checks is None else checks
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
                  label: str = "config key") -> None:
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
        text = path.read_text()
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


def parse_override(text: str) -> tuple[str, str]:
    if "=" not in text:
        raise BossNASError(f"override '{text}' is not of the form key=value (e.g. train.epochs=2)")
    key, value = text.split("=", 1)
    key = key.strip()
    if not key:
        raise BossNASError(f"override '{text}' has no key; use key=value (e.g. train.epochs=2)")
    return key, value.strip()


def load_config(preset: str | None = None, overrides: list[str] | None = None, extra: dict | None = None) -> RunConfig:
    """Defaults, then the preset (name or YAML file), then ``extra`` keys, then ``key=value`` overrides."""
    config = RunConfig()
    if preset:
        apply_mapping(config, read_preset(preset), preset)
    for key, value in (extra or {}).items():
        if value is not None:
            set_key(config, key, value)
    for text in overrides or []:
        set_key(config, *parse_override(text))
    return config


def config_from_dict(tree: dict) -> RunConfig:
    config = RunConfig()
    apply_mapping(config, tree)
    return config
