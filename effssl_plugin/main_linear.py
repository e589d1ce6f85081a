"""``effssl-linear``: linear probe of a pretrained checkpoint with solo-learn's LinearModel.

The backbone, data and augmentations default to the pretraining run's (its ``args.json``);
the probe trains and evaluates at the pretraining resolution.

    effssl-linear pretrained_feature_extractor=trained_models/effssl/<run id>/ [key=value ...]
"""

from __future__ import annotations

from omegaconf import DictConfig, OmegaConf

from effssl_plugin.cli import hydra_entry_point, new_run_id, trainer_from_cfg
from effssl_plugin.errors import EffSSLError
from effssl_plugin.run_layout import LOGS_DIR, run_directory

__all__ = ["main", "linear_probe"]


def merge_with_pretrain_cfg(cfg: DictConfig, pre: DictConfig) -> DictConfig:
    """The pretraining run's backbone, data and augmentations, overridden by every non-null
    value of the linear config."""
    base = OmegaConf.create(
        {
            "backbone": pre.backbone,
            "pretrain_method": pre.method,
            "data": pre.data,
            "augmentations": pre.augmentations,
        }
    )
    base.data.pop("num_classes", None)
    user = OmegaConf.to_container(cfg)

    def drop_nulls(node):
        if isinstance(node, dict):
            return {k: drop_nulls(v) for k, v in node.items() if v is not None}
        return node

    return OmegaConf.merge(base, drop_nulls(user))


def linear_probe(cfg: DictConfig) -> dict[str, float]:
    """Trains a linear classifier on frozen features; returns the final val metrics."""
    import torch
    from lightning.pytorch import seed_everything
    from lightning.pytorch.callbacks import LearningRateMonitor
    from lightning.pytorch.loggers import CSVLogger
    from solo.args.linear import parse_cfg as solo_parse_linear_cfg
    from solo.data.classification_dataloader import prepare_dataloaders
    from solo.methods.linear import LinearModel
    from solo.utils.misc import make_contiguous

    from effssl_plugin.checkpointing import AtomicCheckpointer
    from effssl_plugin.config import parse_with_real_devices, resolve_auto_machine
    from effssl_plugin.data import check_data_paths
    from effssl_plugin.evaluation import eval_datasets, eval_transforms, load_pretrained_backbone
    from effssl_plugin.solo_compat import register

    register()
    OmegaConf.set_struct(cfg, False)
    backbone, pre_cfg, ckpt = load_pretrained_backbone(cfg.pretrained_feature_extractor)
    cfg = merge_with_pretrain_cfg(cfg, pre_cfg)
    cfg.pretrained_feature_extractor = str(ckpt)
    if cfg.data.val_path is None:
        raise EffSSLError("data.val_path is not set (the pretraining run had none): set it")
    check_data_paths(cfg)
    cfg = resolve_auto_machine(parse_with_real_devices(cfg, solo_parse_linear_cfg))
    seed_everything(cfg.seed, workers=True)

    model = LinearModel(backbone, cfg=cfg, loss_func=torch.nn.CrossEntropyLoss())
    make_contiguous(model)
    if not cfg.performance.disable_channel_last:
        model = model.to(memory_format=torch.channels_last)

    train_set, val_set = eval_datasets(cfg, *eval_transforms(cfg), cfg.data.fraction)
    train_loader, val_loader = prepare_dataloaders(
        train_set, val_set, batch_size=cfg.optimizer.batch_size, num_workers=cfg.data.num_workers
    )

    run_dir = run_directory(cfg.checkpoint.dir, "linear", new_run_id())
    callbacks: list = [LearningRateMonitor(logging_interval="epoch")]
    if cfg.checkpoint.enabled:
        callbacks.append(AtomicCheckpointer.from_cfg(cfg, run_dir))
    trainer = trainer_from_cfg(cfg, CSVLogger(save_dir=str(run_dir), name=LOGS_DIR), callbacks)
    print(f"Linear probe of {ckpt}; run directory: {run_dir}")
    trainer.fit(model, train_loader, val_loader)
    metrics = {k: float(v) for k, v in trainer.callback_metrics.items() if k.startswith("val_")}
    print("Final: " + ", ".join(f"{k}={v:.4f}" for k, v in sorted(metrics.items())))
    return metrics


#: Console entry point (``effssl-linear``)
main = hydra_entry_point(linear_probe, "linear", "effssl-linear")

if __name__ == "__main__":
    main()
