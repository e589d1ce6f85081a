"""The Hydra configs: every dataset preset takes its augmentation pipeline from the
``augmentations`` config group, the package data ships every config, and starting Hydra
(our configs, or any other app) imports nothing heavy and changes no global state."""

from __future__ import annotations

import glob
import subprocess
import sys

import pytest
from conftest import REPO, compose
from omegaconf import OmegaConf

CONFIGS = REPO / "configs"
PRETRAIN_CONFIGS = ("effssl", "simclr", "byol", "mocov2plus")

# preset: (its pipeline in configs/augmentations/, crop size, Gaussian blur probability)
PRESETS = {
    "cifar10": ("cifar", 32, 0.0),
    "cifar100": ("cifar", 32, 0.0),
    "stl10": ("stl10", 96, 0.5),
    "imagenet100": ("imagenet", 224, 0.5),
    "imagenet": ("imagenet", 224, 0.5),
    "custom": ("custom", 224, 0.5),
    "custom_lowres": ("custom_lowres", 32, 0.0),
}


def test_every_preset_and_pipeline_file_is_listed_here():
    assert sorted(p.stem for p in (CONFIGS / "dataset").glob("*.yaml")) == sorted(PRESETS)
    pipelines = {pipeline for pipeline, _, _ in PRESETS.values()}
    assert sorted(p.stem for p in (CONFIGS / "augmentations").glob("*.yaml")) == sorted(pipelines)


@pytest.mark.parametrize("preset", sorted(PRESETS))
def test_each_preset_selects_one_pipeline_at_its_crop_size(preset):
    pipeline, crop, blur = PRESETS[preset]
    preset_file = OmegaConf.load(CONFIGS / "dataset" / f"{preset}.yaml")
    assert "augmentations" not in preset_file  # only through the defaults list
    assert {"/augmentations": pipeline} in list(preset_file.defaults)
    for config in PRETRAIN_CONFIGS:
        cfg = compose(config, [f"dataset={preset}"])
        (views,) = cfg.augmentations  # exactly one pipeline
        assert views.crop_size == crop
        assert views.num_crops == cfg.num_views == (1 if config == "effssl" else 2)
        assert views.gaussian_blur.prob == blur
        assert (views.rrc.crop_min_scale, views.color_jitter.prob) == (0.2, 0.8)


#: the presets whose data.pipeline default is the batched tensor pipeline (protocol 04's rule:
#: low-resolution presets only, after its 12 runs showed no separation; docs/BENCHMARKS.md 5c)
TENSOR_PRESETS = ("cifar10", "cifar100", "stl10", "custom_lowres")


@pytest.mark.parametrize("preset", sorted(PRESETS))
def test_low_resolution_presets_default_to_the_tensor_pipeline_and_pil_is_one_setting_away(preset):
    want = "tensor" if preset in TENSOR_PRESETS else "pil"
    for config in PRETRAIN_CONFIGS:
        assert compose(config, [f"dataset={preset}"]).data.pipeline == want, config
    assert compose("effssl", [f"dataset={preset}", "data.pipeline=pil"]).data.pipeline == "pil"
    from effssl_plugin.checks import TENSOR_PRESETS as NAMED_IN_ERRORS

    assert NAMED_IN_ERRORS == TENSOR_PRESETS  # the check pass's error names the same presets


def test_pipelines_can_be_swapped_and_edited_from_the_command_line():
    cfg = compose("effssl", ["dataset=cifar10", "augmentations=stl10"])
    assert (cfg.data.dataset, cfg.augmentations[0].crop_size) == ("cifar10", 96)
    cfg = compose("effssl", ["dataset=stl10", "augmentations.0.crop_size=64"])
    assert cfg.augmentations[0].crop_size == 64
    cfg = compose("effssl", ["dataset=custom", "data.crop_size=160"])
    assert cfg.augmentations[0].crop_size == 160


@pytest.mark.parametrize("config", PRETRAIN_CONFIGS)
def test_every_pretrain_config_states_its_warm_up_so_it_can_be_overridden(config):
    """A key missing from a config is refused on the command line (Hydra's struct mode:
    ``Key 'warmup_epochs' is not in struct``), and solo-learn would fill in its default of
    10 warm-up epochs unseen: every method's config states it (issue 27)."""
    stated = OmegaConf.load(CONFIGS / f"{config}.yaml").scheduler
    assert {"name", "warmup_epochs", "interval"} <= set(stated)
    assert stated.warmup_epochs == (0 if config == "effssl" else 10)  # the recipes' values
    cfg = compose(config, ["scheduler.warmup_epochs=1"])
    assert cfg.scheduler.warmup_epochs == 1


def test_package_data_ships_every_config_file():
    """A non-editable install copies only the package data: every YAML under configs/ must
    match one of pyproject's patterns for ``effssl_plugin.configs``."""
    tomllib = pytest.importorskip("tomllib")  # Python >= 3.11
    pyproject = tomllib.loads((REPO / "pyproject.toml").read_text())
    patterns = pyproject["tool"]["setuptools"]["package-data"]["effssl_plugin.configs"]
    shipped = {f for p in patterns for f in glob.glob(p, root_dir=CONFIGS, recursive=True)}
    on_disk = {str(p.relative_to(CONFIGS)) for p in CONFIGS.rglob("*.yaml")}
    assert on_disk and on_disk <= shipped


# what a Hydra start must not import: the heavy libraries, and our solo-learn side
HEAVY = ("torch", "solo", "timm", "lightning", "effssl_plugin.method")
REPORT = "print(sorted(m for m in {heavy} if m in sys.modules), warnings.filters == before)"

BARE_COMPOSE = f"""
import sys, warnings
from hydra import compose, initialize_config_module
before = list(warnings.filters)
with initialize_config_module("effssl_plugin.configs", version_base="1.2"):
    cfg = compose("effssl", ["machine=cpu"])
assert isinstance(cfg.data.num_workers, int) and cfg.data.num_workers >= 1  # the resolver
{REPORT.format(heavy=HEAVY)}
"""

UNRELATED_APP = f"""
import sys, warnings
import hydra
before = list(warnings.filters)

@hydra.main(version_base=None)
def main(cfg):
    {REPORT.format(heavy=HEAVY)}

main()
"""


@pytest.mark.slow  # starts Python processes
@pytest.mark.parametrize("script", [BARE_COMPOSE, UNRELATED_APP], ids=["compose", "other_app"])
def test_starting_hydra_imports_nothing_heavy_and_adds_no_warning_filter(script, tmp_path):
    (tmp_path / "app.py").write_text(script)
    proc = subprocess.run(
        [sys.executable, "app.py"], cwd=tmp_path, capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.split() == ["[]", "True"], proc.stdout + proc.stderr[-3000:]


SOLO_APP_IMPORTING_LATE = """
import sys
import hydra

@hydra.main(version_base="1.2", config_path="pkg://effssl_plugin.configs", config_name="effssl")
def main(cfg):
    assert "solo" not in sys.modules
    import solo.methods
    import solo.methods.base as solo_base
    import solo.utils.knn as solo_knn
    print(
        isinstance(cfg.data.num_workers, int),
        "effssl" in solo.methods.METHODS,
        "timm" in solo_base.BaseMethod._BACKBONES,
        solo_knn.WeightedKNNClassifier.__name__,
        type(sys.modules["solo"].__loader__).__name__,  # solo-learn keeps its own loader
        [type(f).__name__ for f in sys.meta_path if "Solo" in type(f).__name__],  # hook gone
    )

main()
"""


@pytest.mark.slow  # starts a Python process that imports solo-learn
def test_a_hydra_app_that_imports_solo_later_gets_effssl_registered(tmp_path):
    """solo-learn's scripts import it before Hydra starts (the plugin registers at once:
    test_plugin's search-path test); an app importing it later is registered on import."""
    pytest.importorskip("solo.methods")
    (tmp_path / "app.py").write_text(SOLO_APP_IMPORTING_LATE)
    proc = subprocess.run(
        [sys.executable, "app.py", "machine=cpu"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    expected = ["True", "True", "True", "WeightedKNNClassifierTM1", "SourceFileLoader", "[]"]
    assert proc.stdout.split() == expected, proc.stdout + proc.stderr[-3000:]


def test_the_torch_floor_is_true():
    """The package calls ``torch.get_autocast_dtype`` and ``torch.is_autocast_enabled`` with a
    device type, which torch added in 2.4: pyproject's floor must say >= 2.4 (it said 2.1,
    and every step raised TypeError on an older torch), and the README the same."""
    import re

    from packaging.requirements import Requirement
    from packaging.version import Version

    tomllib = pytest.importorskip("tomllib")  # Python >= 3.11
    package = "\n".join(p.read_text() for p in (REPO / "effssl_plugin").glob("*.py"))
    assert "torch.get_autocast_dtype(" in package  # the reason for the floor
    deps = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["dependencies"]
    (torch_req,) = [Requirement(d) for d in deps if Requirement(d).name == "torch"]
    (floor,) = [Version(s.version) for s in torch_req.specifier if s.operator == ">="]
    assert floor >= Version("2.4")
    assert re.search(rf"torch >= {re.escape(str(floor))}\b", (REPO / "README.md").read_text())
