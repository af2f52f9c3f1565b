"""bossnas: block-wisely self-supervised neural architecture search (BossNAS, ICCV 2021).

The public API (the names the README and docs use)::

    bossnas.create_space(name, ...)       a search space          bossnas.list_spaces()
    bossnas.create_model(name, ...)       a standalone network    bossnas.list_models()
    bossnas.load_exported(folder)         a network `bossnas export` wrote
    bossnas.load_config(preset, [...])    a search config         bossnas.run_search(config, run_dir)
"""

from __future__ import annotations

import importlib
from typing import Any

from bossnas.errors import BossNASError

__version__ = "0.1.0"

#: public name -> module that defines it; imported on first use, so `import bossnas` (and the
#: CLI's start-up) stays light
_LAZY = {
    "create_model": "bossnas.models",
    "list_models": "bossnas.models",
    "load_exported": "bossnas.export",
    "load_config": "bossnas.config",
    "RunConfig": "bossnas.config",
    "RetrainConfig": "bossnas.config",
    "run_search": "bossnas.api",
    "SearchResult": "bossnas.api",
    "create_space": "bossnas.spaces",
    "list_spaces": "bossnas.spaces",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'bossnas' has no attribute '{name}'")


def __dir__() -> list[str]:
    return sorted(__all__)


__all__ = ["BossNASError", "__version__", *_LAZY]
