"""EffSSL losses against independent float64 reference formulas and autograd."""

import math

import pytest
import torch
import torch.nn.functional as F

from effssl_plugin.losses import instance_ce_loss, sqrt_kl_loss


def reference_sqrt_kl(logits: torch.Tensor, power: float, temperature: float) -> float:
    """Direct transcription of KL(p || u), u = p^a / sum p^a, in float64 python loops."""
    total = 0.0
    for row in logits.double().tolist():
        m = max(row)
        e = [math.exp((x - m) / temperature) for x in row]
        zsum = sum(e)
        p = [v / zsum for v in e]
        pa = [v**power for v in p]
        usum = sum(pa)
        u = [v / usum for v in pa]
        total += sum(
            pi * (math.log(pi) - math.log(ui)) for pi, ui in zip(p, u, strict=False) if pi > 0
        )
    return total / logits.shape[0]


@pytest.mark.parametrize("power", [0.25, 0.5, 0.75])
@pytest.mark.parametrize("temperature", [1.0, 0.2])
def test_sqrt_kl_matches_reference(power, temperature):
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(7, 13, generator=g) * 2
    got = sqrt_kl_loss(logits, power=power, temperature=temperature).item()
    assert got == pytest.approx(reference_sqrt_kl(logits, power, temperature), rel=1e-5, abs=1e-7)


def test_sqrt_kl_non_negative_and_zero_for_uniform():
    g = torch.Generator().manual_seed(1)
    for scale in (0.1, 1.0, 10.0):
        assert sqrt_kl_loss(torch.randn(32, 50, generator=g) * scale).item() >= 0
    assert sqrt_kl_loss(torch.zeros(4, 9)).item() == 0.0
    # each row constant (different constants per row) is uniform too
    assert sqrt_kl_loss(torch.arange(4.0).view(4, 1).expand(4, 9) * 3.7).item() == 0.0
    # a peaked distribution is far from uniform: strictly positive
    assert sqrt_kl_loss(torch.tensor([[10.0, 0.0, 0.0]])).item() > 0


def test_sqrt_kl_is_stable_for_extreme_logits():
    logits = torch.tensor([[1e4, -1e4, 0.0], [-3e4, 3e4, 3e4]], requires_grad=True)
    loss = sqrt_kl_loss(logits)
    loss.backward()
    assert torch.isfinite(loss)
    assert torch.isfinite(logits.grad).all()


@pytest.mark.parametrize("power", [0.1, 0.5, 0.9])
@pytest.mark.parametrize("temperature", [1.0, 0.5])
def test_sqrt_kl_gradient_is_scaled_negative_entropy_gradient(power, temperature):
    g = torch.Generator().manual_seed(2)
    logits = (torch.randn(6, 11, generator=g, dtype=torch.float64) * 2).requires_grad_()
    (grad_kl,) = torch.autograd.grad(sqrt_kl_loss(logits, power, temperature), logits)

    logits2 = logits.detach().clone().requires_grad_()
    log_p = F.log_softmax(logits2 / temperature, dim=1)
    neg_entropy = (log_p.exp() * log_p).sum(1).mean()
    (grad_ne,) = torch.autograd.grad(neg_entropy, logits2)
    torch.testing.assert_close(grad_kl.double(), (1 - power) * grad_ne, rtol=1e-5, atol=1e-7)


def test_sqrt_kl_target_is_detached():
    """With the target not detached the gradient would differ; check it does not."""
    logits = torch.randn(3, 5, dtype=torch.float64, requires_grad=True)
    (grad,) = torch.autograd.grad(sqrt_kl_loss(logits, 0.5), logits)
    log_p = F.log_softmax(logits, 1)
    log_u_live = F.log_softmax(0.5 * log_p, 1)
    (grad_live,) = torch.autograd.grad((log_p.exp() * (log_p - log_u_live)).sum(1).mean(), logits)
    assert not torch.allclose(grad.double(), grad_live)


def test_sqrt_kl_rejects_bad_temperature():
    with pytest.raises(ValueError, match="temperature"):
        sqrt_kl_loss(torch.zeros(2, 3), temperature=0.0)


def reference_soft_ce(logits, target, temperature, target_b=None, lam=1.0):
    """CE against an explicit soft-target matrix Y = lam*onehot(a) + (1-lam)*onehot(b)."""
    n = logits.shape[1]
    y = lam * F.one_hot(target, n).double()
    if target_b is not None:
        y = y + (1 - lam) * F.one_hot(target_b, n).double()
    return -(y * F.log_softmax(logits.double() / temperature, 1)).sum(1).mean()


def test_instance_ce_plain_matches_cross_entropy():
    g = torch.Generator().manual_seed(3)
    logits = torch.randn(8, 20, generator=g)
    target = torch.randint(0, 20, (8,), generator=g)
    got = instance_ce_loss(logits, target, temperature=0.2)
    torch.testing.assert_close(got, F.cross_entropy(logits / 0.2, target))
    assert got.item() == pytest.approx(reference_soft_ce(logits, target, 0.2).item(), rel=1e-5)


@pytest.mark.parametrize("lam", [0.5, 0.73, torch.tensor(0.9)])
def test_instance_ce_mixed_matches_soft_target_reference(lam):
    g = torch.Generator().manual_seed(4)
    logits = torch.randn(8, 20, generator=g)
    a = torch.randint(0, 20, (8,), generator=g)
    b = torch.randint(0, 20, (8,), generator=g)
    got = instance_ce_loss(logits, a, 0.3, target_b=b, lam=lam)
    lam_f = float(lam)
    ref = reference_soft_ce(logits, a, 0.3, b, lam_f)
    assert got.item() == pytest.approx(ref.item(), rel=1e-5)
    # lam = 1 recovers plain CE, lam = 0 the partner's CE
    torch.testing.assert_close(
        instance_ce_loss(logits, a, 0.3, target_b=b, lam=1.0), instance_ce_loss(logits, a, 0.3)
    )
    torch.testing.assert_close(
        instance_ce_loss(logits, a, 0.3, target_b=b, lam=0.0), instance_ce_loss(logits, b, 0.3)
    )


def test_losses_compute_in_float32_for_half_inputs():
    logits = torch.randn(4, 6).half()
    assert sqrt_kl_loss(logits).dtype == torch.float32
    assert instance_ce_loss(logits, torch.zeros(4, dtype=torch.long)).dtype == torch.float32
