"""Bad input fails fast with one clear line naming the key or path, exit status 2, and
nothing written. One test per row of the README's error table.

The checks are pure functions (:mod:`effssl_plugin.checks`): most tests call the one check
pass directly on a composed config and this filesystem's facts; a few run the launcher to show
that it stops before anything is built or written, and the slow ones the real command line."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import REPO, TINY_EFFSSL, compose, make_image_folder, python_cmd, require_solo

require_solo()

from effssl_plugin.checks import check_inputs  # noqa: E402
from effssl_plugin.config import describe_inputs  # noqa: E402
from effssl_plugin.errors import ConfigError, DataError, EffSSLError  # noqa: E402
from effssl_plugin.main_pretrain import pretrain  # noqa: E402

BASE = [*TINY_EFFSSL, "max_epochs=1"]


def compose_run(overrides: list[str], data: Path | None, val: str | None = "same"):
    """The config of a tiny run on ``data`` (val: the same folder, another path, or none)."""
    paths = []
    if data is not None:
        paths.append(f"data.train_path={data}")
    paths.append(f"data.val_path={data if val == 'same' else val}")
    return compose("effssl", [*BASE, *paths, *overrides])


def run_in_process(overrides: list[str], data: Path | None, val: str | None = "same"):
    """The launcher, in this process."""
    return pretrain(compose_run(overrides, data, val))


def check(overrides: list[str], data: Path | None, val: str | None = "same") -> None:
    """The launcher's one check pass, on this filesystem's facts."""
    cfg = compose_run(overrides, data, val)
    check_inputs(cfg, describe_inputs(cfg))


CASES = [
    # (id, overrides, error type, message regex)
    ("view_count", ["num_views=2"], ConfigError, r"exactly one view .* 2 crops"),
    (
        "negatives_vs_rows",
        ["method_kwargs.num_negatives=18"],
        ConfigError,
        r"method_kwargs\.num_negatives=18 must be smaller than the number of bank rows \(18",
    ),
    (
        "bank_update",
        ["method_kwargs.bank_update=sgd"],
        ConfigError,
        r"method_kwargs\.bank_update must be one of \['grad', 'ema'\], got 'sgd'",
    ),
    (
        "bank_init",
        ["method_kwargs.bank_init=zeros"],
        ConfigError,
        r"method_kwargs\.bank_init must be one of \['calibrate', 'random'\]",
    ),
    (
        "bank_dtype",
        ["method_kwargs.bank_dtype=float64"],
        ConfigError,
        r"method_kwargs\.bank_dtype must be one of \['float32', 'float16', 'bfloat16'\]",
    ),
    (
        "batch_too_large",
        ["optimizer.batch_size=19"],
        ConfigError,
        r"optimizer\.batch_size=19 x 1 process\(es\) = 19 is larger than the training set \(18",
    ),
    (
        "temperature",
        ["method_kwargs.temperature=0"],
        ConfigError,
        r"method_kwargs\.temperature must be > 0, got 0",
    ),
    (
        "kl_temperature",
        ["method_kwargs.kl_temperature=-1"],
        ConfigError,
        r"method_kwargs\.kl_temperature must be > 0",
    ),
    ("kl_power_high", ["method_kwargs.kl_power=1.5"], ConfigError, r"kl_power must be in \(0, 1\)"),
    ("kl_power_zero", ["method_kwargs.kl_power=0"], ConfigError, r"kl_power must be in \(0, 1\)"),
    (
        "unknown_method_key",
        ["+method_kwargs.temprature=0.1"],
        ConfigError,
        r"unknown key method_kwargs\.temprature for effssl\. Did you mean: temperature",
    ),
    ("unknown_method", ["method=simclrr"], ConfigError, r"method='simclrr' is unknown\. Did you"),
    # choice typos
    (
        "checkpoint_bank",
        ["checkpoint.bank=ful"],
        ConfigError,
        r"checkpoint\.bank must be one of \['full', 'bfloat16', 'none_at_end'\], got 'ful'",
    ),
    (
        "bank_matmul",
        ["method_kwargs.bank_matmul=fp8"],
        ConfigError,
        r"method_kwargs\.bank_matmul must be one of \['auto', 'float32', 'bfloat16', 'float16'\]",
    ),
    (
        "data_format",
        ["data.format=dalli"],
        ConfigError,
        r"data\.format must be one of \['image_folder', 'dali', 'h5'\], got 'dalli'",
    ),
    ("dataset", ["data.dataset=cifar11"], ConfigError, r"data\.dataset='cifar11' is not one of"),
    (
        "num_samples_given",
        ["method_kwargs.num_samples=17"],
        ConfigError,
        r"method_kwargs\.num_samples=17 but the training set has 18 images",
    ),
]

#: checks of the backbone builder (they need timm's models): through the launcher
BACKBONE_CASES = [
    (
        "timm_name",
        ["backbone.kwargs.model_name=resnet81"],
        ConfigError,
        r"backbone\.kwargs\.model_name='resnet81' is not a timm model\. Did you mean: .*resnet18",
    ),
    (
        "low_res_family",
        ["backbone.kwargs.model_name=regnetx_002"],
        ConfigError,
        r"backbone\.kwargs\.low_res.*regnetx_002",
    ),
]


@pytest.mark.parametrize("case", CASES, ids=[c[0] for c in CASES])
def test_config_errors(case, data, workdir):
    _, overrides, error, pattern = case
    with pytest.raises(error, match=pattern):
        check(overrides, data)
    assert list(workdir.iterdir()) == []  # the checks write nothing


@pytest.mark.parametrize("case", BACKBONE_CASES, ids=[c[0] for c in BACKBONE_CASES])
def test_backbone_errors(case, data, workdir):
    _, overrides, error, pattern = case
    with pytest.raises(error, match=pattern):
        run_in_process(overrides, data)
    assert not (workdir / "trained_models").exists()  # nothing half-written


def test_checkpoint_bank_typo_stops_before_the_dataset_is_built(workdir, monkeypatch):
    """A ``checkpoint.bank`` typo is refused by the check pass, before the launcher builds
    (here: downloads) the training set; it was found only when the checkpointer was built."""
    import effssl_plugin.data

    def no_build(cfg):
        raise AssertionError("the dataset was built before the config was checked")

    monkeypatch.setattr(effssl_plugin.data, "build_pretrain_dataset", no_build)
    with pytest.raises(ConfigError, match=r"^checkpoint\.bank must be one of .*got 'ful'$"):
        pretrain(compose("effssl", [*CIFAR_BASE, "checkpoint.bank=ful"]))
    assert list(workdir.iterdir()) == []  # no ./datasets download folder


def test_timm_model_typo_stops_before_the_dataset_is_built(workdir, monkeypatch):
    """A timm model-name typo is refused by the check pass too, before the launcher builds
    (here: downloads) the training set; it was found only when the model was built."""
    import effssl_plugin.data

    def no_build(cfg):
        raise AssertionError("the dataset was built before the backbone was checked")

    monkeypatch.setattr(effssl_plugin.data, "build_pretrain_dataset", no_build)
    pattern = r"^backbone\.kwargs\.model_name='resnet81' is not a timm model\. Did you mean"
    with pytest.raises(ConfigError, match=pattern):
        pretrain(compose("effssl", [*CIFAR_BASE, "backbone.kwargs.model_name=resnet81"]))
    assert list(workdir.iterdir()) == []


def test_config_error_stops_the_launcher_before_anything_is_written(data, workdir):
    """One ConfigError and one DataError through the launcher: nothing is written."""
    with pytest.raises(ConfigError, match=r"optimizer\.batch_size=19 x 1 process\(es\)"):
        run_in_process(["optimizer.batch_size=19"], data)
    with pytest.raises(DataError, match=r"data\.val_path=.*/noval does not exist"):
        run_in_process([], data, val=str(workdir.parent / "noval"))
    assert list(workdir.iterdir()) == []


def test_missing_train_path(tmp_path, workdir):
    with pytest.raises(DataError, match=rf"data\.train_path={tmp_path}/nope does not exist"):
        check([], tmp_path / "nope", val=None)
    assert not (workdir / "trained_models").exists()


def test_unset_train_path(workdir):
    with pytest.raises(ConfigError, match=r"data\.train_path is missing"):
        check([], None, val=None)


def test_empty_train_path(tmp_path, workdir):
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match=r"data\.train_path=.*empty is empty or not a folder"):
        check([], tmp_path / "empty", val=None)


def test_missing_val_path_when_validation_is_on(data, tmp_path, workdir):
    with pytest.raises(DataError, match=r"data\.val_path=.*/noval does not exist"):
        check([], data, val=str(tmp_path / "noval"))
    assert not (workdir / "trained_models").exists()


def test_resume_with_a_different_dataset_size_is_refused_unless_asked(data, tmp_path, workdir):
    run_in_process([], data)  # 18 images: a finished run with a checkpoint
    bigger = tmp_path / "bigger"
    shutil.copytree(data, bigger)
    for i in range(3):  # three more images in an existing class
        shutil.copy(bigger / "class0" / "000.png", bigger / "class0" / f"extra{i}.png")
    before = sorted(p.name for p in (workdir / "trained_models" / "effssl").rglob("*"))
    with pytest.raises(ConfigError, match=r"memory bank is 18 x 16 but this run's is 21 x 16"):
        run_in_process([], bigger)
    after = sorted(p.name for p in (workdir / "trained_models" / "effssl").rglob("*"))
    assert before == after  # nothing written
    (old_run,) = (workdir / "trained_models" / "effssl").iterdir()
    run_dir = run_in_process(
        [
            "method_kwargs.reinit_bank_on_resume=true",
            f"resume_from_checkpoint={old_run}",
            "max_epochs=2",  # one more epoch on the bigger dataset
        ],
        bigger,
    )
    import torch

    (ckpt,) = run_dir.glob("*.ckpt")
    state = torch.load(ckpt, map_location="cpu")["state_dict"]
    assert run_dir.name == old_run.name and ckpt.name.endswith("-ep=1.ckpt")
    assert state["bank.weight"].shape[0] == 21 and (state["bank.last_write"] >= 0).all()


def _resume_cfg(overrides: list[str]):
    """A parsed-like effssl config of 18 images in 3 classes, bank 18 x 16."""
    return compose("effssl", [*BASE, "method_kwargs.num_samples=18", *overrides])


def test_resume_with_other_classes_is_refused():
    from effssl_plugin.checks import CheckpointFacts, check_resume

    ckpt = CheckpointFacts("run/a.ckpt", epochs=1, classifier_classes=3, bank_shape=(24, 16))
    cfg = _resume_cfg(["method_kwargs.reinit_bank_on_resume=true"])
    with pytest.raises(ConfigError, match=r"trained on 3 classes but data\.train_path has 4"):
        check_resume(cfg, ckpt, num_classes=4)
    check_resume(cfg, ckpt, num_classes=3)  # same classes, bank re-initialised


def test_resume_decision_on_the_bank():
    from effssl_plugin.checks import CheckpointFacts, check_resume

    cfg = _resume_cfg(["max_epochs=3"])
    ckpt = CheckpointFacts("run/a.ckpt", epochs=1, classifier_classes=3, bank_shape=(21, 16))
    with pytest.raises(ConfigError, match=r"memory bank is 21 x 16 but this run's is 18 x 16"):
        check_resume(cfg, ckpt, num_classes=3)
    check_resume(_resume_cfg(["method_kwargs.reinit_bank_on_resume=true"]), ckpt, 3)
    omitted = CheckpointFacts("run/a.ckpt", epochs=1, bank_omitted=True)
    with pytest.raises(ConfigError, match=r"saved without its memory bank .* after 1 epochs"):
        check_resume(cfg, omitted, num_classes=3)
    check_resume(_resume_cfg(["max_epochs=1"]), omitted, 3)  # finished: nothing to continue


def test_corrupt_image_names_the_file_and_skip_flag_skips_it(data, workdir, caplog):
    bad = data / "class1" / "broken.png"
    bad.write_bytes(b"\x89PNG\r\n\x1a\n this is not an image")
    with pytest.raises(DataError, match=rf"cannot read image file {bad}"):
        run_in_process([], data, val=None)
    run_dir = run_in_process(["data.skip_corrupt_images=true"], data, val=None)
    assert "skipping 1 unreadable image(s)" in caplog.text and str(bad) in caplog.text
    import json

    args = json.loads((run_dir / "args.json").read_text())
    assert args["method_kwargs"]["num_samples"] == 18


# ---------------------------------------------------------- as a user sees it
def run_cli(args: list[str], cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        python_cmd(str(REPO / "main_pretrain.py"), "--config-name", "effssl", *args),
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )


@pytest.mark.slow  # subprocess launches
def test_cli_error_is_one_line_and_exit_status_2(data, workdir):
    out = run_cli([*BASE, f"data.train_path={data}", "method_kwargs.kl_power=2"], workdir)
    assert out.returncode == 2
    errors = [line for line in out.stderr.splitlines() if "error" in line.lower()]
    assert errors == [
        "effssl-pretrain: error: method_kwargs.kl_power must be in (0, 1), got 2",
    ]
    assert not (workdir / "trained_models").exists()


@pytest.mark.slow
def test_cli_corrupt_image_in_a_worker_process_names_the_file(data, workdir):
    bad = data / "class0" / "000.png"
    bad.write_bytes(b"garbage")
    out = run_cli(
        [*BASE, f"data.train_path={data}", "data.val_path=null", "data.num_workers=1"], workdir
    )
    assert out.returncode == 2
    assert (
        out.stderr.strip()
        .splitlines()[-1]
        .startswith(f"effssl-pretrain: error: cannot read image file {bad}: ")
    )


@pytest.mark.slow
def test_cli_misspelled_key_is_named_by_hydra(data, workdir):
    out = run_cli([*BASE, f"data.train_path={data}", "method_kwargs.temprature=0.1"], workdir)
    assert out.returncode != 0
    assert "method_kwargs.temprature" in out.stderr
    assert not (workdir / "trained_models").exists()


def test_every_error_is_an_effssl_error():
    assert all(issubclass(case[2], EffSSLError) for case in CASES)


# ------------------------------------- issue 10: a new user's first hour (bad input)
NUMERIC_CASES = [
    # (id, overrides, message)
    (
        "batch_size_zero",
        ["optimizer.batch_size=0"],
        "optimizer.batch_size must be an integer >= 1, got 0",
    ),
    ("lr_string", ["optimizer.lr=fast"], "optimizer.lr must be a number > 0, got 'fast'"),
    ("lr_negative", ["optimizer.lr=-0.1"], "optimizer.lr must be a number > 0, got -0.1"),
    (
        "weight_decay",
        ["optimizer.weight_decay=lots"],
        "optimizer.weight_decay must be a number >= 0",
    ),
    (
        "classifier_lr",
        ["optimizer.classifier_lr=0"],
        "optimizer.classifier_lr must be a number > 0",
    ),
    ("max_epochs_string", ["max_epochs=ten"], "max_epochs must be an integer >= -1, got 'ten'"),
    ("max_epochs_float", ["max_epochs=2.5"], "max_epochs must be an integer >= -1, got 2.5"),
    ("num_workers", ["data.num_workers=two"], "data.num_workers must be an integer >= 0"),
    ("warmup", ["scheduler.warmup_epochs=x"], "scheduler.warmup_epochs must be a number >= 0"),
    (
        "kl_weight_string",
        ["method_kwargs.kl_weight=high"],
        "method_kwargs.kl_weight must be a number",
    ),
    ("kl_power_string", ["method_kwargs.kl_power=half"], "method_kwargs.kl_power must be a number"),
    ("negatives_float", ["method_kwargs.num_negatives=8.5"], "num_negatives must be an integer"),
    ("proj_dim_bool", ["method_kwargs.proj_output_dim=true"], "proj_output_dim must be an integer"),
    (
        "max_epochs_zero",
        ["max_epochs=0"],
        "max_epochs must be >= 1 (or -1 with +max_steps/+max_time)",
    ),
    ("max_epochs_forever", ["max_epochs=-1"], "max_epochs=-1 with neither max_steps nor max_time"),
    (
        "max_epochs_forever_cosine",
        ["max_epochs=-1", "+max_steps=2"],
        "max_epochs=-1: scheduler.name=warmup_cosine needs a number of epochs",
    ),
]


@pytest.mark.parametrize("case", NUMERIC_CASES, ids=[c[0] for c in NUMERIC_CASES])
def test_numeric_keys_and_stopping_condition(case, data, workdir):
    _, overrides, message = case
    with pytest.raises(ConfigError) as err:
        check(overrides, data)
    assert message in str(err.value) and "\n" not in str(err.value)
    assert not (workdir / "trained_models").exists()


def test_every_numeric_key_is_checked():
    from effssl_plugin.config import NUMERIC_KEYS
    from effssl_plugin.settings import DEFAULT_METHOD_KWARGS

    assert {"optimizer.lr", "optimizer.batch_size", "max_epochs", "data.num_workers"} <= set(
        NUMERIC_KEYS
    )
    for key, default in DEFAULT_METHOD_KWARGS.items():
        numeric = isinstance(default, (int, float)) and not isinstance(default, bool)
        assert (f"method_kwargs.{key}" in NUMERIC_KEYS) == numeric, key


def test_max_epochs_minus_one_is_accepted_with_max_steps_and_no_epoch_scheduler(data):
    from effssl_plugin.config import parse_pretrain_cfg

    cfg = compose(
        "effssl",
        [*BASE, f"data.train_path={data}", "max_epochs=-1", "+max_steps=3", "scheduler.name=none"],
    )
    assert parse_pretrain_cfg(cfg).max_epochs == -1


def test_val_class_missing_from_train_is_named(data, tmp_path, workdir):
    val = make_image_folder(tmp_path / "val", classes=4, per_class=2)  # class0..class3
    with pytest.raises(DataError) as err:
        check([], data, val=str(val))
    message = str(err.value)
    assert f"data.val_path={val} has 1 class folder(s) that data.train_path={data} lacks" in message
    assert "(class3)" in message
    assert not (workdir / "trained_models").exists()


def test_dali_without_nvidia_dali_is_one_line(data, workdir, monkeypatch):
    """``data.format=dali`` where NVIDIA DALI cannot be imported (made so here even where it
    is installed). A folder DALI would list differently: tests/test_dali.py."""
    monkeypatch.setitem(sys.modules, "nvidia.dali", None)  # import nvidia.dali fails
    monkeypatch.delitem(sys.modules, "solo.data.dali_dataloader", raising=False)
    with pytest.raises(ConfigError, match=r"^data\.format=dali needs NVIDIA DALI: .*nvidia"):
        check(["data.format=dali"], data, val=None)
    assert list(workdir.iterdir()) == []


@pytest.mark.parametrize("val_name", ["test", "val"])
def test_dataset_root_as_train_path_is_refused(val_name, tmp_path, workdir):
    root = tmp_path / "cifar"
    make_image_folder(root / "train", classes=3, per_class=6)
    make_image_folder(root / val_name, classes=3, per_class=2)
    with pytest.raises(DataError) as err:
        check([], root, val=None)
    shown = ", ".join(sorted(["train/", f"{val_name}/"]))
    assert str(err.value) == (
        f"data.train_path={root} holds the split folders {shown}, not one folder per class: "
        f"use data.train_path={root}/train data.val_path={root}/{val_name}"
    )
    assert not (workdir / "trained_models").exists()


def test_dataset_root_as_val_path_is_refused(data, tmp_path, workdir):
    root = tmp_path / "root"
    make_image_folder(root / "train", classes=3, per_class=2)
    make_image_folder(root / "test", classes=3, per_class=2)
    with pytest.raises(
        DataError, match=r"data\.val_path=.*root holds the split folders test/, train/"
    ):
        check([], data, val=str(root))


def test_a_class_named_train_is_not_a_dataset_root(tmp_path, workdir, monkeypatch):
    from effssl_plugin.data import check_data_paths

    folder = make_image_folder(tmp_path / "vehicles", classes=1, per_class=2)
    (folder / "class0").rename(folder / "train")
    make_image_folder(folder, classes=2, per_class=2)  # train/, class0/, class1/
    cfg = compose("effssl", [*BASE, f"data.train_path={folder}", "data.val_path=null"])
    check_data_paths(cfg)  # no error


def _fail_download(*args, **kwargs):
    from urllib.error import URLError

    raise URLError("[Errno -3] Temporary failure in name resolution")


CIFAR_BASE = ["machine=cpu", "data.num_workers=0", "backbone.kwargs.model_name=resnet10t"]


@pytest.mark.parametrize("existing", [False, True], ids=["fresh", "existing_folder"])
def test_cifar_download_failure_is_one_line_and_leaves_nothing(existing, workdir, monkeypatch):
    import urllib.request

    monkeypatch.setattr(urllib.request, "urlopen", _fail_download)
    if existing:
        (workdir / "datasets").mkdir()
    with pytest.raises(DataError) as err:
        pretrain(compose("effssl", CIFAR_BASE))
    assert str(err.value) == (
        "CIFAR-10 could not be downloaded into data.train_path=./datasets ([Errno -3] Temporary "
        "failure in name resolution): give this machine network access, or train on JPEG/PNG "
        "class folders: python main_pretrain.py --config-name effssl dataset=custom_lowres "
        "data.train_path=<dir>/train data.val_path=<dir>/test"
    )
    assert sorted(p.name for p in workdir.iterdir()) == (["datasets"] if existing else [])
    assert not existing or not any((workdir / "datasets").iterdir())


@pytest.mark.slow  # subprocess launch
def test_cli_cifar_download_failure(workdir):
    code = (
        "import sys, urllib.error, urllib.request\n"
        "def fail(*a, **k):\n"
        "    raise urllib.error.URLError('no network')\n"
        "urllib.request.urlopen = fail\n"
        "sys.argv = ['main_pretrain.py', '--config-name', 'effssl', *sys.argv[1:]]\n"
        "from effssl_plugin.main_pretrain import main\n"
        "main()\n"
    )
    out = subprocess.run(
        python_cmd("-c", code, *CIFAR_BASE),
        cwd=workdir,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert out.returncode == 2, out.stderr
    assert "Traceback" not in out.stderr
    (line,) = [x for x in out.stderr.splitlines() if "error" in x.lower()]
    assert line.startswith("effssl-pretrain: error: CIFAR-10 could not be downloaded into ")
    assert "dataset=custom_lowres data.train_path=<dir>/train data.val_path=<dir>/test" in line
    assert list(workdir.iterdir()) == []


@pytest.mark.slow  # subprocess launch
def test_cli_string_for_a_number_is_one_line(data, workdir):
    out = run_cli([*BASE, f"data.train_path={data}", "optimizer.lr=fast"], workdir)
    assert out.returncode == 2
    assert "Traceback" not in out.stderr
    assert out.stderr.strip().splitlines()[-1] == (
        "effssl-pretrain: error: optimizer.lr must be a number > 0, got 'fast'"
    )
    assert not (workdir / "trained_models").exists()


# ------------------------------------------------------------ the check pass itself
def test_the_checks_import_no_torch_solo_or_lightning():
    code = (
        "import sys, effssl_plugin.checks\n"
        "print(*[m in sys.modules for m in ('torch', 'solo', 'lightning', 'hydra')])"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["False", "False", "False", "False"]


def test_the_size_known_before_building_is_imagefolders(tmp_path):
    """The check pass compares the batch with the training-set size before building it: the
    count must be ImageFolder's (nested folders walked, non-images left out)."""
    from torchvision.datasets import ImageFolder

    from effssl_plugin.data import count_train_images, describe_folder

    root = make_image_folder(tmp_path / "d", classes=2, per_class=3)
    make_image_folder(root / "class0" / "nested", classes=1, per_class=2)
    (root / "class1" / "notes.txt").write_text("not an image")
    (root / "class1" / "UPPER.PNG").write_bytes((root / "class1" / "000.png").read_bytes())
    cfg = compose("effssl", [*BASE, f"data.train_path={root}"])
    assert count_train_images(cfg, describe_folder(root)) == len(ImageFolder(str(root))) == 9
    skip = compose("effssl", [*BASE, f"data.train_path={root}", "data.skip_corrupt_images=true"])
    assert count_train_images(skip, describe_folder(root)) is None  # known after building


def test_the_checkpointer_refuses_a_bank_typo_itself(tmp_path):
    from effssl_plugin.checkpointing import AtomicCheckpointer

    cfg = compose("effssl", BASE)
    with pytest.raises(ConfigError, match=r"checkpoint\.bank must be one of .*got 'ful'"):
        AtomicCheckpointer(cfg, logdir=tmp_path, run_id="r1", bank="ful")
