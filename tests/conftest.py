"""Shared fixtures: solo-learn availability, real CIFAR-10 fixtures, tiny fake folders."""

from __future__ import annotations

import os
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def find_shared_data() -> Path:
    """The project's shared data folder: ``$EFFSSL_SHARED_DATA``, else ``shared/data`` beside
    this checkout, else beside the checkout it was cloned from (a fresh local clone, as CI
    makes, may live elsewhere)."""
    if "EFFSSL_SHARED_DATA" in os.environ:
        return Path(os.environ["EFFSSL_SHARED_DATA"])
    candidates = [REPO.parent / "shared" / "data"]
    origin = subprocess.run(
        ["git", "-C", str(REPO), "config", "--get", "remote.origin.url"],
        capture_output=True,
        text=True,
    ).stdout.strip()
    if origin and Path(origin).is_dir():  # a local clone: origin is a path
        candidates.append(Path(origin).resolve().parent / "shared" / "data")
    return next((c for c in candidates if c.is_dir()), candidates[0])


SHARED_DATA = find_shared_data()
SOLO_MISSING = (
    "solo-learn is not installed: install it from https://github.com/vturrisi/solo-learn "
    "(README: Install) to run the plugin tests"
)


def require_solo() -> None:
    """Skips the calling test (with the reason above) only when solo-learn is absent."""
    pytest.importorskip("solo.methods", reason=SOLO_MISSING)


@pytest.fixture(scope="session")
def cifar1k(tmp_path_factory) -> Path:
    """The real 1,000-image CIFAR-10 fixture (100 test images per class), extracted."""
    archive = SHARED_DATA / "cifar10_test_1000_jpg.tar.gz"
    if not archive.is_file():
        pytest.skip(f"{archive} not found (set EFFSSL_SHARED_DATA to the shared data folder)")
    out = tmp_path_factory.mktemp("cifar1k")
    with tarfile.open(archive) as tar:
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
