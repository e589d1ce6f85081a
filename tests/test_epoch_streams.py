"""Per-epoch random streams (effssl_plugin.epoch_streams): seeds, the loader's shuffle alone and
under Lightning's DDP sampler, and the data stream's epoch saved and restored. The end-to-end
check (a stopped and resumed run equals one that never stopped) is in test_fault_tolerance."""

from __future__ import annotations

import hashlib
import random
from types import SimpleNamespace

import numpy as np
import torch
from conftest import require_solo

require_solo()

from lightning.pytorch.trainer.connectors.data_connector import (  # noqa: E402
    _get_distributed_sampler,
)
from lightning.pytorch.trainer.states import RunningStage  # noqa: E402
from lightning.pytorch.utilities.data import (  # noqa: E402
    _is_dataloader_shuffled,
    _update_dataloader,
)

from effssl_plugin.augment import seeded_generator, stream_seed  # noqa: E402
from effssl_plugin.epoch_streams import EpochStreams, shuffled_loader  # noqa: E402


class _Indexes(torch.utils.data.Dataset):
    def __init__(self, n: int) -> None:
        self.n = n

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, i: int) -> int:
        return i


def _order(loader) -> list[int]:
    return torch.cat([batch for batch in loader]).tolist()


def test_stream_seed_is_the_documented_digest_and_seeded_generator_uses_it():
    digest = hashlib.sha256(b"7/1/data/3").digest()
    assert stream_seed(7, 1, "data/3") == int.from_bytes(digest[:7], "little")
    assert stream_seed(7, 1, "data/3") != stream_seed(7, 1, "data/4")
    expected = torch.Generator().manual_seed(stream_seed(7, 0, 2)).initial_seed()
    assert seeded_generator(torch.device("cpu"), 7, 0, 2).initial_seed() == expected


def test_the_loader_order_is_a_function_of_the_seed_and_epoch_only():
    loader = shuffled_loader(_Indexes(20), batch_size=4, num_workers=0)
    streams = EpochStreams(5, loader.generator)
    first = _order(loader)
    assert sorted(first) == list(range(20)) and first != list(range(20))
    torch.randint(0, 9, (100,))  # draws elsewhere change nothing
    streams._seed_data(0)
    assert _order(loader) == first
    streams.on_train_epoch_end(SimpleNamespace(current_epoch=0), None)  # now epoch 1
    second = _order(loader)
    assert second != first
    other = shuffled_loader(_Indexes(20), batch_size=4, num_workers=0)
    EpochStreams(5, other.generator).load_state_dict(streams.state_dict())
    assert streams.state_dict() == {"data_epoch": 1} and _order(other) == second
    assert len(loader) == 5  # drop_last, as solo-learn's loader


def test_under_lightnings_ddp_sampler_the_ranks_share_one_permutation_of_the_epoch():
    def rank_orders(epoch: int) -> list[list[int]]:
        orders = []
        for rank in (0, 1):
            loader = shuffled_loader(_Indexes(22), batch_size=2, num_workers=0)
            assert not _is_dataloader_shuffled(loader)  # else Lightning would shuffle again
            sampler = _get_distributed_sampler(
                loader, False, overfit_batches=0, mode=RunningStage.TRAINING,
                num_replicas=2, rank=rank,
            )  # fmt: skip
            ddp_loader = _update_dataloader(loader, sampler, mode=RunningStage.TRAINING)
            assert ddp_loader.generator is loader.generator  # the generator EpochStreams seeds
            EpochStreams(9, loader.generator)._seed_data(epoch)
            orders.append(_order(ddp_loader))
        return orders

    first, second = rank_orders(4)
    assert len(first) == len(second) == 10  # 11 indexes a rank, the partial batch dropped
    interleaved = [i for pair in zip(first, second, strict=True) for i in pair]
    assert len(set(interleaved)) == 20  # one permutation, dealt to the ranks in turn
    assert interleaved != sorted(interleaved)
    assert rank_orders(4) == [first, second] and rank_orders(5) != [first, second]


def test_each_epoch_seeds_torch_numpy_and_python_from_the_seed_and_epoch():
    streams = EpochStreams(3, None)
    draws = []
    for _ in range(2):
        streams.on_train_epoch_start(SimpleNamespace(current_epoch=6), None)
        draws.append((torch.rand(2).tolist(), np.random.rand(), random.random()))
    streams.on_train_epoch_start(SimpleNamespace(current_epoch=7), None)
    assert draws[0] == draws[1] and torch.rand(2).tolist() != draws[0][0]
