"""A finished pretraining run as the tools after it read it (``effssl-knn``, ``effssl-linear``,
``effssl-export``): the config it wrote beside its checkpoints (``args.json``), its backbone
rebuilt from that config, and the backbone's weights in a checkpoint's ``state_dict``."""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path

import torch
from omegaconf import DictConfig, OmegaConf
from torch import nn

from effssl_plugin.errors import ConfigError
from effssl_plugin.run_layout import ARGS_FILE

__all__ = ["backbone_weights", "build_backbone", "load_pretrain_cfg"]

#: prefix of the backbone's entries in a method's ``state_dict`` (solo-learn's ``self.backbone``)
BACKBONE_PREFIX = "backbone."


def load_pretrain_cfg(ckpt: Path) -> DictConfig:
    """The ``args.json`` that the pretraining run wrote next to its checkpoints."""
    args = ckpt.parent / ARGS_FILE
    if not args.is_file():
        raise ConfigError(f"{args} not found: the pretraining config is needed next to {ckpt}")
    with open(args) as f:
        return OmegaConf.create(json.load(f))


def build_backbone(backbone_cfg: DictConfig, dataset: str, method: str | None) -> nn.Module:
    """The run's backbone, untrained, as solo-learn built it: the factory
    ``backbone.name`` names in ``BaseMethod._BACKBONES`` (``timm``: this plugin's
    :func:`~effssl_plugin.backbones.timm_backbone`, never downloading timm's weights, which the
    run's replace) called with ``backbone.kwargs``, and for solo-learn's ``resnet*`` its
    torchvision handling (no ``fc``; the CIFAR stem on CIFAR), as in its ``main_linear.py``."""
    from effssl_plugin.solo_compat import register

    register()
    from solo.methods.base import BaseMethod

    name = backbone_cfg.name
    if name not in BaseMethod._BACKBONES:
        raise ConfigError(f"backbone.name={name!r} is not a solo-learn backbone")
    kwargs_cfg = OmegaConf.select(backbone_cfg, "kwargs", default=None)
    kwargs = {} if kwargs_cfg is None else OmegaConf.to_container(kwargs_cfg, resolve=True)
    assert isinstance(kwargs, dict)
    if name == "timm":
        kwargs["pretrained"] = False  # the weights come from the run, never from a download
    backbone = BaseMethod._BACKBONES[name](method, **kwargs)
    if name.startswith("resnet"):
        backbone.fc = nn.Identity()
        if dataset in ("cifar10", "cifar100"):
            backbone.conv1 = nn.Conv2d(3, 64, kernel_size=3, stride=1, padding=2, bias=False)
            backbone.maxpool = nn.Identity()
    return backbone


def backbone_weights(state_dict: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The backbone's entries of a method's ``state_dict``, without their ``backbone.`` prefix
    (solo-learn's ``main_linear.py`` selection)."""
    return {
        key.removeprefix(BACKBONE_PREFIX): value
        for key, value in state_dict.items()
        if key.startswith(BACKBONE_PREFIX)
    }
