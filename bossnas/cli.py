"""The ``bossnas`` command line."""

from __future__ import annotations

import math
import sys
import time
from pathlib import Path

import typer

from bossnas.errors import BossNASError, one_line

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    help="Block-wisely self-supervised neural architecture search (BossNAS).",
)

OverridesArg = typer.Argument(None, help="config overrides key=value, e.g. train.epochs=2 data.name=cifar10")
PresetOpt = typer.Option(None, "--preset", "-p", help="preset name (see `bossnas presets`) or a YAML file")
SpaceOpt = typer.Option(None, "--space", help="search space (see `bossnas spaces`)")
DataOpt = typer.Option(None, "--data", help="digits | cifar10 | cifar100 | imagefolder")
DataDirOpt = typer.Option(None, "--data-dir", help="folder of the data set")
OutOpt = typer.Option(None, "--out", "-o", help="run folder (default: runs/<preset>)")
ResumeOpt = typer.Option(False, "--resume", help="continue the run in the run folder from its last checkpoint")
ForceOpt = typer.Option(False, "--force", help="start over in a run folder that already holds a run")
DeviceOpt = typer.Option(None, "--device", help="auto | cpu | cuda | cuda:N")
QuietOpt = typer.Option(False, "--quiet", "-q", help="no progress bars")
MaxFlopsOpt = typer.Option(None, "--max-flops", help="FLOPs budget (e.g. 100M, 3.4G); FLOPs = 2 x multiply-adds")
MaxParamsOpt = typer.Option(None, "--max-params", help="parameter budget (e.g. 500k, 1.5M)")
NprocOpt = typer.Option(None, "--nproc", min=1, help="processes on this machine (one per GPU): runs the command under torchrun")


def _console():
    from rich.console import Console

    from bossnas import distributed as dist
    from bossnas.utils.progress import make_console

    # under torchrun only rank 0 prints
    return make_console() if dist.env_rank() == 0 else Console(quiet=True)


def _launch(nproc: int) -> None:
    """Run this same command line under torchrun with ``nproc`` processes; never returns.

    torchrun's launcher runs in this process (``--standalone``: a free local port, so two
    runs on one machine do not collide). The workers print their own one-line errors; a
    failed worker's exit status becomes this command's, without torchrun's error report.
    """
    import logging
    import os
    import uuid

    from bossnas import distributed as dist

    if dist.launched():
        raise BossNASError("--nproc inside torchrun: start either `bossnas ... --nproc N` or `torchrun ... -m bossnas ...`, not both")
    args, skip = [], False
    for a in sys.argv[1:]:
        if skip:
            skip = False
        elif a == "--nproc":
            skip = True
        elif not a.startswith("--nproc="):
            args.append(a)
    from torch.distributed.elastic.multiprocessing.api import SignalException
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
    from torch.distributed.launcher.api import elastic_launch
    from torch.distributed.run import config_from_args, parse_args

    for name in ("torch.distributed.run", "torch.distributed.elastic", "torch.distributed.launcher"):
        logging.getLogger(name).setLevel(logging.CRITICAL)
    os.environ.setdefault("OMP_NUM_THREADS", str(max(1, (os.cpu_count() or 1) // nproc)))
    torchrun_args = parse_args(["--standalone", "--nproc-per-node", str(nproc), "--max-restarts", "0",
                                # time for every process to finish its step and rank 0 its checkpoint
                                "--shutdown-timeout", "120", "-m", "bossnas", *args])
    # what torchrun's run() does for --standalone, without its banner
    torchrun_args.rdzv_backend, torchrun_args.rdzv_endpoint = "c10d", "localhost:0"
    torchrun_args.rdzv_id = str(uuid.uuid4())
    config, cmd, cmd_args = config_from_args(torchrun_args)
    try:
        elastic_launch(config=config, entrypoint=cmd)(*cmd_args)
    except ChildFailedError as exc:
        _, failure = exc.get_first_failure()
        code = failure.exitcode
        sys.exit(code if code > 0 else 128 - code)
    except SignalException as exc:
        sys.exit(128 + int(exc.sigval))
    sys.exit(0)


def _resolve_config(preset, overrides, space, data, data_dir, device, out, resume, extra=None):
    from bossnas.config import RunConfig, apply_mapping, parse_override, read_preset, set_key
    from bossnas.train.runner import CONFIG

    preset_name = preset or "quickstart"
    run_dir = Path(out) if out else Path("runs") / Path(preset_name).stem
    options = {"space": space, "data.name": data, "data.root": data_dir, "device": device, **(extra or {})}
    if resume and preset is None and (run_dir / CONFIG).is_file():
        import yaml

        config = RunConfig()
        apply_mapping(config, yaml.safe_load((run_dir / CONFIG).read_text()) or {}, str(run_dir / CONFIG))
    else:
        config = RunConfig()
        apply_mapping(config, read_preset(preset_name), preset_name)
    for key, value in options.items():
        if value is not None:
            set_key(config, key, value)
    for text in overrides or []:
        set_key(config, *parse_override(text))
    return config, run_dir


def _train(preset, overrides, space, data, data_dir, out, resume, force, device, quiet, extra=None):
    from bossnas import distributed as dist
    from bossnas.train.runner import BlockwiseSearch, StopSignals

    config, run_dir = _resolve_config(preset, overrides, space, data, data_dir, device, out, resume, extra)
    if dist.launched():
        # rank 0's config is the run's (other nodes may not see the run folder's config.yaml)
        dist.init_from_env(config.device)
        config = dist.broadcast_object(config)
    console = _console()
    # from here on a SIGINT / SIGTERM ends in a checkpoint and one line, not a traceback
    signals = StopSignals(announce=dist.is_main())
    with signals:
        search = BlockwiseSearch.open(config, run_dir, resume=resume, force=force, console=console,
                                      show_progress=not quiet, signals=signals)
        console.print(
            f"bossnas: space {search.space.name} ({search.space.num_architectures():,} architectures), data {config.data.name} "
            f"({len(search.data.train)} train / {len(search.data.test)} held-out, {search.data.in_channels}x{search.data.image_size}x"
            f"{search.data.image_size}), device {search.device}, run folder {run_dir}"
        )
        if search.data.note:  # how an image folder's channels and size were decided
            console.print(search.data.note, soft_wrap=True)
        search.run()
    return search, config, run_dir, console


def _finish(run_dir: Path, max_flops: float | None, max_params: float | None, console, wall: float | None = None,
            max_latency: float | None = None, latency_device: str = "cpu") -> dict:
    from bossnas.search.latency import latency_budget, plot_pareto
    from bossnas.search.report import select, tables_from_state, write_best_arch, write_report
    from bossnas.train.runner import load_run

    config, ckpt = load_run(run_dir)
    state = ckpt["state"]
    if state["phase"] != "done":
        raise BossNASError(f"run in '{run_dir}' has not finished training (block {state['block']}, {state['phase']}); continue it with `bossnas train --resume -o {run_dir}`")
    space = _space_of(config, ckpt)
    tables = tables_from_state(space, state["tables"])
    max_flops = max_flops if max_flops is not None else config.search.max_flops
    max_params = max_params if max_params is not None else config.search.max_params
    latency_budgets, latency = latency_budget(run_dir, space, max_latency, latency_device)
    choice = select(space, tables, max_flops, max_params, latency_budgets)
    record = write_best_arch(run_dir, space, choice, config, max_flops, max_params, latency, max_latency)
    write_report(run_dir, space, config, state, tables, record, wall)
    console.print(
        f"[bold green]chosen architecture[/] {record['arch']}  rating {record['rating']:.5f}  "
        f"params {record['params']:,}  FLOPs {record['flops'] / 1e6:.2f}M  -> {run_dir / 'best_arch.json'}"
    )
    if latency is not None:
        console.print(f"latency {record['latency_ms']:.3f} ms (table sum, {latency_device}); rating vs latency / FLOPs: "
                      f"{plot_pareto(run_dir, space, tables, latency, choice.arch)}")
    return record


def _space_of(config, ckpt: dict):
    """The run's space, built for the run's input shape (stored in the checkpoint)."""
    from bossnas.spaces import space_class

    shape = ckpt.get("input") or {}
    cls = space_class(config.space)
    return cls(in_channels=shape.get("in_channels", 3), image_size=shape.get("image_size"),
               num_classes=shape.get("num_classes", 10), **config.model.space_options)


def _parse_budget(text: str | None, name: str) -> float | None:
    from bossnas.config import parse_number

    if text is None:
        return None
    try:
        value = parse_number(text)
    except ValueError:
        raise BossNASError(f"{name} '{text}' is not a number (e.g. 100M, 3.4G, 5e8)") from None
    # inf would be written into best_arch.json as the invalid JSON token Infinity; no budget is no option
    if not (value > 0 and math.isfinite(value)):
        raise BossNASError(f"{name} must be a finite number > 0 (leave it out for no budget), got '{text}'")
    return value


@app.command()
def run(
    overrides: list[str] | None = OverridesArg,
    preset: str | None = PresetOpt,
    space: str | None = SpaceOpt,
    data: str | None = DataOpt,
    data_dir: str | None = DataDirOpt,
    out: str | None = OutOpt,
    resume: bool = ResumeOpt,
    force: bool = ForceOpt,
    device: str | None = DeviceOpt,
    max_flops: str | None = MaxFlopsOpt,
    max_params: str | None = MaxParamsOpt,
    quiet: bool = QuietOpt,
    nproc: int | None = NprocOpt,
) -> None:
    """Train every block, rate every path, choose the architecture and write the report.

    With no arguments: the quickstart (NATS size space on the embedded digits data).
    """
    if nproc is not None:
        _launch(nproc)
    from bossnas import distributed as dist

    start = time.perf_counter()
    flops, params = _parse_budget(max_flops, "--max-flops"), _parse_budget(max_params, "--max-params")
    extra = {"search.max_flops": flops, "search.max_params": params}
    _, _, run_dir, console = _train(preset, overrides, space, data, data_dir, out, resume, force, device, quiet, extra)
    if not dist.is_main():
        return
    _finish(run_dir, flops, params, console, wall=time.perf_counter() - start)
    console.print(f"report: {run_dir / 'report.md'}  (wall {time.perf_counter() - start:.1f} s)")


@app.command()
def train(
    overrides: list[str] | None = OverridesArg,
    preset: str | None = PresetOpt,
    space: str | None = SpaceOpt,
    data: str | None = DataOpt,
    data_dir: str | None = DataDirOpt,
    out: str | None = OutOpt,
    resume: bool = ResumeOpt,
    force: bool = ForceOpt,
    device: str | None = DeviceOpt,
    quiet: bool = QuietOpt,
    nproc: int | None = NprocOpt,
) -> None:
    """Train the Siamese supernet block by block (each block's paths are rated to fix its best path)."""
    if nproc is not None:
        _launch(nproc)
    _, _, run_dir, console = _train(preset, overrides, space, data, data_dir, out, resume, force, device, quiet)
    console.print(f"trained; choose the architecture with `bossnas search {run_dir}`")


@app.command()
def search(
    run_dir: Path = typer.Argument(..., help="a finished run folder"),
    max_flops: str | None = MaxFlopsOpt,
    max_params: str | None = MaxParamsOpt,
    max_latency: str | None = typer.Option(None, "--max-latency", help="latency budget (e.g. 3ms, 800us) against "
                                           "RUN/latency_<device>.csv from `bossnas latency RUN`"),
    latency_device: str = typer.Option("cpu", "--latency-device", help="whose latency table: cpu or cuda"),
) -> None:
    """Choose the best-rated architecture of a trained run, optionally under a FLOPs/params/latency budget."""
    from bossnas.search.latency import parse_duration

    _finish(run_dir, _parse_budget(max_flops, "--max-flops"), _parse_budget(max_params, "--max-params"), _console(),
            max_latency=None if max_latency is None else parse_duration(max_latency), latency_device=latency_device)


@app.command()
def rate(
    run_dir: Path = typer.Argument(..., help="a finished run folder"),
    archs: list[str] | None = typer.Argument(None, help="architectures to rate (default: all)"),
    top: int | None = typer.Option(None, "--top", help="only the N best-rated architectures"),
    out: Path | None = typer.Option(None, "--out", "-o", help="CSV to write (default: RUN/ratings.csv when rating all)"),
    costs: Path | None = typer.Option(None, "--costs", help="also write arch,params,flops of the same architectures "
                                      "(at the run's input size) to this CSV, for `bossnas correlate --costs`"),
) -> None:
    """Ratings (sum of block ratings, lower = better) of all or the given architectures."""
    from bossnas.search.report import tables_from_state
    from bossnas.search.select import all_ratings, arch_rating, top_k
    from bossnas.train.runner import load_run
    from bossnas.utils.io import atomic_write_text

    config, ckpt = load_run(run_dir)
    state = ckpt["state"]
    space = _space_of(config, ckpt)
    if len(state["tables"]) < len(space.blocks):
        raise BossNASError(f"run in '{run_dir}' has rated {len(state['tables'])} of {len(space.blocks)} blocks; finish it with --resume")
    tables = tables_from_state(space, state["tables"])
    if archs:
        rows = [(space.format_arch(a), arch_rating(tables, a)) for a in (space.parse_arch(t) for t in archs)]
    elif top is not None:
        if top < 1:
            raise BossNASError("--top must be >= 1")
        rows = [(space.format_arch(s.arch), s.rating) for s in top_k(tables, top)]
    else:
        arch_list, values = all_ratings(tables)
        rows = [(space.format_arch(a), float(v)) for a, v in zip(arch_list, values)]
        out = out or run_dir / "ratings.csv"
    if out is not None:
        atomic_write_text(out, "arch,rating\n" + "".join(f"{a},{r:.8f}\n" for a, r in rows))
        typer.echo(f"{len(rows)} ratings -> {out}")
    if costs is not None:
        from bossnas.search.costs import cost_rows_csv, cost_table

        atomic_write_text(costs, cost_rows_csv(cost_table(space), [space.parse_arch(a) for a, _ in rows]))
        typer.echo(f"{len(rows)} costs -> {costs}")
    for a, r in sorted(rows, key=lambda x: x[1])[: 10 if out is not None else None]:
        typer.echo(f"{a}\t{r:.6f}")


@app.command()
def correlate(
    scores: Path = typer.Argument(..., help="CSV of scores: arch,<score> or a block table block,path,<score>"),
    truth: Path = typer.Argument(..., help="CSV of ground truth: arch,<accuracy>"),
    costs: Path | None = typer.Option(None, "--costs", help="CSV arch,params,flops,... : adds within-size and budgeted figures"),
    score_col: str | None = typer.Option(None, "--score-col", help="score column (default: rating/loss/score ...)"),
    truth_col: str | None = typer.Option(None, "--truth-col", help="accuracy column (default: test_accuracy/accuracy ...)"),
    lower_is_better: bool | None = typer.Option(None, "--lower-is-better/--higher-is-better",
                                                   help="score orientation (default: lower is better for loss/rating columns)"),
    as_json: bool = typer.Option(False, "--json", help="print JSON"),
) -> None:
    """Rating accuracy: Kendall / Spearman / Pearson, and the figures that hold size fixed.

    Always: Kendall inside the true top 10%. Block tables: each block's Spearman against its
    paths' marginal accuracy. With --costs: mean Spearman inside deciles of each cost, the
    pick and its regret under 10/25/50/100% of each cost's maximum, and per-block partial
    Spearman after each path's mean log cost.
    """
    import json

    from bossnas.evaluation.correlation import rating_accuracy_files

    result = rating_accuracy_files(scores, truth, costs, score_col, truth_col, lower_is_better)
    if as_json:
        typer.echo(json.dumps(result.as_dict(), indent=2))
        return
    for line in render_rating_accuracy(result):
        typer.echo(line)


def render_rating_accuracy(result) -> list[str]:
    """The text report of ``bossnas correlate`` (NaN where a figure is undefined)."""
    c, sc = result.correlation, result.size_controlled
    lines = [f"architectures: {c.count}", f"Kendall  {c.kendall:.3f}", f"Spearman {c.spearman:.3f}",
             f"Pearson  {c.pearson:.3f}", f"sign: {c.sign_note()}",
             f"Kendall inside the true top 10%: {sc['top10_kendall']:.3f}"]
    for name, value in sc["decile_spearman"].items():
        lines.append(f"mean Spearman inside {name} deciles: {value:.3f}")
    for name, picks in sc["picks"].items():
        for p, arch in zip(picks, result.picked_archs[name]):
            lines.append(f"pick under {p['fraction']:.0%} of max {name}: {arch}  truth {p['picked']:.3f}  "
                         f"best {p['best']:.3f}  regret {p['regret']:.3f}")
    for b in result.blocks:
        partial = "".join(f", partial after {k} {v:.3f}" for k, v in b.partial.items())
        lines.append(f"block {b.block} ({b.paths} paths): Spearman vs marginal accuracy {b.spearman:.3f}{partial}")
    return lines


@app.command()
def spaces() -> None:
    """List the search spaces."""
    from bossnas.spaces import create_space, list_spaces

    for name in list_spaces():
        space = create_space(name)
        blocks = "/".join(str(len(space.block_paths(b.index))) for b in space.blocks)
        typer.echo(f"{name:10s} {space.num_architectures():>22,} architectures, paths per block {blocks}: {space.description}")


@app.command()
def presets() -> None:
    """List the built-in presets."""
    from bossnas.config import list_presets

    for name in list_presets():
        typer.echo(name)


@app.command()
def show(
    arch: str = typer.Argument(..., help="architecture string (64:40:48:64:56, nats-sss/64:40:48:64:56), model name "
                               "(bossnet-t0), or a search's best_arch.json / run folder"),
    space: str | None = SpaceOpt,
    image_size: int | None = typer.Option(None, "--image-size", help="input side (default: the model's or the space's)"),
    in_channels: int | None = typer.Option(None, "--in-channels", help="default: the model's, else 3"),
    num_classes: int | None = typer.Option(None, "--num-classes", help="default: the named model's, else 10"),
    plot: Path | None = typer.Option(None, "--plot", help="also draw the architecture into this .png/.pdf/.svg"),
) -> None:
    """Layers, parameters and FLOPs of one architecture or named model (and a picture with --plot)."""
    from bossnas.models import is_search_record, list_models, resolve_model
    from bossnas.search.costs import arch_cost
    from bossnas.spaces import create_space

    if plot is not None:
        from bossnas.plot import plot_kind

        plot_kind(plot)
    spec = resolve_model(arch, space)
    in_channels = spec.in_channels if in_channels is None else in_channels
    named = spec.name in {m.name for m in list_models()}
    num_classes = num_classes if num_classes is not None else (spec.num_classes if named or is_search_record(arch) else 10)
    try:
        s = create_space(spec.space, in_channels=in_channels, image_size=image_size or spec.image_size,
                         num_classes=num_classes, **spec.space_options)
    except TypeError as exc:
        raise BossNASError(f"options for space '{spec.space}': {exc}") from None
    parsed = s.parse_arch(spec.arch)
    cost = arch_cost(s, parsed)
    label = f"{spec.name}: " if named else ""
    typer.echo(f"{label}{s.name} {s.format_arch(parsed)}  input {in_channels}x{s.image_size}x{s.image_size}, {num_classes} classes")
    for row in s.describe_layers(parsed):
        typer.echo("  " + "  ".join(f"{k} {v}" for k, v in row.items()))
    typer.echo(f"params {int(cost.params):,}  FLOPs {cost.flops / 1e6:.2f}M  multiply-adds {cost.macs / 1e6:.2f}M")
    if plot is not None:
        from bossnas.plot import plot_arch

        title = f"{label}{s.name} {s.format_arch(parsed)}  ({in_channels}x{s.image_size}x{s.image_size} input)"
        typer.echo(f"plot -> {plot_arch(s, parsed, plot, title)}")


def _register_commands() -> None:
    import importlib

    from bossnas.commands import COMMAND_MODULES

    for module in COMMAND_MODULES:
        importlib.import_module(module).register(app)


_register_commands()


def main() -> None:
    """Run the CLI: a :class:`BossNASError` is one line on stderr and exit status 2 (an
    interrupted run: 128 + the signal number). Under torchrun, rank 0 prints the errors
    every process meets; another process prints only its own (a file only it read)."""
    from bossnas import distributed as dist

    rank = dist.env_rank()
    try:
        app()
    except BossNASError as exc:
        if rank == 0 or getattr(exc, "rank_local", False):
            print(f"error{f' (rank {rank})' if rank else ''}: {one_line(exc)}", file=sys.stderr)
        sys.exit(getattr(exc, "exit_code", 2))
    except KeyboardInterrupt as exc:
        if rank == 0:
            print(f"error: {exc or 'interrupted'}", file=sys.stderr)
        sys.exit(130)
    finally:
        dist.shutdown()


if __name__ == "__main__":
    main()
