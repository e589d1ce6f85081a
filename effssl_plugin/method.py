"""EffSSL as a solo-learn method: one view, a memory bank, CE + square-root self-distillation.

All math lives in :mod:`effssl_plugin.losses` and :mod:`effssl_plugin.bank`; this module
wires them into solo-learn's :class:`~solo.methods.base.BaseMethod` (data format, online
linear classifier and kNN, optimizers, schedulers) and Lightning (DDP, logging).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

import omegaconf
import torch
import torch.distributed as dist
import torch.nn as nn
import torch.nn.functional as F
from solo.methods.base import BaseMethod
from solo.utils.metrics import accuracy_at_k
from solo.utils.misc import omegaconf_select
from torch.utils.data import DataLoader, Dataset
from tqdm.auto import tqdm

from effssl_plugin.bank import BANK_DTYPES, MemoryBank
from effssl_plugin.cutmix import cutmix_batch
from effssl_plugin.distributed import all_gather_cat, is_distributed
from effssl_plugin.errors import ConfigError, NonFiniteLossError, suggest
from effssl_plugin.losses import instance_ce_loss, sqrt_kl_loss

__all__ = ["EffSSL", "DEFAULT_METHOD_KWARGS"]

log = logging.getLogger(__name__)

#: ``method_kwargs`` defaults, from the official ``run.sh`` (CIFAR, ResNet-18).
DEFAULT_METHOD_KWARGS: dict[str, Any] = {
    "proj_hidden_dim": 2048,
    "proj_output_dim": 2048,  # bank dimension D
    "temperature": 0.2,  # tau of the instance CE
    "num_negatives": 10000,  # k random non-batch rows per step; -1 = all rows
    "kl_weight": 20.0,  # lambda
    "kl_power": 0.5,  # u = p^power / sum p^power
    "kl_temperature": 1.0,  # p = softmax(s / kl_temperature)
    "bank_momentum": 0.5,  # m
    "bank_update": "grad",  # grad | ema
    "bank_init": "calibrate",  # calibrate | random
    "bank_dtype": "float32",  # float32 | float16 | bfloat16
    "cutmix_alpha": 0.5,  # 0 = off
    "num_samples": None,  # bank rows; the launcher fills it from the training set
    "reinit_bank_on_resume": False,  # allow resuming with a different dataset size
    "check_finite": True,  # stop on a NaN/inf loss, naming the step
}
_CHOICES = {
    "bank_update": ("grad", "ema"),
    "bank_init": ("calibrate", "random"),
    "bank_dtype": tuple(BANK_DTYPES),
}


def _check(cond: bool, key: str, expected: str, value: Any) -> None:
    if not cond:
        raise ConfigError(f"method_kwargs.{key} must be {expected}, got {value!r}")


class EffSSL(BaseMethod):
    """EffSSL (Cao & Wu, arXiv 2404.19289) on top of solo-learn's :class:`BaseMethod`.

    Per step, for one augmented (CutMix-mixed) view ``x`` of each image ``i``::

        z = normalize(projector(backbone(x)))          # B x D
        cols, pos = bank.columns(batch indexes, k)       # own rows + k random rows
        s = z W_C^T                                      # B x |C| cosine logits
        L = CE(s / tau, pos) [mixed with the partner's column] + lambda * KL(p || sg[u])
        bank update after backward: grad (paper) or ema (NPID)

    Extra cfg settings: ``method_kwargs`` with the keys of :data:`DEFAULT_METHOD_KWARGS`.
    """

    def __init__(self, cfg: omegaconf.DictConfig) -> None:
        super().__init__(cfg)
        kw = cfg.method_kwargs
        if kw.num_samples is None:
            raise ConfigError(
                "method_kwargs.num_samples (memory-bank rows) is not set: the effssl launcher "
                "fills it from the training set; set it to the number of training images"
            )
        self.temperature: float = kw.temperature
        self.num_negatives: int = kw.num_negatives
        self.kl_weight: float = kw.kl_weight
        self.kl_power: float = kw.kl_power
        self.kl_temperature: float = kw.kl_temperature
        self.bank_momentum: float = kw.bank_momentum
        self.bank_update: str = kw.bank_update
        self.bank_init: str = kw.bank_init
        self.cutmix_alpha: float = kw.cutmix_alpha
        self.reinit_bank_on_resume: bool = kw.reinit_bank_on_resume
        self.check_finite: bool = kw.check_finite
        self.seed: int = int(omegaconf_select(cfg, "seed", 5))

        hidden, out_dim = kw.proj_hidden_dim, kw.proj_output_dim
        # as the official code: Linear-BN-ReLU, Linear-BN-ReLU, Linear
        self.projector = nn.Sequential(
            nn.Linear(self.features_dim, hidden),
            nn.BatchNorm1d(hidden),
            nn.ReLU(),
            nn.Linear(hidden, hidden),
            nn.BatchNorm1d(hidden),
            nn.ReLU(),
            nn.Linear(hidden, out_dim),
        )
        self.bank = MemoryBank(int(kw.num_samples), out_dim, dtype=BANK_DTYPES[kw.bank_dtype])
        # the bank is per-sample state kept identical by its own collectives: DDP must not
        # broadcast rank 0's copy on every forward
        self._ddp_params_and_buffers_to_ignore = [f"bank.{n}" for n, _ in self.bank.named_buffers()]

        #: optional dataset of ``(index, [view], target)`` for calibration; defaults to the
        #: training dataloader's dataset
        self.calibration_dataset: Dataset | None = None
        self._negatives_generator: torch.Generator | None = None
        self._generator_state: torch.Tensor | None = None
        self._mix: tuple[torch.Tensor, float] | None = None
        self._pending_update: tuple[str, tuple] | None = None
        self._epoch_start_update = 0

    # ------------------------------------------------------------------ config
    @staticmethod
    def add_and_assert_specific_cfg(cfg: omegaconf.DictConfig) -> omegaconf.DictConfig:
        """Fills ``method_kwargs`` defaults and checks every value (clear errors)."""
        cfg = super(EffSSL, EffSSL).add_and_assert_specific_cfg(cfg)
        unknown = set(cfg.method_kwargs) - set(DEFAULT_METHOD_KWARGS)
        if unknown:
            key = sorted(unknown)[0]
            raise ConfigError(
                f"unknown key method_kwargs.{key} for effssl.{suggest(key, DEFAULT_METHOD_KWARGS)}"
                f" Valid keys: {', '.join(DEFAULT_METHOD_KWARGS)}"
            )
        for key, default in DEFAULT_METHOD_KWARGS.items():
            cfg.method_kwargs[key] = omegaconf_select(cfg, f"method_kwargs.{key}", default)
        kw = cfg.method_kwargs
        for key, choices in _CHOICES.items():
            _check(kw[key] in choices, key, f"one of {list(choices)}", kw[key])
        for key in ("proj_hidden_dim", "proj_output_dim"):
            _check(isinstance(kw[key], int) and kw[key] > 0, key, "a positive integer", kw[key])
        for key in ("temperature", "kl_temperature"):
            _check(isinstance(kw[key], (int, float)) and kw[key] > 0, key, "> 0", kw[key])
        _check(0 < kw.kl_power < 1, "kl_power", "in (0, 1)", kw.kl_power)
        _check(kw.kl_weight >= 0, "kl_weight", ">= 0", kw.kl_weight)
        _check(0 < kw.bank_momentum < 1, "bank_momentum", "in (0, 1)", kw.bank_momentum)
        _check(kw.cutmix_alpha >= 0, "cutmix_alpha", ">= 0 (0 = off)", kw.cutmix_alpha)
        _check(
            isinstance(kw.num_negatives, int) and kw.num_negatives >= -1,
            "num_negatives",
            "an integer >= 0, or -1 for all rows",
            kw.num_negatives,
        )
        if kw.num_samples is not None:
            _check(
                isinstance(kw.num_samples, int) and kw.num_samples > 0,
                "num_samples",
                "a positive integer",
                kw.num_samples,
            )
            _check(
                kw.num_negatives < kw.num_samples,
                "num_negatives",
                f"smaller than the number of bank rows ({kw.num_samples}), or -1 for all rows",
                kw.num_negatives,
            )
        num_crops = sum(int(a.num_crops) for a in omegaconf_select(cfg, "augmentations", []))
        if num_crops not in (0, 1):
            raise ConfigError(
                "effssl trains on exactly one view per image, but the augmentations ask for "
                f"{num_crops} crops: use a single pipeline with augmentations[0].num_crops=1"
            )
        return cfg

    @property
    def learnable_params(self) -> list[dict[str, Any]]:
        return super().learnable_params + [
            {"name": "projector", "params": self.projector.parameters()}
        ]

    # ----------------------------------------------------------------- forward
    def forward(self, X: torch.Tensor) -> dict[str, Any]:
        """Backbone features, online-classifier logits and the projector output ``z``."""
        out = super().forward(X)
        out["z"] = self.projector(out["feats"])
        return out

    def base_training_step(self, X: torch.Tensor, targets: torch.Tensor) -> dict[str, Any]:
        """solo-learn's shared step; with CutMix the online classifier's CE is mixed too."""
        if self._mix is None:
            return super().base_training_step(X, targets)
        perm, lam = self._mix
        out = self(X)
        logits = out["logits"]
        loss = lam * F.cross_entropy(logits, targets, ignore_index=-1) + (1 - lam) * (
            F.cross_entropy(logits, targets[perm], ignore_index=-1)
        )
        acc1, acc5 = accuracy_at_k(logits, targets, top_k=(1, min(5, logits.size(1))))
        out.update({"loss": loss, "acc1": acc1, "acc5": acc5})
        return out

    # ---------------------------------------------------------------- training
    def _generator(self) -> torch.Generator:
        """The negatives sampler: seeded identically on every rank, restored on resume."""
        if self._negatives_generator is None or self._negatives_generator.device != self.device:
            gen = torch.Generator(device=self.device)
            gen.manual_seed(self.seed + 1)
            if self._generator_state is not None:
                try:
                    gen.set_state(self._generator_state)
                except RuntimeError:  # resumed on another device type: keep the fresh seed
                    log.warning("negatives sampler state not restored (device changed)")
                self._generator_state = None
            self._negatives_generator = gen
        return self._negatives_generator

    def training_step(self, batch: Sequence[Any], batch_idx: int) -> torch.Tensor:
        """One view per image: CutMix, forward, bank logits, CE + lambda * KL, stash update."""
        indexes, views, targets = batch
        views = [views] if isinstance(views, torch.Tensor) else list(views)
        if len(views) != 1:
            raise ConfigError(f"effssl expects one view per image, the batch has {len(views)}")
        x = views[0]
        self._mix = None
        if self.cutmix_alpha > 0:
            x, perm, lam = cutmix_batch(x, self.cutmix_alpha)
            self._mix = (perm, lam)
        try:
            out = super().training_step([indexes, [x], targets], batch_idx)
        finally:
            mix, self._mix = self._mix, None
        class_loss = out["loss"]
        z = F.normalize(out["z"][0].float(), dim=1)

        indexes = indexes.long()
        global_indexes, offset = all_gather_cat(indexes, return_offset=True)
        if self.num_negatives < 0:  # every row, in index order: no gather copy
            cols, weight, global_pos = None, self.bank.weight, global_indexes
        else:
            cols, global_pos = self.bank.columns(
                global_indexes, self.num_negatives, self._generator()
            )
            weight = self.bank.weight[cols]
        pos = global_pos[offset : offset + indexes.numel()]
        logits = z @ weight.to(z.dtype).t()

        pos_b, lam = (pos[mix[0]], mix[1]) if mix is not None else (None, 1.0)
        ce = instance_ce_loss(logits, pos, self.temperature, target_b=pos_b, lam=lam)
        kl = sqrt_kl_loss(logits, self.kl_power, self.kl_temperature)
        loss = ce + self.kl_weight * kl + class_loss
        if self.check_finite:
            self._raise_if_not_finite(loss, ce, kl, batch_idx)

        with torch.no_grad():
            logits = logits.float()
            probs = F.softmax(logits / self.temperature, dim=1)
            own_prob = probs.gather(1, pos.view(-1, 1)).mean()
            log_p = F.log_softmax(logits / self.kl_temperature, dim=1)
            entropy = -(log_p.exp() * log_p).sum(1).mean()
            if self.bank_update == "ema":
                self._pending_update = ("ema", (indexes, z.detach(), self.bank_momentum))
            else:
                y = torch.zeros_like(probs).scatter_(1, pos.view(-1, 1), lam)
                if pos_b is not None:
                    y.scatter_add_(1, pos_b.view(-1, 1), torch.full_like(probs[:, :1], 1 - lam))
                device_type = self.device.type
                matmul_dtype = (
                    torch.get_autocast_dtype(device_type)
                    if torch.is_autocast_enabled(device_type)
                    else None
                )
                self._pending_update = (
                    "grad",
                    (cols, z.detach(), probs, y, self.bank_momentum, weight.detach(), matmul_dtype),
                )

        self.log_dict(
            {"train_ce_loss": ce, "train_kl_loss": kl},
            on_step=True,
            on_epoch=True,
            sync_dist=True,
            prog_bar=True,
        )
        self.log_dict(
            {
                "train_loss": loss,
                "train_own_prob": own_prob,
                "train_entropy": entropy,
                "bank_staleness": self.bank.staleness(),
            },
            on_step=True,
            on_epoch=True,
            sync_dist=True,
        )
        return loss

    def _raise_if_not_finite(
        self, loss: torch.Tensor, ce: torch.Tensor, kl: torch.Tensor, batch_idx: int
    ) -> None:
        """Stops every rank together (no DDP hang) before a bad step reaches the bank."""
        finite = torch.isfinite(loss.detach()).float()
        if is_distributed():
            dist.all_reduce(finite, op=dist.ReduceOp.MIN)
        if finite.item() < 1:
            raise NonFiniteLossError(
                f"non-finite loss at global step {self.global_step} (epoch {self.current_epoch}, "
                f"batch {batch_idx}): loss={loss.item()}, ce={ce.item()}, kl={kl.item()}. "
                "Training stopped before the update; the last checkpoint on disk is the last "
                "good one. Lower optimizer.lr or check the inputs."
            )

    def on_after_backward(self) -> None:
        """Applies the stashed bank update once the logits' autograd graph is consumed."""
        if self._pending_update is None:
            return
        rule, args = self._pending_update
        self._pending_update = None
        if rule == "ema":
            self.bank.update_ema(*args)
        else:
            self.bank.update_grad(*args)

    def on_train_epoch_start(self) -> None:
        self._epoch_start_update = int(self.bank.num_updates)

    def on_train_epoch_end(self) -> None:
        self.log(
            "bank_rows_written_epoch",
            self.bank.fraction_written_after(self._epoch_start_update),
            sync_dist=False,
        )

    # ------------------------------------------------------------ calibration
    def on_train_start(self) -> None:
        """Fills the bank before step 1 of a fresh run; never on resume (``bank.filled``)."""
        if bool(self.bank.filled):
            return
        if self.bank_init == "random":
            self.bank.reset_random_(torch.Generator(device=self.device).manual_seed(self.seed))
        else:
            self.calibrate_bank()

    def _calibration_loader(self) -> DataLoader:
        train_loader = self.trainer.train_dataloader
        dataset = self.calibration_dataset or getattr(train_loader, "dataset", None)
        if dataset is None:
            raise ConfigError(
                "bank_init=calibrate needs the training dataset; set model.calibration_dataset "
                "or use method_kwargs.bank_init=random"
            )
        if len(dataset) != self.bank.num_samples:
            raise ConfigError(
                f"the training set has {len(dataset)} images but the memory bank has "
                f"{self.bank.num_samples} rows (method_kwargs.num_samples)"
            )
        batch_size = getattr(train_loader, "batch_size", None) or self.batch_size
        batches = calibration_batches(
            len(dataset), batch_size, self.seed, self.trainer.global_rank, self.trainer.world_size
        )
        return DataLoader(
            dataset,
            batch_sampler=batches,
            num_workers=getattr(train_loader, "num_workers", 0),
            pin_memory=self.device.type == "cuda",
        )

    @torch.no_grad()
    def calibrate_bank(self) -> None:
        """One no-grad pass of the current network over every training image ("feature
        calibrate"). Uses the training view, BatchNorm in batch-statistics mode as in a
        training step, over seeded shuffled batches (:func:`calibration_batches`: never
        one class per batch on class-sorted folders); BatchNorm running statistics are
        restored afterwards. Samples that a ``drop_last`` loader would skip are included;
        DDP shards the pass and every replica receives every row."""
        loader = self._calibration_loader()
        if self.trainer.is_global_zero:
            print(
                f"Calibrating the memory bank: {self.bank.num_samples} rows, "
                f"{len(loader) * self.trainer.world_size} batches in shuffled order "
                "(one no-grad pass over the training set before step 1)",
                flush=True,
            )
        saved = {
            name: buf.clone() for name, buf in self.named_buffers() if not name.startswith("bank.")
        }
        was_training = self.training
        self.train()
        precision = self.trainer.strategy.precision_plugin
        for indexes, views, _ in tqdm(
            loader,
            desc="Calibrating memory bank",
            disable=self.trainer.global_rank != 0,
            dynamic_ncols=True,
        ):
            x = views[0] if isinstance(views, (list, tuple)) else views
            x = x.to(self.device, non_blocking=True)
            if not self.no_channel_last:
                x = x.to(memory_format=torch.channels_last)
            with precision.forward_context():
                z = self.projector(self.backbone(x))
            self.bank.fill_(indexes.to(self.device), F.normalize(z.float(), dim=1))
        for name, buf in self.named_buffers():
            if name in saved:
                buf.copy_(saved[name])
        self.train(was_training)
        missing = int((self.bank.last_write < 0).sum())
        if missing:
            raise RuntimeError(f"calibration left {missing} bank rows unwritten")
        self.bank.mark_filled_()

    # ------------------------------------------------------------ checkpoints
    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        if self._negatives_generator is not None:
            checkpoint["effssl_negatives_generator"] = self._negatives_generator.get_state()

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        """Refuses a bank of another size (unless re-initialisation is asked for)."""
        state = checkpoint.get("state_dict", {})
        if "bank.weight" in state:
            saved = state["bank.weight"]
            if tuple(saved.shape) != tuple(self.bank.weight.shape):
                if not self.reinit_bank_on_resume:
                    raise ConfigError(
                        bank_size_mismatch_message(
                            tuple(saved.shape), tuple(self.bank.weight.shape)
                        )
                    )
                log.warning("re-initialising the memory bank: the dataset size changed")
                for name, buf in self.bank.state_dict().items():
                    state[f"bank.{name}"] = buf.clone()
            elif saved.dtype != self.bank.weight.dtype:
                state["bank.weight"] = saved.to(self.bank.weight.dtype)
        gen_state = checkpoint.get("effssl_negatives_generator")
        if gen_state is not None:
            self._generator_state = gen_state
            self._negatives_generator = None


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


def bank_size_mismatch_message(saved_shape: tuple[int, ...], run_shape: tuple[int, ...]) -> str:
    return (
        f"the checkpoint's memory bank is {saved_shape[0]} x {saved_shape[1]} but this run's is "
        f"{run_shape[0]} x {run_shape[1]} (training-set size x method_kwargs.proj_output_dim): "
        "resuming on a different dataset is refused; set method_kwargs.reinit_bank_on_resume=true "
        "to re-initialise the bank"
    )
