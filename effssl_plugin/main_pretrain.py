"""``effssl-pretrain``: solo-learn's ``main_pretrain.py``, for EffSSL and any solo-learn method.

:func:`pretrain` runs solo-learn's blocks in solo-learn's order; a comment at each block says
where and why ours differs. Beyond EffSSL's own needs (the bank size from the training set,
DALI sample indexes, the calibration dataset), the differences are hardening: bad input
stops with one clear line before anything is written, the learning rate scales with the
real process count, checkpoints are atomic and a run resumes in its own directory.

    python main_pretrain.py --config-name effssl [key=value ...]
    effssl-pretrain --config-name effssl [key=value ...]
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

# the command-line plumbing lives in effssl_plugin.cli; these names stay importable from here
from effssl_plugin.cli import (
    CONFIG_PATH,
    RUN_ID_ENV,
    hydra_entry_point,
    main_with_errors,
    new_run_id,
    trainer_from_cfg,
)
from effssl_plugin.run_layout import LOGS_DIR, next_log_version

__all__ = [
    "CONFIG_PATH",
    "build_logger",
    "hydra_entry_point",
    "main",
    "main_with_errors",
    "new_run_id",
    "pretrain",
    "trainer_from_cfg",
]


def pretrain(cfg: DictConfig, extra_callbacks: list | None = None) -> Path:
    """Runs pretraining for ``cfg`` (plus any ``extra_callbacks``); returns the run directory."""
    import torch
    from lightning.pytorch import seed_everything
    from lightning.pytorch.callbacks import LearningRateMonitor
    from solo.methods import METHODS
    from solo.utils.misc import make_contiguous, omegaconf_select

    from effssl_plugin import register
    from effssl_plugin.checkpointing import AtomicCheckpointer, read_checkpoint, resolve_resume
    from effssl_plugin.checks import check_data_size, check_inputs, check_resume
    from effssl_plugin.config import describe_inputs, parse_pretrain_cfg
    from effssl_plugin.data import build_pretrain_data, build_val_loader
    from effssl_plugin.epoch_streams import EpochStreams
    from effssl_plugin.errors import ConfigError
    from effssl_plugin.export import EncoderExport
    from effssl_plugin.summary import RunSummary, report_if_finished
    from effssl_plugin.tensor_data import DeviceAugmentation

    register()
    # the one check pass, before anything is built: every key, path and choice, and (where
    # known without building it) the training-set size against the batch and bank
    check_inputs(cfg, describe_inputs(cfg))
    # solo-learn's parse_cfg, scaling the learning rate by the real process count (solo-learn:
    # len(devices), wrong for "auto", -1 or "0,1")
    cfg = parse_pretrain_cfg(cfg, check=False)
    seed_everything(cfg.seed, workers=True)

    # pretrain data before the model and val loader (solo-learn: after): EffSSL's bank has
    # one row per training image; the size checks again with the built set's size (unknown
    # before building, or smaller with data.skip_corrupt_images)
    data = build_pretrain_data(cfg)
    check_data_size(cfg, data.num_samples, int(cfg.world_size))
    if cfg.method == "effssl":
        cfg.method_kwargs.num_samples = data.num_samples

    # validation dataloader; custom folders at the pretraining resolution (solo-learn: 224 px)
    val_loader = build_val_loader(cfg, batch_size=cfg.optimizer.batch_size)

    # resume as solo-learn (resume_from_checkpoint, else AutoResumer), but also from a run
    # directory, always from a run's newest epoch, and into that run's own directory; a
    # checkpoint this run cannot continue is refused, a finished run says so and stops
    ckpt_path, run_dir = resolve_resume(cfg)
    if ckpt_path is not None:
        state, checkpoint = read_checkpoint(ckpt_path)
        check_resume(cfg, checkpoint, int(cfg.data.num_classes))
        if report_if_finished(cfg, run_dir, state):
            return run_dir  # nothing to train: no log version, nothing written

    # the model after the data (its bank size) and the resume checks (solo-learn: first)
    model = METHODS[cfg.method](cfg)
    make_contiguous(model)
    if not cfg.performance.disable_channel_last:  # can provide up to ~20% speed up
        model = model.to(memory_format=torch.channels_last)
    if data.calibration is not None:
        model.calibration_dataset = data.calibration
    if data.views is not None and cfg.method == "effssl":  # the calibration's training view
        model.calibration_views = data.views

    # then solo-learn's with atomic checkpoints in the run directory, learning-rate
    # logging with any logger, the batched augmentation (data.pipeline=tensor), then the
    # encoder export and the end-of-run summary
    # callbacks: every epoch's random streams seeded from (seed, epoch) first (exact resume),
    callbacks: list = [
        EpochStreams(cfg.seed, data.loader_generator),
        LearningRateMonitor(logging_interval="step"),
        EncoderExport(cfg, run_dir),
    ]
    if data.views is not None:  # data.pipeline=tensor: each batch augmented on the device
        callbacks.append(DeviceAugmentation(data.views, cfg.seed))
    if cfg.checkpoint.enabled:
        callbacks.append(AtomicCheckpointer.from_cfg(cfg, run_dir))
    if omegaconf_select(cfg, "auto_umap.enabled", False):
        try:
            from solo.utils.auto_umap import AutoUMAP
        except ImportError as err:
            raise ConfigError(f"auto_umap.enabled=true needs umap-learn: {err}") from None
        logdir = os.path.join(cfg.auto_umap.dir, cfg.method)
        callbacks.append(AutoUMAP(cfg.name, logdir=logdir, frequency=cfg.auto_umap.frequency))
    callbacks += [*(extra_callbacks or []), RunSummary(run_dir, cfg.max_epochs)]

    trainer = trainer_from_cfg(cfg, build_logger(cfg, run_dir, model), callbacks)
    print(f"Run directory: {run_dir}")
    os.environ[RUN_ID_ENV] = run_dir.name  # inherited by the DDP workers Lightning starts
    try:
        trainer.fit(model, ckpt_path=ckpt_path, **data.fit_kwargs(val_loader))
    finally:
        os.environ.pop(RUN_ID_ENV, None)
    return run_dir


def build_logger(cfg: DictConfig, run_dir: Path, model: Any) -> Any:
    """wandb logging as solo-learn (the W&B run id is the directory name); without wandb, CSV
    logs (solo-learn: none), one ``logs/version_N`` per session that trains, never
    overwritten. Either way the resolved config is logged (CSV: ``hparams.yaml``)."""
    from lightning.pytorch.loggers import CSVLogger

    if cfg.wandb.enabled:
        from lightning.pytorch.loggers.wandb import WandbLogger

        logger = WandbLogger(
            name=cfg.name,
            project=cfg.wandb.project,
            entity=cfg.wandb.entity,
            offline=cfg.wandb.offline,
            resume="allow",
            id=run_dir.name,
        )
        logger.watch(model, log="gradients", log_freq=100)
    else:
        version = next_log_version(run_dir)
        logger = CSVLogger(save_dir=str(run_dir), name=LOGS_DIR, version=version)
    logger.log_hyperparams(OmegaConf.to_container(cfg, resolve=True))
    return logger


#: Console entry point (``effssl-pretrain``)
main = hydra_entry_point(pretrain, "effssl", "effssl-pretrain")

if __name__ == "__main__":
    main()
