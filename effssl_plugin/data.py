"""Data wiring on top of solo-learn's pipeline: checked paths, clear image errors, and
validation transforms at the pretraining resolution for custom folders."""

from __future__ import annotations

import logging
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import omegaconf
import torch
from PIL import Image
from solo.data.classification_dataloader import prepare_data as prepare_classification_data
from solo.data.pretrain_dataloader import (
    FullTransformPipeline,
    NCropAugmentation,
    build_transform_pipeline,
    prepare_datasets,
)
from solo.utils.misc import omegaconf_select
from timm.data.constants import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD
from torch.utils.data import DataLoader, Dataset
from torchvision import transforms
from torchvision.datasets import ImageFolder
from tqdm.auto import tqdm

from effssl_plugin.errors import DataError

__all__ = [
    "FOLDER_DATASETS",
    "build_pretrain_dataset",
    "build_val_loader",
    "check_data_paths",
    "classification_transform",
    "read_rgb_image",
]

log = logging.getLogger(__name__)

#: datasets that solo-learn reads from an ImageFolder (the others download into the path)
FOLDER_DATASETS = ("custom", "imagenet", "imagenet100")


def read_rgb_image(path: str) -> Image.Image:
    """ImageFolder's loader, with an error that names the unreadable file."""
    try:
        with open(path, "rb") as f:
            return Image.open(f).convert("RGB")
    except Exception as err:  # PIL raises several types for broken files
        raise DataError(f"cannot read image file {path}: {err}") from None


def _image_is_readable(path: str) -> bool:
    try:
        read_rgb_image(path)
        return True
    except DataError:
        return False


def drop_unreadable_images(dataset: ImageFolder, num_threads: int = 8) -> list[str]:
    """Decodes every image once and removes the unreadable ones from ``dataset``."""
    paths = [p for p, _ in dataset.samples]
    with ThreadPoolExecutor(num_threads) as pool:
        ok = list(
            tqdm(
                pool.map(_image_is_readable, paths, chunksize=64),
                total=len(paths),
                desc="Checking images",
                dynamic_ncols=True,
            )
        )
    bad = [p for p, good in zip(paths, ok, strict=False) if not good]
    if bad:
        dataset.samples = [s for s, good in zip(dataset.samples, ok, strict=False) if good]
        dataset.imgs = dataset.samples
        dataset.targets = [t for _, t in dataset.samples]
        shown = ", ".join(bad[:10]) + (" ..." if len(bad) > 10 else "")
        log.warning("skipping %d unreadable image(s): %s", len(bad), shown)
    return bad


def _check_folder(key: str, path: Any) -> None:
    if path is None or str(path) == "":
        raise DataError(f"{key} is not set: point it to an image folder (one subfolder per class)")
    p = Path(str(path))
    if not p.exists():
        raise DataError(f"{key}={p} does not exist")
    if not p.is_dir() or not any(p.iterdir()):
        raise DataError(f"{key}={p} is empty or not a folder: expected one subfolder per class")


def check_data_paths(cfg: omegaconf.DictConfig, validation: bool = True) -> None:
    """Fails fast, naming the key, when a folder dataset's path is missing or empty.

    CIFAR and STL-10 paths are torchvision download roots and may not exist yet.
    """
    if omegaconf_select(cfg, "data.dataset", None) not in FOLDER_DATASETS:
        return
    val_path = omegaconf_select(cfg, "data.val_path", None)
    if omegaconf_select(cfg, "data.format", "image_folder") == "h5":
        for key, path in (("train_path", cfg.data.train_path), ("val_path", val_path)):
            if path is not None and (key == "train_path" or validation):
                if not Path(str(path)).is_file():
                    raise DataError(f"data.{key}={path} is not an existing h5 file")
        return
    _check_folder("data.train_path", omegaconf_select(cfg, "data.train_path", None))
    if validation and val_path is not None:
        _check_folder("data.val_path", val_path)


def build_pretrain_dataset(cfg: omegaconf.DictConfig) -> Dataset:
    """solo-learn's pretraining dataset (``(index, [views], target)`` items) with a checked
    path, an image loader that names broken files, and optional skipping of those files
    (``data.skip_corrupt_images``)."""
    check_data_paths(cfg, validation=False)
    pipelines = [
        NCropAugmentation(build_transform_pipeline(cfg.data.dataset, aug), aug.num_crops)
        for aug in cfg.augmentations
    ]
    transform = FullTransformPipeline(pipelines)
    if cfg.debug_augmentations:
        print("Transforms:")
        print(transform)
    try:
        dataset = prepare_datasets(
            cfg.data.dataset,
            transform,
            train_data_path=cfg.data.train_path,
            data_format=cfg.data.format,
            no_labels=cfg.data.no_labels,
            data_fraction=cfg.data.fraction,
        )
    except FileNotFoundError as err:
        raise DataError(f"data.train_path={cfg.data.train_path}: {err}") from None
    if isinstance(dataset, ImageFolder):
        dataset.loader = read_rgb_image
        if omegaconf_select(cfg, "data.skip_corrupt_images", False):
            drop_unreadable_images(dataset)
    if len(dataset) == 0:
        raise DataError(f"data.train_path={cfg.data.train_path} holds no images")
    return dataset


def classification_transform(
    crop_size: int,
    mean: Any = IMAGENET_DEFAULT_MEAN,
    std: Any = IMAGENET_DEFAULT_STD,
    crop_pct: float | None = None,
) -> Callable:
    """Evaluation transform at the pretraining resolution: resize the short side to
    ``crop_size / crop_pct``, center-crop ``crop_size``. ``crop_pct`` defaults to 1.0 for
    crops up to 96 px (CIFAR/STL-like images are used whole) and 0.875 above."""
    if crop_pct is None:
        crop_pct = 1.0 if crop_size <= 96 else 0.875
    return transforms.Compose(
        [
            transforms.Resize(int(round(crop_size / crop_pct))),
            transforms.CenterCrop(crop_size),
            transforms.ToTensor(),
            transforms.Normalize(mean=list(mean), std=list(std)),
        ]
    )


def custom_classification_transform(cfg: omegaconf.DictConfig) -> Callable:
    """:func:`classification_transform` from the first augmentation pipeline's crop size,
    mean and std (``data.val_crop_pct`` overrides the crop ratio)."""
    aug = cfg.augmentations[0]
    return classification_transform(
        int(aug.crop_size),
        omegaconf_select(aug, "mean", IMAGENET_DEFAULT_MEAN),
        omegaconf_select(aug, "std", IMAGENET_DEFAULT_STD),
        omegaconf_select(cfg, "data.val_crop_pct", None),
    )


def build_val_loader(cfg: omegaconf.DictConfig, batch_size: int) -> DataLoader | None:
    """The classification val loader (online linear / kNN), or ``None`` without val data.

    Known datasets use solo-learn's loaders; custom folders use
    :func:`custom_classification_transform` instead of solo-learn's 224 px ImageNet one.
    """
    if cfg.data.val_path is None or (cfg.data.dataset == "custom" and cfg.data.no_labels):
        return None
    fmt = "image_folder" if cfg.data.format == "dali" else cfg.data.format
    if cfg.data.dataset == "custom" and fmt == "image_folder":
        val_dataset = ImageFolder(
            str(cfg.data.val_path), custom_classification_transform(cfg), loader=read_rgb_image
        )
        return DataLoader(
            val_dataset,
            batch_size=batch_size,
            shuffle=False,
            num_workers=cfg.data.num_workers,
            pin_memory=torch.cuda.is_available(),
            drop_last=False,
        )
    _, val_loader = prepare_classification_data(
        cfg.data.dataset,
        train_data_path=cfg.data.train_path,
        val_data_path=cfg.data.val_path,
        data_format=fmt,
        batch_size=batch_size,
        num_workers=cfg.data.num_workers,
    )
    if isinstance(val_loader.dataset, ImageFolder):
        val_loader.dataset.loader = read_rgb_image
    return val_loader
