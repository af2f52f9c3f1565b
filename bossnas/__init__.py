"""bossnas: block-wisely self-supervised neural architecture search (BossNAS, ICCV 2021)."""

from bossnas.errors import BossNASError

__version__ = "0.1.0"

__all__ = ["BossNASError", "__version__", "create_space", "list_spaces"]


def __getattr__(name: str):
    # the spaces (and torch) load on first use, not on `import bossnas`: the command line
    # imports this package before it can catch a Ctrl-C, so the package itself stays light
    if name in ("create_space", "list_spaces"):
        from bossnas import spaces

        return getattr(spaces, name)
    raise AttributeError(f"module 'bossnas' has no attribute '{name}'")
