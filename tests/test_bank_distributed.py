"""Two gloo processes: replicas stay bit-identical and equal a single process's global updates."""

import os
import tempfile

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
import torch.nn.functional as F

from effssl_plugin.bank import MemoryBank
from effssl_plugin.distributed import all_gather_cat

N, D, LOCAL_B, STEPS, K, TAU, M = 300, 16, 12, 24, 40, 0.2, 0.5
WORLD = 2

pytestmark = pytest.mark.slow  # spawns gloo processes


def global_batch(step: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The same global batch on every process; includes a duplicate like DDP padding."""
    g = torch.Generator().manual_seed(1000 + step)
    idx = torch.randperm(N, generator=g)[: WORLD * LOCAL_B]
    idx[-1] = idx[0]  # padded duplicate across ranks
    z = F.normalize(torch.randn(WORLD * LOCAL_B, D, generator=g), dim=1)
    return idx, z


def run_updates(bank: MemoryBank, rank: int, world: int) -> None:
    gen = torch.Generator().manual_seed(123)  # identically seeded on every rank
    for step in range(STEPS):
        idx, z = global_batch(step)
        lo, hi = rank * LOCAL_B, (rank + 1) * LOCAL_B
        if world == 1:
            lo, hi = 0, WORLD * LOCAL_B
        if step % 2 == 0:
            bank.update_ema(idx[lo:hi], z[lo:hi], M)
        else:
            global_idx = all_gather_cat(idx[lo:hi])
            cols, pos = bank.columns(global_idx, K, gen)
            local_pos = pos[lo:hi]
            logits = z[lo:hi] @ bank.weight[cols].float().t()
            probs = F.softmax(logits / TAU, dim=1)
            # CutMix partners live within each rank's local batch
            partner = torch.cat([chunk.roll(1) for chunk in local_pos.split(LOCAL_B)])
            y = 0.6 * F.one_hot(local_pos, cols.numel()) + 0.4 * F.one_hot(partner, cols.numel())
            bank.update_grad(cols, z[lo:hi], probs, y, M)


def worker(rank: int, init_file: str, out_dir: str) -> None:
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=WORLD)
    torch.manual_seed(rank)  # different global RNG per rank must not matter
    bank = MemoryBank(N, D)
    bank.reset_random_(torch.Generator().manual_seed(rank))  # rank 0's rows are broadcast
    run_updates(bank, rank, WORLD)
    torch.save(bank.state_dict(), os.path.join(out_dir, f"rank{rank}.pt"))
    dist.barrier()
    dist.destroy_process_group()


def test_two_process_replicas_are_identical_and_match_single_process():
    with tempfile.TemporaryDirectory() as tmp:
        init_file = os.path.join(tmp, "init")
        mp.spawn(worker, args=(init_file, tmp), nprocs=WORLD, join=True)
        s0 = torch.load(os.path.join(tmp, "rank0.pt"))
        s1 = torch.load(os.path.join(tmp, "rank1.pt"))
    for key in s0:
        assert torch.equal(s0[key], s1[key]), f"replicas differ in {key}"
    assert int(s0["num_updates"]) == STEPS

    single = MemoryBank(N, D)
    single.reset_random_(torch.Generator().manual_seed(0))
    run_updates(single, 0, 1)
    # the EMA is the same computation on the gathered batch; the gradient rule sums
    # partial products over ranks, so it agrees to rounding
    torch.testing.assert_close(s0["weight"], single.weight, rtol=0, atol=1e-5)
    assert torch.equal(s0["last_write"], single.last_write)


def nan_on_one_rank_worker(rank: int, init_file: str, out_dir: str) -> None:
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=WORLD)
    bank = MemoryBank(N, D)
    bank.reset_random_(torch.Generator().manual_seed(0))
    before = bank.weight.clone()
    idx, z = global_batch(0)
    z = z[rank * LOCAL_B : (rank + 1) * LOCAL_B].clone()
    if rank == 1:
        z[3, 2] = float("nan")
    cols = torch.arange(N)
    probs = F.softmax(z @ bank.weight.t() / TAU, dim=1)
    y = F.one_hot(idx[rank * LOCAL_B : (rank + 1) * LOCAL_B], N).float()
    bank.update_grad(cols, z, probs, y, M)
    bank.update_ema(idx[rank * LOCAL_B : (rank + 1) * LOCAL_B], z, M)
    torch.save({"before": before, "after": bank.weight}, os.path.join(out_dir, f"nan{rank}.pt"))
    dist.barrier()
    dist.destroy_process_group()


def test_a_non_finite_step_on_one_rank_moves_no_row_on_any_rank():
    """The finite check is global: rank 0's finite half does not move the bank either, so the
    replicas stay identical (a rank-local check would let them diverge)."""
    with tempfile.TemporaryDirectory() as tmp:
        init_file = os.path.join(tmp, "init")
        mp.spawn(nan_on_one_rank_worker, args=(init_file, tmp), nprocs=WORLD, join=True)
        r0, r1 = (torch.load(os.path.join(tmp, f"nan{r}.pt")) for r in range(WORLD))
    assert torch.equal(r0["before"], r1["before"])
    assert torch.equal(r0["after"], r0["before"]) and torch.equal(r1["after"], r1["before"])
