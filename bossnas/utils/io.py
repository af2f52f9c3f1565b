"""Atomic file writes and checkpoint loading with one-line errors."""

from __future__ import annotations

import hashlib
import io
import json
import os
import tempfile
from pathlib import Path
from typing import Any

import torch

from bossnas.errors import BossNASError

CHECKPOINT_FORMAT = "bossnas-checkpoint-v1"
#: a checkpoint file is this marker, the SHA-256 of the rest, then torch.save's bytes: a
#: flipped bit inside tensor data unpickles without complaint, and a cut that keeps the
#: zip directory loads; the digest catches both
CHECKSUM_MARKER = b"bossnas-sha256\n"
_HEADER = len(CHECKSUM_MARKER) + 32


def current_umask() -> int:
    """The process's umask (read from /proc where it is there: setting it to read it races threads)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    """Write to a temporary file in the same folder, fsync, then rename over ``path``.

    A crash at any moment leaves either the old file or the new one, never half of one. The
    file gets the mode any other new file would (0666 less the umask), not mkstemp's 0600.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        os.fchmod(fd, 0o666 & ~current_umask())
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
        dir_fd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    atomic_write_bytes(path, text.encode())


def atomic_write_json(path: str | os.PathLike, obj: Any) -> None:
    """Write ``obj`` as strict JSON: a NaN or infinity (which ``json`` would write as the
    invalid tokens ``NaN`` / ``Infinity``) raises ValueError before the file is touched."""
    atomic_write_text(path, json.dumps(obj, indent=2, allow_nan=False) + "\n")


def existing_path(text: str | os.PathLike) -> Path | None:
    """``text`` as an existing file or folder, else None, never an error.

    Architecture strings and model names are probed as paths too: an empty string (which
    pathlib reads as '.'), a name longer than the file system allows (OSError 36) or one
    holding a NUL byte is simply not a path.
    """
    if not str(text).strip():
        return None
    try:
        path = Path(text).expanduser()
        return path if path.exists() else None
    except (OSError, ValueError):
        return None


def save_checkpoint(path: str | os.PathLike, state: dict) -> None:
    buffer = io.BytesIO()
    torch.save({"format": CHECKPOINT_FORMAT, **state}, buffer)
    payload = buffer.getvalue()
    atomic_write_bytes(path, CHECKSUM_MARKER + hashlib.sha256(payload).digest() + payload)


def load_checkpoint(path: str | os.PathLike, map_location: str | torch.device = "cpu") -> dict:
    """Load a checkpoint written by :func:`save_checkpoint`; a damaged file is a one-line error.

    The SHA-256 in the header is checked; a file without the header (written before it
    existed) is only as safe as unpickling it.
    """
    path = Path(path)
    if not path.is_file():
        raise BossNASError(f"checkpoint '{path}' not found")
    damaged = f"checkpoint '{path}' is corrupt or truncated ({{}}); delete it or restore a copy"
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise BossNASError(f"cannot read checkpoint '{path}': {exc.strerror or exc}") from None
    if data.startswith(CHECKSUM_MARKER):
        digest, data = data[len(CHECKSUM_MARKER):_HEADER], data[_HEADER:]
        if hashlib.sha256(data).digest() != digest:
            raise BossNASError(damaged.format("checksum mismatch"))
    try:
        state = torch.load(io.BytesIO(data), map_location=map_location, weights_only=False)
    except Exception as exc:  # noqa: BLE001 - a damaged pickle raises almost anything (fuzzed: AssertionError too)
        raise BossNASError(damaged.format(type(exc).__name__)) from None
    if not isinstance(state, dict) or state.get("format") != CHECKPOINT_FORMAT:
        raise BossNASError(f"'{path}' is not a bossnas checkpoint")
    return state
