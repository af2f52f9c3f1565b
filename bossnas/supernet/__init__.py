"""The Siamese supernet: online and EMA-target copies of a space's supernet with per-block heads."""

from bossnas.supernet.siamese import BlockHeads, SiameseSupernet

__all__ = ["BlockHeads", "SiameseSupernet"]
