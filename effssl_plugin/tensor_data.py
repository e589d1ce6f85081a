"""``data.pipeline=tensor``: training images decoded once, augmented a batch at a time on the
training device.

solo-learn's pipeline decodes a JPEG and runs PIL augmentations per image per epoch in
DataLoader workers; on a 2-core machine those workers compete with the step's threads, and on
a GPU they cannot keep up with a small backbone at 32 px (docs/BENCHMARKS.md, section 5).
Here the training set is decoded once into one uint8 tensor (CIFAR-10: 150 MB), a batch is an
index into it (no worker), and :class:`DeviceAugmentation` augments it where the step runs
with :mod:`effssl_plugin.augment` (per-sample random parameters, solo-learn's transforms).

The dataset keeps solo-learn's sample order, so a sample's index (EffSSL's bank row) is the
one the PIL pipeline gives it. Random parameters come from a generator per process seeded
with ``(seed, rank, epoch)`` at each epoch start: ranks draw different parameters, and a run
resumed at an epoch boundary draws what the uninterrupted run drew.
"""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np
import torch
from lightning.pytorch.callbacks import Callback
from PIL import Image
from torch import Tensor
from torch.utils.data import DataLoader, Dataset
from tqdm.auto import tqdm

from effssl_plugin.augment import (
    AugmentationParams,
    BatchAugmentation,
    BatchViews,
    seeded_generator,
)
from effssl_plugin.epoch_streams import shuffled_loader
from effssl_plugin.errors import DataError

__all__ = [
    "DecodedImages",
    "DeviceAugmentation",
    "batch_views_from_cfg",
    "decode_dataset",
    "decoded_loader",
]

#: the share of this machine's memory a decoded training set may take
MAX_MEMORY_SHARE = 0.5


class DecodedImages(Dataset):
    """A training set held as one uint8 tensor ``images`` (N, 3, H, W) and ``targets`` (N,).

    Indexed one sample at a time it gives solo-learn's ``(index, [image], target)``; a
    DataLoader fetches a whole batch at once (``__getitems__``) as ``[indexes, [images],
    targets]``, which :func:`collate_batch` passes through unchanged.
    """

    in_memory = True  # read by effssl_plugin.calibration: no loader workers needed

    def __init__(self, images: Tensor, targets: Tensor) -> None:
        if images.dtype != torch.uint8 or images.ndim != 4 or images.shape[1] != 3:
            shape = tuple(images.shape)
            raise ValueError(f"images must be uint8 N x 3 x H x W, not {images.dtype} {shape}")
        if targets.shape != images.shape[:1]:
            raise ValueError(f"{targets.shape[0]} targets for {images.shape[0]} images")
        self.images, self.targets = images.contiguous(), targets.long()

    def __len__(self) -> int:
        return self.images.shape[0]

    def __getitem__(self, index: int) -> tuple[int, list[Tensor], int]:
        return index, [self.images[index]], int(self.targets[index])

    def __getitems__(self, indexes: list[int]) -> list[Any]:
        rows = torch.as_tensor(indexes, dtype=torch.long)
        return [rows, [self.images[rows]], self.targets[rows]]

    @staticmethod
    def collate_fn(batch: list[Any]) -> list[Any]:
        """A batch from ``__getitems__`` is already collated."""
        return batch


def decoded_loader(dataset: DecodedImages, batch_size: int) -> DataLoader:
    """The training loader: shuffled batches of ``batch_size`` (the last partial one dropped,
    as solo-learn's), fetched in the main process (indexing needs no worker), pinned for a
    GPU; its shuffle is seeded per epoch (:mod:`effssl_plugin.epoch_streams`)."""
    return shuffled_loader(
        dataset,
        batch_size=batch_size,
        num_workers=0,
        pin_memory=torch.cuda.is_available(),
        collate_fn=DecodedImages.collate_fn,
    )


def read_rgb_image(path: str) -> Image.Image:
    """An image file as RGB, with an error that names an unreadable file (ImageFolder's
    loader in both pipelines, and the tensor pipeline's decoder)."""
    try:
        with open(path, "rb") as f:
            return Image.open(f).convert("RGB")
    except Exception as err:  # PIL raises several types for broken files
        raise DataError(f"cannot read image file {path}: {err}") from None


def decode_dataset(dataset: Dataset, num_threads: int = 8) -> DecodedImages:
    """solo-learn's training ``dataset`` decoded once, in its sample order: torchvision's
    CIFAR and STL-10 arrays as they are, an image folder's files decoded in threads (they
    must all have one size). Refuses, naming the way out, when the decoded set would take
    more than :data:`MAX_MEMORY_SHARE` of this machine's memory."""
    data = getattr(dataset, "data", None)
    if isinstance(data, np.ndarray) and data.dtype == np.uint8 and data.ndim == 4:
        images = torch.from_numpy(data)
        if images.shape[-1] == 3:  # CIFAR: N, H, W, C
            images = images.permute(0, 3, 1, 2)
        labels = getattr(dataset, "targets", None)
        if labels is None:
            labels = getattr(dataset, "labels", None)
        return DecodedImages(images.contiguous(), torch.as_tensor(np.asarray(labels)))
    paths, labels = _image_files(dataset)
    size = _one_size(paths)
    _check_memory(len(paths) * 3 * size[0] * size[1], paths[0])
    images = torch.empty(len(paths), 3, size[1], size[0], dtype=torch.uint8)

    def decode(i: int) -> None:
        rgb = np.asarray(read_rgb_image(paths[i]))
        if rgb.shape[:2] != (size[1], size[0]):
            raise DataError(
                f"{paths[i]} is {rgb.shape[1]}x{rgb.shape[0]} px, {paths[0]} is "
                f"{size[0]}x{size[1]}: data.pipeline=tensor needs images of one size; resize "
                "them, or use data.pipeline=pil"
            )
        images[i] = torch.from_numpy(rgb).permute(2, 0, 1)

    with ThreadPoolExecutor(num_threads) as pool:  # PIL releases the GIL while decoding
        done = pool.map(decode, range(len(paths)), chunksize=256)
        for _ in tqdm(done, total=len(paths), desc="Decoding images", dynamic_ncols=True):
            pass
    return DecodedImages(images, torch.as_tensor(labels))


def _image_files(dataset: Dataset) -> tuple[list[str], list[int]]:
    """The image paths and labels of an image-folder dataset, in index order."""
    samples = getattr(dataset, "samples", None)
    if samples is not None:  # ImageFolder
        return [path for path, _ in samples], [int(label) for _, label in samples]
    images = getattr(dataset, "images", None)
    if images is not None:  # solo-learn's CustomDatasetWithoutLabels
        root = str(dataset.root)
        return [os.path.join(root, name) for name in images], [-1] * len(images)
    raise DataError(
        f"data.pipeline=tensor cannot decode a {type(dataset).__name__}: use data.pipeline=pil"
    )


def _one_size(paths: list[str]) -> tuple[int, int]:
    """The (width, height) of the first image (read from its header); every image is checked
    against it while decoding."""
    if not paths:
        raise DataError("the training set holds no images")
    try:
        with Image.open(paths[0]) as image:
            return image.size
    except Exception as err:  # PIL raises several types for broken files
        raise DataError(f"cannot read image file {paths[0]}: {err}") from None


def _check_memory(num_bytes: int, example: str) -> None:
    """Refuses a decoded set larger than :data:`MAX_MEMORY_SHARE` of physical memory."""
    try:
        total = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):  # not POSIX: no check
        return
    if num_bytes > MAX_MEMORY_SHARE * total:
        raise DataError(
            f"data.pipeline=tensor would hold the training set decoded in memory: "
            f"{num_bytes / 2**30:.1f} GiB (images of the size of {example}), more than "
            f"{MAX_MEMORY_SHARE:.0%} of this machine's {total / 2**30:.1f} GiB; use "
            "data.pipeline=pil"
        )


def batch_views_from_cfg(cfg: Any) -> BatchViews:
    """solo-learn's augmentation pipelines of ``cfg.augmentations`` (each ``num_crops``
    times) as batched augmentations, with the mean and std solo-learn's pipeline uses."""
    from effssl_plugin.preprocessing import pretrain_mean_std

    pipelines = []
    for aug in cfg.augmentations:
        mean, std = pretrain_mean_std(cfg.data.dataset, aug)
        params = AugmentationParams.from_mapping(aug, mean, std)
        pipelines.append((BatchAugmentation(params), int(aug.num_crops)))
    return BatchViews(pipelines)


class DeviceAugmentation(Callback):
    """Replaces each training batch's uint8 images by their augmented views, on the device
    the step runs on, before the step (``data.pipeline=tensor``).

    Lightning hands ``on_train_batch_start`` the batch object that ``training_step`` then
    receives, so the views are written into it (``batch[1]``) for any method.
    """

    def __init__(self, views: BatchViews, seed: int) -> None:
        self.views, self.seed = views, int(seed)
        self.generator: torch.Generator | None = None

    def on_train_epoch_start(self, trainer: Any, pl_module: Any) -> None:
        stream = int(trainer.current_epoch)
        self.generator = seeded_generator(pl_module.device, self.seed, trainer.global_rank, stream)

    def on_train_batch_start(
        self, trainer: Any, pl_module: Any, batch: Any, batch_idx: int
    ) -> None:
        images = batch[1][0] if isinstance(batch[1], (list, tuple)) else batch[1]
        if images.dtype == torch.uint8:  # else already views (a batch seen twice)
            views = self.views(images, self.generator)
            # as Lightning converts a loader's float inputs (e.g. to bfloat16 under bf16-true)
            batch[1] = trainer.strategy.precision_plugin.convert_input(views)
