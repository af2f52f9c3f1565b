"""Models by name: registered named architectures (``bossnet-t0`` ...) and any architecture
string of any search space, built as plain ``nn.Module`` s.

>>> model = create_model("nats-sss/64:40:48:64:56", num_classes=10)
>>> model(torch.zeros(1, 3, 32, 32)).shape
torch.Size([1, 10])
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

from bossnas.errors import BossNASError, closest
from bossnas.spaces import SearchSpace, create_space, list_spaces
from bossnas.utils.io import CHECKSUM_MARKER, existing_path

#: what ``bossnas show`` / ``create_model`` accept, for messages that must say it
ACCEPTED = ("an architecture string (e.g. nats-sss/64:40:48:64:56), a model name (see `bossnas models`) "
            "or a search's best_arch.json / run folder")


@dataclass(frozen=True)
class ModelSpec:
    """A named architecture: a space, an architecture string in it and the space's options."""

    name: str
    space: str
    arch: str
    description: str = ""
    space_options: dict = field(default_factory=dict)
    #: input side the published numbers refer to
    image_size: int | None = None
    num_classes: int = 1000
    in_channels: int = 3


_MODELS: dict[str, ModelSpec] = {}
#: the smallest input side (data.image_size has the same floor)
MIN_IMAGE_SIZE = 4


def register_model(spec: ModelSpec) -> ModelSpec:
    if spec.name in _MODELS and _MODELS[spec.name] != spec:
        raise ValueError(f"model '{spec.name}' registered twice")
    _MODELS[spec.name] = spec
    return spec


def _load_builtin() -> None:
    # named models live next to their space; importing the built-in spaces registers them (not
    # list_spaces(): it also scans the installed packages' entry points, 10 ms a call)
    from bossnas.spaces import _import_builtin_spaces

    _import_builtin_spaces()


def model_specs() -> list[ModelSpec]:
    """Every registered named model, by name."""
    _load_builtin()
    return [_MODELS[k] for k in sorted(_MODELS)]


def list_models(filter: str | Sequence[str] = "", pretrained: bool = False,
                exclude_filters: str | Sequence[str] = "") -> list[str]:
    """The names of the registered models, as timm's ``list_models``: ``filter`` and
    ``exclude_filters`` are shell-style patterns (``"bossnet*"``) or lists of them.

    ``pretrained=True`` lists the models with weights that ship with bossnas: none (weights
    come from ``bossnas retrain`` + ``bossnas export``). Any architecture string of any space
    is a model name too, without being listed.
    """
    import fnmatch

    def patterns(value: object, what: str) -> list[str]:
        items = [value] if isinstance(value, str) else value
        if not isinstance(items, (list, tuple)) or not all(isinstance(x, str) for x in items):
            raise BossNASError(f"list_models: {what} must be a pattern (e.g. 'bossnet*') or a list of them, got {value!r}")
        return [x for x in items if x]

    include, exclude = patterns(filter, "filter"), patterns(exclude_filters, "exclude_filters")
    if pretrained:
        return []
    names = [m.name for m in model_specs()]
    if include:
        names = [n for n in names if any(fnmatch.fnmatchcase(n, pat) for pat in include)]
    return [n for n in names if not any(fnmatch.fnmatchcase(n, pat) for pat in exclude)]


def is_search_record(name: str) -> bool:
    """Whether ``name`` points at a search's ``best_arch.json`` or run folder."""
    path = existing_path(name)
    return name.endswith(".json") or (path is not None and path.is_dir())


def is_retrain_folder(path: Path) -> bool:
    """A ``bossnas retrain`` output: its config.yaml has no top-level ``space:`` (a search's does)."""
    import re

    config = path / "config.yaml"
    text = config.read_text(errors="replace") if config.is_file() else ""
    return (path / "metrics.json").is_file() or (bool(text) and re.search(r"^space:", text, re.MULTILINE) is None)


def _folder_without_record(path: Path) -> str:
    """What a folder holding no best_arch.json is, and what to give instead."""
    if is_retrain_folder(path):
        parent = f"the search folder '{path.parent}'" if (path.parent / "best_arch.json").is_file() else "the search's run folder"
        return (f"'{path}' is a `bossnas retrain` folder, not a search: show its architecture with {parent} "
                f"(or its export: `bossnas export {path}` writes model.json naming it)")
    if (path / "checkpoint.pt").is_file():
        # `run --resume` trains what is left (if anything) and then chooses; `search` alone needs a trained run
        return f"folder '{path}' holds no best_arch.json; finish the search with `bossnas run --resume --out {path}`"
    return f"folder '{path}' holds no best_arch.json and no checkpoint.pt, so it is no search's run folder; give {ACCEPTED}"


def best_arch_path(path: Path) -> Path:
    """``path`` itself, or the best_arch.json in the folder ``path``; one line when it holds none."""
    found = existing_path(path)  # a '.json' name too long to be a file is read (and refused) as one
    if found is None or not found.is_dir():
        return path
    if not (path / "best_arch.json").is_file():
        raise BossNASError(_folder_without_record(path))
    return path / "best_arch.json"


def spec_from_record(path: str | Path) -> ModelSpec:
    """The architecture a search chose: a ``best_arch.json`` or the run folder holding one."""
    from bossnas.search.report import read_best_arch

    record = read_best_arch(best_arch_path(Path(path).expanduser()))
    shape = record.get("input") if isinstance(record.get("input"), list) and len(record["input"]) == 3 else [3, None, None]
    return ModelSpec(
        name=f"{record['space']}/{record['arch']}", space=str(record["space"]), arch=str(record["arch"]),
        space_options=dict(record.get("space_options") or {}), image_size=shape[1],
        num_classes=int(record.get("num_classes", 10)), in_channels=int(shape[0]),
    )


def resolve_model(name: str, space: str | None = None) -> ModelSpec:
    """A registered name, ``space/arch``, a bare architecture string (the first space that
    parses it), or a search's ``best_arch.json`` / run folder."""
    _load_builtin()
    if isinstance(name, os.PathLike):  # a best_arch.json or run folder given as a Path
        name = os.fspath(name)
    if not isinstance(name, str) or not name.strip():
        raise BossNASError(f"no architecture given ({name!r}); give {ACCEPTED}")
    if name in _MODELS:
        return _MODELS[name]
    if is_search_record(name):
        return spec_from_record(name)
    path = existing_path(name)
    if "/" in name:
        space, name = name.split("/", 1)
    candidates = [space] if space else list_spaces()
    errors = []
    for candidate in candidates:
        s = create_space(candidate)
        try:
            s.parse_arch(name)
            return ModelSpec(name=f"{candidate}/{name}", space=candidate, arch=name)
        except BossNASError as exc:
            errors.append(str(exc))
    if path is not None:  # parsed as nothing: say what the file is instead of why it is no architecture
        raise BossNASError(_file_is_no_architecture(path))
    hint = closest(name, list(_MODELS))
    if len(errors) == 1:
        raise BossNASError(errors[0] + hint)
    raise BossNASError(f"'{name}' is neither a model name{hint} nor an architecture of any space; see `bossnas models`")


def is_run_checkpoint(path: Path) -> bool:
    """Whether ``path`` is a checkpoint.pt of a search or retrain (it starts with the checksum marker)."""
    if not path.is_file():
        return False
    with open(path, "rb") as f:
        return f.read(len(CHECKSUM_MARKER)) == CHECKSUM_MARKER


def _file_is_no_architecture(path: Path) -> str:
    """What a file given where an architecture belongs is, and what to give instead."""
    if is_run_checkpoint(path):
        return (f"'{path}' is a bossnas training checkpoint, not an architecture; give its run folder "
                f"'{path.parent}' (a search's, holding best_arch.json)")
    if path.suffix in (".pt", ".pth", ".pt2", ".bin"):
        return (f"'{path}' is a weights file, not an architecture; for a `bossnas export` bundle give the 'name' "
                "in the model.json next to it, else " + ACCEPTED)
    return f"'{path}' is a file but not a best_arch.json; give {ACCEPTED}"


def _check_count(name: str, value: object, minimum: int, optional: bool = False) -> None:
    """An integer argument of create_model: one line instead of a 0-output head or a TypeError deep in torch."""
    if value is None and optional:
        return
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise BossNASError(f"create_model: {name} must be an integer >= {minimum}{' or None' if optional else ''}, got {value!r}")


#: a head or stem this wide is checked against the machine's memory before it is allocated
LARGE_COUNT = 10_000
NO_WEIGHTS = ("bossnas ships no pretrained weights; train them (`bossnas retrain`, then `bossnas export`) and load "
              "the file with pretrained_path='.../export/model.pt' (checkpoint_path= is the same)")


def _check_fits_memory(space: SearchSpace, arch: tuple, what: str) -> None:
    """Refuse, in one line, a network whose weights alone would not fit in memory (built on the
    meta device first: shapes only, nothing allocated)."""
    from bossnas.data.datasets import memory_bytes

    memory = memory_bytes()
    try:
        with torch.device("meta"):
            probe = space.build_standalone(arch)
    except Exception:  # noqa: BLE001 - a layer that cannot be built on meta: build it for real
        return
    need = sum(p.numel() * p.element_size() for p in probe.parameters())
    if memory is not None and need > memory:
        raise BossNASError(f"create_model: {what} makes a network of {need / 1e9:,.1f} GB of weights, more than the "
                           f"{memory / 1e9:,.1f} GB of memory here")


def create_model(
    name: str | os.PathLike,
    num_classes: int | None = None,
    in_channels: int | None = None,
    image_size: int | None = None,
    pretrained_path: str | os.PathLike | None = None,
    space: str | None = None,
    pretrained: bool = False,
    checkpoint_path: str | os.PathLike | None = None,
    **space_options,
) -> nn.Module:
    """Build a standalone network by name (timm-style single entry point).

    ``pretrained_path`` (or timm's ``checkpoint_path``) loads weights saved by ``bossnas
    export`` (or a plain state dict). ``pretrained=True`` is refused in one line: no weights
    ship with bossnas. The returned module carries ``model.bossnas_spec`` (space, arch,
    input, classes) and timm's ``get_classifier()`` / ``reset_classifier(num_classes)``.
    """
    if pretrained is not False:
        if pretrained is True:
            raise BossNASError(f"create_model({name!r}, pretrained=True): {NO_WEIGHTS}")
        raise BossNASError(f"create_model: pretrained must be False (no weights ship), got {pretrained!r}")
    if checkpoint_path is not None:
        if pretrained_path is not None:
            raise BossNASError("create_model: give the weights file once, as pretrained_path= or checkpoint_path=")
        pretrained_path = checkpoint_path
    if pretrained_path is not None and (isinstance(pretrained_path, bool)
                                        or not isinstance(pretrained_path, (str, os.PathLike))):
        raise BossNASError(f"create_model: pretrained_path must be a file path (str or Path), got {pretrained_path!r}")
    # None means "the model's own"; anything else must be a usable count (image_size=0 used to mean the default)
    _check_count("num_classes", num_classes, 1, optional=True)
    _check_count("in_channels", in_channels, 1, optional=True)
    _check_count("image_size", image_size, MIN_IMAGE_SIZE, optional=True)
    spec = resolve_model(name, space)
    in_channels = spec.in_channels if in_channels is None else in_channels
    options = {**spec.space_options, **space_options}
    classes = num_classes if num_classes is not None else spec.num_classes
    size = spec.image_size if image_size is None else image_size
    try:
        s = create_space(spec.space, in_channels=in_channels, image_size=size, num_classes=classes, **options)
    except TypeError as exc:
        raise BossNASError(f"options for space '{spec.space}': {exc}") from None
    arch = s.parse_arch(spec.arch)
    if classes > LARGE_COUNT or in_channels > LARGE_COUNT:
        _check_fits_memory(s, arch, f"num_classes={classes}, in_channels={in_channels}")
    model = s.build_standalone(arch)
    model.bossnas_spec = {  # type: ignore[attr-defined]
        "name": spec.name, "space": spec.space, "arch": spec.arch, "space_options": options,
        "in_channels": in_channels, "image_size": s.image_size, "num_classes": classes,
    }
    if pretrained_path is not None:
        load_weights(model, pretrained_path)
    return model


def read_weights_file(path: str | Path) -> object:
    """What a weights file (state dict or export bundle) holds, tensors only; one-line errors."""
    path = Path(path)
    if not path.is_file():
        raise BossNASError(f"weights file '{path}' not found")
    if is_run_checkpoint(path):
        raise BossNASError(f"'{path}' is a bossnas run checkpoint (search or retrain), not weights; give the model.pt "
                           "that `bossnas export RETRAIN_FOLDER` writes")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - any unreadable file is the user's to fix
        raise BossNASError(f"cannot read weights '{path}' ({type(exc).__name__}); is it a state dict saved by bossnas?") from None


def load_weights(model: nn.Module, path: str | Path) -> None:
    """Load a state dict (or an export bundle holding ``state_dict``), with a clear error on mismatch."""
    obj = read_weights_file(path)
    state = obj.get("state_dict", obj) if isinstance(obj, dict) else None
    if not isinstance(state, dict):
        raise BossNASError(f"'{path}' holds no state dict")
    try:
        model.load_state_dict(state)
    except RuntimeError as exc:
        first = str(exc).splitlines()[1].strip() if len(str(exc).splitlines()) > 1 else str(exc)
        raise BossNASError(f"weights '{path}' do not fit this architecture ({first})") from None
