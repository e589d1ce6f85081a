"""solo-learn's pretraining augmentations as batched tensor ops with per-sample randomness.

The reference is solo-learn's ``build_transform_pipeline``
(``solo/data/pretrain_dataloader.py``), a PIL pipeline applied image by image::

    RandomResizedCrop(crop, scale, ratio=(3/4, 4/3), BICUBIC)  |  Resize(crop, BICUBIC)
    RandomApply([ColorJitter(b, c, s, h)], p)   # a random order of the 4 ops per call
    RandomGrayscale(p)
    RandomApply([GaussianBlur(sigma ~ U(0.1, 2.0))], p)
    RandomApply([Solarization()], p)             # ImageOps.solarize, threshold 128
    RandomApply([Equalization()], p)             # ImageOps.equalize
    RandomHorizontalFlip(p)
    ToTensor(), Normalize(mean, std)

:class:`BatchAugmentation` runs the same steps on a whole ``(B, 3, H, W)`` batch (uint8, on
any device) at once: every random quantity is drawn per sample with torch's RNG on the batch's
device (:meth:`BatchAugmentation.sample`), then applied with batched kernels
(:meth:`BatchAugmentation.apply`). A step whose probability is 0 is absent, as in solo-learn.
:class:`BatchViews` makes the views of several pipelines in solo-learn's order. A random
subset reaches its step by indexing (CPU default: least compute) or by computing the step on
the whole batch and selecting with ``torch.where`` (default elsewhere: no host sync).

Documented differences from the PIL pipeline (the random parameters follow exactly the same
distributions; the pixels differ slightly):

* **Bicubic coefficient**: the crop uses ``grid_sample(mode="bicubic")``, whose cubic kernel has
  ``a = -0.75``; PIL's bicubic filter uses ``a = -0.5`` (slightly less overshoot).
* **No antialiasing when a crop is downscaled**: ``grid_sample`` samples 4x4 neighbourhoods,
  while PIL widens its filter by the downscale factor. Crops of CIFAR-sized images are never
  downscaled (the crop is at most the image, the output the image's size); crops of large
  images (ImageNet at 224 px) often are and alias a little.
* **Crop borders**: the bicubic taps of output pixels near the box edge read the image's true
  neighbours outside the box (the whole image is the sampling source); PIL and
  ``resized_crop`` replicate the crop's edge instead, so pixels within two source pixels of the
  box edge differ (the whole-image box is identical).
* **Float pipeline**: every step works on float32 in [0, 1], clamped after each op as
  torchvision's tensor kernels do; PIL goes back to uint8 after every step (its
  ``ImageEnhance`` blends truncate: about -0.4/255 per jitter op, so solo-learn's jittered
  views are about 1/255 darker on average). Equalization alone rounds its input to uint8
  (it needs a 256-bin histogram).
* **Gaussian blur**: an exact, truncated Gaussian kernel (torchvision's
  ``gaussian_blur`` formula, size 13 = 2 * ceil(3 * 2.0) + 1, reflect padding); PIL's
  ``GaussianBlur(radius=sigma)`` approximates a Gaussian of standard deviation ``sigma`` with
  three box blurs and extends the edge pixels.
* **Grayscale weights**: torchvision's 0.2989 R + 0.587 G + 0.114 B (also used for the contrast
  mean and saturation), where PIL's ``convert("L")`` uses 299/1000, 587/1000, 114/1000 in
  fixed point. Color jitter follows torchvision's tensor kernels (hue in an equivalent closed
  form, equal within 1e-6), not PIL's ``ImageEnhance`` (e.g. the contrast mean is not rounded
  to an integer) nor PIL's uint8 HSV conversion.
* **Solarization threshold**: ``x >= 127.5 / 255`` on the float image, i.e. exactly PIL's
  ``v >= 128`` for uint8-valued inputs, and what PIL would decide after rounding otherwise.
* **Random streams**: the draws come from torch's RNG on the batch's device, in another order
  than torchvision's (and not from Python's ``random``, which solo-learn's blur uses): the same
  seed gives the same distributions, not the same views.

As in solo-learn, ``Resize(crop_size)`` (rrc disabled) sets the shorter side, so non-square
images keep their aspect ratio and give non-square views.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as nnf
from torch import Tensor
from torchvision.transforms import InterpolationMode
from torchvision.transforms.v2 import functional as tvf

__all__ = [
    "AugmentationDraw",
    "AugmentationParams",
    "BatchAugmentation",
    "BatchViews",
    "CROP_RATIO",
    "BLUR_SIGMA",
    "CALIBRATION_STREAM",
    "sample_crop_boxes",
    "sample_permutations",
    "seeded_generator",
    "stream_seed",
]

#: aspect-ratio range of solo-learn's RandomResizedCrop (torchvision's default)
CROP_RATIO: tuple[float, float] = (3.0 / 4.0, 4.0 / 3.0)
#: sigma range of solo-learn's GaussianBlur
BLUR_SIGMA: tuple[float, float] = (0.1, 2.0)
#: blur kernel size for sigma up to BLUR_SIGMA[1]: 2 * ceil(3 * sigma_max) + 1
_BLUR_KERNEL = 2 * math.ceil(3 * BLUR_SIGMA[1]) + 1
#: torchvision's luma weights
_GRAY_WEIGHTS = (0.2989, 0.587, 0.114)
#: order of the color-jitter ops in factors and orders (torchvision's ``fn_idx`` numbering)
_BRIGHTNESS, _CONTRAST, _SATURATION, _HUE = range(4)


@dataclass(frozen=True)
class AugmentationParams:
    """One solo-learn augmentation pipeline (one entry of ``cfg.augmentations``)."""

    crop_size: int
    rrc_enabled: bool = True
    crop_min_scale: float = 0.08
    crop_max_scale: float = 1.0
    jitter_prob: float = 0.0
    brightness: float = 0.0
    contrast: float = 0.0
    saturation: float = 0.0
    hue: float = 0.0
    grayscale_prob: float = 0.0
    blur_prob: float = 0.0
    solarization_prob: float = 0.0
    equalization_prob: float = 0.0
    flip_prob: float = 0.0
    mean: tuple[float, ...] = (0.485, 0.456, 0.406)
    std: tuple[float, ...] = (0.229, 0.224, 0.225)

    def __post_init__(self) -> None:
        object.__setattr__(self, "mean", tuple(float(m) for m in self.mean))
        object.__setattr__(self, "std", tuple(float(s) for s in self.std))
        if int(self.crop_size) != self.crop_size or self.crop_size < 1:
            raise ValueError(f"crop_size must be a positive integer, got {self.crop_size}")
        object.__setattr__(self, "crop_size", int(self.crop_size))
        if not 0 < self.crop_min_scale <= self.crop_max_scale:
            raise ValueError(
                f"need 0 < crop_min_scale <= crop_max_scale, got "
                f"({self.crop_min_scale}, {self.crop_max_scale})"
            )
        for name in (
            "jitter_prob",
            "grayscale_prob",
            "blur_prob",
            "solarization_prob",
            "equalization_prob",
            "flip_prob",
        ):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ValueError(f"{name} must be in [0, 1], got {getattr(self, name)}")
        for name in ("brightness", "contrast", "saturation"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)}")
        if not 0.0 <= self.hue <= 0.5:
            raise ValueError(f"hue must be in [0, 0.5], got {self.hue}")
        if len(self.mean) != 3 or len(self.std) != 3 or min(self.std) <= 0:
            raise ValueError(f"need 3 means and 3 positive stds, got {self.mean}, {self.std}")

    @classmethod
    def from_mapping(
        cls, node: Any, mean: Sequence[float], std: Sequence[float]
    ) -> AugmentationParams:
        """Reads solo-learn's keys (``crop_size``, ``rrc.enabled``, ``color_jitter.prob``, ...)
        from a config node with item or attribute access (dict, DictConfig, namespace)."""
        return cls(
            crop_size=int(_lookup(node, "crop_size")),
            rrc_enabled=bool(_lookup(node, "rrc.enabled")),
            crop_min_scale=float(_lookup(node, "rrc.crop_min_scale")),
            crop_max_scale=float(_lookup(node, "rrc.crop_max_scale")),
            jitter_prob=float(_lookup(node, "color_jitter.prob")),
            brightness=float(_lookup(node, "color_jitter.brightness")),
            contrast=float(_lookup(node, "color_jitter.contrast")),
            saturation=float(_lookup(node, "color_jitter.saturation")),
            hue=float(_lookup(node, "color_jitter.hue")),
            grayscale_prob=float(_lookup(node, "grayscale.prob")),
            blur_prob=float(_lookup(node, "gaussian_blur.prob")),
            solarization_prob=float(_lookup(node, "solarization.prob")),
            equalization_prob=float(_lookup(node, "equalization.prob")),
            flip_prob=float(_lookup(node, "horizontal_flip.prob")),
            mean=tuple(mean),
            std=tuple(std),
        )

    @property
    def jitter_ranges(self) -> tuple[tuple[float, float], ...]:
        """Factor ranges of brightness, contrast, saturation, hue as torchvision's ColorJitter:
        ``[max(0, 1 - v), 1 + v]`` for the first three, ``[-hue, hue]`` for hue."""
        strengths = (self.brightness, self.contrast, self.saturation)
        ranges = [(max(0.0, 1.0 - v), 1.0 + v) for v in strengths]
        return (*ranges, (-self.hue, self.hue))

    @property
    def jitter_enabled(self) -> tuple[bool, bool, bool, bool]:
        """Which jitter ops exist (ColorJitter drops an op whose strength is 0)."""
        return (self.brightness > 0, self.contrast > 0, self.saturation > 0, self.hue > 0)


def _lookup(node: Any, dotted: str) -> Any:
    value = node
    for part in dotted.split("."):
        if isinstance(value, Mapping):
            if part not in value:
                raise KeyError(f"augmentation config has no key {dotted!r}")
            value = value[part]
        elif hasattr(value, part):
            value = getattr(value, part)
        else:
            raise KeyError(f"augmentation config has no key {dotted!r}")
    return value


@dataclass(frozen=True)
class AugmentationDraw:
    """The random parameters of one batch, one row per sample (tensors on the batch's device).

    ``boxes`` are ``(top, left, height, width)`` crop boxes (long, ``(B, 4)``); the masks
    (bool, ``(B,)``) say which samples get a step; ``jitter_factors`` (``(B, 4)``) are the
    brightness, contrast, saturation and hue factors and ``jitter_order`` (long, ``(B, 4)``)
    the op (0 brightness, 1 contrast, 2 saturation, 3 hue) at each of the 4 positions;
    ``blur_sigma`` (``(B,)``) the blur standard deviations. Absent steps have all-False masks.
    """

    boxes: Tensor
    jitter: Tensor
    jitter_factors: Tensor
    jitter_order: Tensor
    grayscale: Tensor
    blur: Tensor
    blur_sigma: Tensor
    solarize: Tensor
    equalize: Tensor
    flip: Tensor


def sample_crop_boxes(
    batch_size: int,
    height: int,
    width: int,
    scale: tuple[float, float],
    ratio: tuple[float, float] = CROP_RATIO,
    generator: torch.Generator | None = None,
    device: torch.device | str | None = None,
) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """RandomResizedCrop boxes for ``batch_size`` images of ``height x width``, vectorised.

    Exactly torchvision's ``RandomResizedCrop.get_params`` per sample: up to 10 attempts of
    ``area = H * W * U(scale)``, ``r = exp(U(log ratio))``, ``w = round(sqrt(area * r))``,
    ``h = round(sqrt(area / r))``; the first attempt with ``0 < w <= W`` and ``0 < h <= H``
    wins, with ``top ~ randint(0, H - h + 1)`` and ``left ~ randint(0, W - w + 1)``; if none
    fits, the central crop of the whole image with its aspect ratio clamped into ``ratio``.

    Returns:
        ``(top, left, h, w)``, long tensors of shape ``(batch_size,)``.
    """
    attempts = 10
    kw: dict[str, Any] = {"generator": generator, "device": device}
    area = float(height * width)
    target = area * (scale[0] + (scale[1] - scale[0]) * torch.rand(batch_size, attempts, **kw))
    log_lo, log_hi = math.log(ratio[0]), math.log(ratio[1])
    aspect = torch.exp(log_lo + (log_hi - log_lo) * torch.rand(batch_size, attempts, **kw))
    w = torch.sqrt(target * aspect).round().long()
    h = torch.sqrt(target / aspect).round().long()
    fits = (w > 0) & (w <= width) & (h > 0) & (h <= height)
    first = fits.to(torch.uint8).argmax(dim=1, keepdim=True)  # the first attempt that fits
    w = w.gather(1, first).squeeze(1)
    h = h.gather(1, first).squeeze(1)
    any_fit = fits.any(dim=1)
    # the fallback, as torchvision: the central crop with the aspect ratio clamped
    in_ratio = width / height
    if in_ratio < min(ratio):
        fb_w, fb_h = width, int(round(width / min(ratio)))
    elif in_ratio > max(ratio):
        fb_h, fb_w = height, int(round(height * max(ratio)))
    else:
        fb_w, fb_h = width, height
    h = torch.where(any_fit, h, fb_h)
    w = torch.where(any_fit, w, fb_w)
    # randint(0, n) as floor(U * n), clamped against float rounding at the top
    u = torch.rand(2, batch_size, **kw)
    top = (u[0] * (height - h + 1)).floor().long().clamp_(max=height - h)
    left = (u[1] * (width - w + 1)).floor().long().clamp_(max=width - w)
    top = torch.where(any_fit, top, (height - fb_h) // 2)
    left = torch.where(any_fit, left, (width - fb_w) // 2)
    return top, left, h, w


def sample_permutations(
    batch_size: int,
    n: int,
    generator: torch.Generator | None = None,
    device: torch.device | str | None = None,
) -> Tensor:
    """``batch_size`` independent uniform permutations of ``range(n)`` (``argsort(U(0,1))``),
    long ``(batch_size, n)``; ColorJitter's ``randperm(4)`` per sample."""
    return torch.rand(batch_size, n, generator=generator, device=device).argsort(dim=1)


def _gray(x: Tensor) -> Tensor:
    """Luma ``0.2989 R + 0.587 G + 0.114 B``, ``(n, 1, H, W)`` (torchvision's formula)."""
    r, g, b = x.unbind(dim=1)
    return (
        r.mul(_GRAY_WEIGHTS[0])
        .add_(g, alpha=_GRAY_WEIGHTS[1])
        .add_(b, alpha=_GRAY_WEIGHTS[2])[:, None]
    )


def _linear_color(x: Tensor, a: Tensor, b: Tensor, c: Tensor) -> Tensor:
    """``clamp(a * x + b * gray(x) + c * mean(gray(x)), 0, 1)`` with per-sample ``a, b, c``.

    Brightness ``f`` is ``(f, 0, 0)`` (``x * f``), contrast ``(f, 0, 1 - f)`` (blend with the
    mean gray level), saturation ``(f, 1 - f, 0)`` (blend with the gray image): torchvision's
    ``adjust_brightness/contrast/saturation`` tensor kernels, per sample.
    """
    gray = _gray(x)
    mean = gray.mean(dim=(1, 2, 3), keepdim=True)
    view = (-1, 1, 1, 1)
    out = x * a.view(view) + gray * b.view(view) + mean * c.view(view)
    return out.clamp_(0.0, 1.0)


def _adjust_hue(x: Tensor, factor: Tensor) -> Tensor:
    """Hue rotation by ``f`` turns per sample: torchvision's ``adjust_hue`` (RGB -> HSV,
    ``h = (h + f) mod 1``, HSV -> RGB) in closed form.

    With ``M = max(r, g, b)``, ``m = min``, ``d = M - m`` and ``h6 = 6 h`` in [0, 6) from the
    channel holding the maximum (``(g - b) / d``; ``2 + (b - r) / d``; ``4 + (r - g) / d``),
    channel ``c`` with ``n = 5, 3, 1`` for R, G, B becomes
    ``M - d * clamp(min(k, 4 - k), 0, 1)``, ``k = (n + h6 + 6 f) mod 6``; gray pixels stay.
    """
    r, g, b = x.unbind(dim=1)
    maxc = torch.maximum(torch.maximum(r, g), b)
    delta = maxc - torch.minimum(torch.minimum(r, g), b)
    d = torch.where(delta == 0, 1.0, delta)
    h6 = torch.where(
        maxc == r, (g - b) / d, torch.where(maxc == g, (b - r) / d + 2.0, (r - g) / d + 4.0)
    )
    h6 = h6.add_(6.0 * factor.view(-1, 1, 1))
    n = torch.arange(5.0, 0.0, -2.0, dtype=x.dtype, device=x.device).view(1, 3, 1, 1)  # 5, 3, 1
    k = (h6[:, None] + n).remainder_(6.0)
    t = torch.minimum(k, 4.0 - k).clamp_(0.0, 1.0)
    return t.mul_(delta[:, None]).neg_().add_(maxc[:, None])


def _grayscale(x: Tensor) -> Tensor:
    """The luma in all 3 channels (``rgb_to_grayscale(num_output_channels=3)``)."""
    return _gray(x).repeat(1, 3, 1, 1)


def _gaussian_blur(x: Tensor, sigma: Tensor) -> Tensor:
    """Separable Gaussian blur with per-sample ``sigma``: kernel ``exp(-t^2 / (2 sigma^2))``
    normalised, ``t = -(k-1)/2 .. (k-1)/2``, ``k = 13`` (fewer for images under 7 px), reflect
    padding; one grouped conv per direction (``groups = 3n``). torchvision's ``gaussian_blur``."""
    n, c, height, width = x.shape
    k = min(_BLUR_KERNEL, 2 * (min(height, width) - 1) + 1)
    if k <= 1:
        return x
    t = torch.arange(k, device=x.device, dtype=x.dtype) - (k - 1) / 2
    kernel = torch.softmax(-0.5 * (t / sigma.to(x.dtype)[:, None]).square(), dim=1)  # (n, k)
    kernel = kernel.repeat_interleave(c, dim=0)  # (n * c, k)
    pad = k // 2
    y = nnf.pad(x.reshape(1, n * c, height, width), (pad, pad, pad, pad), mode="reflect")
    y = nnf.conv2d(y, kernel.view(n * c, 1, k, 1), groups=n * c)
    y = nnf.conv2d(y, kernel.view(n * c, 1, 1, k), groups=n * c)
    return y.view(n, c, height, width)


def _solarize(x: Tensor) -> Tensor:
    """``1 - x`` where ``x >= 127.5 / 255`` (PIL's ``v >= 128 -> 255 - v`` on rounded values)."""
    return torch.where(x >= 127.5 / 255.0, 1.0 - x, x)


def _equalize(x: Tensor) -> Tensor:
    """Rounds to uint8 and applies torchvision's batched ``equalize`` (PIL's LUT), per channel."""
    u8 = x.mul(255.0).round_().to(torch.uint8)
    return tvf.equalize(u8).to(x.dtype).div_(255.0)


def _hflip(x: Tensor) -> Tensor:
    """Mirror left-right."""
    return x.flip(-1)


def _apply_masked(
    x: Tensor, mask: Tensor, fn: Callable[..., Tensor], *args: Tensor, dense: bool
) -> Tensor:
    """``fn`` on the samples where ``mask`` holds (per-sample ``args`` follow the samples).

    Dense: ``fn`` on the whole batch and ``torch.where`` (no host sync, extra compute). Index:
    ``fn`` on ``x[idx]`` only, written back in place (one host sync for ``nonzero``).
    """
    if dense:
        return torch.where(mask.view(-1, 1, 1, 1), fn(x, *args), x)
    idx = mask.nonzero().squeeze(1)
    if idx.numel() == 0:
        return x
    if idx.numel() == x.shape[0]:
        return fn(x, *args)
    x[idx] = fn(x[idx], *(a[idx] for a in args))
    return x


class BatchAugmentation:
    """One solo-learn pipeline on a batch: ``(B, 3, H, W)`` uint8 -> normalised float32
    ``(B, 3, crop, crop)`` on the same device, every random parameter drawn per sample.

    Args:
        params: the pipeline.
        dense: how a step reaches its random subset: ``True`` computes it on the whole batch
            and selects with ``torch.where`` (no host synchronisation), ``False`` indexes the
            subset (less compute, one sync per step). ``None``: index on CPU, dense elsewhere.
    """

    def __init__(self, params: AugmentationParams, dense: bool | None = None) -> None:
        self.params = params
        self.dense = dense

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.params}, dense={self.dense})"

    def __call__(self, images: Tensor, generator: torch.Generator | None = None) -> Tensor:
        """Augments a batch; ``generator`` (on the images' device) makes it reproducible."""
        _check_images(images)
        n, _, height, width = images.shape
        draw = self.sample(n, height, width, device=images.device, generator=generator)
        return self.apply(images, draw)

    def sample(
        self,
        batch_size: int,
        height: int,
        width: int,
        device: torch.device | str | None = None,
        generator: torch.Generator | None = None,
    ) -> AugmentationDraw:
        """Draws every random parameter of a batch (see :class:`AugmentationDraw`)."""
        p = self.params
        kw: dict[str, Any] = {"generator": generator, "device": device}
        if p.rrc_enabled:
            boxes = torch.stack(
                sample_crop_boxes(
                    batch_size, height, width, (p.crop_min_scale, p.crop_max_scale), **kw
                ),
                dim=1,
            )
        else:  # the whole image (filled on the device: no host-to-device copy)
            boxes = torch.zeros(batch_size, 4, dtype=torch.long, device=device)
            boxes[:, 2], boxes[:, 3] = height, width

        def bernoulli(prob: float) -> Tensor:
            if prob <= 0:
                return torch.zeros(batch_size, dtype=torch.bool, device=device)
            return torch.rand(batch_size, **kw) < prob

        jitter = bernoulli(p.jitter_prob)
        u = torch.rand(batch_size, 4, **kw)
        factors = torch.stack(
            [lo + (hi - lo) * u[:, k] for k, (lo, hi) in enumerate(p.jitter_ranges)], dim=1
        )
        order = sample_permutations(batch_size, 4, **kw)
        grayscale = bernoulli(p.grayscale_prob)
        blur = bernoulli(p.blur_prob)
        sigma = BLUR_SIGMA[0] + (BLUR_SIGMA[1] - BLUR_SIGMA[0]) * torch.rand(batch_size, **kw)
        solarize = bernoulli(p.solarization_prob)
        equalize = bernoulli(p.equalization_prob)
        flip = bernoulli(p.flip_prob)
        return AugmentationDraw(
            boxes=boxes,
            jitter=jitter,
            jitter_factors=factors,
            jitter_order=order,
            grayscale=grayscale,
            blur=blur,
            blur_sigma=sigma,
            solarize=solarize,
            equalize=equalize,
            flip=flip,
        )

    def apply(self, images: Tensor, draw: AugmentationDraw) -> Tensor:
        """Applies the pipeline with the given random parameters.

        ``images``: uint8 ``(B, 3, H, W)`` (or float in [0, 1]); never modified.
        """
        _check_images(images)
        p = self.params
        dense = self.dense if self.dense is not None else images.device.type != "cpu"
        if images.dtype == torch.uint8:
            x = images.to(torch.float32).div_(255.0)
        else:
            x = images.to(torch.float32, copy=True)

        x = self._crop(x, draw.boxes) if p.rrc_enabled else self._resize(x)
        if p.jitter_prob > 0 and any(p.jitter_enabled):
            x = self._jitter(x, draw, dense)
        if p.grayscale_prob > 0:
            x = _apply_masked(x, draw.grayscale, _grayscale, dense=True)
        if p.blur_prob > 0:
            x = _apply_masked(x, draw.blur, _gaussian_blur, draw.blur_sigma, dense=dense)
        if p.solarization_prob > 0:
            x = _apply_masked(x, draw.solarize, _solarize, dense=True)
        if p.equalization_prob > 0:
            x = _apply_masked(x, draw.equalize, _equalize, dense=dense)
        if p.flip_prob > 0:
            x = _apply_masked(x, draw.flip, _hflip, dense=True)
        for c in range(3):  # (x - mean) / std with Python scalars: no host-to-device copy
            x[:, c].sub_(p.mean[c]).div_(p.std[c])
        return x.contiguous()

    def _crop(self, x: Tensor, boxes: Tensor) -> Tensor:
        """All crops at once: ``affine_grid`` + bicubic ``grid_sample`` (border padding,
        ``align_corners=False``) with ``theta = [[w/W, 0, (2j+w)/W - 1], [0, h/H, (2i+h)/H - 1]]``
        per sample, which samples output pixel ``u`` at source ``j + (u + 0.5) w / S - 0.5``
        (``resized_crop``'s mapping); clamped to [0, 1]."""
        n, c, height, width = x.shape
        size = self.params.crop_size
        top, left, h, w = boxes.to(x.dtype).unbind(dim=1)
        zero = torch.zeros_like(w)
        theta = torch.stack(
            (
                torch.stack((w / width, zero, (2 * left + w) / width - 1), dim=1),
                torch.stack((zero, h / height, (2 * top + h) / height - 1), dim=1),
            ),
            dim=1,
        )
        grid = nnf.affine_grid(theta, [n, c, size, size], align_corners=False)
        out = nnf.grid_sample(x, grid, mode="bicubic", padding_mode="border", align_corners=False)
        return out.clamp_(0.0, 1.0)

    def _resize(self, x: Tensor) -> Tensor:
        """``Resize(crop_size, BICUBIC)``: the shorter side to ``crop_size`` (antialiased),
        clamped to [0, 1]."""
        out = tvf.resize(x, [self.params.crop_size], InterpolationMode.BICUBIC, antialias=True)
        return out.clamp_(0.0, 1.0) if out is not x else x

    def _jitter(self, x: Tensor, draw: AugmentationDraw, dense: bool) -> Tensor:
        """ColorJitter per sample: at each of the 4 positions, the op ``jitter_order[:, k]``
        with its factor; brightness/contrast/saturation as one :func:`_linear_color` call on
        the samples whose op there is one of them, then hue on those whose op is hue."""
        enabled = self.params.jitter_enabled
        for k in range(4):
            op = draw.jitter_order[:, k]
            f = draw.jitter_factors.gather(1, op[:, None]).squeeze(1)
            chosen = [draw.jitter & (op == i) if enabled[i] else None for i in range(4)]
            is_b, is_c, is_s, is_h = chosen
            linear = [m for m in (is_b, is_c, is_s) if m is not None]
            if linear:
                sel = linear[0]
                for m in linear[1:]:
                    sel = sel | m
                one, zero = torch.ones_like(f), torch.zeros_like(f)
                b = torch.where(is_s, 1 - f, zero) if is_s is not None else zero
                c = torch.where(is_c, 1 - f, zero) if is_c is not None else zero
                a = torch.where(sel, f, one)
                x = _apply_masked(x, sel, _linear_color, a, b, c, dense=dense)
            if is_h is not None:
                x = _apply_masked(x, is_h, _adjust_hue, f, dense=dense)
        return x


def _check_images(images: Tensor) -> None:
    if images.ndim != 4 or images.shape[1] != 3:
        raise ValueError(f"expected images of shape (B, 3, H, W), got {tuple(images.shape)}")
    if images.dtype != torch.uint8 and not images.is_floating_point():
        raise TypeError(f"expected uint8 (or float in [0, 1]) images, got {images.dtype}")


class BatchViews:
    """Several pipelines, each making ``num_crops`` views: solo-learn's
    ``FullTransformPipeline`` of ``NCropAugmentation`` s, on a batch.

    ``views(images)`` returns the views in solo-learn's order: all crops of the first
    pipeline, then all of the second, and so on.
    """

    def __init__(self, pipelines: Sequence[tuple[BatchAugmentation, int]]) -> None:
        if not pipelines:
            raise ValueError("BatchViews needs at least one pipeline")
        for _, num_crops in pipelines:
            if num_crops < 1:
                raise ValueError(f"num_crops must be >= 1, got {num_crops}")
        self.pipelines = list(pipelines)

    @property
    def num_views(self) -> int:
        """Total number of views per image."""
        return sum(n for _, n in self.pipelines)

    def __call__(self, images: Tensor, generator: torch.Generator | None = None) -> list[Tensor]:
        """The views of a uint8 ``(B, 3, H, W)`` batch, each ``(B, 3, crop, crop)``."""
        return [aug(images, generator) for aug, n in self.pipelines for _ in range(n)]

    def __repr__(self) -> str:
        inner = ", ".join(f"{n} x {aug!r}" for aug, n in self.pipelines)
        return f"{type(self).__name__}([{inner}])"


#: the generator stream of EffSSL's calibration pass (training epochs are streams 0, 1, ...)
CALIBRATION_STREAM = -1


def stream_seed(seed: int, rank: int, stream: int | str) -> int:
    """A 56-bit seed that depends on ``(seed, rank, stream)`` only: the first 7 bytes of
    ``sha256(f"{seed}/{rank}/{stream}")``, little-endian."""
    digest = hashlib.sha256(f"{seed}/{rank}/{stream}".encode()).digest()
    return int.from_bytes(digest[:7], "little")


def seeded_generator(device: torch.device, seed: int, rank: int, stream: int) -> torch.Generator:
    """A generator on ``device`` seeded by :func:`stream_seed` ``(seed, rank, stream)``."""
    return torch.Generator(device=device).manual_seed(stream_seed(seed, rank, stream))
