import json

import pytest
import torch
from conftest import run_cli

from bossnas.errors import BossNASError
from bossnas.models import model_specs
from bossnas.plot import fabric_figure, plot_arch, save_figure
from bossnas.spaces import create_space, list_spaces

PNG = b"\x89PNG\r\n\x1a\n"



def is_png(path):
    data = path.read_bytes()
    return data.startswith(PNG) and len(data) > 2000


def test_nats_layer_table(tmp_path):
    space = create_space("nats-sss")
    path = plot_arch(space, space.parse_arch("64:40:48:64:56"), tmp_path / "nats.png")
    assert is_png(path)


def test_fabric_from_rows(tmp_path):
    """The fabric drawing only needs the row contract: layer, block, choice, op, resolution, channels, downsample."""
    rows = [
        {"layer": 1, "block": 0, "choice": "C@32", "op": "ResConv", "resolution": 32, "channels": 64, "downsample": False},
        {"layer": 2, "block": 0, "choice": "C@16", "op": "ResConv", "resolution": 16, "channels": 128, "downsample": True},
        {"layer": 3, "block": 1, "choice": "A@8", "op": "ResAtt", "resolution": 8, "channels": 256, "downsample": True},
        {"layer": 4, "block": 1, "choice": "A@8", "op": "ResAtt", "resolution": 8, "channels": 256, "downsample": False},
    ]
    path = save_figure(fabric_figure(rows, [32, 16, 8, 4], "fabric"), tmp_path / "fabric.png")
    assert is_png(path)
    # without "downsample" flags the drops of resolution are marked
    for r in rows:
        del r["downsample"]
    assert is_png(save_figure(fabric_figure(rows, [32, 16, 8], "fabric"), tmp_path / "f2.png"))


@pytest.mark.skipif("hytra" not in list_spaces(), reason="hytra space not registered")
def test_hytra_fabric(tmp_path):
    space = create_space("hytra", image_size=32)
    arch = space.parse_arch(space.arch_example())
    rows = space.describe_layers(arch)
    assert all("resolution" in r for r in rows)
    assert is_png(plot_arch(space, arch, tmp_path / "hytra.png"))
    assert (plot_arch(space, arch, tmp_path / "hytra.svg")).read_text().lstrip().startswith("<?xml")


def test_show_plot_cli(tmp_path, monkeypatch, capsys):
    code, out, err = run_cli(monkeypatch, capsys, "show", "nats-sss/16:16:16:16:16", "--plot", str(tmp_path / "a.png"))
    assert code == 0, err
    assert "plot -> " in out and is_png(tmp_path / "a.png")
    code, _, err = run_cli(monkeypatch, capsys, "show", "16:16:16:16:16", "--plot", str(tmp_path / "a.gif"))
    assert code == 2 and "cannot write a plot to" in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "a.gif").exists()
    with pytest.raises(BossNASError, match="cannot write a plot"):
        plot_arch(create_space("nats-sss"), ((8, 8), (8, 8), (8,)), tmp_path / "x.txt")


@pytest.mark.skipif(not model_specs(), reason="no named models registered")
def test_show_and_models_know_named_models(tmp_path, monkeypatch, capsys):
    name = model_specs()[0].name
    code, out, err = run_cli(monkeypatch, capsys, "show", name, "--plot", str(tmp_path / "m.png"))
    assert code == 0, err
    assert out.startswith(f"{name}: ") and is_png(tmp_path / "m.png")


def test_models_command(monkeypatch, capsys):
    code, out, err = run_cli(monkeypatch, capsys, "models")
    assert code == 0, err
    assert "Any architecture string of any space is also a model name" in out
    assert "nats-sss/" in out
    for spec in model_specs():
        assert spec.name in out


def test_show_and_create_model_read_a_search_record(tmp_path, monkeypatch, capsys):
    from bossnas.models import create_model

    record = {"space": "nats-sss", "arch": "16:24:8:8:32", "input": [1, 12, 12], "num_classes": 7,
              "space_options": {}, "rating": 0.5}
    (tmp_path / "best_arch.json").write_text(json.dumps(record))
    code, out, err = run_cli(monkeypatch, capsys, "show", str(tmp_path))
    assert code == 0, err
    assert out.startswith("nats-sss 16:24:8:8:32  input 1x12x12, 7 classes")
    model = create_model(str(tmp_path / "best_arch.json"))
    assert model(torch.zeros(2, 1, 12, 12)).shape == (2, 7)
    code, _, err = run_cli(monkeypatch, capsys, "show", str(tmp_path / "missing.json"))
    assert code == 2 and "not found" in err and len(err.strip().splitlines()) == 1
    (tmp_path / "empty").mkdir()
    code, _, err = run_cli(monkeypatch, capsys, "show", str(tmp_path / "empty"))
    assert code == 2 and "holds no best_arch.json" in err and len(err.strip().splitlines()) == 1
