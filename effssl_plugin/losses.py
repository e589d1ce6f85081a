"""EffSSL objectives in pure PyTorch: instance cross-entropy and square-root self-distillation.

Both losses take the raw cosine logits ``s = z W_C^T`` (rows: samples, columns: memory-bank
rows) and do their arithmetic in float32, so they are safe under autocast.
"""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor

__all__ = ["instance_ce_loss", "sqrt_kl_loss"]


def sqrt_kl_loss(logits: Tensor, power: float = 0.5, temperature: float = 1.0) -> Tensor:
    r"""Square-root self-distillation loss ``KL(p || sg[u])``.

    .. math::

        p = \mathrm{softmax}(s / T), \qquad
        u = \frac{p^{\alpha}}{\sum_j p_j^{\alpha}} \;(\text{detached}), \qquad
        L = \frac{1}{B} \sum_i \sum_j p_{ij} (\log p_{ij} - \log u_{ij})

    with ``alpha = power`` and ``T = temperature``. ``log u`` is computed as
    ``log_softmax(alpha * log p)``, which equals ``log(p^alpha / sum p^alpha)`` and never
    takes ``log(0)``. Because ``u`` is detached, the gradient with respect to the logits is
    ``(1 - alpha)`` times the gradient of the negative entropy ``sum_j p_j log p_j``: the loss
    sharpens ``p`` without a second view. It is 0 for uniform logits and >= 0 everywhere.

    Args:
        logits: ``B x C`` logits.
        power: ``alpha`` in (0, 1); 0.5 is the paper's square root.
        temperature: softmax temperature ``T`` > 0 (the official code uses 1).

    Returns:
        The batch-mean KL divergence, a 0-d float32 tensor.
    """
    if logits.dim() != 2:
        raise ValueError(f"sqrt_kl_loss expects B x C logits, got shape {tuple(logits.shape)}")
    if temperature <= 0:
        raise ValueError(f"temperature must be > 0, got {temperature}")
    log_p = F.log_softmax(logits.float() / temperature, dim=1)
    log_u = F.log_softmax(power * log_p.detach(), dim=1)
    return (log_p.exp() * (log_p - log_u)).sum(dim=1).mean()


def instance_ce_loss(
    logits: Tensor,
    target: Tensor,
    temperature: float = 0.2,
    target_b: Tensor | None = None,
    lam: float | Tensor = 1.0,
) -> Tensor:
    r"""Instance-discrimination cross-entropy, CutMix-mixed when ``target_b`` is given.

    .. math::

        L = \lambda \, \mathrm{CE}(s / \tau, y_a) + (1 - \lambda) \, \mathrm{CE}(s / \tau, y_b)

    where ``y_a = target`` is each sample's own column and ``y_b = target_b`` the column of
    the image pasted into it. With ``target_b=None`` this is plain ``CE(s / tau, target)``.

    Args:
        logits: ``B x C`` logits ``s``.
        target: ``B`` column indices of the own rows.
        temperature: ``tau`` > 0.
        target_b: optional ``B`` column indices of the CutMix partners.
        lam: mixing weight (float or 0-d tensor), the area fraction kept from the own image.

    Returns:
        The batch-mean loss, a 0-d float32 tensor.
    """
    if temperature <= 0:
        raise ValueError(f"temperature must be > 0, got {temperature}")
    log_q = F.log_softmax(logits.float() / temperature, dim=1)
    nll_a = -log_q.gather(1, target.long().view(-1, 1)).mean()
    if target_b is None:
        return nll_a
    nll_b = -log_q.gather(1, target_b.long().view(-1, 1)).mean()
    return lam * nll_a + (1 - lam) * nll_b
