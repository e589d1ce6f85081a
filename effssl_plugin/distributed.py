"""Minimal ``torch.distributed`` helpers for the memory bank (no Lightning).

Every helper is a no-op on a single process, so the same code path runs with and without
DDP, on gloo (CPU) and NCCL (GPU).
"""

from __future__ import annotations

import torch
import torch.distributed as dist
from torch import Tensor

__all__ = [
    "is_distributed",
    "world_size",
    "rank",
    "all_gather_cat",
    "all_reduce_sum_",
    "all_reduce_min_",
]


def is_distributed() -> bool:
    """True when a default process group is initialised with more than one process."""
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def world_size() -> int:
    return dist.get_world_size() if is_distributed() else 1


def rank() -> int:
    return dist.get_rank() if is_distributed() else 0


def all_gather_cat(
    tensor: Tensor, return_offset: bool = False, equal_sizes: bool = False
) -> Tensor | tuple[Tensor, int]:
    """Concatenates ``tensor`` from every rank along dim 0, in rank order.

    With ``equal_sizes`` every rank must pass the same shape (the training step's batches:
    the distributed sampler gives every rank as many samples and the training loaders drop
    the last incomplete batch): one collective, and nothing is read on the host, so a GPU
    stream never waits. Otherwise ranks may hold different numbers of rows: the sizes are
    exchanged first and read on the host (one sync; for passes that run once, such as the
    calibration, whose last batch may be smaller), the tensors padded for the collective,
    then trimmed. Every rank receives the same result. With ``return_offset`` it also
    returns where this rank's rows start.
    """
    if not is_distributed():
        return (tensor, 0) if return_offset else tensor
    tensor = tensor.contiguous()
    n = world_size()
    if equal_sizes:
        parts = [torch.empty_like(tensor) for _ in range(n)]
        dist.all_gather(parts, tensor)
        out = torch.cat(parts)
        return (out, rank() * tensor.shape[0]) if return_offset else out
    size = torch.tensor([tensor.shape[0]], device=tensor.device, dtype=torch.long)
    sizes = [torch.empty_like(size) for _ in range(n)]
    dist.all_gather(sizes, size)
    counts = torch.cat(sizes).tolist()  # the one host read: the sizes shape the trim below
    max_rows = max(counts)
    if tensor.shape[0] < max_rows:
        pad = tensor.new_zeros((max_rows - tensor.shape[0], *tensor.shape[1:]))
        tensor = torch.cat([tensor, pad])
    parts = [torch.empty_like(tensor) for _ in range(n)]
    dist.all_gather(parts, tensor)
    out = torch.cat([p[:c] for p, c in zip(parts, counts, strict=True)])
    if return_offset:
        return out, sum(counts[: rank()])
    return out


def all_reduce_sum_(tensor: Tensor) -> Tensor:
    """In-place sum over ranks; every rank ends with the same values."""
    if is_distributed():
        dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
    return tensor


def all_reduce_min_(tensor: Tensor) -> Tensor:
    """In-place minimum over ranks; every rank ends with the same values."""
    if is_distributed():
        dist.all_reduce(tensor, op=dist.ReduceOp.MIN)
    return tensor
