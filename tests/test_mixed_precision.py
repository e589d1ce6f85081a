"""Mixed precision: ``precision: auto`` by GPU capability, ``method_kwargs.bank_matmul`` held
inside Lightning's autocast, and the bank update on steps the GradScaler skips."""

from __future__ import annotations

import pytest
import torch
from conftest import compose, require_solo, tiny_overrides
from omegaconf import OmegaConf

require_solo()


# ------------------------------------------------------------------- precision: auto
@pytest.mark.parametrize(
    ("accelerator", "bf16", "expected"),
    [
        ("cuda", True, "bf16-mixed"),  # Ampere and newer: no GradScaler, float32's range
        ("cuda", False, "16-mixed"),  # Volta, Turing
        ("cpu", True, "32-true"),
        ("cpu", False, "32-true"),
        ("mps", False, "32-true"),
    ],
)
def test_auto_precision_follows_the_gpu_capability(accelerator, bf16, expected):
    from effssl_plugin.config import auto_precision

    assert auto_precision(accelerator, bf16) == expected


@pytest.mark.parametrize(("bf16", "expected"), [(True, "bf16-mixed"), (False, "16-mixed")])
def test_the_launcher_resolves_auto_with_the_devices_capability(monkeypatch, bf16, expected):
    import effssl_plugin.config as config

    monkeypatch.setattr(config, "resolve_accelerator", lambda accelerator: "cuda")
    monkeypatch.setattr(config, "cuda_bf16_supported", lambda: bf16)
    cfg = OmegaConf.create({"accelerator": "auto", "precision": "auto", "world_size": 1})
    assert config.resolve_auto_machine(cfg).precision == expected
    cfg = OmegaConf.create({"accelerator": "auto", "precision": "32-true", "world_size": 1})
    assert config.resolve_auto_machine(cfg).precision == "32-true"  # an explicit choice stays


# ------------------------------------------------------------ bank_matmul, autocast
@pytest.mark.slow  # training runs
@pytest.mark.parametrize(
    ("matmul", "expected"),
    [("float32", torch.float32), ("bfloat16", torch.bfloat16), ("auto", torch.bfloat16)],
)
def test_bank_matmul_holds_for_the_logits_under_bf16_mixed(
    matmul, expected, fake_folder, workdir, monkeypatch
):
    """Lightning's bf16-mixed autocast (CPU) would recast the logits product: the logits
    that reach the loss are in ``bank_matmul``'s dtype, and with float32 they equal the
    float32 product of the step's features and bank rows."""
    import effssl_plugin.method as method
    from effssl_plugin.main_pretrain import pretrain

    products: list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]] = []
    losses: list[torch.Tensor] = []
    matmul_as, ce = method.matmul_as, method.instance_ce_loss

    def spy_matmul(a, b, dtype):
        out = matmul_as(a, b, dtype)
        products.append((a.detach().clone(), b.detach().clone(), out.detach()))  # the update
        # then moves the step's gathered rows in place
        return out

    def spy_ce(logits, *args, **kwargs):
        losses.append(logits.detach())
        return ce(logits, *args, **kwargs)

    monkeypatch.setattr(method, "matmul_as", spy_matmul)
    monkeypatch.setattr(method, "instance_ce_loss", spy_ce)
    overrides = tiny_overrides(
        fake_folder, 1, 6, 4, "precision=bf16-mixed", f"method_kwargs.bank_matmul={matmul}"
    )
    pretrain(compose("effssl", [*overrides, "checkpoint.enabled=false"]))
    assert len(losses) == len(products) == 3  # 18 images, batch 6
    for (z, weight_t, out), logits in zip(products, losses, strict=True):
        assert logits.dtype == expected and torch.equal(logits, out)
        if expected == torch.float32:
            assert torch.equal(logits, z.float() @ weight_t.float())


# ------------------------------------------------------- steps the GradScaler skips
def tiny_module(folder):
    import solo.methods

    import effssl_plugin
    from effssl_plugin.config import parse_pretrain_cfg

    effssl_plugin.register()
    overrides = tiny_overrides(
        folder, 1, 6, 4, f"data.val_path={folder}", "method_kwargs.cutmix_alpha=0"
    )
    cfg = parse_pretrain_cfg(compose("effssl", [*overrides, "+method_kwargs.num_samples=18"]))
    torch.manual_seed(0)
    module = solo.methods.METHODS["effssl"](cfg)
    module.bank.reset_random_(torch.Generator().manual_seed(0))
    return module


def run_step(module, images: torch.Tensor, overflow: bool) -> torch.optim.Optimizer:
    """One step in Lightning's order: training step, scaled backward, the bank update
    (``on_after_backward``), then the scaler's optimizer step. ``overflow`` puts an inf in
    one gradient, as a float16 overflow of the scaled backward does."""
    optimizer = torch.optim.SGD(module.parameters(), lr=0.1)
    scaler = torch.amp.GradScaler("cpu", init_scale=1024.0)
    batch = (torch.arange(6), [images.clone()], torch.arange(6) % 3)
    loss = module.training_step(batch, 0)
    scaler.scale(loss).backward()
    if overflow:
        next(p for p in module.parameters() if p.grad is not None).grad.view(-1)[0] = float("inf")
    module.on_after_backward()
    scaler.step(optimizer)
    scaler.update()
    assert (scaler.get_scale() < 1024.0) == overflow  # the scaler skipped exactly then
    return optimizer


@pytest.mark.filterwarnings("ignore:You are trying to `self.log\\(\\)`")
def test_a_step_the_grad_scaler_skips_moves_the_bank_as_any_step(fake_folder):
    """Under 16-mixed the bank update runs after the backward, also on a step whose optimizer
    step the GradScaler then skips for inf gradients. It reads the forward only, so the bank
    moves exactly as on a step that was not skipped, the network stays as it was, and the
    rows stay unit-norm and finite; a non-finite forward leaves every row unchanged."""
    images = torch.randn(6, 3, 32, 32, generator=torch.Generator().manual_seed(2))
    skipped, taken = tiny_module(fake_folder), tiny_module(fake_folder)
    before = {k: v.clone() for k, v in skipped.state_dict().items() if not k.startswith("bank")}
    bank_before = skipped.bank.weight.clone()
    run_step(skipped, images, overflow=True)
    run_step(taken, images, overflow=False)
    assert not torch.equal(skipped.bank.weight, bank_before)
    assert torch.equal(skipped.bank.weight, taken.bank.weight)
    assert torch.isfinite(skipped.bank.weight).all()
    norms = skipped.bank.weight.norm(dim=1)
    torch.testing.assert_close(norms, torch.ones_like(norms))
    params = dict(skipped.named_parameters())
    assert all(torch.equal(params[k], before[k]) for k in params)  # no optimizer step

    broken = tiny_module(fake_folder)
    rows = broken.bank.weight.clone()
    images[0, 0, 0, 0] = float("nan")
    run_step(broken, images, overflow=True)
    assert torch.equal(broken.bank.weight, rows)
