"""bossnas: block-wisely self-supervised neural architecture search (BossNAS, ICCV 2021)."""

from bossnas.errors import BossNASError
from bossnas.spaces import create_space, list_spaces

__version__ = "0.1.0"

__all__ = ["BossNASError", "__version__", "create_space", "list_spaces"]
