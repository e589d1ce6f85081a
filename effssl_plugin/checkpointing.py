"""Checkpoints: solo-learn's :class:`~solo.utils.checkpointer.Checkpointer` and
:class:`~solo.utils.auto_resumer.AutoResumer` (same directory layout, ``args.json`` and
matching rules) with what resuming safely needs, and the checks a checkpoint passes before a
run continues it (:func:`read_checkpoint`, then :func:`~effssl_plugin.checks.check_resume`)."""

from __future__ import annotations

import json
import os
from datetime import datetime
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import torch
from omegaconf import DictConfig
from solo.utils.auto_resumer import AutoResumer
from solo.utils.checkpointer import Checkpointer
from solo.utils.misc import omegaconf_select

from effssl_plugin.checks import (
    BANK_STORAGE,
    CheckpointFacts,
    check_checkpoint_storage,
    check_resume,
)
from effssl_plugin.cli import RUN_ID_ENV, new_run_id
from effssl_plugin.errors import ConfigError
from effssl_plugin.run_layout import (
    ARGS_FILE,
    checkpoint_epoch,
    checkpoint_name_pattern,
    newest_checkpoint,
    oldest_first,
    run_directory,
)

__all__ = [
    "AtomicCheckpointer",
    "NewestCheckpointResumer",
    "BANK_STORAGE",
    "check_resumable",
    "read_checkpoint",
    "resolve_resume",
    "checkpoint_epoch",
    "newest_checkpoint",
    "resolve_checkpoint",
]

#: Checkpoint key recording a non-default bank storage (``"bfloat16"`` or ``"omitted"``).
BANK_STORAGE_KEY = "effssl_checkpoint_bank"


def resolve_checkpoint(path: str | Path) -> Path:
    """A ``.ckpt`` file, or the newest one in a run directory."""
    p = Path(path)
    if not p.exists():
        raise ConfigError(f"checkpoint {p} does not exist")
    newest = newest_checkpoint(p) if p.is_dir() else p
    if newest is None:
        raise ConfigError(f"no .ckpt file in {p}")
    return newest


class AtomicCheckpointer(Checkpointer):
    """solo-learn's Checkpointer, with:

    * atomic writes: ``<name>.ckpt.tmp``, renamed to ``<name>.ckpt`` when complete, so a job
      killed while saving never leaves a truncated ``.ckpt`` for auto-resume. Lightning's own
      ``_atomic_save`` is not enough: before 2.4 it writes in place, and since then it stages
      the file in the system temp folder and ``shutil.move``s it, which copies into place when
      that folder is on another filesystem than ``checkpoint.dir`` (as on most clusters);
    * the last ``keep_last`` checkpoints kept (``keep_prev=True`` keeps all), and the last
      epoch always saved;
    * the run directory ``logdir / run_id``, so a resumed run continues in its own directory;
    * ``checkpoint.bank`` (:data:`BANK_STORAGE`) applied to EffSSL's bank.
    """

    def __init__(
        self,
        cfg: DictConfig,
        logdir: str | Path = Path("trained_models"),
        frequency: int = 1,
        keep_prev: bool = False,
        *,
        keep_last: int = 1,
        run_id: str,
        bank: str = "full",
    ) -> None:
        super().__init__(cfg, logdir=logdir, frequency=frequency, keep_prev=keep_prev)
        check_checkpoint_storage(keep_last, bank)  # the launcher checked them before
        self.keep_last, self.run_id, self.bank = keep_last, run_id, bank
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
        self.path = self.logdir / self.run_id
        self.ckpt_placeholder = checkpoint_name_pattern(self.cfg.name, self.run_id)
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
            if not self.keep_prev:
                for old in oldest_first(self.path.glob("*.ckpt"))[: -self.keep_last]:
                    old.unlink(missing_ok=True)
        trainer.strategy.barrier("effssl_checkpoint_rename")
        self.last_ckpt = final

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


def read_checkpoint(path: str) -> tuple[dict[str, Any], CheckpointFacts]:
    """The checkpoint at ``path`` (memory-mapped) and what
    :func:`~effssl_plugin.checks.check_resume` needs to know of it."""
    try:
        state = torch.load(path, map_location="cpu", mmap=True, weights_only=True)
    except Exception as err:
        raise ConfigError(f"cannot read checkpoint {path}: {err}") from None
    weights = state.get("state_dict", {})
    classifier, bank = weights.get("classifier.weight"), weights.get("bank.weight")
    facts = CheckpointFacts(
        path=str(path),
        epochs=int(state.get("epoch", -1)) + 1,
        bank_omitted=state.get(BANK_STORAGE_KEY) == "omitted",
        classifier_classes=None if classifier is None else int(classifier.shape[0]),
        bank_shape=None if bank is None else tuple(bank.shape),
    )
    return state, facts


def check_resumable(path: str, cfg: DictConfig) -> dict[str, Any]:
    """The checkpoint at ``path`` after :func:`~effssl_plugin.checks.check_resume` refused
    one that ``cfg`` cannot continue."""
    state, facts = read_checkpoint(path)
    check_resume(cfg, facts, int(cfg.data.num_classes))
    return state


def resolve_resume(cfg: DictConfig) -> tuple[str | None, Path]:
    """The checkpoint a run continues (or ``None``) and its run directory. As solo-learn:
    ``resume_from_checkpoint`` (here also a run directory: its newest epoch), else the
    newest matching run of ``auto_resume``; a resumed run continues in its own directory, a
    DDP worker in rank 0's, a new run in a new one."""
    ckpt_path, run_id = None, None
    if cfg.resume_from_checkpoint is not None:
        try:
            ckpt_path = str(resolve_checkpoint(cfg.resume_from_checkpoint))
        except ConfigError as err:
            raise ConfigError(f"resume_from_checkpoint: {err}") from None
        run_id = Path(ckpt_path).parent.name
        del cfg.resume_from_checkpoint
        print(f"Resuming from checkpoint '{ckpt_path}'")
    elif cfg.auto_resume.enabled:
        resumer = NewestCheckpointResumer(
            Path(cfg.checkpoint.dir) / cfg.method, max_hours=cfg.auto_resume.max_hours
        )
        ckpt_path, run_id = resumer.find_checkpoint(cfg)
        if ckpt_path is not None:
            print(f"Resuming from previous checkpoint that matches specifications: '{ckpt_path}'")
    if run_id is None and os.environ.get("LOCAL_RANK", "0") != "0":
        run_id = os.environ.get(RUN_ID_ENV)  # a DDP worker: rank 0's directory
    return ckpt_path, run_directory(cfg.checkpoint.dir, cfg.method, run_id or new_run_id())


class NewestCheckpointResumer(AutoResumer):
    """solo-learn's AutoResumer (same ``SHOULD_MATCH`` keys and age limit), except that it
    takes each run directory's newest checkpoint (:func:`newest_checkpoint`), not any
    ``.ckpt``, and returns ``(checkpoint, run_id)`` (the directory name), not a W&B id."""

    def find_checkpoint(self, cfg: DictConfig) -> tuple[str | None, str | None]:
        now, candidates = datetime.now(), []
        for rootdir, _, _ in os.walk(self.checkpoint_dir):
            ckpt = newest_checkpoint(rootdir)
            if ckpt is None or not (Path(rootdir) / ARGS_FILE).exists():
                continue
            created = datetime.fromtimestamp(ckpt.stat().st_mtime)
            if now - created < self.max_hours:
                candidates.append((created, ckpt))
        for _, ckpt in sorted(candidates, key=lambda c: c[0], reverse=True):
            saved = DictConfig(json.loads((ckpt.parent / ARGS_FILE).read_text()))
            if all(
                omegaconf_select(saved, key, None) == omegaconf_select(cfg, key, None)
                for key in AutoResumer.SHOULD_MATCH
            ):
                return str(ckpt), ckpt.parent.name
        return None, None
