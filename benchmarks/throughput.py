"""Throughput of a BossNAS training step and of block rating, against the cost of the arithmetic.

For each space and block it measures, side by side in one run on the same batch:

* the training step (K paths, two views, ensemble target, optimizer step, EMA update) with
  the default learning prefix (``train.prefix=online``), images/s, and the **overhead
  ratio** = step time / reference, where the reference is the arithmetic the step cannot
  avoid, each part timed alone on the same batch: the online prefix forward once per view
  (with its graph) and the target prefix once per view, for every path the forward+backward
  of its standalone online block and heads on both views and the forward of its standalone
  target block and projector on both views, and one backward through the online prefix;
* on blocks with a prefix, the same with ``train.prefix=frozen`` (the prefix once, without
  gradients) and its own reference, and the per-round ratio of the online step to the
  frozen one;
* the online step with the prefix recomputed for every path (the official code's way,
  ``share_prefix=False``) and the speed-up of sharing it;
* the rating of the whole block (BN recalibration + online and target forwards of every
  path), and its ratio to the standalone forwards of all its paths on the same images
  (plus the shared prefix once);
* achieved GFLOP/s of the step (counted by torch.utils.flop_counter) next to the
  machine's dense matmul GFLOP/s measured in the same run, and peak memory.

    python benchmarks/throughput.py                 # CPU, nats-sss, batch 256
    python benchmarks/throughput.py --device cuda   # GPU, bf16 autocast
"""

from __future__ import annotations

import argparse
import resource
import statistics
import sys
import time
from pathlib import Path

import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import REPO, machine, write_json  # noqa: E402

from bossnas.utils.timing import MAX_TRUSTED_SPREAD, Spread, ratio_spread  # noqa: E402


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def timed(fn, device: torch.device, repeats: int, warmup: int = 1) -> float:
    """Median wall time of ``fn`` over ``repeats`` calls after ``warmup`` calls."""
    for _ in range(warmup):
        fn()
    sync(device)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        sync(device)
        times.append(time.perf_counter() - start)
    times.sort()
    return times[len(times) // 2]


def interleaved(fns, rounds: int, warmup: int = 1) -> tuple[list[float], list[list[float]]]:
    """Time ``fns`` alternately, every one once per round (``bossnas.utils.timing``, the same
    method as the latency tables): their median times and their per-round times. Alternating
    keeps a shared machine's drift out of the per-round ratios."""
    from bossnas.utils.timing import interleaved_times, medians

    times = interleaved_times(fns, rounds, torch.get_num_threads(), warmup=warmup)
    return medians(times), times


def matmul_reference(device: torch.device, dtype: torch.dtype):
    """A dense matmul (the machine's arithmetic peak) and its FLOPs, timed inside the same rounds as the step."""
    n = 4096 if device.type == "cuda" else 1536
    a = torch.randn(n, n, device=device, dtype=dtype)
    b = torch.randn(n, n, device=device, dtype=dtype)
    return (lambda: a @ b), 2 * n**3


def peak_memory_mb(device: torch.device) -> float:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated() / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


class StandalonePath(nn.Module):
    """One path of one block as plain modules: materialized block + (copied) heads."""

    def __init__(self, block_module: nn.Module, adapter: nn.Module, projector: nn.Module, predictor: nn.Module | None):
        super().__init__()
        self.block, self.adapter, self.projector, self.predictor = block_module, adapter, projector, predictor

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        z = self.projector(self.adapter(self.block(x)))
        return self.predictor(z) if self.predictor is not None else z


def bench_block(space, block: int, args, device: torch.device, autocast) -> dict:
    import copy

    from bossnas.data.augment import build_augment
    from bossnas.data.batches import seeded_generator
    from bossnas.search.rating import rate_block
    from bossnas.ssl.momentum import ema_update_
    from bossnas.supernet.siamese import SiameseSupernet
    from bossnas.train.optim import build_optimizer
    from bossnas.train.step import bossnas_step

    torch.manual_seed(0)
    model = SiameseSupernet(space, args.hidden_dim, args.proj_dim).to(device)
    if args.channels_last:
        model.to(memory_format=torch.channels_last)
    best: list = []  # a legal chain: each block's middle path among those that follow the block before
    for b in range(block):
        options = space.block_paths(b, best[-1] if best else None)
        best.append(options[len(options) // 2])
    prev = best[-1] if best else None
    sampling = space.default_sampling
    k = args.k or (space.max_fair_k(block) if sampling == "fair" else 4)
    paths = space.sample_paths(block, k, sampling, seeded_generator(1, block), prev)
    images = torch.randint(0, 256, (args.batch, space.in_channels, space.image_size, space.image_size), dtype=torch.uint8, device=device)
    augment = build_augment("small", (0.5,) * space.in_channels, (0.25,) * space.in_channels)
    # train.prefix: online (the default: the earlier blocks keep learning) and, where there is
    # a prefix, frozen; each with its own optimizer and EMA pairs, as the runner builds them
    modes = ("online", "frozen") if block > 0 else ("online",)
    optimizers = {m: build_optimizer("sgd", model.trainable_parameters(block, m == "online"), 0.01, 0.9, 1e-4) for m in modes}
    ema_pairs = {m: model.ema_pairs(block, m == "online") for m in modes}
    gen = seeded_generator(2)

    def prep(x: torch.Tensor) -> torch.Tensor:
        return x.contiguous(memory_format=torch.channels_last) if args.channels_last else x

    def set_modes(mode: str) -> None:
        """As the runner does: everything in train mode, a frozen prefix in eval mode."""
        model.train()
        if mode == "frozen":
            for b in range(block):
                model.target.block_module(b).eval()
                model.online.block_module(b).eval()

    def train_step(mode: str = "online", share_prefix: bool = True) -> None:
        set_modes(mode)
        v1, v2 = augment(images, gen)
        bossnas_step(model, block, paths, prep(v1), prep(v2), best, ensemble=True, autocast=autocast,
                     share_prefix=share_prefix, prefix=mode)
        optimizers[mode].step()
        optimizers[mode].zero_grad(set_to_none=True)
        ema_update_(*ema_pairs[mode], 0.99)

    # ---- reference: the unavoidable arithmetic on the same batch, as plain modules
    v1, v2 = (prep(v) for v in augment(images, seeded_generator(3)))
    set_modes("frozen")
    with torch.no_grad(), autocast():
        f1, f2 = model.forward_prefix(torch.cat([v1, v2]), best).chunk(2) if best else (v1, v2)
    pieces = []
    for path in paths:
        oh, th = model.online_heads[block], model.target_heads[block]
        online = StandalonePath(model.online.materialize_block(block, path, prev), copy.deepcopy(oh.adapter),
                                copy.deepcopy(oh.projector), copy.deepcopy(oh.predictor)).to(device).train()
        target = StandalonePath(model.target.materialize_block(block, path, prev), copy.deepcopy(th[0]),
                                copy.deepcopy(th[1]), None).to(device).train()
        if args.channels_last:
            online.to(memory_format=torch.channels_last)
            target.to(memory_format=torch.channels_last)
        pieces.append((online, target))
    fixed = torch.randn(f1.shape[0], args.proj_dim, device=device)

    def reference(mode: str = "online") -> None:
        """The arithmetic each step cannot avoid. Frozen: the prefix once (both views, no
        gradients), then per path the online forward+backward and the target forward on each
        view. Online: the online prefix forward once per view with its graph, the target
        prefix once per view, the same per-path work on the prefix's outputs, and one backward
        through the online prefix with the gradient the paths left on its outputs."""
        set_modes(mode)
        graph = []
        if best and mode == "online":
            with autocast():
                outputs = [model.online_prefix(v, best) for v in (v1, v2)]
            inputs = [o.detach().requires_grad_() for o in outputs]
            graph = list(zip(outputs, inputs))
            with torch.inference_mode(), autocast():
                target_inputs = [model.forward_prefix(v, best) for v in (v1, v2)]
        else:
            if best:
                with torch.no_grad(), autocast():
                    model.forward_prefix(torch.cat([v1, v2]), best)
            inputs = target_inputs = [f1, f2]
        for online, target in pieces:
            with autocast():
                loss = sum((online(f).float() * fixed).sum() for f in inputs)
            loss.backward()
            with torch.inference_mode(), autocast():
                for f in target_inputs:
                    target(f)
        if graph:
            torch.autograd.backward([o for o, _ in graph], [i.grad for _, i in graph])

    state = copy.deepcopy(model.state_dict())
    result: dict = {"space": space.name, "block": block, "paths": len(space.block_paths(block)), "k": k, "batch": args.batch}
    from torch.utils.flop_counter import FlopCounterMode

    with FlopCounterMode(display=False) as counter:
        train_step()
    result["step_gflop"] = counter.get_total_flops() / 1e9
    matmul, matmul_flop = matmul_reference(device, torch.bfloat16 if device.type == "cuda" else torch.float32)
    # the steps, their arithmetic references and the matmul peak, every one once per round
    fns = [train_step, reference]
    if "frozen" in modes:
        fns += [lambda: train_step("frozen"), lambda: reference("frozen")]
    medians_s, times = interleaved(fns + [matmul], args.repeats)
    step_s, reference_s, matmul_s = medians_s[0], medians_s[1], medians_s[-1]
    t_step, t_ref, t_mm = times[0], times[1], times[-1]
    overhead = ratio_spread(t_step, t_ref)
    # share of the matmul peak per round: (step FLOPs / step time) / (matmul FLOPs / matmul time)
    share = Spread.of([result["step_gflop"] * 1e9 / a / (matmul_flop / m) for a, m in zip(t_step, t_mm)])
    result.update(prefix="online", step_s=step_s, images_per_s=args.batch / step_s, reference_s=reference_s,
                  overhead_ratio=overhead.median, overhead_spread=spread_dict(overhead),
                  machine_gflops=matmul_flop / matmul_s / 1e9, achieved_gflops=result["step_gflop"] / step_s,
                  matmul_share=share.median, matmul_share_spread=spread_dict(share))
    if "frozen" in modes:
        frozen_overhead = ratio_spread(times[2], times[3])
        online_vs_frozen = ratio_spread(t_step, times[2])
        result.update(frozen_step_s=medians_s[2], frozen_reference_s=medians_s[3],
                      frozen_overhead_ratio=frozen_overhead.median, frozen_overhead_spread=spread_dict(frozen_overhead),
                      online_vs_frozen=online_vs_frozen.median, online_vs_frozen_spread=spread_dict(online_vs_frozen))
    if block > 0:
        # the official code's way: the online prefix again for every path (and the target's too)
        result["naive_step_s"] = timed(lambda: train_step("online", False), device, max(1, args.repeats // 2))
        result["prefix_sharing_speedup"] = result["naive_step_s"] / result["step_s"]
    model.load_state_dict(state)
    set_modes("frozen")  # the rating below runs the prefix in eval mode

    # ---- rating a whole block vs the standalone forwards of all its paths
    all_paths = space.block_paths(block, prev)
    if args.rate_paths:
        all_paths = all_paths[: args.rate_paths]
    n_rate = args.rate_images
    rate_images = torch.randint(0, 256, (n_rate,) + images.shape[1:], dtype=torch.uint8, device=device)
    recal_images = [torch.randint(0, 256, images.shape, dtype=torch.uint8, device=device)]

    def rate(share_prefix: bool = True, paths: list | None = None) -> None:
        paths = all_paths if paths is None else paths
        g = seeded_generator(4)
        views = [prep(v) for v in augment(rate_images, g)]
        recal = [prep(augment.view(x, g)) for x in recal_images]
        with torch.no_grad(), autocast():
            pre = (lambda x: model.forward_prefix(x, best)) if best else (lambda x: x)
            if share_prefix:
                recal_f = [pre(x) for x in recal]
                rate_f = (pre(views[0]), pre(views[1]))
        if share_prefix:
            rate_block(model, block, paths, recal_f, rate_f, batch_size=args.batch, autocast=autocast)
        else:
            for p in paths:  # naive: the prefix again for every path
                with torch.no_grad(), autocast():
                    recal_f = [pre(x) for x in recal]
                    rate_f = (pre(views[0]), pre(views[1]))
                rate_block(model, block, [p], recal_f, rate_f, batch_size=args.batch, autocast=autocast)

    if block > 0 and args.naive_rating:
        result["naive_rate_s"] = timed(lambda: rate(False), device, 1, warmup=0)
    g = seeded_generator(4)
    views = [prep(v) for v in augment(rate_images, g)]
    recal = [prep(augment.view(x, g)) for x in recal_images]
    standalone = []
    for path in all_paths:
        oh, th = model.online_heads[block], model.target_heads[block]
        online = StandalonePath(model.online.materialize_block(block, path, prev), oh.adapter, oh.projector, oh.predictor).to(device)
        target = StandalonePath(model.target.materialize_block(block, path, prev), th[0], th[1], None).to(device)
        if args.channels_last:
            online.to(memory_format=torch.channels_last)
            target.to(memory_format=torch.channels_last)
        standalone.append((online, target))

    @torch.no_grad()
    def rate_reference() -> None:
        """The prefix once for all images, then per path the standalone online and target
        forwards: train mode on the recalibration batch, eval mode on both rating views."""
        with autocast():
            pre = (lambda x: model.forward_prefix(x, best)) if best else (lambda x: x)
            recal_f = [pre(x) for x in recal]
            rate_f = (pre(views[0]), pre(views[1]))
            for online, target in standalone:
                online.train()
                target.train()
                for x in recal_f:
                    online(x)
                    target(x)
                online.eval()
                target.eval()
                for v in rate_f:
                    for chunk in v.split(args.batch):
                        online(chunk)
                        target(chunk)

    rate(paths=all_paths[:2])  # warm-up: first-call costs (kernel selection for new shapes) are not rating's
    # no further warm-up: each is called once to size its measurement before the rounds
    (rate_s, rate_ref_s), (t_rate, t_rate_ref) = interleaved([rate, rate_reference], args.rate_rounds, warmup=0)
    rate_spread = ratio_spread(t_rate, t_rate_ref)
    result.update(rate_s=rate_s, rated_paths=len(all_paths), rate_reference_s=rate_ref_s, rate_ratio=rate_spread.median,
                  rate_spread=spread_dict(rate_spread))
    if "naive_rate_s" in result:
        result["rate_prefix_speedup"] = result["naive_rate_s"] / rate_s
    result["peak_memory_mb"] = peak_memory_mb(device)
    return result


def main(argv: list[str] | None = None) -> int:
    from bossnas.spaces import create_space, list_spaces
    from bossnas.utils.device import autocast_factory, resolve_device

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--spaces", default="nats-sss", help="comma-separated, or 'all'")
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--image-size", type=int, default=None, help="default: 16 on CPU, 32 on CUDA (nats-sss)")
    parser.add_argument("--k", type=int, default=None)
    parser.add_argument("--hidden-dim", type=int, default=512)
    parser.add_argument("--proj-dim", type=int, default=128)
    parser.add_argument("--repeats", type=int, default=7, help="interleaved rounds of step vs reference vs matmul")
    parser.add_argument("--rate-rounds", type=int, default=5, help="interleaved rounds of rating vs reference")
    parser.add_argument("--rate-images", type=int, default=128)
    parser.add_argument("--rate-paths", type=int, default=0, help="rate only the first N paths of a block (0 = all)")
    parser.add_argument("--naive-rating", action="store_true", help="also time rating with the prefix recomputed per path")
    parser.add_argument("--channels-last", action="store_true")
    parser.add_argument("--width-mult", type=float, default=0.25, help="for hytra / mbconv")
    parser.add_argument("--blocks", default=None, help="comma-separated block indices (default: all)")
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args(argv)
    device = resolve_device(args.device)
    autocast = autocast_factory("auto", device)
    size = args.image_size or (32 if device.type == "cuda" else 16)
    names = list_spaces() if args.spaces == "all" else args.spaces.split(",")
    rows = []
    for name in names:
        options = {} if name == "nats-sss" else {"width_mult": args.width_mult}
        space = create_space(name, in_channels=3, image_size=size, num_classes=10, **options)
        wanted = None if args.blocks is None else {int(b) for b in args.blocks.split(",")}
        for spec in space.blocks:
            if wanted is not None and spec.index not in wanted:
                continue
            row = bench_block(space, spec.index, args, device, autocast)
            rows.append(row)
            print(format_row(row), flush=True)
    report = {"machine": machine(), "device": str(device), "image_size": size, "args": vars(args) | {"out": None},
              "matmul_gflops": statistics.median(r["machine_gflops"] for r in rows), "rows": rows,
              "untrusted": [f"{r['space']} block {r['block']}: {label}" for r in rows for name, label in SPREADS.items()
                            if name in r and not r[name]["trusted"]],
              "command": "python benchmarks/throughput.py " + " ".join(argv if argv is not None else sys.argv[1:])}
    out = args.out or REPO / "bench-out" / f"throughput-{device.type}"
    write_json(out / "throughput.json", report)
    (out / "throughput.md").write_text(render(report))
    print(render(report))
    return 0


#: per-round ratios whose spread is reported and checked
SPREADS = {"overhead_spread": "overhead ratio", "frozen_overhead_spread": "frozen-prefix overhead ratio",
           "online_vs_frozen_spread": "online / frozen", "rate_spread": "rating ratio", "matmul_share_spread": "share of matmul"}


def spread_dict(spread: Spread) -> dict:
    return {"min": spread.low, "median": spread.median, "max": spread.high, "trusted": spread.trusted}


def show_spread(d: dict, fmt: str = ".3f") -> str:
    """median [min..max], with a warning sign when the rounds disagree too much to trust the figure."""
    text = f"{d['median']:{fmt}} [{d['min']:{fmt}}..{d['max']:{fmt}}]"
    return text if d["trusted"] else text + " (!)"


def format_row(r: dict) -> str:
    extra = f" naive x{r['prefix_sharing_speedup']:.2f}" if "prefix_sharing_speedup" in r else ""
    if "frozen_step_s" in r:
        extra += (f"; frozen prefix: step {r['frozen_step_s']:.3f}s overhead {show_spread(r['frozen_overhead_spread'])}, "
                  f"online / frozen {show_spread(r['online_vs_frozen_spread'])}")
    return (f"{r['space']} block {r['block']}: step {r['step_s']:.3f}s ({r['images_per_s']:.0f} img/s), overhead "
            f"{show_spread(r['overhead_spread'])}{extra}, rating {r['rate_s']:.2f}s ratio {show_spread(r['rate_spread'])}, "
            f"{r['achieved_gflops']:.1f} GFLOP/s = {show_spread(r['matmul_share_spread'], '.0%')} of matmul")


def render(report: dict) -> str:
    m = report["machine"]
    lines = [
        f"Throughput on {report['device']}" + (f" ({m['gpu']})" if "gpu" in m else f" ({m['cpu_count']} cores)")
        + f", torch {m['torch']}, {m['date']}; input {report['image_size']}x{report['image_size']}, "
        f"batch {report['args']['batch']}; dense matmul {report['matmul_gflops']:.0f} GFLOP/s (median over blocks).",
        "",
        f"Command: `{report['command']}`",
        "",
        "Ratios are median [min..max] over interleaved rounds (step, reference and matmul timed once each per round; "
        f"rating and its reference likewise); (!) marks a spread wider than x{MAX_TRUSTED_SPREAD} (max/min): "
        "the machine was too busy for that figure to be trusted.",
        "",
        "Step and overhead: the default learning prefix (`train.prefix=online`); `frozen`: the same block with "
        "`train.prefix=frozen`; online / frozen: the per-round ratio of the two steps; naive: the online step with the "
        "prefix recomputed for every path, as the official code does, over the shared one.",
        "",
        "| space | block | K | step s | img/s | overhead ratio | frozen step s | frozen overhead ratio | online / frozen | naive prefix speed-up | rating s (paths) | rating ratio | GFLOP/s (share of matmul) | peak MB |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in report["rows"]:
        naive = f"{r['prefix_sharing_speedup']:.2f}x" if "prefix_sharing_speedup" in r else "-"
        frozen = (f"{r['frozen_step_s']:.3f} | {show_spread(r['frozen_overhead_spread'])} | {show_spread(r['online_vs_frozen_spread'])}"
                  if "frozen_step_s" in r else "- | - | -")
        lines.append(
            f"| {r['space']} | {r['block']} | {r['k']} | {r['step_s']:.3f} | {r['images_per_s']:.0f} | "
            f"{show_spread(r['overhead_spread'])} | {frozen} | {naive} | {r['rate_s']:.2f} ({r['rated_paths']}) | "
            f"{show_spread(r['rate_spread'])} | {r['achieved_gflops']:.0f} ({show_spread(r['matmul_share_spread'], '.0%')}) | "
            f"{r['peak_memory_mb']:.0f} |"
        )
    if report["untrusted"]:
        lines += ["", f"**Spread too wide to trust** (rerun on a quieter machine): {'; '.join(report['untrusted'])}."]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    raise SystemExit(main())
