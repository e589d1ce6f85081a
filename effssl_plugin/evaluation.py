"""What the offline evaluation tools share: the pretraining config next to a checkpoint,
the frozen backbone, evaluation transforms, and feature extraction."""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from pathlib import Path

import omegaconf
import torch
import torch.nn as nn
from omegaconf import OmegaConf
from solo.data.classification_dataloader import prepare_transforms
from solo.utils.misc import omegaconf_select
from torch.utils.data import DataLoader
from torchvision import transforms
from tqdm.auto import tqdm

from effssl_plugin.checkpointing import resolve_checkpoint
from effssl_plugin.data import custom_classification_transform
from effssl_plugin.errors import ConfigError

__all__ = [
    "load_pretrain_cfg",
    "build_backbone",
    "load_backbone_weights",
    "eval_transforms",
    "extract_features",
    "load_pretrained_backbone",
]

log = logging.getLogger(__name__)


def load_pretrain_cfg(ckpt: Path) -> omegaconf.DictConfig:
    """The ``args.json`` that the pretraining run wrote next to its checkpoints."""
    args = ckpt.parent / "args.json"
    if not args.is_file():
        raise ConfigError(f"{args} not found: the pretraining config is needed next to {ckpt}")
    with open(args) as f:
        return OmegaConf.create(json.load(f))


def build_backbone(
    backbone_cfg: omegaconf.DictConfig, dataset: str, method: str | None
) -> nn.Module:
    """The backbone as solo-learn builds it (including its CIFAR stem for ``resnet*``)."""
    from solo.methods.base import BaseMethod

    from effssl_plugin import register

    register()
    name = backbone_cfg.name
    if name not in BaseMethod._BACKBONES:
        raise ConfigError(f"backbone.name={name!r} is not a solo-learn backbone")
    kwargs = OmegaConf.to_container(omegaconf_select(backbone_cfg, "kwargs", {}) or {}) or {}
    backbone = BaseMethod._BACKBONES[name](method, **kwargs)
    if name.startswith("resnet"):  # solo-learn's torchvision ResNet handling, as in main_linear
        backbone.fc = nn.Identity()
        if dataset in ("cifar10", "cifar100"):
            backbone.conv1 = nn.Conv2d(3, 64, kernel_size=3, stride=1, padding=2, bias=False)
            backbone.maxpool = nn.Identity()
    return backbone


def load_backbone_weights(backbone: nn.Module, ckpt: Path) -> None:
    """solo-learn's ``main_linear.py`` loading: keep ``backbone.*`` keys, strip the prefix,
    load; fails if any backbone weight is missing (``torch.load(weights_only=True)``)."""
    state = torch.load(ckpt, map_location="cpu", weights_only=True)["state_dict"]
    state = {
        k.replace("backbone.", "", 1): v for k, v in state.items() if k.startswith("backbone.")
    }
    result = backbone.load_state_dict(state, strict=False)
    if result.missing_keys:
        raise ConfigError(f"{ckpt} lacks backbone weights: {result.missing_keys[:5]} ...")
    log.info("loaded %d backbone tensors from %s", len(state), ckpt)


def load_pretrained_backbone(path: str | Path) -> tuple[nn.Module, omegaconf.DictConfig, Path]:
    """(backbone with its trained weights, pretraining config, the file or folder used) from a
    run directory (newest checkpoint; its ``encoder/`` export if it has no checkpoint), a
    ``.ckpt``, or an exported encoder folder (``effssl-export``, ``<run dir>/encoder``)."""
    from effssl_plugin.export import ENCODER_DIR, create_encoder, encoder_run_config
    from effssl_plugin.export import is_encoder_folder as is_export

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
    val = custom_classification_transform(cfg)
    aug = cfg.augmentations[0]
    train = transforms.Compose(
        [
            transforms.RandomResizedCrop(int(aug.crop_size), scale=(0.08, 1.0)),
            transforms.RandomHorizontalFlip(),
            *val.transforms[-2:],  # ToTensor, Normalize
        ]
    )
    return train, val


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
