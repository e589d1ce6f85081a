"""``data.format=dali`` without DALI: solo-learn's DALI module is faked, so what EffSSL adds
around it (calibration workers, no val loader, DALI's file list against the calibration's)
runs on a CPU. DALI itself needs a GPU and is not tested here."""

from __future__ import annotations

import importlib
import os
import sys
from collections.abc import Iterable, Iterator
from pathlib import Path
from types import ModuleType, SimpleNamespace
from unittest.mock import MagicMock

import pytest
import torch
from conftest import TINY_EFFSSL, compose, make_image_folder, require_solo
from omegaconf import OmegaConf
from torch.utils.data import TensorDataset

require_solo()

from effssl_plugin.calibration import calibration_loader  # noqa: E402
from effssl_plugin.config import parse_pretrain_cfg  # noqa: E402
from effssl_plugin.data import (  # noqa: E402
    build_pretrain_dataset,
    check_dali_file_list,
    dali_file_list,
)
from effssl_plugin.errors import ConfigError  # noqa: E402
from effssl_plugin.main_pretrain import pretrain  # noqa: E402


@pytest.fixture
def solo_dali(monkeypatch) -> ModuleType:
    """solo-learn's real ``solo.data.dali_dataloader``, imported over a fake ``nvidia.dali``
    whose operators are mocks: its Python (file listing, datamodule) runs, DALI does not.
    ``solo.args.pretrain`` sees it as a DALI machine does."""

    class DALIGenericIterator:  # subclassed by solo-learn: a class, not a mock
        def __init__(self, *args: object, **kwargs: object) -> None:
            pass

    fn, ops, types = MagicMock(), MagicMock(), MagicMock()
    modules = {
        "nvidia": ModuleType("nvidia"),
        "nvidia.dali": ModuleType("nvidia.dali"),
        "nvidia.dali.plugin": ModuleType("nvidia.dali.plugin"),
        "nvidia.dali.plugin.pytorch": ModuleType("nvidia.dali.plugin.pytorch"),
    }
    modules.update({"nvidia.dali.fn": fn, "nvidia.dali.ops": ops, "nvidia.dali.types": types})
    dali = modules["nvidia.dali"]
    dali.fn, dali.ops, dali.types, dali.pipeline_def = fn, ops, types, MagicMock()
    plugin = modules["nvidia.dali.plugin.pytorch"]
    plugin.DALIGenericIterator, plugin.LastBatchPolicy = DALIGenericIterator, MagicMock()
    for name, module in modules.items():
        monkeypatch.setitem(sys.modules, name, module)
    import solo.args.pretrain
    import solo.data

    for name in ("dali_dataloader", "temp_dali_fix"):  # imported fresh, removed afterwards
        monkeypatch.delitem(sys.modules, f"solo.data.{name}", raising=False)
        monkeypatch.setattr(solo.data, name, None, raising=False)
    module = importlib.import_module("solo.data.dali_dataloader")
    monkeypatch.setattr(solo.args.pretrain, "_dali_available", True)
    monkeypatch.setattr(
        solo.args.pretrain, "PretrainDALIDataModule", module.PretrainDALIDataModule, raising=False
    )
    return module


def solo_dali_files(solo_dali: ModuleType, root: Path, no_labels: bool = False) -> list[Path]:
    """The files solo-learn's DALI pipeline builder hands DALI's file reader."""
    reader = solo_dali.ops.readers.File
    reader.reset_mock()
    solo_dali.PretrainPipelineBuilder(
        root, batch_size=2, device="cpu", transforms=None, no_labels=no_labels
    )
    return list(reader.call_args.kwargs["files"])


def stray_files(root: Path) -> None:
    """A text file, a hidden file and a nested folder holding one more image."""
    (root / "class0" / "notes.txt").write_text("not an image")
    (root / "class1" / ".DS_Store").write_bytes(b"\0")
    make_image_folder(root / "class2" / "more", classes=1, per_class=1)  # class2/more/class0


def dali_cfg(root: Path, *overrides: str, parse: bool = True):
    """A tiny effssl config on ``root`` with ``data.format=dali`` (parsed, as the launcher
    parses it, unless ``parse=False``)."""
    cfg = compose(
        "effssl",
        [*TINY_EFFSSL, f"data.train_path={root}", "data.val_path=null", "data.format=dali"]
        + ["data.pipeline=pil"]  # the low-resolution presets default to tensor
        + list(overrides),
    )
    return parse_pretrain_cfg(cfg) if parse else cfg


class DaliLikeLoader:
    """What solo-learn's ``PretrainWrapper`` looks like from outside: an iterable of
    ``[indexes, views, targets]`` batches with a batch size and a length, but neither
    ``dataset`` nor ``num_workers``."""

    def __init__(self, batch_size: int, batches: Iterable = ()) -> None:
        self.batch_size = batch_size
        self.batches = batches

    def __iter__(self) -> Iterator:
        return iter(self.batches)

    def __len__(self) -> int:
        return len(self.batches)


# ------------------------------------------------------------- calibration workers
def test_calibration_takes_its_workers_from_the_config_under_dali():
    """The DALI loader has no ``num_workers``: the calibration pass used 0 (every image
    decoded by PIL in the main process); it must use ``data.num_workers``."""
    n = 12
    module = SimpleNamespace(
        trainer=SimpleNamespace(
            train_dataloader=DaliLikeLoader(batch_size=4), global_rank=0, world_size=1
        ),
        calibration_dataset=TensorDataset(torch.arange(n)),
        bank=SimpleNamespace(num_samples=n),
        batch_size=4,
        seed=0,
        device=torch.device("cpu"),
        cfg=OmegaConf.create({"data": {"num_workers": 2}}),
    )
    loader = calibration_loader(module)
    assert loader.num_workers == 2
    assert sum(len(b) for b in loader.batch_sampler) == n


def test_calibration_without_a_config_falls_back_to_the_loaders_workers():
    """A module trained from Python with its own DataLoader and no ``data.num_workers``."""
    n = 8
    dataset = TensorDataset(torch.arange(n))
    train_loader = torch.utils.data.DataLoader(dataset, batch_size=4, num_workers=1)
    module = SimpleNamespace(
        trainer=SimpleNamespace(train_dataloader=train_loader, global_rank=0, world_size=1),
        calibration_dataset=None,
        bank=SimpleNamespace(num_samples=n),
        batch_size=4,
        seed=0,
        device=torch.device("cpu"),
        cfg=OmegaConf.create({"data": {}}),
    )
    assert calibration_loader(module).num_workers == 1


# ------------------------------------------------------- DALI's file list, reproduced
@pytest.mark.parametrize("layout", ["aligned", "stray", "unlabeled"])
def test_dali_file_list_is_solo_learns_listing(layout, solo_dali, tmp_path):
    """:func:`dali_file_list` (no DALI needed) equals what solo-learn's own DALI pipeline
    builder lists, stray and nested entries included."""
    root = make_image_folder(tmp_path / "data", classes=3, per_class=4)
    if layout == "stray":
        stray_files(root)
    if layout == "unlabeled":
        root = root / "class1"
        (root / "notes.txt").write_text("not an image")
    no_labels = layout == "unlabeled"
    expected = solo_dali_files(solo_dali, root, no_labels)
    assert dali_file_list(root, no_labels=no_labels) == expected
    assert len(expected) == {"aligned": 12, "stray": 15, "unlabeled": 5}[layout]


def test_an_aligned_folder_passes(data):
    cfg = dali_cfg(data)
    dataset = build_pretrain_dataset(cfg)
    assert [Path(p) for p, _ in dataset.samples] == dali_file_list(data)
    check_dali_file_list(cfg, dataset)  # no error


@pytest.mark.parametrize(
    "stray, first, why",
    [
        ("class0/notes.txt", "class0/notes.txt", "not an image ImageFolder reads"),
        ("class1/.DS_Store", "class1/.DS_Store", "not an image ImageFolder reads"),
        ("class2/more/x.png", "class2/more", "a folder inside a class folder"),
    ],
)
def test_stray_files_and_nested_folders_are_refused_naming_the_first(stray, first, why, data):
    path = data / stray
    path.parent.mkdir(exist_ok=True)
    path.write_bytes((data / "class0" / "000.png").read_bytes())
    cfg = dali_cfg(data)
    dataset = build_pretrain_dataset(cfg)
    with pytest.raises(ConfigError) as err:
        check_dali_file_list(cfg, dataset)
    message = str(err.value)
    assert message.startswith("data.format=dali: DALI's sample ")
    assert f" is {data / first} ({why}" in message
    assert "\n" not in message and "data.format=image_folder" in message


def test_several_differences_name_the_first_in_dalis_order(data):
    stray_files(data)  # class0/notes.txt comes first
    cfg = dali_cfg(data)
    with pytest.raises(ConfigError, match=r"DALI's sample 6 is \S+/class0/notes\.txt \(not an"):
        check_dali_file_list(cfg, build_pretrain_dataset(cfg))


def test_an_image_skipped_as_corrupt_is_refused(data, caplog):
    bad = data / "class1" / "003.png"
    bad.write_bytes(b"\x89PNG\r\n\x1a\n this is not an image")
    cfg = dali_cfg(data, "data.skip_corrupt_images=true")
    dataset = build_pretrain_dataset(cfg)
    assert len(dataset) == 17
    with pytest.raises(ConfigError, match=rf"sample 9 is {bad} \(unreadable and left out by"):
        check_dali_file_list(cfg, dataset)


def test_an_unlabeled_folder_is_calibrated_in_dalis_order(tmp_path, monkeypatch):
    """solo-learn lists an unlabeled folder in directory order, DALI sorted: the
    calibration follows DALI (here the directory order is made reverse-sorted)."""
    root = make_image_folder(tmp_path / "data", classes=1, per_class=8) / "class0"
    listdir = os.listdir
    monkeypatch.setattr(os, "listdir", lambda p=".": sorted(listdir(p), reverse=True))
    cfg = dali_cfg(root, "data.no_labels=true")
    dataset = build_pretrain_dataset(cfg)
    assert dataset.images == [f"{i:03d}.png" for i in range(8)]
    check_dali_file_list(cfg, dataset)  # no error


def test_a_data_fraction_is_split_as_dali_splits_it(data, monkeypatch):
    """Both lists go through solo-learn's stratified split (sklearn faked: a seeded subset),
    so an aligned folder passes and a stray file is still refused."""
    calls = []

    def train_test_split(files, labels, train_size, stratify=None, random_state=None):
        calls.append((len(files), train_size, stratify is not None, random_state))
        g = torch.Generator().manual_seed(random_state)
        keep = sorted(torch.randperm(len(files), generator=g)[: int(len(files) * train_size)])
        return [files[i] for i in keep], [], [labels[i] for i in keep], []

    sklearn = ModuleType("sklearn.model_selection")
    sklearn.train_test_split = train_test_split
    monkeypatch.setitem(sys.modules, "sklearn", ModuleType("sklearn"))
    monkeypatch.setitem(sys.modules, "sklearn.model_selection", sklearn)
    cfg = dali_cfg(data, "data.fraction=0.5")
    dataset = build_pretrain_dataset(cfg)
    assert len(dataset) == 9
    check_dali_file_list(cfg, dataset)  # no error
    assert calls == [(18, 0.5, True, 42)] * 2  # solo-learn's split, then DALI's
    (data / "class0" / "notes.txt").write_text("not an image")
    with pytest.raises(ConfigError, match=r"data\.format=dali: DALI's sample"):
        check_dali_file_list(cfg, build_pretrain_dataset(cfg))


# ------------------------------------------------------------------ the launcher
def test_the_launcher_refuses_a_misaligned_folder_before_building_anything(
    data, workdir, solo_dali, monkeypatch
):
    def build(self, **kwargs: object) -> None:
        raise AssertionError("the DALI datamodule was built before the file lists were compared")

    monkeypatch.setattr(solo_dali.PretrainDALIDataModule, "__init__", build)
    (data / "class0" / "notes.txt").write_text("not an image")
    with pytest.raises(ConfigError, match=rf"DALI's sample 6 is {data}/class0/notes\.txt"):
        pretrain(dali_cfg(data, parse=False))
    assert list(workdir.iterdir()) == []  # nothing written


@pytest.mark.slow  # two tiny trainings
@pytest.mark.parametrize("validation", [False, True], ids=["val_path_null", "val_path_set"])
def test_a_dali_run_trains_with_and_without_validation(
    validation, data, workdir, solo_dali, monkeypatch
):
    """solo-learn's DALI datamodule with its pipeline replaced by a CPU loader of the same
    batches: without val data its ``val_dataloader`` returned None and Lightning refused it
    (``TypeError: An invalid dataloader was returned``); with val data validation runs. The
    calibration takes its workers from the config."""
    from lightning.pytorch.callbacks import Callback
    from solo.data.pretrain_dataloader import build_transform_pipeline, dataset_with_index
    from torchvision.datasets import ImageFolder

    class CpuDALIDataModule(solo_dali.PretrainDALIDataModule):
        def setup(self, stage: str | None = None) -> None:
            dataset = dataset_with_index(ImageFolder)(str(self.train_data_path), self.transforms)
            loader = torch.utils.data.DataLoader(
                dataset, batch_size=self.batch_size, shuffle=True, drop_last=True
            )
            self.train_loader = DaliLikeLoader(self.batch_size, loader)

    def torchvision_pipeline(dataset: str, cfg: object, dali_device: str) -> object:
        return build_transform_pipeline(dataset, cfg)

    monkeypatch.setattr(solo_dali, "PretrainDALIDataModule", CpuDALIDataModule)
    monkeypatch.setattr(solo_dali, "build_transform_pipeline_dali", torchvision_pipeline)
    seen: dict = {}

    class Seen(Callback):
        def on_train_start(self, trainer, module) -> None:  # before the module's calibration
            seen.update(calibration_workers=calibration_loader(module).num_workers)

        def on_fit_end(self, trainer, module) -> None:
            seen.update(steps=trainer.global_step, metrics=set(trainer.callback_metrics))
            seen.update(filled=bool(module.bank.filled))

    val = [f"data.val_path={data}", "optimizer.classifier_lr=0.1"] if validation else []
    cfg = dali_cfg(data, "max_epochs=1", "data.num_workers=1", *val, parse=False)
    pretrain(cfg, extra_callbacks=[Seen()])
    assert seen["steps"] == 18 // 4 and seen["filled"]
    assert seen["calibration_workers"] == 1  # data.num_workers: the DALI loader has none
    assert ("val_acc1" in seen["metrics"]) is validation
