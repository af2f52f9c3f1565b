"""Two-view augmentation on whole uint8 batches, driven by an explicit generator.

Working on batches (not one PIL image at a time) keeps a CPU busy with arithmetic instead
of Python, and an explicit ``torch.Generator`` makes every view reproducible from the
step's seed, which is what lets an interrupted run resume to the same result.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F


def _uniform(n: int, low: float, high: float, g: torch.Generator) -> torch.Tensor:
    return torch.rand(n, generator=g) * (high - low) + low


def pad_crop(x: torch.Tensor, pad: int, g: torch.Generator) -> torch.Tensor:
    """Zero-pad by ``pad`` and crop back at a random offset per image (the CIFAR recipe)."""
    if pad <= 0:
        return x
    b, _, h, w = x.shape
    padded = F.pad(x, (pad, pad, pad, pad))
    oy = torch.randint(0, 2 * pad + 1, (b,), generator=g).to(x.device)
    ox = torch.randint(0, 2 * pad + 1, (b,), generator=g).to(x.device)
    rows = (oy[:, None] + torch.arange(h, device=x.device))[:, :, None]
    cols = (ox[:, None] + torch.arange(w, device=x.device))[:, None, :]
    batch = torch.arange(b, device=x.device)[:, None, None]
    return padded.permute(0, 2, 3, 1)[batch, rows, cols].permute(0, 3, 1, 2)


def resized_crop(x: torch.Tensor, scale: tuple[float, float], g: torch.Generator,
                 ratio: tuple[float, float] = (3 / 4, 4 / 3)) -> torch.Tensor:
    """Random-resized crop (area fraction in ``scale``, aspect in ``ratio``), bilinear, per image."""
    b = x.shape[0]
    area = _uniform(b, *scale, g)
    log_r = _uniform(b, torch.log(torch.tensor(ratio[0])).item(), torch.log(torch.tensor(ratio[1])).item(), g)
    aspect = torch.exp(log_r)
    sw = torch.sqrt(area * aspect).clamp(max=1.0)
    sh = torch.sqrt(area / aspect).clamp(max=1.0)
    cx = (torch.rand(b, generator=g) * 2 - 1) * (1 - sw)
    cy = (torch.rand(b, generator=g) * 2 - 1) * (1 - sh)
    theta = torch.zeros(b, 2, 3)
    theta[:, 0, 0], theta[:, 0, 2] = sw, cx
    theta[:, 1, 1], theta[:, 1, 2] = sh, cy
    grid = F.affine_grid(theta.to(x.device, x.dtype), list(x.shape), align_corners=False)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="reflection", align_corners=False)


def hflip(x: torch.Tensor, p: float, g: torch.Generator) -> torch.Tensor:
    mask = (torch.rand(x.shape[0], generator=g) < p).to(x.device)
    return torch.where(mask[:, None, None, None], x.flip(-1), x)


def _grey(x: torch.Tensor) -> torch.Tensor:
    if x.shape[1] == 3:
        weights = torch.tensor([0.299, 0.587, 0.114], device=x.device, dtype=x.dtype)
        return (x * weights[None, :, None, None]).sum(1, keepdim=True)
    return x.mean(1, keepdim=True)


def colour_jitter(x: torch.Tensor, strength: float, p: float, g: torch.Generator) -> torch.Tensor:
    """Brightness, contrast and (for RGB) saturation factors in ``[1 - s, 1 + s]``, with probability p."""
    if strength <= 0 or p <= 0:
        return x
    b = x.shape[0]
    apply = (torch.rand(b, generator=g) < p).to(x.device)[:, None, None, None]
    bright = _uniform(b, 1 - strength, 1 + strength, g).to(x.device)[:, None, None, None]
    contrast = _uniform(b, 1 - strength, 1 + strength, g).to(x.device)[:, None, None, None]
    sat = _uniform(b, 1 - strength, 1 + strength, g).to(x.device)[:, None, None, None]
    y = x * bright
    mean = _grey(y).mean(dim=(2, 3), keepdim=True)
    y = (y - mean) * contrast + mean
    if x.shape[1] == 3:
        grey = _grey(y)
        y = (y - grey) * sat + grey
    return torch.where(apply, y.clamp(0, 1), x)


def random_grey(x: torch.Tensor, p: float, g: torch.Generator) -> torch.Tensor:
    if x.shape[1] != 3 or p <= 0:
        return x
    mask = (torch.rand(x.shape[0], generator=g) < p).to(x.device)[:, None, None, None]
    return torch.where(mask, _grey(x).expand_as(x), x)


@dataclass
class TwoViewAugment:
    """Produces two independently augmented, normalised float views of a uint8 batch.

    ``crop="pad"`` is the small-image recipe (pad by 1/8 of the side, random crop, flip);
    ``crop="resized"`` is BYOL's random-resized crop for larger images. Colour jitter and
    random greyscale apply to RGB data.
    """

    mean: tuple[float, ...]
    std: tuple[float, ...]
    crop: str = "pad"
    pad_fraction: float = 0.125
    crop_scale: tuple[float, float] = (0.2, 1.0)
    flip_p: float = 0.5
    jitter: float = 0.4
    jitter_p: float = 0.8
    grey_p: float = 0.2

    def view(self, images: torch.Tensor, g: torch.Generator) -> torch.Tensor:
        x = images.float().div_(255.0) if images.dtype == torch.uint8 else images.float()
        if self.crop == "pad":
            x = pad_crop(x, int(round(x.shape[-1] * self.pad_fraction)), g)
        else:
            x = resized_crop(x, self.crop_scale, g)
        x = hflip(x, self.flip_p, g)
        x = colour_jitter(x, self.jitter, self.jitter_p, g)
        x = random_grey(x, self.grey_p, g)
        return self.normalize(x)

    def normalize(self, x: torch.Tensor) -> torch.Tensor:
        mean = torch.tensor(self.mean, device=x.device, dtype=x.dtype)[None, :, None, None]
        std = torch.tensor(self.std, device=x.device, dtype=x.dtype)[None, :, None, None]
        return (x - mean) / std

    def __call__(self, images: torch.Tensor, g: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        return self.view(images, g), self.view(images, g)


def build_augment(kind: str | None, mean: tuple[float, ...], std: tuple[float, ...]) -> TwoViewAugment:
    """The search's two-view augmentation for a ``data.augment`` value (None: small); the
    values are the retraining's too (``bossnas.config.AUGMENTS``)."""
    if kind in (None, "small"):
        # the official NATS search pipeline: random crop with padding and a flip, nothing else
        return TwoViewAugment(mean, std, crop="pad", jitter=0.0, grey_p=0.0)
    if kind == "small-noflip":
        # digits: a flipped digit is another glyph
        return TwoViewAugment(mean, std, crop="pad", flip_p=0.0, jitter=0.0, grey_p=0.0)
    if kind == "none":
        return TwoViewAugment(mean, std, crop="pad", pad_fraction=0.0, flip_p=0.0, jitter=0.0, grey_p=0.0)
    if kind == "imagenet":
        return TwoViewAugment(mean, std, crop="resized", crop_scale=(0.2, 1.0))
    raise ValueError(kind)
