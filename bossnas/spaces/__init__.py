"""Search-space registry: one module per space, each registering its class by name.

A space of one's own needs no edit of this package: name it as ``module:Class`` (``--space
mypkg.spaces:MySpace``, ``space: mypkg.spaces:MySpace`` in a config), or let its package
declare it in the ``bossnas.spaces`` entry-point group, which makes it a name like the
built-in ones (``bossnas spaces`` lists it). See docs/spaces.md, "A search space of your own".
"""

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


#: the Python entry-point group a package names its spaces in (``name = "module:Class"``)
ENTRY_POINT_GROUP = "bossnas.spaces"


def list_spaces() -> list[str]:
    """The names of the built-in spaces and of the spaces installed packages name in the
    ``bossnas.spaces`` entry-point group (a ``module:Class`` reference works without being listed)."""
    _import_builtin_spaces()
    return sorted({name for name in _SPACES if ":" not in name} | set(_entry_points()))


def space_class(name: str) -> type[SearchSpace]:
    """The class of a space: a built-in or registered name, an installed plugin's entry-point
    name, or ``module:Class`` (imported from ``sys.path``, e.g. ``mypkg.spaces:MySpace``)."""
    _import_builtin_spaces()
    if not isinstance(name, str):
        raise BossNASError(f"a search space is named by text, got {name!r}; choose one of {', '.join(list_spaces())}")
    if name in _SPACES:
        return _SPACES[name]
    if ":" in name:
        return _register_reference(name, _load_reference(name, name))
    plugins = _entry_points()
    if name in plugins:
        return _register_reference(name, _load_reference(plugins[name], f"{name} (entry point {plugins[name]!r})"))
    known = sorted(set(_SPACES) | set(plugins))
    raise BossNASError(
        f"unknown search space '{name}'{closest(name, known)}; choose one of {', '.join(list_spaces())}, "
        "or give your own as module:Class"
    )


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


def _entry_points() -> dict[str, str]:
    """Entry-point name -> ``module:Class`` of the spaces installed packages declare."""
    from importlib import metadata

    return {ep.name: ep.value for ep in metadata.entry_points(group=ENTRY_POINT_GROUP)}


def _load_reference(reference: str, what: str) -> type[SearchSpace]:
    """The ``SearchSpace`` subclass ``module:Class`` names, or a one-line error saying what is wrong."""
    import importlib

    module_name, _, attribute = reference.strip().partition(":")
    if not module_name or not attribute:
        raise BossNASError(f"space '{what}' is not of the form module:Class (e.g. mypkg.spaces:MySpace)")
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        if exc.name and module_name.startswith(exc.name):
            raise BossNASError(f"space '{what}': no module named '{exc.name}'; install it or put its folder on "
                               "PYTHONPATH") from None
        raise BossNASError(f"space '{what}': importing '{module_name}' failed ({exc}); run "
                           f"`python -c \"import {module_name}\"` to see where") from None
    except Exception as exc:  # the user's module is broken: say so in one line, and how to see the traceback
        raise BossNASError(f"space '{what}': importing '{module_name}' failed ({type(exc).__name__}: {exc}); run "
                           f"`python -c \"import {module_name}\"` to see where") from None
    cls: object = module
    for part in attribute.split("."):
        cls = getattr(cls, part, None)
        if cls is None:
            raise BossNASError(f"space '{what}': module '{module_name}' has no '{attribute}'")
    if not (isinstance(cls, type) and issubclass(cls, SearchSpace)):
        raise BossNASError(f"space '{what}': '{attribute}' is not a subclass of bossnas.spaces.SearchSpace")
    if not isinstance(getattr(cls, "name", None), str) or not cls.name:
        raise BossNASError(f"space '{what}': class '{attribute}' has no name (set `name = \"my-space\"` on it)")
    return cls


def _register_reference(key: str, cls: type[SearchSpace]) -> type[SearchSpace]:
    _SPACES[key] = cls
    return cls


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
    "ENTRY_POINT_GROUP",
    "register_space",
    "space_class",
]
