"""A newcomer's first day: time you can plan, a CLI that follows the conventions, TensorBoard
pictures, spaces of one's own, and docs written for a reader who has only the repository."""

import io
import json
import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import TINY, run_cli
from rich.console import Console

from bossnas.errors import BossNASError
from bossnas.utils.progress import BlockPlan, RetrainProgress, SearchProgress

REPO = Path(__file__).resolve().parents[1]


class FakeClock:
    """A clock the test moves by hand: no test here depends on how fast the machine is."""

    def __init__(self):
        self.now = 100.0

    def __call__(self) -> float:
        return self.now

    def tick(self, seconds: float) -> None:
        self.now += seconds


# ------------------------------------------------------------------ 1: what a run will cost
def _train(progress: SearchProgress, clock: FakeClock, block: int, steps: int, seconds: list[float], start: int = 0):
    progress.training(block, start)
    fields = {}
    for i in range(steps):
        clock.tick(seconds[i % len(seconds)])
        fields = progress.training(block, start + i + 1)
    return fields


def test_estimate_after_the_first_steps_covers_every_block_and_its_rating():
    clock = FakeClock()
    # 3 blocks of 10 steps; rating a path costs 0.5 steps until a rating is timed
    plans = [BlockPlan(10, 64, 0.5), BlockPlan(10, 64, 0.5), BlockPlan(10, 8, 0.5)]
    progress = SearchProgress(plans, clock=clock)
    assert progress.remaining_seconds() is None and progress.fields(0) == {"run": "0/3 blocks done"}
    progress.training(0, 0)
    clock.tick(9.0)  # the first step: one-off costs, left out of the rate once later steps are timed
    progress.training(0, 1)
    assert progress.estimate_line(0) is None  # one step is no probe yet
    for step in range(2, 5):
        clock.tick(2.0)
        progress.training(0, step)
    assert progress.step_seconds(0) == pytest.approx(2.0)
    # left: 6 steps of block 0, 20 of blocks 1-2 at the same rate; 64 + 64 + 8 paths at 0.5 x 2 s
    left = 26 * 2.0 + 136 * 1.0
    assert progress.remaining_seconds() == pytest.approx(left)
    line = progress.estimate_line(0)
    assert line == ("estimate on this machine: about 3 min for the whole run, 3 min left (block 0 at 2 s/step over "
                    "3 steps; blocks not reached yet assumed to take the same per step)")  # 15 s done + 188 s left
    assert progress.estimate_line(0) is None  # said once
    assert progress.fields(0) == {"run": "0/3 blocks done, 3 min left"}
    # block 0's rating is timed: 64 paths at 0.25 s; later blocks' ratings take that rate
    clock.tick(12.0)
    progress.training(0, 10)
    progress.rating(0, 0)
    for done in (16, 32, 48, 64):
        clock.tick(4.0)
        progress.rating(0, done)
    progress.rated(0)
    assert progress.path_seconds(1) == pytest.approx(0.25)
    # block 1 runs twice as slow per step as block 0: block 2 is assumed to take block 1's time
    _train(progress, clock, 1, 4, [4.0])
    assert progress.step_seconds(2) == pytest.approx(4.0)
    assert progress.remaining_seconds() == pytest.approx(6 * 4.0 + 64 * 0.25 + 10 * 4.0 + 8 * 0.25)
    assert progress.fields(1) == {"run": "1/3 blocks done, 82 s left"}


def test_durations_read_as_a_plan_reads_them():
    from bossnas.utils.progress import minutes

    assert [minutes(s) for s in (0.2, 30, 600, 3 * 3600, 5 * 86400)] == ["1 s", "30 s", "10 min", "3.0 h", "5 days"]


def test_estimate_of_a_resumed_run_counts_only_what_is_left():
    clock = FakeClock()
    progress = SearchProgress([BlockPlan(10, 4, 1.0)] * 3, clock=clock)
    progress.resume_at(2, steps=6)  # blocks 0 and 1 done, block 2 at step 6
    _train(progress, clock, 2, 3, [1.0], start=6)
    assert progress.remaining_seconds() == pytest.approx(1 * 1.0 + 4 * 1.0)
    assert progress.fields(2)["run"] == "2/3 blocks done, 5 s left"


def test_an_earlier_runs_rates_give_an_estimate_before_the_first_step_and_minutes_for_presets(monkeypatch, tmp_path):
    from bossnas.commands.presets import describe_preset
    from bossnas.config import load_config
    from bossnas.train import estimate
    from bossnas.train.budget import nominal_input, search_cost

    monkeypatch.setenv("BOSSNAS_CACHE_DIR", str(tmp_path / "cache"))
    config = load_config("quickstart")
    channels, side = nominal_input(config)
    assert (channels, side) == (1, 16)
    signature = estimate.step_signature(config, channels, side, "cpu")
    assert estimate.known_rates(signature) is None
    assert describe_preset("quickstart")[2] == "on this machine: not timed yet (a run with these settings times its first steps)"
    # a run measured block 0's steps only (stopped after its estimate), then a later run all blocks
    estimate.record_rates(signature, 3, {0: 0.5}, {})
    assert estimate.known_rates(signature).step_seconds == [0.5, None, None]
    estimate.record_rates(signature, 3, {1: 1.0, 2: 2.0}, {0: 0.1, 1: 0.1, 2: 0.2})
    known = estimate.known_rates(signature)
    assert known.step_seconds == [0.5, 1.0, 2.0] and known.path_seconds == [0.1, 0.1, 0.2]
    # the epochs, the learning rate and the image count do not change a step's time: the same entry
    longer = load_config("quickstart", ["train.epochs=3", "train.lr=0.1", "data.train_images=500"])
    assert estimate.known_rates(estimate.step_signature(longer, channels, side, "cpu")) == known
    assert estimate.known_rates(estimate.step_signature(load_config("quickstart", ["train.batch_size=32"]),
                                                        channels, side, "cpu")) is None
    # the preset's minutes: 3 blocks x 12 steps and each block's paths (64, 64, 8) at those rates
    images = search_cost(config).images
    steps = images // config.train.batch_size
    expected = steps * (0.5 + 1.0 + 2.0) + 64 * 0.1 + 64 * 0.1 + 8 * 0.2
    assert estimate.preset_seconds(config, images, channels, side) == pytest.approx(expected)
    assert describe_preset("quickstart")[2] == ("on this machine: about 56 s (from the rates an earlier run with "
                                                "these settings measured here)")
    clock = FakeClock()
    plans = estimate.block_plans(config, __import__("bossnas").create_space("nats-sss", in_channels=1, image_size=16),
                                 steps, {0: 64})
    line = SearchProgress(plans, known, clock=clock).known_line()
    assert line.startswith("estimate on this machine: about 56 s for the rest of the run (rates of an earlier run")
    # a damaged cache is no error: it is only ignored
    (tmp_path / "cache" / estimate.RATE_CACHE).write_text("{not json")
    assert estimate.known_rates(signature) is None


def test_a_search_starts_with_the_estimate_an_earlier_run_here_gives(monkeypatch, tmp_path):
    from bossnas.config import load_config
    from bossnas.train import estimate
    from bossnas.train.runner import BlockwiseSearch

    monkeypatch.setenv("BOSSNAS_CACHE_DIR", str(tmp_path / "cache"))
    text = io.StringIO()
    console = Console(file=text, width=300, highlight=False)
    search = BlockwiseSearch.open(load_config("quickstart", TINY), tmp_path / "r", console=console, show_progress=False)
    timer = search.timer
    assert [p.steps for p in timer.progress.plans] == [3, 3, 3] and timer.progress.plans[0].paths == 64
    timer.begin()
    assert "estimate" not in text.getvalue()  # nothing known on this machine yet
    estimate.record_rates(timer.signature, 3, {0: 1.0, 1: 1.0, 2: 1.0}, {0: 0.5, 1: 0.5, 2: 0.5})
    del search.timer  # a new run with the same settings
    search.timer.begin()
    assert text.getvalue().strip() == ("estimate on this machine: about 77 s for the rest of the run (rates of an "
                                       "earlier run here with the same step settings; refined after the first steps)")
    search.folder.unlock()


# ------------------------------------------------------------------ 2: retraining: its epochs and evaluations
def test_retrain_estimate_names_an_epoch_an_evaluation_and_the_whole():
    clock = FakeClock()
    # 3 epochs of 100 steps of 128 images; 3 evaluations left of model + EMA on 1,000 images
    progress = RetrainProgress(300, 0, 100, 128, evaluations=3, eval_images=2000, test_images=1000, models=2, clock=clock)
    progress.training(1)
    assert progress.estimate_line() is None
    clock.tick(3 * 0.6)
    progress.training(4)
    assert progress.step_seconds() == pytest.approx(0.6)
    # an evaluated image, until timed: a third of a trained image's time
    assert progress.image_seconds() == pytest.approx(0.6 / 128 / 3)
    left = 296 * 0.6 + 3 * 2000 * 0.6 / 128 / 3
    assert progress.remaining_seconds() == pytest.approx(left)
    assert progress.estimate_line() == (
        "estimate on this machine: an epoch about 60 s (0.6 s/step), a test evaluation about 3 s (the plain and the "
        "EMA model on 1,000 images; 3 to go: train.eval_every=N tests every N epochs, data.test_images=N on fewer "
        "images), the whole retraining about 3 min")
    progress.evaluating(0)
    clock.tick(1.0)
    progress.evaluating(100)
    clock.tick(4.0)
    progress.evaluating(500)
    assert progress.image_seconds() == pytest.approx(0.01)  # measured now
    progress.evaluated()
    assert progress.evaluations == 2


def test_retrain_shows_its_evaluations_and_tests_on_a_subset_when_asked(tmp_path):
    from bossnas.retrain import Retrainer, retrain_config

    config, out = retrain_config("16:16:16:16:16", ["data.image_size=8", "data.train_images=128", "train.epochs=2",
                                                    "train.batch_size=64", "data.test_images=50"], out=tmp_path / "r")
    text = io.StringIO()
    console = Console(file=text, width=200, highlight=False)
    metrics = Retrainer.open(config, out, console=console).run()
    printed = text.getvalue()
    assert metrics["data"]["test_images"] == 50 and metrics["test"]["images"] == 50
    assert re.search(r"^  epoch 1 test \(model, EMA\): 100/100 in ", printed, re.M), printed
    assert re.search(r"^  final test \(model, EMA\): 100/100 in ", printed, re.M), printed
    assert "estimate on this machine: an epoch about " in printed
    with pytest.raises(BossNASError, match="retrain key 'data.test_images': 0 is out of range"):
        retrain_config("16:16:16:16:16", ["data.test_images=0"], out=tmp_path / "x")


# ------------------------------------------------------------------ 4: a fast start, and signals in it
def _fake_torch(tmp_path: Path, body: str) -> dict:
    """An environment whose `import torch` runs ``body`` instead (the real torch's metadata stays)."""
    (tmp_path / "torch").mkdir()
    (tmp_path / "torch" / "__init__.py").write_text(body)
    return {**os.environ, "PYTHONPATH": f"{tmp_path}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}


def test_version_and_help_never_import_torch(tmp_path):
    env = _fake_torch(tmp_path, "raise ImportError('torch was imported')\n")
    from importlib import metadata

    for args in (["--version"], ["--help"], ["-h"], ["run", "--help"], ["retrain", "-h"], ["latency", "--help"]):
        res = subprocess.run([sys.executable, "-m", "bossnas", *args], capture_output=True, text=True, env=env, timeout=60)
        assert res.returncode == 0 and "torch was imported" not in res.stderr, (args, res.stderr)
    res = subprocess.run([sys.executable, "-m", "bossnas", "--version"], capture_output=True, text=True, env=env, timeout=60)
    assert res.stdout.strip() == f"bossnas 0.1.0 (torch {metadata.version('torch')})"


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_a_signal_while_a_command_imports_torch_is_one_line(tmp_path, sig):
    # issue 20, adversarial defect 16: torch was imported in cli.main(), outside every guard
    env = _fake_torch(tmp_path, f"import os, signal, time\nos.kill(os.getpid(), {int(sig)})\ntime.sleep(30)\n")
    res = subprocess.run([sys.executable, "-m", "bossnas", "run", "--out", str(tmp_path / "run")], capture_output=True,
                         text=True, env=env, timeout=60, preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    assert res.returncode == 128 + sig, res.stderr
    assert res.stderr.strip().splitlines() == [f"error: interrupted by {sig.name}"]
    assert not (tmp_path / "run").exists()


# ------------------------------------------------------------------ 6, 7: every command's help, the same way
def _help(monkeypatch, capsys, *args: str) -> str:
    monkeypatch.setenv("COLUMNS", "100")
    code, out, err = run_cli(monkeypatch, capsys, *args)
    assert code == 0, err
    return out


def _commands() -> list[str]:
    from bossnas.cli import app

    return [info.callback.__name__ for info in app.registered_commands]


def test_every_help_follows_the_same_conventions(monkeypatch, capsys):
    import typer

    from bossnas.cli import app

    group = typer.main.get_command(app)
    for name in _commands():
        text = _help(monkeypatch, capsys, name, "-h")
        assert text == _help(monkeypatch, capsys, name, "--help")
        usage = text.splitlines()[0]
        assert usage.startswith("Usage: ") and f"bossnas {name} [OPTIONS]" in usage and "{" not in usage and "<" not in usage, usage
        assert "-h, --help" in text and not re.search(r"<(bool|str|int|path|float)", text), text
        assert "(default" not in text, text  # every default in one place: [default: X]
        for param in group.commands[name].params:
            if param.param_type_name == "argument":
                assert param.name.upper() in usage
                continue
            long = next(o for o in param.opts if o.startswith("--"))
            (line,) = [line for line in text.splitlines() if re.match(rf"  (-\w, )?{re.escape(long)}(?![\w-])", line)]
            after = line.split(long, 1)[1]
            if param.is_flag:  # an on/off flag takes no value
                assert not re.match(r" [A-Z]{2,}", after), line
            else:
                assert re.match(r" [A-Z]{2,}", after), line
    top = _help(monkeypatch, capsys, "-h")
    assert "-h, --help" in top and "--version" in top
    summary = " ".join(top.split("presets", 1)[1].split("show", 1)[0].split())
    assert summary.endswith("how long it takes here once known.")  # whole, not cut off mid-sentence
    # the onnx extra survives (rich markup used to swallow "[onnx]"), and says what works from a clone
    assert 'pip install -e ".[onnx]"' in " ".join(_help(monkeypatch, capsys, "export", "-h").split())
    assert 'pip install -e ".[onnx]"' in " ".join(top.split())


def test_defaults_are_shown_and_device_defaults_are_stated(monkeypatch, capsys):
    run = " ".join(_help(monkeypatch, capsys, "run", "-h").split())
    assert "auto | cpu | cuda | cuda:N [default: auto]" in run and "[default: quickstart]" in run
    latency = " ".join(_help(monkeypatch, capsys, "latency", "-h").split())
    assert "the device you deploy on, which need not be the one you search on [default: cpu]" in latency
    assert "images per call [default: 1; x>=1]" in latency
    retrain = " ".join(_help(monkeypatch, capsys, "retrain", "-h").split())
    assert "train.eval_every=N" in retrain and "data.test_images=N" in retrain and "[default: 30]" in retrain


def test_run_train_and_retrain_take_the_same_shortcuts(monkeypatch, capsys, tmp_path):
    for name in ("run", "train", "retrain"):
        text = _help(monkeypatch, capsys, name, "-h")
        for flag in ("--epochs INTEGER", "--batch-size INTEGER", "--lr FLOAT", "--device TEXT", "--data TEXT", "--quiet"):
            assert flag in text, (name, flag)
    # wired to their keys: a bad value is the key's own one-line error, before anything is written
    for args in (["run", "--epochs", "0"], ["train", "--epochs", "0"], ["retrain", "16:16:16:16:16", "--epochs", "0"]):
        code, _, err = run_cli(monkeypatch, capsys, *args, "--out", str(tmp_path / "x"))
        assert code == 2 and "'train.epochs': 0 is out of range" in err, err
    code, _, err = run_cli(monkeypatch, capsys, "run", "--lr", "-1", "--out", str(tmp_path / "x"))
    assert code == 2 and "'train.lr': -1.0 is out of range" in err
    assert not (tmp_path / "x").exists()


def test_resume_is_a_flag_that_takes_no_value(monkeypatch, capsys, tmp_path):
    code, _, err = run_cli(monkeypatch, capsys, "retrain", "--resume", "true", "--out", str(tmp_path / "r"))
    assert code == 2 and "true" in err  # `true` is no value of --resume: it is read as the architecture


# ------------------------------------------------------------------ 8: bossnas show
def test_show_prints_an_aligned_table_of_layers_that_adds_up(monkeypatch, capsys):
    code, out, err = run_cli(monkeypatch, capsys, "show", "64:40:48:64:56")
    assert code == 0, err
    lines = out.splitlines()
    header = lines[1]
    assert header.split() == ["layer", "block", "choice", "op", "module", "output", "params", "FLOPs"]
    rows = lines[2:-1]
    assert [r.split()[0] for r in rows] == ["stem", "1", "2", "3", "4", "5", "head", "total"]
    # right-aligned numbers end where their header ends
    end = header.index("params") + len("params")
    assert all(r[:end].endswith(r.split()[-2]) for r in rows)
    params = [int(r.split()[-2].replace(",", "")) for r in rows]
    assert sum(params[:-1]) == params[-1] == 548_202
    assert rows[-1].split()[-1] == "480.24M" and lines[-1] == "params 548,202  FLOPs 480.24M  multiply-adds 240.12M"
    assert rows[1].split()[:6] == ["1", "0", "64", "cell", "Cell", "64x32x32"]


def test_layer_rows_add_up_to_the_totals_in_every_space():
    from bossnas.search.costs import arch_cost
    from bossnas.search.layer_costs import layer_rows
    from bossnas.spaces import create_space, list_spaces

    for name in list_spaces():
        space = create_space(name, image_size=32)
        arch = space.parse_arch(space.arch_example())
        rows = layer_rows(space, arch)
        cost = arch_cost(space, arch)
        assert sum(r.params for r in rows) == cost.params and sum(r.flops for r in rows) == cost.flops, name
        assert [r.name for r in rows if r.name.isdigit()] == [str(i + 1) for i in range(space.num_layers)], name


# ------------------------------------------------------------------ 14: a search space of one's own
NARROW_SPACE = '''
from bossnas.spaces.nats_sss import NATSSizeSpace


class NarrowNats(NATSSizeSpace):
    """The NATS size space with 3 widths per layer: 3^5 = 243 networks."""

    name = "narrow-nats"
    description = "NATS-Bench size space with widths 16, 32, 64"

    def __init__(self, in_channels=3, image_size=None, num_classes=10):
        super().__init__(in_channels, image_size, num_classes)
        self.widths = (16, 32, 64)


class NotASpace:
    name = "nothing"
'''


def test_a_space_defined_outside_the_package_runs_a_search(tmp_path, monkeypatch, capsys):
    from typer.testing import CliRunner

    from bossnas.cli import app
    from bossnas.train import estimate
    from bossnas.train.runner import read_table

    monkeypatch.setenv("BOSSNAS_CACHE_DIR", str(tmp_path / "cache"))
    (tmp_path / "my_spaces.py").write_text(NARROW_SPACE)
    monkeypatch.syspath_prepend(str(tmp_path))
    out = tmp_path / "run"
    res = CliRunner().invoke(app, ["run", "--space", "my_spaces:NarrowNats", *TINY, "--out", str(out), "--quiet"])
    assert res.exit_code == 0, res.output + repr(res.exception)
    record = json.loads((out / "best_arch.json").read_text())
    assert record["space"] == "my_spaces:NarrowNats"
    assert [len(read_table(out / f"block_{b}_ratings.csv")) for b in range(3)] == [9, 9, 3]  # 3 widths per layer
    assert all(int(w) in (16, 32, 64) for w in record["arch"].split(":"))
    # item 1 on the way: the run said what it would cost once its first steps were timed, and kept its rates
    lines = res.output.splitlines()
    estimates = [i for i, line in enumerate(lines) if line.startswith("estimate on this machine: about ")]
    assert len(estimates) == 1 and "for the whole run" in lines[estimates[0]], res.output
    assert estimates[0] > next(i for i, line in enumerate(lines) if line.startswith("block 0 "))
    (entry,) = json.loads((tmp_path / "cache" / estimate.RATE_CACHE).read_text()).values()
    assert len(entry["step_seconds"]) == 3 and all(v > 0 for v in entry["step_seconds"] + entry["path_seconds"])
    # the record names the space the way the run did: show and create_model find it again
    code, printed, err = run_cli(monkeypatch, capsys, "show", str(out))
    assert code == 0 and printed.startswith(f"narrow-nats {record['arch']}"), err
    import bossnas

    model = bossnas.create_model(str(out / "best_arch.json"))
    assert model.bossnas_spec["space"] == "my_spaces:NarrowNats"
    # a config file names it the same way
    (tmp_path / "mine.yaml").write_text("space: my_spaces:NarrowNats\n")
    assert bossnas.load_config(str(tmp_path / "mine.yaml")).space == "my_spaces:NarrowNats"


def test_installed_plugin_spaces_are_names_and_bad_references_are_one_line(tmp_path, monkeypatch):
    import bossnas.spaces as spaces

    (tmp_path / "my_plugin_spaces.py").write_text(NARROW_SPACE)
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setattr(spaces, "_entry_points", lambda: {"narrow": "my_plugin_spaces:NarrowNats"})
    monkeypatch.setattr(spaces, "_SPACES", dict(spaces._SPACES))
    assert "narrow" in spaces.list_spaces()
    assert spaces.create_space("narrow", image_size=8).widths == (16, 32, 64)
    cases = {
        "no_such_module_x:Space": "space 'no_such_module_x:Space': no module named 'no_such_module_x'; install it or put its folder on PYTHONPATH",
        "my_plugin_spaces:Missing": "space 'my_plugin_spaces:Missing': module 'my_plugin_spaces' has no 'Missing'",
        "my_plugin_spaces:NotASpace": "space 'my_plugin_spaces:NotASpace': 'NotASpace' is not a subclass of bossnas.spaces.SearchSpace",
        "my_plugin_spaces:": "space 'my_plugin_spaces:' is not of the form module:Class (e.g. mypkg.spaces:MySpace)",
        "narow": "unknown search space 'narow' (did you mean 'narrow'?)",
    }
    for reference, message in cases.items():
        with pytest.raises(BossNASError) as info:
            spaces.space_class(reference)
        assert str(info.value).startswith(message), str(info.value)


# ------------------------------------------------------------------ 15: docs for a reader who has only the repository
def test_docs_have_an_index_and_cite_no_internal_tracking():
    docs = REPO / "docs"
    index = (docs / "README.md").read_text()
    for page in sorted(docs.glob("*.md")):
        if page.name != "README.md":
            assert f"({page.name})" in index, f"docs/README.md does not say what {page.name} is for"
    for page in [REPO / "README.md", *docs.rglob("*.md")]:
        text = page.read_text()
        for pattern in (r"\bissue \d+", r"\bitem \d+", r"bossnas\.md", r"shared/docs", r"\bspec \d"):
            assert not re.search(pattern, text), f"{page.relative_to(REPO)} cites {pattern!r}"
    assert "imagefolder" in (docs / "your-data.md").read_text()
