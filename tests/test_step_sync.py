"""The training step never waits for the device: no ``Tensor.item()``, ``bool(tensor)``,
``int(tensor)``, ``float(tensor)`` or ``tolist()`` in
``training_step`` and ``on_after_backward`` (the bank update), for both bank rules, with
CutMix, under autocast, and with the online kNN collecting features. On a GPU each of those
would stall the CUDA stream; on the CPU they are caught by patching them to raise while the
step runs, and on a GPU (``-k cuda``) by ``torch.cuda.set_sync_debug_mode("error")``. The
non-finite-loss check runs on the host only every ``log_every_n_steps`` steps and before
each checkpoint, outside the step. (The DDP path of the bank: ``test_bank.py``.)"""

from __future__ import annotations

import pytest
import torch
from conftest import compose, require_solo, tiny_overrides

require_solo()


class HostSync(AssertionError):
    pass


def _forbidden(name: str):
    def call(self, *args, **kwargs):
        raise HostSync(f"Tensor.{name} called during the training step")

    return call


class NoHostSync:
    """While active, the Tensor methods that read a value on the host raise :class:`HostSync`."""

    NAMES = ("item", "__bool__", "__int__", "__float__", "tolist")

    def __enter__(self) -> NoHostSync:
        self.saved = {name: getattr(torch.Tensor, name) for name in self.NAMES}
        for name in self.saved:
            setattr(torch.Tensor, name, _forbidden(name))
        return self

    def __exit__(self, *exc) -> None:
        for name, method in self.saved.items():
            setattr(torch.Tensor, name, method)


def guarded(method):
    def call(*args, **kwargs):
        with NoHostSync():
            return method(*args, **kwargs)

    return call


def test_the_guard_catches_a_sync():
    with pytest.raises(HostSync), NoHostSync():
        torch.ones(()).item()
    with pytest.raises(HostSync), NoHostSync():
        bool(torch.ones(()) > 0)
    with pytest.raises(HostSync), NoHostSync():
        int(torch.ones((), dtype=torch.long))
    assert torch.ones(()).item() == 1.0  # restored


@pytest.mark.parametrize(
    ("rule", "negatives", "matmul", "precision"),
    [
        ("grad", 4, "auto", "32-true"),
        ("ema", 4, "auto", "32-true"),
        ("grad", -1, "auto", "32-true"),
        ("grad", -1, "bfloat16", "32-true"),
        ("grad", 4, "auto", "bf16-mixed"),
        ("ema", 4, "float32", "bf16-mixed"),
    ],
)
def test_training_step_and_bank_update_do_not_sync_with_the_host(
    rule, negatives, matmul, precision, fake_folder, workdir
):
    from lightning.pytorch.callbacks import Callback

    from effssl_plugin.main_pretrain import pretrain

    steps = {"guarded": 0}

    class Guard(Callback):
        def on_train_start(self, trainer, module) -> None:  # after nothing heavy: bank filled
            step, after = module.training_step, module.on_after_backward

            def training_step(*args, **kwargs):
                steps["guarded"] += 1
                return guarded(step)(*args, **kwargs)

            module.training_step = training_step
            module.on_after_backward = guarded(after)

    overrides = tiny_overrides(
        fake_folder,
        2,
        6,
        negatives,
        f"method_kwargs.bank_update={rule}",
        f"method_kwargs.bank_matmul={matmul}",
        f"precision={precision}",
        f"data.val_path={fake_folder}",  # the online kNN collects features in the step
    )
    cfg = compose("effssl", [*overrides, "checkpoint.enabled=false", "+log_every_n_steps=2"])
    pretrain(cfg, extra_callbacks=[Guard()])
    assert steps["guarded"] == 6  # 18 images, batch 6, 2 epochs: every step ran guarded


def test_a_non_finite_step_never_reaches_the_bank():
    from effssl_plugin.bank import MemoryBank

    bank = MemoryBank(6, 4)
    bank.reset_random_(torch.Generator().manual_seed(0))
    before = bank.weight.clone()
    z = torch.randn(2, 4)
    z[1, 0] = float("nan")
    bank.update_ema(torch.tensor([0, 3]), z)
    assert torch.equal(bank.weight, before)
    probs = torch.full((2, 6), float("nan"))
    bank.update_grad(None, torch.randn(2, 4), probs, torch.eye(6)[:2])
    assert torch.equal(bank.weight, before)
    bank.update_ema(torch.tensor([0, 3]), torch.randn(2, 4))  # a finite step still writes
    assert not torch.equal(bank.weight, before)


def test_bank_matmul_dtype_follows_the_setting_and_autocast():
    from effssl_plugin.method import bank_matmul_dtype

    cpu = torch.device("cpu")
    assert bank_matmul_dtype("auto", cpu) == torch.float32
    assert bank_matmul_dtype("bfloat16", cpu) == torch.bfloat16
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert bank_matmul_dtype("auto", cpu) == torch.bfloat16
        assert bank_matmul_dtype("float32", cpu) == torch.float32


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
@pytest.mark.parametrize(
    ("rule", "negatives", "precision"),
    [
        *[(r, k, p) for p in ("32-true", "16-mixed") for r, k in (("grad", 4), ("ema", 4))],
        ("grad", -1, "32-true"),
        ("grad", -1, "16-mixed"),
        ("grad", 4, "bf16-mixed"),  # precision=auto's choice on Ampere and newer
    ],
)
def test_training_step_does_not_synchronise_a_cuda_stream(
    rule, negatives, precision, fake_folder, workdir
):
    """On a GPU: from step 2 on, the step and the bank update run under
    ``torch.cuda.set_sync_debug_mode("error")``, which raises on any synchronising call.
    Step 1 runs unguarded: there Lightning copies each newly logged metric's default tensors
    to the GPU (a synchronising copy) on the first ``self.log`` of its key. 16-mixed covers
    autocast, the GradScaler's scaled backward and the half-precision bank products (and
    bf16-mixed, the default on Ampere and newer); the validation set makes the online kNN
    copy features to the host in every step."""
    from lightning.pytorch.callbacks import Callback

    from effssl_plugin.main_pretrain import pretrain

    steps = {"seen": 0, "guarded": 0}

    def strict(method):
        def call(*args, **kwargs):
            if steps["seen"] < 2:  # step 1: Lightning's first logs of each key
                return method(*args, **kwargs)
            torch.cuda.set_sync_debug_mode("error")
            try:
                return method(*args, **kwargs)
            finally:
                torch.cuda.set_sync_debug_mode(0)

        return call

    class Guard(Callback):
        def on_train_start(self, trainer, module) -> None:
            step, after = strict(module.training_step), strict(module.on_after_backward)

            def training_step(*args, **kwargs):
                steps["seen"] += 1
                steps["guarded"] += steps["seen"] >= 2
                return step(*args, **kwargs)

            module.training_step = training_step
            module.on_after_backward = after

    overrides = tiny_overrides(
        fake_folder,
        2,
        6,
        negatives,
        f"method_kwargs.bank_update={rule}",
        "accelerator=gpu",
        f"precision={precision}",
        f"data.val_path={fake_folder}",
    )
    cfg = compose("effssl", [*overrides, "checkpoint.enabled=false", "+log_every_n_steps=2"])
    pretrain(cfg, extra_callbacks=[Guard()])
    assert steps["seen"] == 6 and steps["guarded"] == 5  # every step from step 2 guarded
