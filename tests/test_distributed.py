"""Multi-process runs on CPU (gloo): identical weights on every process, rating split by path
identical to a single process, the batch shuffle, and `bossnas run --nproc` with SIGTERM and
--resume. Every process uses one torch thread."""

import os
import shutil
import signal

import pytest
import torch
import torch.multiprocessing as mp
from conftest import (
    HANG_S,
    TINY,
    assert_steps_once_in_order,
    logged_steps,
    search_checkpoint_state,
    wait_until_paused,
)

from bossnas import distributed as dist
from bossnas.config import load_config
from bossnas.errors import BossNASError
from bossnas.search.rating import rate_block
from bossnas.spaces import create_space
from bossnas.supernet import SiameseSupernet
from bossnas.train.runner import BlockwiseSearch, read_table
from bossnas.utils.io import load_checkpoint

WORLD = 2
OVERRIDES = TINY + ["train.paths_per_step=2", "train.checkpoint_every=1"]
ODD_PATHS = [(8, 16), (24, 8), (64, 64), (16, 16), (40, 8)]  # 5 paths: an uneven split over 2 processes


def _odd_rating_inputs():
    torch.manual_seed(3)
    space = create_space("nats-sss", in_channels=1, image_size=8)
    model = SiameseSupernet(space, hidden_dim=16, proj_dim=8)
    recal = [torch.randn(8, 1, 8, 8)]
    views = (torch.randn(6, 1, 8, 8), torch.randn(6, 1, 8, 8))
    return model, recal, views


def _worker(rank: int, world: int, tmp: str) -> None:
    """One process of a 2-process tiny search, through the library API (a FileStore, no port)."""
    os.environ.update(RANK=str(rank), WORLD_SIZE=str(world), LOCAL_RANK=str(rank))
    torch.set_num_threads(1)
    torch.distributed.init_process_group("gloo", store=torch.distributed.FileStore(os.path.join(tmp, "store"), world),
                                         rank=rank, world_size=world)
    try:
        out = {}
        # the batch shuffle: a permutation of the global batch, undone exactly
        x = torch.arange(4 * rank, 4 * rank + 4, dtype=torch.float32)[:, None].repeat(1, 3)
        shuffled, unshuffle = dist.batch_shuffle(x, torch.Generator().manual_seed(7))
        out["shuffled"] = shuffled[:, 0].tolist()
        out["restored"] = torch.equal(unshuffle(shuffled), x)
        out["restored_dim1"] = torch.equal(unshuffle(shuffled[None].repeat(2, 1, 1), dim=1), x[None].repeat(2, 1, 1))
        # an uneven split of the rating over processes
        model, recal, views = _odd_rating_inputs()
        out["odd"] = rate_block(model, 0, ODD_PATHS, recal, views, batch_size=4, distributed=True)

        config = load_config("quickstart", OVERRIDES)
        search = BlockwiseSearch.open(config, os.path.join(tmp, "run"), show_progress=False)
        for block in range(3):
            search.train_block(block)
            if rank == 0:  # the checkpoint the block is rated from
                shutil.copy(os.path.join(tmp, "run", "checkpoint.pt"), os.path.join(tmp, f"before_rating_{block}.pt"))
            dist.barrier()
            search.rate_and_fix(block)
        out["tables"] = search.state.tables
        out["params"] = {n: p.detach().clone() for n, p in search.model.named_parameters()}
        torch.save(out, os.path.join(tmp, f"rank{rank}.pt"))
    finally:
        torch.distributed.destroy_process_group()


@pytest.fixture(scope="module")
def two_process_run(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("dist")
    mp.start_processes(_worker, args=(WORLD, str(tmp)), nprocs=WORLD, start_method="spawn", join=True)
    return tmp, [torch.load(tmp / f"rank{r}.pt", weights_only=False) for r in range(WORLD)]


@pytest.mark.slow
def test_two_processes_keep_identical_weights_and_rate_like_one(two_process_run, tmp_path):
    tmp, ranks = two_process_run
    # batch shuffle: each process got half of a permutation of the global batch, restored exactly
    assert sorted(ranks[0]["shuffled"] + ranks[1]["shuffled"]) == list(range(8))
    assert ranks[0]["shuffled"] != [0.0, 1.0, 2.0, 3.0]
    assert all(r["restored"] and r["restored_dim1"] for r in ranks)
    # training: every parameter bitwise the same on both processes
    assert ranks[0]["params"].keys() == ranks[1]["params"].keys()
    for name, p in ranks[0]["params"].items():
        assert torch.equal(p, ranks[1]["params"][name]), name
    assert ranks[0]["tables"] == ranks[1]["tables"]
    # the default learning prefix kept training block 0 in blocks 1-2, and its gradients were
    # averaged like the block's: otherwise each process's shard would have moved it differently
    rated_0 = load_checkpoint(tmp / "before_rating_0.pt")["model"]
    block_0 = [n for n in ranks[0]["params"] if n.startswith("online.stem.") or n.startswith("online.layers.0.")]
    assert block_0 and any(not torch.equal(ranks[0]["params"][n], rated_0[n]) for n in block_0)
    # rating split by path == one process rating the same checkpoint, to the last bit
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        model, recal, views = _odd_rating_inputs()
        assert rate_block(model, 0, ODD_PATHS, recal, views, batch_size=4) == ranks[0]["odd"] == ranks[1]["odd"]
        config = load_config("quickstart", OVERRIDES)
        for block in (0, 2):  # no prefix / a prefix through both earlier blocks
            single = tmp_path / f"single_{block}"
            single.mkdir()
            shutil.copy(tmp / f"before_rating_{block}.pt", single / "checkpoint.pt")
            search = BlockwiseSearch.open(config, single, resume=True, show_progress=False)
            assert (search.state.block, search.state.phase) == (block, "rate")
            search.rate_and_fix(block)
            assert search.state.tables[str(block)] == ranks[0]["tables"][str(block)], f"block {block}"
            assert read_table(single / f"block_{block}_ratings.csv") == read_table(tmp / "run" / f"block_{block}_ratings.csv")
    finally:
        torch.set_num_threads(threads)
    ckpt = load_checkpoint(tmp / "run" / "checkpoint.pt")
    assert ckpt["world_size"] == WORLD and ckpt["sampler"]["per_process"] == 16
    # both processes ran in one folder; rank 0 alone logged the curve (3 steps a block)
    assert_steps_once_in_order(logged_steps(tmp / "run"), blocks=3, per_block=3)


@pytest.mark.slow
def test_nproc_sigterm_then_resume_matches_uninterrupted_run(two_process_run, tmp_path, launched):
    tmp, ranks = two_process_run
    out = tmp_path / "run"
    # rank 0 stops itself right after writing the checkpoint of block 0's first step
    proc = launched("run", *OVERRIDES, "--out", str(out), "--quiet", "--nproc", str(WORLD),
                    pause_at={"block": 0, "phase": "train", "epoch": 0, "step": 1})
    rank0 = wait_until_paused(proc)
    proc.send_signal(signal.SIGTERM)  # to the launcher, as a cluster scheduler would
    os.kill(rank0, signal.SIGCONT)
    _, err = proc.communicate(timeout=HANG_S)
    assert proc.returncode == 128 + signal.SIGTERM, err
    lines = [line for line in err.splitlines() if line.startswith("error")]
    assert len(lines) == 1 and "interrupted by SIGTERM" in lines[0] and "--resume" in lines[0], err
    assert "Traceback" not in err and "ChildFailedError" not in err
    block, phase, epoch, step = search_checkpoint_state(out / "checkpoint.pt")
    assert (block, phase) == (0, "train") and step >= 1
    proc = launched("run", "--resume", "--out", str(out), "--quiet", "--nproc", str(WORLD))
    _, err = proc.communicate(timeout=HANG_S)
    assert proc.returncode == 0, err
    for b in range(3):
        expected = [(p, round(r, 8)) for p, r in ranks[0]["tables"][str(b)]]
        assert [(p, round(r, 8)) for p, r in read_table(out / f"block_{b}_ratings.csv")] == expected
    steps = logged_steps(out)
    assert_steps_once_in_order(steps, blocks=3, per_block=3)
    assert [s[3] for s in steps] == pytest.approx([s[3] for s in logged_steps(tmp / "run")], rel=1e-5)


def test_nproc_config_error_is_one_line(tmp_path, launched):
    proc = launched("run", *TINY, "train.batch_size=31", "--out", str(tmp_path / "r"), "--nproc", "2")
    _, err = proc.communicate(timeout=HANG_S)
    assert proc.returncode == 2, err
    assert err.strip().splitlines() == [
        "error: train.batch_size=31 cannot be split over 2 processes; expected a multiple of 2 that is at least 4 "
        "(each process needs 2 or more images for BatchNorm)"
    ]
    assert not (tmp_path / "r").exists()


def test_helpers_are_identities_in_one_process():
    assert (dist.world_size(), dist.rank(), dist.is_main()) == (1, 0, True)
    x = torch.randn(4, 3)
    y, unshuffle = dist.batch_shuffle(x, torch.Generator().manual_seed(0))
    assert y is x and unshuffle(y) is x
    assert dist.shard(list(range(5)), world=2, me=1) == [1, 3]
    assert dist.gather_sharded([0.5, 0.25], 2) == [0.5, 0.25]
    assert dist.on_main(lambda: 3) == 3
    with pytest.raises(BossNASError, match="boom"):
        dist.on_main(lambda: (_ for _ in ()).throw(BossNASError("boom")))
