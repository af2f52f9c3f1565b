"""The public API is what the README and docs say: every `bossnas.X` they name exists, and
every Python snippet of the README runs."""

import re
from pathlib import Path

import pytest

import bossnas

ROOT = Path(__file__).resolve().parents[1]
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]


def _documented_names() -> set[str]:
    """Every ``bossnas.name(`` / ``bossnas.name`` attribute and ``from bossnas import name`` in the docs."""
    names = set()
    for doc in DOCS:
        text = doc.read_text()
        names |= set(re.findall(r"\bbossnas\.([A-Za-z_]\w*)\(", text))
        names |= {n.strip() for group in re.findall(r"from bossnas import ([\w, ]+)", text) for n in group.split(",")}
    return names


def _snippets() -> list[str]:
    return re.findall(r"```python\n(.*?)```", (ROOT / "README.md").read_text(), re.S)


def test_every_documented_top_level_name_exists():
    names = _documented_names()
    # the names the issue lists must be among those documented, and each must resolve
    assert {"create_model", "create_space", "list_spaces", "list_models", "load_exported", "run_search"} <= names
    for name in sorted(names):
        assert callable(getattr(bossnas, name)), name
    assert set(bossnas.__all__) >= names
    with pytest.raises(AttributeError, match="has no attribute 'no_such_thing'"):
        bossnas.no_such_thing  # noqa: B018


def test_documented_dotted_imports_resolve():
    import importlib

    for doc in DOCS:
        for module, name in re.findall(r"from (bossnas[\w.]*) import (\w+)", doc.read_text()):
            assert hasattr(importlib.import_module(module), name), f"{doc.name}: from {module} import {name}"


@pytest.mark.slow
@pytest.mark.parametrize("index", range(4))
def test_readme_python_snippets_run(index, tmp_path, monkeypatch, capsys):
    snippets = _snippets()
    assert len(snippets) == 4
    monkeypatch.chdir(tmp_path)
    if index == 3:  # the Deploy section's ONNX Runtime snippet reads the quickstart's export folder
        _export_like_quickstart(tmp_path / "runs/quickstart/retrain/export")
    scope: dict = {}
    exec(compile(snippets[index], f"README.md python snippet {index}", "exec"), scope)  # noqa: S102
    if index == 1:  # the search returned what it wrote
        result = scope["result"]
        written = (tmp_path / "runs/python-search/best_arch.json").read_text()
        assert f'"arch": "{result.arch.split("/", 1)[1]}"' in written
        assert len(result.ratings) == 3 and len(result.ratings[0]) == 64
        # no budget: the best path of every block, and its rating the sum of theirs
        assert result.rating == pytest.approx(sum(min(t.values()) for t in result.ratings), abs=1e-6)
    if index == 2:
        import torch

        x = torch.randn(2, 1, 8, 8)
        assert torch.equal(scope["same"](x), scope["model"].eval()(x))
    if index == 3:
        printed = capsys.readouterr().out
        assert "input images ['batch', 1, 16, 16] -> output (1797, 10)" in printed
        assert re.search(r"top-1 on all 1797 digits: \d+\.\d%", printed)


def _export_like_quickstart(folder: Path) -> None:
    """What `bossnas export runs/quickstart/retrain` writes, for an untrained digits network."""
    pytest.importorskip("onnxruntime")
    pytest.importorskip("sklearn")
    from bossnas.export import export_model

    model = bossnas.create_model("nats-sss/16:16:16:16:16", num_classes=10, in_channels=1, image_size=16)
    export_model(model, folder, extra={"mean": [0.5], "std": [0.25]}, fmt="state-dict", onnx=True)
