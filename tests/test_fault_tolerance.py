"""Kills, restarts and atomic checkpoints: exact resume after SIGKILL mid-epoch (the state) and
after a stop (the whole trajectory), no truncated checkpoint for auto-resume, keep-last-N, a
non-finite loss stops cleanly."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from conftest import REPO, compose, make_image_folder, python_cmd, require_solo, tiny_overrides

require_solo()

from lightning.pytorch.callbacks import Callback  # noqa: E402
from omegaconf import OmegaConf  # noqa: E402

from effssl_plugin.checkpointing import AtomicCheckpointer, NewestCheckpointResumer  # noqa: E402
from effssl_plugin.main_pretrain import pretrain  # noqa: E402

PROBE = str(REPO / "tests" / "helpers" / "pretrain_probe.py")
STEPS_PER_EPOCH = 8  # 48 images, batch 6


def overrides(data: Path, max_epochs: int, *extra: str) -> list[str]:
    return tiny_overrides(data, max_epochs, 6, 16, *extra)


def probe_env(probe: Path, **extra: str) -> dict[str, str]:
    return {**os.environ, "EFFSSL_PROBE_DIR": str(probe), "PYTHONUNBUFFERED": "1", **extra}


@pytest.mark.slow
def test_sigkill_mid_epoch_then_same_command_resumes_exactly(tmp_path):
    data = make_image_folder(tmp_path / "data", classes=4, per_class=12)
    probe1, probe2 = tmp_path / "probe1", tmp_path / "probe2"
    cmd = python_cmd(PROBE, *overrides(data, 3))
    proc = subprocess.Popen(
        cmd,
        cwd=tmp_path,
        env=probe_env(probe1, EFFSSL_PROBE_SLEEP="0.4"),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    method_dir = tmp_path / "trained_models" / "effssl"
    deadline = time.time() + 300
    try:
        while time.time() < deadline:
            progress = probe1 / "progress.txt"
            step = int(progress.read_text() or -1) if progress.exists() else -1
            if list(method_dir.glob("*/*-ep=0.ckpt")) and step >= STEPS_PER_EPOCH + 2:
                break
            assert proc.poll() is None, "the run ended before it could be killed"
            time.sleep(0.1)
        else:
            pytest.fail("the run never reached the middle of epoch 1")
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    (run_dir,) = method_dir.iterdir()
    (ckpt,) = run_dir.glob("*.ckpt")
    assert ckpt.name.endswith("-ep=0.ckpt")
    saved = torch.load(ckpt, map_location="cpu")

    # the same command again
    out = subprocess.run(
        cmd, cwd=tmp_path, env=probe_env(probe2), capture_output=True, text=True, timeout=600
    )
    assert out.returncode == 0, out.stderr[-3000:]
    log = out.stdout + out.stderr
    assert "Resuming from previous checkpoint" in log and str(ckpt.name) in log
    assert "Calibrating memory bank" not in log
    start = torch.load(probe2 / "start_rank0.pt")
    assert start["filled"] is True
    assert torch.equal(start["bank"], saved["state_dict"]["bank.weight"])  # bit for bit
    assert start["num_updates"] == int(saved["state_dict"]["bank.num_updates"]) == STEPS_PER_EPOCH
    assert start["epoch"] == 1 and start["global_step"] == saved["global_step"] == STEPS_PER_EPOCH
    opt_saved = saved["optimizer_states"][0]["state"]
    opt_now = start["optimizer"]["state"]
    assert opt_saved.keys() == opt_now.keys() and opt_saved
    for key in opt_saved:
        assert torch.equal(opt_saved[key]["momentum_buffer"], opt_now[key]["momentum_buffer"])
    assert start["scheduler_last_epoch"] == saved["lr_schedulers"][0]["last_epoch"] == 1
    # finished in the same run directory, keeping the last checkpoint only
    assert [p.name for p in method_dir.iterdir()] == [run_dir.name]
    (final,) = run_dir.glob("*.ckpt")
    assert final.name.endswith("-ep=2.ckpt")
    assert torch.load(final, map_location="cpu")["global_step"] == 3 * STEPS_PER_EPOCH
    assert not list(run_dir.glob("*.tmp"))


class _StopAfter(Callback):
    """Stops the run after ``epochs`` epochs (after their checkpoint), as the studies' PAUSE."""

    def __init__(self, epochs: int) -> None:
        self.epochs = epochs

    def on_train_epoch_end(self, trainer, module) -> None:
        if trainer.current_epoch + 1 >= self.epochs:
            trainer.should_stop = True


def _train(data: Path, ckpt_dir: Path, pipeline: str, workers: int, stop_after: int = 0) -> dict:
    """A 3-epoch run's newest checkpoint (stopped after ``stop_after`` epochs if > 0)."""
    cfg = compose(
        "effssl",
        overrides(
            data,
            3,
            f"data.pipeline={pipeline}",
            f"data.num_workers={workers}",
            f"checkpoint.dir={ckpt_dir}",
            "checkpoint.frequency=1",
            "auto_resume.enabled=true",
            "seed=3",
        ),
    )
    pretrain(cfg, extra_callbacks=[_StopAfter(stop_after)] if stop_after else [])
    newest = max(ckpt_dir.rglob("*.ckpt"), key=lambda p: torch.load(p)["global_step"])
    return torch.load(newest, map_location="cpu")


@pytest.mark.slow
@pytest.mark.parametrize(("pipeline", "workers"), [("tensor", 0), ("pil", 0), ("pil", 2)])
def test_a_run_stopped_and_resumed_trains_exactly_as_one_that_never_stopped(
    tmp_path, pipeline, workers
):
    """Every epoch's shuffle, worker seeds, augmentations and CutMix are functions of (seed,
    epoch) (effssl_plugin.epoch_streams): before them, the resumed run drew other batches from
    its first resumed epoch on, and 88 of its 106 tensors ended different."""
    data = make_image_folder(tmp_path / "data", classes=4, per_class=12)
    straight = _train(data, tmp_path / "straight", pipeline, workers)
    _train(data, tmp_path / "resumed", pipeline, workers, stop_after=1)
    resumed = _train(data, tmp_path / "resumed", pipeline, workers)
    assert straight["global_step"] == resumed["global_step"] == 3 * STEPS_PER_EPOCH
    ours, theirs = straight["state_dict"], resumed["state_dict"]
    assert ours.keys() == theirs.keys() and "bank.weight" in ours
    differ = [k for k in ours if not torch.equal(ours[k], theirs[k])]
    assert not differ, f"{len(differ)} of {len(ours)} tensors differ, e.g. {differ[:3]}"
    momentum = [s["momentum_buffer"] for s in straight["optimizer_states"][0]["state"].values()]
    again = [s["momentum_buffer"] for s in resumed["optimizer_states"][0]["state"].values()]
    assert all(torch.equal(a, b) for a, b in zip(momentum, again, strict=True))


class _FakeStrategy:
    def barrier(self, *_):
        pass


def _fake_trainer(epoch: int, write) -> SimpleNamespace:
    return SimpleNamespace(
        sanity_checking=False,
        current_epoch=epoch,
        is_global_zero=True,
        max_epochs=100,
        logger=None,
        strategy=_FakeStrategy(),
        save_checkpoint=write,
    )


def _checkpointer(tmp_path: Path, keep_last: int = 1) -> AtomicCheckpointer:
    cfg = OmegaConf.create({"name": "run", "method": "effssl"})
    ck = AtomicCheckpointer(cfg, logdir=tmp_path, keep_last=keep_last, run_id="r1")
    ck.initial_setup(_fake_trainer(0, None))
    return ck


def test_a_kill_while_saving_leaves_no_checkpoint_that_auto_resume_picks(tmp_path):
    ck = _checkpointer(tmp_path)
    ck.save(_fake_trainer(0, lambda p: torch.save({"epoch": 0, "ok": True}, p)))
    (tmp_path / "r1" / "args.json").write_text('{"name": "run", "method": "effssl"}')

    def killed_midway(path):
        Path(path).write_bytes(b"PK\x03\x04 truncated")  # a partial zip, then the kill
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        ck.save(_fake_trainer(1, killed_midway))
    files = sorted(p.name for p in (tmp_path / "r1").iterdir())
    assert files == ["args.json", "run-r1-ep=0.ckpt", "run-r1-ep=1.ckpt.tmp"]
    ckpt, run_id = NewestCheckpointResumer(tmp_path).find_checkpoint(
        OmegaConf.create({"name": "run", "method": "effssl"})
    )
    assert Path(ckpt).name == "run-r1-ep=0.ckpt" and run_id == "r1"
    assert torch.load(ckpt)["ok"] is True


def test_keep_last_n_and_resume_picks_the_highest_epoch(tmp_path):
    ck = _checkpointer(tmp_path, keep_last=2)
    for epoch in range(4):
        ck.save(_fake_trainer(epoch, lambda p, e=epoch: torch.save({"epoch": e}, p)))
    run = tmp_path / "r1"
    assert sorted(p.name for p in run.glob("*.ckpt")) == ["run-r1-ep=2.ckpt", "run-r1-ep=3.ckpt"]
    (run / "args.json").write_text('{"name": "run", "method": "effssl"}')
    os.utime(run / "run-r1-ep=2.ckpt")  # newer mtime must not beat the higher epoch
    ckpt, _ = NewestCheckpointResumer(tmp_path).find_checkpoint(
        OmegaConf.create({"name": "run", "method": "effssl"})
    )
    assert Path(ckpt).name == "run-r1-ep=3.ckpt"
    with pytest.raises(ValueError, match="keep_last"):
        _checkpointer(tmp_path, keep_last=0)


@pytest.mark.slow
def test_non_finite_loss_stops_naming_the_step_and_keeps_last_good_checkpoint(tmp_path):
    data = make_image_folder(tmp_path / "data", classes=4, per_class=12)
    bad_step = STEPS_PER_EPOCH + 3
    out = subprocess.run(
        python_cmd(PROBE, *overrides(data, 3)),
        cwd=tmp_path,
        env=probe_env(tmp_path / "probe", EFFSSL_PROBE_NAN_AT_STEP=str(bad_step)),
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert out.returncode == 2
    last = out.stderr.strip().splitlines()[-1]
    assert last.startswith("pretrain_probe: error: non-finite loss at global step ")
    assert f"global step {bad_step} (epoch 1" in last
    (run_dir,) = (tmp_path / "trained_models" / "effssl").iterdir()
    (ckpt,) = run_dir.glob("*.ckpt")
    assert ckpt.name.endswith("-ep=0.ckpt") and not list(run_dir.glob("*.tmp"))
    state = torch.load(ckpt, map_location="cpu")["state_dict"]
    assert all(torch.isfinite(v).all() for v in state.values() if v.is_floating_point())
