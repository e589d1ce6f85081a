"""Per-epoch random streams (effssl_plugin.epoch_streams): seeds, the loader's shuffle alone and
split over ranks, and the data stream's epoch saved and restored. The end-to-end
check (a stopped and resumed run equals one that never stopped) is in test_fault_tolerance."""

from __future__ import annotations

import hashlib
import random
from types import SimpleNamespace

import numpy as np
import torch
from conftest import require_solo

require_solo()

import torch.distributed as dist  # noqa: E402
from torch.utils.data import DistributedSampler  # noqa: E402

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


def test_under_ddp_lightning_keeps_the_sampler_and_the_ranks_share_one_permutation(monkeypatch):
    def rank_orders(epoch: int) -> list[list[int]]:
        orders = []
        for rank in (0, 1):
            loader = shuffled_loader(_Indexes(21), batch_size=2, num_workers=0)
            # Lightning replaces or wraps (and reshuffles by seed + epoch) any training
            # sampler that is not a DistributedSampler (DataConnector._requires_distributed_sampler)
            assert isinstance(loader.sampler, DistributedSampler)
            monkeypatch.setattr(dist, "is_initialized", lambda: True)
            monkeypatch.setattr(dist, "get_world_size", lambda: 2)
            monkeypatch.setattr(dist, "get_rank", lambda r=rank: r)
            EpochStreams(9, loader.generator)._seed_data(epoch)
            assert len(loader.sampler) == 11 and len(loader) == 5  # 21 over 2, padded
            orders.append(list(loader.sampler))
        return orders

    first, second = rank_orders(4)
    dealt = [i for pair in zip(first, second, strict=True) for i in pair]
    assert sorted(dealt[:21]) == list(range(21)) and dealt[21] == dealt[0]  # one padded
    assert dealt != sorted(dealt)
    assert rank_orders(4) == [first, second] and rank_orders(5) != [first, second]
    monkeypatch.undo()
    single = shuffled_loader(_Indexes(21), batch_size=2, num_workers=0)
    assert len(single.sampler) == 21  # no process group: every index


def test_each_epoch_seeds_torch_numpy_and_python_from_the_seed_and_epoch():
    streams = EpochStreams(3, None)
    draws = []
    for _ in range(2):
        streams.on_train_epoch_start(SimpleNamespace(current_epoch=6), None)
        draws.append((torch.rand(2).tolist(), np.random.rand(), random.random()))
    streams.on_train_epoch_start(SimpleNamespace(current_epoch=7), None)
    assert draws[0] == draws[1] and torch.rand(2).tolist() != draws[0][0]
