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

import inspect
import os
import random
import string
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import hydra
from omegaconf import DictConfig, OmegaConf

from effssl_plugin.errors import EffSSLError

__all__ = ["main", "pretrain", "main_with_errors", "hydra_entry_point"]

#: Hydra config source of the packaged configs (``configs/`` in the repository)
CONFIG_PATH = "pkg://effssl_plugin.configs"
RUN_ID_ENV = "EFFSSL_RUN_ID"  # rank 0's run directory name, for the DDP workers Lightning starts


def pretrain(cfg: DictConfig, extra_callbacks: list | None = None) -> Path:
    """Runs pretraining for ``cfg`` (plus any ``extra_callbacks``); returns the run directory."""
    import torch
    from lightning.pytorch import seed_everything
    from lightning.pytorch.callbacks import LearningRateMonitor
    from lightning.pytorch.loggers import CSVLogger
    from lightning.pytorch.utilities import rank_zero_only
    from solo.data.pretrain_dataloader import (
        FullTransformPipeline,
        NCropAugmentation,
        prepare_dataloader,
    )
    from solo.methods import METHODS
    from solo.utils.misc import compute_dataset_size, make_contiguous, omegaconf_select

    from effssl_plugin import register
    from effssl_plugin.checkpointing import (
        AtomicCheckpointer,
        NewestCheckpointResumer,
        check_resumable,
        resolve_checkpoint,
    )
    from effssl_plugin.checks import check_data_size, check_inputs
    from effssl_plugin.config import describe_inputs, parse_pretrain_cfg
    from effssl_plugin.data import build_pretrain_dataset, build_val_loader, check_dali_file_list
    from effssl_plugin.errors import ConfigError
    from effssl_plugin.export import EncoderExport
    from effssl_plugin.summary import (
        RunSummary,
        finished_message,
        format_summary,
        relaunch_command,
    )

    register()
    # the one check pass, before anything is built: every key, path, choice and (where known
    # without building it) the training-set size against the batch and bank
    check_inputs(cfg, describe_inputs(cfg))
    # solo-learn's parse_cfg, scaling the learning rate by the real process count (solo-learn:
    # len(devices), wrong for "auto", -1 or "0,1")
    cfg = parse_pretrain_cfg(cfg, check=False)
    seed_everything(cfg.seed, workers=True)

    # pretrain data before the model and val loader (solo-learn: after): EffSSL's bank has
    # one row per training image, and the batch must fit the data before anything is built
    calibration = None  # EffSSL's calibration pass reads it (default: the training dataset)
    if cfg.data.format == "dali":
        try:
            from solo.data.dali_dataloader import (
                PretrainDALIDataModule,
                build_transform_pipeline_dali,
            )
        except ImportError as err:  # checked by check_inputs; here if it broke since
            raise ConfigError(f"data.format=dali needs NVIDIA DALI: {err}") from None
        if cfg.method == "effssl":  # EffSSL's bank needs the true dataset index of each image
            cfg.dali.encode_indexes_into_labels = True
            # its calibration reads an ImageFolder of the same path, whose indexes must be
            # DALI's: refused before anything is built where the two file lists differ
            calibration = build_pretrain_dataset(cfg)
            check_dali_file_list(cfg, calibration)
        transform = FullTransformPipeline(
            [
                NCropAugmentation(
                    build_transform_pipeline_dali(
                        cfg.data.dataset, aug_cfg, dali_device=cfg.dali.device
                    ),
                    aug_cfg.num_crops,
                )
                for aug_cfg in cfg.augmentations
            ]
        )
        dali_datamodule = PretrainDALIDataModule(
            dataset=cfg.data.dataset,
            train_data_path=cfg.data.train_path,
            transforms=transform,
            num_large_crops=cfg.data.num_large_crops,
            num_small_crops=cfg.data.num_small_crops,
            num_workers=cfg.data.num_workers,
            batch_size=cfg.optimizer.batch_size,
            no_labels=cfg.data.no_labels,
            data_fraction=cfg.data.fraction,
            dali_device=cfg.dali.device,
            encode_indexes_into_labels=cfg.dali.encode_indexes_into_labels,
        )
        num_samples = (
            len(calibration)
            if calibration is not None
            else compute_dataset_size(
                dataset=cfg.data.dataset,
                data_path=cfg.data.train_path,
                data_format="image_folder",
                no_labels=cfg.data.no_labels,
                data_fraction=cfg.data.fraction,
            )
        )
    else:  # solo-learn's pipeline; paths checked, unreadable images named (or skipped)
        train_dataset = build_pretrain_dataset(cfg)
        num_samples = len(train_dataset)
        train_loader = prepare_dataloader(
            train_dataset, batch_size=cfg.optimizer.batch_size, num_workers=cfg.data.num_workers
        )
    # the size checks again with the built set's size (unknown before building, or fewer
    # images with data.skip_corrupt_images); EffSSL: the bank size is the training set's
    check_data_size(cfg, num_samples, int(cfg.world_size))
    if cfg.method == "effssl":
        cfg.method_kwargs.num_samples = num_samples

    # validation dataloader; custom folders at the pretraining resolution (solo-learn: 224 px)
    val_loader = build_val_loader(cfg, batch_size=cfg.optimizer.batch_size)
    if cfg.data.format == "dali" and val_loader is not None:  # else no val_dataloader at all:
        dali_datamodule.val_dataloader = lambda: val_loader  # Lightning refuses a None one

    # resume as solo-learn (resume_from_checkpoint, else AutoResumer), but also from a run
    # directory, always from a run's newest epoch, and into that run's own directory
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
    run_dir = Path(cfg.checkpoint.dir) / cfg.method / (run_id or new_run_id())
    if ckpt_path is not None:
        state = check_resumable(ckpt_path, cfg)  # another dataset: refused before any write
        # a finished run: say so and how to continue it (Lightning would run a sanity check)
        epochs, steps = int(state.get("epoch", -1)) + 1, int(state.get("global_step", 0))
        max_steps = int(omegaconf_select(cfg, "max_steps", -1) or -1)
        if 0 < cfg.max_epochs <= epochs:
            reached, key, limit = f"epoch {epochs}", "max_epochs", int(cfg.max_epochs)
        elif 0 < max_steps <= steps:
            reached, key, limit = f"step {steps}", "max_steps", max_steps
        else:
            key = None
        if key is not None:
            if rank_zero_only.rank == 0:
                command = relaunch_command(drop=(key, "resume_from_checkpoint"))
                # effssl without its bank (checkpoint.bank=none_at_end) cannot be continued
                weights = state.get("state_dict", {})
                can_continue = cfg.method != "effssl" or "bank.weight" in weights
                print(finished_message(run_dir, reached, key, limit, command, can_continue))
                summary = state.get("callbacks", {}).get(RunSummary.__qualname__)
                print(format_summary(run_dir, epochs, cfg.max_epochs, summary))
            return run_dir  # nothing to train: no log version, nothing written

    # the model after the data (its bank size) and the resume checks (solo-learn: first)
    model = METHODS[cfg.method](cfg)
    make_contiguous(model)
    if not cfg.performance.disable_channel_last:  # can provide up to ~20% speed up
        model = model.to(memory_format=torch.channels_last)
    if calibration is not None:
        model.calibration_dataset = calibration

    # callbacks: solo-learn's with atomic checkpoints in the run directory, learning-rate
    # logging with any logger, then the encoder export and the end-of-run summary
    callbacks: list = [LearningRateMonitor(logging_interval="step"), EncoderExport(cfg, run_dir)]
    if cfg.checkpoint.enabled:
        callbacks.append(AtomicCheckpointer.from_cfg(cfg, run_dir))
    if omegaconf_select(cfg, "auto_umap.enabled", False):
        try:
            from solo.utils.auto_umap import AutoUMAP
        except ImportError as err:
            raise ConfigError(f"auto_umap.enabled=true needs umap-learn: {err}") from None
        logdir = os.path.join(cfg.auto_umap.dir, cfg.method)
        callbacks.append(AutoUMAP(cfg.name, logdir=logdir, frequency=cfg.auto_umap.frequency))
    summary = RunSummary()
    callbacks += [*(extra_callbacks or []), summary]

    # wandb logging as solo-learn (the W&B run id is the directory name); without wandb, CSV
    # logs (solo-learn: none), one logs/version_N per session that trains, never overwritten.
    # Either way the resolved config is logged (CSV: hparams.yaml)
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
        logger = CSVLogger(save_dir=str(run_dir), name="logs", version=_next_log_version(run_dir))
    logger.log_hyperparams(OmegaConf.to_container(cfg, resolve=True))

    trainer = trainer_from_cfg(cfg, logger, callbacks)
    print(f"Run directory: {run_dir}")
    os.environ[RUN_ID_ENV] = run_dir.name  # inherited by the DDP workers Lightning starts
    try:
        if cfg.data.format == "dali":
            trainer.fit(model, ckpt_path=ckpt_path, datamodule=dali_datamodule)
        else:
            trainer.fit(model, train_loader, val_loader, ckpt_path=ckpt_path)
    finally:
        os.environ.pop(RUN_ID_ENV, None)
    if trainer.is_global_zero:  # ours: what the run did, where its files are
        state, seconds = summary.state_dict(), summary.seconds()
        print(format_summary(run_dir, trainer.current_epoch, cfg.max_epochs, state, seconds))
    return run_dir


def new_run_id() -> str:
    """A sortable, unique run directory name, e.g. ``20261128-124501-k3f9``."""
    suffix = "".join(random.SystemRandom().choices(string.ascii_lowercase + string.digits, k=4))
    return time.strftime("%Y%m%d-%H%M%S-") + suffix


def _next_log_version(run_dir: Path) -> int:
    """1 + the highest ``logs/version_N`` holding files (0 for none): an attempt that logged
    nothing leaves an empty folder, which is reused."""
    used = [
        int(d.name.removeprefix("version_"))
        for d in (run_dir / "logs").glob("version_*")
        if d.name.removeprefix("version_").isdigit() and any(d.iterdir())
    ]
    return max(used, default=-1) + 1


def trainer_from_cfg(cfg: DictConfig, logger: Any, callbacks: list) -> Any:
    """solo-learn's Trainer: every config key that is a ``Trainer`` argument, our logger and
    callbacks, ``strategy: ddp`` as ``DDPStrategy(find_unused_parameters=False)``."""
    from lightning.pytorch import Trainer
    from lightning.pytorch.strategies.ddp import DDPStrategy

    valid = inspect.signature(Trainer.__init__).parameters
    kwargs = {k: v for k, v in OmegaConf.to_container(cfg).items() if k in valid}
    strategy = cfg.get("strategy") or "auto"
    kwargs.update(
        logger=logger,
        callbacks=callbacks,
        enable_checkpointing=False,
        strategy=DDPStrategy(find_unused_parameters=False) if strategy == "ddp" else strategy,
    )
    return Trainer(**kwargs)


def main_with_errors(fn: Callable[[], object], prog: str) -> None:
    """Runs ``fn``; a user-facing error becomes one line on stderr and exit status 2. An
    error re-raised by a DataLoader worker shows its original message (the traceback's last
    line)."""
    try:
        fn()
    except EffSSLError as err:
        text = str(err).strip()
        if "Traceback" in text:
            text = text.splitlines()[-1].split(": ", 1)[-1]
        print(f"{prog}: error: {' '.join(text.split())}", file=sys.stderr)
        sys.exit(2)


def hydra_entry_point(
    run: Callable[[DictConfig], object], config_name: str, prog: str
) -> Callable[[], None]:
    """A console entry point: Hydra composes ``config_name`` with the command line, then
    ``run(cfg)`` runs under :func:`main_with_errors`."""

    @hydra.main(version_base="1.2", config_path=CONFIG_PATH, config_name=config_name)
    def _main(cfg: DictConfig) -> None:
        from effssl_plugin import import_solo_quietly

        import_solo_quietly()  # solo-learn's and timm's import warnings stay off the console
        main_with_errors(lambda: run(cfg), prog)

    return _main


#: Console entry point (``effssl-pretrain``)
main = hydra_entry_point(pretrain, "effssl", "effssl-pretrain")

if __name__ == "__main__":
    main()
