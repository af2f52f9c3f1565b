"""Exporting a trained network: a weights bundle for ``create_model`` and a ``torch.export`` program.

Two forms, written side by side into one folder:

- ``model.pt``: ``{"format", "spec", "state_dict"}``; ``create_model(spec["name"], ...,
  pretrained_path="model.pt")`` loads it (``load_exported`` reads the spec for you), and
  ``model.json`` holds the same spec plus the input normalisation and class names;
- ``model.pt2``: a ``torch.export`` ExportedProgram with a dynamic batch dimension, loadable
  with plain torch (``torch.export.load("model.pt2").module()``), no bossnas needed; the
  spec travels inside it as the extra file ``bossnas.json``;
- ``model.onnx`` (when the ``onnx`` extra is installed: ``pip install -e ".[onnx]"`` in a clone of the repository): an
  ONNX graph at opset ``ONNX_OPSET`` with input ``images`` (N x C x H x W, N dynamic) and
  output ``logits``, written by ``torch.onnx.export(..., dynamo=True)`` (the exporter torch
  recommends and defaults to; it works offline and goes through ``torch.export``, the same
  graph capture as ``model.pt2``).

Every export is checked: every written form is loaded back (the ONNX graph in ONNX Runtime)
and must give the original's outputs.

``model.json`` is written last, after every form was written and checked: a folder with
export files but no (or an unreadable) ``model.json``, or one naming a file that is not
there, holds an interrupted export, which the next export completes without ``--force``.
An export with ``--force`` leaves only the forms it wrote: an earlier export's other forms
(another ``--weights`` or ``--format``) are removed, never left beside the new ones.
"""

from __future__ import annotations

import contextlib
import dataclasses
import importlib.util
import io
import json
import logging
import math
import os
import warnings
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from bossnas.errors import BossNASError
from bossnas.models import create_model, load_weights, read_weights_file
from bossnas.utils.io import atomic_write_bytes, atomic_write_json, load_checkpoint

EXPORT_FORMAT = "bossnas-model-v1"
WEIGHTS_FILE = "model.pt"
SPEC_FILE = "model.json"
PROGRAM_FILE = "model.pt2"
#: the name of the spec inside the torch.export archive
PROGRAM_EXTRA = "bossnas.json"
FORMATS = ("all", "state-dict", "program")
#: batch size of the example the program is traced with (1 would be specialised to a constant)
EXAMPLE_BATCH = 2
ONNX_FILE = "model.onnx"
#: opset of model.onnx: 18 is the dynamo exporter's own opset in torch 2.13 (no version
#: conversion step) and ONNX Runtime >= 1.14 runs it
ONNX_OPSET = 18
ONNX_INPUT, ONNX_OUTPUT = "images", "logits"
ONNX_PACKAGES = ("onnx", "onnxscript", "onnxruntime")
ONNX_HINT = 'pip install -e ".[onnx]" in your bossnas clone (onnx, onnxscript, onnxruntime)'
#: every file an export can write; model.json, the manifest, comes last
EXPORT_FILES = (WEIGHTS_FILE, PROGRAM_FILE, ONNX_FILE, SPEC_FILE)
WEIGHT_CHOICES = ("ema", "model")


@dataclass
class Exported:
    """What ``export_model`` wrote and how far the reloaded forms are from the original."""

    folder: Path
    files: list[Path]
    spec: dict
    max_abs_diff: float
    #: ONNX Runtime against PyTorch on the check batch; None when no model.onnx was written
    onnx_max_abs_diff: float | None = None
    #: what happened to files already in the folder (an interrupted export completed, an
    #: earlier export's forms removed), one line each
    notes: list[str] = dataclasses.field(default_factory=list)


def _spec_of(model: nn.Module) -> dict:
    spec = getattr(model, "bossnas_spec", None)
    if not isinstance(spec, dict):
        raise BossNASError("the model carries no bossnas_spec; build it with bossnas.models.create_model")
    return dict(spec)


def strip_ema_prefix(state: dict) -> dict:
    """The network's own state dict from an ``AveragedModel`` one (drops ``n_averaged``, ``module.``)."""
    return {k[len("module."):]: v for k, v in state.items() if k.startswith("module.")}


def model_from_retrain(run_dir: str | Path, weights: str | None = None) -> tuple[nn.Module, dict]:
    """The network of a ``bossnas retrain`` folder with its ``ema`` (default when present) or ``model`` weights."""
    from bossnas.retrain import CHECKPOINT, CHECKPOINT_KIND

    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise BossNASError(f"retraining folder '{run_dir}' does not exist")
    ckpt = load_checkpoint(run_dir / CHECKPOINT)
    if ckpt.get("kind") != CHECKPOINT_KIND:
        raise BossNASError(f"'{run_dir / CHECKPOINT}' is not a retraining checkpoint; export a `bossnas retrain` folder "
                           "or a weights file with --arch")
    spec = ckpt["spec"]
    has_ema = ckpt.get("ema") is not None
    if weights is None:
        weights = "ema" if has_ema else "model"
    if weights not in WEIGHT_CHOICES:
        raise BossNASError(f"--weights must be ema or model, got '{weights}'")
    if weights == "ema" and not has_ema:
        raise BossNASError(f"'{run_dir}' was trained without EMA (train.ema_decay=0); use --weights model")
    model = create_model(spec["name"], num_classes=spec["num_classes"], in_channels=spec["in_channels"],
                         image_size=spec["image_size"], **spec["space_options"])
    model.load_state_dict(strip_ema_prefix(ckpt["ema"]) if weights == "ema" else ckpt["model"])
    state, epochs = ckpt["state"], ckpt["config"]["train"]["epochs"]
    extra = {"weights": weights, "source": str(run_dir), "epochs_trained": state["epoch"], "epochs": epochs,
             "finished": bool(state.get("done")), **{k: ckpt["data"][k] for k in ("mean", "std", "classes")},
             "data": ckpt["data"]["name"]}
    metrics, _ = read_retrain_metrics(run_dir)
    result = (metrics or {}).get("test_ema" if weights == "ema" else "test")
    if _top1(result) is not None:
        extra["test"] = result
    return model.eval(), extra


def _top1(result: object) -> float | None:
    """The test top-1 of a metrics.json entry, or None when it holds no finite number."""
    value = result.get("top1") if isinstance(result, dict) else None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        return None
    return float(value)


def read_retrain_metrics(run_dir: str | Path) -> tuple[dict | None, str | None]:
    """A retraining folder's metrics.json and, when it cannot be used, why (it is only read
    for the test accuracies recorded in model.json and the EMA warning, so a damaged one
    does not stop an export)."""
    from bossnas.retrain import METRICS

    path = Path(run_dir) / METRICS
    if not path.is_file():
        return None, None
    try:
        metrics = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError):
        return None, f"'{path}' is not valid JSON; the export records no test accuracy"
    if not isinstance(metrics, dict):
        return None, f"'{path}' does not hold a mapping; the export records no test accuracy"
    return metrics, None


def model_from_weights(path: str | Path, arch: str | None = None, num_classes: int | None = None,
                       in_channels: int | None = None, image_size: int | None = None) -> nn.Module:
    """A network from a weights file: a bossnas bundle (carries its spec) or a plain state dict + ``arch``."""
    path = Path(path)
    spec = read_bundle_spec(path)
    if spec is None and arch is None:
        raise BossNASError(f"'{path}' carries no architecture; give it with --arch (a model name or architecture string)")
    name, options = arch or spec["name"], {}
    if spec is not None:  # a bundle: its input shape and class count are the defaults
        options = spec["space_options"] if name == spec["name"] else {}
        num_classes = num_classes or spec["num_classes"]
        in_channels = in_channels or spec["in_channels"]
        image_size = image_size or spec["image_size"]
    model = create_model(name, num_classes=num_classes, in_channels=in_channels or 3, image_size=image_size, **options)
    load_weights(model, path)
    return model.eval()


def read_bundle_spec(path: str | Path) -> dict | None:
    """The spec stored in a ``model.pt`` bundle, or None for a plain state dict."""
    obj = read_weights_file(path)
    if isinstance(obj, dict) and obj.get("format") == EXPORT_FORMAT and isinstance(obj.get("spec"), dict):
        return obj["spec"]
    return None


def load_exported(path: str | Path) -> nn.Module:
    """Rebuild an exported network from its folder, ``model.json`` or ``model.pt`` (eval mode).

    >>> model = load_exported("runs/r/export")   # doctest: +SKIP
    """
    if isinstance(path, bool) or not isinstance(path, (str, os.PathLike)):
        raise BossNASError(f"load_exported: give the folder `bossnas export` wrote (a str or Path), got {path!r}")
    path = Path(path)
    if path.is_dir():
        folder, path = path, path / WEIGHTS_FILE
        if not path.is_file():
            raise BossNASError(_no_bundle_in(folder))
    if path.suffix == ".json":
        path = path.with_name(WEIGHTS_FILE)
    return model_from_weights(path)


def _no_bundle_in(folder: Path) -> str:
    """Why a folder given to load_exported holds no model.pt, and where to look instead."""
    from bossnas.models import is_retrain_folder

    if (folder / "export" / WEIGHTS_FILE).is_file():
        return f"'{folder}' is not an export folder; its export is '{folder / 'export'}': load_exported('{folder / 'export'}')"
    if is_retrain_folder(folder):
        return f"'{folder}' is a `bossnas retrain` folder without an export; write one with `bossnas export {folder}`"
    if (folder / PROGRAM_FILE).is_file():
        return (f"the export in '{folder}' has no {WEIGHTS_FILE} (exported with --format program); load "
                f"'{folder / PROGRAM_FILE}' with torch.export.load(...).module(), or export again with --format all")
    return f"weights file '{folder / WEIGHTS_FILE}' not found; give a folder `bossnas export` wrote"


def _example(spec: dict, batch: int, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(batch, spec["in_channels"], spec["image_size"], spec["image_size"], generator=g)


def export_program(model: nn.Module, spec: dict) -> torch.export.ExportedProgram:
    """``torch.export`` with the batch dimension dynamic; a model that cannot be exported is a one-line error."""
    try:
        return torch.export.export(model, (_example(spec, EXAMPLE_BATCH, 0),),
                                   dynamic_shapes=({0: torch.export.Dim.DYNAMIC},))
    except Exception as exc:  # noqa: BLE001 - torch.export raises many types; the user can still export the weights
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:200]
        raise BossNASError(f"torch.export failed for {spec['name']} ({type(exc).__name__}: {first}); "
                           "use --format state-dict") from None


def onnx_available() -> bool:
    """Whether the ``onnx`` extra (exporter, its script library and ONNX Runtime) is installed."""
    return all(importlib.util.find_spec(name) is not None for name in ONNX_PACKAGES)


def export_onnx(model: nn.Module, spec: dict) -> bytes:
    """The serialised ONNX graph of ``model`` with a dynamic batch axis (opset ``ONNX_OPSET``)."""
    if not onnx_available():
        raise BossNASError(f"ONNX export needs the onnx extra: {ONNX_HINT}")
    quiet = logging.getLogger("torch.onnx")  # its per-op notes (e.g. torchvision not installed) are not the user's
    level = quiet.level
    quiet.setLevel(logging.ERROR)
    try:
        # the exporter prints its progress on stdout even with verbose=False, and torch's own
        # deprecation warnings from inside it are nothing the user can act on
        with contextlib.redirect_stdout(io.StringIO()), warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)
            program = torch.onnx.export(model, (_example(spec, EXAMPLE_BATCH, 0),), dynamo=True, verbose=False,
                                        opset_version=ONNX_OPSET, input_names=[ONNX_INPUT], output_names=[ONNX_OUTPUT],
                                        dynamic_shapes=({0: torch.export.Dim("batch")},))
    except Exception as exc:  # noqa: BLE001 - the exporter raises many types; the other forms still export
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:200]
        raise BossNASError(f"ONNX export failed for {spec['name']} ({type(exc).__name__}: {first}); "
                           "add --no-onnx to export the other forms") from None
    finally:
        quiet.setLevel(level)
    return program.model_proto.SerializeToString()


def run_onnx(graph: str | Path | bytes, images: torch.Tensor) -> torch.Tensor:
    """The logits ONNX Runtime (CPU) computes for ``images`` with an exported graph (file or bytes)."""
    import onnxruntime

    source = graph if isinstance(graph, bytes) else str(graph)
    session = onnxruntime.InferenceSession(source, providers=["CPUExecutionProvider"])
    (logits,) = session.run([ONNX_OUTPUT], {ONNX_INPUT: images.detach().cpu().float().numpy()})
    return torch.from_numpy(logits)


def export_state(out_dir: Path) -> tuple[str, list[str]]:
    """What ``out_dir`` holds: ("none" | "complete" | "incomplete", the export files present).

    Complete: ``model.json`` reads as an export manifest and every file it names is there.
    Anything else with export files in it is an export that was interrupted (model.json is
    written last) or damaged.
    """
    present = [n for n in EXPORT_FILES if (out_dir / n).exists()]
    if not present:
        return "none", present
    try:
        record = json.loads((out_dir / SPEC_FILE).read_text(encoding="utf-8"))
        listed = [name for name in record["files"].values() if name]
    except (OSError, ValueError, TypeError, KeyError, AttributeError):
        return "incomplete", present
    complete = all(isinstance(n, str) and (out_dir / n).is_file() for n in listed)
    return ("complete" if complete else "incomplete"), present


def export_model(model: nn.Module, out_dir: str | Path, extra: dict | None = None, fmt: str = "all",
                 force: bool = False, atol: float = 1e-5, onnx: bool = False) -> Exported:
    """Write the bundle and/or the program (and ``model.onnx`` with ``onnx=True``) into ``out_dir``,
    check that every written form gives the original's outputs, then write ``model.json``.

    A finished export in ``out_dir`` is replaced only with ``force``; an interrupted one is
    completed. Either way the folder ends with exactly the forms this export wrote.
    """
    from bossnas.runs import check_writable_folder

    if fmt not in FORMATS:
        raise BossNASError(f"unknown export format '{fmt}'; choose one of {', '.join(FORMATS)}")
    if onnx and not onnx_available():
        raise BossNASError(f"ONNX export needs the onnx extra: {ONNX_HINT}")
    out_dir = Path(out_dir)
    # a file in the way or a read-only folder: one line now, not after the graph captures
    check_writable_folder(out_dir, "export folder")
    spec = _spec_of(model)
    forms = ([WEIGHTS_FILE] if fmt in ("all", "state-dict") else []) + ([PROGRAM_FILE] if fmt in ("all", "program") else [])
    forms += [ONNX_FILE] if onnx else []
    state, present = export_state(out_dir)
    if state == "complete" and not force:
        clash = next((n for n in EXPORT_FILES if n in present and n in (*forms, SPEC_FILE)), present[0])
        raise BossNASError(f"'{out_dir / clash}' exists; add --force to overwrite or choose another --out")
    for name in present:
        if (out_dir / name).is_dir():
            raise BossNASError(f"'{out_dir / name}' is a folder; move it out of the export folder (nothing was changed)")
    notes = []
    if state == "incomplete":
        notes.append(f"'{out_dir}' held an interrupted export ({', '.join(present)} without a complete {SPEC_FILE}); "
                     "completed it")
    model = model.eval().cpu()
    record = {"format": EXPORT_FORMAT, **spec, **(extra or {}),
              "files": {"weights": WEIGHTS_FILE if WEIGHTS_FILE in forms else None,
                        "program": PROGRAM_FILE if PROGRAM_FILE in forms else None,
                        "onnx": ONNX_FILE if onnx else None},
              **({"onnx_opset": ONNX_OPSET, "onnx_input": ONNX_INPUT, "onnx_output": ONNX_OUTPUT} if onnx else {}),
              "torch": torch.__version__}
    # both graph captures fail before anything is written
    program = export_program(model, spec) if PROGRAM_FILE in forms else None
    graph = export_onnx(model, spec) if onnx else None
    # the manifest goes first and comes back last: until then the folder reads as interrupted
    (out_dir / SPEC_FILE).unlink(missing_ok=True)
    stale = [n for n in present if n not in forms and n != SPEC_FILE]
    for name in stale:
        (out_dir / name).unlink()
    if stale and state == "complete":
        notes.append(f"removed {', '.join(stale)} of the earlier export in '{out_dir}' (this export does not write them)")
    if WEIGHTS_FILE in forms:
        buffer = io.BytesIO()
        torch.save({"format": EXPORT_FORMAT, "spec": spec, "state_dict": model.state_dict()}, buffer)
        atomic_write_bytes(out_dir / WEIGHTS_FILE, buffer.getvalue())
    if program is not None:
        buffer = io.BytesIO()
        torch.export.save(program, buffer, extra_files={PROGRAM_EXTRA: json.dumps(record, allow_nan=False)})
        atomic_write_bytes(out_dir / PROGRAM_FILE, buffer.getvalue())
    if graph is not None:
        atomic_write_bytes(out_dir / ONNX_FILE, graph)
    diff = check_export(model, out_dir, [n for n in forms if n != ONNX_FILE], atol)
    onnx_diff = check_onnx(model, out_dir / ONNX_FILE) if onnx else None
    atomic_write_json(out_dir / SPEC_FILE, record)
    files = [out_dir / n for n in EXPORT_FILES if n in forms or n == SPEC_FILE]
    return Exported(out_dir, files, spec, diff, onnx_diff, notes)


@torch.no_grad()
def check_export(model: nn.Module, out_dir: Path, names: list[str], atol: float = 1e-5) -> float:
    """Load the written forms back and compare their outputs with ``model`` on a fresh batch size."""
    spec = _spec_of(model)
    x = _example(spec, EXAMPLE_BATCH + 1, 1)
    expected = model.eval()(x)
    reloaded = []
    if WEIGHTS_FILE in names:
        reloaded.append(load_exported(out_dir / WEIGHTS_FILE))
    if PROGRAM_FILE in names:
        reloaded.append(torch.export.load(out_dir / PROGRAM_FILE).module())
    worst = 0.0
    for other in reloaded:
        got = other(x)
        worst = max(worst, float((got - expected).abs().max()))
        # a mismatch here is a bug in bossnas or torch, not a user mistake: keep the traceback
        torch.testing.assert_close(got, expected, atol=atol, rtol=1e-4)
    return worst


def ema_warning(run_dir: str | Path, weights: str | None) -> str | None:
    """A warning when the default (EMA) weights test worse than the plain model's, or when
    metrics.json cannot be read.

    EMA is the default because over a full schedule it is as good or better; after a few
    epochs the average still holds early weights and can be far worse (metrics.json has
    both numbers). An explicit ``--weights`` choice is never second-guessed.
    """
    metrics, problem = read_retrain_metrics(run_dir)
    if problem is not None:
        return problem
    if weights is not None or metrics is None:
        return None
    ema, plain = _top1(metrics.get("test_ema")), _top1(metrics.get("test"))
    if ema is None or plain is None or plain <= ema:
        return None
    return (f"exporting the EMA weights (test top-1 {ema:.2f}%), but the plain model tests better "
            f"({plain:.2f}%); add --weights model to export it (or --weights ema to keep EMA silently)")


@torch.no_grad()
def check_onnx(model: nn.Module, graph: Path, tolerance: float = 1e-3) -> float:
    """Max |ONNX Runtime - PyTorch| over a batch of 3 and of 1 (batch sizes it was not traced with).

    ONNX Runtime fuses and reorders float32 arithmetic, so it matches to rounding, not bit for
    bit: the difference must stay below ``tolerance`` times the largest logit (at least 1).
    """
    spec = _spec_of(model)
    worst = 0.0
    for batch, seed in ((EXAMPLE_BATCH + 1, 1), (1, 2)):
        x = _example(spec, batch, seed)
        expected, got = model.eval()(x), run_onnx(graph, x)
        diff = float((got - expected).abs().max())
        worst = max(worst, diff)
        # a mismatch here is a bug in the exporter or the runtime, not a user mistake: keep the traceback
        if not diff <= tolerance * max(1.0, float(expected.abs().max())):
            raise AssertionError(f"ONNX Runtime differs from PyTorch by {diff:.3g} on a batch of {batch}")
    return worst


__all__ = ["EXPORT_FILES", "ONNX_FILE", "ONNX_OPSET", "Exported", "check_onnx", "ema_warning", "export_model",
           "export_onnx", "export_state", "load_exported", "model_from_retrain", "model_from_weights", "onnx_available",
           "read_retrain_metrics", "run_onnx"]
