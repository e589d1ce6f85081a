"""The kNN classifier under torch.distributed: torchmetrics gathers the features for
``compute`` and then restores each process's own; ours must be empty afterwards all the same
(else every epoch's features would pile up). One gloo process exercises that path."""

from __future__ import annotations

import pytest
import torch
import torch.distributed as dist
from conftest import require_solo

require_solo()

from effssl_plugin.knn import WeightedKNNClassifierTM1  # noqa: E402


def fill(knn: WeightedKNNClassifierTM1, x: torch.Tensor, y: torch.Tensor) -> None:
    knn(train_features=x[:300], train_targets=y[:300])
    knn(train_features=x[300:500], train_targets=y[300:500])
    knn(test_features=x[500:], test_targets=y[500:])


def test_knn_is_cleared_after_a_synced_compute(tmp_path):
    g = torch.Generator().manual_seed(0)
    x = torch.randn(600, 16, generator=g)
    y = x[:, :8].argmax(1)
    reference = WeightedKNNClassifierTM1(k=15)
    fill(reference, x, y)
    expected = reference.compute()  # no process group: no sync
    assert not dist.is_initialized()
    store = f"file://{tmp_path / 'store'}"
    dist.init_process_group("gloo", init_method=store, rank=0, world_size=1)
    try:
        knn = WeightedKNNClassifierTM1(k=15)
        for _ in range(2):  # two epochs
            fill(knn, x, y)
            assert len(knn.train_features) == 2  # this process's own batches
            assert knn.compute() == pytest.approx(expected)
            assert not knn.train_features and not knn.train_targets
            assert not knn.test_features and not knn.test_targets
    finally:
        dist.destroy_process_group()


def test_unlabelled_training_features_are_dropped_when_the_knn_runs():
    """The training step passes every feature (no boolean mask, which would sync a GPU);
    those with target -1 must not vote."""
    g = torch.Generator().manual_seed(1)
    x = torch.randn(600, 16, generator=g)
    y = x[:, :8].argmax(1)
    reference = WeightedKNNClassifierTM1(k=15)
    fill(reference, x, y)
    expected = reference.compute()
    knn = WeightedKNNClassifierTM1(k=15)
    noise = torch.randn(100, 16, generator=g)
    knn(
        train_features=torch.cat([x[:300], noise]),
        train_targets=torch.cat([y[:300], -torch.ones(100, dtype=torch.long)]),
    )
    knn(train_features=x[300:500], train_targets=y[300:500])
    knn(test_features=x[500:], test_targets=y[500:])
    assert knn.compute() == pytest.approx(expected)
    unlabelled = WeightedKNNClassifierTM1(k=15)
    unlabelled(train_features=noise, train_targets=-torch.ones(100, dtype=torch.long))
    unlabelled(test_features=x[500:], test_targets=y[500:])
    assert unlabelled.compute() == (-1, -1)
