"""Lightning DDP on CPU (gloo, 2 processes): the bank stays bit-identical on every rank at
every step, through calibration, training and a resume."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest
import torch
from conftest import REPO, make_image_folder, python_cmd, require_solo, tiny_overrides

require_solo()

pytestmark = pytest.mark.slow  # 2-process DDP training runs

PROBE = str(REPO / "tests" / "helpers" / "pretrain_probe.py")


def ddp_overrides(data: Path, max_epochs: int, *extra: str) -> list[str]:
    return tiny_overrides(data, max_epochs, 5, 8, "strategy=ddp", "devices=2", *extra)


def run_probe(
    overrides: list[str], cwd: Path, probe: Path, **extra_env: str
) -> subprocess.CompletedProcess:
    env = {**os.environ, "EFFSSL_PROBE_DIR": str(probe), "PYTHONUNBUFFERED": "1", **extra_env}
    proc = subprocess.run(
        python_cmd(PROBE, *overrides), cwd=cwd, env=env, capture_output=True, text=True, timeout=600
    )
    assert proc.returncode == 0, f"{proc.stdout[-3000:]}\n{proc.stderr[-4000:]}"
    return proc


def checksums(probe: Path, rank: int) -> list[tuple[int, str]]:
    return [tuple(x) for x in json.loads((probe / f"checksums_rank{rank}.json").read_text())]


@pytest.mark.parametrize("rule", ["grad", "ema"])
def test_ddp_bank_is_bit_identical_every_step_and_after_resume(tmp_path, rule):
    # 21 images over 2 ranks: Lightning's distributed sampler pads one duplicate index
    data = make_image_folder(tmp_path / "data", classes=3, per_class=7)
    probe = tmp_path / "probe"
    # solo-learn's PIL pipeline (its datasets in this package's loader); the tensor pipeline,
    # custom_lowres's default, has its own DDP test below
    overrides = ddp_overrides(data, 2, f"method_kwargs.bank_update={rule}", "data.pipeline=pil")
    run_probe(overrides, tmp_path, probe)
    c0, c1 = checksums(probe, 0), checksums(probe, 1)
    assert c0 == c1, "bank replicas diverged"
    assert len(c0) == 2 * 2 + 1  # 11 samples per rank, batch 5, drop_last: 2 steps per epoch
    assert len({h for _, h in c0}) == len(c0)  # the bank changed at every step

    start0 = torch.load(probe / "start_rank0.pt")
    assert start0["filled"] is False and start0["global_step"] == 0
    end0 = torch.load(probe / "bank_end_rank0.pt")
    end1 = torch.load(probe / "bank_end_rank1.pt")
    assert all(torch.equal(end0[k], end1[k]) for k in end0)
    assert int(end0["num_updates"]) == 4
    assert (end0["last_write"] >= 0).all()  # calibration covered every sample

    # resume the finished run for one more epoch: replicas restored and still identical
    (run_dir,) = (tmp_path / "trained_models" / "effssl").iterdir()
    (ckpt,) = run_dir.glob("*.ckpt")
    saved = torch.load(ckpt, map_location="cpu")["state_dict"]
    probe2 = tmp_path / "probe2"
    extra = [
        f"method_kwargs.bank_update={rule}",
        f"resume_from_checkpoint={run_dir}",
        "data.pipeline=pil",
    ]
    run_probe(ddp_overrides(data, 3, *extra), tmp_path, probe2)
    for rank in (0, 1):
        start = torch.load(probe2 / f"start_rank{rank}.pt")
        assert start["filled"] is True and start["global_step"] == 4
        assert torch.equal(start["bank"], saved["bank.weight"])
    r0, r1 = checksums(probe2, 0), checksums(probe2, 1)
    assert r0 == r1 and len(r0) == 3


def test_ddp_ignores_the_bank_in_buffer_broadcast(tmp_path):
    """DDP wraps the module with the bank in its ignore list (no rank-0 broadcast)."""
    data = make_image_folder(tmp_path / "data", classes=3, per_class=7)
    probe = tmp_path / "probe"
    code = f"""
import os, torch, lightning.pytorch as pl
from lightning.pytorch.callbacks import Callback
from hydra import compose, initialize_config_module
from effssl_plugin.main_pretrain import pretrain

class Check(Callback):
    def on_train_start(self, trainer, module):
        ddp = trainer.strategy.model
        ignored = sorted(ddp.parameters_to_ignore)
        open(os.path.join({str(probe)!r}, f"ignored{{trainer.global_rank}}.txt"), "w").write(
            type(ddp).__name__ + ":" + ",".join(ignored))

with initialize_config_module("effssl_plugin.configs", version_base="1.2"):
    cfg = compose("effssl", {ddp_overrides(data, 1, "checkpoint.enabled=false")!r})
pretrain(cfg, extra_callbacks=[Check()])
"""
    probe.mkdir()
    script = tmp_path / "check_ignore.py"
    script.write_text(code)
    proc = subprocess.run(
        python_cmd(str(script)), cwd=tmp_path, capture_output=True, text=True, timeout=600
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    for rank in (0, 1):
        kind, names = (probe / f"ignored{rank}.txt").read_text().split(":")
        assert kind == "DistributedDataParallel"
        assert names.split(",") == [
            "bank.filled",
            "bank.last_write",
            "bank.num_updates",
            "bank.weight",
        ]


def test_ddp_with_the_tensor_pipeline_splits_the_decoded_set_and_keeps_the_bank_identical(
    tmp_path,
):
    """data.pipeline=tensor under DDP: Lightning's distributed sampler over the decoded set's
    whole-batch fetches, the calibration over the decoded set, the bank identical on both
    ranks at every step and every row written."""
    data = make_image_folder(tmp_path / "data", classes=3, per_class=7)
    probe = tmp_path / "probe"
    run_probe(ddp_overrides(data, 2, "data.pipeline=tensor"), tmp_path, probe)
    c0, c1 = checksums(probe, 0), checksums(probe, 1)
    assert c0 == c1, "bank replicas diverged"
    assert len(c0) == 2 * 2 + 1  # 11 samples per rank, batch 5, drop_last: 2 steps per epoch
    assert len({h for _, h in c0}) == len(c0)
    end0 = torch.load(probe / "bank_end_rank0.pt")
    assert int(end0["num_updates"]) == 4 and (end0["last_write"] >= 0).all()


def test_ddp_run_stopped_and_resumed_trains_exactly_as_one_that_never_stopped(tmp_path):
    """Under DDP with a loader worker (PIL pipeline), a run stopped after epoch 1 and resumed
    follows the uninterrupted run bit for bit: each epoch's permutation is dealt to the ranks
    from the loader's own per-epoch generator (effssl_plugin.epoch_streams), not from a
    DistributedSampler whose epoch Lightning sets after the resumed epoch's workers started."""
    data = make_image_folder(tmp_path / "data", classes=3, per_class=7)
    overrides = ddp_overrides(data, 3, "data.pipeline=pil", "data.num_workers=1")
    (tmp_path / "straight").mkdir()
    (tmp_path / "resumed").mkdir()
    run_probe(overrides, tmp_path / "straight", tmp_path / "probe_straight")
    run_probe(overrides, tmp_path / "resumed", tmp_path / "probe_1", EFFSSL_PROBE_STOP_AFTER="1")
    run_probe(overrides, tmp_path / "resumed", tmp_path / "probe_2")
    for rank in (0, 1):
        straight = checksums(tmp_path / "probe_straight", rank)
        first, second = checksums(tmp_path / "probe_1", rank), checksums(tmp_path / "probe_2", rank)
        assert len(straight) == 3 * 2 + 1 and first[-1][0] == second[0][0] == 2
        assert first[:-1] + second == straight  # the bank before every step, and at the end
    finals = []
    for run in ("straight", "resumed"):
        (run_dir,) = (tmp_path / run / "trained_models" / "effssl").iterdir()
        (ckpt,) = run_dir.glob("*.ckpt")
        finals.append(torch.load(ckpt, map_location="cpu")["state_dict"])
    assert all(torch.equal(finals[0][k], finals[1][k]) for k in finals[0])
