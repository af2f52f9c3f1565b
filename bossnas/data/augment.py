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
                 ratio: tuple[float, float] = (3 / 4, 4 / 3), mode: str = "bilinear") -> torch.Tensor:
    """Random-resized crop (area fraction in ``scale``, aspect in ``ratio``), per image;
    ``mode`` bilinear or bicubic (bicubic can overshoot: the caller clamps)."""
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
    return F.grid_sample(x, grid, mode=mode, padding_mode="reflection", align_corners=False)


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


# ----------------------------------------------------------------------------- BYOL
#: largest Gaussian-blur sigma of BYOL (pixels); the kernel reaches 3 sigma, as OpenCV's
#: automatic kernel size for 8-bit images (the official pipeline blurs with cv2)
BLUR_SIGMA = (0.1, 2.0)
BLUR_RADIUS = 6
#: PIL's solarize threshold (128 of 255) on [0, 1] images
SOLARIZE_THRESHOLD = 128 / 255


def _rgb_to_hsv(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Hue in [0, 1), saturation, value of an RGB batch ``[B, 3, H, W]`` in [0, 1]."""
    r, g, b = x.unbind(1)
    high, low = x.max(1).values, x.min(1).values
    delta = high - low
    safe = torch.where(delta > 0, delta, torch.ones_like(delta))
    hue = torch.where(high == r, (g - b) / safe, torch.where(high == g, 2 + (b - r) / safe, 4 + (r - g) / safe))
    hue = torch.where(delta > 0, (hue / 6) % 1.0, torch.zeros_like(hue))
    sat = torch.where(high > 0, delta / torch.where(high > 0, high, torch.ones_like(high)), torch.zeros_like(high))
    return hue, sat, high


def _hsv_to_rgb(hue: torch.Tensor, sat: torch.Tensor, value: torch.Tensor) -> torch.Tensor:
    h6 = hue * 6
    sector = h6.floor()
    f = h6 - sector
    sector = sector.long() % 6
    p, q, t = value * (1 - sat), value * (1 - sat * f), value * (1 - sat * (1 - f))
    # (r, g, b) per sector of the hue circle
    table = torch.stack([torch.stack(c, 0) for c in ((value, t, p), (q, value, p), (p, value, t),
                                                     (p, q, value), (t, p, value), (value, p, q))], 0)
    return table.gather(0, sector[None, None].expand(1, 3, *sector.shape)).squeeze(0).permute(1, 0, 2, 3)


def _brightness(x: torch.Tensor, f: torch.Tensor) -> torch.Tensor:
    return (x * f).clamp(0, 1)


def _contrast(x: torch.Tensor, f: torch.Tensor) -> torch.Tensor:
    mean = _grey(x).mean(dim=(2, 3), keepdim=True)
    return ((x - mean) * f + mean).clamp(0, 1)


def _saturation(x: torch.Tensor, f: torch.Tensor) -> torch.Tensor:
    grey = _grey(x)
    return ((x - grey) * f + grey).clamp(0, 1)


def _hue(x: torch.Tensor, shift: torch.Tensor) -> torch.Tensor:
    hue, sat, value = _rgb_to_hsv(x)
    return _hsv_to_rgb((hue + shift[:, 0]) % 1.0, sat, value)


def byol_colour_jitter(x: torch.Tensor, brightness: float, contrast: float, saturation: float, hue: float,
                       p: float, g: torch.Generator) -> torch.Tensor:
    """torchvision's ColorJitter, per image, with probability p: brightness, contrast and
    saturation factors in ``[1 - s, 1 + s]``, a hue shift in ``[-hue, hue]`` (of the colour
    circle), applied in a random order drawn per image. Saturation and hue need RGB."""
    b = x.shape[0]
    apply = torch.rand(b, generator=g) < p
    factors = [_uniform(b, 1 - brightness, 1 + brightness, g), _uniform(b, 1 - contrast, 1 + contrast, g),
               _uniform(b, 1 - saturation, 1 + saturation, g), _uniform(b, -hue, hue, g)]
    order = torch.argsort(torch.rand(b, 4, generator=g), dim=1)  # a random permutation per image
    ops = [_brightness, _contrast] + ([_saturation, _hue] if x.shape[1] == 3 else [])
    y = x.clone()
    for slot in range(4):
        for k, op in enumerate(ops):
            chosen = torch.nonzero(apply & (order[:, slot] == k)).squeeze(1)
            if chosen.numel():
                idx = chosen.to(x.device)
                y[idx] = op(y[idx], factors[k][chosen].to(x.device, x.dtype)[:, None, None, None])
    return y


def gaussian_blur(x: torch.Tensor, p: float, g: torch.Generator, sigma: tuple[float, float] = BLUR_SIGMA,
                  radius: int = BLUR_RADIUS) -> torch.Tensor:
    """Blur each image with probability p by a Gaussian of sigma uniform in ``sigma`` (pixels),
    separable, reflect padding; the sigma is drawn for every image (so the draws after it do
    not depend on p)."""
    b, c, h, w = x.shape
    sigmas = _uniform(b, *sigma, g)
    apply = torch.rand(b, generator=g) < p
    radius = min(radius, h - 1, w - 1)
    chosen = torch.nonzero(apply).squeeze(1)
    if radius < 1 or chosen.numel() == 0:
        return x
    taps = torch.arange(-radius, radius + 1, dtype=torch.float32)
    kernel = torch.exp(-(taps[None] ** 2) / (2 * sigmas[chosen, None] ** 2))
    kernel = (kernel / kernel.sum(1, keepdim=True)).to(x.device, x.dtype).repeat_interleave(c, 0)  # [n*C, K]
    idx = chosen.to(x.device)
    sub = x[idx].reshape(1, -1, h, w)
    groups = sub.shape[1]
    sub = F.conv2d(F.pad(sub, (radius, radius, 0, 0), mode="reflect"), kernel[:, None, None, :], groups=groups)
    sub = F.conv2d(F.pad(sub, (0, 0, radius, radius), mode="reflect"), kernel[:, None, :, None], groups=groups)
    out = x.clone()
    out[idx] = sub.reshape(-1, c, h, w)
    return out


def solarize(x: torch.Tensor, p: float, g: torch.Generator, threshold: float = SOLARIZE_THRESHOLD) -> torch.Tensor:
    """With probability p per image, invert the pixels at or above ``threshold`` (PIL's solarize)."""
    mask = (torch.rand(x.shape[0], generator=g) < p).to(x.device)[:, None, None, None]
    return torch.where(mask & (x >= threshold), 1 - x, x)


@dataclass
class BYOLAugment:
    """BYOL's two asymmetric views (Grill et al., 2020, appendix B), on uint8 batches in torch:
    random-resized crop (area 0.08-1, bicubic), flip, colour jitter 0.4 / 0.4 / 0.2 / 0.1 with
    p 0.8, greyscale p 0.2, then a Gaussian blur and a solarisation whose probabilities differ
    per view: ``blur_p[i]`` / ``solarize_p[i]`` for view i.

    >>> aug = BYOLAugment((0.5,) * 3, (0.25,) * 3)
    >>> v1, v2 = aug(torch.zeros(2, 3, 32, 32, dtype=torch.uint8), torch.Generator().manual_seed(0))
    >>> v1.shape, v1.dtype
    (torch.Size([2, 3, 32, 32]), torch.float32)
    """

    mean: tuple[float, ...]
    std: tuple[float, ...]
    #: BYOL's T and T': blur always on the first view, rarely on the second
    blur_p: tuple[float, float] = (1.0, 0.1)
    #: solarisation only on the second view
    solarize_p: tuple[float, float] = (0.0, 0.2)
    crop_scale: tuple[float, float] = (0.08, 1.0)
    flip_p: float = 0.5
    #: brightness, contrast, saturation, hue
    jitter: tuple[float, float, float, float] = (0.4, 0.4, 0.2, 0.1)
    jitter_p: float = 0.8
    grey_p: float = 0.2

    def view(self, images: torch.Tensor, g: torch.Generator, index: int = 0) -> torch.Tensor:
        """View ``index`` (0 or 1) of a batch; a single view (BN recalibration) is view 0."""
        x = images.float().div_(255.0) if images.dtype == torch.uint8 else images.float()
        x = resized_crop(x, self.crop_scale, g, mode="bicubic").clamp_(0, 1)
        x = hflip(x, self.flip_p, g)
        x = byol_colour_jitter(x, *self.jitter, self.jitter_p, g)
        x = random_grey(x, self.grey_p, g)
        x = gaussian_blur(x, self.blur_p[index], g)
        x = solarize(x, self.solarize_p[index], g)
        return normalize(x, self.mean, self.std)

    def __call__(self, images: torch.Tensor, g: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        return self.view(images, g, 0), self.view(images, g, 1)


def normalize(x: torch.Tensor, mean: tuple[float, ...], std: tuple[float, ...]) -> torch.Tensor:
    m = torch.tensor(mean, device=x.device, dtype=x.dtype)[None, :, None, None]
    s = torch.tensor(std, device=x.device, dtype=x.dtype)[None, :, None, None]
    return (x - m) / s


def build_augment(kind: str | None, mean: tuple[float, ...], std: tuple[float, ...]) -> TwoViewAugment | BYOLAugment:
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
    if kind == "byol":
        return BYOLAugment(mean, std)
    if kind == "byol-bossnas":
        # the official BossNAS search configs: their first pipeline blurs with p 0.1 and
        # never solarises, the second blurs always and solarises with p 0.2
        return BYOLAugment(mean, std, blur_p=(0.1, 1.0), solarize_p=(0.0, 0.2))
    raise ValueError(kind)
