"""``effssl-pretrain``: solo-learn's pretraining flow for EffSSL and any solo-learn method.

Built from solo-learn's parts (``parse_cfg``, transform pipelines, ``NCropAugmentation``,
``prepare_datasets`` / ``prepare_dataloader``, the classification val loader, Checkpointer,
AutoResumer, AutoUMAP, WandbLogger, the DALI data module) with these differences: one crop
is allowed, the learning-rate scaling uses the real number of processes, custom folders are
validated at the pretraining resolution, checkpoints are atomic, and bad input stops with
one clear line before anything is written.

    python main_pretrain.py --config-name effssl [key=value ...]
    python -m effssl_plugin.main_pretrain --config-name effssl [key=value ...]
    effssl-pretrain --config-name effssl [key=value ...]
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import hydra
from omegaconf import DictConfig, OmegaConf

from effssl_plugin.launch import CONFIG_PATH, main_with_errors, new_run_id, trainer_from_cfg

__all__ = ["main", "pretrain"]

RUN_ID_ENV = "EFFSSL_RUN_ID"  # shared with the DDP worker processes Lightning starts


def pretrain(cfg: DictConfig, extra_callbacks: list | None = None) -> Path:
    """Runs pretraining for ``cfg`` (plus any ``extra_callbacks``); returns the run directory."""
    import torch
    from lightning.pytorch import seed_everything
    from solo.methods import METHODS
    from solo.utils.misc import make_contiguous

    from effssl_plugin import register
    from effssl_plugin.config import parse_pretrain_cfg
    from effssl_plugin.errors import ConfigError, suggest
    from effssl_plugin.summary import RunSummary, format_summary

    register()
    cfg = parse_pretrain_cfg(cfg)
    if cfg.method not in METHODS:
        raise ConfigError(f"method={cfg.method!r} is unknown.{suggest(cfg.method, METHODS)}")
    seed_everything(cfg.seed, workers=True)
    data = _pretrain_data(cfg)
    ckpt_path, run_id = _resume_target(cfg)
    run_dir = Path(cfg.checkpoint.dir) / cfg.method / run_id
    if ckpt_path is not None and _report_if_finished(cfg, ckpt_path, run_dir):
        return run_dir  # nothing to train: no log version, nothing written

    model = METHODS[cfg.method](cfg)
    make_contiguous(model)
    if not cfg.performance.disable_channel_last:
        model = model.to(memory_format=torch.channels_last)
    if data.calibration_dataset is not None:
        model.calibration_dataset = data.calibration_dataset

    logger = _logger(cfg, run_dir, model)
    summary = RunSummary()
    callbacks = _callbacks(cfg, run_dir) + list(extra_callbacks or []) + [summary]
    trainer = trainer_from_cfg(cfg, logger, callbacks)
    print(f"Run directory: {run_dir}")
    os.environ[RUN_ID_ENV] = run_id  # inherited by the DDP workers Lightning starts
    try:
        if data.datamodule is not None:
            trainer.fit(model, datamodule=data.datamodule, ckpt_path=ckpt_path)
        else:
            trainer.fit(model, data.train_loader, data.val_loader, ckpt_path=ckpt_path)
    finally:
        os.environ.pop(RUN_ID_ENV, None)
    if trainer.is_global_zero:
        state, seconds = summary.state_dict(), summary.seconds()
        print(format_summary(run_dir, trainer.current_epoch, cfg.max_epochs, state, seconds))
    return run_dir


@dataclass
class PretrainData:
    train_loader: Any = None
    val_loader: Any = None
    datamodule: Any = None  # DALI
    calibration_dataset: Any = None
    num_samples: int = 0


def _pretrain_data(cfg: DictConfig) -> PretrainData:
    """Training data (solo-learn's pipeline or DALI), val loader, and the bank size."""
    from solo.data.pretrain_dataloader import prepare_dataloader
    from solo.utils.misc import omegaconf_select

    from effssl_plugin.config import check_global_batch
    from effssl_plugin.data import build_pretrain_dataset, build_val_loader
    from effssl_plugin.errors import ConfigError

    data = PretrainData()
    if cfg.data.format == "dali":
        data.datamodule, data.calibration_dataset, data.num_samples = _dali_datamodule(cfg)
    else:
        train_dataset = build_pretrain_dataset(cfg)
        data.num_samples = len(train_dataset)
        data.train_loader = prepare_dataloader(
            train_dataset, batch_size=cfg.optimizer.batch_size, num_workers=cfg.data.num_workers
        )
    if cfg.method == "effssl":
        given = omegaconf_select(cfg, "method_kwargs.num_samples", None)
        if given is not None and given != data.num_samples:
            raise ConfigError(
                f"method_kwargs.num_samples={given} but the training set has "
                f"{data.num_samples} images: leave it unset so it is derived from the data"
            )
        cfg.method_kwargs.num_samples = data.num_samples
    check_global_batch(cfg, data.num_samples)
    data.val_loader = build_val_loader(cfg, batch_size=cfg.optimizer.batch_size)
    if data.datamodule is not None:
        data.datamodule.val_dataloader = lambda: data.val_loader
    return data


def _resume_target(cfg: DictConfig) -> tuple[str | None, str]:
    """(checkpoint to resume or None, run id): explicit ``resume_from_checkpoint``, else
    the newest matching run when ``auto_resume`` is on, else a new run id."""
    from effssl_plugin.checkpointing import NewestCheckpointResumer
    from effssl_plugin.errors import ConfigError
    from effssl_plugin.evaluation import resolve_checkpoint

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
        method_dir = Path(cfg.checkpoint.dir) / cfg.method
        resumer = NewestCheckpointResumer(method_dir, max_hours=cfg.auto_resume.max_hours)
        ckpt_path, run_id = resumer.find_checkpoint(cfg)
        if ckpt_path is not None:
            print(f"Resuming from previous checkpoint that matches specifications: '{ckpt_path}'")
    if ckpt_path is not None:
        _check_resume_compatible(ckpt_path, cfg)
    if run_id is None and os.environ.get("LOCAL_RANK", "0") != "0":
        run_id = os.environ.get(RUN_ID_ENV)  # a DDP worker: use rank 0's directory
    return ckpt_path, run_id or new_run_id()


def _report_if_finished(cfg: DictConfig, ckpt_path: str, run_dir: Path) -> bool:
    """True, after saying so (with the run's summary and the command that continues it),
    when the checkpoint to resume has reached ``max_epochs`` or ``max_steps``: Lightning
    would only run a sanity check."""
    import torch
    from lightning.pytorch.utilities import rank_zero_only
    from solo.utils.misc import omegaconf_select

    from effssl_plugin.launch import relaunch_command
    from effssl_plugin.summary import RunSummary, finished_message, format_summary

    state = torch.load(ckpt_path, map_location="cpu", mmap=True, weights_only=True)
    epochs, steps = int(state.get("epoch", -1)) + 1, int(state.get("global_step", 0))
    max_steps = int(omegaconf_select(cfg, "max_steps", -1) or -1)
    if 0 < cfg.max_epochs <= epochs:
        reached, key, limit = f"epoch {epochs}", "max_epochs", int(cfg.max_epochs)
    elif 0 < max_steps <= steps:
        reached, key, limit = f"step {steps}", "max_steps", max_steps
    else:
        return False
    if rank_zero_only.rank == 0:
        command = relaunch_command(drop=(key, "resume_from_checkpoint"))
        # effssl without its bank (checkpoint.bank=none_at_end) cannot be continued
        continuable = cfg.method != "effssl" or "bank.weight" in state.get("state_dict", {})
        print(finished_message(run_dir, reached, key, limit, command, continuable))
        summary = state.get("callbacks", {}).get(RunSummary.__qualname__)
        print(format_summary(run_dir, epochs, cfg.max_epochs, summary))
    return True


def _callbacks(cfg: DictConfig, run_dir: Path) -> list:
    """Atomic checkpoints, AutoUMAP when enabled, learning-rate logging, encoder export."""
    from lightning.pytorch.callbacks import LearningRateMonitor
    from solo.utils.misc import omegaconf_select

    from effssl_plugin.checkpointing import AtomicCheckpointer
    from effssl_plugin.errors import ConfigError
    from effssl_plugin.export import EncoderExport

    callbacks: list = [LearningRateMonitor(logging_interval="step"), EncoderExport(cfg, run_dir)]
    if cfg.checkpoint.enabled:
        callbacks.append(AtomicCheckpointer.from_cfg(cfg, run_dir))
    if omegaconf_select(cfg, "auto_umap.enabled", False):
        try:
            from solo.utils.auto_umap import AutoUMAP
        except ImportError as err:
            raise ConfigError(f"auto_umap.enabled=true needs umap-learn: {err}") from None
        callbacks.append(
            AutoUMAP(
                cfg.name,
                logdir=os.path.join(cfg.auto_umap.dir, cfg.method),
                frequency=cfg.auto_umap.frequency,
            )
        )
    return callbacks


def _logger(cfg: DictConfig, run_dir: Path, model: Any) -> Any:
    """Weights & Biases when enabled (run id = directory name), else CSV logs with one
    ``logs/version_N`` per session that trains, numbered without gaps (a version folder
    left empty by an earlier attempt is reused), so a resumed run never overwrites earlier
    logs. Either way the resolved config is logged (CSV: ``hparams.yaml``)."""
    from lightning.pytorch.loggers import CSVLogger

    if not cfg.wandb.enabled:
        logger = CSVLogger(save_dir=str(run_dir), name="logs", version=_next_log_version(run_dir))
    else:
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
    logger.log_hyperparams(OmegaConf.to_container(cfg, resolve=True))
    return logger


def _next_log_version(run_dir: Path) -> int:
    """1 + the highest ``logs/version_N`` holding files (0 for none)."""
    used = [
        int(d.name.removeprefix("version_"))
        for d in (run_dir / "logs").glob("version_*")
        if d.name.removeprefix("version_").isdigit() and any(d.iterdir())
    ]
    return max(used, default=-1) + 1


def _check_resume_compatible(ckpt_path: str, cfg: DictConfig) -> None:
    """Refuses, before anything starts, a checkpoint made for another dataset: another
    number of classes (online classifier) or, for effssl, of images (bank rows)."""
    import torch

    from effssl_plugin.checkpointing import check_bank_present
    from effssl_plugin.errors import ConfigError
    from effssl_plugin.method import bank_size_mismatch_message

    try:
        state = torch.load(ckpt_path, map_location="cpu", mmap=True, weights_only=True)
    except Exception as err:
        raise ConfigError(f"cannot read checkpoint {ckpt_path}: {err}") from None
    check_bank_present(state, ckpt_path, cfg)  # none_at_end: the last checkpoint has no bank
    weights = state.get("state_dict", {})
    classifier = weights.get("classifier.weight")
    if classifier is not None and classifier.shape[0] != cfg.data.num_classes:
        raise ConfigError(
            f"the checkpoint {ckpt_path} was trained on {classifier.shape[0]} classes but "
            f"data.train_path has {cfg.data.num_classes}: resuming on a different dataset is "
            "refused (start a new run, e.g. with auto_resume.enabled=false)"
        )
    bank = weights.get("bank.weight")
    if cfg.method == "effssl" and bank is not None:
        kw = cfg.method_kwargs
        expected = (int(kw.num_samples), int(kw.proj_output_dim))
        if tuple(bank.shape) != expected and not kw.reinit_bank_on_resume:
            message = bank_size_mismatch_message(tuple(bank.shape), expected)
            raise ConfigError(f"{message} (checkpoint: {ckpt_path})")


def _dali_datamodule(cfg: DictConfig) -> tuple[Any, Any, int]:
    """solo-learn's DALI data module; effssl needs real sample indexes from it."""
    from solo.data.pretrain_dataloader import FullTransformPipeline, NCropAugmentation
    from solo.utils.misc import compute_dataset_size

    from effssl_plugin.data import build_pretrain_dataset
    from effssl_plugin.errors import ConfigError

    try:
        from solo.data.dali_dataloader import (
            PretrainDALIDataModule,
            build_transform_pipeline_dali,
        )
    except ImportError as err:
        raise ConfigError(f"data.format=dali needs NVIDIA DALI: {err}") from None
    is_effssl = cfg.method == "effssl"
    if is_effssl and not cfg.dali.encode_indexes_into_labels:
        cfg.dali.encode_indexes_into_labels = True  # the bank needs the true dataset index
    transform = FullTransformPipeline(
        [
            NCropAugmentation(
                build_transform_pipeline_dali(cfg.data.dataset, aug, dali_device=cfg.dali.device),
                aug.num_crops,
            )
            for aug in cfg.augmentations
        ]
    )
    datamodule = PretrainDALIDataModule(
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
    # DALI reads classes and files in sorted order, as torchvision's ImageFolder does, so
    # an ImageFolder over the same path serves the calibration pass with the same indexes
    calibration = build_pretrain_dataset(cfg) if is_effssl else None
    num_samples = compute_dataset_size(
        dataset=cfg.data.dataset,
        data_path=cfg.data.train_path,
        data_format="image_folder",
        no_labels=cfg.data.no_labels,
        data_fraction=cfg.data.fraction,
    )
    if calibration is not None:
        num_samples = len(calibration)
    return datamodule, calibration, num_samples


@hydra.main(version_base="1.2", config_path=CONFIG_PATH, config_name="effssl")
def _hydra_main(cfg: DictConfig) -> None:
    from effssl_plugin import import_solo_quietly

    import_solo_quietly()  # solo-learn's and timm's import warnings stay off the console
    main_with_errors(lambda: pretrain(cfg), "effssl-pretrain")


def main() -> None:
    """Console entry point (``effssl-pretrain``)."""
    _hydra_main()


if __name__ == "__main__":
    main()
