"""``data.pipeline=tensor`` (issue 26): the training set decoded once in solo-learn's sample
order, batches fetched whole, the batched augmentation applied on the device with a
generator per (seed, rank, epoch), the calibration's training view, the config's checks, and
tiny launcher runs of EffSSL and SimCLR through it."""

from __future__ import annotations

import csv
import math
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from conftest import compose, make_image_folder, require_solo, tiny_overrides
from PIL import Image

require_solo()

from torchvision.datasets import ImageFolder  # noqa: E402

from effssl_plugin import tensor_data  # noqa: E402
from effssl_plugin.augment import seeded_generator  # noqa: E402
from effssl_plugin.errors import ConfigError, DataError  # noqa: E402
from effssl_plugin.tensor_data import (  # noqa: E402
    DecodedImages,
    DeviceAugmentation,
    batch_views_from_cfg,
    decode_dataset,
    decoded_loader,
)


def test_an_image_folder_decodes_in_its_sample_order_bit_for_bit(tmp_path):
    folder = make_image_folder(tmp_path / "data", classes=3, per_class=5, size=12)
    dataset = ImageFolder(str(folder))
    decoded = decode_dataset(dataset)
    assert decoded.images.shape == (15, 3, 12, 12) and decoded.images.dtype == torch.uint8
    for i, (path, label) in enumerate(dataset.samples):
        pixels = np.asarray(Image.open(path).convert("RGB"))
        assert torch.equal(decoded.images[i], torch.from_numpy(pixels).permute(2, 0, 1))
        assert int(decoded.targets[i]) == label


def test_cifar_like_arrays_are_taken_as_they_are_channels_first():
    rng = np.random.default_rng(0)
    data = rng.integers(0, 256, (7, 32, 32, 3), dtype=np.uint8)  # torchvision's CIFAR: NHWC
    decoded = decode_dataset(SimpleNamespace(data=data, targets=list(range(7))))
    assert torch.equal(decoded.images, torch.from_numpy(data).permute(0, 3, 1, 2))
    stl = rng.integers(0, 256, (4, 3, 16, 16), dtype=np.uint8)  # torchvision's STL-10: NCHW
    decoded = decode_dataset(SimpleNamespace(data=stl, labels=np.arange(4)))
    assert torch.equal(decoded.images, torch.from_numpy(stl)) and decoded.targets.tolist() == [
        0,
        1,
        2,
        3,
    ]


def test_images_of_two_sizes_are_refused_naming_a_file_and_the_way_out(tmp_path):
    folder = make_image_folder(tmp_path / "data", classes=2, per_class=3, size=12)
    odd = folder / "class1" / "zz_odd.png"
    Image.fromarray(np.zeros((10, 14, 3), np.uint8)).save(odd)
    with pytest.raises(DataError, match=r"zz_odd\.png is 14x10 px.*data\.pipeline=pil"):
        decode_dataset(ImageFolder(str(folder)))


def test_a_set_too_large_for_memory_is_refused_before_decoding(tmp_path, monkeypatch):
    folder = make_image_folder(tmp_path / "data", classes=2, per_class=3, size=12)
    monkeypatch.setattr(tensor_data, "MAX_MEMORY_SHARE", 1e-12)
    with pytest.raises(DataError, match=r"would hold the training set .*data\.pipeline=pil"):
        decode_dataset(ImageFolder(str(folder)))


def test_the_loader_fetches_whole_shuffled_batches_with_their_indexes():
    images = torch.arange(10, dtype=torch.uint8).view(10, 1, 1, 1).expand(10, 3, 2, 2)
    loader = decoded_loader(DecodedImages(images.clone(), torch.arange(10) % 3), batch_size=4)
    batches = list(loader)
    assert len(batches) == 2  # drop_last, as solo-learn's loader
    seen = torch.cat([indexes for indexes, _, _ in batches])
    assert seen.unique().numel() == 8  # no index twice in an epoch
    for indexes, views, targets in batches:
        (x,) = views
        assert x.dtype == torch.uint8 and x.shape == (4, 3, 2, 2)
        assert torch.equal(x[:, 0, 0, 0].long(), indexes) and torch.equal(targets, indexes % 3)
    torch.manual_seed(0)
    orders = {tuple(torch.cat([b[0] for b in loader]).tolist()) for _ in range(3)}
    assert len(orders) > 1  # shuffled every epoch


def test_single_items_keep_solo_learns_layout():
    images = torch.zeros(3, 3, 4, 4, dtype=torch.uint8)
    index, views, target = DecodedImages(images, torch.tensor([2, 1, 0]))[1]
    assert index == 1 and target == 1 and views[0].shape == (3, 4, 4)


def test_the_generator_depends_on_seed_rank_and_stream_only():
    cpu = torch.device("cpu")

    def draw(*key: int) -> torch.Tensor:
        return torch.rand(5, generator=seeded_generator(cpu, *key))

    assert torch.equal(draw(5, 0, 3), draw(5, 0, 3))
    assert not torch.equal(draw(5, 0, 3), draw(5, 1, 3))  # ranks differ
    assert not torch.equal(draw(5, 0, 3), draw(5, 0, 4))  # epochs differ
    assert not torch.equal(draw(5, 0, 3), draw(6, 0, 3))


def _cifar_views():
    cfg = compose("effssl", ["dataset=custom_lowres", "data.train_path=x", "data.val_path=null"])
    return batch_views_from_cfg(cfg)


def _epoch_views(
    callback: DeviceAugmentation, epoch: int, images: torch.Tensor, precision: str = "32-true"
) -> torch.Tensor:
    from lightning.pytorch.plugins.precision import HalfPrecision, Precision

    plugin = HalfPrecision("bf16-true") if precision == "bf16-true" else Precision()
    trainer = SimpleNamespace(
        current_epoch=epoch, global_rank=0, strategy=SimpleNamespace(precision_plugin=plugin)
    )
    module = SimpleNamespace(device=torch.device("cpu"))
    callback.on_train_epoch_start(trainer, module)
    batch = [torch.arange(len(images)), [images], torch.zeros(len(images))]
    callback.on_train_batch_start(trainer, module, batch, 0)
    (view,) = batch[1]
    return view


def test_device_augmentation_writes_the_views_into_the_batch_and_resumes_exactly():
    images = torch.randint(0, 256, (6, 3, 32, 32), dtype=torch.uint8)
    straight = DeviceAugmentation(_cifar_views(), seed=5)
    epoch0 = _epoch_views(straight, 0, images)
    assert epoch0.dtype == torch.float32 and epoch0.shape == (6, 3, 32, 32)
    epoch1 = _epoch_views(straight, 1, images)
    assert not torch.equal(epoch0, epoch1)  # new parameters each epoch
    resumed = DeviceAugmentation(_cifar_views(), seed=5)  # a run resumed at epoch 1
    assert torch.equal(_epoch_views(resumed, 1, images), epoch1)
    assert not torch.equal(_epoch_views(DeviceAugmentation(_cifar_views(), 6), 1, images), epoch1)


def test_the_views_take_the_dtype_lightning_gives_a_loaders_inputs():
    """Under a true half precision Lightning casts a loader's float inputs; the views made
    after the transfer get the same cast (uint8 images pass through it unchanged)."""
    images = torch.randint(0, 256, (4, 3, 32, 32), dtype=torch.uint8)
    half = _epoch_views(DeviceAugmentation(_cifar_views(), seed=5), 0, images, "bf16-true")
    full = _epoch_views(DeviceAugmentation(_cifar_views(), seed=5), 0, images)
    assert half.dtype == torch.bfloat16 and full.dtype == torch.float32
    assert torch.equal(half, full.to(torch.bfloat16))


def test_the_views_follow_the_config_crops_and_statistics():
    cfg = compose("simclr", ["dataset=custom_lowres", "data.train_path=x", "data.val_path=null"])
    views = batch_views_from_cfg(cfg)
    out = views(torch.full((4, 3, 32, 32), 128, dtype=torch.uint8), None)
    assert len(out) == 2 and all(v.shape == (4, 3, 32, 32) for v in out)  # SimCLR: 2 crops


@pytest.mark.parametrize(
    "extra, message",
    [
        (["data.pipeline=jpeg"], r"data\.pipeline must be one of \['pil', 'tensor'\]"),
        (["data.pipeline=tensor", "data.format=h5"], r"not data\.format=h5"),
        # the preset's default, not named: the error says where it came from and the way out
        (["data.format=h5"], r"custom_lowres presets' default\).*add data\.pipeline=pil$"),
    ],
)
def test_the_check_pass_refuses_a_bad_pipeline(tmp_path, extra, message):
    from effssl_plugin.checks import InputFacts, check_choices

    cfg = compose("effssl", tiny_overrides(tmp_path, 1, 4, 8, *extra))
    with pytest.raises(ConfigError, match=message):
        check_choices(cfg, InputFacts())


@pytest.mark.parametrize(
    "method",
    ["effssl", pytest.param("simclr", marks=pytest.mark.slow)],  # fast tier: one
)
def test_a_launcher_run_trains_through_the_tensor_pipeline(method, cifar300, workdir):
    from effssl_plugin.main_pretrain import pretrain

    overrides = [
        *tiny_overrides(cifar300, 1, 32, 16, "data.pipeline=tensor", "data.fraction=0.4"),
        "checkpoint.enabled=false",
    ]
    if method != "effssl":
        overrides = [o for o in overrides if not o.startswith("method_kwargs")]
    cfg = compose(method, overrides)
    run_dir = pretrain(cfg)
    with (Path(run_dir) / "logs" / "version_0" / "metrics.csv").open() as f:
        rows = list(csv.DictReader(f))
    loss_key = {"effssl": "train_loss_epoch", "simclr": "train_nce_loss_epoch"}[method]
    losses = [float(r[loss_key]) for r in rows if r.get(loss_key)]
    assert losses and all(math.isfinite(v) for v in losses), rows


def test_an_unlabelled_folder_decodes_with_target_minus_one_and_other_sets_are_refused(tmp_path):
    from solo.data.pretrain_dataloader import CustomDatasetWithoutLabels

    folder = tmp_path / "flat"
    folder.mkdir()
    for i in range(3):
        Image.fromarray(np.full((8, 8, 3), 40 * i, np.uint8)).save(folder / f"{i}.png")
    dataset = CustomDatasetWithoutLabels(str(folder))
    decoded = decode_dataset(dataset)
    assert decoded.targets.tolist() == [-1, -1, -1]
    for i, name in enumerate(dataset.images):  # solo-learn's order, whatever it is
        assert int(decoded.images[i, 0, 0, 0]) == 40 * int(name.split(".")[0])
    with pytest.raises(DataError, match=r"cannot decode a list: use data\.pipeline=pil"):
        decode_dataset([1, 2, 3])
