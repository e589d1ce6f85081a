"""Shared fixtures: solo-learn availability, the in-repo CIFAR-10 fixture, tiny fake folders."""

from __future__ import annotations

import re
import sys
import tarfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


#: 300 real CIFAR-10 test images shipped with the tests (source: tests/data/README.md)
CIFAR_FIXTURE = REPO / "tests" / "data" / "cifar10_test_300_jpg.tar.gz"

SOLO_MISSING = (
    "solo-learn is not installed: install it from https://github.com/vturrisi/solo-learn "
    "(README: Install) to run the plugin tests"
)


def require_solo() -> None:
    """Skips the calling test (with the reason above) only when solo-learn is absent."""
    pytest.importorskip("solo.methods", reason=SOLO_MISSING)


@pytest.fixture(scope="session")
def cifar300(tmp_path_factory) -> Path:
    """The in-repo real CIFAR-10 fixture (30 test images per class, 10 classes), extracted:
    an ImageFolder of 300 JPEGs at 32 px."""
    out = tmp_path_factory.mktemp("cifar300")
    with tarfile.open(CIFAR_FIXTURE) as tar:
        tar.extractall(out, filter="data")
    return out / "test"


def make_image_folder(root: Path, classes: int = 3, per_class: int = 6, size: int = 16) -> Path:
    """A tiny ImageFolder of random RGB PNGs."""
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(0)
    for c in range(classes):
        d = root / f"class{c}"
        d.mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            pixels = rng.integers(0, 256, (size, size, 3), dtype=np.uint8)
            Image.fromarray(pixels).save(d / f"{i:03d}.png")
    return root


#: a tiny effssl run on a fake folder: CPU, resnet10t, small projector and bank, batch 4
TINY_EFFSSL = [
    "machine=cpu",
    "dataset=custom_lowres",
    "data.num_workers=0",
    "backbone.kwargs.model_name=resnet10t",
    "method_kwargs.proj_hidden_dim=32",
    "method_kwargs.proj_output_dim=16",
    "method_kwargs.num_negatives=8",
    "optimizer.batch_size=4",
]


@pytest.fixture
def data(tmp_path) -> Path:
    """A fake 3-class folder of 18 images."""
    return make_image_folder(tmp_path / "data", classes=3, per_class=6)


@pytest.fixture
def workdir(tmp_path, monkeypatch) -> Path:
    """An empty working directory, made the current one."""
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)
    return work


@pytest.fixture
def fake_folder(tmp_path) -> Path:
    return make_image_folder(tmp_path / "fake")


def compose(config_name: str = "effssl", overrides: list[str] | None = None):
    """The Hydra config the launcher would see, composed from the packaged configs."""
    from hydra import compose as hydra_compose
    from hydra import initialize_config_module

    with initialize_config_module("effssl_plugin.configs", version_base="1.2"):
        return hydra_compose(config_name, overrides=overrides or [])


def tiny_overrides(
    data: Path, max_epochs: int, batch: int, negatives: int, *extra: str
) -> list[str]:
    """A small, fast effssl run on an image folder: CPU, resnet10t, small projector/bank."""
    return [
        "machine=cpu",
        "dataset=custom_lowres",
        f"data.train_path={data}",
        "data.val_path=null",
        "data.num_workers=0",
        "backbone.kwargs.model_name=resnet10t",
        "method_kwargs.proj_hidden_dim=64",
        "method_kwargs.proj_output_dim=32",
        f"method_kwargs.num_negatives={negatives}",
        f"optimizer.batch_size={batch}",
        f"max_epochs={max_epochs}",
        *extra,
    ]


def python_cmd(*args: str) -> list[str]:
    return [sys.executable, *args]


#: a warning printed from inside timm or solo-learn (``.../timm/x.py:7: FutureWarning: ...``)
HOST_WARNING = re.compile(r"[/\\](timm|solo)[/\\]\S*\.py:\d+: \w*Warning\b")


def host_warnings(stderr: str) -> list[str]:
    """The lines of ``stderr`` that are warnings raised inside timm or solo-learn."""
    return [line for line in stderr.splitlines() if HOST_WARNING.search(line)]
