"""Each training epoch's random draws as a function of ``(seed, epoch)``: a run that is stopped
after an epoch and resumed trains exactly as one that never stopped.

Without this, the random streams of epoch ``e`` depend on everything drawn before it in the
same process: the training loader draws its shuffle and its workers' seeds from torch's global
generator when each epoch's iterator is made, and CutMix draws from numpy's and torch's global
generators in the step. A resumed process starts those generators again from ``seed``, so from
the first resumed epoch on it sees other batches, other augmentations and other CutMix boxes
(checkpoints restore the model, bank, optimiser and schedule, not the generators).

Two streams per epoch ``e``, each seeded from ``(seed, stream, e)`` by
:func:`~effssl_plugin.augment.stream_seed`:

* **data** (``"data"``): the training loader's own generator, which gives the epoch's
  permutation (:class:`EpochShuffle`) and its workers' base seed (the PIL pipeline's per-image
  augmentations). It is re-seeded for epoch ``e + 1`` at the end of epoch ``e``, before the
  checkpoint, and the epoch it is seeded for is saved in the checkpoint: on resume it is seeded
  for that epoch before Lightning makes the first iterator.
* **step** (``"step"``): torch's (CPU and CUDA), numpy's and Python's global generators,
  seeded at the start of every epoch: CutMix, dropout, and the PIL pipeline's augmentations
  when ``data.num_workers=0``. The same on every rank, as ``seed_everything`` leaves them.

Already functions of the seed and the step or epoch, with no state to save: EffSSL's negatives
(:func:`~effssl_plugin.bank.negatives_generator`) and the batched augmentation of
``data.pipeline=tensor`` (:class:`~effssl_plugin.tensor_data.DeviceAugmentation`). DALI's
pipelines shuffle and augment with their own generators and are not covered.

Under DDP every rank draws the same permutation from the same seed and takes its share of it,
as a ``DistributedSampler`` would (padded to a multiple of the world size, every world-size-th
index). :class:`EpochShuffle` is a ``DistributedSampler`` so that Lightning leaves it in place:
Lightning replaces any other training sampler by a ``DistributedSampler`` (or wraps it in one)
that shuffles by ``seed + epoch``, and it sets that epoch only after making the epoch's
iterator, so with loader workers a resumed run's first epoch took epoch 0's order
(``tests/test_ddp.py`` caught it).
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from lightning.pytorch.callbacks import Callback
from torch.utils.data import DataLoader, Dataset, DistributedSampler

from effssl_plugin.augment import stream_seed

__all__ = ["EpochShuffle", "EpochStreams", "seed_step_stream", "shuffled_loader"]


class EpochShuffle(DistributedSampler):
    """Per iteration, a permutation of the dataset's indexes drawn from ``generator``, and this
    rank's share of it: ``order`` padded with its first indexes to a multiple of the world size,
    then ``order[rank::world_size]`` (``DistributedSampler``'s split, without its shuffle). The
    world size and rank are read from ``torch.distributed`` when iterated (1 and 0 without a
    process group), as the loader is built before Lightning starts the processes."""

    def __init__(self, dataset: Dataset, generator: torch.Generator) -> None:
        super().__init__(dataset, num_replicas=1, rank=0, shuffle=False)  # type: ignore[arg-type]
        self.generator = generator

    def _share(self) -> None:
        """``num_replicas``, ``rank``, ``num_samples`` and ``total_size`` of the live group."""
        if dist.is_available() and dist.is_initialized():
            self.num_replicas, self.rank = dist.get_world_size(), dist.get_rank()
        self.num_samples = math.ceil(len(self.dataset) / self.num_replicas)  # type: ignore[arg-type]
        self.total_size = self.num_samples * self.num_replicas

    def __iter__(self) -> Iterator[int]:
        self._share()
        size = len(self.dataset)  # type: ignore[arg-type]
        order = torch.randperm(size, generator=self.generator).tolist()
        order += order[: self.total_size - size]
        yield from order[self.rank : self.total_size : self.num_replicas]

    def __len__(self) -> int:
        self._share()
        return self.num_samples


def shuffled_loader(
    dataset: Dataset,
    batch_size: int,
    num_workers: int,
    pin_memory: bool = True,
    collate_fn: Callable[[list[Any]], Any] | None = None,
) -> DataLoader:
    """A training loader as solo-learn's ``prepare_dataloader`` (shuffled, last partial batch
    dropped) whose shuffle and worker seeds come from its own generator, which
    :class:`EpochStreams` seeds per epoch."""
    generator = torch.Generator()
    return DataLoader(
        dataset,
        batch_size=batch_size,
        sampler=EpochShuffle(dataset, generator),
        generator=generator,
        num_workers=num_workers,
        pin_memory=pin_memory,
        drop_last=True,
        collate_fn=collate_fn,
    )


def seed_step_stream(seed: int) -> None:
    """Seeds torch's (every device), numpy's and Python's global generators."""
    torch.manual_seed(seed)
    np.random.seed(seed % 2**32)
    random.seed(seed)


class EpochStreams(Callback):
    """Seeds the training loader's generator (``loader_generator``; ``None``: a loader that is
    not this package's, e.g. DALI) and the global generators per epoch, from ``seed``."""

    def __init__(self, seed: int, loader_generator: torch.Generator | None) -> None:
        self.seed, self.loader_generator = int(seed), loader_generator
        self.data_epoch = 0
        self._seed_data(0)

    def _seed_data(self, epoch: int) -> None:
        self.data_epoch = int(epoch)
        if self.loader_generator is not None:
            self.loader_generator.manual_seed(stream_seed(self.seed, 0, f"data/{epoch}"))

    def on_train_epoch_start(self, trainer: Any, pl_module: Any) -> None:
        seed_step_stream(stream_seed(self.seed, 0, f"step/{trainer.current_epoch}"))

    def on_train_epoch_end(self, trainer: Any, pl_module: Any) -> None:
        # before the checkpoint (this callback comes first), so that it saves the next epoch
        self._seed_data(trainer.current_epoch + 1)

    def state_dict(self) -> dict[str, Any]:
        return {"data_epoch": self.data_epoch}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        # called while restoring, before Lightning makes the resumed epoch's iterator
        self._seed_data(int(state_dict["data_epoch"]))
