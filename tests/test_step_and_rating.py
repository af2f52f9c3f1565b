import pytest
import torch
import torch.nn.functional as F

from bossnas.search.rating import rate_block, recalibrate_bn
from bossnas.spaces import create_space
from bossnas.ssl.losses import byol_regression_loss
from bossnas.supernet import SiameseSupernet
from bossnas.train.step import bossnas_step


@pytest.fixture
def model():
    torch.manual_seed(0)
    space = create_space("nats-sss", in_channels=1, image_size=8)
    return SiameseSupernet(space, hidden_dim=16, proj_dim=8)


def _manual_loss(model, block, paths, v1, v2, ensemble):
    with torch.no_grad():
        t1 = torch.stack([F.normalize(model.project_target(v1, block, p), dim=-1) for p in paths])
        t2 = torch.stack([F.normalize(model.project_target(v2, block, p), dim=-1) for p in paths])
    losses = []
    for i, p in enumerate(paths):
        a, b = (t1.mean(0), t2.mean(0)) if ensemble else (t1[i], t2[i])
        q1, q2 = model.predict(v1, block, p), model.predict(v2, block, p)
        losses.append(byol_regression_loss(q1, b) + byol_regression_loss(q2, a))
    return torch.stack(losses).mean()


@pytest.mark.parametrize("ensemble", [True, False])
def test_step_loss_matches_hand_computation(model, ensemble):
    v1, v2 = torch.randn(6, 1, 8, 8), torch.randn(6, 1, 8, 8)
    paths = [(8, 16), (24, 8), (64, 64)]
    model.train()
    state = {k: v.clone() for k, v in model.state_dict().items()}
    loss = bossnas_step(model, 0, paths, v1, v2, ensemble=ensemble)
    model.load_state_dict(state)  # undo the BN statistics updates before recomputing
    model.zero_grad()
    expected = _manual_loss(model, 0, paths, v1, v2, ensemble)
    torch.testing.assert_close(loss, expected.detach(), rtol=1e-5, atol=1e-6)


def test_ensemble_differs_from_plain_byol_with_several_paths(model):
    v1, v2 = torch.randn(6, 1, 8, 8), torch.randn(6, 1, 8, 8)
    paths = [(8, 16), (24, 8), (64, 64)]
    model.eval()  # fixed statistics so both calls see the same network
    a = bossnas_step(model, 0, paths, v1, v2, ensemble=True)
    b = bossnas_step(model, 0, paths, v1, v2, ensemble=False)
    assert not torch.isclose(a, b)
    single = [(8, 16)]
    assert torch.isclose(bossnas_step(model, 0, single, v1, v2, ensemble=True),
                         bossnas_step(model, 0, single, v1, v2, ensemble=False))


def test_step_gradients_reach_only_the_block_and_sum_over_paths(model):
    v1, v2 = torch.randn(6, 1, 8, 8), torch.randn(6, 1, 8, 8)
    model.train()
    model.zero_grad()
    bossnas_step(model, 0, [(8, 16), (16, 8)], v1, v2)
    trainable = {id(p) for p in model.trainable_parameters(0)}
    for name, p in model.named_parameters():
        if id(p) not in trainable:
            assert p.grad is None, name
    assert all(p.grad is None for p in model.target.parameters())
    conv = model.online.layers[0].conv_1_0.conv.weight.grad
    assert conv is not None
    # widths 8 and 16 were used: channels beyond 16 of the shared conv got no gradient
    assert conv[16:].abs().sum() == 0 and conv[:16, :16].abs().sum() > 0


def test_step_with_frozen_prefix_uses_target_blocks(model):
    v1, v2 = torch.randn(4, 1, 8, 8), torch.randn(4, 1, 8, 8)
    model.train()
    model.target.block_module(0).eval()
    loss = bossnas_step(model, 1, [(8, 8), (16, 32)], v1, v2, best_paths=[(24, 40)], prefix="frozen")
    assert torch.isfinite(loss)
    assert model.online.layers[0].conv_1_0.conv.weight.grad is None
    assert model.online.layers[2].conv_1_0.conv.weight.grad is not None


def test_recalibration_gives_exact_batch_statistics():
    bn = torch.nn.BatchNorm2d(3)
    bn.running_mean.fill_(7.0)
    batches = [torch.randn(4, 3, 2, 2) + i for i in range(3)]
    recalibrate_bn([bn], bn, batches)
    expected = torch.stack([b.mean(dim=(0, 2, 3)) for b in batches]).mean(0)
    torch.testing.assert_close(bn.running_mean, expected)
    assert not bn.training and bn.momentum == 0.1


def test_rating_is_loss_against_population_centre(model):
    torch.manual_seed(1)
    paths = [(8, 16), (24, 8), (64, 64)]
    recal = [torch.randn(8, 1, 8, 8)]
    v1, v2 = torch.randn(5, 1, 8, 8), torch.randn(5, 1, 8, 8)
    ratings = rate_block(model, 0, paths, recal, (v1, v2), batch_size=4, bn_recalibration=False)
    model.eval()
    with torch.no_grad():
        t = [torch.stack([model.project_target(v, 0, p) for v in (v1, v2)]) for p in paths]
        centre = torch.stack(t).mean(0)
        for p, r in zip(paths, ratings):
            q1, q2 = model.predict(v1, 0, p), model.predict(v2, 0, p)
            expected = byol_regression_loss(q1, centre[1]) + byol_regression_loss(q2, centre[0])
            assert r == pytest.approx(expected.item(), rel=1e-5)
    assert len(set(round(r, 6) for r in ratings)) == 3


def test_rating_with_recalibration_is_deterministic_and_order_free(model):
    paths = [(8, 16), (24, 8), (64, 64)]
    recal = [torch.randn(8, 1, 8, 8), torch.randn(8, 1, 8, 8)]
    views = (torch.randn(5, 1, 8, 8), torch.randn(5, 1, 8, 8))
    a = rate_block(model, 0, paths, recal, views, batch_size=8)
    b = rate_block(model, 0, paths[::-1], recal, views, batch_size=8)[::-1]
    assert a == pytest.approx(b, rel=1e-5)


def test_rating_with_recalibration_matches_per_path_hand_computation(model):
    """Each path's BN statistics come from the recalibration batches alone, whatever other
    paths did before it (checked against a fresh copy per path reset with the torch API)."""
    import copy

    torch.manual_seed(2)
    paths = [(8, 16), (24, 8), (64, 64), (8, 16)]
    recal = [torch.randn(8, 1, 8, 8) + 1.0, torch.randn(8, 1, 8, 8)]
    v1, v2 = torch.randn(5, 1, 8, 8), torch.randn(5, 1, 8, 8)
    fresh = copy.deepcopy(model)
    ratings = rate_block(model, 0, paths, recal, (v1, v2), batch_size=4)
    targets, predictions = [], []
    for p in paths:
        m = copy.deepcopy(fresh)
        m.train()
        for bn in m.modules():
            if isinstance(bn, torch.nn.modules.batchnorm._BatchNorm):
                bn.reset_running_stats()
                bn.momentum = None
        with torch.no_grad():
            for x in recal:
                m.predict(x, 0, p)
                m.project_target(x, 0, p)
            m.eval()
            targets.append(torch.stack([m.project_target(v, 0, p) for v in (v1, v2)]))
            predictions.append([m.predict(v, 0, p) for v in (v1, v2)])
    centre = torch.stack(targets).mean(0)
    for (q1, q2), r in zip(predictions, ratings):
        expected = byol_regression_loss(q1, centre[1]) + byol_regression_loss(q2, centre[0])
        assert r == pytest.approx(expected.item(), rel=1e-4)
    assert ratings[0] == pytest.approx(ratings[3], rel=1e-6)
