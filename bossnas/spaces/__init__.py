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
    if not isinstance(name, str):
        raise BossNASError(f"a search space is named by text, got {name!r}; choose one of {', '.join(sorted(_SPACES))}")
    if name not in _SPACES:
        raise BossNASError(
            f"unknown search space '{name}'{closest(name, list(_SPACES))}; "
            f"choose one of {', '.join(sorted(_SPACES))}"
        )
    return _SPACES[name]


#: the smallest input side a space is built for (data.image_size has the same floor)
MIN_IMAGE_SIZE = 4


def _check_count(name: str, value: object, minimum: int, optional: bool = False) -> None:
    if value is None and optional:
        return
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise BossNASError(f"create_space: {name} must be an integer >= {minimum}{' or None' if optional else ''}, "
                           f"got {value!r}")


def create_space(name: str, **kwargs) -> SearchSpace:
    """Build a space by name, e.g. ``create_space("nats-sss", in_channels=3, image_size=32)``.

    Wrong argument types, counts out of range and options the space does not take are one
    line (:class:`BossNASError`) naming the argument, not a TypeError from deep inside.
    """
    import inspect

    cls = space_class(name)
    _check_count("in_channels", kwargs.get("in_channels", 3), 1)
    _check_count("image_size", kwargs.get("image_size"), MIN_IMAGE_SIZE, optional=True)
    _check_count("num_classes", kwargs.get("num_classes", 10), 1)
    parameters = inspect.signature(cls.__init__).parameters
    if not any(p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters.values()):
        accepted = [k for k in parameters if k != "self"]
        unknown = [k for k in kwargs if k not in accepted]
        if unknown:
            raise BossNASError(f"create_space: '{name}' takes no option '{unknown[0]}'{closest(unknown[0], accepted)}; "
                               f"its options are {', '.join(accepted)}")
    return cls(**kwargs)


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
