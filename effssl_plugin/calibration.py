"""Filling the memory bank before step 1 of a fresh run ("feature calibrate").

One no-grad pass of the current network over every training image writes each row. The
method (:meth:`effssl_plugin.method.EffSSL.initialize_bank`) calls this on a fresh run with
``bank_init=calibrate``; with ``bank_init=random`` the rows are random unit vectors instead,
and a resumed run's checkpoint carries the bank (``bank.filled``).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from typing import Any, Protocol

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.data import DataLoader, Dataset
from tqdm.auto import tqdm

from effssl_plugin.bank import MemoryBank
from effssl_plugin.errors import ConfigError

__all__ = [
    "BankOwner",
    "calibration_loader",
    "calibration_workers",
    "calibrate_bank",
    "calibration_batches",
]


class BankOwner(Protocol):
    """What :func:`calibration_loader` reads from the module that owns the bank
    (:class:`effssl_plugin.method.EffSSL` is one)."""

    bank: MemoryBank
    trainer: Any  # lightning's Trainer: train_dataloader, global_rank, world_size
    calibration_dataset: Dataset | None
    batch_size: int
    seed: int
    device: torch.device


def calibration_loader(module: BankOwner) -> DataLoader:
    """The training set (``module.calibration_dataset``, else the training loader's) in this
    rank's :func:`calibration_batches`, with the training loader's batch size and
    :func:`calibration_workers` (none for a set decoded in memory, whose batches are
    fetched whole: :class:`effssl_plugin.tensor_data.DecodedImages`)."""
    train_loader = module.trainer.train_dataloader
    dataset = module.calibration_dataset or getattr(train_loader, "dataset", None)
    if dataset is None:
        raise ConfigError(
            "bank_init=calibrate needs the training dataset; set model.calibration_dataset "
            "or use method_kwargs.bank_init=random"
        )
    if len(dataset) != module.bank.num_samples:
        raise ConfigError(
            f"the training set has {len(dataset)} images but the memory bank has "
            f"{module.bank.num_samples} rows (method_kwargs.num_samples)"
        )
    batch_size = getattr(train_loader, "batch_size", None) or module.batch_size
    rank, world = module.trainer.global_rank, module.trainer.world_size
    in_memory = getattr(dataset, "in_memory", False)  # data.pipeline=tensor: no worker
    return DataLoader(
        dataset,
        batch_sampler=calibration_batches(len(dataset), batch_size, module.seed, rank, world),
        num_workers=0 if in_memory else calibration_workers(module, train_loader),
        collate_fn=getattr(dataset, "collate_fn", None),  # a decoded set's batches: as they are
        pin_memory=module.device.type == "cuda",
    )


def calibration_workers(module: nn.Module, train_loader: object) -> int:
    """``data.num_workers`` of the run's config, else the training loader's, else 0. A DALI
    loader has no ``num_workers``: without the config, PIL would decode the whole training
    set in the main process."""
    data_cfg = getattr(getattr(module, "cfg", None), "data", None)
    configured = getattr(data_cfg, "num_workers", None)
    if configured is not None:
        return int(configured)
    return int(getattr(train_loader, "num_workers", 0) or 0)


@contextmanager
def batch_statistics(module: nn.Module) -> Iterator[None]:
    """Train mode (BatchNorm normalises with batch statistics, as in a training step); on
    exit every buffer but the bank's (BatchNorm running statistics) and the mode are restored."""
    saved = {n: b.clone() for n, b in module.named_buffers() if not n.startswith("bank.")}
    was_training = module.training
    module.train()
    try:
        yield
    finally:
        with torch.no_grad():
            for name, buf in module.named_buffers():
                if name in saved:
                    buf.copy_(saved[name])
        module.train(was_training)


@torch.no_grad()
def calibrate_bank(
    bank: MemoryBank,
    encode: Callable[[Tensor], Tensor],
    loader: Iterable,
    device: torch.device,
    progress: bool = True,
) -> None:
    """Writes ``normalize(encode(x))`` of every ``(index, [x], target)`` batch into the bank.

    Every row must be written (under DDP, by some rank: :meth:`MemoryBank.fill_` gathers);
    the bank is then marked filled.
    """
    for indexes, views, _ in tqdm(
        loader, desc="Calibrating memory bank", disable=not progress, dynamic_ncols=True
    ):
        x = views[0] if isinstance(views, (list, tuple)) else views
        z = encode(x.to(device, non_blocking=True))
        bank.fill_(indexes.to(device), F.normalize(z.float(), dim=1))
    missing = int((bank.last_write < 0).sum())
    if missing:
        raise RuntimeError(f"calibration left {missing} bank rows unwritten")
    bank.mark_filled_()


def calibration_batches(
    num_samples: int, batch_size: int, seed: int, rank: int = 0, world_size: int = 1
) -> list[list[int]]:
    """This rank's calibration batches: every index in one seeded random order.

    The permutation is the same on every rank (it depends on ``seed`` only); as
    ``DistributedSampler`` does, it is padded with its first indexes to a multiple of
    ``world_size`` so every rank gets the same number of batches (a padded index is written
    with the mean of its features), and rank ``r`` takes every ``world_size``-th index from
    ``r``. Shuffling matters: ImageFolder indexes are sorted by class, and BatchNorm in
    batch-statistics mode over one-class batches would bias the calibrated rows.
    """
    generator = torch.Generator().manual_seed(int(seed))
    order = torch.randperm(num_samples, generator=generator).tolist()
    order += order[: (-num_samples) % world_size]
    return _batches_without_small_tail(order[rank::world_size], batch_size)


def _batches_without_small_tail(indices: list[int], batch_size: int) -> list[list[int]]:
    """Consecutive batches of ``batch_size``; a shorter remainder joins the previous batch,
    so that BatchNorm in batch-statistics mode never sees a batch of one."""
    batches = [indices[i : i + batch_size] for i in range(0, len(indices), batch_size)]
    if len(batches) > 1 and len(batches[-1]) < batch_size:
        tail = batches.pop()
        batches[-1] = batches[-1] + tail
    return batches
