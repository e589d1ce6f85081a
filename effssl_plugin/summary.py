"""What a pretraining run tells its user when it ends: a summary of the run (directory,
checkpoint, final and best validation accuracy, epochs, wall time), and, for a finished run
started again, that there is nothing left to train and how to continue it."""

from __future__ import annotations

import datetime
import time
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
from lightning.pytorch.callbacks import Callback
from omegaconf import DictConfig

from effssl_plugin.cli import hydra_config_name, relaunch_command
from effssl_plugin.run_layout import newest_checkpoint

__all__ = [
    "RunSummary",
    "format_summary",
    "finished_message",
    "hydra_config_name",
    "relaunch_command",
    "report_if_finished",
]

#: validation metrics the summary reports (when logged)
SUMMARY_METRICS = ("val_knn_acc1", "val_acc1")


class RunSummary(Callback):
    """Records the final and best value (with its epoch) of :data:`SUMMARY_METRICS` after
    each validation, and the training wall time; its state travels in the checkpoints,
    so a resumed run's summary covers every session. At the end of ``fit``, rank 0 prints
    the summary of the run in ``run_dir`` (none without ``run_dir``)."""

    def __init__(self, run_dir: Path | None = None, max_epochs: int = -1) -> None:
        self.run_dir, self.max_epochs = run_dir, max_epochs
        self.final: dict[str, float] = {}
        self.best: dict[str, list[float]] = {}  # name -> [value, epoch (1-based)]
        self.earlier_seconds = 0.0  # wall time of earlier sessions, up to their checkpoint
        self.sessions = 1  # this one and the earlier ones it continues
        self.start = time.monotonic()

    def seconds(self) -> float:
        """Wall time of this session so far."""
        return time.monotonic() - self.start

    def on_validation_end(self, trainer: pl.Trainer, _: pl.LightningModule) -> None:
        # after the module's on_validation_epoch_end, where solo-learn logs the kNN accuracy
        if trainer.sanity_checking:
            return
        for name in SUMMARY_METRICS:
            value = trainer.callback_metrics.get(name)
            if value is None:
                continue
            value = float(value)
            self.final[name] = value
            if name not in self.best or value > self.best[name][0]:
                self.best[name] = [value, trainer.current_epoch + 1]

    def on_fit_end(self, trainer: pl.Trainer, _: pl.LightningModule) -> None:
        if self.run_dir is not None and trainer.is_global_zero:
            state, epochs = self.state_dict(), trainer.current_epoch
            print(format_summary(self.run_dir, epochs, self.max_epochs, state, self.seconds()))

    def state_dict(self) -> dict[str, Any]:
        """Plain values only: checkpoints load with ``weights_only=True``."""
        return {
            "final": dict(self.final),
            "best": {k: list(v) for k, v in self.best.items()},
            "seconds": self.earlier_seconds + self.seconds(),
            "sessions": self.sessions,
        }

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Continues a resumed run's record as one more session."""
        self.final = dict(state_dict.get("final", {}))
        self.best = {k: list(v) for k, v in state_dict.get("best", {}).items()}
        self.earlier_seconds = float(state_dict.get("seconds", 0.0))
        self.sessions = int(state_dict.get("sessions", 1)) + 1


def _duration(seconds: float) -> str:
    return str(datetime.timedelta(seconds=round(seconds)))


def format_summary(
    run_dir: Path,
    epochs: int,
    max_epochs: int,
    state: dict[str, Any] | None,
    session_seconds: float | None = None,
) -> str:
    """The end-of-run summary; ``state`` is a :class:`RunSummary` state (or ``None``),
    ``session_seconds`` this session's wall time (``None``: no training this session)."""
    state = state or {}
    ckpt = newest_checkpoint(run_dir)
    lines = [f"Pretraining summary: {epochs} of max_epochs={max_epochs} epochs trained"]
    lines.append(f"  run directory: {run_dir}")
    lines.append(f"  checkpoint:    {ckpt if ckpt is not None else 'none written'}")
    for name in SUMMARY_METRICS:
        if name in state.get("final", {}):
            value, epoch = state["best"][name]
            lines.append(
                f"  {name + ':':<14} final {state['final'][name]:.2f}, "
                f"best {value:.2f} (epoch {int(epoch)})"
            )
    total, sessions = state.get("seconds"), int(state.get("sessions", 1))
    if session_seconds is not None:
        wall = f"  wall time:     {_duration(session_seconds)}"
        if total is not None and sessions > 1:
            wall += f" ({_duration(total)} over {sessions} sessions)"
        lines.append(wall)
    elif total is not None:
        lines.append(f"  wall time:     {_duration(total)} over {sessions} session(s)")
    return "\n".join(lines)


def report_if_finished(cfg: DictConfig, run_dir: Path, state: dict[str, Any]) -> bool:
    """Whether the checkpoint ``state`` of ``run_dir`` has reached ``max_epochs`` or
    ``max_steps`` (Lightning would run a sanity check and stop); if so, rank 0 prints that
    there is nothing to train, how to continue, and the run's summary."""
    from lightning.pytorch.utilities import rank_zero_only

    epochs, steps = int(state.get("epoch", -1)) + 1, int(state.get("global_step", 0))
    max_steps = int(cfg.get("max_steps", -1) or -1)
    if 0 < cfg.max_epochs <= epochs:
        reached, key, limit = f"epoch {epochs}", "max_epochs", int(cfg.max_epochs)
    elif 0 < max_steps <= steps:
        reached, key, limit = f"step {steps}", "max_steps", max_steps
    else:
        return False
    if rank_zero_only.rank == 0:
        command = relaunch_command(drop=(key, "resume_from_checkpoint"))
        # effssl without its bank (checkpoint.bank=none_at_end) cannot be continued
        weights = state.get("state_dict", {})
        can_continue = cfg.method != "effssl" or "bank.weight" in weights
        print(finished_message(run_dir, reached, key, limit, command, can_continue))
        summary = state.get("callbacks", {}).get(RunSummary.__qualname__)
        print(format_summary(run_dir, epochs, cfg.max_epochs, summary))
    return True


def finished_message(
    run_dir: Path,
    reached: str,
    key: str,
    limit: int,
    command: str | None = None,
    continuable: bool = True,
) -> str:
    """What a finished run says when it is started again: it has nothing to train, and the
    command that trains it for longer. ``reached``: e.g. ``"epoch 3"``; ``key``/``limit``:
    the limit it reached (``max_epochs``/3); ``command``: the launch command without its
    ``key`` and ``resume_from_checkpoint`` overrides; ``continuable=False``: the checkpoint
    cannot be continued (saved without its memory bank)."""
    done = f"Run {run_dir} already finished at {reached} ({key}={limit}): nothing to train."
    if not continuable:
        return (
            f"{done} Its last checkpoint was saved without the memory bank "
            "(checkpoint.bank=none_at_end), so it cannot be continued; to train longer, start "
            "a new run (auto_resume.enabled=false)"
        )
    more = 2 * limit
    override = key if key == "max_epochs" else f"+{key}"  # max_epochs is in the configs
    how = f"resume_from_checkpoint={run_dir} {override}={more}"
    if command:
        how = f"{command} {how}"
    return f"{done} To train it longer (here to {key}={more}): {how}"
