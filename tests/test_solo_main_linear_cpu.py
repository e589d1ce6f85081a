"""solo-learn's own main_linear.py on a CPU (README: Evaluation): its ``parse_cfg`` and
Lightning's CPU accelerator both accept ``accelerator=cpu "devices='1'"``; an integer or a
list does not pass both. (The weights themselves: test_plugin's main_linear loading test.)"""

from __future__ import annotations

from pathlib import Path

import pytest
from conftest import require_solo

require_solo()

from omegaconf import OmegaConf  # noqa: E402

import effssl_plugin  # noqa: E402


def solo_linear_cfg(folder: Path, devices: object):
    """A solo-learn linear config for an effssl timm backbone, as main_linear.py reads it."""
    return OmegaConf.create(
        {
            "name": "linear-cpu",
            "pretrained_feature_extractor": "effssl-run-ep=0.ckpt",
            "backbone": {"name": "timm", "kwargs": {"model_name": "resnet10t", "low_res": True}},
            "pretrain_method": "effssl",
            "data": {
                "dataset": "custom",
                "train_path": str(folder),
                "val_path": str(folder),
                "format": "image_folder",
                "num_workers": 0,
            },
            "optimizer": {"name": "sgd", "batch_size": 64, "lr": 0.1, "weight_decay": 0},
            "scheduler": {"name": "step", "lr_decay_steps": [60, 80]},
            "max_epochs": 1,
            "accelerator": "cpu",
            "devices": devices,
            "precision": 32,
            "strategy": "auto",
        }
    )


def cpu_trainer(devices: object):
    from lightning.pytorch import Trainer

    return Trainer(
        accelerator="cpu",
        devices=devices,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
    )


def test_devices_string_1_passes_solo_parse_cfg_and_lightning_on_cpu(fake_folder):
    from solo.args.linear import parse_cfg

    effssl_plugin.register()  # the `timm` backbone, as the Hydra plugin does for main_linear
    cfg = parse_cfg(solo_linear_cfg(fake_folder, "1"))
    assert cfg.optimizer.lr == pytest.approx(0.1 * 64 / 256)  # scaled for one process
    trainer = cpu_trainer(cfg.devices)
    assert trainer.num_devices == 1
    assert type(trainer.accelerator).__name__ == "CPUAccelerator"


def test_devices_int_or_list_fail_on_cpu(fake_folder):
    from lightning.fabric.utilities.exceptions import MisconfigurationException
    from solo.args.linear import parse_cfg

    effssl_plugin.register()
    with pytest.raises(TypeError):  # solo-learn's len(cfg.devices)
        parse_cfg(solo_linear_cfg(fake_folder, 1))
    cfg = parse_cfg(solo_linear_cfg(fake_folder, [0]))  # solo-learn's GPU configs
    # Lightning's CPU accelerator (TypeError in 2.6, MisconfigurationException before)
    with pytest.raises((TypeError, MisconfigurationException), match="should be an int > 0"):
        cpu_trainer(list(cfg.devices))
