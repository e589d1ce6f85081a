"""The online kNN during pretraining: training features are collected only in epochs that a
validation follows, so a run without validation data keeps none and its memory does not grow
with the epochs (before: every step's features piled up, about 5 GB an epoch on ImageNet)."""

from __future__ import annotations

from pathlib import Path

import pytest
from conftest import compose, require_solo, tiny_overrides

require_solo()

pytestmark = pytest.mark.slow  # training runs


def knn_bytes(knn) -> int:
    """The memory held by the kNN's stored features and targets."""
    states = [*knn.train_features, *knn.train_targets, *knn.test_features, *knn.test_targets]
    return sum(t.numel() * t.element_size() for t in states)


def rss_bytes() -> int:
    """This process's resident memory (Linux)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError("no VmRSS in /proc/self/status")


def test_a_run_without_validation_keeps_no_knn_features(fake_folder, workdir):
    """``data.val_path=null`` for 3 epochs: no training feature is kept at any step, and the
    process memory does not grow with the epochs. (At this size the features that piled up
    before, 18 x 512 floats an epoch, are below the noise of the resident memory: the
    kNN's own bytes are the exact measure.)"""
    from lightning.pytorch.callbacks import Callback

    from effssl_plugin.main_pretrain import pretrain

    held: list[int] = []
    rss: list[int] = []

    class Probe(Callback):
        def on_train_batch_end(self, trainer, module, *args) -> None:
            held.append(knn_bytes(module.knn))

        def on_train_epoch_end(self, trainer, module) -> None:
            rss.append(rss_bytes())

    cfg = compose("effssl", [*tiny_overrides(fake_folder, 3, 6, 4), "checkpoint.enabled=false"])
    assert cfg.data.val_path is None and cfg.knn_eval.enabled  # the presets' defaults
    pretrain(cfg, extra_callbacks=[Probe()])
    assert held == [0] * 9  # 18 images, batch 6, 3 epochs
    assert len(rss) == 3 and rss[2] - rss[0] < 32 * 2**20


def test_knn_collects_only_in_the_epochs_that_validate(fake_folder, workdir):
    """``check_val_every_n_epoch=2``: epoch 0 (no validation) collects nothing, epoch 1
    collects every step's features, and its validation uses and clears them."""
    from lightning.pytorch.callbacks import Callback

    from effssl_plugin.main_pretrain import pretrain

    counts: list[tuple[int, int]] = []
    validated: list[tuple[int, int]] = []
    epoch_ends: list[int] = []

    class Probe(Callback):
        def on_train_batch_end(self, trainer, module, *args) -> None:
            counts.append((trainer.current_epoch, len(module.knn.train_features)))

        def on_validation_epoch_end(self, trainer, module) -> None:  # before the module's
            if not trainer.sanity_checking:
                validated.append((trainer.current_epoch, len(module.knn.train_features)))

        def on_train_epoch_end(self, trainer, module) -> None:  # after the validation
            epoch_ends.append(knn_bytes(module.knn))

    overrides = tiny_overrides(fake_folder, 2, 6, 4, f"data.val_path={fake_folder}")
    cfg = compose("effssl", [*overrides, "checkpoint.enabled=false", "+check_val_every_n_epoch=2"])
    pretrain(cfg, extra_callbacks=[Probe()])
    assert counts == [(0, 0), (0, 0), (0, 0), (1, 1), (1, 2), (1, 3)]
    assert validated == [(1, 3)]  # the one validation had the epoch's 3 batches of features
    assert epoch_ends == [0, 0]  # and its kNN cleared them


def test_a_baseline_without_validation_keeps_no_knn_features(fake_folder, workdir):
    """The same for a solo-learn method (SimCLR): the kNN's epoch switch is a patch of
    ``BaseMethod`` (``effssl_plugin.solo_compat``), not EffSSL's alone."""
    from lightning.pytorch.callbacks import Callback

    from effssl_plugin.main_pretrain import pretrain

    held: list[int] = []

    class Probe(Callback):
        def on_train_batch_end(self, trainer, module, *args) -> None:
            held.append(knn_bytes(module.knn))

    overrides = [o for o in tiny_overrides(fake_folder, 2, 6, 4) if "method_kwargs" not in o]
    cfg = compose(
        "simclr", [*overrides, "checkpoint.enabled=false", "method_kwargs.proj_hidden_dim=64"]
    )
    assert cfg.data.val_path is None and cfg.knn_eval.enabled
    pretrain(cfg, extra_callbacks=[Probe()])
    assert held == [0] * 6  # 18 images, batch 6, 2 epochs
