"""Device and mixed-precision choices."""

from __future__ import annotations

import contextlib
from collections.abc import Callable

import torch

from bossnas.errors import BossNASError


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise BossNASError(f"device '{name}' asked for but CUDA is not available; use device=cpu")
    return device


def autocast_factory(amp: str, device: torch.device) -> Callable[[], contextlib.AbstractContextManager]:
    """bf16 autocast on CUDA when ``amp`` is auto or bf16; nothing on CPU unless bf16 is asked for."""
    use = amp == "bf16" or (amp == "auto" and device.type == "cuda")
    if not use:
        return contextlib.nullcontext
    return lambda: torch.autocast(device_type=device.type, dtype=torch.bfloat16)
