"""Issue 19: the later blocks train as the official code trains them.

Earlier blocks keep learning through the online network (``train.prefix=online``), the
target's channel adapters stay fixed (``model.target_adapter=fixed``), LARS excludes what the
official config excludes (``train.lars_exclude=official``), the heads start as the official
ones do (``model.head_init=official``), and the prefix's BatchNorm statistics are re-estimated
before a rating; the earlier behaviour stays reachable, and old runs resume with it.
"""

import copy

import pytest
import torch
from conftest import TINY
from torch import nn

from bossnas.config import RunConfig, build_config, load_config
from bossnas.spaces import create_space
from bossnas.supernet import SiameseSupernet
from bossnas.train.optim import LARS, build_optimizer
from bossnas.train.runner import BlockwiseSearch
from bossnas.train.step import bossnas_step, prediction_spread

BEST = [(24, 40)]
PATHS = [(8, 8), (16, 32), (64, 24)]


@pytest.fixture
def model():
    torch.manual_seed(0)
    space = create_space("nats-sss", in_channels=1, image_size=8)
    return SiameseSupernet(space, hidden_dim=16, proj_dim=8).train()


def _views(pairs: int, seed: int = 1):
    g = torch.Generator().manual_seed(seed)
    v1 = [torch.randn(6, 1, 8, 8, generator=g) for _ in range(pairs)]
    v2 = [torch.randn(6, 1, 8, 8, generator=g) for _ in range(pairs)]
    return v1, v2


def _grads(m: nn.Module) -> dict[str, torch.Tensor]:
    return {n: p.grad.clone() for n, p in m.named_parameters() if p.grad is not None}


@pytest.mark.parametrize("pairs", [1, 2])
def test_shared_online_prefix_gives_the_gradients_of_the_k_times_prefix(model, pairs):
    """One online prefix pass per view, its output a leaf summing the K paths' gradients, then
    one backward through it: the same gradients as recomputing the prefix for every path."""
    # in float64, so that only the order of the sums differs: what is left is rounding
    v1, v2 = ([v.double() for v in vs] for vs in _views(pairs))
    runs = []
    for share in (True, False):
        m = copy.deepcopy(model).double()
        loss = bossnas_step(m, 1, PATHS, v1, v2, BEST, share_prefix=share, prefix="online")
        runs.append((loss, _grads(m)))
    (loss_a, grads_a), (loss_b, grads_b) = runs
    torch.testing.assert_close(loss_a, loss_b, rtol=0, atol=1e-12)
    assert grads_a.keys() == grads_b.keys()
    block0 = {f"online.{n}" for n, _ in model.online.named_parameters()} & {
        f"online.{n}" for n, p in model.online.named_parameters() if any(p is q for q in model.online.block_module(0).parameters())}
    assert block0 & grads_a.keys()  # the earlier block got gradients in both versions
    for name in grads_a:
        torch.testing.assert_close(grads_a[name], grads_b[name], rtol=1e-10, atol=1e-12, msg=name)


def test_online_prefix_trains_the_earlier_block_and_frozen_does_not(model):
    v1, v2 = _views(1)
    seen = {}
    for mode in ("online", "frozen"):
        m = copy.deepcopy(model)
        if mode == "frozen":
            m.online.block_module(0).eval()
            m.target.block_module(0).eval()
        bossnas_step(m, 1, PATHS, v1[0], v2[0], BEST, prefix=mode)
        seen[mode] = [p.grad for p in m.online.block_module(0).parameters()]
    assert any(g is not None and g.abs().sum() > 0 for g in seen["online"])
    assert all(g is None for g in seen["frozen"])


def test_online_prefix_uses_per_view_batch_statistics(model):
    """The online prefix runs each view as its own BatchNorm batch (the official forward):
    doubling one view's images changes the other view's prefix output only if they were batched."""
    v1, v2 = _views(1)
    m = copy.deepcopy(model)
    calls = []
    original = m.online_prefix

    def record(x, best):
        calls.append(x.shape[0])
        return original(x, best)

    m.online_prefix = record
    bossnas_step(m, 1, PATHS, v1, v2, BEST, prefix="online")
    assert calls == [6, 6]  # once per view, not once per path, not both views in one batch


def test_prediction_spread_is_zero_for_one_vector_and_positive_otherwise():
    assert float(prediction_spread(torch.ones(5, 4) * 3)) == pytest.approx(0.0, abs=1e-7)
    two = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    # both unit vectors are sqrt(2)/2 from their mean
    assert float(prediction_spread(two)) == pytest.approx(2 ** 0.5 / 2)


def test_step_reports_the_mean_prediction_spread_over_paths_and_views(model):
    v1, v2 = _views(1)
    stats = {}
    bossnas_step(copy.deepcopy(model), 0, PATHS, v1[0], v2[0], stats=stats)
    m = copy.deepcopy(model)
    with torch.no_grad():
        expected = sum((prediction_spread(m.predict(v1[0], 0, p)) + prediction_spread(m.predict(v2[0], 0, p))) / 2
                       for p in PATHS) / len(PATHS)
    assert stats["prediction_spread"] == pytest.approx(float(expected), rel=1e-5)


def test_fixed_target_adapter_is_left_out_of_the_ema_and_kept_by_sync(model):
    torch.manual_seed(3)
    space = create_space("nats-sss", in_channels=1, image_size=8)
    fixed = SiameseSupernet(space, hidden_dim=16, proj_dim=8, target_adapter="fixed")
    ema = SiameseSupernet(space, hidden_dim=16, proj_dim=8, target_adapter="ema")
    adapter_params = {id(p) for p in fixed.target_heads[0][0].parameters()}
    assert adapter_params
    target, _ = fixed.ema_pairs(0)
    assert not adapter_params & {id(p) for p in target}
    target_ema, _ = ema.ema_pairs(0)
    assert {id(p) for p in ema.target_heads[0][0].parameters()} <= {id(p) for p in target_ema}
    # sync copies the online adapter into the target in both modes
    with torch.no_grad():
        for p in fixed.online_heads[0].adapter.parameters():
            p.add_(1.0)
    fixed.sync_target(0)
    for t, o in zip(fixed.target_heads[0][0].parameters(), fixed.online_heads[0].adapter.parameters()):
        assert torch.equal(t, o)


def test_learning_prefix_is_in_the_optimizer_and_the_ema(model):
    own = {id(p) for p in model.trainable_parameters(1)}
    with_prefix = {id(p) for p in model.trainable_parameters(1, prefix_learns=True)}
    block0 = {id(p) for p in model.online.block_module(0).parameters()}
    assert not own & block0 and block0 <= with_prefix
    target, online = model.ema_pairs(1, prefix_learns=True)
    assert block0 <= {id(p) for p in online}
    assert {id(p) for p in model.target.block_module(0).parameters()} <= {id(p) for p in target}
    assert not {id(p) for p in model.target.block_module(0).parameters()} & {id(p) for p in model.ema_pairs(1)[0]}


def test_official_lars_exclusions_are_biases_and_head_batchnorms_only(model):
    params = model.trainable_parameters(1, prefix_learns=True)
    excluded = {id(p) for p in model.official_lars_excluded(params)}
    names = {id(p): n for n, p in model.named_parameters()}
    head_bn = [m for m in model.online_heads[1].projector.modules() if isinstance(m, nn.BatchNorm1d)]
    assert head_bn and all(id(p) in excluded for m in head_bn for p in m.parameters())
    backbone_bn_weights = [p for m in model.online.block_module(0).modules() if isinstance(m, nn.BatchNorm2d)
                           for n, p in m.named_parameters() if n == "weight"]
    adapter_bn = [m for m in model.online_heads[1].adapter.modules() if isinstance(m, nn.BatchNorm2d)]
    assert backbone_bn_weights and adapter_bn
    assert not any(id(p) in excluded for p in backbone_bn_weights)
    assert not any(id(m.weight) in excluded for m in adapter_bn)
    assert all(id(m.bias) in excluded for m in adapter_bn)
    assert all(names[i].endswith("bias") or "projector" in names[i] or "predictor" in names[i] for i in excluded)


def test_lars_groups_adapt_a_1d_tensor_that_is_not_excluded():
    def stepped(exclude: bool | None) -> torch.Tensor:
        p = nn.Parameter(torch.ones(4))
        p.grad = torch.full((4,), 0.5)
        excluded = None if exclude is None else ([p] if exclude else [])
        opt = build_optimizer("lars", [p], lr=0.1, momentum=0.9, weight_decay=0.0, lars_excluded=excluded)
        assert isinstance(opt, LARS)
        opt.step()
        return p.detach()

    # excluded: a plain step, lr * grad
    torch.testing.assert_close(stepped(True), torch.full((4,), 1.0 - 0.1 * 0.5))
    # adapted: trust 0.001 * ||w|| / ||g|| = 0.001 * 2 / 1 scales the step
    torch.testing.assert_close(stepped(False), torch.full((4,), 1.0 - 0.1 * 0.002 * 0.5))
    # norms mode (no exclusion list): the old one-group optimizer, every 1-D tensor unadapted
    torch.testing.assert_close(stepped(None), torch.full((4,), 1.0 - 0.1 * 0.5))


def test_official_head_init_kaiming_neck_small_predictor_zero_biases():
    torch.manual_seed(0)
    space = create_space("nats-sss", in_channels=1, image_size=8)
    model = SiameseSupernet(space, hidden_dim=512, proj_dim=256, head_init="official")
    heads = model.online_heads[0]
    first = heads.projector.layers[0]
    assert first.weight.std().item() == pytest.approx((2 / first.in_features) ** 0.5, rel=0.1)
    last = heads.projector.layers[-1]
    assert torch.count_nonzero(last.bias) == 0
    pred = heads.predictor.layers[0]
    assert pred.weight.std().item() == pytest.approx(0.01, rel=0.1)
    assert torch.count_nonzero(heads.predictor.layers[-1].bias) == 0
    # the target's copy starts equal
    for t, o in zip(model.target_heads[0][1].parameters(), heads.projector.parameters()):
        assert torch.equal(t, o)
    torch_init = SiameseSupernet(space, hidden_dim=512, proj_dim=256, head_init="torch")
    assert torch.count_nonzero(torch_init.online_heads[0].projector.layers[-1].bias) > 0


def test_defaults_are_the_official_ones_and_old_saved_configs_keep_their_behaviour():
    config = RunConfig()
    assert (config.train.prefix, config.model.target_adapter, config.train.lars_exclude, config.model.head_init) == (
        "online", "fixed", "official", "official")
    old = RunConfig().to_dict()
    for section, key in (("train", "prefix"), ("model", "target_adapter"), ("train", "lars_exclude"),
                         ("model", "head_init"), ("train", "augment_pairs")):
        old[section].pop(key)
    old["space"] = "hytra"
    restored = RunConfig.from_dict(old)
    assert (restored.train.prefix, restored.model.target_adapter, restored.train.lars_exclude,
            restored.model.head_init, restored.train.augment_pairs) == ("frozen", "ema", "norms", "torch", 1)
    # the fingerprint of an old run equals that of the same config written with the old values
    explicit = build_config(RunConfig, (old, "x"), saved=True)
    assert explicit.fingerprint() == restored.fingerprint()
    assert RunConfig.from_dict(RunConfig().to_dict()).fingerprint() == RunConfig().fingerprint()
    assert RunConfig().fingerprint() != restored.fingerprint()


@pytest.mark.parametrize("key, bad", [("train.prefix", "on"), ("model.target_adapter", "frozen"),
                                       ("train.lars_exclude", "all"), ("model.head_init", "xavier")])
def test_new_keys_refuse_unknown_values_in_one_line(key, bad):
    from bossnas.errors import BossNASError

    with pytest.raises(BossNASError, match=f"'{key}'.*expected"):
        load_config("quickstart", [f"{key}={bad}"])


def test_rating_reestimates_the_learning_prefix_statistics(tmp_path):
    """Before block 1 is rated the target's block 0 statistics are re-estimated along its best
    path (they went stale while it kept learning); a frozen prefix keeps the ones it was rated with."""
    out = {}
    for mode in ("online", "frozen"):
        config = load_config("quickstart", TINY + ["train.epochs=1", "train.paths_per_step=2", f"train.prefix={mode}"])
        search = BlockwiseSearch.open(config, tmp_path / mode, show_progress=False)
        search.run(stop_after_block=1)
        search.train_block(1)
        norms = [m for m in search.model.target.block_module(0).modules() if isinstance(m, nn.BatchNorm2d)]
        before = [m.running_mean.clone() for m in norms]
        search.rating_inputs(1)
        after = [m.running_mean for m in norms]
        out[mode] = any(not torch.equal(a, b) for a, b in zip(before, after))
        search.folder.unlock()
    assert out == {"online": True, "frozen": False}
