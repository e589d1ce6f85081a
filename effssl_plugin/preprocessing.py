"""A pretrained encoder's evaluation preprocessing, defined once.

Resize the short side to ``crop / crop_pct`` (bilinear), center-crop ``crop`` (the first
augmentation pipeline's ``crop_size``), normalise with the pretraining's mean and std.
``crop_pct`` is ``data.val_crop_pct``, else 1.0 up to 96 px (CIFAR/STL-like images are used
whole) and 0.875 above. The mean and std are those solo-learn's pretraining pipeline used:
its own statistics for its known datasets, else the augmentation's ``mean``/``std``, else
ImageNet's.

:func:`eval_data_config` states it in timm's terms (an export's ``pretrained_cfg``);
:func:`eval_transform` is the torchvision transform the evaluation tools and the online
validation apply to a custom folder.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from omegaconf import DictConfig, OmegaConf
from timm.data.constants import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD
from torchvision import transforms

__all__ = [
    "classification_transform",
    "default_crop_pct",
    "eval_data_config",
    "eval_transform",
    "pretrain_mean_std",
]

#: every augmentation of solo-learn's pipeline off: what is left is its ToTensor + Normalize
_NO_AUGMENTATION = {
    "rrc": {"enabled": False},
    **{
        name: {"prob": 0.0}
        for name in (
            "color_jitter",
            "grayscale",
            "gaussian_blur",
            "solarization",
            "equalization",
            "horizontal_flip",
        )
    },
}


def default_crop_pct(crop_size: int) -> float:
    """The evaluation crop ratio without ``data.val_crop_pct``: 1.0 up to 96 px, else 0.875."""
    return 1.0 if crop_size <= 96 else 0.875


def pretrain_mean_std(dataset: str, aug: Any) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """The normalisation of solo-learn's pretraining pipeline for ``dataset`` and the
    augmentation pipeline ``aug`` (its ``mean``/``std``, used for datasets solo-learn has no
    statistics of). solo-learn keeps its statistics in a local of
    ``solo.data.pretrain_dataloader.build_transform_pipeline``: this builds that pipeline with
    every augmentation off and reads its ``Normalize``."""
    from effssl_plugin.solo_compat import quiet_imports

    with quiet_imports():
        from solo.data.pretrain_dataloader import build_transform_pipeline

    stats = {
        key: list(value)
        for key in ("mean", "std")
        if (value := OmegaConf.select(aug, key, default=None)) is not None
    }
    pipeline = build_transform_pipeline(
        str(dataset), OmegaConf.create({"crop_size": 1, **stats, **_NO_AUGMENTATION})
    )
    normalize = pipeline.transforms[-1]
    assert isinstance(normalize, transforms.Normalize), pipeline
    return tuple(float(v) for v in normalize.mean), tuple(float(v) for v in normalize.std)


def eval_data_config(cfg: DictConfig) -> dict[str, Any]:
    """The run's evaluation preprocessing as timm's data config (``input_size``,
    ``interpolation``, ``crop_pct``, ``crop_mode``, ``mean``, ``std``)."""
    aug = cfg.augmentations[0]
    crop = int(aug.crop_size)
    mean, std = pretrain_mean_std(cfg.data.dataset, aug)
    crop_pct = OmegaConf.select(cfg, "data.val_crop_pct", default=None)
    return {
        "input_size": (3, crop, crop),
        "interpolation": "bilinear",
        "crop_pct": float(default_crop_pct(crop) if crop_pct is None else crop_pct),
        "crop_mode": "center",
        "mean": mean,
        "std": std,
    }


def classification_transform(
    crop_size: int,
    mean: Sequence[float] = IMAGENET_DEFAULT_MEAN,
    std: Sequence[float] = IMAGENET_DEFAULT_STD,
    crop_pct: float | None = None,
) -> transforms.Compose:
    """Resize the short side to ``crop_size / crop_pct`` (bilinear), center-crop
    ``crop_size``, normalise; ``crop_pct`` defaults to :func:`default_crop_pct`."""
    if crop_pct is None:
        crop_pct = default_crop_pct(crop_size)
    return transforms.Compose(
        [
            transforms.Resize(int(round(crop_size / crop_pct))),
            transforms.CenterCrop(crop_size),
            transforms.ToTensor(),
            transforms.Normalize(mean=list(mean), std=list(std)),
        ]
    )


def eval_transform(cfg: DictConfig) -> transforms.Compose:
    """:func:`classification_transform` of :func:`eval_data_config`: the transform that an
    export's ``pretrained_cfg`` describes."""
    config = eval_data_config(cfg)
    crop = config["input_size"][-1]
    return classification_transform(crop, config["mean"], config["std"], config["crop_pct"])
