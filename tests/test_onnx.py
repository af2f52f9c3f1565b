"""ONNX export (``pip install -e ".[onnx]"``): checked in ONNX Runtime against PyTorch."""

import json

import pytest
import torch
from conftest import run_cli

onnx = pytest.importorskip("onnx")
pytest.importorskip("onnxruntime")
pytest.importorskip("onnxscript")

from bossnas.data.datasets import load_digits  # noqa: E402
from bossnas.export import ONNX_OPSET, export_model, run_onnx  # noqa: E402
from bossnas.models import create_model  # noqa: E402

SIZE = 16
#: one network per space; the HyTra one puts attention (ResAtt) at both scales that offer it
NETWORKS = {
    "nats": ("nats-sss/16:24:8:32:16", {}),
    "mbconv": ("mbconv/" + ":".join(["e3k3", "e6k5", "e3k5"] * 6), {"width_mult": 0.25}),
    "hytra": ("hytra/" + ":".join(["ResConv@56", "ResConv@28", "ResAtt@14", "ResAtt@14"]
                                  + ["ResAtt@7", "ResConv@7"] * 6), {"width_mult": 0.25}),
}


@pytest.fixture(scope="module")
def digits() -> torch.Tensor:
    """Real images: 24 held-out handwritten digits, normalised, three channels (the models take RGB)."""
    data = load_digits(SIZE)
    images = data.test.images[:24].float() / 255.0
    images = (images - data.mean[0]) / data.std[0]
    return images.expand(-1, 3, -1, -1).contiguous()


def _random(batch: int = 8) -> torch.Tensor:
    return torch.randn(batch, 3, SIZE, SIZE, generator=torch.Generator().manual_seed(3))


def _network(key: str, digits: torch.Tensor) -> torch.nn.Module:
    name, options = NETWORKS[key]
    torch.manual_seed(0)
    model = create_model(name, num_classes=10, in_channels=3, image_size=SIZE, **options)
    with torch.no_grad():
        # as after training: no zero-initialised residual scales, and batch-norm statistics of real
        # images, so the outputs vary from image to image and the comparison means something
        for p in model.parameters():
            p.add_(torch.randn_like(p), alpha=0.1)
        for m in model.modules():
            if isinstance(m, torch.nn.modules.batchnorm._BatchNorm):
                m.momentum = None  # one pass sets the exact statistics of these images
                m.reset_running_stats()
        model.train()(torch.cat([digits, _random()]))  # both kinds of test input are in distribution
    return model.eval()


@pytest.mark.parametrize("key", sorted(NETWORKS))
@torch.no_grad()
def test_onnx_runtime_matches_pytorch(key, digits, tmp_path):
    model = _network(key, digits)
    result = export_model(model, tmp_path, fmt="state-dict", onnx=True)
    path = tmp_path / "model.onnx"
    assert path in result.files and result.onnx_max_abs_diff is not None
    graph = onnx.load(path)
    onnx.checker.check_model(graph)
    assert {o.domain: o.version for o in graph.opset_import}[""] == ONNX_OPSET
    (images,), (logits,) = graph.graph.input, graph.graph.output
    dims = images.type.tensor_type.shape.dim
    assert (images.name, logits.name) == ("images", "logits")
    assert dims[0].dim_param and not dims[0].HasField("dim_value")  # the batch axis is symbolic
    assert [d.dim_value for d in dims[1:]] == [3, SIZE, SIZE]
    for label, x in (("random", _random()), ("digits", digits), ("one digit", digits[:1])):
        expected, got = model(x), run_onnx(path, x)
        assert got.shape == expected.shape == (len(x), 10)
        diff = float((got - expected).abs().max())
        print(f"{key} {label}: max |onnxruntime - torch| = {diff:.2e} (logits up to {float(expected.abs().max()):.2f})")
        assert len(x) == 1 or expected.std(0).max() > 1e-2  # outputs differ between images
        assert diff < 1e-4 * max(1.0, float(expected.abs().max()))
    assert json.loads((tmp_path / "model.json").read_text())["onnx_opset"] == ONNX_OPSET


def test_onnx_differs_from_another_network(digits, tmp_path):
    """The graph holds this network's weights: another initialisation gives other logits."""
    model = _network("nats", digits)
    export_model(model, tmp_path, fmt="program", onnx=True)
    other = create_model(NETWORKS["nats"][0], num_classes=10, in_channels=3, image_size=SIZE).eval()
    got = run_onnx(tmp_path / "model.onnx", digits)
    assert not torch.allclose(got, other(digits), atol=1e-3)
    torch.testing.assert_close(got, model(digits), atol=1e-4, rtol=1e-3)


def test_export_cli_writes_onnx_or_says_how(digits, tmp_path, monkeypatch, capsys):
    export_model(_network("nats", digits), tmp_path / "bundle", fmt="state-dict")
    weights = tmp_path / "bundle" / "model.pt"
    code, out, err = run_cli(monkeypatch, capsys, "export", str(weights), "--out", str(tmp_path / "a"))
    assert code == 0, err
    assert (tmp_path / "a" / "model.onnx").is_file() and (tmp_path / "a" / "model.pt2").is_file()
    assert f"model.onnx (opset {ONNX_OPSET}, dynamic batch): ONNX Runtime matches PyTorch" in out
    # without the extra: the other forms, and one line saying how to get ONNX
    monkeypatch.setattr("bossnas.export.onnx_available", lambda: False)
    code, out, err = run_cli(monkeypatch, capsys, "export", str(weights), "--out", str(tmp_path / "b"))
    assert code == 0, err
    assert not (tmp_path / "b" / "model.onnx").exists() and (tmp_path / "b" / "model.pt2").is_file()
    assert err.strip() == ('note: model.onnx not written; for ONNX export: pip install -e ".[onnx]" in your bossnas clone '
                           "(onnx, onnxscript, onnxruntime)")
    code, _, err = run_cli(monkeypatch, capsys, "export", str(weights), "--out", str(tmp_path / "c"), "--onnx")
    assert code == 2 and 'pip install -e ".[onnx]"' in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "c").exists()
