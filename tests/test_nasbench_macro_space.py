import csv
import itertools
import random

import pytest
import torch
from conftest import standalone_and_supernet_features, tiny_search

from bossnas.errors import BossNASError
from bossnas.models import create_model
from bossnas.search.costs import arch_cost, cost_table, count_flops, count_params
from bossnas.spaces import create_space, list_spaces

DIGITS = ("0", "1", "2")
#: layers per stage in the paper (Su et al., CVPR 2021): 2 / 3 / 3
STAGES = (2, 3, 3)


@pytest.fixture(scope="module")
def space():
    return create_space("nasbench-macro")


@pytest.fixture
def published(shared_data) -> dict[str, tuple[int, int]]:
    """arch -> (params, madds) of the published table (skips without the shared data)."""
    with open(shared_data / "nasbench-macro" / "archs.csv", newline="") as f:
        return {row["arch"]: (int(row["params"]), int(row["madds"])) for row in csv.DictReader(f)}


def meta_model(arch: str) -> torch.nn.Module:
    with torch.device("meta"):
        return create_model(f"nasbench-macro/{arch}", num_classes=10)


# ------------------------------------------------------------------ the published table
def test_every_published_params_and_madds_from_the_block_costs(space, published):
    """All 6,561 rows: each block path is counted once (stem in block 0, head in block 2)
    and an architecture's cost is the sum over its blocks, exactly as the table says."""
    assert len(published) == 6561 == space.num_architectures()
    table = cost_table(space)
    wrong = []
    for text, (params, madds) in published.items():
        cost = table.cost(space.parse_arch(text))
        if (cost.params, cost.macs) != (params, madds):
            wrong.append((text, cost.params, cost.macs, params, madds))
    assert not wrong, wrong[:5]


def test_block_sums_equal_whole_create_model_networks(space, published):
    """The block sums above are the costs of create_model's whole network: both numbers for
    the extremes and a random sample, counted with the flop counter on the meta device."""
    table = cost_table(space)
    sample = ["00000000", "22222222", "02012100", "20020022"] + random.Random(0).sample(sorted(published), 40)
    example = torch.empty(1, 3, 32, 32, device="meta")
    for text in sample:
        model = meta_model(text)
        whole = (count_params(model), count_flops(model, example) / 2)
        blocks = table.cost(space.parse_arch(text))
        assert whole == (blocks.params, blocks.macs) == published[text], text


@pytest.mark.slow
def test_published_params_from_create_model(published):
    """Every 8th of the 6,561 rows (821 networks; 8 is prime to the 3 choices a layer, so every
    op appears at every layer in every combination with its neighbours' ops): create_model's
    network has exactly the published parameter count. Built on the meta device. All 6,561
    rows are checked through the block costs above; this checks the built network itself."""
    rows = list(published.items())[::8]
    for layer in range(8):
        assert {text[layer] for text, _ in rows} == set("012")
    wrong = [(text, n, params) for text, (params, _) in rows if (n := count_params(meta_model(text))) != params]
    assert len(rows) == 821 and not wrong, wrong[:5]


# ------------------------------------------------------------------ structure
def test_registered_blocks_and_paths(space):
    assert "nasbench-macro" in list_spaces()
    assert space.default_sampling == "fair" and space.default_image_size == 32
    assert [b.layers for b in space.blocks] == [(0, 1), (2, 3, 4), (5, 6, 7)]
    assert [len(space.block_paths(b.index)) for b in space.blocks] == [9, 27, 27]
    for spec, layers in zip(space.blocks, STAGES):
        assert set(space.block_paths(spec.index)) == set(itertools.product(DIGITS, repeat=layers))
        assert space.is_product_block(spec.index) and space.max_fair_k(spec.index) == 3
    assert space.num_architectures() == 3**8 == 6561
    assert [space.out_channels(b.index, ("1",) * len(b.layers)) for b in space.blocks] == [64, 128, 256]
    assert space.boundary_key(1, ("2", "0", "1")) is None


def test_fair_sampling_uses_each_candidate_once_per_layer(space):
    g = torch.Generator().manual_seed(0)
    paths = space.sample_paths(2, 3, "fair", g)
    for layer in range(3):
        assert sorted(p[layer] for p in paths) == list(DIGITS)


def test_layer_table(space):
    rows = space.describe_layers(space.parse_arch("02012100"))
    assert [r["choice"] for r in rows] == list("02012100")
    assert [r["op"] for r in rows] == ["1x1 conv stride 2", "IR e6 k5", "1x1 conv stride 2", "IR e3 k3", "IR e6 k5",
                                       "IR e3 k3", "identity", "identity"]
    assert [r["resolution"] for r in rows] == [16, 16, 8, 8, 8, 4, 4, 4]
    assert [r["channels"] for r in rows] == [64, 64, 128, 128, 128, 256, 256, 256]
    assert [r["layer"] for r in rows if r["downsample"]] == [1, 3, 6]
    assert [r["block"] for r in rows] == [0, 0, 1, 1, 1, 2, 2, 2]


def test_ops_and_shapes_follow_the_paper(space):
    """Strided identity is a 1x1 conv + BN with weights; later identities hold none; the
    inverted residuals add their input only where the shape is kept."""
    strided, skip = space.build_layer(0, "0"), space.build_layer(1, "0")
    assert [type(m) for m in strided] == [torch.nn.Conv2d, torch.nn.BatchNorm2d]
    assert strided[0].kernel_size == (1, 1) and strided[0].stride == (2, 2) and count_params(skip) == 0
    first, later = space.build_layer(2, "2"), space.build_layer(3, "1")
    assert not first.residual and later.residual
    assert first.depthwise[0].kernel_size == (5, 5) and first.depthwise[0].out_channels == 64 * 6
    assert later.depthwise[0].kernel_size == (3, 3) and later.depthwise[0].out_channels == 128 * 3
    model = create_model("nasbench-macro/02012100", num_classes=10).eval()
    with torch.no_grad():
        assert model(torch.randn(2, 3, 32, 32)).shape == (2, 10)
        assert model.forward_features(torch.randn(1, 3, 32, 32)).shape == (1, 256, 4, 4)
        assert create_space("nasbench-macro", image_size=45).build_standalone(
            space.parse_arch("21021021")).eval().forward_features(torch.randn(1, 3, 45, 45)).shape == (1, 256, 6, 6)


# ------------------------------------------------------------------ canonical form
def _independent_canonical(text: str) -> str:
    """Per stage: the first digit, then the other non-zero digits in order, zero-padded."""
    out, start = "", 0
    for n in STAGES:
        stage = text[start:start + n]
        rest = stage[1:].replace("0", "")
        out += stage[0] + rest + "0" * (n - 1 - len(rest))
        start += n
    return out


def test_canonical_form(space):
    texts = ["".join(d) for d in itertools.product(DIGITS, repeat=8)]
    canon = {t: space.format_arch(space.canonical_arch(space.parse_arch(t))) for t in texts}
    assert canon == {t: _independent_canonical(t) for t in texts}
    assert canon["00102001"] == "00120010" and canon["02012100"] == "02012100"
    # distinct networks: 3 x 3 in the first stage, 3 x (1 + 2 + 4) in each of the others
    assert len(set(canon.values())) == 9 * 21 * 21 == 3969
    assert all(canon[c] == c for c in canon.values())
    nats = create_space("nats-sss")
    arch = nats.parse_arch("64:40:48:64:56")
    assert nats.canonical_arch(arch) == arch  # other spaces: every string is its own network


def test_published_numbers_agree_within_canonical_groups(published):
    groups: dict[str, list[str]] = {}
    for text in published:
        groups.setdefault(_independent_canonical(text), []).append(text)
    assert len(groups) == 3969
    assert all(len({published[t] for t in group}) == 1 for group in groups.values())


def _skips_first(text: str) -> str:
    """Per stage: the first digit, then the non-first identities, then the other ops in order."""
    out, start = "", 0
    for n in STAGES:
        stage = text[start:start + n]
        rest = stage[1:].replace("0", "")
        out += stage[0] + "0" * (n - 1 - len(rest)) + rest
        start += n
    return out


def _moved_weights(state: dict, arch, target) -> dict:
    """``state`` of ``arch``'s standalone net renamed for ``target``, an arch with the same ops
    of each stage in the same order: the non-first identities are skips and hold no weights,
    so the k-th weighted layer of a stage moves to the k-th weighted layer of the target."""
    moves = {}
    for b, (path, other) in enumerate(zip(arch, target)):
        stem = 1 if b == 0 else 0  # module 0 of block 0 is the stem
        src = [i for i, c in enumerate(path) if i == 0 or c != "0"]
        dst = [i for i, c in enumerate(other) if i == 0 or c != "0"]
        moves.update({f"blocks.{b}.{i + stem}.": f"blocks.{b}.{j + stem}." for i, j in zip(src, dst)})
    renamed = {}
    for key, value in state.items():
        prefix = ".".join(key.split(".")[:3]) + "."  # blocks.B.LAYER.
        renamed[moves[prefix] + key[len(prefix):] if prefix in moves else key] = value
    return renamed


def test_canonical_equivalents_share_costs_and_outputs(space):
    """Strings that differ only in where the non-first identities sit: equal parameters and
    multiply-adds and, with the same weights, equal outputs (canonical form and skips-first)."""
    texts = ["00102001", "01010101", "22020202"] + ["".join(random.Random(seed).choices(DIGITS, k=8)) for seed in range(6)]
    torch.manual_seed(0)
    x = torch.randn(2, 3, 32, 32)
    for text in texts:
        arch = space.parse_arch(text)
        net = space.build_standalone(arch).eval()
        for other_text in (space.format_arch(space.canonical_arch(arch)), _skips_first(text)):
            other = space.parse_arch(other_text)
            assert arch_cost(space, other) == arch_cost(space, arch), (text, other_text)
            twin = space.build_standalone(other).eval()
            twin.load_state_dict(_moved_weights(net.state_dict(), arch, other))
            with torch.no_grad():
                torch.testing.assert_close(twin(x), net(x))
    assert _skips_first("01120102") == "01102102" and space.format_arch(space.canonical_arch(space.parse_arch("00102001"))) == "00120010"


# ------------------------------------------------------------------ supernet vs standalone
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
    for text in ("00000000", "22222222", "02012100", "10201120"):
        arch = space.parse_arch(text)
        fresh, out, h = standalone_and_supernet_features(space, supernet, arch, x, mode)
        torch.testing.assert_close(out, h, rtol=1e-4, atol=1e-4)
        assert fresh(x).shape == (4, 10)


def test_supernet_holds_one_op_per_layer_and_candidate(space):
    supernet = space.build_supernet()
    # the strided identity of each stage's first layer has its own weights (1x1 conv + BN)
    assert [count_params(supernet.layers[layer]["0"]) > 0 for layer in range(8)] == [
        True, False, True, False, False, True, False, False]
    total = count_params(supernet)
    expected = count_params(space.build_stem()) + sum(
        count_params(space.build_layer(layer, c)) for layer in range(8) for c in DIGITS)
    assert total == expected
    assert {p for b in range(3) for p in map(id, supernet.block_parameters(b))} == set(map(id, supernet.parameters()))


# ------------------------------------------------------------------ arch strings
def test_arch_string_round_trip(space):
    arch = space.parse_arch(" 02012100 ")
    assert arch == (("0", "2"), ("0", "1", "2"), ("1", "0", "0"))
    assert space.format_arch(arch) == "02012100"
    assert space.parse_path(1, "012") == ("0", "1", "2") and space.format_path(("0", "1", "2")) == "012"
    assert create_model("02012100").bossnas_spec["space"] == "nasbench-macro"  # a bare string resolves too


@pytest.mark.parametrize(
    "text, message",
    [
        ("", "empty architecture string; expected 8 digits 0/1/2 such as '02012100'"),
        ("0201210", "expected 8 digits 0/1/2 without separator (e.g. '02012100'), got 7 characters"),
        ("0:2:0:1:2:1:0:0", "got 15 characters"),
        ("02013100", "'3' is not a candidate of layer 5 of 'nasbench-macro'; choose one of 0, 1, 2"),
        ("0201210８", "'８' is not a candidate of layer 8"),
        ("0201 100", "' ' is not a candidate of layer 5"),
    ],
)
def test_malformed_arch_strings(space, text, message):
    with pytest.raises(BossNASError) as info:
        space.parse_arch(text)
    assert message in str(info.value) and "\n" not in str(info.value)


def test_malformed_path_strings(space):
    with pytest.raises(BossNASError, match="expected 3 digits 0/1/2 without separator, got 2 characters"):
        space.parse_path(1, "01")
    with pytest.raises(BossNASError, match="'x' is not a candidate of layer 2"):
        space.parse_path(0, "0x")


# ------------------------------------------------------------------ end to end
TINY_SEARCH = [
    "data.name=digits", "data.image_size=8", "data.train_images=32", "train.batch_size=8",
    "model.hidden_dim=16", "model.proj_dim=8", "search.rate_images=8", "search.recal_batches=1",
]


@pytest.mark.slow
def test_tiny_search_end_to_end(tmp_path):
    record, tables = tiny_search(tmp_path / "run", "nasbench-macro", TINY_SEARCH)
    assert record["space"] == "nasbench-macro" and record["input"] == [1, 8, 8]  # grey digits
    s = create_space("nasbench-macro", in_channels=1, image_size=8, num_classes=10)
    arch = s.parse_arch(record["arch"])
    assert [len(t) for t in tables] == [9, 27, 27]
    assert {p for t in tables for p, _ in t} == {s.format_path(p) for b in s.blocks for p in s.block_paths(b.index)}
    assert [s.format_path(p) for p in arch] == [min(t, key=lambda row: row[1])[0] for t in tables]
    assert record["params"] == sum(p.numel() for p in s.build_standalone(arch).parameters())
