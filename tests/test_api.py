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
        _export_like_quickstart(tmp_path / "runs/quickstart/retrain-max_latency=1.34ms/export")
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
    """What the README's `bossnas export runs/quickstart/retrain-max_latency=1.34ms` writes, for an untrained digits network."""
    pytest.importorskip("onnxruntime")
    pytest.importorskip("sklearn")
    from bossnas.export import export_model

    model = bossnas.create_model("nats-sss/16:16:16:16:16", num_classes=10, in_channels=1, image_size=16)
    export_model(model, folder, extra={"mean": [0.5], "std": [0.25]}, fmt="state-dict", onnx=True)


# ------------------------------------------------------------------ adversarial pass 2026-12-02: argument types
def _one_line_api_error(call, match: str) -> None:
    from bossnas.errors import BossNASError

    with pytest.raises(BossNASError) as info:
        call()
    assert type(info.value) is BossNASError and "\n" not in str(info.value)
    assert re.search(match, str(info.value)), str(info.value)


ARCH = "nats-sss/16:16:16:16:16"
WRONG_TYPES = {
    "create_model pretrained_path=123": (lambda: bossnas.create_model(ARCH, pretrained_path=123),
                                         r"pretrained_path must be a file path \(str or Path\), got 123"),
    "create_model num_classes=10**9": (lambda: bossnas.create_model(ARCH, num_classes=10**9),
                                       r"num_classes=1000000000, in_channels=3 makes a network of [0-9,.]+ GB of weights, "
                                       r"more than the [0-9,.]+ GB of memory here"),
    "create_space(None)": (lambda: bossnas.create_space(None), r"a search space is named by text, got None; choose one of"),
    "create_space in_channels='1'": (lambda: bossnas.create_space("nats-sss", in_channels="1"),
                                     r"create_space: in_channels must be an integer >= 1, got '1'"),
    "create_space bogus=1": (lambda: bossnas.create_space("nats-sss", bogus=1),
                             r"create_space: 'nats-sss' takes no option 'bogus'; its options are in_channels, image_size, "
                             r"num_classes"),
    "create_space image_size=0": (lambda: bossnas.create_space("nats-sss", image_size=0),
                                  r"create_space: image_size must be an integer >= 4 or None, got 0"),
    "load_exported(None)": (lambda: bossnas.load_exported(None), r"load_exported: give the folder .* got None"),
    "load_exported(123)": (lambda: bossnas.load_exported(123), r"load_exported: give the folder .* got 123"),
    "load_config(123)": (lambda: bossnas.load_config(123), r"load_config: preset must be a preset name or a YAML file"),
    "load_config({})": (lambda: bossnas.load_config({"train": {"epochs": 2}}), r"load_config: preset must be"),
    "load_config overrides [1]": (lambda: bossnas.load_config("quickstart", [1]),
                                  r"overrides must be a list of key=value texts, got \[1\]"),
    "load_config overrides text": (lambda: bossnas.load_config("quickstart", "train.epochs=2"),
                                   r"got the text 'train.epochs=2'; write \['train.epochs=2'\]"),
    "run_search(None)": (lambda: bossnas.run_search(None, "r"), r"run_search: config must be a RunConfig"),
    "run_search('quickstart')": (lambda: bossnas.run_search("quickstart", "r"), r"run_search: config must be a RunConfig"),
    "run_search run_dir=None": (lambda: bossnas.run_search(bossnas.load_config("quickstart"), None),
                                r"run_search: run_dir must be a folder path \(str or Path\), got None"),
    "run_search run_dir=123": (lambda: bossnas.run_search(bossnas.load_config("quickstart"), 123), r"got 123"),
}


@pytest.mark.parametrize("case", sorted(WRONG_TYPES))
def test_adv_18_python_api_wrong_types_are_one_line(case, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    call, match = WRONG_TYPES[case]
    _one_line_api_error(call, match)
    assert not list(tmp_path.iterdir())  # nothing written


@pytest.mark.parametrize("key, value, match", [
    ("train.epochs", "1", r"'train.epochs' is '1' \(str\); expected an integer >= 1"),
    ("train.batch_size", "32", r"'train.batch_size' is '32' \(str\)"),
    ("train.lr", "0.1", r"'train.lr' is '0.1' \(str\); expected a number > 0"),
    ("seed", "0", r"'seed' is '0' \(str\)"),
    ("model.hidden_dim", 0, r"'model.hidden_dim': 0 is out of range; expected an integer >= 1"),
    ("device", "gpu", r"'device': 'gpu' is out of range; expected auto, cpu, cuda or cuda:N"),
    ("train.lr", float("nan"), r"'train.lr' is nan \(float\); expected a number > 0"),
    ("search.rate_split", "val", r"'search.rate_split': 'val' is out of range; expected train or test"),
])
def test_adv_18_run_search_checks_a_config_changed_in_python(key, value, match, tmp_path):
    config = bossnas.load_config("quickstart")
    section, _, name = key.rpartition(".")
    setattr(getattr(config, section) if section else config, name, value)
    _one_line_api_error(lambda: bossnas.run_search(config, tmp_path / "r"), r"^run_search: config key " + match)
    assert not (tmp_path / "r").exists()


def test_adv_27_run_search_flags_must_be_booleans(tmp_path):
    config = bossnas.load_config("quickstart")
    for flag in ("resume", "force", "show_progress"):
        _one_line_api_error(lambda flag=flag: bossnas.run_search(config, tmp_path / "r", **{flag: "no"}),
                            rf"run_search: {flag} must be True or False, got 'no'")
    assert not (tmp_path / "r").exists()


def test_adv_43_api_messages_say_what_was_given(tmp_path):
    import json

    import torch

    # a best_arch.json given as a Path is the same as the path as text
    record = {"space": "nats-sss", "arch": "16:24:8:8:32", "input": [1, 12, 12], "num_classes": 7, "space_options": {}}
    (tmp_path / "best_arch.json").write_text(json.dumps(record))
    model = bossnas.create_model(tmp_path / "best_arch.json")
    assert model(torch.zeros(2, 1, 12, 12)).shape == (2, 7)
    # a retraining folder points at its export, or at the command that writes one
    retrain = tmp_path / "T"
    (retrain / "export").mkdir(parents=True)
    (retrain / "metrics.json").write_text("{}")
    _one_line_api_error(lambda: bossnas.load_exported(retrain), rf"'{re.escape(str(retrain))}' is a `bossnas retrain` "
                                                                r"folder without an export; write one with `bossnas export")
    from bossnas.export import export_model

    export_model(bossnas.create_model(ARCH, num_classes=10, in_channels=1, image_size=8), retrain / "export",
                 fmt="state-dict")
    _one_line_api_error(lambda: bossnas.load_exported(retrain),
                        rf"is not an export folder; its export is '{re.escape(str(retrain / 'export'))}'")
    assert isinstance(bossnas.load_exported(retrain / "export"), torch.nn.Module)


# ------------------------------------------------------------------ issue 21 item 9: timm compatibility
def test_issue_21_9_list_models_is_a_timm_filter_returning_names():
    assert bossnas.list_models("bossnet*") == ["bossnet-t0", "bossnet-t0-nose", "bossnet-t1"]
    assert bossnas.list_models(["*-t1", "*-nose"]) == ["bossnet-t0-nose", "bossnet-t1"]
    assert bossnas.list_models("bossnet*", exclude_filters="*-nose") == ["bossnet-t0", "bossnet-t1"]
    assert set(bossnas.list_models()) >= {"bossnet-t0", "bossnet-t1"} and bossnas.list_models("resnet*") == []
    assert bossnas.list_models(pretrained=True) == []  # no weights ship
    _one_line_api_error(lambda: bossnas.list_models(3), r"list_models: filter must be a pattern")


def test_issue_21_9_pretrained_true_says_no_weights_ship_and_how_to_load_a_file(tmp_path):
    import torch

    _one_line_api_error(lambda: bossnas.create_model("bossnet-t0", pretrained=True),
                        r"create_model\('bossnet-t0', pretrained=True\): bossnas ships no pretrained weights; train them "
                        r"\(`bossnas retrain`, then `bossnas export`\) and load the file with pretrained_path=")
    model = bossnas.create_model(ARCH, num_classes=10, in_channels=1, image_size=8)
    torch.save(model.state_dict(), tmp_path / "w.pt")
    again = bossnas.create_model(ARCH, num_classes=10, in_channels=1, image_size=8, checkpoint_path=tmp_path / "w.pt")
    x = torch.randn(2, 1, 8, 8)
    assert torch.equal(again.eval()(x), model.eval()(x))


def test_issue_21_9_get_and_reset_classifier(tmp_path):
    import torch

    model = bossnas.create_model(ARCH, num_classes=10, in_channels=1, image_size=8).eval()
    head = model.get_classifier()
    assert isinstance(head, torch.nn.Linear) and head.out_features == 10
    features = head.in_features
    model.reset_classifier(3)
    assert model.get_classifier().out_features == 3 and model(torch.zeros(2, 1, 8, 8)).shape == (2, 3)
    assert model.bossnas_spec["num_classes"] == 3
    model.reset_classifier(0)  # timm: no classifier, the pooled features come out
    assert isinstance(model.get_classifier(), torch.nn.Identity)
    assert model(torch.zeros(2, 1, 8, 8)).shape == (2, features)
    model.reset_classifier(5)
    assert model(torch.zeros(2, 1, 8, 8)).shape == (2, 5)
    _one_line_api_error(lambda: model.reset_classifier(-1), r"reset_classifier: num_classes must be an integer >= 0")
    for name in ("hytra/" + bossnas.create_space("hytra").arch_example(), "mbconv/" + bossnas.create_space("mbconv").arch_example()):
        other = bossnas.create_model(name, num_classes=4, image_size=32, width_mult=0.25)
        other.reset_classifier(6)
        assert other(torch.zeros(1, 3, 32, 32)).shape == (1, 6)
