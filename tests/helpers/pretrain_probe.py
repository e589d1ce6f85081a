"""Test helper: ``python tests/helpers/pretrain_probe.py [config=NAME] key=value ...``.

Runs :func:`effssl_plugin.main_pretrain.pretrain` with a probe callback that writes, for
every rank, into ``$EFFSSL_PROBE_DIR``: the state right after restore (epoch, step, bank,
optimizer state) and a checksum of the bank before every training step. With
``$EFFSSL_PROBE_NAN_AT_STEP=N`` it poisons a backbone weight before global step N; with
``$EFFSSL_PROBE_SLEEP=S`` every step takes S seconds more (to kill a run mid-epoch); with
``$EFFSSL_PROBE_STOP_AFTER=N`` the run stops after N epochs (after their checkpoint); the
global step of the batch in progress is written to ``progress.txt``.
Lightning's DDP launcher re-runs this same command for the other ranks.
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
import time
from pathlib import Path

import torch
from hydra import compose, initialize_config_module
from lightning.pytorch.callbacks import Callback

from effssl_plugin.main_pretrain import main_with_errors, pretrain


def digest(t: torch.Tensor) -> str:
    return hashlib.sha256(t.detach().cpu().contiguous().view(torch.uint8).numpy()).hexdigest()


class Probe(Callback):
    def __init__(self, out: Path) -> None:
        self.out = out
        self.checksums: list[tuple[int, str]] = []

    def _rank(self, trainer) -> int:
        return trainer.global_rank

    def on_train_start(self, trainer, module) -> None:
        state = {
            "epoch": trainer.current_epoch,
            "global_step": trainer.global_step,
            "filled": bool(module.bank.filled),
            "bank": module.bank.weight.clone(),
            "num_updates": int(module.bank.num_updates),
            "optimizer": trainer.optimizers[0].state_dict(),
            "scheduler_last_epoch": trainer.lr_scheduler_configs[0].scheduler.last_epoch
            if trainer.lr_scheduler_configs
            else None,
        }
        torch.save(state, self.out / f"start_rank{self._rank(trainer)}.pt")

    def on_train_batch_start(self, trainer, module, batch, batch_idx) -> None:
        nan_at = int(os.environ.get("EFFSSL_PROBE_NAN_AT_STEP", "-1"))
        if trainer.global_step == nan_at:
            with torch.no_grad():
                next(module.backbone.parameters()).fill_(float("nan"))
        self.checksums.append((trainer.global_step, digest(module.bank.weight)))
        if trainer.global_rank == 0:
            (self.out / "progress.txt").write_text(str(trainer.global_step))
        time.sleep(float(os.environ.get("EFFSSL_PROBE_SLEEP", "0")))

    def on_train_epoch_end(self, trainer, module) -> None:
        stop_after = int(os.environ.get("EFFSSL_PROBE_STOP_AFTER", "0"))
        if stop_after and trainer.current_epoch + 1 >= stop_after:
            trainer.should_stop = True

    def on_train_end(self, trainer, module) -> None:
        self.checksums.append((trainer.global_step, digest(module.bank.weight)))
        rank = self._rank(trainer)
        (self.out / f"checksums_rank{rank}.json").write_text(json.dumps(self.checksums))
        torch.save(module.bank.state_dict(), self.out / f"bank_end_rank{rank}.pt")


def run() -> None:
    args = sys.argv[1:]
    name = "effssl"
    if args and args[0].startswith("config="):
        name = args.pop(0).split("=", 1)[1]
    out = Path(os.environ["EFFSSL_PROBE_DIR"])
    out.mkdir(parents=True, exist_ok=True)
    with initialize_config_module("effssl_plugin.configs", version_base="1.2"):
        cfg = compose(name, overrides=args)
    main_with_errors(lambda: pretrain(cfg, extra_callbacks=[Probe(out)]), "pretrain_probe")


if __name__ == "__main__":
    run()
