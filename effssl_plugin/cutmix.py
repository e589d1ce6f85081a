"""Batch CutMix for instance discrimination, with timm's box sampling."""

from __future__ import annotations

import numpy as np
import torch
from timm.data.mixup import cutmix_bbox_and_lam
from torch import Tensor

__all__ = ["cutmix_batch"]


def cutmix_batch(x: Tensor, alpha: float) -> tuple[Tensor, Tensor, float]:
    """Pastes a random box from a permuted copy of the batch into every image, in place.

    As in the official EffSSL code: ``lam ~ Beta(alpha, alpha)``, ``lam <- max(lam, 1 - lam)``
    (each image keeps the larger part), a box of area ``1 - lam`` from timm's
    :func:`~timm.data.mixup.cutmix_bbox_and_lam`, then ``lam`` corrected to the exact kept
    pixel fraction. Sample ``i`` receives its box from sample ``perm[i]``.

    Returns:
        ``(x, perm, lam)``: the mixed batch (the same tensor), the partner of each sample and
        the fraction of each image that is its own.
    """
    if alpha <= 0:
        raise ValueError(f"cutmix alpha must be > 0, got {alpha}")
    lam = float(np.random.beta(alpha, alpha))
    lam = max(lam, 1.0 - lam)
    perm = torch.randperm(x.shape[0], device=x.device)
    (yl, yh, xl, xh), lam = cutmix_bbox_and_lam(x.shape, lam, correct_lam=True)
    x[:, :, yl:yh, xl:xh] = x[perm, :, yl:yh, xl:xh]
    return x, perm, float(lam)
