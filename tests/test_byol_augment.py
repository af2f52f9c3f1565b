"""The BYOL two-view augmentation (issue 13 item 6): blur and solarisation with per-view
probabilities, colour jitter with hue, all in torch."""

import math

import pytest
import torch

import bossnas.data.augment as augment
from bossnas.config import RetrainConfig, build_config, load_config, search_augment_for
from bossnas.data.augment import (
    BYOLAugment,
    build_augment,
    byol_colour_jitter,
    gaussian_blur,
    solarize,
)
from bossnas.errors import BossNASError

MEAN, STD = (0.5, 0.5, 0.5), (0.25, 0.25, 0.25)


def _images(n: int, side: int = 8, channels: int = 3, seed: int = 0) -> torch.Tensor:
    return torch.randint(0, 256, (n, channels, side, side), dtype=torch.uint8, generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("kind, blur, sol", [("byol", (1.0, 0.1), (0.0, 0.2)), ("byol-bossnas", (0.1, 1.0), (0.0, 0.2))])
def test_each_view_gets_its_blur_and_solarize_probability(monkeypatch, kind, blur, sol):
    seen = {"blur": [], "solarize": []}

    def record(name, fn):
        def call(x, p, g, *args):
            seen[name].append(p)
            return fn(x, p, g, *args)
        return call

    monkeypatch.setattr(augment, "gaussian_blur", record("blur", gaussian_blur))
    monkeypatch.setattr(augment, "solarize", record("solarize", solarize))
    v1, v2 = build_augment(kind, MEAN, STD)(_images(4, 16), torch.Generator().manual_seed(0))
    assert seen == {"blur": list(blur), "solarize": list(sol)}
    for v in (v1, v2):
        assert v.shape == (4, 3, 16, 16) and v.dtype == torch.float32


@pytest.mark.parametrize("p", [0.1, 1.0])
def test_blur_hits_its_share_of_a_seeded_batch(p):
    n = 4000
    x = torch.rand(n, 3, 6, 6, generator=torch.Generator().manual_seed(1))
    y = gaussian_blur(x, p, torch.Generator().manual_seed(2))
    g = torch.Generator().manual_seed(2)  # the same draws: a sigma per image, then the coin
    sigma = torch.rand(n, generator=g) * 1.9 + 0.1
    blurred = torch.rand(n, generator=g) < p
    assert abs(blurred.float().mean().item() - p) < 4 * math.sqrt(p * (1 - p) / n) + 1e-9  # exact at p = 1
    assert torch.equal(y[~blurred], x[~blurred])
    visible = blurred & (sigma > 0.5)  # a sigma of 0.1 moves no pixel by more than float noise
    assert ((y - x).flatten(1).abs().amax(1)[visible] > 1e-3).all()


def test_solarize_hits_its_share_and_inverts_the_bright_pixels_only():
    n = 4000
    x = torch.rand(n, 3, 4, 4, generator=torch.Generator().manual_seed(3))
    y = solarize(x, 0.2, torch.Generator().manual_seed(4))
    changed = (y != x).flatten(1).any(1)
    assert abs(changed.float().mean().item() - 0.2) < 4 * math.sqrt(0.2 * 0.8 / n)
    assert solarize(x, 0.0, torch.Generator()).equal(x)
    every = solarize(x, 1.0, torch.Generator())
    bright = x >= 128 / 255
    torch.testing.assert_close(every[bright], 1 - x[bright])
    assert torch.equal(every[~bright], x[~bright])


def test_blur_of_an_impulse_is_the_drawn_gaussian():
    x = torch.zeros(1, 1, 15, 15)
    x[0, 0, 7, 7] = 1.0
    y = gaussian_blur(x, 1.0, torch.Generator().manual_seed(5))
    sigma = (torch.rand(1, generator=torch.Generator().manual_seed(5)) * 1.9 + 0.1).item()  # the same first draw
    taps = torch.arange(-6, 7, dtype=torch.float32)
    k = torch.exp(-taps**2 / (2 * sigma**2))
    k = k / k.sum()
    torch.testing.assert_close(y[0, 0, 1:14, 1:14], torch.outer(k, k))
    assert y.sum().item() == pytest.approx(1.0, abs=1e-5)
    flat = torch.full((2, 3, 9, 9), 0.3)
    torch.testing.assert_close(gaussian_blur(flat, 1.0, torch.Generator()), flat)  # a flat image stays flat


def test_colour_jitter_hue_and_off_switch():
    red = torch.zeros(1, 3, 2, 2)
    red[:, 0] = 1.0
    torch.testing.assert_close(augment._hue(red, torch.tensor([[1 / 3]])), torch.roll(red, 1, dims=1))  # red -> green
    x = torch.rand(16, 3, 5, 5, generator=torch.Generator().manual_seed(6))
    assert torch.equal(byol_colour_jitter(x, 0.4, 0.4, 0.2, 0.1, 0.0, torch.Generator()), x)
    # brightness alone: every image scaled by one factor in [0.6, 1.4] (then clipped to 1)
    y = byol_colour_jitter(x * 0.5, 0.4, 0.0, 0.0, 0.0, 1.0, torch.Generator().manual_seed(7))
    factors = (y / (x * 0.5)).flatten(1)
    assert torch.allclose(factors, factors[:, :1], atol=1e-5)
    assert 0.6 <= factors.min() and factors.max() <= 1.4 and factors.std() > 0.05
    grey = byol_colour_jitter(torch.rand(4, 1, 5, 5), 0.4, 0.4, 0.2, 0.1, 1.0, torch.Generator())  # no hue on grey
    assert grey.shape == (4, 1, 5, 5) and 0 <= grey.min() and grey.max() <= 1


def test_views_are_reproducible_differ_and_keep_grey_batches():
    aug = BYOLAugment(MEAN, STD)
    a = aug(_images(6, 12), torch.Generator().manual_seed(8))
    b = aug(_images(6, 12), torch.Generator().manual_seed(8))
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1]) and not torch.equal(a[0], a[1])
    g1, g2 = BYOLAugment((0.5,), (0.25,))(_images(3, 12, channels=1), torch.Generator())
    assert g1.shape == g2.shape == (3, 1, 12, 12) and g1.dtype == torch.float32


def test_config_accepts_byol_for_the_search_only_and_defaults_by_image_side():
    assert load_config(None, ["data.augment=byol"]).data.augment == "byol"
    with pytest.raises(BossNASError) as info:
        build_config(RetrainConfig, None, None, ["data.augment=byol"])
    assert "two-view search augmentations" in str(info.value) and "\n" not in str(info.value)
    assert (search_augment_for(224), search_augment_for(64), search_augment_for(63)) == ("byol-bossnas", "byol-bossnas", "small")
