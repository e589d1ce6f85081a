"""The device scripts (benchmarks/gpu_prepare.sh, gpu_smoke.sh, gpu_suite.sh) and their checks
(benchmarks/gpu_checks.py): their CPU paths, which CI runs; the GPU paths need a device."""

from __future__ import annotations

import csv
import importlib.util
import io
import os
import shutil
import subprocess
import sys
import tarfile
from pathlib import Path
from types import SimpleNamespace

import pytest
from conftest import REPO, make_image_folder, require_solo

SCRIPTS = [
    REPO / "benchmarks" / name
    for name in ("gpu_prepare.sh", "gpu_smoke.sh", "gpu_suite.sh", "gpu_common.sh")
]


def load_checks():
    spec = importlib.util.spec_from_file_location("gpu_checks", REPO / "benchmarks/gpu_checks.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_scripts_parse_and_pass_shellcheck_where_installed():
    for script in SCRIPTS:
        proc = subprocess.run(["bash", "-n", str(script)], capture_output=True, text=True)
        assert proc.returncode == 0, f"{script.name}: {proc.stderr}"
        if script.name != "gpu_common.sh":
            assert script.read_text().splitlines()[1:].count("set -euo pipefail") == 1
    if shutil.which("shellcheck"):  # optional tool: checked where present, never a skip
        proc = subprocess.run(
            ["shellcheck", "-x", *map(str, SCRIPTS)], cwd=REPO, capture_output=True, text=True
        )
        assert proc.returncode == 0, proc.stdout


def test_the_carried_folder_is_ignored_by_git():
    proc = subprocess.run(
        ["git", "check-ignore", "-q", ".gpu/wheels/x.whl"], cwd=REPO, capture_output=True
    )
    if proc.returncode == 128:  # not a git checkout (an sdist): nothing can be committed
        return
    assert proc.returncode == 0


def write_archive(path: Path, per_class: int) -> None:
    with tarfile.open(path, "w:gz") as tar:
        for split in ("train", "test"):
            for cls in ("cat", "dog"):
                for i in range(per_class):
                    data = f"{split}/{cls}/{i}".encode()
                    info = tarfile.TarInfo(f"{split}/{cls}/{i:04d}.jpg")
                    info.size = len(data)
                    tar.addfile(info, io.BytesIO(data))
        info = tarfile.TarInfo("README")
        info.size = 0
        tar.addfile(info, io.BytesIO(b""))


def test_subset_takes_the_first_images_of_each_class(tmp_path):
    checks = load_checks()
    write_archive(tmp_path / "all.tar.gz", per_class=5)
    counts = checks.make_subset(tmp_path / "all.tar.gz", tmp_path / "sub.tar.gz", 3, 2)
    assert counts == {"test": 4, "train": 6}
    with tarfile.open(tmp_path / "sub.tar.gz") as tar:
        names = sorted(tar.getnames())
        assert tar.extractfile("train/dog/0002.jpg").read() == b"train/dog/2"
    assert names == sorted(
        [f"train/{c}/{i:04d}.jpg" for c in ("cat", "dog") for i in range(3)]
        + [f"test/{c}/{i:04d}.jpg" for c in ("cat", "dog") for i in range(2)]
    )


def test_epochs_for_a_budget_of_measured_steps(tmp_path):
    checks = load_checks()
    # 50,000 images at batch 512: 97 steps an epoch
    assert checks.epochs_for_budget(0.05, 240, 50_000, 512) == 49  # 4.85 s an epoch
    assert checks.epochs_for_budget(0.1, 240, 50_000, 512) == 24
    assert checks.epochs_for_budget(10.0, 1, 50_000, 512) == 1  # at least one
    table = tmp_path / "step_cost.csv"
    with open(table, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=["method", "median_s_per_step"])
        w.writeheader()
        w.writerows(
            [
                {"method": "effssl", "median_s_per_step": 0.05},
                {"method": "simclr", "median_s_per_step": 0.1},
            ]
        )
    proc = subprocess.run(
        [sys.executable, str(REPO / "benchmarks/gpu_checks.py"), "epochs", "--csv", str(table),
         "--budget", "240", "--train-images", "50000", "--batch", "512"],
        capture_output=True, text=True,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split("\n")[:2] == ["effssl 49", "simclr 24"]


def test_probe_expectations():
    checks = load_checks()
    start = {"when": "train start", "epoch": 2, "bank_device": "cuda:0", "knn_features_held": 0}
    ends = [
        {"when": "end of epoch 2", "epoch": 2, "bank_device": "cuda:0", "knn_features_held": 0,
         "cuda_allocated_mib": 100.0},
        {"when": "end of epoch 3", "epoch": 3, "bank_device": "cpu", "knn_features_held": 512,
         "cuda_allocated_mib": 300.0},
    ]  # fmt: skip
    args = SimpleNamespace(
        expect_start_epoch=2, expect_bank_device="cuda", no_knn_features=True, max_growth_mib=64
    )
    problems = checks.check_probe([start, *ends], args)
    assert problems == [
        "bank on cpu at end of epoch 3, expected cuda",
        "the online kNN holds training features with no validation: [('end of epoch 3', 512)]",
        "cuda_allocated_mib grew by 200.0 MiB from end of epoch 2 to end of epoch 3 "
        "(allowed: 64 MiB)",
    ]
    args.expect_start_epoch = 0
    assert checks.check_probe([start], args) == ["no training epoch ran"]
    assert "not resumed at epoch 0" in checks.check_probe([start, ends[0]], args)[0]


def test_online_knn_is_the_last_logged_epoch(tmp_path):
    checks = load_checks()
    for version, rows in enumerate([[("0", "20.5"), ("1", "31.0")], [("2", "35.25")]]):
        log = tmp_path / "logs" / f"version_{version}"
        log.mkdir(parents=True)
        with open(log / "metrics.csv", "w", newline="") as f:
            w = csv.writer(f)
            w.writerow(["epoch", "step", "val_knn_acc1", "train_loss"])
            w.writerow(["0", "3", "", "1.5"])  # a training row: no kNN
            w.writerows([[e, "9", acc, ""] for e, acc in rows])
    assert checks.online_knn(tmp_path) == (2, 35.25)


@pytest.mark.parametrize("case", ["ema", "fill", "columns"])
def test_an_out_of_range_bank_index_raises_on_the_cpu(case):
    """The check gpu_smoke.sh runs on CUDA (step 7), here on the CPU: the bank refuses the
    index with a clear error."""
    checks = load_checks()
    message = checks.bank_out_of_range("cpu", case)
    assert message.startswith("IndexError: bank index out of range"), message


def tiny_data(root: Path) -> Path:
    make_image_folder(root / "train", classes=3, per_class=8, size=32)
    make_image_folder(root / "test", classes=3, per_class=4, size=32)
    return root


@pytest.mark.slow
def test_smoke_script_cpu_path_passes_every_applicable_step(tmp_path):
    """``DEVICE=cpu bash benchmarks/gpu_smoke.sh`` on a tiny folder: every step passes but the
    two that need CUDA, which say so; the log, summary and results archive are written."""
    require_solo()
    data, out, work = tiny_data(tmp_path / "data"), tmp_path / "out", tmp_path / "work"
    env = {
        **os.environ,
        "DEVICE": "cpu",
        "DATA_DIR": str(data),
        "OUT": str(out),
        "WORK": str(work),
        "PYTHON": sys.executable,
        "OMP_NUM_THREADS": "1",
    }
    proc = subprocess.run(
        ["bash", str(REPO / "benchmarks" / "gpu_smoke.sh")],
        env=env,
        capture_output=True,
        text=True,
        timeout=1500,
    )
    summary = (out / "summary.txt").read_text().splitlines()
    assert proc.returncode == 0, "\n".join(summary) + proc.stdout[-5000:]
    results = dict(line.split(": ", 1) for line in summary if line[:1].isdigit())
    assert len(results) == 9, summary
    assert results.pop("1 sync test (tests/test_step_sync.py -k cuda)") == "skipped: no CUDA"
    assert results.pop("7 out-of-range bank index on CUDA") == "skipped: no CUDA"
    assert set(results.values()) == {"PASS"}, results
    assert summary[-1] == "smoke: 7 passed, 0 failed, 2 skipped"
    log = (out / "smoke.log").read_text()
    assert "online val_knn_acc1" in log and "Resuming from previous checkpoint" in log
    assert "[probe] end of epoch 1" in log and "checkpoint.bank=bfloat16: PASS" in log
    with tarfile.open(out / "smoke_results.tar.gz") as tar:
        names = tar.getnames()
    assert "results/knn_offline.json" in names and "results/noval_probe.json" in names
    assert "results/pipeline_rate.json" in names
    assert any(n.startswith("results/step_cost/step_cost_cpu_") for n in names)
    assert not [n for n in names if n.endswith(".ckpt")]
