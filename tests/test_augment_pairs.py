"""Multi-augmentation ensemble (issue 13 item 2): P augmentation pairs per batch, path i of
the K sampled paths uses pair i mod P in the target and in the online network."""

import contextlib
import copy
import hashlib
import json

import pytest
import torch
import torch.nn.functional as F
from conftest import TINY

from bossnas.config import RunConfig, load_config, resolve_run_config
from bossnas.data.batches import seeded_generator
from bossnas.errors import BossNASError
from bossnas.spaces import create_space
from bossnas.ssl.losses import byol_regression_loss
from bossnas.ssl.targets import ensemble_target
from bossnas.supernet import SiameseSupernet
from bossnas.train.runner import BlockwiseSearch
from bossnas.train.step import bossnas_step, target_projections

PATHS = [(8, 16), (24, 8), (64, 64), (16, 16), (40, 56), (8, 8)]


@pytest.fixture
def model():
    torch.manual_seed(0)
    space = create_space("nats-sss", in_channels=1, image_size=8)
    return SiameseSupernet(space, hidden_dim=16, proj_dim=8)


def _pairs(n: int, seed: int = 0) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(4, 1, 8, 8, generator=g) for _ in range(n)], [torch.randn(4, 1, 8, 8, generator=g) for _ in range(n)]


def test_each_path_sees_its_own_pair_in_target_and_online(model, monkeypatch):
    """6 paths over 4 tagged pairs: paths 0-3 use pairs 0-3, paths 4 and 5 use pairs 0 and 1."""
    v1, v2 = _pairs(4)
    tags = {("v1", j): v for j, v in enumerate(v1)} | {("v2", j): v for j, v in enumerate(v2)}
    seen: list[tuple[str, tuple, tuple]] = []

    def tag_of(x: torch.Tensor) -> tuple:
        found = [t for t, v in tags.items() if v.shape == x.shape and torch.equal(v, x)]
        assert len(found) == 1
        return found[0]

    def recorder(kind: str, fn):
        def call(features, block, path):
            seen.append((kind, path, tag_of(features)))
            return fn(features, block, path)
        return call

    monkeypatch.setattr(model, "project_target", recorder("target", model.project_target))
    monkeypatch.setattr(model, "predict", recorder("online", model.predict))
    model.train()
    bossnas_step(model, 0, PATHS, v1, v2)
    for kind in ("target", "online"):
        for i, path in enumerate(PATHS):
            views = sorted(tag for k, p, tag in seen if k == kind and p == path)
            assert views == [("v1", i % 4), ("v2", i % 4)], (kind, i)
    assert len(seen) == 4 * len(PATHS)  # each path: 2 target and 2 online forwards, no more


@pytest.mark.parametrize("ensemble", [True, False])
def test_multi_pair_loss_matches_hand_computation(model, ensemble):
    """The target of the ensemble: mean over the K paths of path i's normalised projection of
    pair i mod P; every online path regresses onto it (or onto its own, without ensemble)."""
    v1, v2 = _pairs(2, seed=1)
    paths = PATHS[:3]
    model.train()
    state = copy.deepcopy(model.state_dict())
    loss = bossnas_step(model, 0, paths, v1, v2, ensemble=ensemble)
    model.load_state_dict(state)
    with torch.no_grad():
        t1 = torch.stack([F.normalize(model.project_target(v1[i % 2], 0, p), dim=-1) for i, p in enumerate(paths)])
        t2 = torch.stack([F.normalize(model.project_target(v2[i % 2], 0, p), dim=-1) for i, p in enumerate(paths)])
    losses = []
    for i, p in enumerate(paths):
        a, b = (t1.mean(0), t2.mean(0)) if ensemble else (t1[i], t2[i])
        q1, q2 = model.predict(v1[i % 2], 0, p), model.predict(v2[i % 2], 0, p)
        losses.append(byol_regression_loss(q1, b) + byol_regression_loss(q2, a))
    torch.testing.assert_close(loss, torch.stack(losses).mean().detach(), rtol=1e-5, atol=1e-6)
    # and it is not the one-pair loss: the second pair really enters
    model.load_state_dict(state)
    assert not torch.isclose(loss, bossnas_step(model, 0, paths, v1[0], v2[0], ensemble=ensemble))


def _previous_step(model, block, paths, view_1, view_2, best_paths=()):
    """The single-pair step as it was before augmentation pairs (commit 3927718), ensemble on."""
    autocast = contextlib.nullcontext
    with torch.no_grad(), autocast():
        if best_paths:
            feat_1, feat_2 = model.forward_prefix(torch.cat([view_1, view_2]), list(best_paths)).chunk(2)
        else:
            feat_1, feat_2 = view_1, view_2
    mean_1 = ensemble_target(target_projections(model, feat_1, block, paths, autocast))
    mean_2 = ensemble_target(target_projections(model, feat_2, block, paths, autocast))
    total = torch.zeros(())
    for path in paths:
        pred_1 = model.predict(feat_1, block, path).float()
        pred_2 = model.predict(feat_2, block, path).float()
        loss = byol_regression_loss(pred_1, mean_2) + byol_regression_loss(pred_2, mean_1)
        loss.backward()
        total += loss.detach()
    return total / len(paths)


@pytest.mark.parametrize("block, best", [(0, ()), (1, ((24, 40),))])
def test_one_pair_is_the_previous_step_bit_exactly(model, block, best):
    (v1,), (v2,) = _pairs(1, seed=2)
    paths = [(8, 8), (16, 32), (64, 24)]
    runs = []
    for form in ("previous", "tensor", "list"):
        m = copy.deepcopy(model).train()
        m.target.block_module(0).eval()
        if form == "previous":
            loss = _previous_step(m, block, paths, v1, v2, best)
        else:
            loss = bossnas_step(m, block, paths, *((v1, v2) if form == "tensor" else ([v1], [v2])), best_paths=best,
                                prefix="frozen")
        runs.append((loss, {n: p.grad for n, p in m.named_parameters() if p.grad is not None}, m.state_dict()))
    ref_loss, ref_grads, ref_state = runs[0]
    assert ref_grads
    for loss, grads, state in runs[1:]:
        assert torch.equal(loss, ref_loss)
        assert grads.keys() == ref_grads.keys() and all(torch.equal(grads[n], ref_grads[n]) for n in grads)
        assert all(torch.equal(state[n], ref_state[n]) for n in state)  # BN statistics too


def test_default_pairs_follow_the_official_configs():
    pairs = {space: resolve_run_config(load_config(None, [f"space={space}"])).train.augment_pairs
             for space in ("hytra", "mbconv", "nats-sss", "nasbench-macro")}
    assert pairs == {"hytra": 4, "mbconv": 4, "nats-sss": 1, "nasbench-macro": 1}
    assert resolve_run_config(load_config(None, ["space=hytra", "train.augment_pairs=2"])).train.augment_pairs == 2
    with pytest.raises(BossNASError, match=r"'train.augment_pairs': 0 is out of range; expected an integer >= 1"):
        load_config(None, ["train.augment_pairs=0"])


def test_fingerprint_holds_pairs_and_keeps_one_pair_runs_resumable():
    # a run written before the key existed (and before search.rate_split: rated on the test split)
    one = resolve_run_config(load_config(None, ["space=nats-sss", "search.rate_split=test"]))
    # its training view had no augment_pairs
    before = one.to_dict()
    del before["train"]["augment_pairs"]
    for key in RunConfig.UNTRAINED:
        *parents, last = key.split(".")
        section = before
        for part in parents:
            section = section[part]
        section.pop(last)
    assert one.fingerprint() == hashlib.sha256(json.dumps(before, sort_keys=True).encode()).hexdigest()[:16]
    four = copy.deepcopy(one)
    four.train.augment_pairs = 4
    assert four.fingerprint() != one.fingerprint()
    assert four.training_view()["train"]["augment_pairs"] == 4


def test_run_records_resolved_pairs_draws_them_and_refuses_other_on_resume(tmp_path):
    config = load_config("quickstart", TINY + ["space=mbconv", "model.space_options.width_mult=0.125",
                                               "data.image_size=16"])
    assert config.train.augment_pairs is None
    search = BlockwiseSearch.open(config, tmp_path / "r", show_progress=False)
    assert search.config.train.augment_pairs == 4
    assert "augment_pairs: 4" in (tmp_path / "r" / "config.yaml").read_text()
    # pair j comes from the same generator stream whatever the count: one pair is the old draw
    images, _ = search.data.train.load(torch.arange(8))
    one_1, one_2 = search._views(images, 1, seeded_generator(0, 1, 2, 3))
    four_1, four_2 = search._views(images, 4, seeded_generator(0, 1, 2, 3))
    old_1, old_2 = search.augment(images, seeded_generator(0, 1, 2, 3))
    assert len(four_1) == len(four_2) == 4
    assert torch.equal(one_1[0], old_1) and torch.equal(one_2[0], old_2)
    assert torch.equal(four_1[0], old_1) and torch.equal(four_2[0], old_2)
    assert not torch.equal(four_1[1], four_1[0])
    other = load_config("quickstart", TINY + ["space=mbconv", "model.space_options.width_mult=0.125",
                                              "data.image_size=16", "train.augment_pairs=1"])
    with pytest.raises(BossNASError, match="different config .*train.augment_pairs"):
        BlockwiseSearch.open(other, tmp_path / "r", resume=True)
    resumed = BlockwiseSearch.open(config, tmp_path / "r", resume=True, show_progress=False)
    assert resumed.config.train.augment_pairs == 4


@pytest.mark.parametrize("pairs, k, expected", [("3", 8, 3), ("none", 8, 1), ("12", 8, 8)])
def test_runner_hands_each_step_min_of_k_and_p_pairs(tmp_path, monkeypatch, pairs, k, expected):
    import bossnas.train.runner as runner

    config = load_config("quickstart", TINY + [f"train.augment_pairs={pairs}", "train.epochs=1"])
    search = BlockwiseSearch.open(config, tmp_path / "r", show_progress=False)
    seen = []

    def record(model, block, paths, view_1, view_2, *args, stats=None, **kwargs):
        seen.append((len(paths), len(view_1), len(view_2)))
        stats["prediction_spread"] = 0.0
        return torch.zeros(())

    monkeypatch.setattr(runner, "bossnas_step", record)
    search.train_block(0)
    assert seen and all(s == (k, expected, expected) for s in seen)
