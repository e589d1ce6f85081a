"""What the offline evaluation tools share: the trained backbone of a run directory,
checkpoint or exported encoder, evaluation transforms, and feature extraction. The run's
config and backbone builder are :mod:`effssl_plugin.pretrained`'s, the preprocessing
:mod:`effssl_plugin.preprocessing`'s (both shared with :mod:`effssl_plugin.export`)."""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path

import omegaconf
import torch
import torch.nn as nn
from solo.data.classification_dataloader import prepare_datasets, prepare_transforms
from torch.utils.data import DataLoader, Dataset
from torchvision import transforms
from tqdm.auto import tqdm

from effssl_plugin.checkpointing import resolve_checkpoint
from effssl_plugin.data import read_rgb_image
from effssl_plugin.errors import ConfigError
from effssl_plugin.export import create_encoder, encoder_run_config
from effssl_plugin.export import is_encoder_folder as is_export
from effssl_plugin.preprocessing import eval_transform
from effssl_plugin.pretrained import backbone_weights, build_backbone, load_pretrain_cfg
from effssl_plugin.run_layout import ENCODER_DIR

__all__ = [
    "load_pretrain_cfg",
    "build_backbone",
    "load_backbone_weights",
    "eval_transforms",
    "eval_datasets",
    "extract_features",
    "load_pretrained_backbone",
]

log = logging.getLogger(__name__)


def load_backbone_weights(backbone: nn.Module, ckpt: Path) -> None:
    """solo-learn's ``main_linear.py`` loading: keep ``backbone.*`` keys, strip the prefix,
    load; fails if any backbone weight is missing (``torch.load(weights_only=True)``)."""
    state = backbone_weights(torch.load(ckpt, map_location="cpu", weights_only=True)["state_dict"])
    result = backbone.load_state_dict(state, strict=False)
    if result.missing_keys:
        raise ConfigError(f"{ckpt} lacks backbone weights: {result.missing_keys[:5]} ...")
    log.info("loaded %d backbone tensors from %s", len(state), ckpt)


def load_pretrained_backbone(path: str | Path) -> tuple[nn.Module, omegaconf.DictConfig, Path]:
    """(backbone with its trained weights, pretraining config, the file or folder used) from a
    run directory (newest checkpoint; its ``encoder/`` export if it has no checkpoint), a
    ``.ckpt``, or an exported encoder folder (``effssl-export``, ``<run dir>/encoder``)."""
    p = Path(path)
    if p.is_dir() and not is_export(p) and not any(p.glob("*.ckpt")) and is_export(p / ENCODER_DIR):
        p = p / ENCODER_DIR
    if is_export(p):
        log.info("loading the exported encoder in %s", p)
        return create_encoder(p), encoder_run_config(p), p
    ckpt = resolve_checkpoint(p)
    cfg = load_pretrain_cfg(ckpt)
    backbone = build_backbone(cfg.backbone, cfg.data.dataset, cfg.method)
    load_backbone_weights(backbone, ckpt)
    return backbone, cfg, ckpt


def eval_transforms(cfg: omegaconf.DictConfig) -> tuple[Callable, Callable]:
    """(train, val) transforms for linear probing and kNN at the pretraining resolution.

    Known datasets use solo-learn's; custom folders use the pretraining crop size and
    statistics (solo-learn's custom transforms are 224 px ImageNet ones).
    """
    if cfg.data.dataset != "custom":
        return prepare_transforms(cfg.data.dataset)
    val = eval_transform(cfg)
    aug = cfg.augmentations[0]
    train = transforms.Compose(
        [
            transforms.RandomResizedCrop(int(aug.crop_size), scale=(0.08, 1.0)),
            transforms.RandomHorizontalFlip(),
            *val.transforms[-2:],  # ToTensor, Normalize
        ]
    )
    return train, val


def eval_datasets(
    cfg: omegaconf.DictConfig, t_train: Callable, t_val: Callable, data_fraction: float = -1.0
) -> tuple[Dataset, Dataset]:
    """solo-learn's labelled datasets of ``data.train_path`` and ``data.val_path`` (a DALI run's
    folders read as image folders), images read by :func:`~effssl_plugin.data.read_rgb_image`
    (an unreadable file is named in a one-line error)."""
    train_set, val_set = prepare_datasets(
        cfg.data.dataset,
        t_train,
        t_val,
        train_data_path=cfg.data.train_path,
        val_data_path=cfg.data.val_path,
        data_format="image_folder" if cfg.data.format == "dali" else cfg.data.format,
        data_fraction=data_fraction,
    )
    for dataset in (train_set, val_set):
        if hasattr(dataset, "loader"):
            dataset.loader = read_rgb_image
    return train_set, val_set


@torch.no_grad()
def extract_features(
    model: nn.Module, loader: DataLoader, device: torch.device, desc: str = "features"
) -> tuple[torch.Tensor, torch.Tensor]:
    """Backbone features and labels of every sample in ``loader`` (eval mode)."""
    model.eval().to(device)
    feats, labels = [], []
    for x, y in tqdm(loader, desc=desc, dynamic_ncols=True):
        feats.append(model(x.to(device, non_blocking=True)).float().cpu())
        labels.append(y)
    return torch.cat(feats), torch.cat(labels)
