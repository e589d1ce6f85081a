"""EffSSL as a solo-learn method: one view, a memory bank, CE + square-root self-distillation.

All math lives in :mod:`effssl_plugin.losses` and :mod:`effssl_plugin.bank`, the settings in
:mod:`effssl_plugin.settings`, the bank's first filling in :mod:`effssl_plugin.calibration`;
this module wires them into solo-learn's :class:`~solo.methods.base.BaseMethod` (data format,
online linear classifier and kNN, optimizers, schedulers) and Lightning (DDP, logging).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import asdict
from functools import partial
from typing import Any

import omegaconf
import torch
import torch.distributed as dist
import torch.nn as nn
import torch.nn.functional as F
from solo.methods.base import BaseMethod
from solo.utils.misc import omegaconf_select
from torch.utils.data import Dataset

from effssl_plugin.augment import CALIBRATION_STREAM, BatchViews, seeded_generator
from effssl_plugin.bank import (
    BANK_DTYPES,
    MemoryBank,
    matmul_as,
    negatives_generator,
    soft_targets,
)
from effssl_plugin.calibration import batch_statistics, calibrate_bank, calibration_loader
from effssl_plugin.cutmix import cutmix_batch
from effssl_plugin.distributed import is_distributed
from effssl_plugin.errors import ConfigError, NonFiniteLossError
from effssl_plugin.losses import instance_ce_loss, sqrt_kl_loss
from effssl_plugin.settings import EffSSLSettings, check_bank_shape

__all__ = ["EffSSL"]

log = logging.getLogger(__name__)


class EffSSL(BaseMethod):
    """EffSSL (Cao & Wu, arXiv 2404.19289) on top of solo-learn's :class:`BaseMethod`.

    Per step, for one augmented (CutMix-mixed) view ``x`` of each image ``i``::

        z = normalize(projector(backbone(x)))          # B x D
        cols, pos = bank.columns(batch indexes, k)       # own rows + k rows drawn by (seed, step)
        s = z W_C^T                                      # B x |C| cosine logits
        L = CE(s / tau, pos) [mixed with the partner's column] + lambda * KL(p || sg[u])
        bank update after backward: grad (paper) or ema (NPID)

    Extra cfg settings: ``method_kwargs``, see :class:`~effssl_plugin.settings.EffSSLSettings`.
    """

    def __init__(self, cfg: omegaconf.DictConfig) -> None:
        super().__init__(cfg)
        self.settings = s = EffSSLSettings.from_kwargs(cfg.method_kwargs)
        self.seed: int = int(omegaconf_select(cfg, "seed", 5))
        # as the official code: Linear-BN-ReLU, Linear-BN-ReLU, Linear
        self.projector = nn.Sequential(
            nn.Linear(self.features_dim, s.proj_hidden_dim),
            nn.BatchNorm1d(s.proj_hidden_dim),
            nn.ReLU(),
            nn.Linear(s.proj_hidden_dim, s.proj_hidden_dim),
            nn.BatchNorm1d(s.proj_hidden_dim),
            nn.ReLU(),
            nn.Linear(s.proj_hidden_dim, s.proj_output_dim),
        )
        self.bank = MemoryBank(s.bank_rows, s.proj_output_dim, dtype=BANK_DTYPES[s.bank_dtype])
        # the bank is per-sample state kept identical by its own collectives: DDP must not
        # broadcast rank 0's copy on every forward
        self._ddp_params_and_buffers_to_ignore = [f"bank.{n}" for n, _ in self.bank.named_buffers()]
        #: optional dataset of ``(index, [view], target)`` for calibration; defaults to the
        #: training dataloader's dataset
        self.calibration_dataset: Dataset | None = None
        #: ``data.pipeline=tensor``: the augmentation that turns the calibration's uint8
        #: batches into the training view (:mod:`effssl_plugin.tensor_data`)
        self.calibration_views: BatchViews | None = None
        self._pending_update: Callable[[], None] | None = None
        self._host_indexes: torch.Tensor | None = None
        self._epoch_start_update = 0
        #: (global step, epoch, batch, [loss, ce, kl] on the device) of the steps since the
        #: last host check of the losses (:meth:`raise_if_not_finite`)
        self._unchecked_losses: list[tuple[int, int, int, torch.Tensor]] = []

    @staticmethod
    def add_and_assert_specific_cfg(cfg: omegaconf.DictConfig) -> omegaconf.DictConfig:
        """Fills ``method_kwargs`` defaults and checks every value (:class:`EffSSLSettings`)."""
        cfg = super(EffSSL, EffSSL).add_and_assert_specific_cfg(cfg)
        for key, value in asdict(EffSSLSettings.from_cfg(cfg)).items():
            cfg.method_kwargs[key] = value
        return cfg

    @property
    def learnable_params(self) -> list[dict[str, Any]]:
        return super().learnable_params + [
            {"name": "projector", "params": self.projector.parameters()}
        ]

    def forward(self, X: torch.Tensor) -> dict[str, Any]:
        """Backbone features, online-classifier logits and the projector output ``z``."""
        out = super().forward(X)
        out["z"] = self.projector(out["feats"])
        return out

    def training_step(self, batch: Sequence[Any], batch_idx: int) -> torch.Tensor:
        """One view per image: CutMix, forward, bank logits, CE + lambda * KL, stash update."""
        indexes, views, targets = batch
        x, s, perm, lam = single_view(views), self.settings, None, 1.0
        if s.cutmix_alpha > 0:
            x, perm, lam = cutmix_batch(x, s.cutmix_alpha)
        out = self.online_eval_step(x, targets, perm, lam)
        z = F.normalize(out["z"].float(), dim=1)
        indexes = indexes.long()
        equal = self._check_ddp_batch(indexes)
        sampler = negatives_generator(self.seed, self.global_step)  # draws on the host
        host = self._host_indexes
        cols, weight, pos = self.bank.batch_columns(
            indexes, s.num_negatives, sampler, host, equal_sizes=equal
        )
        matmul_dtype = bank_matmul_dtype(s.bank_matmul, self.device)
        logits = matmul_as(z, weight.t(), matmul_dtype)  # in that dtype also under autocast
        pos_b = None if perm is None else pos[perm]
        ce = instance_ce_loss(logits, pos, s.temperature, target_b=pos_b, lam=lam)
        kl = sqrt_kl_loss(logits, s.kl_power, s.kl_temperature)
        loss = ce + s.kl_weight * kl + out["loss"]
        if s.check_finite:  # checked on the host every few steps and before each checkpoint
            record = torch.stack([loss, ce, kl]).detach()
            self._unchecked_losses.append((self.global_step, self.current_epoch, batch_idx, record))
        probs, stats = logit_stats(logits.detach(), pos, s.temperature, s.kl_temperature)
        if s.bank_update == "ema":
            update = partial(self.bank.update_ema, indexes, z.detach(), s.bank_momentum, equal)
        else:
            y = soft_targets(pos, probs.shape[1], pos_b, lam)
            args = cols, z.detach(), probs, y, s.bank_momentum, weight, matmul_dtype
            update = partial(self.bank.update_grad, *args)  # weight: the rows the logits used
        self._pending_update = update
        metrics = {"train_ce_loss": ce, "train_kl_loss": kl}
        self.log_dict(metrics, on_step=True, on_epoch=True, sync_dist=True, prog_bar=True)
        self.log_dict({**stats, "train_loss": loss}, on_step=True, on_epoch=True, sync_dist=True)
        staleness = self.bank.staleness()  # the same on every rank: nothing to synchronise
        self.log("bank_staleness", staleness, on_step=True, on_epoch=True, sync_dist=False)
        return loss

    def online_eval_step(
        self, x: torch.Tensor, targets: torch.Tensor, perm: torch.Tensor | None, lam: float
    ) -> dict[str, Any]:
        """solo-learn's forward and online classifier (its CE mixed like the images with
        CutMix), logs and kNN features, as :meth:`BaseMethod.training_step` for one crop."""
        out = self.base_training_step(x, targets)
        if perm is not None:
            mixed = F.cross_entropy(out["logits"], targets[perm], ignore_index=-1)
            out["loss"] = lam * out["loss"] + (1 - lam) * mixed
        metrics = {"train_class_loss": out["loss"], "train_acc1": out["acc1"]}
        self.log_dict({**metrics, "train_acc5": out["acc5"]}, on_epoch=True, sync_dist=True)
        if self.knn_eval and self.knn.collect_train:  # unlabelled (-1): dropped by the kNN
            self.knn(train_features=out["feats"].detach(), train_targets=targets)
        return out

    def _check_ddp_batch(self, indexes: torch.Tensor) -> bool:
        """Under DDP, whether the bank's gathers may skip exchanging sizes (no host sync):
        every rank's training batch holds ``optimizer.batch_size`` images, as the distributed
        sampler (same number of samples per rank) and the training loaders (last incomplete
        batch dropped) guarantee. Checked on the host from the shape, with no communication:
        a batch of another size would make the ranks' gathers disagree."""
        if not is_distributed():
            return False
        if indexes.shape[0] != self.batch_size:
            raise ConfigError(
                f"a training batch of {indexes.shape[0]} images under DDP, where every rank's "
                f"batches must hold optimizer.batch_size={self.batch_size} (drop_last)"
            )
        return True

    def on_before_batch_transfer(self, batch: Any, dataloader_idx: int) -> Any:
        """Keeps the host copy of a training batch's indexes, from which the bank draws the
        step's columns without a device sync (a DALI batch is already on the device)."""
        indexes = batch[0] if self.trainer.training else None
        on_host = torch.is_tensor(indexes) and indexes.device.type == "cpu"
        self._host_indexes = indexes if on_host else None
        return batch

    def on_train_batch_end(self, outputs: Any, batch: Any, batch_idx: int) -> None:
        if len(self._unchecked_losses) >= self.trainer.log_every_n_steps:
            self.raise_if_not_finite()

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        self.raise_if_not_finite()  # a checkpoint on disk never follows a non-finite step

    def on_train_end(self) -> None:
        self.raise_if_not_finite()

    def raise_if_not_finite(self) -> None:
        """The host check of the losses recorded since the last one (one sync for many steps;
        the bank already refused non-finite rows on the device): stops every rank together,
        naming the first non-finite step."""
        unchecked, self._unchecked_losses = self._unchecked_losses, []
        if not unchecked:
            return
        values = torch.stack([record for *_, record in unchecked]).float()
        bad = (~torch.isfinite(values[:, 0])).float()
        if is_distributed():
            dist.all_reduce(bad, op=dist.ReduceOp.MAX)  # a step bad on any rank
        bad = bad.cpu()
        if bad.max() > 0:
            first = int(bad.argmax())
            (step, epoch, batch_idx, _), (loss, ce, kl) = unchecked[first], values[first].tolist()
            raise NonFiniteLossError(
                f"non-finite loss at global step {step} (epoch {epoch}, batch {batch_idx}): "
                f"loss={loss}, ce={ce}, kl={kl}. Training stopped; the memory bank refused that "
                "step's rows and the last checkpoint on disk is the last good one. Lower "
                "optimizer.lr or check the inputs."
            )

    def on_after_backward(self) -> None:
        """Applies the stashed bank update once the logits' autograd graph is consumed.

        Under 16-mixed it also runs on the steps where the GradScaler then skips the optimizer
        step for inf/NaN gradients. That is benign: the update reads the forward's features
        and probabilities only, never a gradient, so it moves the rows as on any step toward
        the current network's features; and a non-finite forward leaves every row as it was
        (the bank's finite check) and stops the run at the next host check.
        """
        update, self._pending_update = self._pending_update, None
        if update is not None:
            update()

    def on_train_start(self) -> None:
        """Fills the bank before step 1 of a fresh run; never on resume (``bank.filled``)."""
        if not bool(self.bank.filled):
            self.initialize_bank()

    def initialize_bank(self) -> None:
        """Fills the bank as ``method_kwargs.bank_init`` says, on every rank alike.

        Calibration (:mod:`effssl_plugin.calibration`) uses the training view over seeded
        shuffled batches, BatchNorm in batch-statistics mode as in a training step (running
        statistics restored afterwards); samples that a ``drop_last`` loader would skip are
        included, and under DDP the ranks share the pass and every replica receives every row.
        """
        if self.settings.bank_init == "random":
            self.bank.reset_random_(torch.Generator(device=self.device).manual_seed(self.seed))
            return
        trainer = self.trainer
        loader = calibration_loader(self)
        if trainer.is_global_zero:
            print(
                f"Calibrating the memory bank: {self.bank.num_samples} rows, "
                f"{len(loader) * trainer.world_size} batches in shuffled order "
                "(one no-grad pass over the training set before step 1)",
                flush=True,
            )

        views, generator = self.calibration_views, None
        if views is not None:
            generator = seeded_generator(
                self.device, self.seed, trainer.global_rank, CALIBRATION_STREAM
            )

        def encode(x: torch.Tensor) -> torch.Tensor:
            if views is not None:
                x = views(x, generator)[0]
            if not self.no_channel_last:
                x = x.to(memory_format=torch.channels_last)
            with trainer.strategy.precision_plugin.forward_context():
                return self.projector(self.backbone(x))

        with batch_statistics(self):
            calibrate_bank(self.bank, encode, loader, self.device, trainer.global_rank == 0)

    def on_train_epoch_start(self) -> None:
        """Records the bank's update count, then ``BaseMethod``'s hook: the online kNN collects
        this epoch's training features only when a validation follows
        (:func:`effssl_plugin.solo_compat.start_knn_epoch`)."""
        self._epoch_start_update = int(self.bank.num_updates)
        super().on_train_epoch_start()  # the kNN's switch: effssl_plugin.solo_compat, patch 2

    def on_train_epoch_end(self) -> None:
        written = self.bank.fraction_written_after(self._epoch_start_update)
        self.log("bank_rows_written_epoch", written, sync_dist=False)

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        """Refuses a bank of another size (unless re-initialisation is asked for)."""
        state = checkpoint.get("state_dict", {})
        saved, run = state.get("bank.weight"), self.bank.weight
        if saved is not None:
            reinit = self.settings.reinit_bank_on_resume
            if check_bank_shape(tuple(saved.shape), tuple(run.shape), reinit):
                log.warning("re-initialising the memory bank: the dataset size changed")
                state.update({f"bank.{n}": b.clone() for n, b in self.bank.state_dict().items()})
            elif saved.dtype != run.dtype:
                state["bank.weight"] = saved.to(run.dtype)


def single_view(views: torch.Tensor | Sequence[torch.Tensor]) -> torch.Tensor:
    """The one augmented view of a batch (solo-learn passes a list of crops)."""
    views = [views] if isinstance(views, torch.Tensor) else list(views)
    if len(views) != 1:
        raise ConfigError(f"effssl expects one view per image, the batch has {len(views)}")
    return views[0]


def bank_matmul_dtype(setting: str, device: torch.device) -> torch.dtype:
    """The dtype of the bank products: ``method_kwargs.bank_matmul``, where ``auto`` is the
    autocast dtype active on ``device``'s type, or float32 outside autocast."""
    if setting != "auto":
        return BANK_DTYPES[setting]
    if torch.is_autocast_enabled(device.type):
        return torch.get_autocast_dtype(device.type)
    return torch.float32


@torch.no_grad()
def logit_stats(
    logits: torch.Tensor, pos: torch.Tensor, temperature: float, kl_temperature: float
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """``P = softmax(s / tau)`` (float32) and the logged mean own-column probability and
    mean entropy of ``softmax(s / kl_temperature)``."""
    logits = logits.float()
    probs = F.softmax(logits / temperature, dim=1)
    log_p = F.log_softmax(logits / kl_temperature, dim=1)
    return probs, {
        "train_own_prob": probs.gather(1, pos.view(-1, 1)).mean(),
        "train_entropy": -(log_p.exp() * log_p).sum(1).mean(),
    }
