import math

import pytest
import torch

from bossnas.ssl import (
    BYOLRegressionLoss,
    ChannelAdapter,
    PredictionHead,
    ProjectionHead,
    byol_regression_loss,
    cosine_momentum,
    ema_update_,
    ensemble_target,
    population_centre,
)


def test_byol_loss_hand_values():
    p = torch.tensor([[1.0, 0.0], [1.0, 0.0], [3.0, 4.0]])
    t = torch.tensor([[5.0, 0.0], [-1.0, 0.0], [4.0, 3.0]])
    per = byol_regression_loss(p, t, reduction="none")
    torch.testing.assert_close(per, torch.tensor([0.0, 4.0, 2 - 2 * 24 / 25]))
    assert byol_regression_loss(p, t).item() == pytest.approx((0 + 4 + 2 - 48 / 25) / 3)


def test_symmetric_loss_pairs_views_crosswise():
    loss = BYOLRegressionLoss()
    a, b = torch.tensor([[1.0, 0.0]]), torch.tensor([[0.0, 1.0]])
    # p1 aligned with t2 and p2 aligned with t1 -> zero
    assert loss(a, b, b, a).item() == pytest.approx(0.0)
    assert loss(a, b, a, b).item() == pytest.approx(4.0)


def test_ensemble_target_is_mean_of_normalised_projections():
    projections = torch.tensor([[[3.0, 4.0]], [[0.0, -2.0]], [[10.0, 0.0]]])
    expected = torch.tensor([[(0.6 + 0 + 1) / 3, (0.8 - 1 + 0) / 3]])
    torch.testing.assert_close(ensemble_target(projections), expected)
    torch.testing.assert_close(ensemble_target(list(projections)), expected)


def test_population_centre():
    total = torch.tensor([[2.0, 4.0]])
    torch.testing.assert_close(population_centre(total, 4), torch.tensor([[0.5, 1.0]]))
    with pytest.raises(ValueError):
        population_centre(total, 0)


def test_cosine_momentum_schedule():
    assert cosine_momentum(0, 100) == pytest.approx(0.99)
    assert cosine_momentum(50, 100) == pytest.approx(0.995)
    assert cosine_momentum(100, 100) == pytest.approx(1.0)
    assert cosine_momentum(25, 100, base=0.9) == pytest.approx(1 - 0.1 * (math.cos(math.pi / 4) + 1) / 2)
    values = [cosine_momentum(s, 10) for s in range(11)]
    assert values == sorted(values)


def test_ema_update_hand_values():
    target = [torch.tensor([1.0, 2.0]), torch.tensor([[0.0]])]
    online = [torch.tensor([3.0, 6.0]), torch.tensor([[10.0]])]
    ema_update_(target, online, 0.9)
    torch.testing.assert_close(target[0], torch.tensor([1.2, 2.4]))
    torch.testing.assert_close(target[1], torch.tensor([[1.0]]))
    torch.testing.assert_close(online[0], torch.tensor([3.0, 6.0]))
    with pytest.raises(ValueError):
        ema_update_(target, online[:1], 0.9)


def test_heads_shapes_and_pooling():
    proj = ProjectionHead(8, 32, 4)
    assert proj(torch.randn(5, 8, 3, 3)).shape == (5, 4)
    assert proj(torch.randn(5, 8)).shape == (5, 4)
    assert PredictionHead(4, 16, 4)(torch.randn(5, 4)).shape == (5, 4)
    layers = [type(m).__name__ for m in proj.layers]
    assert layers == ["Linear", "BatchNorm1d", "ReLU", "Linear"]


def test_channel_adapter():
    adapter = ChannelAdapter([8, 16, 24], 32)
    for w in (8, 16, 24):
        assert adapter(torch.randn(2, w, 4, 4)).shape == (2, 32, 4, 4)
    same = ChannelAdapter([16], 16)
    x = torch.randn(2, 16, 4, 4)
    assert same(x) is x and same.out_width == 16
