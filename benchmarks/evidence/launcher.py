"""The launcher worker: one run (effssl or a solo-learn baseline) through this package's
``pretrain``, with a callback that times the epochs, evaluates the kNN, and stops at a pause
or a divergence."""

from __future__ import annotations

import math
import time
import warnings
from pathlib import Path

from .data import ensure_data, study_data
from .evaluation import eval_sets, knn_eval
from .plans import EFFSSL_BASE, variant_overrides
from .runs import (
    DIVERGED,
    EvalLog,
    hydra_path,
    last_epoch,
    paused,
    record_start,
    run_name,
    run_schedule,
    set_threads,
)


def launcher_overrides(args, data: Path, run_dir: Path) -> list[str]:
    """The launcher's config overrides for one run: the study's settings, then (effssl)
    :data:`.plans.EFFSSL_BASE` and ``--effssl-overrides``, then the variant's, which win."""
    train_dir, fraction, _ = study_data(args, data)
    overrides = [
        f"machine={args.machine}",
        "dataset=custom_lowres",
        # solo-learn's PIL pipeline, named, so that every protocol's arms stay the ones that
        # ran before data.pipeline's default changed (protocol 04's variants name their own)
        "data.pipeline=pil",
        f"data.train_path={hydra_path(train_dir)}",
        "data.val_path=null",
        f"data.num_workers={args.workers}",
        f"data.fraction={fraction}",
        f"backbone.kwargs.model_name={args.model}",
        f"optimizer.batch_size={args.batch}",
        f"max_epochs={args.epochs}",
        "knn_eval.enabled=false",
        f"checkpoint.dir={hydra_path(run_dir / 'ckpt')}",
        "checkpoint.frequency=1",
        "auto_resume.enabled=true",
        "auto_resume.max_hours=1000000",  # a study continues across sessions days apart
        f"seed={args.seed}",
    ]
    if args.method == "effssl":
        overrides += [
            f"method_kwargs.num_negatives={args.negatives}",
            *EFFSSL_BASE,
            *args.effssl_overrides,
        ]
    return overrides + variant_overrides(args.variant)  # last: Hydra keeps a key's last value


def mark_diverged(trainer, run_dir: Path, why: str) -> None:
    """Records the divergence (``diverged.txt``: the run is over, with no score) and stops."""
    (run_dir / DIVERGED).write_text(f"{why} (epoch {trainer.current_epoch + 1})\n")
    print(f"[{run_dir.name}] diverged: {why}", flush=True)
    trainer.should_stop = True


def evaluate_epoch(trainer, module, run_dir: Path, sets, train_s: float) -> bool:
    """The kNN after the epoch just completed, into ``evals.csv``; False when non-finite
    features mark the run as diverged."""
    epoch = trainer.current_epoch + 1
    top1, top5 = knn_eval(module.backbone, sets)
    if not math.isfinite(top1):
        mark_diverged(trainer, run_dir, "non-finite features")
        return False
    EvalLog(run_dir).add(
        epoch=epoch,
        train_s=round(train_s, 2),
        steps=trainer.global_step,
        knn_top1=round(top1, 3),
        knn_top5=round(top5, 3),
    )
    print(f"[{run_dir.name}] epoch {epoch}: kNN top-1 {top1:.2f}", flush=True)
    return True


def study_callback(args, run_dir: Path, sets):
    """A Lightning callback: wall-clock per epoch (evaluation excluded), kNN at the evaluation
    epochs, stop after a checkpoint when ``PAUSE`` appears or at ``--stop-after``, or at a
    non-finite loss or kNN."""
    import torch
    from lightning.pytorch.callbacks import Callback

    log = EvalLog(run_dir)
    eval_epochs = set(args.eval_epochs)

    class Study(Callback):
        def on_train_start(self, trainer, module) -> None:  # before the module's calibration
            self.t0 = time.perf_counter()
            self.base = log.train_seconds_at(trainer.current_epoch)  # epochs already done

        def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx) -> None:
            loss = outputs.get("loss") if isinstance(outputs, dict) else outputs
            if loss is not None and not bool(torch.isfinite(loss.detach()).all()):
                why = f"non-finite loss at global step {trainer.global_step}"
                mark_diverged(trainer, run_dir, why)

        def on_train_epoch_end(self, trainer, module) -> None:
            self.base += time.perf_counter() - self.t0
            epoch = trainer.current_epoch + 1  # epochs completed
            log.add_time(epoch, self.base)
            if epoch in eval_epochs and not (run_dir / DIVERGED).exists():
                if not evaluate_epoch(trainer, module, run_dir, sets, self.base):
                    return
            if paused(args.out) or epoch >= last_epoch(args):
                trainer.should_stop = True
            self.t0 = time.perf_counter()

    return Study()


def launcher_worker(args) -> None:
    """One run through this package's launcher (effssl or a solo-learn baseline)."""
    warnings.filterwarnings("ignore")
    from hydra import compose, initialize_config_module

    from effssl_plugin.main_pretrain import pretrain

    args.epochs, args.eval_epochs = run_schedule(args, args.variant)  # ep=<N>: its own
    threads = set_threads(args)
    data = ensure_data(args.data_dir)
    sets = eval_sets(*study_data(args, data))
    run_dir = args.out / "runs" / run_name(args.method, args.variant, args.seed)
    run_dir.mkdir(parents=True, exist_ok=True)
    record_start(run_dir, threads)
    overrides = launcher_overrides(args, data, run_dir)
    with initialize_config_module("effssl_plugin.configs", version_base="1.2"):
        cfg = compose(args.method, overrides=overrides)
    try:
        pretrain(cfg, extra_callbacks=[study_callback(args, run_dir, sets)])
    except Exception as error:  # effssl's own check stops at a non-finite loss
        if type(error).__name__ == "NonFiniteLossError":
            (run_dir / DIVERGED).write_text(f"{str(error).splitlines()[0]}\n")
        raise
