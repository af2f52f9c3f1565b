"""What a search config costs, counted before it runs (``bossnas presets``).

Counts, not times: a step's duration depends on the device, the counts do not. The
training images of a data set are its nominal size (the data is not read), reduced by
``data.train_images``; the runner drops each epoch's last partial batch and micro-batches
that do not fill an optimizer step, and so do these counts.
"""

from __future__ import annotations

from dataclasses import dataclass

from bossnas.config import RunConfig
from bossnas.spaces import space_class
from bossnas.train.runner import default_k  # the runner's own rule for K

#: training images of each data set as the search splits it (digits: 80% of the 1,797 kept
#: for training; imagefolder: ImageNet-1k's train split, what the ImageNet presets point at)
NOMINAL_TRAIN_IMAGES = {"digits": 1438, "cifar10": 50_000, "cifar100": 50_000, "imagefolder": 1_281_167}


@dataclass(frozen=True)
class SearchCost:
    blocks: int
    #: training images per epoch (nominal, after data.train_images)
    images: int
    epochs: int
    #: optimizer steps over all blocks
    steps: int
    #: forward + backward of one online path on one image pair, over all blocks
    #: (K paths x images x epochs, summed over blocks; each also costs the target's forwards)
    path_passes: int
    #: forwards of one path on one rating image pair, over all blocks (every path of each block)
    rating_passes: int

    def summary(self) -> str:
        return (f"{self.blocks} blocks x {self.epochs} epochs x {_count(self.images)} images: {_count(self.steps)} "
                f"optimizer steps, {_count(self.path_passes)} path passes (train), {_count(self.rating_passes)} (rating)")


def _count(n: float) -> str:
    for unit, suffix in ((1e12, "T"), (1e9, "G"), (1e6, "M"), (1e3, "k")):
        if n >= unit:
            return f"{n / unit:.3g}{suffix}"
    return str(int(n))


#: input channels of each data set (an image folder: RGB, as ImageNet)
NOMINAL_CHANNELS = {"digits": 1, "cifar10": 3, "cifar100": 3, "imagefolder": 3}
#: the side a data set's images have (digits and image folders: decided by the space / the files)
NOMINAL_SIDE = {"cifar10": 32, "cifar100": 32}


def nominal_input(config: RunConfig) -> tuple[int, int | None]:
    """(channels, side) a search with ``config`` runs at, without reading the data (side None:
    an image folder's own size, unknown before its files are read)."""
    side = config.data.image_size or NOMINAL_SIDE.get(config.data.name)
    if side is None and config.data.name == "digits":
        side = space_class(config.space).default_image_size
    return NOMINAL_CHANNELS[config.data.name], side


def search_cost(config: RunConfig) -> SearchCost:
    """The counts of a search with ``config`` on its data set's nominal training split."""
    cls = space_class(config.space)
    space = cls(in_channels=3, image_size=config.data.image_size, num_classes=10, **config.model.space_options)
    images = NOMINAL_TRAIN_IMAGES[config.data.name]
    if config.data.train_images is not None:
        images = min(images, config.data.train_images)
    t = config.train
    steps_per_epoch = images // t.batch_size // t.accumulate
    used = steps_per_epoch * t.accumulate * t.batch_size  # images that reach an optimizer step
    sampling = t.sampling or space.default_sampling
    steps = path_passes = rating = 0
    for spec in space.blocks:
        k = t.paths_per_step or default_k(space, spec.index, sampling)
        steps += steps_per_epoch * t.epochs
        path_passes += k * used * t.epochs
        # where a block's paths follow the previous block's choice, count its longest list
        rating += max(space.path_counts(spec.index).values()) * config.search.rate_images
    return SearchCost(len(space.blocks), images, t.epochs, steps, path_passes, rating)

