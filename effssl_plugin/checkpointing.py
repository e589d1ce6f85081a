"""Atomic checkpoints that keep the last N, and an auto-resumer that picks the newest one.

Both extend solo-learn's :class:`~solo.utils.checkpointer.Checkpointer` and
:class:`~solo.utils.auto_resumer.AutoResumer` (same directory layout, ``args.json`` and
matching rules), changing only what resume safety needs.
"""

from __future__ import annotations

import json
import os
import re
from datetime import datetime
from pathlib import Path

import lightning.pytorch as pl
import torch
from omegaconf import DictConfig
from solo.utils.auto_resumer import AutoResumer
from solo.utils.checkpointer import Checkpointer
from solo.utils.misc import omegaconf_select

from effssl_plugin.errors import ConfigError

__all__ = [
    "AtomicCheckpointer",
    "NewestCheckpointResumer",
    "checkpoint_epoch",
    "BANK_STORAGE",
    "check_bank_present",
]

_EPOCH_RE = re.compile(r"-ep=(\d+)\.ckpt$")

#: ``checkpoint.bank``: how checkpoints store the EffSSL memory bank (``bank.*`` buffers).
#: ``full``: as trained; ``bfloat16``: a float32 bank is stored in bfloat16 (half the bytes; on
#: resume it is the bfloat16-rounded bank, cast back); ``none_at_end``: as trained, except the
#: checkpoint of the last epoch, which leaves the bank out (it cannot be continued).
BANK_STORAGE = ("full", "bfloat16", "none_at_end")
#: Checkpoint key recording a non-default bank storage (``"bfloat16"`` or ``"omitted"``).
BANK_STORAGE_KEY = "effssl_checkpoint_bank"


def checkpoint_epoch(path: str | Path) -> int:
    """The epoch in a ``...-ep=N.ckpt`` file name (-1 if absent)."""
    match = _EPOCH_RE.search(str(path))
    return int(match.group(1)) if match else -1


class AtomicCheckpointer(Checkpointer):
    """solo-learn's Checkpointer, writing each checkpoint atomically and keeping the last N.

    A checkpoint is written to ``<name>.ckpt.tmp`` and renamed to ``<name>.ckpt`` only when
    complete, so a job killed while saving never leaves a truncated ``.ckpt`` for
    auto-resume. ``keep_last`` checkpoints are kept (``keep_prev=True`` keeps all). The run
    directory is ``logdir / run_id`` when a ``run_id`` is given (a resumed run continues in
    its own directory), else solo-learn's naming. The last epoch is always saved.
    """

    def __init__(
        self,
        cfg: DictConfig,
        logdir: str | Path = Path("trained_models"),
        frequency: int = 1,
        keep_prev: bool = False,
        keep_last: int = 1,
        run_id: str | None = None,
        bank: str = "full",
    ) -> None:
        super().__init__(cfg, logdir=logdir, frequency=frequency, keep_prev=keep_prev)
        if keep_last < 1:
            raise ValueError(f"checkpoint.keep_last must be >= 1, got {keep_last}")
        if bank not in BANK_STORAGE:
            raise ConfigError(f"checkpoint.bank must be one of {list(BANK_STORAGE)}, got {bank!r}")
        self.keep_last = keep_last
        self.run_id = run_id
        self.bank = bank
        self._saving_last = False

    @classmethod
    def from_cfg(cls, cfg: DictConfig, run_dir: Path) -> AtomicCheckpointer:
        """From the ``checkpoint.*`` keys, writing into ``run_dir``."""
        return cls(
            cfg,
            logdir=run_dir.parent,
            frequency=cfg.checkpoint.frequency,
            keep_prev=cfg.checkpoint.keep_prev,
            keep_last=int(omegaconf_select(cfg, "checkpoint.keep_last", 1)),
            run_id=run_dir.name,
            bank=str(omegaconf_select(cfg, "checkpoint.bank", "full")),
        )

    def initial_setup(self, trainer: pl.Trainer) -> None:
        if self.run_id is None:
            super().initial_setup(trainer)
            return
        self.path = self.logdir / self.run_id
        self.ckpt_placeholder = f"{self.cfg.name}-{self.run_id}" + "-ep={}.ckpt"
        self.last_ckpt = None
        if trainer.is_global_zero:
            os.makedirs(self.path, exist_ok=True)

    def save(self, trainer: pl.Trainer) -> None:
        if trainer.sanity_checking:
            return
        final = self.path / self.ckpt_placeholder.format(trainer.current_epoch)
        tmp = final.with_name(final.name + ".tmp")
        trainer.save_checkpoint(tmp)  # every rank calls it; rank 0 writes; ends in a barrier
        if trainer.is_global_zero:
            os.replace(tmp, final)
            self._prune()
        trainer.strategy.barrier("effssl_checkpoint_rename")
        self.last_ckpt = final

    def _prune(self) -> None:
        if self.keep_prev:
            return
        ckpts = sorted(
            self.path.glob("*.ckpt"), key=lambda p: (checkpoint_epoch(p), p.stat().st_mtime)
        )
        for old in ckpts[: -self.keep_last]:
            old.unlink(missing_ok=True)

    def on_train_epoch_end(self, trainer: pl.Trainer, _: pl.LightningModule) -> None:
        epoch = trainer.current_epoch
        last = trainer.max_epochs is not None and epoch + 1 >= trainer.max_epochs
        if epoch % self.frequency == 0 or last:
            self._saving_last = bool(trainer.max_epochs and trainer.max_epochs > 0 and last)
            try:
                self.save(trainer)
            finally:
                self._saving_last = False

    def on_save_checkpoint(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, checkpoint: dict
    ) -> None:
        """Applies ``checkpoint.bank`` to the ``bank.*`` entries of the state dict."""
        state = checkpoint.get("state_dict", {})
        if "bank.weight" not in state or self.bank == "full":
            return
        if self.bank == "none_at_end" and self._saving_last:
            for key in [k for k in state if k.startswith("bank.")]:
                del state[key]
            checkpoint[BANK_STORAGE_KEY] = "omitted"
        elif self.bank == "bfloat16" and state["bank.weight"].dtype == torch.float32:
            state["bank.weight"] = state["bank.weight"].to(torch.bfloat16)
            checkpoint[BANK_STORAGE_KEY] = "bfloat16"


def check_bank_present(checkpoint: dict, path: str | Path, cfg: DictConfig) -> None:
    """Refuses to continue an EffSSL checkpoint saved without its bank (``none_at_end``)."""
    if cfg.method != "effssl" or checkpoint.get(BANK_STORAGE_KEY) != "omitted":
        return
    epochs = int(checkpoint.get("epoch", -1)) + 1
    if 0 < int(cfg.max_epochs) <= epochs:
        return  # a finished run: the launcher reports it and trains nothing
    raise ConfigError(
        f"the checkpoint {path} was saved without its memory bank "
        f"(checkpoint.bank=none_at_end, after {epochs} epochs): it holds the trained weights "
        "(also in the run's encoder/ folder) but cannot be continued; resume from an earlier "
        "checkpoint, or start a new run (auto_resume.enabled=false)"
    )


class NewestCheckpointResumer(AutoResumer):
    """solo-learn's AutoResumer (same ``SHOULD_MATCH`` keys and age limit), but within each
    run directory it picks the checkpoint of the highest epoch, and it ignores the
    ``.ckpt.tmp`` files of interrupted saves. Returns ``(checkpoint, run_id)``."""

    def find_checkpoint(self, cfg: DictConfig) -> tuple[str | None, str | None]:
        now = datetime.now()
        candidates = []
        for rootdir, _, files in os.walk(self.checkpoint_dir):
            root = Path(rootdir)
            ckpts = [root / f for f in files if f.endswith(".ckpt")]
            if not ckpts or not (root / "args.json").exists():
                continue
            newest = max(ckpts, key=lambda p: (checkpoint_epoch(p), p.stat().st_mtime))
            created = datetime.fromtimestamp(os.path.getmtime(newest))
            if now - created < self.max_hours:
                candidates.append((created, newest, root))
        for _, ckpt, root in sorted(candidates, key=lambda c: c[0], reverse=True):
            with open(root / "args.json") as f:
                saved = DictConfig(json.load(f))
            if all(
                omegaconf_select(saved, key, None) == omegaconf_select(cfg, key, None)
                for key in AutoResumer.SHOULD_MATCH
            ):
                return str(ckpt), root.name
        return None, None
