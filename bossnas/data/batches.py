"""Epoch batch order that is a pure function of (seed, block, epoch): resumable mid-epoch."""

from __future__ import annotations

from collections.abc import Iterator

import torch
from torch.utils.data import DataLoader, Dataset

from bossnas.data.datasets import ImageSet
from bossnas.errors import BossNASError


def seeded_generator(*keys: int) -> torch.Generator:
    """A CPU generator whose seed mixes the integer keys (seed, block, epoch, step, ...)."""
    seed = 0x9E3779B97F4A7C15
    for k in keys:
        seed = (seed * 6364136223846793005 + int(k) + 1442695040888963407) % (1 << 63)
    return torch.Generator().manual_seed(seed)


def epoch_batches(n: int, batch_size: int, *keys: int, rank: int = 0, world: int = 1) -> list[torch.Tensor]:
    """Index batches of one epoch: a seeded shuffle cut into full batches (the last partial one dropped).

    With ``world`` > 1 ranks each global batch is split into equal contiguous shards and
    rank ``rank`` takes its shard, so the global batch is the same for any world size.
    """
    order = torch.randperm(n, generator=seeded_generator(*keys))
    batch_size = min(batch_size, n)
    count = n // batch_size
    batches = list(order[: count * batch_size].view(count, batch_size))
    if world > 1:
        per = batch_size // world
        batches = [b[rank * per : (rank + 1) * per] for b in batches]
    return batches


class _LoadFailed:
    """A worker's one-line error, passed back as a value: DataLoader would re-raise the
    exception with the worker's whole traceback in its message."""

    def __init__(self, message: str):
        self.message = message


class _BatchDataset(Dataset):
    def __init__(self, images: ImageSet, batches: list[torch.Tensor]):
        self.images, self.batches = images, batches

    def __len__(self) -> int:
        return len(self.batches)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor] | _LoadFailed:
        try:
            return self.images.load(self.batches[i])
        except BossNASError as exc:
            return _LoadFailed(str(exc))


def iterate(images: ImageSet, batches: list[torch.Tensor], workers: int = 0) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """Yield (uint8 images, labels) per index batch; image folders decode in worker processes."""
    if images.in_memory or workers == 0:
        for b in batches:
            yield images.load(b)
        return
    loader = DataLoader(_BatchDataset(images, batches), batch_size=None, num_workers=workers, persistent_workers=False)
    for item in loader:
        if isinstance(item, _LoadFailed):
            raise BossNASError(item.message)
        yield item
