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
"""

from __future__ import annotations

import contextlib
import importlib.util
import io
import json
import logging
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


@dataclass
class Exported:
    """What ``export_model`` wrote and how far the reloaded forms are from the original."""

    folder: Path
    files: list[Path]
    spec: dict
    max_abs_diff: float
    #: ONNX Runtime against PyTorch on the check batch; None when no model.onnx was written
    onnx_max_abs_diff: float | None = None


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
    from bossnas.retrain import CHECKPOINT, CHECKPOINT_KIND, METRICS

    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise BossNASError(f"retraining folder '{run_dir}' does not exist")
    ckpt = load_checkpoint(run_dir / CHECKPOINT)
    if ckpt.get("kind") != CHECKPOINT_KIND:
        raise BossNASError(f"'{run_dir / CHECKPOINT}' is not a retraining checkpoint; export a `bossnas retrain` folder "
                           "or a weights file with --arch")
    spec = ckpt["spec"]
    has_ema = ckpt.get("ema") is not None
    weights = weights or ("ema" if has_ema else "model")
    if weights not in ("ema", "model"):
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
    metrics_path = run_dir / METRICS
    if metrics_path.is_file():
        metrics = json.loads(metrics_path.read_text())
        result = metrics.get("test_ema" if weights == "ema" else "test")
        if result:
            extra["test"] = result
    return model.eval(), extra


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
    path = Path(path)
    if path.is_dir():
        path = path / WEIGHTS_FILE
    if path.suffix == ".json":
        path = path.with_name(WEIGHTS_FILE)
    return model_from_weights(path)


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


def export_model(model: nn.Module, out_dir: str | Path, extra: dict | None = None, fmt: str = "all",
                 force: bool = False, atol: float = 1e-5, onnx: bool = False) -> Exported:
    """Write the bundle (+ model.json) and/or the program (and ``model.onnx`` with ``onnx=True``) into
    ``out_dir``, then check every written form gives the original's outputs."""
    if fmt not in FORMATS:
        raise BossNASError(f"unknown export format '{fmt}'; choose one of {', '.join(FORMATS)}")
    if onnx and not onnx_available():
        raise BossNASError(f"ONNX export needs the onnx extra: {ONNX_HINT}")
    out_dir = Path(out_dir)
    spec = _spec_of(model)
    names = ([WEIGHTS_FILE, SPEC_FILE] if fmt in ("all", "state-dict") else []) + ([PROGRAM_FILE] if fmt in ("all", "program") else [])
    names += [ONNX_FILE] if onnx else []
    files = [out_dir / n for n in names]
    clash = [f for f in files if f.exists()]
    if clash and not force:
        raise BossNASError(f"'{clash[0]}' exists; add --force to overwrite or choose another --out")
    model = model.eval().cpu()
    record = {"format": EXPORT_FORMAT, **spec, **(extra or {}),
              "files": {"weights": WEIGHTS_FILE if WEIGHTS_FILE in names else None,
                        "program": PROGRAM_FILE if PROGRAM_FILE in names else None,
                        "onnx": ONNX_FILE if onnx else None},
              **({"onnx_opset": ONNX_OPSET, "onnx_input": ONNX_INPUT, "onnx_output": ONNX_OUTPUT} if onnx else {}),
              "torch": torch.__version__}
    # both graph captures fail before anything is written
    program = export_program(model, spec) if PROGRAM_FILE in names else None
    graph = export_onnx(model, spec) if onnx else None
    if WEIGHTS_FILE in names:
        buffer = io.BytesIO()
        torch.save({"format": EXPORT_FORMAT, "spec": spec, "state_dict": model.state_dict()}, buffer)
        atomic_write_bytes(out_dir / WEIGHTS_FILE, buffer.getvalue())
        atomic_write_json(out_dir / SPEC_FILE, record)
    if program is not None:
        buffer = io.BytesIO()
        torch.export.save(program, buffer, extra_files={PROGRAM_EXTRA: json.dumps(record, allow_nan=False)})
        atomic_write_bytes(out_dir / PROGRAM_FILE, buffer.getvalue())
    if graph is not None:
        atomic_write_bytes(out_dir / ONNX_FILE, graph)
    diff = check_export(model, out_dir, [n for n in names if n != ONNX_FILE], atol)
    onnx_diff = check_onnx(model, out_dir / ONNX_FILE) if onnx else None
    return Exported(out_dir, files, spec, diff, onnx_diff)


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
    """A warning when the default (EMA) weights test worse than the plain model's.

    EMA is the default because over a full schedule it is as good or better; after a few
    epochs the average still holds early weights and can be far worse (metrics.json has
    both numbers). An explicit ``--weights`` choice is never second-guessed.
    """
    from bossnas.retrain import METRICS

    path = Path(run_dir) / METRICS
    if weights is not None or not path.is_file():
        return None
    metrics = json.loads(path.read_text())
    ema, plain = metrics.get("test_ema"), metrics.get("test")
    if not (isinstance(ema, dict) and isinstance(plain, dict)) or plain["top1"] <= ema["top1"]:
        return None
    return (f"exporting the EMA weights (test top-1 {ema['top1']:.2f}%), but the plain model tests better "
            f"({plain['top1']:.2f}%); add --weights model to export it (or --weights ema to keep EMA silently)")


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


__all__ = ["ONNX_FILE", "ONNX_OPSET", "Exported", "check_onnx", "ema_warning", "export_model", "export_onnx",
           "load_exported", "model_from_retrain", "model_from_weights", "onnx_available", "run_onnx"]
