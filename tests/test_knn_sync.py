"""The kNN classifier under torch.distributed: torchmetrics gathers the features for
``compute`` and then restores each process's own; ours must be empty afterwards all the same
(else every epoch's features would pile up). Two gloo processes exercise that path."""

from __future__ import annotations

from pathlib import Path

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


def overlapping_classes(seed: int = 0, n: int = 2000, d: int = 32) -> tuple:
    """10 overlapping Gaussian classes, shifted so that neighbours' cosine similarities pass
    0.776 (where float16's ``exp(sim / 0.07)`` overflows), on a grid of 1/4: every value is
    exact in float16 and bfloat16, so the three dtypes hold the same features."""
    g = torch.Generator().manual_seed(seed)
    means = torch.randn(10, d, generator=g)
    y = torch.randint(0, 10, (n,), generator=g)
    x = means[y] + 2.0 * torch.randn(n, d, generator=g) + 5.0
    return (x * 4).round() / 4, y


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_precision_features_give_the_float32_accuracy(dtype):
    """Under 16-mixed the backbone's features are float16 (bfloat16 under bf16-mixed): the
    kNN must still run in float32 (before: 8.8% top-1 in float16 against 77.6%)."""
    x, y = overlapping_classes()
    assert torch.equal(x.to(dtype).float(), x)

    def accuracy(features: torch.Tensor) -> tuple[float, float]:
        knn = WeightedKNNClassifierTM1(k=200)
        knn(train_features=features[:1500], train_targets=y[:1500])
        knn(test_features=features[1500:], test_targets=y[1500:])
        return knn.compute()

    reference = accuracy(x)
    assert reference[0] > 60  # far above the 10% chance level
    assert accuracy(x.to(dtype)) == reference


def test_stored_features_are_half_precision_and_unit_norm():
    """Cosine features are normalised (float32) and stored in float16: half the memory of
    float32, no overflow; euclidean ones stay float32 (their scale matters)."""
    x = 1000 * torch.randn(8, 16)
    cosine = WeightedKNNClassifierTM1()
    cosine(train_features=x, train_targets=torch.arange(8))
    (stored,) = cosine.train_features
    assert stored.dtype == torch.float16
    torch.testing.assert_close(stored.float().norm(dim=1), torch.ones(8), atol=1e-3, rtol=0)
    euclidean = WeightedKNNClassifierTM1(distance_fx="euclidean")
    euclidean(train_features=x.half(), train_targets=torch.arange(8))
    assert euclidean.train_features[0].dtype == torch.float32


def _ddp_knn_worker(rank: int, init_file: str, out_dir: str) -> None:
    """One of 2 gloo ranks: two validation epochs on its own shard; writes, per epoch, its
    compute() result and what it held before and after."""
    import json

    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=2)
    try:
        x, y = overlapping_classes(n=900)
        knn = WeightedKNNClassifierTM1(k=50)
        knn.train_chunk_rows = 64  # several chunks per rank
        knn.merge_chunk_rows = 64  # several merges per rank
        # rank 0: fewer training features than k, in one batch; rank 1: the rest, in two
        train = [slice(0, 30)] if rank == 0 else [slice(30, 400), slice(400, 700)]
        test = slice(700, 800) if rank == 0 else slice(800, 900)
        epochs = []
        for _ in range(2):  # two epochs: nothing may pile up from the first
            for rows in train:
                knn(train_features=x[rows], train_targets=y[rows])
            knn(test_features=x[test], test_targets=y[test])
            held = [len(knn.train_features), len(knn.test_features)]
            accuracy = knn.compute()
            left = [
                len(getattr(knn, f"{kind}_{what}"))
                for kind in ("train", "test")
                for what in ("features", "targets")
            ]
            epochs.append({"held": held, "accuracy": list(accuracy), "left": left})
        Path(out_dir, f"knn{rank}.json").write_text(json.dumps(epochs))
    finally:
        dist.destroy_process_group()


@pytest.mark.slow  # spawns 2 gloo processes
def test_ddp_knn_equals_the_single_process_result_and_is_cleared_on_every_rank(tmp_path):
    """Under 2 gloo ranks, each rank keeps its own training features and sends only its k
    best candidates per test feature: every rank's accuracy equals one process holding every
    feature, in each of two epochs, and every rank's stored features are empty after each
    compute (else every epoch's features would pile up)."""
    import json

    import torch.multiprocessing as mp

    mp.spawn(_ddp_knn_worker, args=(str(tmp_path / "init"), str(tmp_path)), nprocs=2, join=True)
    x, y = overlapping_classes(n=900)
    single = WeightedKNNClassifierTM1(k=50)
    single(train_features=x[:700], train_targets=y[:700])
    single(test_features=x[700:], test_targets=y[700:])
    expected = single.compute()
    assert not dist.is_initialized()  # the single-process result: no sync
    assert expected[0] > 40
    for rank, own_batches in ((0, 1), (1, 2)):
        epochs = json.loads((tmp_path / f"knn{rank}.json").read_text())
        assert len(epochs) == 2
        for epoch in epochs:
            assert epoch["held"] == [own_batches, 1]  # this rank's own batches only
            assert tuple(epoch["accuracy"]) == pytest.approx(expected)
            assert epoch["left"] == [0, 0, 0, 0]  # cleared on every rank


class FakeTrainer:
    def __init__(self, enabled=True, every=1, epoch=0, batches=()):
        self.enable_validation = enabled
        self.check_val_every_n_epoch = every
        self.current_epoch = epoch
        self.num_val_batches = list(batches)


def test_knn_collects_only_in_epochs_that_validation_follows():
    from effssl_plugin.knn import validation_follows_epoch

    assert validation_follows_epoch(FakeTrainer())
    assert not validation_follows_epoch(FakeTrainer(enabled=False))  # val_path=null
    assert not validation_follows_epoch(FakeTrainer(every=2, epoch=0))
    assert validation_follows_epoch(FakeTrainer(every=2, epoch=1))
    assert validation_follows_epoch(FakeTrainer(every=None, epoch=4))
    assert validation_follows_epoch(FakeTrainer(batches=[3]))
    assert not validation_follows_epoch(FakeTrainer(batches=[0]))


def test_a_training_epoch_without_validation_stores_no_features():
    """:meth:`start_training_epoch`: no validation follows, so training features are not
    stored and those left from an epoch no validation used are dropped; validation's test
    features are still taken."""
    x, y = torch.randn(6, 4), torch.arange(6)
    knn = WeightedKNNClassifierTM1()
    knn(train_features=x, train_targets=y)  # left over: no validation used them
    knn.start_training_epoch(FakeTrainer(enabled=False))
    assert not knn.train_features
    knn(train_features=x, train_targets=y)
    knn(test_features=x, test_targets=y)
    assert not knn.train_features and len(knn.test_features) == 1
    knn.start_training_epoch(FakeTrainer())
    knn(train_features=x, train_targets=y)
    assert len(knn.train_features) == 1
