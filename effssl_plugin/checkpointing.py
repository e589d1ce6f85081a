"""Checkpoints: solo-learn's :class:`~solo.utils.checkpointer.Checkpointer` and
:class:`~solo.utils.auto_resumer.AutoResumer` (same directory layout, ``args.json`` and
matching rules) with what resuming safely needs, and the checks a checkpoint passes before a
run continues it."""

from __future__ import annotations

import json
import os
import re
from collections.abc import Iterable
from datetime import datetime
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import torch
from omegaconf import DictConfig
from solo.utils.auto_resumer import AutoResumer
from solo.utils.checkpointer import Checkpointer
from solo.utils.misc import omegaconf_select

from effssl_plugin.errors import ConfigError
from effssl_plugin.settings import check_bank_shape

__all__ = [
    "AtomicCheckpointer",
    "NewestCheckpointResumer",
    "BANK_STORAGE",
    "check_resumable",
    "checkpoint_epoch",
    "newest_checkpoint",
    "resolve_checkpoint",
]

#: ``checkpoint.bank``: how checkpoints store the EffSSL memory bank (``bank.*`` buffers).
#: ``full``: as trained; ``bfloat16``: a float32 bank is stored in bfloat16 (half the bytes; on
#: resume it is the bfloat16-rounded bank, cast back); ``none_at_end``: as trained, except the
#: checkpoint of the last epoch, which leaves the bank out (it cannot be continued).
BANK_STORAGE = ("full", "bfloat16", "none_at_end")
#: Checkpoint key recording a non-default bank storage (``"bfloat16"`` or ``"omitted"``).
BANK_STORAGE_KEY = "effssl_checkpoint_bank"


def checkpoint_epoch(path: str | Path) -> int:
    """The epoch in a ``...-ep=N.ckpt`` file name (-1 if absent)."""
    match = re.search(r"-ep=(\d+)\.ckpt$", str(path))
    return int(match.group(1)) if match else -1


def _oldest_first(ckpts: Iterable[Path]) -> list[Path]:
    """By the epoch in the name (a newer mtime never beats a higher epoch), then by mtime."""
    return sorted(ckpts, key=lambda p: (checkpoint_epoch(p), p.stat().st_mtime))


def newest_checkpoint(run_dir: str | Path) -> Path | None:
    """The highest-epoch ``.ckpt`` in ``run_dir`` (never an unfinished ``.ckpt.tmp``), or None."""
    ckpts = _oldest_first(Path(run_dir).glob("*.ckpt"))
    return ckpts[-1] if ckpts else None


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
        if keep_last < 1:
            raise ValueError(f"checkpoint.keep_last must be >= 1, got {keep_last}")
        if bank not in BANK_STORAGE:
            raise ConfigError(f"checkpoint.bank must be one of {list(BANK_STORAGE)}, got {bank!r}")
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
            if not self.keep_prev:
                for old in _oldest_first(self.path.glob("*.ckpt"))[: -self.keep_last]:
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


def check_resumable(path: str, cfg: DictConfig) -> dict[str, Any]:
    """The checkpoint at ``path`` (memory-mapped), after refusing one that ``cfg`` cannot
    continue: made for another dataset (number of classes of the online classifier; for
    effssl, of images, i.e. bank rows) or an EffSSL checkpoint saved without its bank
    (``checkpoint.bank=none_at_end``; fine for a finished run, which trains nothing)."""
    try:
        state = torch.load(path, map_location="cpu", mmap=True, weights_only=True)
    except Exception as err:
        raise ConfigError(f"cannot read checkpoint {path}: {err}") from None
    epochs = int(state.get("epoch", -1)) + 1
    if cfg.method == "effssl" and state.get(BANK_STORAGE_KEY) == "omitted":
        if not 0 < int(cfg.max_epochs) <= epochs:
            raise ConfigError(
                f"the checkpoint {path} was saved without its memory bank "
                f"(checkpoint.bank=none_at_end, after {epochs} epochs): it holds the trained "
                "weights (also in the run's encoder/ folder) but cannot be continued; resume "
                "from an earlier checkpoint, or start a new run (auto_resume.enabled=false)"
            )
    weights = state.get("state_dict", {})
    classifier = weights.get("classifier.weight")
    if classifier is not None and classifier.shape[0] != cfg.data.num_classes:
        raise ConfigError(
            f"the checkpoint {path} was trained on {classifier.shape[0]} classes but "
            f"data.train_path has {cfg.data.num_classes}: resuming on a different dataset is "
            "refused (start a new run, e.g. with auto_resume.enabled=false)"
        )
    bank = weights.get("bank.weight")
    if cfg.method == "effssl" and bank is not None:
        kw = cfg.method_kwargs
        run_shape = (int(kw.num_samples), int(kw.proj_output_dim))
        check_bank_shape(tuple(bank.shape), run_shape, bool(kw.reinit_bank_on_resume), path)
    return state


class NewestCheckpointResumer(AutoResumer):
    """solo-learn's AutoResumer (same ``SHOULD_MATCH`` keys and age limit), except that it
    takes each run directory's newest checkpoint (:func:`newest_checkpoint`), not any
    ``.ckpt``, and returns ``(checkpoint, run_id)`` (the directory name), not a W&B id."""

    def find_checkpoint(self, cfg: DictConfig) -> tuple[str | None, str | None]:
        now, candidates = datetime.now(), []
        for rootdir, _, _ in os.walk(self.checkpoint_dir):
            ckpt = newest_checkpoint(rootdir)
            if ckpt is None or not (Path(rootdir) / "args.json").exists():
                continue
            created = datetime.fromtimestamp(ckpt.stat().st_mtime)
            if now - created < self.max_hours:
                candidates.append((created, ckpt))
        for _, ckpt in sorted(candidates, key=lambda c: c[0], reverse=True):
            saved = DictConfig(json.loads((ckpt.parent / "args.json").read_text()))
            if all(
                omegaconf_select(saved, key, None) == omegaconf_select(cfg, key, None)
                for key in AutoResumer.SHOULD_MATCH
            ):
                return str(ckpt), ckpt.parent.name
        return None, None
