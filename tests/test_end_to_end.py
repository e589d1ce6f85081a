"""End to end, as a user runs it: `python main_pretrain.py --config-name effssl` on the real
300-image CIFAR-10 fixture shipped in tests/data, then effssl-linear and effssl-knn on its
checkpoint, then a resumed run."""

from __future__ import annotations

import csv
import json
import os
import subprocess
from pathlib import Path

import pytest
import torch
from conftest import REPO, host_warnings, python_cmd, require_solo

require_solo()

pytestmark = pytest.mark.slow  # subprocess training runs


def pretrain_cmd(data: Path, max_epochs: int, *extra: str) -> list[str]:
    return python_cmd(
        str(REPO / "main_pretrain.py"),
        "--config-name",
        "effssl",
        "machine=cpu",
        "dataset=custom_lowres",
        f"data.train_path={data}",
        f"data.val_path={data}",
        f"max_epochs={max_epochs}",
        "optimizer.batch_size=50",
        "method_kwargs.num_negatives=200",
        "data.num_workers=1",
        "+limit_train_batches=4",
        *extra,
    )


def run(cmd: list[str], cwd: Path, timeout: int = 600) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    proc = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, timeout=timeout, env=env)
    assert proc.returncode == 0, f"{cmd} failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    assert host_warnings(proc.stderr) == [], proc.stderr  # the entry points hide them
    return proc


def metrics_rows(run_dir: Path) -> list[dict[str, str]]:
    rows = []
    for path in sorted(run_dir.glob("logs/version_*/metrics.csv")):
        with open(path) as f:
            rows += [{k: v for k, v in r.items() if v != ""} for r in csv.DictReader(f)]
    return rows


@pytest.fixture(scope="module")
def pretrained(cifar300, tmp_path_factory):
    work = tmp_path_factory.mktemp("e2e")
    proc = run(pretrain_cmd(cifar300, max_epochs=2), cwd=work)
    (run_dir,) = (work / "trained_models" / "effssl").iterdir()
    return work, run_dir, proc


def test_pretrain_writes_checkpoint_args_and_logs_knn(pretrained):
    work, run_dir, proc = pretrained
    assert "Calibrating memory bank" in proc.stderr + proc.stdout  # progress bars
    assert "Epoch 1" in proc.stderr + proc.stdout
    ckpts = sorted(run_dir.glob("*.ckpt"))
    assert [c.name.split("-ep=")[1] for c in ckpts] == ["1.ckpt"]  # keep_last=1
    assert not list(run_dir.glob("*.tmp"))
    args = json.loads((run_dir / "args.json").read_text())
    assert args["method"] == "effssl" and args["method_kwargs"]["num_samples"] == 300
    state = torch.load(ckpts[0], map_location="cpu")  # weights_only=True by default
    assert state["epoch"] == 1 and state["global_step"] == 8
    assert bool(state["state_dict"]["bank.filled"])
    rows = metrics_rows(run_dir)
    knn = [float(r["val_knn_acc1"]) for r in rows if "val_knn_acc1" in r]
    assert len(knn) == 2 and all(0 <= a <= 100 for a in knn)
    assert any(float(r.get("train_ce_loss_epoch", "nan")) > 0 for r in rows)
    logged = set().union(*rows)
    for key in (
        "train_ce_loss_epoch",
        "train_kl_loss_epoch",
        "train_own_prob_epoch",
        "train_entropy_epoch",
        "bank_staleness_epoch",
        "bank_rows_written_epoch",
        "val_acc1",
    ):
        assert key in logged, key


def test_effssl_knn_and_linear_on_the_checkpoint(pretrained):
    work, run_dir, _ = pretrained
    out = work / "knn.json"
    run(
        python_cmd(
            "-m",
            "effssl_plugin.main_knn",
            str(run_dir),
            "--k",
            "10",
            "50",
            "--num-workers",
            "1",
            "--output",
            str(out),
        ),
        cwd=work,
    )
    result = json.loads(out.read_text())
    assert result["num_train"] == result["num_val"] == 300
    assert [r["k"] for r in result["results"]] == [10, 50]
    assert all(10 < r["acc1"] <= 100 for r in result["results"])

    proc = run(
        python_cmd(
            "-m",
            "effssl_plugin.main_linear",
            f"pretrained_feature_extractor={run_dir}",
            "machine=cpu",
            "max_epochs=1",
            "data.num_workers=1",
            "optimizer.batch_size=50",
            "+limit_train_batches=3",
        ),
        cwd=work,
    )
    assert "Final: " in proc.stdout and "val_acc1=" in proc.stdout
    (linear_dir,) = (work / "trained_models" / "linear").iterdir()
    assert list(linear_dir.glob("*.ckpt"))
    acc = [float(r["val_acc1"]) for r in metrics_rows(linear_dir) if "val_acc1" in r]
    assert len(acc) == 1 and 0 <= acc[0] <= 100


def test_resumed_run_continues_without_recalibrating(pretrained, cifar300):
    """Extending a finished run: resume_from_checkpoint with a larger max_epochs."""
    work, run_dir, _ = pretrained
    proc = run(pretrain_cmd(cifar300, 3, f"resume_from_checkpoint={run_dir}"), cwd=work)
    output = proc.stdout + proc.stderr
    assert "Resuming from checkpoint" in output
    assert "Calibrating memory bank" not in output
    assert [p.name for p in (work / "trained_models" / "effssl").iterdir()] == [run_dir.name]
    (ckpt,) = run_dir.glob("*.ckpt")
    state = torch.load(ckpt, map_location="cpu")
    assert ckpt.name.endswith("-ep=2.ckpt") and state["epoch"] == 2
    assert state["global_step"] == 12  # 8 steps before the resume + 4
    assert int(state["state_dict"]["bank.num_updates"]) == 12
    epochs = {int(r["epoch"]) for r in metrics_rows(run_dir) if "val_knn_acc1" in r}
    assert epochs == {0, 1, 2}
