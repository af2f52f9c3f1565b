"""Data sets (as uint8 image tensors or lazily decoded folders) and two-view augmentation."""

from bossnas.data.augment import TwoViewAugment, build_augment
from bossnas.data.datasets import ImageSet, SplitData, TensorImageSet, load_data

__all__ = ["ImageSet", "SplitData", "TensorImageSet", "TwoViewAugment", "build_augment", "load_data"]
