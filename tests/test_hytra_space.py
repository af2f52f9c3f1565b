import itertools
import random

import pytest
import torch
from conftest import standalone_and_supernet_features, tiny_search

from bossnas.errors import BossNASError
from bossnas.spaces import create_space, list_spaces
from bossnas.spaces.hytra import BOSSNET_T0_ARCH

#: tiny settings that run every path on a CPU: 32x32 inputs, 1/16 of the widths
SMALL = dict(image_size=32, width_mult=0.0625, num_classes=5)
#: the static per-block rule, and the supernet in the standalone network's form (shortcuts,
#: attention), so that supernet weights load into ``build_standalone`` key for key; the
#: official rule and the official search form: tests/test_hytra_official.py
STATIC = dict(paths="static", search_shortcut="standalone")
SIDES = (56, 28, 14, 7)


@pytest.fixture(scope="module")
def space():
    return create_space("hytra", **SMALL, **STATIC)


def expected_block_paths(block: int) -> set[tuple[str, ...]]:
    """The fabric rules, enumerated independently of the space's own code.

    Levels 0..3 (56, 28, 14, 7): a layer keeps the previous level or goes one coarser;
    block 0 starts anywhere and ends at level <= 2; block 1 starts at level >= 2;
    blocks 2 and 3 stay at level 3. ResAtt only at levels 2 and 3.
    """
    start_min, end_max = {0: (0, 2), 1: (2, 3), 2: (3, 3), 3: (3, 3)}[block]
    out = set()
    for levels in itertools.product(range(4), repeat=4):
        if levels[0] < start_min or levels[-1] > end_max:
            continue
        if any(b - a not in (0, 1) for a, b in zip(levels, levels[1:])):
            continue
        ops = [("ResConv", "ResAtt") if lv >= 2 else ("ResConv",) for lv in levels]
        for names in itertools.product(*ops):
            out.add(tuple(f"{n}@{SIDES[lv]}" for n, lv in zip(names, levels)))
    return out


def as_text(space, path):
    return tuple(space.format_choice(c) for c in path)


def randomize_(module: torch.nn.Module, seed: int = 0) -> None:
    """Non-trivial weights and BN statistics (the ops zero-init their last BN scale)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * 0.3)
        for m in module.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.copy_(torch.randn(m.num_features, generator=g) * 0.1)
                m.running_var.copy_(torch.rand(m.num_features, generator=g) + 0.5)


def test_registered_with_six_choices(space):
    assert "hytra" in list_spaces()
    names = [space.format_choice(c) for c in space.layer_choices(0)]
    assert sorted(names) == sorted(["ResAtt@7", "ResConv@7", "ResAtt@14", "ResConv@14", "ResConv@28", "ResConv@56"])
    assert space.default_sampling == "uniform"


def test_block_paths_match_independent_enumeration(space):
    counts = []
    for spec in space.blocks:
        paths = space.block_paths(spec.index)
        assert len(set(paths)) == len(paths)
        assert {as_text(space, p) for p in paths} == expected_block_paths(spec.index)
        counts.append(len(paths))
    assert counts == [43, 80, 16, 16]
    assert space.num_architectures() == 43 * 80 * 16 * 16
    assert [b.layers for b in space.blocks] == [tuple(range(4 * b, 4 * b + 4)) for b in range(4)]


@pytest.mark.parametrize("image_size", [224, 32])
def test_every_architecture_keeps_resolution_and_places_attention(image_size):
    s = create_space("hytra", image_size=image_size, width_mult=0.0625, **STATIC)
    ends = {}
    for spec in s.blocks:
        for path in s.block_paths(spec.index):
            ends.setdefault(spec.index, set()).add(path[-1].level)
            # the finest start of this block is no finer than the coarsest end of the previous
            if spec.index:
                assert path[0].level >= max(ends[spec.index - 1])
    # all combinations are legal, so check every block path after every previous ending
    rng = random.Random(0)
    for _ in range(50):
        arch = tuple(rng.choice(s.block_paths(b.index)) for b in s.blocks)
        rows = s.describe_layers(arch)
        sides = [s.stem_side] + [r["resolution"] for r in rows]
        assert all(b <= a for a, b in zip(sides, sides[1:]))
        assert all(r["downsample"] == (b < a) for r, a, b in zip(rows, sides, sides[1:]))
        for r in rows:
            assert set(r) >= {"layer", "block", "choice", "op", "resolution", "channels", "downsample"}
            if r["op"] == "ResAtt":
                assert r["choice"] in ("ResAtt@14", "ResAtt@7") and r["resolution"] <= sides[0] // 4


def test_scales_at_small_and_imagenet_sizes():
    assert create_space("hytra", image_size=224).resolutions == (56, 28, 14, 7)
    assert create_space("hytra", image_size=32).resolutions == (32, 16, 8, 4)
    assert create_space("hytra", image_size=32, stem="imagenet").resolutions == (8, 4, 2, 1)
    assert create_space("hytra", image_size=224, last_stride=1).resolutions == (56, 28, 14, 14)
    assert create_space("hytra", width_mult=0.25).channels == (64, 128, 256, 512)


def test_every_path_of_every_block_runs(space):
    """Supernet forward of every path after every possible previous ending, and a standalone build."""
    torch.manual_seed(0)
    supernet = space.build_supernet().eval()
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        inputs = {None: x}
        for spec in space.blocks:
            outputs = {}
            for h in inputs.values():
                for path in space.block_paths(spec.index):
                    out = supernet.forward_block(h, spec.index, path)
                    level = path[-1].level
                    assert out.shape == (2, space.channels[level], space.resolutions[level], space.resolutions[level])
                    outputs.setdefault(space.boundary_key(spec.index, path), out)
            inputs = outputs
    for spec in space.blocks:
        prev = None if spec.index == 0 else space.block_paths(spec.index - 1)[0]
        for path in space.block_paths(spec.index):
            space.build_block(spec.index, path, prev)


def sample_archs(space, n, seed=0):
    rng = random.Random(seed)
    archs = [space.parse_arch(BOSSNET_T0_ARCH)]
    archs += [tuple(rng.choice(space.block_paths(b.index)) for b in space.blocks) for _ in range(n)]
    return archs


@pytest.mark.parametrize("mode", ["train", "eval"])
def test_standalone_matches_supernet_path(space, mode):
    supernet = space.build_supernet()
    randomize_(supernet)
    x = torch.randn(4, 3, 32, 32)
    for arch in sample_archs(space, 3):
        fresh, out, h = standalone_and_supernet_features(space, supernet, arch, x, mode)
        torch.testing.assert_close(out, h, rtol=1e-4, atol=1e-4)
        assert fresh(x).shape == (4, 5)


def test_routes_of_a_choice_share_the_op_body(space):
    supernet = space.build_supernet()
    routes = supernet.layers[4]  # first layer of block 1: inputs at 56, 28 or 14
    convs = [routes[k].op.conv2.weight for k in routes if k.startswith("ResConv14_")]
    assert len(convs) == 3 and all(w is convs[0] for w in convs)
    inputs = {routes[k].op.conv1.weight.shape[1] for k in routes if k.startswith("ResConv14_")}
    assert inputs == {space.channels[0], space.channels[1], space.channels[2]}


def test_arch_string_round_trip(space):
    arch = space.parse_arch(BOSSNET_T0_ARCH)
    assert space.format_arch(arch) == BOSSNET_T0_ARCH
    assert [len(p) for p in arch] == [4, 4, 4, 4]
    example = space.arch_example()
    assert space.format_arch(space.parse_arch(example)) == example
    assert space.format_path(space.parse_path(1, "ResConv@14:ResAtt@14:ResConv@14:ResAtt@7")) == "ResConv@14:ResAtt@14:ResConv@14:ResAtt@7"


def _replace(layer: int, text: str) -> str:
    parts = BOSSNET_T0_ARCH.split(":")
    parts[layer - 1] = text
    return ":".join(parts)


@pytest.mark.parametrize(
    "text, message",
    [
        ("", "empty architecture"),
        (":".join(BOSSNET_T0_ARCH.split(":")[:15]), "expected 16 choices"),
        (_replace(3, "ResConv@13"), "'ResConv@13' is not a candidate of layer 3"),
        (_replace(1, "ResAtt@56"), "ResAtt exists only at @14 and @7"),
        (_replace(4, "ResConv@28"), "layer 4 (ResConv@28) is finer than layer 3 (ResConv@14): resolution never increases"),
        (_replace(2, "ResConv@14"), "layer 2 (ResConv@14) skips a scale after ResConv@56"),
        (_replace(5, "ResConv@28"), "block 1 must start at scale @14 or @7"),
        ("ResConv@56:ResConv@28:ResConv@14:ResAtt@7:" + ":".join(BOSSNET_T0_ARCH.split(":")[4:]),
         "block 0 must end at scale @56 or @28 or @14"),
    ],
)
def test_malformed_arch_strings(space, text, message):
    with pytest.raises(BossNASError) as info:
        space.parse_arch(text)
    assert message in str(info.value)
    assert "\n" not in str(info.value)


@pytest.mark.parametrize(
    "options, message",
    [
        ({"width_mult": 0}, "width_mult must be a number in (0, 4]"),
        ({"act": "gelu"}, "act must be relu or silu"),
        ({"last_stride": 4}, "last_stride must be 1 or 2"),
        ({"stem": "deep"}, "stem must be one of auto, imagenet, small"),
        ({"image_size": 4}, "at least 8x8"),
    ],
)
def test_bad_options_are_one_line_errors(options, message):
    """(The options of the official search form: tests/test_hytra_official.py.)"""
    with pytest.raises(BossNASError, match=message.replace("(", r"\(").replace(")", r"\)").replace("[", r"\[")):
        create_space("hytra", **options)


@pytest.mark.parametrize("size", [32, 37, 48, 100, 128, 150])
def test_odd_and_large_sizes_have_no_shape_mismatch(size):
    s = create_space("hytra", image_size=size, width_mult=0.0625, num_classes=3, **STATIC)
    for arch in ("ResConv@56:ResConv@28:ResConv@28:ResConv@14:ResConv@7:" + ":".join(["ResAtt@7"] * 11),
                 "ResConv@14:" * 3 + "ResConv@14:ResAtt@14:ResAtt@14:ResAtt@14:ResAtt@7:" + ":".join(["ResConv@7"] * 8)):
        model = s.build_standalone(s.parse_arch(arch)).eval()
        with torch.no_grad():
            feats = model.forward_features(torch.randn(1, 3, size, size))
        assert feats.shape[-1] == s.resolutions[3]
        assert model(torch.randn(1, 3, size, size)).shape == (1, 3)


#: a search that trains and rates every block of the space in seconds on a CPU
TINY_SEARCH = [
    "data.name=digits", "data.image_size=32", "data.train_images=32", "train.batch_size=8",
    "train.paths_per_step=2", "model.hidden_dim=16", "model.proj_dim=8",
    "search.rate_images=8", "search.recal_batches=1", "model.space_options.width_mult=0.0625",
]


@pytest.mark.slow
def test_tiny_search_end_to_end(tmp_path):
    static = ["model.space_options.paths=static", "model.space_options.search_shortcut=standalone"]
    record, tables = tiny_search(tmp_path / "run", "hytra", TINY_SEARCH + static)
    assert record["space"] == "hytra"
    assert record["space_options"] == {"width_mult": 0.0625, "paths": "static", "search_shortcut": "standalone"}
    s = create_space("hytra", image_size=32, width_mult=0.0625, **STATIC)
    arch = s.parse_arch(record["arch"])  # a legal fabric path
    assert [len(t) for t in tables] == [43, 80, 16, 16]
    assert [s.format_path(p) for p in arch] == [min(t, key=lambda row: row[1])[0] for t in tables]
