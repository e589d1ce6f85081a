"""Bad input fails fast with one clear line naming the key or path, exit status 2, and
nothing written. One test per row of the README's error table."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest
from conftest import REPO, compose, make_image_folder, python_cmd, require_solo

require_solo()

from effssl_plugin.errors import ConfigError, DataError, EffSSLError  # noqa: E402
from effssl_plugin.main_pretrain import pretrain  # noqa: E402

BASE = [
    "machine=cpu",
    "dataset=custom_lowres",
    "data.num_workers=0",
    "backbone.kwargs.model_name=resnet10t",
    "method_kwargs.proj_hidden_dim=32",
    "method_kwargs.proj_output_dim=16",
    "method_kwargs.num_negatives=8",
    "optimizer.batch_size=4",
    "max_epochs=1",
]


@pytest.fixture
def data(tmp_path) -> Path:
    return make_image_folder(tmp_path / "data", classes=3, per_class=6)


@pytest.fixture
def workdir(tmp_path, monkeypatch) -> Path:
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)
    return work


def run_in_process(overrides: list[str], data: Path | None, val: str | None = "same"):
    paths = []
    if data is not None:
        paths.append(f"data.train_path={data}")
    paths.append(f"data.val_path={data if val == 'same' else val}")
    return pretrain(compose("effssl", [*BASE, *paths, *overrides]))


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
]


@pytest.mark.parametrize("case", CASES, ids=[c[0] for c in CASES])
def test_config_errors(case, data, workdir):
    _, overrides, error, pattern = case
    with pytest.raises(error, match=pattern):
        run_in_process(overrides, data)
    assert not (workdir / "trained_models").exists()  # nothing half-written


def test_missing_train_path(tmp_path, workdir):
    with pytest.raises(DataError, match=rf"data\.train_path={tmp_path}/nope does not exist"):
        run_in_process([], tmp_path / "nope", val=None)
    assert not (workdir / "trained_models").exists()


def test_unset_train_path(workdir):
    with pytest.raises(ConfigError, match=r"data\.train_path is missing"):
        run_in_process([], None, val=None)


def test_empty_train_path(tmp_path, workdir):
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match=r"data\.train_path=.*empty is empty or not a folder"):
        run_in_process([], tmp_path / "empty", val=None)


def test_missing_val_path_when_validation_is_on(data, tmp_path, workdir):
    with pytest.raises(DataError, match=r"data\.val_path=.*/noval does not exist"):
        run_in_process([], data, val=str(tmp_path / "noval"))
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


def test_resume_with_other_classes_is_refused(data, tmp_path, workdir):
    run_in_process([], data)
    other = tmp_path / "other"
    shutil.copytree(data, other)
    shutil.move(str(other / "class2"), str(other / "class3"))
    make_image_folder(other, classes=3, per_class=6)  # class0..2 again: 4 classes, 24 images
    with pytest.raises(ConfigError, match=r"trained on 3 classes but data\.train_path has 4"):
        run_in_process(["method_kwargs.reinit_bank_on_resume=true"], other)


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


def test_cli_error_is_one_line_and_exit_status_2(data, workdir):
    out = run_cli([*BASE, f"data.train_path={data}", "method_kwargs.kl_power=2"], workdir)
    assert out.returncode == 2
    errors = [line for line in out.stderr.splitlines() if "error" in line.lower()]
    assert errors == [
        "effssl-pretrain: error: method_kwargs.kl_power must be in (0, 1), got 2",
    ]
    assert not (workdir / "trained_models").exists()


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


def test_cli_misspelled_key_is_named_by_hydra(data, workdir):
    out = run_cli([*BASE, f"data.train_path={data}", "method_kwargs.temprature=0.1"], workdir)
    assert out.returncode != 0
    assert "method_kwargs.temprature" in out.stderr
    assert not (workdir / "trained_models").exists()


def test_every_error_is_an_effssl_error():
    assert all(issubclass(case[2], EffSSLError) for case in CASES)
