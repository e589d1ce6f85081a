"""``data.format=dali`` without DALI: solo-learn's DALI module is faked, so what EffSSL adds
around it (calibration workers, no val loader, DALI's file list against the calibration's)
runs on a CPU. DALI itself needs a GPU and is not tested here."""

from __future__ import annotations

from types import SimpleNamespace

import torch
from conftest import require_solo
from omegaconf import OmegaConf
from torch.utils.data import TensorDataset

require_solo()

from effssl_plugin.calibration import calibration_loader  # noqa: E402


class DaliLikeLoader:
    """What solo-learn's ``PretrainWrapper`` looks like to the calibration: an iterable with
    a batch size, but neither ``dataset`` nor ``num_workers``."""

    def __init__(self, batch_size: int) -> None:
        self.batch_size = batch_size

    def __iter__(self):
        return iter(())


# ------------------------------------------------------------- calibration workers
def test_calibration_takes_its_workers_from_the_config_under_dali():
    """The DALI loader has no ``num_workers``: the calibration pass used 0 (every image
    decoded by PIL in the main process); it must use ``data.num_workers``."""
    n = 12
    module = SimpleNamespace(
        trainer=SimpleNamespace(
            train_dataloader=DaliLikeLoader(batch_size=4), global_rank=0, world_size=1
        ),
        calibration_dataset=TensorDataset(torch.arange(n)),
        bank=SimpleNamespace(num_samples=n),
        batch_size=4,
        seed=0,
        device=torch.device("cpu"),
        cfg=OmegaConf.create({"data": {"num_workers": 3}}),
    )
    loader = calibration_loader(module)
    assert loader.num_workers == 3
    assert sum(len(b) for b in loader.batch_sampler) == n


def test_calibration_without_a_config_falls_back_to_the_loaders_workers():
    """A module trained from Python with its own DataLoader and no ``data.num_workers``."""
    n = 8
    dataset = TensorDataset(torch.arange(n))
    train_loader = torch.utils.data.DataLoader(dataset, batch_size=4, num_workers=2)
    module = SimpleNamespace(
        trainer=SimpleNamespace(train_dataloader=train_loader, global_rank=0, world_size=1),
        calibration_dataset=None,
        bank=SimpleNamespace(num_samples=n),
        batch_size=4,
        seed=0,
        device=torch.device("cpu"),
        cfg=OmegaConf.create({"data": {}}),
    )
    assert calibration_loader(module).num_workers == 2
