import pytest
import torch

from bossnas.errors import BossNASError
from bossnas.layers.ops import ResAtt, ResConv, SqueezeExcite
from bossnas.models import create_model, list_models, model_specs, resolve_model
from bossnas.search.costs import arch_cost
from bossnas.spaces import create_space
from bossnas.spaces.hytra import BOSSNET_T0_ENCODING

#: published multiply-adds at 224 x 224 (BossNAS paper, Table 3 / official README)
PUBLISHED_MADDS = {"bossnet-t0": 3.4e9, "bossnet-t0-nose": 3.4e9, "bossnet-t1": 7.9e9}



def spec_space(name: str, **overrides):
    spec = resolve_model(name)
    options = {**spec.space_options, **overrides}
    size = options.pop("image_size", spec.image_size)
    return create_space(spec.space, image_size=size, num_classes=spec.num_classes, **options), spec


def test_models_are_listed():
    names = list_models()
    assert {"bossnet-t0", "bossnet-t0-nose", "bossnet-t1"} <= set(names)
    assert all(m.space == "hytra" and m.image_size == 224 for m in model_specs() if m.name.startswith("bossnet"))


@pytest.mark.parametrize("name", sorted(PUBLISHED_MADDS))
def test_madds_match_the_paper(name):
    space, spec = spec_space(name)
    cost = arch_cost(space, space.parse_arch(spec.arch))
    assert cost.macs == pytest.approx(PUBLISHED_MADDS[name], rel=0.03)


def test_arch_is_the_published_encoding():
    """Stage s of the encoding runs at scale 56 / 28 / 14 / 7; 1 = ResConv, 0 = ResAtt."""
    space, spec = spec_space("bossnet-t0")
    rows = space.describe_layers(space.parse_arch(spec.arch))
    expected = [("ResConv" if bit else "ResAtt", (56, 28, 14, 7)[s]) for s, stage in enumerate(BOSSNET_T0_ENCODING) for bit in stage]
    assert [(r["op"], r["resolution"]) for r in rows] == expected
    assert [r["layer"] for r in rows if r["downsample"]] == [2, 3, 8]
    t1, spec1 = spec_space("bossnet-t1")
    rows1 = t1.describe_layers(t1.parse_arch(spec1.arch))
    assert [r["resolution"] for r in rows1][-9:] == [14] * 9 and rows1[-1]["channels"] == 2048


def test_create_model_full_size_on_meta():
    with torch.device("meta"):
        t0 = create_model("bossnet-t0", num_classes=1000)
        nose = create_model("bossnet-t0-nose", num_classes=1000)
    assert t0.bossnas_spec["image_size"] == 224 and t0.bossnas_spec["space_options"] == {"act": "silu", "se": True}
    convs = [m for m in t0.modules() if isinstance(m, ResConv)]
    assert len(convs) == 7 and all(isinstance(m.se, SqueezeExcite) and isinstance(m.act1, torch.nn.SiLU) for m in convs)
    assert len([m for m in t0.modules() if isinstance(m, ResAtt)]) == 9
    assert not any(isinstance(m, SqueezeExcite) for m in nose.modules())
    n_params = sum(p.numel() for p in t0.parameters())
    assert 30e6 < n_params < 45e6
    assert t0(torch.empty(2, 3, 224, 224, device="meta")).shape == (2, 1000)


def test_create_model_small_and_by_arch_string():
    model = create_model("bossnet-t0", num_classes=10, image_size=32, width_mult=0.0625).eval()
    with torch.no_grad():
        assert model(torch.randn(2, 3, 32, 32)).shape == (2, 10)
    spec = resolve_model("bossnet-t0")
    other = create_model(f"hytra/{spec.arch}", num_classes=4, image_size=32, width_mult=0.0625)
    assert other.bossnas_spec["space"] == "hytra"


def test_unknown_model_is_a_one_line_error():
    with pytest.raises(BossNASError, match="neither a model name \\(did you mean 'bossnet-t"):
        create_model("bossnet-t9")
