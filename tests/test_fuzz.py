"""Property tests (hypothesis): architecture strings of every registered space, config
overrides and score / ground-truth CSVs of every shape give a correct result or one
BossNASError with a one-line message, never another exception.

BOSSNAS_FUZZ_SCALE=20 runs 20 times as many examples (a longer fuzzing campaign).
"""

import collections
import csv
import io
import math
import os

import numpy as np
import pytest
import torch
import yaml
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from scipy import stats

from bossnas.config import _CHECKS, all_keys, config_from_dict, load_config
from bossnas.data.datasets import load_data
from bossnas.errors import BossNASError, one_line
from bossnas.evaluation.correlation import correlate_files
from bossnas.models import is_search_record, resolve_model
from bossnas.spaces import create_space, list_spaces

SPACES = list_spaces()
SCALE = int(os.environ.get("BOSSNAS_FUZZ_SCALE", "1"))


def fuzz(examples: int, **kwargs) -> settings:
    return settings(max_examples=examples * SCALE, deadline=None,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture], **kwargs)


FUZZ = fuzz(150)


def _one_line(exc: BossNASError) -> None:
    """A clear error: a message, printed by the CLI as one line (user input may hold line breaks)."""
    assert type(exc) is BossNASError and str(exc).strip()
    printed = one_line(exc)
    assert "\n" not in printed and "\r" not in printed


# ------------------------------------------------------------------ architecture strings
CHARS = st.characters(blacklist_categories=("Cs",))


@st.composite
def arch_texts(draw, space_name: str):
    """A valid architecture, one with a few random edits, or random text."""
    space = create_space(space_name)
    arch = tuple(draw(st.sampled_from(space.block_paths(b.index))) for b in space.blocks)
    text = space.format_arch(arch)
    kind = draw(st.sampled_from(["valid", "edited", "edited", "random"]))
    if kind == "random":
        return draw(st.text(alphabet=st.one_of(CHARS, st.sampled_from(list(":@ ,-_0123456789ekResAtConv"))), max_size=60))
    if kind == "edited":
        pieces = list(text)
        for _ in range(draw(st.integers(1, 4))):
            i = draw(st.integers(0, len(pieces)))
            op = draw(st.sampled_from(["insert", "delete", "replace"]))
            char = draw(st.one_of(CHARS, st.sampled_from(list(":@ 0123456789\t\n"))))
            if op == "insert":
                pieces.insert(i, char)
            elif pieces:
                i = min(i, len(pieces) - 1)
                if op == "delete":
                    del pieces[i]
                else:
                    pieces[i] = char
        text = "".join(pieces)
    return text


@pytest.mark.parametrize("name", SPACES)
def test_architecture_strings_parse_or_fail_in_one_line(name):
    space = create_space(name)

    @FUZZ
    @given(arch_texts(name))
    def check(text):
        try:
            arch = space.parse_arch(text)
        except BossNASError as exc:
            _one_line(exc)
            return
        assert len(arch) == len(space.blocks)
        assert all(space.is_allowed(b.index, p) for b, p in zip(space.blocks, arch))
        assert space.parse_arch(space.format_arch(arch)) == arch  # what we write, we read back

    check()


@pytest.mark.parametrize("name", SPACES)
def test_non_ascii_digits_are_rejected(name):
    space = create_space(name)
    text = space.format_arch(tuple(space.block_paths(b.index)[0] for b in space.blocks))
    for digit in ("²", "٣", "８"):
        candidates = [text[:i] + digit + text[i + 1:] for i, c in enumerate(text) if c.isdigit()] or [digit + text]
        for bad in candidates[:3]:
            with pytest.raises(BossNASError) as info:
                space.parse_arch(bad)
            _one_line(info.value)


@st.composite
def names_of_any_length(draw):
    """Architecture strings and names from empty to far past a file name's 255 bytes: valid ones,
    repeated pieces, random text with path characters (``/``, ``..``, NUL)."""
    space_name = draw(st.sampled_from(SPACES))
    space = create_space(space_name)
    valid = space.format_arch(tuple(draw(st.sampled_from(space.block_paths(b.index))) for b in space.blocks))
    kind = draw(st.sampled_from(["valid", "repeated", "random", "prefixed"]))
    if kind == "valid":
        return valid
    if kind == "repeated":
        return draw(st.sampled_from([valid, "8:", "/", "a", "..", ".json"])) * draw(st.integers(1, 600))
    if kind == "random":
        return draw(st.text(alphabet=st.one_of(CHARS, st.sampled_from(list("/.:\x00~ 8"))), max_size=1200))
    return f"{space_name}/" + draw(st.sampled_from([valid, "x" * 300, valid * 60, ""]))


@FUZZ
@given(text=names_of_any_length(), space=st.sampled_from([None, *SPACES]))
def test_names_of_any_length_resolve_or_fail_in_one_line(text, space):
    is_search_record(text)  # probing a name as a path never raises (OSError 36 for > 255 bytes)
    try:
        spec = resolve_model(text, space)
    except BossNASError as exc:
        _one_line(exc)
        return
    parsed = create_space(spec.space).parse_arch(spec.arch)
    assert len(parsed) == len(create_space(spec.space).blocks)


# ------------------------------------------------------------------ image folders
IMAGE_MODES = ["L", "1", "LA", "I;16", "RGB", "RGBA", "P"]
GRAY = {"L", "1", "LA", "I;16"}


def _write_image(path, mode: str, width: int, height: int, seed: int) -> None:
    from PIL import Image

    pixels = np.random.default_rng(seed).integers(0, 255, (height, width, 3), dtype=np.uint8)
    Image.fromarray(pixels, "RGB").convert(mode).save(path)


@fuzz(25)
@given(files=st.lists(st.tuples(st.sampled_from(IMAGE_MODES), st.sampled_from([4, 6, 9, 16]), st.sampled_from([4, 5, 16])),
                      min_size=4, max_size=10),
       image_size=st.sampled_from([None, None, 6]), split=st.booleans())
def test_image_folders_of_mixed_modes_and_sizes_load_as_the_majority(tmp_path_factory, files, image_size, split):
    root = tmp_path_factory.mktemp("images")
    for i, (mode, width, height) in enumerate(files):
        classes = ("a", "b")[i % 2]
        folder = root / (("train" if i >= 2 else "test") if split else "") / classes
        folder.mkdir(parents=True, exist_ok=True)
        _write_image(folder / f"{i:02d}.png", mode, width, height, i)
    if split:  # both classes in both splits
        for split_name, cls in (("train", "a"), ("train", "b")):
            if not any((root / split_name / cls).glob("*.png")):
                _write_image(root / split_name / cls / "x.png", "RGB", 4, 4, 99)
                files.append(("RGB", 4, 4))
    try:
        data = load_data("imagefolder", root=str(root), image_size=image_size)
    except BossNASError as exc:
        _one_line(exc)
        assert "at least two class folders" in str(exc)
        return
    sides = collections.Counter(max(w, h) for _, w, h in files)
    majority = sorted(sides.items(), key=lambda item: (-item[1], item[0]))[0][0]
    channels = 1 if all(mode in GRAY for mode, _, _ in files) else 3
    assert (data.in_channels, data.image_size) == (channels, image_size or majority)
    for images in (data.train.images, data.test.images):
        assert images.dtype == torch.uint8 and tuple(images.shape[1:]) == (channels, data.image_size, data.image_size)
    assert len(data.train) + len(data.test) == len(files)
    assert "\n" not in data.note and f"{data.image_size}x{data.image_size}" in data.note


# ------------------------------------------------------------------ config overrides
WEIRD_KEYS = ["train", "model.space_options", "train.epochs.x", "train..lr", "", " ", "nope", "train.epoch",
              "search.max_flops.x", "a\nb", ".", "train.", "data.name.", "seed.x"]
KEYS = st.one_of(st.sampled_from(all_keys()), st.sampled_from(["model.space_options.width_mult", "model.space_options.a.b"]),
                 st.sampled_from(WEIRD_KEYS))
RAW = ["none", "null", "true", "false", "1e3", "2.5M", "3.4G", "cuda:1", "cuda:x", "cuda:", "cuda:١", "[1, 2", "{a: 1}", "",
       "0", "-1", "inf", "-inf", "nan", ".nan", "1e400", "1e20", "2**63", "0x10", "1_000", "2001-12-14", "!!binary aGVsbG8=",
       "!!set {a, b}", "{1: 2, b: 3}", "[a, {b: c}]", "~", "'quoted'", "- 1", "k", "1.5", "9223372036854775807",
       "9223372036854775808", "fair", "uniform", "lars", "bf16", "imagenet", "cifar10", "imagefolder", "x: [", "&a 1", "*a"]
VALUES = st.one_of(
    st.sampled_from(RAW),
    st.integers(-(10**30), 10**30).map(str),
    st.floats(allow_nan=True, allow_infinity=True).map(repr),
    st.text(max_size=12),
)


def _get(config, key):
    value = config
    for part in key.split("."):
        value = getattr(value, part)
    return value


def _valid_config(config) -> None:
    for key, (valid, _) in _CHECKS.items():
        assert valid(_get(config, key)), key
    config.fingerprint()  # every value can be hashed into the checkpoint
    # what config.yaml stores reads back as the same config (--resume reads it)
    again = config_from_dict(yaml.safe_load(yaml.safe_dump(config.to_dict(), sort_keys=False)))
    assert again.to_dict() == config.to_dict() and again.fingerprint() == config.fingerprint()


@fuzz(400)
@given(st.lists(st.tuples(KEYS, VALUES), max_size=4))
def test_config_overrides_give_a_valid_config_or_one_line(pairs):
    try:
        config = load_config(None, [f"{k}={v}" for k, v in pairs])
    except BossNASError as exc:
        _one_line(exc)
        return
    _valid_config(config)


def _int_keys() -> list[str]:
    import typing

    from bossnas.config import RunConfig

    keys = []
    for key in all_keys():
        section = RunConfig
        *parents, last = key.split(".")
        for part in parents:
            section = typing.get_type_hints(section)[part]
        hint = typing.get_type_hints(section)[last]
        if hint is int or hint == (int | None):
            keys.append(key)
    return keys


INT_KEYS = _int_keys()


@fuzz(300)
@given(key=st.sampled_from(INT_KEYS), value=st.integers(-(10**40), 10**40), form=st.sampled_from(["plain", "+", "e0", ".0"]),
       noise=st.sampled_from(["", "_", "k", "٠", " ", "0x", ".5"]))
def test_integer_keys_are_exact_or_one_line(key, value, form, noise):
    """Any integer written in a form the config accepts is read exactly (no float round
    trip); with an underscore, suffix, non-ASCII digit, hex prefix or fraction it is refused."""
    text = {"plain": str(value), "+": f"+{value}" if value >= 0 else str(value), "e0": f"{value}e0", ".0": f"{value}.0"}[form]
    if noise in ("_", "٠") and len(text.lstrip("+-")) > 1:
        text = text[:-1] + noise + text[-1]
    elif noise in ("_", "٠"):
        noise = ""  # one digit: nowhere to put it
    elif noise in ("k", ".5"):
        text += noise
    elif noise == "0x":
        text = "0x" + text.lstrip("+-")
    elif noise == " ":
        text = f" {text} "  # surrounding spaces are not part of the value
    try:
        config = load_config(None, [f"{key}={text}"])
    except BossNASError as exc:
        _one_line(exc)
        assert noise not in ("", " ") or not _CHECKS.get(key, (lambda v: True, ""))[0](value), (key, text)
        return
    assert noise in ("", " "), (key, text)
    assert _get(config, key) == value and type(_get(config, key)) is int


SECTIONS = {"train": ["epochs", "lr", "sampling", "paths_per_step", "x"], "data": ["name", "image_size", "root"],
            "model": ["hidden_dim", "space_options", "adapter_width"], "search": ["max_flops", "rate_images"]}


@st.composite
def yaml_texts(draw):
    """YAML config files, values written unquoted: '2001-12-14' is a date, '[1' an error."""
    lines = []
    for section in draw(st.lists(st.sampled_from([*SECTIONS, "seed", "space", "oops"]), max_size=4)):
        if section not in SECTIONS:
            lines.append(f"{section}: {draw(VALUES)}")
            continue
        lines.append(f"{section}:")
        for key in draw(st.lists(st.sampled_from(SECTIONS[section]), max_size=3)):
            if key == "space_options" and draw(st.booleans()):
                lines.append("  space_options:")
                lines += [f"    {draw(st.sampled_from(['width_mult', 'x', '1', 'a b']))}: {draw(VALUES)}"
                          for _ in range(draw(st.integers(1, 2)))]
            else:
                lines.append(f"  {key}: {draw(VALUES)}")
    if draw(st.integers(0, 5)) == 0:
        lines.insert(draw(st.integers(0, len(lines))), draw(st.text(max_size=10)))
    return "\n".join(lines) + "\n"


@fuzz(300)
@given(text=yaml_texts())
def test_config_files_give_a_valid_config_or_one_line(tmp_path_factory, text):
    path = tmp_path_factory.mktemp("cfg") / "c.yaml"
    path.write_text(text, encoding="utf-8", errors="surrogatepass")
    try:
        config = load_config(str(path))
    except BossNASError as exc:
        _one_line(exc)
        return
    _valid_config(config)


# ------------------------------------------------------------------ CSV files
HEADER_WORDS = ["arch", "architecture", "rating", "loss", "score", "accuracy", "test_accuracy", "top1", "block", "path",
                "widths", "x", ""]
CELLS = st.one_of(
    st.sampled_from(["", "nan", "inf", "-inf", "1e308", "-1e308", "1e-320", "abc", "8:8:8:8:8", " 1 ", "0", "1", "2",
                     "0.5", "-3", "1e400", '"', "a,b", "64:40:48:64:56", "8:8", "16"]),
    st.floats(allow_nan=True, allow_infinity=True).map(repr),
    st.integers(-5, 5).map(str),
    st.text(max_size=6),
)


@st.composite
def csv_files(draw):
    if draw(st.integers(0, 9)) == 0:  # raw bytes: NUL, bad UTF-8, stray quotes
        return draw(st.binary(max_size=120))
    header = draw(st.lists(st.one_of(st.sampled_from(HEADER_WORDS), st.text(max_size=4)), max_size=5))
    names = ["8:8:8:8:8", "16:8:8:8:8", "8:16:8:8:8", "64:40:48:64:56", "x", "8", "16"]
    rows = []
    for _ in range(draw(st.integers(0, 12))):
        width = draw(st.integers(0, len(header) + 2))
        row = [draw(st.sampled_from(names)) if h in ("arch", "architecture", "path") and draw(st.booleans())
               else draw(CELLS) for h in (header + [""] * width)[:width]]
        rows.append(row)
    buffer = io.StringIO()
    if draw(st.booleans()):
        writer = csv.writer(buffer)
        writer.writerow(header)
        writer.writerows(rows)
    else:  # unquoted, as a hand-made file would be
        buffer.write("\n".join(",".join(r) for r in [header] + rows))
    text = buffer.getvalue()
    return text.encode("utf-8", "surrogatepass") if draw(st.booleans()) else ("\ufeff" + text).encode("utf-8", "surrogatepass")


@fuzz(300)
@given(scores=csv_files(), truth=csv_files(), score_col=st.sampled_from([None, "rating", "score", "nope"]),
       truth_col=st.sampled_from([None, "accuracy", "nope"]), lower=st.sampled_from([None, True, False]))
def test_csv_files_of_every_shape_correlate_or_fail_in_one_line(tmp_path_factory, scores, truth, score_col, truth_col, lower):
    folder = tmp_path_factory.mktemp("csv")
    (folder / "scores.csv").write_bytes(scores)
    (folder / "truth.csv").write_bytes(truth)
    try:
        c = correlate_files(folder / "scores.csv", folder / "truth.csv", score_col, truth_col, lower)
    except BossNASError as exc:
        _one_line(exc)
        return
    assert c.count >= 3
    for value in (c.kendall, c.spearman, c.pearson):
        assert math.isfinite(value) and -1 - 1e-9 <= value <= 1 + 1e-9, c


@fuzz(100)
@given(n=st.integers(3, 40), block_table=st.booleans(), data=st.data(),
       scale=st.sampled_from([1.0, 1e-300, 1e300, -1.0]))
def test_valid_csv_files_give_scipy_correlations(tmp_path_factory, n, block_table, data, scale):
    """A correct result: the same numbers as scipy on the same pairs, with the documented sign."""
    space = create_space("nats-sss")
    folder = tmp_path_factory.mktemp("ok")
    values = st.floats(-1e3, 1e3, allow_nan=False)
    if block_table:
        paths = [space.block_paths(b)[:data.draw(st.integers(2, 3))] for b in range(3)]
        block_scores = [[data.draw(values) * scale for _ in p] for p in paths]
        lines = ["block,path,loss"] + [f"{b},{space.format_path(p)},{s!r}" for b in range(3)
                                       for p, s in zip(paths[b], block_scores[b])]
        archs, scores = [], []
        for i0, p0 in enumerate(paths[0]):
            for i1, p1 in enumerate(paths[1]):
                for i2, p2 in enumerate(paths[2]):
                    archs.append(space.format_arch((p0, p1, p2)))
                    scores.append(block_scores[0][i0] + block_scores[1][i1] + block_scores[2][i2])
        lower = True
    else:
        archs = sorted({space.format_arch(tuple(space.block_paths(b)[data.draw(st.integers(0, 7))] for b in range(3)))
                        for _ in range(n)})
        scores = [data.draw(values) * scale for _ in archs]
        lines = ["arch,score"] + [f"{a},{s!r}" for a, s in zip(archs, scores)]
        lower = False
    truth = [data.draw(values) for _ in archs]
    (folder / "s.csv").write_text("\n".join(lines) + "\n")
    (folder / "t.csv").write_text("arch,test_accuracy\n" + "".join(f"{a},{t!r}\n" for a, t in zip(archs, truth)))
    x, y = -np.array(scores) if lower else np.array(scores), np.array(truth)
    assume(len(archs) >= 3 and np.ptp(y) > 0)
    try:
        c = correlate_files(folder / "s.csv", folder / "t.csv")
    except BossNASError as exc:
        _one_line(exc)
        assert np.ptp(x) == 0 or np.ptp(x / np.abs(x).max()) == 0, exc
        return
    assert c.count == len(archs) and c.lower_is_better == lower
    assert c.kendall == pytest.approx(stats.kendalltau(x, y).statistic, abs=1e-9)
    assert c.spearman == pytest.approx(stats.spearmanr(x, y).statistic, abs=1e-9)
    assert c.pearson == pytest.approx(stats.pearsonr(x / np.abs(x).max(), y).statistic, abs=1e-6)


def test_csv_with_byte_order_mark_and_spaces_reads(tmp_path):
    (tmp_path / "s.csv").write_bytes("\ufeffarch , rating\n8:8:8:8:8, 3\n16:8:8:8:8,2\n8:16:8:8:8 ,1\n".encode())
    (tmp_path / "t.csv").write_bytes("\ufeffarch,accuracy\n8:8:8:8:8,90\n16:8:8:8:8,91\n8:16:8:8:8,92\n".encode())
    c = correlate_files(tmp_path / "s.csv", tmp_path / "t.csv")
    assert (c.count, c.kendall, c.lower_is_better) == (3, 1.0, True)


# ------------------------------------------------------------------ metrics records (bossnas plot)
JSON_VALUES = st.one_of(st.none(), st.booleans(), st.integers(-5, 10**400), st.floats(allow_nan=False),
                        st.text(max_size=5), st.lists(st.integers(0, 3), max_size=2))


@st.composite
def metrics_records(draw):
    """A record as metrics.jsonl could hold it: a writer's record with some fields retyped, dropped or added."""
    kind = draw(st.sampled_from(["step", "step", "eval", "epoch", "other"]))
    record = {"kind": kind, "block": draw(st.sampled_from([None, 0, 1])), "epoch": 0, "step": draw(st.integers(0, 4)),
              "loss": draw(st.floats(0, 10)), "lr": 0.1, "top1": 50.0}
    for name in draw(st.lists(st.sampled_from(["block", "step", "loss", "lr", "top1", "epoch"]), max_size=2)):
        if draw(st.booleans()):
            record[name] = draw(JSON_VALUES)
        else:
            record.pop(name, None)
    return {k: v for k, v in record.items() if not (k == "block" and v is None and draw(st.booleans()))}


@fuzz(30)
@given(records=st.lists(metrics_records(), min_size=1, max_size=8), data=st.data())
def test_metrics_records_are_drawn_or_refused_in_one_line(tmp_path_factory, records, data):
    import json

    from bossnas.plot_curves import loss_curves, loss_figure, run_records

    folder = tmp_path_factory.mktemp("metrics")
    (folder / "config.yaml").write_text("space: nats-sss\n")
    text = "".join(json.dumps(r) + "\n" for r in records)
    if data.draw(st.booleans()):  # a cut last line
        text = text[: data.draw(st.integers(0, len(text)))]
    (folder / "metrics.jsonl").write_text(text)
    try:
        checked = run_records(folder)
    except BossNASError as exc:
        _one_line(exc)
        return
    curves = loss_curves(checked, notes := [])
    steps = {(r.get("block"), r["step"]) for r in checked if r["kind"] == "step"}
    assert sum(len(c.steps) for c in curves) == len(steps)  # every logged step once
    assert all(c.steps == sorted(c.steps) for c in curves) and all(isinstance(n, str) for n in notes)
    if data.draw(st.integers(0, 3)) == 0:  # a figure takes a third of a second: draw some
        loss_figure(curves, "fuzz")  # draws whatever passed the checks (gaps for null and huge values)


# ------------------------------------------------------------------ the Python API's argument types
ANY_VALUE = st.one_of(st.none(), st.booleans(), st.integers(-3, 2**70), st.floats(), st.text(max_size=8), st.binary(max_size=4),
                      st.lists(st.integers(0, 3), max_size=2), st.dictionaries(st.text(max_size=3), st.integers(), max_size=2))
COUNT = st.one_of(st.integers(-2, 40), ANY_VALUE)


@fuzz(60)
@given(space=st.one_of(st.sampled_from(SPACES), ANY_VALUE), in_channels=COUNT, image_size=COUNT, num_classes=COUNT,
       option=st.one_of(st.none(), st.tuples(st.sampled_from(["bogus", "width_mult", "stem"]), ANY_VALUE)))
def test_create_space_arguments_build_or_fail_in_one_line(space, in_channels, image_size, num_classes, option):
    kwargs = {"in_channels": in_channels, "image_size": image_size, "num_classes": num_classes}
    if option is not None:
        kwargs[option[0]] = option[1]
    try:
        s = create_space(space, **kwargs)
    except BossNASError as exc:
        _one_line(exc)
        return
    assert s.in_channels == in_channels and s.num_classes == num_classes


@fuzz(60)
@given(name=st.one_of(st.sampled_from(["nats-sss/8:8:8:8:8", "8:16:8:8:8", "bossnet-t0"]), ANY_VALUE),
       num_classes=COUNT, in_channels=COUNT, image_size=COUNT, pretrained_path=st.one_of(st.none(), ANY_VALUE),
       pretrained=st.one_of(st.just(False), ANY_VALUE))
def test_create_model_arguments_build_or_fail_in_one_line(tmp_path_factory, name, num_classes, in_channels, image_size,
                                                          pretrained_path, pretrained):
    from bossnas.models import create_model

    if isinstance(name, str) and name.startswith("bossnet") and num_classes not in (None, 1, 2):
        num_classes = 2  # a full-size HyTra network per example is too slow for a fuzz campaign
    if isinstance(pretrained_path, str):
        pretrained_path = tmp_path_factory.mktemp("w") / "missing.pt"
    try:
        model = create_model(name, num_classes=num_classes, in_channels=in_channels, image_size=image_size,
                             pretrained_path=pretrained_path, pretrained=pretrained)
    except BossNASError as exc:
        _one_line(exc)
        return
    assert isinstance(model, torch.nn.Module) and model.bossnas_spec["name"]


@fuzz(80)
@given(preset=st.one_of(st.sampled_from(["quickstart", "nats-cifar10"]), ANY_VALUE),
       overrides=st.one_of(st.none(), ANY_VALUE, st.lists(st.one_of(st.sampled_from(["train.epochs=2", "seed=3"]),
                                                                    ANY_VALUE), max_size=2)),
       run_dir=st.one_of(ANY_VALUE), flag=ANY_VALUE)
def test_load_config_and_run_search_arguments_are_checked_in_one_line(tmp_path_factory, preset, overrides, run_dir, flag):
    import bossnas

    try:
        config = bossnas.load_config(preset, overrides)
    except BossNASError as exc:
        _one_line(exc)
        return
    assert isinstance(config, bossnas.RunConfig)
    config.train.epochs = flag  # a field set in Python, of any type
    here = tmp_path_factory.mktemp("api")
    run_dir = here / "r" if isinstance(run_dir, str) and run_dir else run_dir
    with pytest.raises(BossNASError) as info:  # no search runs here: every call below is refused before any work
        bossnas.run_search(config if not isinstance(flag, int) or isinstance(flag, bool) or flag < 1 else None, run_dir)
    _one_line(info.value)
    assert not (here / "r").exists()
    try:
        bossnas.load_exported(run_dir)
    except BossNASError as exc:
        _one_line(exc)
