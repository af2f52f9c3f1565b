"""HyTra as the official search runs it (issue 13 items 1, 4, 5): the restricted path lists
and their dynamic rule, the search supernet's shortcuts, the search-time attention form.

The static rule and the standalone form: tests/test_hytra_space.py.
"""

import itertools
import random

import pytest
import torch
from conftest import TINY
from torch import nn

from bossnas.config import load_config
from bossnas.errors import BossNASError
from bossnas.layers.ops import MultiHeadSelfAttention
from bossnas.search.select import (
    Budget,
    all_ratings,
    best_unconstrained,
    best_within,
    count_archs,
    top_k,
)
from bossnas.spaces import create_space
from bossnas.spaces.hytra import BOSSNET_T0_ARCH, StemDown
from bossnas.train.runner import BlockwiseSearch, read_table

SMALL = dict(image_size=32, width_mult=0.0625, num_classes=5)
SIDES = (56, 28, 14, 7)

#: Paths of a block after the previous block ended at each level (0 = @56 ... 3 = @7; block 0
#: follows the stem, at level 0). Derived from the rule: a block starts at the previous end or
#: one scale coarser, a layer keeps its scale or moves one coarser, ResAtt only at @14 / @7.
#: The official search indexes its `restricted_path` lists by `stage_depths` = 4 - end level
#: (its val hook: `pos + 1` from the last op of the best path), and those lists hold 51, 99, 80
#: and 16 paths: the numbers below. Its initial `stage_depths = [4, 3, 2, 2]` give the
#: 51 / 99 / 80 / 80 "before the dynamic rule".
OFFICIAL_COUNTS = {0: 51, 1: 99, 2: 80, 3: 16}
#: official op indices (its `s_rank`): 0 ResAtt@7, 1 ResConv@7, 2 ResAtt@14, 3 ResConv@14, 4 ResConv@28, 5 ResConv@56
OFFICIAL_OPS = ("ResAtt@7", "ResConv@7", "ResAtt@14", "ResConv@14", "ResConv@28", "ResConv@56")


def rule_paths(first_levels: set[int]) -> set[tuple[str, ...]]:
    """Every path starting at one of ``first_levels``, enumerated independently of the space's code."""
    out = set()
    for levels in itertools.product(range(4), repeat=4):
        if levels[0] not in first_levels or any(b - a not in (0, 1) for a, b in zip(levels, levels[1:])):
            continue
        ops = [("ResConv", "ResAtt") if lv >= 2 else ("ResConv",) for lv in levels]
        out |= {tuple(f"{n}@{SIDES[lv]}" for n, lv in zip(names, levels)) for names in itertools.product(*ops)}
    return out


def text(space, path):
    return tuple(space.format_choice(c) for c in path)


def level(choice_text: str) -> int:
    return SIDES.index(int(choice_text.split("@")[1]))


@pytest.fixture(scope="module")
def space():
    return create_space("hytra", **SMALL)


def prev_ending_at(space, block: int, end: int):
    """A path of block ``block - 1`` that ends at level ``end``."""
    return next(p for p in space.block_paths(block - 1) if p[-1].level == end)


def test_path_counts_equal_the_official_restricted_lists(space):
    assert {len(rule_paths({lv, lv + 1} & set(range(4)))) for lv in range(4)} == set(OFFICIAL_COUNTS.values())
    assert {text(space, p) for p in space.block_paths(0)} == rule_paths({0, 1})
    assert len(space.block_paths(0)) == 51
    for block in (1, 2, 3):
        assert space.path_counts(block) == OFFICIAL_COUNTS
        for end, count in OFFICIAL_COUNTS.items():
            paths = space.block_paths(block, prev_ending_at(space, block, end))
            assert len(paths) == count
            assert {text(space, p) for p in paths} == rule_paths({end, end + 1} & set(range(4)))
    # every path any previous ending allows: the 131 of the official all_path table
    assert [len(space.block_paths(b.index)) for b in space.blocks] == [51, 131, 131, 131]


def test_official_list_entries_decode_to_paths_of_the_space(space):
    """Spot entries of the official lists, in its op indices (first digit = first layer)."""
    entries = {0: ["5555", "5554", "4200", "4444", "5420"], 1: ["2000", "4200", "4444", "3333"], 3: ["0000", "1111"]}
    for end, codes in entries.items():
        prev = prev_ending_at(space, 1, end) if end else None
        allowed = {text(space, p) for p in space.block_paths(1 if end else 0, prev)}
        for code in codes:
            assert tuple(OFFICIAL_OPS[int(c)] for c in code) in allowed


def test_number_of_architectures_counts_legal_chains(space):
    ends = {}  # level -> number of prefixes ending there, counted on levels only
    for path in rule_paths({0, 1}):
        ends[level(path[-1])] = ends.get(level(path[-1]), 0) + 1
    for _ in range(3):
        nxt = {}
        for end, n in ends.items():
            for path in rule_paths({end, end + 1} & set(range(4))):
                nxt[level(path[-1])] = nxt.get(level(path[-1]), 0) + n
        ends = nxt
    assert space.num_architectures() == sum(ends.values()) == 1_703_991
    assert space.paths_follow_previous


def test_static_option_keeps_the_old_lists():
    s = create_space("hytra", paths="static", **SMALL)
    assert [len(s.block_paths(b.index)) for b in s.blocks] == [43, 80, 16, 16]
    assert s.num_architectures() == 43 * 80 * 16 * 16 and not s.paths_follow_previous
    # every path of block k follows every path of block k-1: no previous path needed
    assert all(s.path_counts(b.index) == {k: len(s.block_paths(b.index)) for k in s.path_counts(b.index)}
               for b in s.blocks)


@pytest.mark.parametrize("arch, message", [
    ("ResConv@14:" * 4 + ":".join(BOSSNET_T0_ARCH.split(":")[4:]), "block 0 must start at scale @56 or @28"),
    (":".join(BOSSNET_T0_ARCH.split(":")[:4] + ["ResConv@28"] * 4 + BOSSNET_T0_ARCH.split(":")[8:]),
     "block 1 must start at scale @14 or @7, where block 0 ended (ResConv@14)"),
    (":".join(["ResConv@56"] * 4 + ["ResConv@14"] * 4 + BOSSNET_T0_ARCH.split(":")[8:]),
     "block 1 must start at scale @56 or @28"),
])
def test_chains_outside_the_rule_are_one_line_errors(space, arch, message):
    with pytest.raises(BossNASError, match=message.replace("(", r"\(").replace(")", r"\)")) as info:
        space.parse_arch(arch)
    assert "\n" not in str(info.value)
    assert space.format_arch(space.parse_arch(BOSSNET_T0_ARCH)) == BOSSNET_T0_ARCH  # BossNet-T0 follows the rule


@pytest.mark.parametrize("options, message", [
    ({"paths": "restricted"}, "hytra paths must be one of official, static, got 'restricted'"),
    ({"search_shortcut": "avg"}, "hytra search_shortcut must be one of official, standalone"),
    ({"attention": "official"}, "model.space_options.attention=standard"),
])
def test_unknown_option_values_are_one_line_errors(options, message):
    with pytest.raises(BossNASError, match=message) as info:
        create_space("hytra", **options)
    assert "\n" not in str(info.value)


# ------------------------------------------------------------------ item 4: supernet shortcuts
def _route(supernet, layer, key):
    return supernet.layers[layer][key]


def test_official_search_shortcuts(space):
    supernet = space.build_supernet()
    c = space.channels
    down = _route(supernet, 1, "ResConv28_from56").op.shortcut  # down-sampling: 3x3 stride-2 conv, BN, ReLU
    assert [type(m) for m in down] == [nn.Conv2d, nn.BatchNorm2d, nn.ReLU]
    assert down[0].kernel_size == (3, 3) and down[0].stride == (2, 2) and down[0].padding == (1, 1)
    assert (down[0].in_channels, down[0].out_channels) == (c[0], c[1])
    assert isinstance(_route(supernet, 1, "ResConv28_from28").op.shortcut, nn.Identity)
    for key, stride in (("ResConv56_from56", 1), ("ResConv28_from56", 2)):
        first = _route(supernet, 0, key)
        stem = first.pool  # from the stem: depthwise conv (kernel = stride), 1x1 conv, BN
        assert isinstance(stem, StemDown)
        assert stem.depthwise.kernel_size == (stride, stride) and stem.depthwise.stride == (stride, stride)
        assert stem.depthwise.groups == space.stem_width == stem.depthwise.in_channels
        level_c = c[0] if stride == 1 else c[1]
        assert (stem.conv.kernel_size, stem.conv.out_channels, stem.bn.num_features) == ((1, 1), level_c // 4, level_c // 4)
        width = first.op.shortcut  # then only the width changes: 1x1 conv, BN, ReLU
        assert [type(m) for m in width] == [nn.Conv2d, nn.BatchNorm2d, nn.ReLU]
        assert width[0].kernel_size == (1, 1) and (width[0].in_channels, width[0].out_channels) == (level_c // 4, level_c)
        assert first.op.pos.stride == (1, 1)
    x = torch.randn(2, 3, 37, 37)  # an odd side: the stem down-sampler rounds up like every route
    out = supernet.forward_block(x, 0, space.parse_path(0, "ResConv@28:ResConv@14:ResAtt@7:ResAtt@7"))
    assert out.shape == (2, c[3], 5, 5)  # 37 -> 19 -> 10 -> 5


def test_standalone_networks_keep_pool_shortcuts(space):
    block = space.build_block(0, space.parse_path(0, "ResConv@56:ResConv@28:ResConv@14:ResConv@14"), None)
    shortcut = block[2].op.shortcut
    assert [type(m) for m in shortcut] == [nn.AvgPool2d, nn.Conv2d, nn.BatchNorm2d]
    assert not any(isinstance(m, StemDown) for m in block.modules())
    old = create_space("hytra", search_shortcut="standalone", **SMALL).build_supernet()
    assert [type(m) for m in _route(old, 1, "ResConv28_from56").op.shortcut] == [nn.AvgPool2d, nn.Conv2d, nn.BatchNorm2d]


def test_named_models_are_unchanged_by_the_search_options():
    from bossnas.models import create_model

    default = create_model("bossnet-t0", num_classes=10, image_size=32, width_mult=0.0625)
    searchy = create_model("bossnet-t0", num_classes=10, image_size=32, width_mult=0.0625,
                           search_shortcut="official", attention="official-search")
    assert [k for k, _ in default.state_dict().items()] == [k for k, _ in searchy.state_dict().items()]
    forms = {m.form for m in searchy.modules() if isinstance(m, MultiHeadSelfAttention)}
    assert forms == {"standard"}


def test_supernet_path_equals_its_materialized_copy(space):
    from test_hytra_space import randomize_

    supernet = space.build_supernet()
    randomize_(supernet)
    supernet.eval()
    x = torch.randn(3, 3, 32, 32)
    rng = random.Random(0)
    archs = [space.parse_arch(BOSSNET_T0_ARCH)]
    for _ in range(3):
        arch = ()
        for b in range(4):
            arch += (rng.choice(space.block_paths(b, arch[-1] if arch else None)),)
        archs.append(arch)
    for arch in archs:
        copy = space.extract_standalone(supernet, arch).eval()
        with torch.no_grad():
            h = x
            for b, path in enumerate(arch):
                h = supernet.forward_block(h, b, path)
            torch.testing.assert_close(copy.forward_features(x), h, rtol=1e-4, atol=1e-4)


# ------------------------------------------------------------------ item 5: search-time attention
def test_official_search_attention_is_v_times_softmax_without_transpose():
    torch.manual_seed(0)
    standard = MultiHeadSelfAttention(8, 2)
    official = MultiHeadSelfAttention(8, 2, form="official-search")
    official.load_state_dict(standard.state_dict())
    x = torch.randn(1, 8, 2, 3)
    qkv = standard.qkv(x).reshape(1, 3, 2, 4, 6)  # [b, q/k/v, heads, d, positions]
    q, k, v = qkv[0, 0], qkv[0, 1], qkv[0, 2]
    attn = torch.softmax(q.transpose(-2, -1) @ k / 2.0, dim=-1)  # [heads, i, j], scale d^-0.5 = 1/2
    by_hand = (v @ attn).reshape(1, 8, 2, 3)
    torch.testing.assert_close(official(x), by_hand)
    torch.testing.assert_close(standard(x), (v @ attn.transpose(-2, -1)).reshape(1, 8, 2, 3), rtol=1e-5, atol=1e-5)
    assert (official(x) - standard(x)).abs().max() > 1e-2


def test_attention_option_reaches_only_the_supernet():
    s = create_space("hytra", attention="official-search", **SMALL)
    supernet = s.build_supernet()
    assert {m.form for m in supernet.modules() if isinstance(m, MultiHeadSelfAttention)} == {"official-search"}
    arch = s.parse_arch(BOSSNET_T0_ARCH)
    assert {m.form for m in s.build_standalone(arch).modules() if isinstance(m, MultiHeadSelfAttention)} == {"standard"}
    assert {m.form for m in s.extract_standalone(supernet, arch).modules()
            if isinstance(m, MultiHeadSelfAttention)} == {"official-search"}
    default = create_space("hytra", **SMALL).build_supernet()
    assert {m.form for m in default.modules() if isinstance(m, MultiHeadSelfAttention)} == {"standard"}


# ------------------------------------------------------------------ selection over legal chains
def legal(arch_texts) -> bool:
    """The official rule on choice strings, independent of the space's code."""
    if level(arch_texts[0][0]) > 1:
        return False
    return all(level(cur[0]) - level(prev[-1]) in (0, 1) for prev, cur in zip(arch_texts, arch_texts[1:]))


@pytest.fixture(scope="module")
def small_case(space):
    """Rating tables mixing paths of every start scale (so that many combinations are illegal) and
    a random additive cost on every legal (previous key, path)."""
    rng = random.Random(3)
    tables = [{p: rng.gauss(0, 1) for p in rng.sample(space.block_paths(0), 9)}]
    for b in (1, 2, 3):
        tables.append({p: rng.gauss(0, 1) for p in rng.sample(space.block_paths(b), 9)})
    cost = [{(None, p): rng.uniform(1, 5) for p in space.block_paths(0)}]
    for b in (1, 2, 3):
        cost.append({(end, p): rng.uniform(1, 5) for end in range(4)
                     for p in space.block_paths(b, prev_ending_at(space, b, end))})
    combos = []
    for arch in itertools.product(*(list(t) for t in tables)):
        if legal([text(space, p) for p in arch]):
            keys = [None] + [p[-1].level for p in arch[:-1]]
            combos.append((sum(t[p] for t, p in zip(tables, arch)), sum(c[(k, p)] for c, k, p in zip(cost, keys, arch)), arch))
    return tables, cost, combos


def test_selection_never_combines_incompatible_paths(space, small_case):
    tables, cost, combos = small_case
    assert 0 < len(combos) < 9**4  # the case has illegal combinations to avoid
    assert count_archs(space, [list(t) for t in tables]) == len(combos)
    archs, values = all_ratings(tables, space=space)
    assert sorted(archs) == sorted(a for *_, a in combos)
    assert min(values) == pytest.approx(min(r for r, *_ in combos))
    ranked = sorted(combos, key=lambda c: c[0])
    assert [s.arch for s in top_k(tables, 7, space)] == [a for *_, a in ranked[:7]]
    assert best_unconstrained(tables, space).arch == ranked[0][2]
    for frac in (0.2, 0.35, 0.5, 0.8):
        limit = min(c for _, c, _ in combos) + frac * (max(c for _, c, _ in combos) - min(c for _, c, _ in combos))
        choice, (spent,) = best_within(space, tables, [Budget("cost", cost, limit)])
        expected = min((c for c in combos if c[1] <= limit), key=lambda c: c[0])
        assert choice.arch == expected[2] and spent == pytest.approx(expected[1]) and spent <= limit


def test_cost_table_holds_only_legal_entries(space):
    from bossnas.search.costs import BlockCostTable, arch_cost

    s = create_space("hytra", image_size=16, width_mult=0.0625, num_classes=3)
    costs = BlockCostTable(s)
    assert len(costs.tables[0]) == 51
    assert [len(t) for t in costs.tables[1:]] == [51 + 99 + 80 + 16] * 3
    arch = s.parse_arch(BOSSNET_T0_ARCH)
    assert costs.cost(arch) == arch_cost(s, arch)
    assert costs.cheapest("flops")[1].flops <= costs.cost(arch).flops


# ------------------------------------------------------------------ the dynamic rule in a run
TINY_HYTRA = [
    "space=hytra", "data.name=digits", "data.image_size=16", "data.train_images=16", "train.batch_size=8",
    "train.paths_per_step=2", "model.hidden_dim=8", "model.proj_dim=4", "search.rate_images=4",
    "search.recal_batches=1", "model.space_options.width_mult=0.0625",
]


@pytest.mark.slow
def test_dynamic_rule_holds_through_a_run_and_a_resume(tmp_path):
    assert "data.image_size=8" in TINY  # (the generic tiny settings are too small for four scales)
    config = load_config(None, TINY_HYTRA)
    first = BlockwiseSearch.open(config, tmp_path / "run", show_progress=False)
    first.run(stop_after_block=1)
    assert first.state.block == 1 and len(first.state.best_paths) == 1
    first.folder.unlock()
    resumed = BlockwiseSearch.open(config, tmp_path / "run", resume=True, show_progress=False)
    state = resumed.run()
    space = resumed.space
    best = [space.parse_path(b, p) for b, p in enumerate(state.best_paths)]
    assert len(read_table(tmp_path / "run" / "block_0_ratings.csv")) == 51
    for b in (1, 2, 3):
        rated = [space.parse_path(b, p) for p, _ in read_table(tmp_path / "run" / f"block_{b}_ratings.csv")]
        end = best[b - 1][-1].level
        assert len(rated) == OFFICIAL_COUNTS[end]
        assert {text(space, p) for p in rated} == rule_paths({end, end + 1} & set(range(4)))
    assert legal([text(space, p) for p in best])
    # choosing under a FLOPs budget: a legal chain of rated paths within the budget
    from bossnas.search.report import finish_run

    free = finish_run(tmp_path / "run")
    assert free.record["arch"] == space.format_arch(tuple(best))
    cap = free.record["flops"] * 0.9
    capped = finish_run(tmp_path / "run", max_flops=cap)
    arch = space.parse_arch(capped.record["arch"])  # parse_arch refuses illegal chains
    assert legal([text(space, p) for p in arch]) and capped.record["flops"] <= cap
    assert all(p in t for p, t in zip(arch, capped.tables)) and capped.record["rating"] >= free.record["rating"]
    assert "legal architectures" in capped.report.read_text()
