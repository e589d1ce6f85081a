"""solo-learn's datasets with checked paths, errors that name the file or key, and validation
transforms at the pretraining resolution for custom folders."""

from __future__ import annotations

import logging
import os
import shutil
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.error import URLError

import omegaconf
import torch
from solo.data.classification_dataloader import prepare_data as prepare_classification_data
from solo.data.pretrain_dataloader import (
    CustomDatasetWithoutLabels,
    FullTransformPipeline,
    NCropAugmentation,
    build_transform_pipeline,
    prepare_datasets,
)
from solo.utils.misc import compute_dataset_size, omegaconf_select
from torch.utils.data import DataLoader, Dataset
from torchvision.datasets import ImageFolder
from torchvision.datasets.folder import IMG_EXTENSIONS
from tqdm.auto import tqdm

from effssl_plugin import checks
from effssl_plugin.augment import BatchViews
from effssl_plugin.checks import FOLDER_DATASETS, FolderFacts, InputFacts
from effssl_plugin.cli import hydra_config_name
from effssl_plugin.epoch_streams import shuffled_loader
from effssl_plugin.errors import ConfigError, DataError
from effssl_plugin.preprocessing import eval_transform
from effssl_plugin.tensor_data import (
    batch_views_from_cfg,
    decode_dataset,
    decoded_loader,
    read_rgb_image,
)

__all__ = [
    "PretrainData",
    "build_pretrain_data",
    "build_pretrain_dataset",
    "build_val_loader",
    "check_dali_file_list",
    "check_data_paths",
    "count_train_images",
    "describe_data",
    "describe_folder",
    "dali_file_list",
    "read_rgb_image",
]

log = logging.getLogger(__name__)

#: datasets torchvision downloads into their path, and their names
DOWNLOADED_DATASETS = {"cifar10": "CIFAR-10", "cifar100": "CIFAR-100", "stl10": "STL-10"}
#: training-set sizes of the datasets torchvision downloads whole
TRAIN_SET_SIZES = {"cifar10": 50_000, "cifar100": 50_000}


def drop_unreadable_images(dataset: ImageFolder, num_threads: int = 8) -> list[str]:
    """Decodes every image once and removes the unreadable ones from ``dataset``."""

    def readable(path: str) -> bool:
        try:
            return read_rgb_image(path) is not None
        except DataError:
            return False

    paths = [p for p, _ in dataset.samples]
    with ThreadPoolExecutor(num_threads) as pool:
        results = pool.map(readable, paths, chunksize=64)
        ok = list(tqdm(results, total=len(paths), desc="Checking images", dynamic_ncols=True))
    bad = [p for p, good in zip(paths, ok, strict=True) if not good]
    if bad:
        dataset.samples = [s for s, good in zip(dataset.samples, ok, strict=True) if good]
        dataset.imgs, dataset.targets = dataset.samples, [t for _, t in dataset.samples]
        shown = ", ".join(bad[:10]) + (" ..." if len(bad) > 10 else "")
        log.warning("skipping %d unreadable image(s): %s", len(bad), shown)
    return bad


def class_folders(path: Any) -> list[str]:
    """The class names ImageFolder finds in ``path``: its subfolders, sorted."""
    return sorted(entry.name for entry in os.scandir(str(path)) if entry.is_dir())


class ImageFolderWithClasses(ImageFolder):
    """An ImageFolder that labels each class folder with its index in ``classes`` (the
    training folder's), so a val folder holding a subset of the classes keeps the labels
    the online classifier was trained with."""

    def __init__(self, root: str, classes: list[str], **kwargs: Any) -> None:
        self.all_classes = list(classes)
        super().__init__(root, **kwargs)

    def find_classes(self, directory: str) -> tuple[list[str], dict[str, int]]:
        present = set(class_folders(directory))
        index = {c: i for i, c in enumerate(self.all_classes) if c in present}
        return list(index), index


def describe_folder(path: Any) -> FolderFacts:
    """What the filesystem holds at ``path``, for :mod:`effssl_plugin.checks`."""
    if path is None or str(path) == "":
        return FolderFacts(path="")
    p = Path(str(path))
    is_dir = p.is_dir()
    return FolderFacts(
        path=str(path),
        exists=p.exists(),
        is_dir=is_dir,
        is_file=p.is_file(),
        has_entries=is_dir and any(p.iterdir()),
        class_names=tuple(class_folders(p)) if is_dir else (),
    )


def count_folder_images(path: Any) -> int:
    """The images ImageFolder finds in ``path`` (files with an image extension under each
    class folder, walked as torchvision walks them), without opening any."""
    total = 0
    for name in class_folders(path):
        for _, _, files in os.walk(os.path.join(str(path), name), followlinks=True):
            total += sum(f.lower().endswith(IMG_EXTENSIONS) for f in files)
    return total


def count_train_images(cfg: omegaconf.DictConfig, train: FolderFacts | None) -> int | None:
    """How many images the training set will hold, where that is known without building it
    (a labelled class folder read whole, or CIFAR); ``None`` otherwise."""
    dataset = cfg.data.dataset
    if float(omegaconf_select(cfg, "data.fraction", -1.0)) > 0:
        return None
    if dataset in TRAIN_SET_SIZES:
        return TRAIN_SET_SIZES[dataset]
    readable_only = omegaconf_select(cfg, "data.skip_corrupt_images", False)
    folder_read = omegaconf_select(cfg, "data.format", "image_folder") in ("image_folder", "dali")
    if dataset not in FOLDER_DATASETS or readable_only or not folder_read:
        return None
    if omegaconf_select(cfg, "data.no_labels", False) or train is None or not train.is_dir:
        return None
    return count_folder_images(train.path)


def describe_data(
    cfg: omegaconf.DictConfig, validation: bool = True, count_images: bool = False
) -> InputFacts:
    """The data facts of :class:`~effssl_plugin.checks.InputFacts`: the train and val folders
    of a folder dataset and, with ``count_images``, the training-set size where it is known
    before building."""
    folders = omegaconf_select(cfg, "data.dataset", None) in FOLDER_DATASETS
    train = describe_folder(omegaconf_select(cfg, "data.train_path", None)) if folders else None
    val_path = omegaconf_select(cfg, "data.val_path", None) if validation else None
    val = describe_folder(val_path) if folders and val_path is not None else None
    counted = count_images and (train is not None or not folders)
    images = count_train_images(cfg, train) if counted else None
    return InputFacts(train=train, val=val, train_images=images)


def check_data_paths(cfg: omegaconf.DictConfig, validation: bool = True) -> None:
    """Fails fast, naming the key, when a folder dataset's path is missing or empty, or the
    val folder has classes the training folder lacks (:func:`effssl_plugin.checks.check_data_paths`
    on this filesystem)."""
    checks.check_data_paths(cfg, describe_data(cfg, validation), validation)


@contextmanager
def download_errors(dataset: str, key: str, path: Any) -> Iterator[None]:
    """A failed torchvision download of ``dataset`` into ``path`` becomes a
    :class:`DataError` naming the ways out; the folders the attempt created are removed."""
    if dataset not in DOWNLOADED_DATASETS:
        yield
        return
    created = Path(str(path)).absolute()
    while not created.parent.exists():  # the outermost folder the download would create
        created = created.parent
    existed = created.exists()
    try:
        yield
    except (URLError, ConnectionError, TimeoutError) as err:
        if not existed:
            shutil.rmtree(created, ignore_errors=True)
        reason = getattr(err, "reason", None) or err
        raise DataError(
            f"{DOWNLOADED_DATASETS[dataset]} could not be downloaded into {key}={path} "
            f"({reason}): give this machine network access, or train on JPEG/PNG class folders: "
            f"python main_pretrain.py --config-name {hydra_config_name()} dataset=custom_lowres "
            "data.train_path=<dir>/train data.val_path=<dir>/test"
        ) from None


def build_pretrain_dataset(cfg: omegaconf.DictConfig) -> Dataset:
    """solo-learn's pretraining dataset (``(index, [views], target)`` items) with a checked
    path, an image loader that names broken files, and, with ``data.skip_corrupt_images``,
    those files left out."""
    check_data_paths(cfg, validation=False)
    transform = FullTransformPipeline(
        [
            NCropAugmentation(build_transform_pipeline(cfg.data.dataset, aug), aug.num_crops)
            for aug in cfg.augmentations
        ]
    )
    if cfg.debug_augmentations:
        print("Transforms:")
        print(transform)
    fraction = float(omegaconf_select(cfg, "data.fraction", -1.0))
    try:
        with download_errors(cfg.data.dataset, "data.train_path", cfg.data.train_path):
            dataset = prepare_datasets(
                cfg.data.dataset,
                transform,
                train_data_path=cfg.data.train_path,
                data_format=cfg.data.format,
                no_labels=cfg.data.no_labels,
                data_fraction=fraction,
            )
    except FileNotFoundError as err:
        raise DataError(f"data.train_path={cfg.data.train_path}: {err}") from None
    if cfg.data.format == "dali" and isinstance(dataset, CustomDatasetWithoutLabels):
        # solo-learn lists an unlabeled folder in directory order (and splits data.fraction
        # unstratified), DALI sorted (and stratified); the calibration follows DALI, whose
        # sample indexes are the bank rows
        names = dali_file_list(cfg.data.train_path, no_labels=True, data_fraction=fraction)
        dataset.images = [path.name for path in names]
    if isinstance(dataset, ImageFolder):
        dataset.loader = read_rgb_image
        if omegaconf_select(cfg, "data.skip_corrupt_images", False):
            drop_unreadable_images(dataset)
    if len(dataset) == 0:
        raise DataError(f"data.train_path={cfg.data.train_path} holds no images")
    return dataset


@dataclass
class PretrainData:
    """The training data of a run: a DataLoader (image folders, h5) or a DALI datamodule, the
    number of training images (EffSSL's bank rows), EffSSL's calibration dataset (DALI:
    an ImageFolder of the same files; ``None``: the training dataset) and, with
    ``data.pipeline=tensor``, the augmentation the training device applies to each batch."""

    num_samples: int
    train_loader: DataLoader | None = None
    datamodule: Any = None
    calibration: Dataset | None = None
    views: BatchViews | None = None

    @property
    def loader_generator(self) -> torch.Generator | None:
        """The training loader's generator (:class:`~effssl_plugin.epoch_streams.EpochStreams`
        seeds it per epoch); ``None`` with DALI."""
        return None if self.train_loader is None else self.train_loader.generator

    def fit_kwargs(self, val_loader: DataLoader | None) -> dict[str, Any]:
        """``Trainer.fit``'s data arguments, with ``val_loader`` (or no validation)."""
        if self.datamodule is None:
            return {"train_dataloaders": self.train_loader, "val_dataloaders": val_loader}
        if val_loader is not None:  # else no val_dataloader at all: Lightning refuses None
            self.datamodule.val_dataloader = lambda: val_loader
        return {"datamodule": self.datamodule}


def build_pretrain_data(cfg: omegaconf.DictConfig) -> PretrainData:
    """solo-learn's pretraining data: its DataLoader (paths checked, unreadable images named
    or skipped); with ``data.pipeline=tensor`` its dataset decoded once and the batched
    augmentation (:mod:`effssl_plugin.tensor_data`); or with ``data.format=dali`` its DALI
    datamodule; for EffSSL with DALI, the
    sample indexes as labels and a calibration ImageFolder listing the same files (refused
    before anything is built where the two lists differ)."""
    if cfg.data.format != "dali" and omegaconf_select(cfg, "data.pipeline", "pil") == "tensor":
        decoded = decode_dataset(build_pretrain_dataset(cfg))
        loader = decoded_loader(decoded, batch_size=cfg.optimizer.batch_size)
        views = batch_views_from_cfg(cfg)
        if cfg.debug_augmentations:
            print(f"Batched on the device (data.pipeline=tensor): {views}")
        return PretrainData(len(decoded), train_loader=loader, views=views)
    if cfg.data.format != "dali":
        dataset = build_pretrain_dataset(cfg)
        # solo-learn's prepare_dataloader, with the shuffle and worker seeds per epoch
        loader = shuffled_loader(
            dataset, batch_size=cfg.optimizer.batch_size, num_workers=cfg.data.num_workers
        )
        return PretrainData(num_samples=len(dataset), train_loader=loader)
    try:
        from solo.data.dali_dataloader import (
            PretrainDALIDataModule,
            build_transform_pipeline_dali,
        )
    except ImportError as err:  # checked before; here if it broke since
        raise ConfigError(f"data.format=dali needs NVIDIA DALI: {err}") from None
    calibration = None
    if cfg.method == "effssl":  # EffSSL's bank needs the true dataset index of each image
        cfg.dali.encode_indexes_into_labels = True
        calibration = build_pretrain_dataset(cfg)
        check_dali_file_list(cfg, calibration)
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
    if calibration is not None:
        num_samples = len(calibration)
    else:
        num_samples = compute_dataset_size(
            dataset=cfg.data.dataset,
            data_path=cfg.data.train_path,
            data_format="image_folder",
            no_labels=cfg.data.no_labels,
            data_fraction=cfg.data.fraction,
        )
    return PretrainData(num_samples, datamodule=datamodule, calibration=calibration)


def dali_file_list(
    train_path: Any, no_labels: bool = False, data_fraction: float = -1.0
) -> list[Path]:
    """The files solo-learn's DALI pretraining pipeline reads, in its sample-index order
    (``PretrainPipelineBuilder``, without DALI). With labels: the subfolders of
    ``train_path`` sorted, then every entry of each (files of any type, subfolders too)
    sorted, none walked into; without: every entry of ``train_path`` sorted. A
    ``data_fraction`` in (0, 1) keeps solo-learn's stratified split (seed 42)."""
    root = Path(str(train_path))
    if no_labels:
        files = [root / name for name in sorted(os.listdir(root))]
        labels = [-1] * len(files)
    else:
        classes = sorted(Path(entry.name) for entry in os.scandir(root) if entry.is_dir())
        listed = [
            (root / label / name, index)
            for index, label in enumerate(classes)
            for name in sorted(os.listdir(root / label))
        ]
        files, labels = [f for f, _ in listed], [c for _, c in listed]
    if data_fraction > 0:
        from sklearn.model_selection import train_test_split

        files, _, labels, _ = train_test_split(
            files, labels, train_size=data_fraction, stratify=labels, random_state=42
        )
    return files


def _dataset_files(dataset: Dataset) -> list[str]:
    """The image paths of a pretraining dataset, in index order."""
    if isinstance(dataset, ImageFolder):
        return [path for path, _ in dataset.samples]
    if isinstance(dataset, CustomDatasetWithoutLabels):
        return [str(Path(dataset.root) / name) for name in dataset.images]
    raise ConfigError(
        f"data.format=dali reads image folders, not a {type(dataset).__name__}: use "
        "data.dataset=custom, imagenet or imagenet100"
    )


def check_dali_file_list(cfg: omegaconf.DictConfig, dataset: Dataset) -> None:
    """EffSSL's bank rows are DALI's sample indexes, and its calibration reads ``dataset``:
    refuses, naming the first difference, unless :func:`dali_file_list` lists the same
    files in the same order (stray non-image files, nested folders and files that
    ``data.skip_corrupt_images`` left out make them differ)."""
    train_path = str(cfg.data.train_path)
    dali = [
        os.path.relpath(path, train_path)
        for path in dali_file_list(
            train_path,
            no_labels=bool(omegaconf_select(cfg, "data.no_labels", False)),
            data_fraction=float(omegaconf_select(cfg, "data.fraction", -1.0)),
        )
    ]
    root = os.path.expanduser(train_path)  # as ImageFolder
    ours = [os.path.relpath(path, root) for path in _dataset_files(dataset)]
    if dali == ours:
        return
    pairs = enumerate(zip(dali, ours, strict=False))
    i = next((i for i, (a, b) in pairs if a != b), min(len(dali), len(ours)))
    if i < len(dali):
        path = os.path.join(train_path, dali[i])
        first = f"DALI's sample {i} is {path} ({_why_not_calibrated(path, cfg, dali[i] in ours)})"
    else:
        first = f"DALI has no sample {i}"
    if i < len(ours):
        first += f", the calibration's is {os.path.join(root, ours[i])}"
    extra, missing = len(set(dali) - set(ours)), len(set(ours) - set(dali))
    raise ConfigError(
        f"data.format=dali: {first}. EffSSL's bank rows are DALI's sample indexes, so DALI and "
        "the calibration (an ImageFolder of data.train_path) must list the same files in the "
        f"same order; DALI lists {extra} file(s) the calibration does not and misses "
        f"{missing}: move such files and folders out of the class folders of data.train_path, "
        "or use data.format=image_folder"
    )


def _why_not_calibrated(path: str, cfg: omegaconf.DictConfig, calibrated: bool) -> str:
    """Why DALI's entry ``path`` is not where the calibration has it."""
    if os.path.isdir(path):
        return "a folder inside a class folder, which DALI reads as one image, ImageFolder walks"
    if not path.lower().endswith(IMG_EXTENSIONS):
        return f"not an image ImageFolder reads ({', '.join(IMG_EXTENSIONS)})"
    if not calibrated and omegaconf_select(cfg, "data.skip_corrupt_images", False):
        return "unreadable and left out by data.skip_corrupt_images, which DALI cannot do"
    return "elsewhere in the calibration's list" if calibrated else "not in the calibration's list"


def build_val_loader(cfg: omegaconf.DictConfig, batch_size: int) -> DataLoader | None:
    """The classification val loader (online linear / kNN), or ``None`` without val data:
    solo-learn's, except for custom folders, which keep the training set's labels and use
    :func:`~effssl_plugin.preprocessing.eval_transform` (solo-learn's is a 224 px ImageNet one)."""
    if cfg.data.val_path is None or (cfg.data.dataset == "custom" and cfg.data.no_labels):
        return None
    fmt = "image_folder" if cfg.data.format == "dali" else cfg.data.format
    if cfg.data.dataset == "custom" and fmt == "image_folder":
        val_dataset = ImageFolderWithClasses(
            str(cfg.data.val_path),
            class_folders(cfg.data.train_path),  # a val subset keeps the training labels
            transform=eval_transform(cfg),
            loader=read_rgb_image,
        )
        return DataLoader(
            val_dataset,
            batch_size=batch_size,
            num_workers=cfg.data.num_workers,
            pin_memory=torch.cuda.is_available(),
        )
    with download_errors(cfg.data.dataset, "data.val_path", cfg.data.val_path):
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
