"""Rating accuracy of BossNAS against real ground truth, over several seeds, with size held fixed.

Trains the Siamese supernet block by block on CIFAR-10, rates every path of every block, rates
every architecture (sum of block ratings) and reports, per seed and as mean ± sd over seeds:

- overall Kendall / Spearman / Pearson against the accuracy table;
- the figures that hold size fixed (``bossnas.evaluation.size_controlled``): Kendall inside the
  true top 10%, mean Spearman inside deciles of log parameters, FLOPs (and, on NATS, the sum of
  log widths), the accuracy of the pick and its regret under 10/25/50/100% of the largest FLOPs
  and parameter count;
- per block: Spearman of the path ratings against each path's marginal accuracy and the partial
  Spearman after log width (NATS) and log parameters;

beside baseline rows (official BossNAS ratings and sum of log widths on NATS, parameters, FLOPs,
random). Without an accuracy table (``nasbench-macro``: its table is deliberately not provided)
it writes every architecture's rating (``seed-S/ratings.csv``) and cost (``costs.csv``) for
``bossnas correlate RATINGS TRUTH --costs costs.csv``, and every figure that needs no truth.

    python benchmarks/rating.py --preset smoke
    python benchmarks/rating.py --preset cpu --seeds 0,1,2
    python benchmarks/rating.py --preset gpu --device cuda --seeds 0,1,2 --jobs 3   # seeds side by side
    python benchmarks/rating.py --preset cpu --seeds 0,1,2 --ablation heads-4096
    python benchmarks/rating.py --preset cpu --seeds 0,1,2 --blocks 1      # block 0 only: its per-block figure
    python benchmarks/rating.py --space nasbench-macro --preset cpu --seeds 0,1,2

Each seed runs in ``OUT/seed-S/`` and is resumable: a finished seed is reused, an interrupted one
continues from its checkpoint (``--fresh`` starts over). ``--jobs N`` runs up to N seeds side by
side, each in its own process with its share of the CPU cores (or on the one GPU), and reports
when all are done. Budgets (``--preset``): smoke = a few CPU
minutes, cpu = at most 60 minutes a seed on 2 CPU cores, gpu = minutes on one GPU.
"""

from __future__ import annotations

import argparse
import copy
import csv
import functools
import math
import shutil
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import DEFAULT_CACHE, REPO, SHARED_DATA, ensure_cifar10, machine, write_json  # noqa: E402

#: Budget presets: config overrides. Images are CIFAR-10 train images (a fixed subset); the
#: rating views come from the CIFAR-10 test split, as in the official NATS evaluation
#: (``search.rate_split=test``, stated here because bossnas itself rates on held-out
#: training images by default; the benchmark's figures stay comparable with the official ones).
PRESETS: dict[str, dict[str, object]] = {
    "smoke": {
        "data.image_size": 16, "data.train_images": 512, "train.epochs": 1, "train.batch_size": 64,
        "model.hidden_dim": 256, "model.proj_dim": 64, "search.rate_images": 64, "search.recal_batches": 1, "search.rate_split": "test",
        "train.lr": 0.05, "train.warmup_epochs": 0.1,
    },
    "cpu": {
        "data.image_size": 16, "data.train_images": 12288, "train.epochs": 2, "train.batch_size": 128,
        "model.hidden_dim": 512, "model.proj_dim": 128, "search.rate_images": 512, "search.recal_batches": 2, "search.rate_split": "test",
        "train.lr": 0.05, "train.warmup_epochs": 0.1,
    },
    "gpu": {
        "data.image_size": 32, "train.epochs": 6, "train.batch_size": 256,
        "model.hidden_dim": 1024, "model.proj_dim": 256, "search.rate_images": 2048, "search.recal_batches": 4, "search.rate_split": "test",
        "train.lr": 0.1, "train.warmup_epochs": 0.5, "train.channels_last": True,
    },
}

#: One switch each, on top of a preset. The official NATS recipe (issue 13 / docs/method.md):
#: heads 4096 wide with an adapter to 2048 channels, LARS lr 0.48 at batch 4096 (here scaled
#: linearly to the preset's batch), weight decay 1e-6, all 10,000 test images for rating, the
#: predictor's BatchNorm not recalibrated, 32x32 input.
ABLATIONS: dict[str, dict[str, object]] = {
    "none": {},
    "no-ensemble": {"train.ensemble": False},
    "uniform": {"train.sampling": "uniform"},
    "no-bn-recal": {"search.bn_recalibration": False},
    "k4": {"train.paths_per_step": 4},
    "heads-4096": {"model.hidden_dim": 4096, "model.adapter_width": 2048},
    "lars": {"train.optimizer": "lars", "train.lr": 0.48 * 128 / 4096, "train.weight_decay": 1e-6},
    "rate-10k": {"search.rate_images": 10000},
    "predictor-bn-fixed": {"search.recalibrate_predictor": False},
    # the same pixels per epoch as the cpu preset at 16x16: a quarter of the images at 32x32
    "input-32": {"data.image_size": 32, "data.train_images": 3072, "train.epochs": 2},
    # BYOL's own augmentation (resized crop, colour jitter, greyscale): a harder pretext task
    "strong-aug": {"data.augment": "imagenet"},
    # three times the training per block (the cpu preset's 2 epochs -> 6; about 25 minutes a seed)
    "epochs-6": {"train.epochs": 6},
    # issue 19: the training before the official code's details became the defaults, and one
    # detail at a time on top of it. frozen-prefix = all of the earlier behaviour: earlier blocks
    # frozen and fed by the target in eval mode, EMA target adapters, PyTorch's head init
    "frozen-prefix": {"train.prefix": "frozen", "model.target_adapter": "ema", "model.head_init": "torch"},
    # item 1 alone: the earlier blocks keep learning through the online network
    "online-prefix": {"train.prefix": "online", "model.target_adapter": "ema", "model.head_init": "torch"},
    # item 2 alone: the target's channel adapters stay the copies they started as
    "fixed-adapter": {"train.prefix": "frozen", "model.target_adapter": "fixed", "model.head_init": "torch"},
    # items 1 + 2
    "online-fixed": {"train.prefix": "online", "model.target_adapter": "fixed", "model.head_init": "torch"},
    # (items 1 + 2 + 4 are the defaults: ablation none)
}

SPACES = ("nats-sss", "nasbench-macro")
NATS_OFFICIAL = SHARED_DATA / "nats-sss" / "bossnas-official-block-scores.csv"
NATS_TRUTH = SHARED_DATA / "nats-sss" / "cifar10-test-accuracy.csv"
#: the size measures within whose deciles Spearman is reported, and the budgeted costs
DECILE_SIZES = ("log params", "FLOPs")
BUDGET_COSTS = ("FLOPs", "params")


# ----------------------------------------------------------------------------- one seed
def run_seed(space: str, preset: str, ablation: str, extra: dict, data_dir: Path, folder: Path, device: str,
             seed: int, fresh: bool, quiet: bool, blocks: int | None) -> dict:
    """Train and rate (resuming where a checkpoint exists); returns the rating tables and timings."""
    from bossnas.config import load_config
    from bossnas.train.runner import BlockwiseSearch

    overrides = {**PRESETS[preset], **ABLATIONS[ablation], **extra, "space": space, "data.name": "cifar10",
                 "data.root": str(data_dir), "device": device, "seed": seed}
    config = load_config(None, [f"{k}={v}" for k, v in overrides.items()])
    run_dir = folder / "run"
    resume = not fresh and (run_dir / "checkpoint.pt").is_file()
    start = time.perf_counter()
    search = BlockwiseSearch.open(config, run_dir, resume=resume, force=not resume, show_progress=not quiet)
    # block by block, keeping the checkpoint each block was rated from: a learning prefix goes on
    # training after its rating, so the final checkpoint no longer holds the blocks as rated
    last = len(search.space.blocks) if blocks is None else blocks
    state = search.state
    for block in range(state.block, last):
        state = search.run(stop_after_block=block + 1)
        shutil.copyfile(run_dir / "checkpoint.pt", rated_checkpoint_path(run_dir, block))
    search.folder.unlock()
    wall = time.perf_counter() - start
    tables = [dict(state.tables[str(b)]) for b in range(len(state.tables))]
    return {"seed": seed, "tables": tables, "best_paths": state.best_paths, "resumed": resume,
            "overrides": {k: v for k, v in overrides.items() if k != "data.root"},
            "timing": {"wall_s": wall, "train_s": state.train_seconds, "rate_s": state.rate_seconds},
            "device": str(search.device)}


def rerate_seed(trained: Path, overrides: dict, folder: Path, device: str, quiet: bool) -> dict:
    """Rate every block of a finished run again with other rating settings (``search.*`` only).

    Each block is re-rated from the checkpoint it was rated from (``run/rated-block-K.pt``; a
    frozen-prefix run written without them: the final checkpoint, since there a block's weights
    do not change after its training and the frozen blocks before it keep the BatchNorm
    statistics they had when it was rated), along the run's own best paths before it: exactly
    the ratings a run with these rating settings would give for the same trained supernet
    (with the same settings, the original tables come out; tested). Later blocks were trained
    on the run's own choices, so this isolates the rating procedure from training.
    """
    from bossnas.config import set_key
    from bossnas.search.rating import rate_block
    from bossnas.train.runner import BlockwiseSearch, load_run

    config, final = load_run(trained)
    fingerprint = config.fingerprint()
    for key, value in overrides.items():
        set_key(config, key, value)
    if config.fingerprint() != fingerprint:
        raise SystemExit(f"--rerate-from changes rating settings only (search.*); {sorted(overrides)} change training")
    config.device = device
    search = BlockwiseSearch(config, folder / "rerate", show_progress=not quiet)
    state = final["state"]
    start = time.perf_counter()
    tables = []
    for block in range(len(state["tables"])):
        search.model.load_state_dict(rated_checkpoint(trained, block, config, final)["model"])
        search.state.best_paths = list(state["best_paths"][:block])
        recal, rate = search.rating_inputs(block)
        paths = search.space.block_paths(block)
        cfg = config.search
        ratings = rate_block(search.model, block, paths, recal, rate, cfg.batch_size or config.train.batch_size,
                             cfg.bn_recalibration, search.autocast, recalibrate_predictor=cfg.recalibrate_predictor)
        tables.append({search.space.format_path(p): r for p, r in zip(paths, ratings)})
    rate_s = time.perf_counter() - start
    best = [min(t, key=t.__getitem__) for t in tables]
    return {"seed": config.seed, "tables": tables, "best_paths": best, "resumed": False, "rerated_from": str(trained),
            "overrides": {"seed": config.seed, **overrides},
            "timing": {"wall_s": rate_s, "train_s": 0.0, "rate_s": rate_s}, "device": str(search.device)}


def seed_result(args: argparse.Namespace, seed: int, folder: Path, data_dir: Path, fresh: bool) -> dict:
    """``folder/result.json`` of one seed: reused when there (unless ``fresh``), else trained or re-rated."""
    import json

    done = folder / "result.json"
    if done.is_file() and not fresh:
        return json.loads(done.read_text())
    folder.mkdir(parents=True, exist_ok=True)
    extra = {k.strip(): v for k, v in (item.split("=", 1) for item in args.set)}
    if args.rerate_from is not None:
        result = rerate_seed(args.rerate_from / f"seed-{seed}" / "run", {**ABLATIONS[args.ablation], **extra},
                             folder, args.device, args.quiet)
    else:
        result = run_seed(args.space, args.preset, args.ablation, extra, data_dir, folder, args.device, seed,
                          fresh, args.quiet, args.blocks)
    write_json(done, result)
    return result


# ----------------------------------------------------------------------------- the space's archs
class Universe:
    """Every architecture of the space at the ground truth's input size, with its costs and block paths."""

    def __init__(self, space_name: str):
        from bossnas.search.costs import BlockCostTable
        from bossnas.spaces import create_space

        self.space = create_space(space_name, in_channels=3, image_size=32, num_classes=10)
        import itertools

        self.block_paths = [[self.space.format_path(p) for p in self.space.block_paths(b.index)] for b in self.space.blocks]
        combos = list(itertools.product(*(range(len(p)) for p in self.block_paths)))
        self.path_index = np.array(combos, dtype=np.int64)  # [archs, blocks]
        arch_tuples = [tuple(self.space.block_paths(b)[i] for b, i in enumerate(c)) for c in combos]
        self.archs = [self.space.format_arch(a) for a in arch_tuples]
        self.cost_table = BlockCostTable(self.space)
        self.arch_tuples = arch_tuples
        costs = [self.cost_table.cost(a) for a in arch_tuples]
        self.flops = np.array([c.flops for c in costs], dtype=float)
        self.params = np.array([c.params for c in costs], dtype=float)
        self.log_width = None
        if space_name == "nats-sss":
            widths = np.array([[int(w) for w in a.split(":")] for a in self.archs], dtype=float)
            self.log_width = np.log(widths).sum(1)

    @classmethod
    @functools.cache
    def of(cls, space_name: str) -> Universe:
        """The space's universe, built once per process (it costs seconds: the cost of every
        architecture; the smoke tests and a report after its seeds ask for it several times)."""
        return cls(space_name)

    def ratings(self, tables: list[dict[str, float]]) -> np.ndarray:
        """Sum of block ratings of every architecture (lower = better)."""
        per_block = [np.array([t[p] for p in paths]) for t, paths in zip(tables, self.block_paths)]
        return sum(v[self.path_index[:, b]] for b, v in enumerate(per_block))

    def sizes(self) -> dict[str, np.ndarray]:
        out = {"log params": np.log(self.params), "FLOPs": self.flops}
        if self.log_width is not None:
            out["log width"] = self.log_width
        return out

    def path_covariates(self, block: int) -> dict[str, np.ndarray]:
        """Size of each path of ``block``: the sum of its log widths (NATS) and its mean log parameters."""
        from bossnas.evaluation.size_controlled import path_marginals

        n = len(self.block_paths[block])
        out = {}
        if self.log_width is not None:
            out["log width"] = np.array([sum(math.log(int(w)) for w in p.split(":")) for p in self.block_paths[block]])
        out["log params"] = path_marginals(self.path_index[:, block], np.log(self.params), n)
        return out

    def write_costs(self, path: Path) -> None:
        from bossnas.search.costs import cost_rows_csv

        path.write_text(cost_rows_csv(self.cost_table, self.arch_tuples))


# ----------------------------------------------------------------------------- figures
def score_figures(u: Universe, score: np.ndarray, truth: np.ndarray | None) -> dict:
    """Architecture-level figures of one score (larger = predicted better)."""
    from bossnas.evaluation.correlation import correlate
    from bossnas.evaluation.size_controlled import (
        BUDGET_FRACTIONS,
        budget_picks,
        top_fraction_kendall,
        within_size_spearman,
    )

    out: dict = {}
    costs = {"FLOPs": u.flops, "params": u.params}
    if truth is not None:
        c = correlate(score, truth, lower_is_better=False)
        out.update(kendall=c.kendall, spearman=c.spearman, pearson=c.pearson,
                   top10_kendall=top_fraction_kendall(score, truth),
                   decile={name: within_size_spearman(score, truth, size) for name, size in u.sizes().items()})
    else:
        from scipy import stats

        # what needs no truth: how much of the score is size
        out["spearman_vs"] = {name: float(stats.spearmanr(score, size).statistic) for name, size in u.sizes().items()}
    out["picks"] = {}
    for name in BUDGET_COSTS:
        picks = {p.fraction: p for p in budget_picks(score, truth, costs[name], name)}
        # one entry per fraction, so that the report's columns line up; a budget below the
        # cheapest architecture has no pick (NaN figures, no arch)
        out["picks"][name] = [{**picks[f].as_dict(), "arch": u.archs[picks[f].index],
                               "cost_of_pick": float(costs[name][picks[f].index])} if f in picks else
                              {"cost": name, "fraction": f, "budget": f * float(costs[name].max()), "index": None,
                               "picked": float("nan"), "best": float("nan"), "regret": float("nan"), "arch": None,
                               "cost_of_pick": None}
                              for f in BUDGET_FRACTIONS]
    return out


def block_figures(u: Universe, tables: list[dict[str, float]], truth: np.ndarray | None) -> list[dict]:
    """Per rated block: Spearman vs marginal accuracy and partials (or, without truth, vs path size)."""
    from scipy import stats

    from bossnas.evaluation.size_controlled import block_accuracy, path_marginals

    out = []
    for b, table in enumerate(tables):
        paths = u.block_paths[b]
        score = -np.array([table[p] for p in paths])
        covariates = u.path_covariates(b)
        if truth is not None:
            marginal = path_marginals(u.path_index[:, b], truth, len(paths))
            out.append(block_accuracy(b, score, marginal, covariates).as_dict())
        else:
            out.append({"block": b, "paths": len(paths),
                        "spearman_vs": {k: float(stats.spearmanr(score, v).statistic) for k, v in covariates.items()}})
    return out


@functools.cache
def baseline_figures(space_name: str, official: Path | None, truth_path: Path, seed: int) -> dict[str, dict]:
    """The baseline rows' figures (deterministic: computed once per process, a few seconds each)."""
    from bossnas.evaluation.correlation import load_truth

    u = Universe.of(space_name)
    truth_map = load_truth(truth_path)
    truth = np.array([truth_map[a] for a in u.archs])
    return {name: {"archs": score_figures(u, score, truth)} for name, score in baseline_scores(u, official, seed).items()}


def baseline_scores(u: Universe, official: Path | None, seed: int) -> dict[str, np.ndarray]:
    rows: dict[str, np.ndarray] = {}
    if official is not None and u.space.name == "nats-sss":
        from bossnas.evaluation.correlation import load_scores

        official_map, _ = load_scores(official)
        rows["official BossNAS ratings"] = -np.array([official_map[a] for a in u.archs])
    if u.log_width is not None:
        rows["sum of log widths"] = u.log_width
    rows["parameters"] = u.params
    rows["FLOPs"] = u.flops
    rows["random"] = np.random.default_rng(seed).permutation(len(u.archs)).astype(float)
    return rows


def official_block_tables(official: Path) -> list[dict[str, float]]:
    tables: dict[int, dict[str, float]] = {}
    with open(official, newline="") as f:
        for r in csv.DictReader(f):
            tables.setdefault(int(r["block"]), {})[r["widths"]] = float(r["loss"])
    return [tables[b] for b in sorted(tables)]


def rated_checkpoint_path(run_dir: Path, block: int) -> Path:
    """Where :func:`run_seed` keeps the checkpoint written right after block ``block`` was rated."""
    return run_dir / f"rated-block-{block}.pt"


def rated_checkpoint(run_dir: Path, block: int, config, final: dict | None = None) -> dict:
    """The checkpoint that block ``block`` of a finished run was rated from (and that block
    ``block + 1`` started training from): its kept copy, or, for a frozen-prefix run written
    before the copies were kept, the final checkpoint (nothing of block ``block`` changes after
    its rating there). A learning prefix without its copies cannot be re-rated: its earlier
    blocks went on training."""
    from bossnas.utils.io import load_checkpoint

    kept = rated_checkpoint_path(run_dir, block)
    if kept.is_file():
        return load_checkpoint(kept)
    if config.train.prefix != "frozen":
        raise SystemExit(f"{run_dir} has no {kept.name}: its earlier blocks kept learning (train.prefix=online), so the "
                         f"final checkpoint does not hold block {block} as it was rated; train the seed again with this script")
    return final if final is not None else load_checkpoint(run_dir / "checkpoint.pt")


def seed_agreement(tables: list[list[dict[str, float]]]) -> list[dict]:
    """Per block: the Spearman between every two seeds' rating tables (the paths they share), and its mean."""
    from itertools import combinations

    from scipy.stats import spearmanr

    out = []
    for block in range(min(len(t) for t in tables)):
        pairs = {}
        for (i, a), (j, b) in combinations(enumerate(tables), 2):
            shared = sorted(set(a[block]) & set(b[block]))
            if len(shared) > 2:
                pairs[f"{i}-{j}"] = float(spearmanr([a[block][p] for p in shared], [b[block][p] for p in shared])[0])
        out.append({"block": block, "pairs": pairs, "mean": float(np.mean(list(pairs.values()))) if pairs else None})
    return out


def seed_mean_tables(tables: list[list[dict[str, float]]]) -> list[dict[str, float]]:
    """The seeds' block tables averaged after standardising each (mean 0, sd 1 over its paths):
    an ensemble of the seeds' ratings, for paths every seed rated."""
    out = []
    for block in range(min(len(t) for t in tables)):
        shared = sorted(set.intersection(*(set(t[block]) for t in tables)))
        z = []
        for t in tables:
            values = np.array([t[block][p] for p in shared])
            z.append((values - values.mean()) / (values.std() or 1.0))
        out.append(dict(zip(shared, np.mean(z, axis=0).tolist())))
    return out


# ----------------------------------------------------------------------------- seeds side by side
def worker_command(args: argparse.Namespace, seed: int, out: Path) -> list[str]:
    """This script's command line for one seed of ``args``, written into ``out`` without a report."""
    cmd = [sys.executable, str(Path(__file__).resolve()), "--space", args.space, "--preset", args.preset,
           "--ablation", args.ablation, "--seeds", str(seed), "--data-dir", str(args.data_dir),
           "--out", str(out), "--device", args.device, "--quiet", "--no-report"]
    for flag, value in (("--blocks", args.blocks), ("--archive", args.archive), ("--truth", args.truth),
                        ("--official", args.official), ("--rerate-from", args.rerate_from)):
        if value is not None:
            cmd += [flag, str(value)]
    if args.fresh:
        cmd.append("--fresh")
    for item in args.set:
        cmd += ["--set", item]
    return cmd


def worker_env(jobs: int) -> dict[str, str]:
    """Each worker's share of the CPU cores as its torch thread count, unless OMP_NUM_THREADS is set.

    On a GPU the seeds run side by side on the one device: a step of these small networks is
    bound by kernel launches (BENCHMARKS.md, Throughput on a GPU), so the device has room.
    """
    import os

    env = dict(os.environ)
    env.setdefault("OMP_NUM_THREADS", str(max(1, (os.cpu_count() or 1) // jobs)))
    return env


def _die_with_parent() -> None:
    """In a worker, before it runs: SIGTERM when the benchmark process dies, even by SIGKILL
    (Linux), so that no seed keeps running, and holding its folder's lock, after the benchmark."""
    import ctypes
    import signal

    try:
        ctypes.CDLL(None, use_errno=True).prctl(1, int(signal.SIGTERM))  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass  # not Linux: a SIGTERM or Ctrl-C of the benchmark is still passed on


def run_side_by_side(args: argparse.Namespace, seeds: list[int], out: Path) -> None:
    """Run ``seeds`` in up to ``args.jobs`` worker processes; each writes OUT/seed-S/result.json.

    A worker that fails stops the others (they keep their checkpoints, so the next call
    resumes them) and ends the benchmark with the path of its log. A SIGINT or SIGTERM to
    this process is passed on to every worker (a Ctrl-C that reached them too is repeated
    within a second, which they ignore); each saves its checkpoint and stops, and the
    benchmark ends with one line and status 128 + the signal.
    """
    import signal
    import subprocess

    from bossnas.runs import Interrupted

    env = worker_env(args.jobs)
    queue = list(seeds)
    running: dict[int, tuple[subprocess.Popen, Path, float]] = {}
    received: list[int] = []

    def pass_on(signum: int, _frame: object) -> None:
        received.append(signum)
        for proc, _, _ in running.values():
            if proc.poll() is None:
                proc.send_signal(signum)

    previous = {sig: signal.signal(sig, pass_on) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        while queue or running:
            while queue and len(running) < args.jobs and not received:
                seed = queue.pop(0)
                log = out / f"seed-{seed}" / "log.txt"
                log.parent.mkdir(parents=True, exist_ok=True)
                with open(log, "a") as f:
                    proc = subprocess.Popen(worker_command(args, seed, out), stdout=f, stderr=subprocess.STDOUT, env=env,
                                            preexec_fn=_die_with_parent)
                running[seed] = (proc, log, time.perf_counter())
                print(f"seed {seed}: started (log {log})", flush=True)
            if received and not running:
                break
            time.sleep(0.5)
            for seed, (proc, log, start) in list(running.items()):
                if proc.poll() is None:
                    continue
                del running[seed]
                if received:
                    print(f"seed {seed}: stopped with its checkpoint (exit {proc.returncode})", flush=True)
                elif proc.returncode != 0:
                    raise SystemExit(f"seed {seed} failed (exit {proc.returncode}); see {log}")
                else:
                    print(f"seed {seed}: finished in {(time.perf_counter() - start) / 60:.1f} min", flush=True)
        if received:
            name = signal.Signals(received[0]).name
            raise Interrupted(f"interrupted by {name}: every running seed saved its checkpoint; run the same command "
                              "again to resume every seed", received[0])
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        for proc, _, _ in running.values():
            if proc.poll() is None:
                proc.terminate()  # one SIGTERM: the worker stops after its step and saves a checkpoint
        for proc, _, _ in running.values():
            proc.wait()


# ----------------------------------------------------------------------------- aggregation
def _leaves(tree, prefix: str = "") -> dict[str, float]:
    """Flatten nested figures to 'a/b/c' -> number (lists by index), numbers only."""
    out: dict[str, float] = {}
    if isinstance(tree, dict):
        for k, v in tree.items():
            out.update(_leaves(v, f"{prefix}{k}/"))
    elif isinstance(tree, list):
        for i, v in enumerate(tree):
            out.update(_leaves(v, f"{prefix}{i}/"))
    elif isinstance(tree, (int, float)) and not isinstance(tree, bool):
        out[prefix[:-1]] = float(tree)
    return out


def mean_sd(per_seed: list[dict]) -> dict[str, dict[str, float]]:
    """'path' -> {mean, sd (ddof 1; 0 for one seed), n} over the seeds' numeric figures."""
    flat = [_leaves(s) for s in per_seed]
    keys = sorted(set().union(*flat)) if flat else []
    out = {}
    for k in keys:
        values = np.array([f[k] for f in flat if k in f and math.isfinite(f[k])])
        if len(values):
            out[k] = {"mean": float(values.mean()), "sd": float(values.std(ddof=1)) if len(values) > 1 else 0.0,
                      "n": int(len(values))}
    return out


# ----------------------------------------------------------------------------- main
#: keys the benchmark sets itself, and the option that sets each
OWN_KEYS = {"space": "--space", "data.name": "nothing (the benchmark searches CIFAR-10)", "data.root": "--data-dir",
            "device": "--device", "seed": "--seeds"}


def check_overrides(args: argparse.Namespace, extra: dict[str, str]) -> None:
    """Every --set, the preset and the ablation checked as the searches will read them, once,
    before anything is written or started (a worker would only fail in its log)."""
    from bossnas.config import RunConfig, load_config, set_key
    from bossnas.errors import BossNASError

    for key in extra:
        if key in OWN_KEYS:
            raise BossNASError(f"--set {key}=...: the benchmark sets {key} itself; use {OWN_KEYS[key]}")
    if args.rerate_from is not None:
        config = RunConfig()
        for key, value in {**ABLATIONS[args.ablation], **extra}.items():
            set_key(config, key, value)
        return
    load_config(None, [f"{k}={v}" for k, v in {**PRESETS[args.preset], **ABLATIONS[args.ablation], **extra}.items()])


def main(argv: list[str] | None = None) -> int:
    """The benchmark; a bad option or an interrupted run is one ``error:`` line and its status."""
    from bossnas.errors import BossNASError, one_line

    try:
        return _main(argv)
    except BossNASError as exc:
        print(f"error: {one_line(exc)}", file=sys.stderr)
        return getattr(exc, "exit_code", 2)


def _main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--space", choices=SPACES, default="nats-sss")
    parser.add_argument("--preset", choices=sorted(PRESETS), default="smoke")
    parser.add_argument("--ablation", choices=sorted(ABLATIONS), default="none")
    parser.add_argument("--seeds", default="0", help="comma-separated seeds, e.g. 0,1,2")
    parser.add_argument("--blocks", type=int, default=None, help="train and rate only the first N blocks")
    parser.add_argument("--data-dir", type=Path, default=DEFAULT_CACHE)
    parser.add_argument("--archive", type=Path, default=SHARED_DATA / "cifar10-jpeg.tar.gz",
                        help="CIFAR-10 JPEG archive to unpack where ../shared is absent")
    parser.add_argument("--truth", type=Path, default=None,
                        help="arch,test_accuracy CSV (default: the NATS table for nats-sss; none for nasbench-macro)")
    parser.add_argument("--official", type=Path, default=NATS_OFFICIAL, help="official BossNAS block,widths,loss CSV (NATS)")
    parser.add_argument("--out", type=Path, default=None, help="output folder (default bench-out/rating-<space>-<preset>-<ablation>)")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--rerate-from", type=Path, default=None, metavar="BENCH_OUT",
                        help="re-rate the finished seeds of another benchmark folder with this ablation's rating "
                             "settings (search.* only) instead of training")
    parser.add_argument("--fresh", action="store_true", help="start every seed over instead of reusing / resuming it")
    parser.add_argument("--quiet", action="store_true")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="extra config override on top of the preset and ablation (repeatable)")
    parser.add_argument("--jobs", type=int, default=1,
                        help="run up to N seeds side by side, each in its own process (log in OUT/seed-S/log.txt)")
    parser.add_argument("--no-report", action="store_true", help=argparse.SUPPRESS)  # a --jobs worker
    args = parser.parse_args(argv)
    if args.jobs < 1:
        parser.error("--jobs must be 1 or more")
    try:
        seeds = [int(s) for s in args.seeds.split(",") if s.strip()]
    except ValueError:
        parser.error(f"--seeds takes integers separated by commas, e.g. 0,1,2; got '{args.seeds}'")
    if any("=" not in item for item in args.set):
        parser.error("--set takes KEY=VALUE, e.g. --set train.epochs=4")
    check_overrides(args, {k.strip(): v for k, v in (item.split("=", 1) for item in args.set)})
    suffix = ("" if args.blocks is None else f"-blocks{args.blocks}") + ("-rerated" if args.rerate_from else "")
    out = args.out or REPO / "bench-out" / f"rating-{args.space}-{args.preset}-{args.ablation}{suffix}"
    out.mkdir(parents=True, exist_ok=True)
    truth_path = args.truth if args.truth is not None else (NATS_TRUTH if args.space == "nats-sss" else None)

    load_start = time.perf_counter()
    data_dir = ensure_cifar10(args.data_dir, args.archive)
    prepare_s = time.perf_counter() - load_start

    from bossnas.evaluation.correlation import load_truth

    if args.no_report:  # a --jobs worker: its seeds' result.json, nothing else
        for seed in seeds:
            seed_result(args, seed, out / f"seed-{seed}", data_dir, fresh=args.fresh)
        return 0

    u = Universe.of(args.space)
    u.write_costs(out / "costs.csv")
    truth = None
    if truth_path is not None:
        truth_map = load_truth(truth_path)
        truth = np.array([truth_map[a] for a in u.archs])

    side_by_side: set[int] = set()
    pending = [s for s in seeds if args.fresh or not (out / f"seed-{s}" / "result.json").is_file()]
    if args.jobs > 1 and len(pending) > 1:
        run_side_by_side(args, pending, out)
        side_by_side = set(pending)

    per_seed, all_tables = [], []
    for seed in seeds:
        folder = out / f"seed-{seed}"
        result = seed_result(args, seed, folder, data_dir, fresh=args.fresh and seed not in side_by_side)
        tables = result["tables"]
        all_tables.append(tables)
        figures = {"blocks": block_figures(u, tables, truth)}
        if len(tables) == len(u.block_paths):
            ratings = u.ratings(tables)
            figures["archs"] = score_figures(u, -ratings, truth)
            chosen = int(np.argmin(ratings))
            figures["chosen"] = {"arch": u.archs[chosen], "accuracy": None if truth is None else float(truth[chosen])}
            with open(folder / "ratings.csv", "w", newline="") as f:
                f.write("arch,rating\n" + "".join(f"{a},{r:.8f}\n" for a, r in zip(u.archs, ratings)))
        per_seed.append({"seed": seed, "timing": result["timing"], "best_paths": result["best_paths"],
                         "resumed": result.get("resumed", False), "overrides": result["overrides"], **figures})

    baselines = copy.deepcopy(baseline_figures(args.space, args.official, truth_path, seeds[0])) if truth is not None else {}
    agreement = seed_agreement(all_tables) if len(seeds) > 1 else []
    if len(seeds) > 1 and truth is not None and all(len(t) == len(u.block_paths) for t in all_tables):
        # what the seeds' ratings give together: as many supernets trained as the seeds, one
        # rating; beside one seed trained as long (BENCHMARKS.md)
        mean_tables = seed_mean_tables(all_tables)
        if all(len(t) == len(p) for t, p in zip(mean_tables, u.block_paths)):
            baselines[f"mean of seeds {','.join(map(str, seeds))}' standardised block ratings"] = {
                "archs": score_figures(u, -u.ratings(mean_tables), truth), "blocks": block_figures(u, mean_tables, truth)}
    if truth is not None and args.space == "nats-sss" and args.official is not None:
        baselines["official BossNAS ratings"]["blocks"] = block_figures(u, official_block_tables(args.official), truth)
    report = {
        "space": args.space, "preset": args.preset, "ablation": args.ablation, "blocks": args.blocks, "seeds": seeds,
        "truth": str(truth_path) if truth_path else None, "machine": machine(), "prepare_s": prepare_s,
        "architectures": len(u.archs), "best_accuracy": None if truth is None else float(truth.max()),
        "ours": {"per_seed": per_seed, "mean_sd": mean_sd([{k: s[k] for k in ("blocks", "archs") if k in s} for s in per_seed]),
                 "seed_agreement": agreement},
        "baselines": baselines,
        "command": "python benchmarks/rating.py " + " ".join(argv if argv is not None else sys.argv[1:]),
    }
    write_json(out / "report.json", report)
    md = render_markdown(report)
    (out / "report.md").write_text(md)
    print(md)
    return 0


# ----------------------------------------------------------------------------- report
def _pm(stat: dict | None, digits: int = 3) -> str:
    if stat is None:
        return "-"
    return f"{stat['mean']:.{digits}f} ± {stat['sd']:.{digits}f}" if stat["n"] > 1 else f"{stat['mean']:.{digits}f}"


def _value(x: float | None, digits: int = 3) -> str:
    return "-" if x is None or not math.isfinite(x) else f"{x:.{digits}f}"


def _seed_wall(seed: dict) -> str:
    """A seed's wall time; a resumed one also counts the training and rating of its earlier calls."""
    t = seed["timing"]
    if not seed["resumed"]:
        return f"seed {seed['seed']} {t['wall_s'] / 60:.1f} min"
    return (f"seed {seed['seed']} {(t['train_s'] + t['rate_s']) / 60:.1f} min of training and rating "
            f"(resumed: {t['wall_s'] / 60:.1f} min in the last call)")


def render_markdown(report: dict) -> str:
    ours, seeds = report["ours"], report["seeds"]
    ms = ours["mean_sd"]
    label = f"ours, mean ± sd over seeds {','.join(map(str, seeds))}" if len(seeds) > 1 else f"ours, seed {seeds[0]}"
    first = ours["per_seed"][0]
    t = [s["timing"] for s in ours["per_seed"]]
    lines = [
        f"### Rating accuracy on `{report['space']}` CIFAR-10: preset `{report['preset']}`, ablation `{report['ablation']}`"
        + (f", first {report['blocks']} block(s)" if report["blocks"] else ""),
        "",
        f"- command: `{report['command']}`",
        f"- machine: {report['machine']['machine']}, {report['machine']['cpu_count']} cores, torch {report['machine']['torch']}"
        + (f", {report['machine']['gpu']}" if "gpu" in report["machine"] else "") + f"; {report['machine']['date']}",
        f"- settings: {', '.join(f'{k}={v}' for k, v in first['overrides'].items() if k not in ('device', 'seed'))}",
        "- wall per seed: " + ", ".join(_seed_wall(s) for s in ours["per_seed"])
        + f" (training {np.mean([x['train_s'] for x in t]) / 60:.1f} min, rating {np.mean([x['rate_s'] for x in t]) / 60:.1f} min on average)",
        "",
        "Every score is oriented so that larger = predicted better (ratings negated). Size-controlled columns: "
        "`top-10% τ` = Kendall inside the true top 10%; `… dec. ρ` = mean Spearman inside deciles of that size measure.",
        "",
    ]
    has_truth = report["truth"] is not None
    if "archs/picks/FLOPs/3/index" in ms and has_truth:
        sizes = [k.split("/")[2] for k in ms if k.startswith("archs/decile/")]
        header = ["Spearman ρ", "Kendall τ", "top-10% τ"] + [f"{s} dec. ρ" for s in sizes]
        lines += ["| scores | " + " | ".join(header) + " |", "|---" * (len(header) + 1) + "|"]
        keys = ["archs/spearman", "archs/kendall", "archs/top10_kendall"] + [f"archs/decile/{s}" for s in sizes]
        lines.append(f"| **{label}** | " + " | ".join(_pm(ms.get(k)) for k in keys) + " |")
        if len(seeds) > 1:
            for s in ours["per_seed"]:
                flat = _leaves({"archs": s["archs"]})
                lines.append(f"| ours, seed {s['seed']} | " + " | ".join(_value(flat.get(k)) for k in keys) + " |")
        for name, b in report["baselines"].items():
            flat = _leaves({"archs": b["archs"]})
            lines.append(f"| {name} | " + " | ".join(_value(flat.get(k)) for k in keys) + " |")
        lines += ["", f"Accuracy of the pick / regret to the best reachable, under a fraction of the largest FLOPs and "
                      f"parameter count (best in the space {report['best_accuracy']:.2f}%):", ""]
        header = [f"{c} ≤{int(f * 100)}%" for c in BUDGET_COSTS for f in (0.1, 0.25, 0.5, 1.0)]
        lines += ["| scores | " + " | ".join(header) + " |", "|---" * (len(header) + 1) + "|"]
        pick_keys = [(f"archs/picks/{c}/{i}/picked", f"archs/picks/{c}/{i}/regret") for c in BUDGET_COSTS for i in range(4)]
        lines.append(f"| **{label}** | " + " | ".join(f"{_pm(ms.get(p), 2)} / {_pm(ms.get(r), 2)}" for p, r in pick_keys) + " |")
        for name, b in report["baselines"].items():
            flat = _leaves({"archs": b["archs"]})
            lines.append(f"| {name} | " + " | ".join(f"{_value(flat.get(p), 2)} / {_value(flat.get(r), 2)}" for p, r in pick_keys) + " |")
        lines.append("")
    elif "archs/picks/FLOPs/3/index" in ms:
        lines += ["No accuracy table given: the figures that need none. `ratings.csv` of each seed and `costs.csv` "
                  "score with `bossnas correlate seed-S/ratings.csv TRUTH.csv --costs costs.csv`.", "",
                  "| seed | chosen | " + " | ".join(f"ρ vs {s}" for s in ("log params", "FLOPs")) + " | "
                  + " | ".join(f"pick ≤{int(f * 100)}% FLOPs" for f in (0.1, 0.25, 0.5, 1.0)) + " |",
                  "|---" * 8 + "|"]
        for s in ours["per_seed"]:
            a = s["archs"]
            lines.append(f"| {s['seed']} | `{s['chosen']['arch']}` | " + " | ".join(_value(a["spearman_vs"][k]) for k in ("log params", "FLOPs"))
                         + " | " + " | ".join("-" if p["arch"] is None else f"`{p['arch']}` ({p['cost_of_pick'] / 1e6:.1f}M)"
                                             for p in a["picks"]["FLOPs"]) + " |")
        lines.append("")
    # per block
    blocks = [b["block"] for b in first["blocks"]]
    if has_truth:
        covs = list(first["blocks"][0]["partial"]) if first["blocks"] else []
        lines += ["Per block: Spearman of the path ratings against each path's marginal accuracy / partial Spearman after "
                  + " / after ".join(covs) + ":", "",
                  "| scores | " + " | ".join(f"block {b}" for b in blocks) + " |", "|---" * (len(blocks) + 1) + "|"]

        def row(get) -> str:
            return " | ".join(" / ".join([get(f"blocks/{i}/spearman")] + [get(f"blocks/{i}/partial/{c}") for c in covs])
                              for i in range(len(blocks)))
        lines.append(f"| **{label}** | " + row(lambda k: _pm(ms.get(k), 2)) + " |")
        if len(seeds) > 1:
            for s in ours["per_seed"]:
                flat = _leaves({"blocks": s["blocks"]})
                lines.append(f"| ours, seed {s['seed']} | " + row(lambda k, f=flat: _value(f.get(k), 2)) + " |")
        for name, b in report["baselines"].items():
            if b.get("blocks"):
                flat = _leaves({"blocks": b["blocks"]})
                lines.append(f"| {name} | " + row(lambda k, f=flat: _value(f.get(k), 2)) + " |")
    else:
        covs = list(first["blocks"][0]["spearman_vs"]) if first["blocks"] else []
        lines += ["Per block, Spearman of the path ratings against path size (" + ", ".join(covs) + "):", "",
                  "| seed | " + " | ".join(f"block {b}" for b in blocks) + " |", "|---" * (len(blocks) + 1) + "|"]
        for s in ours["per_seed"]:
            lines.append(f"| {s['seed']} | " + " | ".join(" / ".join(_value(b["spearman_vs"][c], 2) for c in covs)
                                                         for b in s["blocks"]) + " |")
    agreement = ours.get("seed_agreement") or []
    if agreement:
        lines += ["", "Agreement between seeds (Spearman between two seeds' tables of a block, mean over pairs [each pair]): "
                  + "; ".join(f"block {a['block']} {_value(a['mean'], 2)} [" + ", ".join(f"{_value(v, 2)}" for v in a["pairs"].values()) + "]"
                              for a in agreement)]
    lines += ["", "Chosen per seed: " + ", ".join(
        f"seed {s['seed']} `{s['chosen']['arch']}`" + (f" ({s['chosen']['accuracy']:.2f}%)" if s["chosen"]["accuracy"] is not None else "")
        for s in ours["per_seed"] if "chosen" in s) + "; best paths: "
        + "; ".join(f"seed {s['seed']} " + ", ".join(f"`{p}`" for p in s["best_paths"]) for s in ours["per_seed"]), ""]
    return "\n".join(lines)


if __name__ == "__main__":
    raise SystemExit(main())
