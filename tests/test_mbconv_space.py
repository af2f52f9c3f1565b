import itertools
import random

import pytest
import torch
from conftest import standalone_and_supernet_features, tiny_search

from bossnas.errors import BossNASError
from bossnas.search.costs import arch_cost
from bossnas.spaces import create_space, list_spaces

SMALL = dict(image_size=32, width_mult=0.25, num_classes=5)
NAMES = ("e3k3", "e3k5", "e6k3", "e6k5")
#: (out channels, first stride, layers) of the five blocks, from the paper / DNA
STAGES = ((24, 2, 2), (40, 2, 4), (80, 2, 4), (112, 1, 4), (192, 2, 4))



@pytest.fixture(scope="module")
def space():
    return create_space("mbconv", **SMALL)


def test_registered_and_fair(space):
    assert "mbconv" in list_spaces()
    assert space.default_sampling == "fair"
    assert all(space.layer_choices(layer) == NAMES for layer in range(18))
    assert all(space.is_product_block(b.index) for b in space.blocks)
    assert space.boundary_key(2, space.block_paths(2)[7]) is None


def test_block_paths_match_independent_enumeration(space):
    counts = [len(space.block_paths(b.index)) for b in space.blocks]
    assert counts == [16, 256, 256, 256, 256]
    for spec, (_, _, layers) in zip(space.blocks, STAGES):
        assert len(spec.layers) == layers
        assert set(space.block_paths(spec.index)) == set(itertools.product(NAMES, repeat=layers))
    assert space.num_architectures() == 16 * 256**4


def test_fair_sampling_uses_each_candidate_once_per_layer(space):
    g = torch.Generator().manual_seed(0)
    paths = space.sample_paths(1, 4, "fair", g)
    for layer in range(4):
        assert sorted(p[layer] for p in paths) == sorted(NAMES)


def test_every_path_of_every_block_runs(space):
    """Each of the 1,040 block paths runs through the supernet; standalone blocks are built
    for a fair draw of every block (each candidate of each layer once: the layers of a block
    are built independently, so this builds every module any path uses)."""
    torch.manual_seed(0)
    supernet = space.build_supernet().eval()
    x = torch.randn(1, 3, 32, 32)
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for spec in space.blocks:
            out = None
            for path in space.block_paths(spec.index):
                out = supernet.forward_block(x, spec.index, path)
                assert out.shape[:2] == (1, space.out_channels(spec.index, path))
            for path in space.sample_paths(spec.index, 4, "fair", g):
                assert space.build_block(spec.index, path, None).eval()(x).shape == out.shape
            x = out


def test_layer_table_at_224_and_32():
    s = create_space("mbconv")
    arch = s.parse_arch(":".join(["e6k5"] * 18))
    rows = s.describe_layers(arch)
    assert [r["resolution"] for r in rows] == [56, 56] + [28] * 4 + [14] * 4 + [14] * 4 + [7] * 4
    assert [r["channels"] for r in rows] == [24, 24] + [40] * 4 + [80] * 4 + [112] * 4 + [192] * 4
    assert [r["layer"] for r in rows if r["downsample"]] == [1, 3, 7, 15]
    assert rows[0]["op"] == "MBConv e6 k5" and rows[0]["block"] == 0
    small = create_space("mbconv", image_size=32).describe_layers(arch)
    assert [r["resolution"] for r in small][::4] == [16, 8, 4, 4, 2]


def test_madds_in_the_range_of_the_mobile_space():
    s = create_space("mbconv", num_classes=1000)
    smallest = arch_cost(s, s.parse_arch(":".join(["e3k3"] * 18)))
    largest = arch_cost(s, s.parse_arch(":".join(["e6k5"] * 18)))
    # EfficientNet-B0 (e6 k3/k5 mix, 390M MAdds, 5.3M params) lies between the extremes
    assert 200e6 < smallest.macs < 390e6 < largest.macs < 600e6
    assert smallest.params < 5.3e6 < largest.params


def sample_archs(space, n, seed=0):
    rng = random.Random(seed)
    return [tuple(rng.choice(space.block_paths(b.index)) for b in space.blocks) for _ in range(n)]


@pytest.mark.parametrize("mode", ["train", "eval"])
def test_standalone_matches_supernet_path(space, mode):
    supernet = space.build_supernet()
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for m in supernet.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.weight.copy_(torch.rand(m.num_features, generator=g) + 0.5)
                m.running_mean.copy_(torch.randn(m.num_features, generator=g) * 0.1)
                m.running_var.copy_(torch.rand(m.num_features, generator=g) + 0.5)
    x = torch.randn(4, 3, 32, 32)
    for arch in sample_archs(space, 4):
        fresh, out, h = standalone_and_supernet_features(space, supernet, arch, x, mode)
        torch.testing.assert_close(out, h, rtol=1e-4, atol=1e-4)
        assert fresh(x).shape == (4, 5)


def test_arch_string_round_trip(space):
    text = "e3k3:e6k5:" + ":".join(NAMES * 4)
    arch = space.parse_arch(text)
    assert [len(p) for p in arch] == [2, 4, 4, 4, 4]
    assert space.format_arch(arch) == text


@pytest.mark.parametrize(
    "text, message",
    [
        ("", "empty architecture"),
        ("e3k3:e3k3", "expected 18 choices"),
        ("e3k7:" + ":".join(["e3k3"] * 17), "'e3k7' is not a candidate of layer 1 of 'mbconv'; choose one of e3k3, e3k5, e6k3, e6k5"),
        (":".join(["e3k3"] * 17) + ":E6K5", "'E6K5' is not a candidate of layer 18"),
    ],
)
def test_malformed_arch_strings(space, text, message):
    with pytest.raises(BossNASError) as info:
        space.parse_arch(text)
    assert message in str(info.value) and "\n" not in str(info.value)


def test_bad_options_are_one_line_errors():
    with pytest.raises(BossNASError, match="width_mult must be a number"):
        create_space("mbconv", width_mult="wide")
    with pytest.raises(BossNASError, match="stem must be one of"):
        create_space("mbconv", stem="tiny")
    with pytest.raises(BossNASError, match="shortcut must be one of official, none, got 'avg'"):
        create_space("mbconv", shortcut="avg")


#: (c_in, c_out) of the layers that change width at width_mult 1: the first layer of each
#: block and the fixed 320-channel layer of the head (from STAGES and the 16-channel stem)
WIDENING = ((16, 24), (24, 40), (40, 80), (80, 112), (112, 192), (192, 320))


def test_official_shortcuts_add_exactly_their_conv_and_bn_params():
    official = create_space("mbconv", image_size=32, num_classes=5)
    none = create_space("mbconv", image_size=32, num_classes=5, shortcut="none")
    assert official.shortcut == "official"  # the default
    per_layer = [c_in * c_out + 2 * c_out for c_in, c_out in WIDENING]  # 1x1 conv + BN scale and shift
    assert sum(per_layer) == 97_984
    for arch in sample_archs(official, 3):
        counts = [sum(p.numel() for p in s.build_standalone(arch).parameters()) for s in (official, none)]
        assert counts[0] - counts[1] == 97_984
    # the supernet holds one shortcut per searchable layer, shared by its four candidates
    sizes = [sum(p.numel() for p in s.build_supernet().parameters()) for s in (official, none)]
    assert sizes[0] - sizes[1] == sum(per_layer[:-1]) == 35_904


def test_shortcut_shapes_and_residual_at_odd_sides():
    s = create_space("mbconv", image_size=33, num_classes=5, width_mult=0.25)
    supernet = s.build_supernet().eval()
    x = supernet.stem(torch.randn(2, 3, 33, 33))
    for layer, (_, c_in, c_out, stride, side) in enumerate(s.layer_specs):
        candidates = supernet.layers[layer]
        shortcuts = {id(m.shortcut) for m in candidates.values()}
        if stride == 1 and c_in == c_out:
            assert shortcuts == {id(None)}
        else:
            assert len(shortcuts) == 1  # shared
            y = candidates["e3k5"].shortcut(x)
            assert y.shape == (2, c_out, side, side)
            with torch.no_grad():
                # a dead projection leaves exactly the shortcut: the residual is really added
                bn = candidates["e3k5"].project[1]
                bn.weight.zero_()
                bn.bias.zero_()
                torch.testing.assert_close(candidates["e3k5"](x), y)
            if c_in == c_out:  # width_mult 0.25 keeps 8 channels over the first stride: pool only
                torch.testing.assert_close(y, torch.nn.functional.avg_pool2d(x, 2, 2, ceil_mode=True))
        x = candidates["e6k3"](x)
    assert x.shape[-1] == 3  # 33 -> 17 -> 9 -> 5 -> 5 -> 3 (stride-1 stem below 128 px)


@pytest.mark.parametrize("size", [32, 45, 96, 128])
def test_sizes_have_no_shape_mismatch(size):
    s = create_space("mbconv", image_size=size, width_mult=0.25, num_classes=3)
    model = s.build_standalone(sample_archs(s, 1, seed=size)[0]).eval()
    with torch.no_grad():
        assert model(torch.randn(1, 3, size, size)).shape == (1, 3)


#: the smallest search that trains and rates all 1,040 block paths; BN recalibration is
#: off to keep it near a minute on 2 busy cores (the hytra end-to-end test covers it)
TINY_SEARCH = [
    "data.name=digits", "data.image_size=32", "data.train_images=32", "train.batch_size=8",
    "model.hidden_dim=16", "model.proj_dim=8", "search.rate_images=4", "search.bn_recalibration=false",
    "model.space_options.width_mult=0.125",
]


@pytest.mark.slow
def test_tiny_search_end_to_end(tmp_path):
    record, tables = tiny_search(tmp_path / "run", "mbconv", TINY_SEARCH)
    assert record["space"] == "mbconv" and record["input"] == [1, 32, 32]  # grey digits
    s = create_space("mbconv", in_channels=1, image_size=32, num_classes=10, width_mult=0.125)
    arch = s.parse_arch(record["arch"])
    assert [len(t) for t in tables] == [16, 256, 256, 256, 256]
    assert [s.format_path(p) for p in arch] == [min(t, key=lambda row: row[1])[0] for t in tables]
    assert record["params"] == sum(p.numel() for p in s.build_standalone(arch).parameters())
