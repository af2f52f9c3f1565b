"""Process-group helpers for multi-process (torchrun) runs: small functions of tensors.

A run started by ``torchrun --nproc_per_node=N -m bossnas run ...`` (or ``bossnas run
--nproc N``) has one process per device. Every helper here is a no-op, or the identity,
in a single process, so the training and rating code calls them unconditionally.

>>> world_size(), rank(), is_main()   # outside torchrun
(1, 0, True)
"""

from __future__ import annotations

import datetime
import os
from collections.abc import Callable, Sequence
from typing import Any

import torch
import torch.distributed as dist

from bossnas.errors import BossNASError

#: how long a collective waits for a slow process before the run fails (rating one path
#: of a large space on one process can take minutes; an hour is a dead process)
TIMEOUT = datetime.timedelta(minutes=60)


def launched() -> bool:
    """Whether this process was started by torchrun with more than one process in total."""
    return int(os.environ.get("WORLD_SIZE", "1")) > 1


def active() -> bool:
    """Whether a process group of more than one process is up."""
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def world_size() -> int:
    return dist.get_world_size() if active() else 1


def rank() -> int:
    return dist.get_rank() if active() else 0


def local_rank() -> int:
    return int(os.environ.get("LOCAL_RANK", "0")) if active() else 0


def is_main() -> bool:
    """True on the process that writes files and prints (rank 0)."""
    return rank() == 0


def env_rank() -> int:
    """This process's rank from torchrun's environment (usable before the group is up)."""
    return int(os.environ.get("RANK", "0"))


def init_from_env(device: str = "auto") -> torch.device:
    """Join the process group torchrun describes in the environment; returns this process's device.

    gloo on CPU, NCCL on CUDA; each process takes ``cuda:LOCAL_RANK``. Outside torchrun this
    only resolves ``device``.
    """
    from bossnas.utils.device import resolve_device

    if not launched():
        return resolve_device(device)
    if not dist.is_available():
        raise BossNASError("this torch build has no torch.distributed; run a single process")
    local = int(os.environ.get("LOCAL_RANK", "0"))
    if device.startswith("cuda:"):
        raise BossNASError(
            f"device={device} pins every process to one GPU; use device=cuda (each process takes cuda:LOCAL_RANK) or device=cpu"
        )
    use_cuda = device == "cuda" or (device == "auto" and torch.cuda.is_available())
    if use_cuda:
        if not torch.cuda.is_available():
            raise BossNASError("device=cuda asked for but CUDA is not available; use device=cpu")
        if local >= torch.cuda.device_count():
            raise BossNASError(
                f"process with LOCAL_RANK {local} has no GPU ({torch.cuda.device_count()} visible); "
                "start at most one process per GPU (--nproc-per-node)"
            )
        torch.cuda.set_device(local)
        resolved = torch.device("cuda", local)
    else:
        resolved = torch.device("cpu")
    if not dist.is_initialized():
        backend = "nccl" if resolved.type == "cuda" else "gloo"
        dist.init_process_group(backend, timeout=TIMEOUT, device_id=resolved if resolved.type == "cuda" else None)
    return resolved


def shutdown() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def barrier() -> None:
    if active():
        dist.barrier()


def all_reduce_sum_(tensor: torch.Tensor) -> torch.Tensor:
    """In place: the element-wise sum over processes."""
    if active():
        dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
    return tensor


def all_gather(tensor: torch.Tensor) -> list[torch.Tensor]:
    """Every process's ``tensor`` (same shape on each), in rank order. No gradient flows."""
    if not active():
        return [tensor]
    out = [torch.empty_like(tensor) for _ in range(world_size())]
    dist.all_gather(out, tensor.contiguous())
    return out


def broadcast_object(obj: Any, src: int = 0) -> Any:
    """``obj`` of process ``src`` on every process (pickled; for configs and checkpoints)."""
    if not active():
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=src)
    return box[0]


def on_main(fn: Callable[[], Any]) -> Any:
    """Run ``fn`` on rank 0 only and give its result to every process.

    A :class:`BossNASError` raised by ``fn`` is raised on every process, so that a check
    made by rank 0 alone (the run folder, the checkpoint) stops every process the same way.
    """
    result, error = None, None
    if is_main():
        try:
            result = fn()
        except BossNASError as exc:
            error = str(exc)
    result, error = broadcast_object((result, error))
    if error is not None:
        raise BossNASError(error)
    return result


@torch.no_grad()
def broadcast_module_(module: torch.nn.Module, src: int = 0, parameters: bool = True) -> None:
    """Copy the buffers (BatchNorm statistics) and, with ``parameters``, the parameters of
    ``module`` from process ``src`` to all others."""
    if not active():
        return
    tensors = (list(module.parameters()) if parameters else []) + list(module.buffers())
    for t in tensors:
        dist.broadcast(t.data, src=src)


@torch.no_grad()
def average_gradients_(params: Sequence[torch.nn.Parameter]) -> None:
    """Average the gradients of ``params`` over processes, in one flat all-reduce.

    A parameter whose gradient is None on every process keeps None (an optimizer then
    leaves it alone, as in a single process); one with a gradient on some process only
    (never the case when every process samples the same paths) gets zeros elsewhere.
    """
    if not active():
        return
    params = [p for p in params if p.requires_grad]
    has = torch.tensor([p.grad is not None for p in params], dtype=torch.float32,
                       device=params[0].device if params else "cpu")
    all_reduce_sum_(has)
    used = [p for p, h in zip(params, has.tolist()) if h > 0]
    for p in used:
        if p.grad is None:
            p.grad = torch.zeros_like(p)
    if not used:
        return
    grads = [p.grad for p in used]
    flat = torch.cat([g.reshape(-1) for g in grads])
    dist.all_reduce(flat, op=dist.ReduceOp.SUM)
    flat.div_(world_size())
    offset = 0
    for g in grads:
        n = g.numel()
        g.copy_(flat[offset : offset + n].view_as(g))
        offset += n


@torch.no_grad()
def batch_shuffle(x: torch.Tensor, generator: torch.Generator) -> tuple[torch.Tensor, Callable[..., torch.Tensor]]:
    """Shuffle a batch across processes; returns this process's shuffled part and ``unshuffle``.

    The BatchNorm layers of the target network, run on the shuffled part, see statistics of
    images from every process instead of exactly the images the online network sees here
    (MoCo's "shuffling BN", also in the official BossNAS code). The permutation comes from
    ``generator``, which must be seeded the same on every process. ``unshuffle(y, dim=0)``
    gathers the outputs ``y`` (batch along ``dim``) and returns this process's images in
    their original order. In a single process both are the identity.

    >>> y, unshuffle = batch_shuffle(torch.arange(4), torch.Generator().manual_seed(0))
    >>> unshuffle(y).tolist()
    [0, 1, 2, 3]
    """
    if not active():
        return x, lambda y, dim=0: y
    world, me = world_size(), rank()
    full = torch.cat(all_gather(x))
    order = torch.randperm(full.shape[0], generator=generator).to(x.device)
    restore = torch.argsort(order)
    mine = order.view(world, -1)[me]

    def unshuffle(y: torch.Tensor, dim: int = 0) -> torch.Tensor:
        gathered = torch.cat(all_gather(y), dim=dim)
        return gathered.index_select(dim, restore.view(world, -1)[me])

    return full.index_select(0, mine), unshuffle


def shard(items: Sequence, world: int | None = None, me: int | None = None) -> list:
    """This process's share of ``items``: every ``world``-th item from its rank on.

    >>> shard(list(range(5)), world=2, me=1)
    [1, 3]
    """
    world = world_size() if world is None else world
    me = rank() if me is None else me
    return list(items[me::world])


def gather_sharded(values: Sequence[float], count: int, device: torch.device | str = "cpu") -> list[float]:
    """Inverse of :func:`shard` for floats: every process's values, back in item order."""
    world = world_size()
    if world == 1:
        return list(values)
    per = -(-count // world)
    local = torch.full((per,), float("nan"), dtype=torch.float64, device=device)
    if values:
        local[: len(values)] = torch.tensor(list(values), dtype=torch.float64, device=device)
    parts = [p.tolist() for p in all_gather(local)]
    return [parts[i % world][i // world] for i in range(count)]


def add_round_(total: torch.Tensor | None, mine: torch.Tensor | None, start: int, count: int) -> torch.Tensor:
    """Add one round of items sharded by :func:`shard` to the running sum ``total``, in item order.

    In the round that begins at item ``start`` process p holds item ``start + p`` (``mine``,
    None past ``count``). Every process gets the same sum, built as ``t0 + t1 + t2 + ...``
    exactly as one process would build it, so the result is bitwise the same for any
    number of processes (an all-reduce would add in another order and change the last
    bits). Call it on every process in every round, starting with ``total=None``.
    """
    world = world_size()
    if world == 1:
        if mine is None:
            raise ValueError("a single process holds every item")
        return mine if total is None else total.add_(mine)
    if total is None:
        # first round: rank 0 always holds item 0 and tells the others its shape
        spec = broadcast_object((tuple(mine.shape), mine.dtype) if mine is not None else None)
    else:
        spec = (tuple(total.shape), total.dtype)
    device = mine.device if mine is not None else (total.device if total is not None else _comm_device())
    send = mine if mine is not None else torch.zeros(spec[0], dtype=spec[1], device=device)
    for src, t in enumerate(all_gather(send)):
        if start + src >= count:
            break
        total = t if total is None else total.add_(t)
    return total


def _comm_device() -> torch.device:
    if dist.get_backend() == "nccl":
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


def any_true(flag: bool, device: torch.device | str = "cpu") -> bool:
    """Whether ``flag`` is set on any process (every process gets the same answer)."""
    if not active():
        return flag
    t = torch.tensor([1.0 if flag else 0.0], device=device)
    all_reduce_sum_(t)
    return bool(t.item() > 0)


__all__ = [
    "active",
    "add_round_",
    "all_gather",
    "all_reduce_sum_",
    "any_true",
    "average_gradients_",
    "barrier",
    "batch_shuffle",
    "broadcast_module_",
    "broadcast_object",
    "env_rank",
    "gather_sharded",
    "init_from_env",
    "is_main",
    "launched",
    "local_rank",
    "on_main",
    "rank",
    "shard",
    "shutdown",
    "world_size",
]
