"""A new user's first runs (issue 10): the end-of-run summary, a finished run started again,
log versions and ``hparams.yaml``, and the ``cpu`` machine preset's DataLoader workers."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from conftest import TINY_EFFSSL, compose, make_image_folder, require_solo

require_solo()

import effssl_plugin  # noqa: E402
from effssl_plugin.main_pretrain import pretrain  # noqa: E402
from effssl_plugin.run_layout import next_log_version  # noqa: E402

TINY = [*TINY_EFFSSL, "+limit_train_batches=1"]


def run(data: Path, *extra: str) -> Path:
    paths = [f"data.train_path={data}", f"data.val_path={data}"]
    return pretrain(compose("effssl", [*TINY, *paths, *extra]))


def tree(path: Path) -> dict[str, int]:
    return {str(p.relative_to(path)): p.stat().st_mtime_ns for p in sorted(path.rglob("*"))}


@pytest.mark.slow  # trains three tiny runs
def test_summary_finished_restart_and_log_versions(data, workdir, capsys):
    run_dir = run(data, "max_epochs=1")
    out = capsys.readouterr().out
    ckpt = next(run_dir.glob("*-ep=0.ckpt"))
    assert "Pretraining summary: 1 of max_epochs=1 epochs trained" in out
    assert f"  run directory: {run_dir}\n" in out and f"  checkpoint:    {ckpt}\n" in out
    assert re.search(r"  val_knn_acc1:  final \d+\.\d\d, best \d+\.\d\d \(epoch 1\)", out)
    assert re.search(r"  val_acc1:      final \d+\.\d\d, best \d+\.\d\d \(epoch 1\)", out)
    assert re.search(r"  wall time:     \d+:\d\d:\d\d", out)
    assert (run_dir / "logs" / "version_0" / "hparams.yaml").is_file()
    hparams = (run_dir / "logs" / "version_0" / "hparams.yaml").read_text()
    assert "method: effssl" in hparams and "max_epochs: 1" in hparams

    # the same command again: nothing to train, say so, write nothing (no log version)
    before = tree(run_dir)
    assert run(data, "max_epochs=1") == run_dir
    out = capsys.readouterr().out
    assert (
        f"Run {run_dir} already finished at epoch 1 (max_epochs=1): nothing to train. "
        "To train it longer (here to max_epochs=2): "
    ) in out
    assert f"resume_from_checkpoint={run_dir} max_epochs=2" in out
    assert "val_knn_acc1:  final" in out  # the finished run's summary, from its checkpoint
    assert tree(run_dir) == before

    # continued as the message says: the next log version is 1, not 2
    run(data, f"resume_from_checkpoint={run_dir}", "max_epochs=2")
    out = capsys.readouterr().out
    assert "Pretraining summary: 2 of max_epochs=2 epochs trained" in out
    assert re.search(r"wall time:     \d+:\d\d:\d\d \(\d+:\d\d:\d\d over 2 sessions\)", out)
    versions = sorted(p.name for p in (run_dir / "logs").iterdir())
    assert versions == ["version_0", "version_1"]
    assert (run_dir / "logs" / "version_1" / "hparams.yaml").is_file()


def test_log_versions_reuse_an_empty_folder_and_never_overwrite(tmp_path):
    logs = tmp_path / "logs"
    assert next_log_version(tmp_path) == 0
    (logs / "version_0").mkdir(parents=True)
    assert next_log_version(tmp_path) == 0  # left empty by an attempt that logged nothing
    (logs / "version_0" / "metrics.csv").write_text("epoch\n")
    (logs / "version_1").mkdir()
    assert next_log_version(tmp_path) == 1
    (logs / "version_3").mkdir()
    (logs / "version_3" / "metrics.csv").write_text("epoch\n")
    assert next_log_version(tmp_path) == 4


def test_cpu_preset_uses_the_available_cores(data, monkeypatch):
    from omegaconf import OmegaConf

    from effssl_plugin.config import parse_pretrain_cfg

    paths = [f"data.train_path={data}", f"data.val_path={data}"]
    monkeypatch.setattr(effssl_plugin._os, "sched_getaffinity", lambda _: set(range(8)), False)
    assert compose("effssl", ["machine=cpu"]).data.num_workers == 7  # one core for training
    assert compose("effssl", ["machine=cpu", "devices=2"]).data.num_workers == 3
    assert compose("effssl", ["machine=cpu", "data.num_workers=0"]).data.num_workers == 0
    assert compose("linear", ["machine=cpu"]).data.num_workers == 7
    parsed = parse_pretrain_cfg(compose("effssl", ["machine=cpu", *TINY[1:2], *paths]))
    assert OmegaConf.to_container(parsed)["data"]["num_workers"] == 7  # a number in args.json
    monkeypatch.setattr(effssl_plugin._os, "sched_getaffinity", lambda _: {0, 1}, False)
    assert compose("effssl", ["machine=cpu"]).data.num_workers == 1
    monkeypatch.setattr(effssl_plugin._os, "sched_getaffinity", lambda _: {0}, False)
    assert compose("effssl", ["machine=cpu"]).data.num_workers == 1


@pytest.mark.slow  # trains a tiny run
def test_max_epochs_minus_one_stops_on_max_steps(data, workdir, capsys):
    limits = ["max_epochs=-1", "+max_steps=2", "scheduler.name=none"]
    run_dir = run(data, *limits)
    assert "Pretraining summary: 2 of max_epochs=-1 epochs trained" in capsys.readouterr().out
    assert [p.name.rsplit("-", 1)[-1] for p in run_dir.glob("*.ckpt")] == ["ep=1.ckpt"]
    run(data, *limits)  # started again: finished
    out = capsys.readouterr().out
    assert f"Run {run_dir} already finished at step 2 (max_steps=2): nothing to train." in out
    assert f"resume_from_checkpoint={run_dir} +max_steps=4" in out


def test_val_folder_with_a_subset_of_the_classes_keeps_the_training_labels(data, tmp_path):
    from effssl_plugin.config import parse_pretrain_cfg
    from effssl_plugin.data import build_val_loader

    val = make_image_folder(tmp_path / "val", classes=3, per_class=2)
    (val / "class1").rename(tmp_path / "moved")  # val: class0, class2
    cfg = compose("effssl", [*TINY, f"data.train_path={data}", f"data.val_path={val}"])
    loader = build_val_loader(parse_pretrain_cfg(cfg), batch_size=4)
    labels = {Path(path).parent.name: target for path, target in loader.dataset.samples}
    assert labels == {"class0": 0, "class2": 2}  # not 1: class2 is the training set's third


def test_finished_message_names_the_way_to_continue_or_why_not(tmp_path):
    from effssl_plugin.summary import finished_message

    text = finished_message(tmp_path, "epoch 3", "max_epochs", 3, "python main_pretrain.py x=1")
    assert text == (
        f"Run {tmp_path} already finished at epoch 3 (max_epochs=3): nothing to train. To train "
        f"it longer (here to max_epochs=6): python main_pretrain.py x=1 "
        f"resume_from_checkpoint={tmp_path} max_epochs=6"
    )
    text = finished_message(tmp_path, "epoch 3", "max_epochs", 3, continuable=False)
    assert "cannot be continued" in text and "resume_from_checkpoint" not in text
