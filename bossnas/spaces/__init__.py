"""Search-space registry: one module per space, each registering its class by name."""

from __future__ import annotations

from bossnas.errors import BossNASError, closest
from bossnas.spaces.base import Arch, BlockSpec, Path, SearchSpace, StandaloneNet, SupernetBackbone

_SPACES: dict[str, type[SearchSpace]] = {}


def register_space(cls: type[SearchSpace]) -> type[SearchSpace]:
    """Class decorator: make a space available by its ``name``."""
    if cls.name in _SPACES and _SPACES[cls.name] is not cls:
        raise ValueError(f"search space '{cls.name}' registered twice")
    _SPACES[cls.name] = cls
    return cls


def list_spaces() -> list[str]:
    _import_builtin_spaces()
    return sorted(_SPACES)


def space_class(name: str) -> type[SearchSpace]:
    _import_builtin_spaces()
    if name not in _SPACES:
        raise BossNASError(
            f"unknown search space '{name}'{closest(name, list(_SPACES))}; "
            f"choose one of {', '.join(sorted(_SPACES))}"
        )
    return _SPACES[name]


def create_space(name: str, **kwargs) -> SearchSpace:
    """Build a space by name, e.g. ``create_space("nats-sss", in_channels=3, image_size=32)``."""
    return space_class(name)(**kwargs)


def _import_builtin_spaces() -> None:
    # Imported lazily so that importing the registry never builds torch modules.
    import importlib

    for module in _BUILTIN:
        importlib.import_module(module)


_BUILTIN: tuple[str, ...] = (
    "bossnas.spaces.nats_sss", "bossnas.spaces.hytra", "bossnas.spaces.mbconv", "bossnas.spaces.nasbench_macro",
)

__all__ = [
    "Arch",
    "BlockSpec",
    "Path",
    "SearchSpace",
    "StandaloneNet",
    "SupernetBackbone",
    "create_space",
    "list_spaces",
    "register_space",
    "space_class",
]
