import itertools

import pytest
import torch
from conftest import standalone_and_supernet_features

from bossnas.errors import BossNASError
from bossnas.search.costs import arch_cost
from bossnas.spaces import create_space, list_spaces
from bossnas.spaces.nats_sss import WIDTHS


@pytest.fixture(scope="module")
def space():
    return create_space("nats-sss")


def test_registry_lists_nats_and_rejects_unknown():
    assert "nats-sss" in list_spaces()
    with pytest.raises(BossNASError, match="unknown search space 'nats-ss'.*did you mean 'nats-sss'"):
        create_space("nats-ss")


def test_block_path_counts(space):
    assert [len(space.block_paths(b.index)) for b in space.blocks] == [64, 64, 8]
    assert space.num_architectures() == 8**5
    assert [b.layers for b in space.blocks] == [(0, 1), (2, 3), (4,)]
    expected = set(itertools.product(WIDTHS, WIDTHS))
    assert set(space.block_paths(0)) == expected


@pytest.mark.parametrize("seed", range(5))
def test_fair_sampling_uses_each_width_once_per_layer(space, seed):
    g = torch.Generator().manual_seed(seed)
    for block in range(3):
        paths = space.sample_paths(block, 8, "fair", g)
        assert len(paths) == 8
        for layer in range(len(space.blocks[block].layers)):
            assert sorted(p[layer] for p in paths) == list(WIDTHS)


def test_fair_sampling_differs_between_steps(space):
    g = torch.Generator().manual_seed(0)
    draws = {tuple(space.sample_paths(0, 8, "fair", g)) for _ in range(5)}
    assert len(draws) == 5


def test_uniform_sampling_gives_distinct_allowed_paths(space):
    g = torch.Generator().manual_seed(1)
    paths = space.sample_paths(0, 10, "uniform", g)
    assert len(set(paths)) == 10
    assert all(p in space.block_paths(0) for p in paths)


def test_sampling_rejects_too_many_paths(space):
    g = torch.Generator().manual_seed(0)
    with pytest.raises(BossNASError, match="1..8"):
        space.sample_paths(0, 9, "fair", g)
    with pytest.raises(BossNASError, match="unknown sampling"):
        space.sample_paths(0, 2, "greedy", g)


def test_arch_string_round_trip(space):
    arch = space.parse_arch("64:40:48:64:56")
    assert arch == ((64, 40), (48, 64), (56,))
    assert space.format_arch(arch) == "64:40:48:64:56"
    assert space.parse_arch(" 8:8:8:8:8 ") == ((8, 8), (8, 8), (8,))


@pytest.mark.parametrize(
    "text, message",
    [
        ("64:40:48", "expected 5 choices"),
        ("64:40:48:64:56:8", "expected 5 choices"),
        ("64:40:48:64:57", "'57' is not a width of layer 5"),
        ("64:40:x:64:56", "'x' is not a width of layer 3"),
        ("", "empty architecture"),
    ],
)
def test_malformed_arch_strings(space, text, message):
    with pytest.raises(BossNASError, match=message):
        space.parse_arch(text)


@pytest.mark.parametrize("arch", ["64:40:48:64:56", "8:64:16:8:40", "24:24:56:32:8", "64:64:64:64:64"])
@pytest.mark.parametrize("mode", ["train", "eval"])
def test_standalone_matches_supernet_path(arch, mode):
    torch.manual_seed(0)
    space = create_space("nats-sss", in_channels=3, image_size=16, num_classes=7)
    supernet = space.build_supernet()
    parsed = space.parse_arch(arch)
    x = torch.randn(6, 3, 16, 16)
    # give the per-width BatchNorms non-trivial running statistics first
    supernet.train()
    with torch.no_grad():
        for _ in range(3):
            h = x * 2 + 0.5
            for b, path in enumerate(parsed):
                h = supernet.forward_block(h, b, path)
    fresh, out, h = standalone_and_supernet_features(space, supernet, parsed, x, mode)
    assert out.shape == h.shape
    torch.testing.assert_close(out, h, rtol=1e-5, atol=1e-5)
    assert fresh(x).shape == (6, 7)


def test_supernet_outputs_differ_between_widths():
    torch.manual_seed(0)
    space = create_space("nats-sss", image_size=8)
    supernet = space.build_supernet().eval()
    x = torch.randn(2, 3, 8, 8)
    a = supernet.forward_block(x, 0, (16, 16))
    b = supernet.forward_block(x, 0, (16, 24))
    assert a.shape[1] == 16 and b.shape[1] == 24


def test_flops_match_hand_count_for_smallest_arch(space):
    c = 8
    conv = lambda cin, cout, k, hw: 2 * cin * cout * k * k * hw * hw  # noqa: E731
    expected = (
        conv(3, c, 3, 32)
        + 5 * conv(c, c, 3, 32)
        + 2 * conv(c, c, 3, 16) + conv(c, c, 1, 16)
        + 5 * conv(c, c, 3, 16)
        + 2 * conv(c, c, 3, 8) + conv(c, c, 1, 8)
        + 5 * conv(c, c, 3, 8)
        + 2 * c * 10
    )
    cost = arch_cost(space, space.parse_arch("8:8:8:8:8"))
    assert cost.flops == expected
    model = space.build_standalone(space.parse_arch("8:8:8:8:8"))
    assert cost.params == sum(p.numel() for p in model.parameters())


def test_skip_becomes_projection_when_widths_differ(space):
    model = space.build_standalone(space.parse_arch("8:16:32:64:40"))
    cell = model.blocks[1][0]
    assert isinstance(cell.skip_3_0, torch.nn.Sequential)
    # NATS-Bench's stride-1 factorised reduce: ReLU before the 1x1 conv, then BN
    assert [type(m) for m in cell.skip_3_0] == [torch.nn.ReLU, torch.nn.Conv2d, torch.nn.BatchNorm2d]
    x = torch.randn(2, 16, 4, 4)
    cell.eval()
    conv, bn = cell.skip_3_0[1], cell.skip_3_0[2]
    assert torch.allclose(cell.skip_3_0(x), bn(conv(x.clamp(min=0))))
    assert not torch.allclose(cell.skip_3_0(x), bn(conv(x)))
    same = space.build_standalone(space.parse_arch("8:16:16:64:64"))
    assert isinstance(same.blocks[1][0].skip_3_0, torch.nn.Identity)
    assert isinstance(same.blocks[2][0].skip_3_0, torch.nn.Identity)
