"""A solo-learn backbone factory that builds any timm model.

solo-learn calls a backbone factory as ``fn(method, **cfg.backbone.kwargs)``; :func:`timm_backbone`
is such a factory. It returns the timm model itself, built with ``num_classes=0`` so that its
output is the pooled feature vector, and with ``num_features`` equal to that vector's width (what
solo-learn reads as ``features_dim``).

``img_size``
    Consumed here. It is passed to timm only when the model class takes an ``img_size`` argument
    (vision transformers and other patch-embedding / fixed-size models: ViT, DeiT, Swin, BEiT,
    EVA, MaxViT, ...); for CNNs it is dropped silently, so a launcher can always pass the crop size.

``low_res=True``
    Adapts the model to 32-96 px inputs by cutting the total stride from 32 to 8, like the classic
    CIFAR ResNet. Replaced layers are freshly initialised, so pretrained weights of those layers
    are lost. Supported families:

    * ResNet (``timm.models.resnet.ResNet``: resnet18/50, resnet10t, resnet26d, ...): a single-conv
      stem (7x7, stride 2) becomes ``Conv2d(in, out, 3, stride=1, padding=1, bias=False)``; a deep
      stem (``conv1`` is an ``nn.Sequential``) keeps its convs but its strided (first) conv gets
      stride 1; ``maxpool`` becomes ``nn.Identity()``.
    * EfficientNet / MobileNetV2 / MobileNetV3 / MobileNetV4 / LCNet
      (``timm.models.efficientnet.EfficientNet``, ``timm.models.mobilenetv3.MobileNetV3``):
      ``conv_stem`` gets stride 1, and so does the strided conv of the first block of the first
      stride-2 stage in ``blocks`` (``conv_dw``, ``conv_exp`` for EdgeResidual, ...). Static
      padding is recomputed for stride 1; TF-"same" convs (``Conv2dSame``, the ``tf_`` variants)
      pad dynamically from the stride and stay correct.
    * ConvNeXt (``timm.models.convnext.ConvNeXt`` with the patchify stem): the 4x4/stride-4 stem
      conv becomes a 3x3/stride-1/padding-1 conv with the same channels.
    * Vision transformers (``timm.models.vision_transformer.VisionTransformer`` and subclasses,
      e.g. ViT, DeiT): built with ``img_size=img_size or 32`` and ``patch_size=4`` (unless
      ``patch_size`` is given in the kwargs).

    Any other family raises :class:`~effssl_plugin.errors.ConfigError`.

Names that another package re-registered in timm's registry (importing solo-learn replaces
``convnext_*`` and ``poolformer_*`` with its own functions) still build timm's own model: the
factory calls timm's original entrypoint function directly, without touching the registry.
"""

from __future__ import annotations

import inspect
import sys
from collections.abc import Callable
from dataclasses import replace
from typing import Any

import timm
from timm.layers import CondConv2d, trunc_normal_
from timm.layers.conv2d_same import Conv2dSame, Conv2dSameExport
from timm.models import convnext as timm_convnext
from timm.models import efficientnet as timm_efficientnet
from timm.models import is_model, model_entrypoint, split_model_name_tag
from timm.models import mobilenetv3 as timm_mobilenetv3
from timm.models import resnet as timm_resnet
from timm.models import vision_transformer as timm_vit
from torch import nn

from .errors import ConfigError, suggest

__all__ = ["timm_backbone", "LOW_RES_FAMILIES"]

_KEY = "backbone.kwargs"

#: Families ``low_res=True`` supports, by model class.
LOW_RES_FAMILIES: dict[str, tuple[type[nn.Module], ...]] = {
    "ResNet": (timm_resnet.ResNet,),
    "EfficientNet/MobileNet": (timm_efficientnet.EfficientNet, timm_mobilenetv3.MobileNetV3),
    "ConvNeXt": (timm_convnext.ConvNeXt,),
    "VisionTransformer": (timm_vit.VisionTransformer,),
}

_DYNAMIC_PAD_CONVS = (Conv2dSame, Conv2dSameExport)


def timm_backbone(
    method: str | None = None,
    model_name: str = "resnet18",
    low_res: bool = False,
    img_size: int | None = None,
    pretrained: bool = False,
    **kwargs: Any,
) -> nn.Module:
    """Build timm model ``model_name`` as a solo-learn backbone (pooled features, no classifier).

    Args:
        method: The solo-learn method name; ignored.
        model_name: Any timm model name, optionally with a pretrained tag (``resnet50.a1_in1k``).
        low_res: Adapt the model for 32-96 px inputs (total stride 8); see the module docstring.
        img_size: Input size; given to timm only for models that take it (ViT-like), else dropped.
        pretrained: Load timm's pretrained weights (downloads; off by default).
        **kwargs: Passed on to ``timm.create_model``.

    Returns:
        The timm model, with ``num_features`` equal to the width of its output vector.

    Raises:
        ConfigError: Unknown model name, an argument timm rejects, or ``low_res`` on an
            unsupported family.
    """
    del method
    if "num_classes" in kwargs:
        raise ConfigError(
            f"{_KEY}.num_classes is not allowed: the backbone is always built with num_classes=0."
        )
    build = _builder(model_name)
    kwargs = {k: v for k, v in kwargs.items() if v is not None}

    if low_res or img_size is not None:
        cls = _model_class(build, model_name, kwargs)
        if low_res and _family(cls) is None:
            families = ", ".join(
                f"{fam} ({'/'.join(c.__name__ for c in classes)})"
                for fam, classes in LOW_RES_FAMILIES.items()
            )
            raise ConfigError(
                f"{_KEY}.low_res=True is not supported for {model_name!r} "
                f"(class {cls.__module__}.{cls.__qualname__}); supported families: {families}."
            )
        if low_res and issubclass(cls, timm_vit.VisionTransformer):
            kwargs["img_size"] = img_size or 32
            kwargs.setdefault("patch_size", 4)
        elif img_size is not None and _takes_img_size(cls):
            kwargs["img_size"] = img_size

    model = _call(build, model_name, pretrained, kwargs)
    if low_res:
        _adapt_low_res(model, model_name)
    hidden = getattr(model, "head_hidden_size", None)
    if isinstance(hidden, int) and hidden != model.num_features:
        # e.g. MobileNetV3: num_features is the last stage's width, but the pooled output
        # goes through conv_head; solo-learn sizes its heads from num_features.
        model.num_features = hidden
    return model


# --------------------------------------------------------------------------- building


def _is_timm_fn(fn: object) -> bool:
    return callable(fn) and str(getattr(fn, "__module__", "")).startswith("timm.")


def _native_entrypoint(arch: str) -> Callable[..., nn.Module] | None:
    """timm's own entrypoint function for ``arch``, even if another package re-registered it.

    timm's registry maps a name to the last function registered under it, but timm's original
    function stays an attribute of its model module (and of ``timm.models``, which star-imports
    them), so it is found there; the registry itself is left untouched.
    """
    fn = model_entrypoint(arch)
    if _is_timm_fn(fn):
        return fn
    candidates = [getattr(timm.models, arch, None)]
    candidates += [
        getattr(mod, arch, None)
        for name, mod in sorted(sys.modules.items())
        if name.startswith("timm.models.") and mod is not None
    ]
    for cand in candidates:
        if _is_timm_fn(cand) and getattr(cand, "__name__", None) == arch:
            return cand
    return None


def _builder(model_name: str) -> Callable[..., nn.Module]:
    """A ``fn(pretrained=..., **kwargs)`` that builds timm's own ``model_name`` with no head."""
    if not isinstance(model_name, str) or not is_model(model_name):
        raise ConfigError(
            f"{_KEY}.model_name={model_name!r} is not a timm model."
            + suggest(str(model_name), timm.list_models())
        )
    arch, tag = split_model_name_tag(model_name)
    if _is_timm_fn(model_entrypoint(arch)):

        def build(pretrained: bool, **kw: Any) -> nn.Module:
            return timm.create_model(model_name, pretrained=pretrained, num_classes=0, **kw)

        return build

    native = _native_entrypoint(arch)
    if native is None:
        owner = getattr(model_entrypoint(arch), "__module__", "?")
        raise ConfigError(
            f"{_KEY}.model_name={model_name!r} is registered in timm's registry by {owner}, "
            "not by timm; use a timm model name."
            + suggest(arch, [n for n in timm.list_models() if n != arch])
        )
    pretrained_cfg = _native_pretrained_cfg(native, arch, tag)

    def build_native(pretrained: bool, **kw: Any) -> nn.Module:
        return native(pretrained=pretrained, pretrained_cfg=pretrained_cfg, num_classes=0, **kw)

    return build_native


def _native_pretrained_cfg(native: Callable[..., Any], arch: str, tag: str) -> Any:
    """The pretrained cfg timm would have registered for ``arch.tag`` (the registry's copy is
    dropped when a name is re-registered), or ``None`` to let timm use its defaults."""
    default_cfgs = getattr(sys.modules.get(native.__module__), "default_cfgs", None) or {}
    default_cfg = default_cfgs.get(arch)
    tags = getattr(default_cfg, "tags", None)
    if not tags:
        return None
    tag = tag or tags[0]
    cfg = default_cfg.cfgs.get(tag)
    if cfg is None:
        raise ConfigError(
            f"{_KEY}.model_name: {arch!r} has no pretrained tag {tag!r}; tags: {', '.join(tags)}."
        )
    name_tag = f"{arch}.{tag}" if tag else arch
    hub_id = cfg.hf_hub_id + name_tag if cfg.hf_hub_id == "timm/" else cfg.hf_hub_id
    return replace(cfg, architecture=arch, tag=tag or None, hf_hub_id=hub_id)


def _call(
    build: Callable[..., nn.Module], model_name: str, pretrained: bool, kwargs: dict[str, Any]
) -> nn.Module:
    """Run ``build``; an argument the model rejects becomes a ConfigError naming backbone.kwargs."""
    try:
        return build(pretrained=pretrained, **kwargs)
    except TypeError as err:
        if "unexpected keyword argument" not in str(err):
            raise
        raise ConfigError(f"{_KEY}: timm model {model_name!r} rejects an argument: {err}") from err


def _model_class(
    build: Callable[..., nn.Module], model_name: str, kwargs: dict[str, Any]
) -> type[nn.Module]:
    """The class ``build`` instantiates, found by a cheap build on the meta device."""
    try:
        probe = build(pretrained=False, device="meta", **kwargs)
    except TypeError as err:
        if "unexpected keyword argument" in str(err) and "'device'" not in str(err):
            raise ConfigError(
                f"{_KEY}: timm model {model_name!r} rejects an argument: {err}"
            ) from err
        probe = None
    except Exception:  # some models cannot be built on the meta device
        probe = None
    if probe is None:
        probe = _call(build, model_name, False, kwargs)
    return type(probe)


def _takes_img_size(cls: type[nn.Module]) -> bool:
    """Whether ``cls`` (or a base it forwards to) has an ``img_size`` constructor argument."""
    for klass in cls.__mro__:
        if klass is nn.Module:
            break
        if not issubclass(klass, nn.Module):
            continue
        if "img_size" in inspect.signature(klass.__init__).parameters:
            return True
    return False


def _family(cls: type[nn.Module]) -> str | None:
    for family, classes in LOW_RES_FAMILIES.items():
        if issubclass(cls, classes):
            return family
    return None


# --------------------------------------------------------------------------- low_res


def _adapt_low_res(model: nn.Module, model_name: str) -> None:
    family = _family(type(model))
    if family == "ResNet":
        _low_res_resnet(model)
    elif family == "EfficientNet/MobileNet":
        _low_res_efficientnet(model, model_name)
    elif family == "ConvNeXt":
        _low_res_convnext(model, model_name)
    # VisionTransformer: handled at construction (img_size / patch_size).


def _stride(module: nn.Module) -> int:
    stride = getattr(module, "stride", 1)
    if isinstance(stride, (tuple, list)):
        return max(stride) if stride else 1
    return stride if isinstance(stride, int) else 1


def _set_stride_one(conv: nn.Module) -> None:
    """Make a (timm) conv stride 1, keeping 'same'-style padding correct."""
    old_stride = tuple(conv.stride)
    conv.stride = (1, 1)
    if isinstance(conv, _DYNAMIC_PAD_CONVS) or getattr(conv, "dynamic_padding", False):
        if isinstance(conv, Conv2dSameExport):
            conv.pad = None  # recomputed from the new stride on the next forward
        return
    if isinstance(conv.padding, str):  # 'valid' (or 'same', impossible with stride > 1)
        return
    new_padding = []
    for k, s, d, p in zip(conv.kernel_size, old_stride, conv.dilation, conv.padding, strict=True):
        same_for_old = ((s - 1) + d * (k - 1)) // 2
        new_padding.append((d * (k - 1)) // 2 if p == same_for_old else p)
    conv.padding = tuple(new_padding)
    if hasattr(conv, "_reversed_padding_repeated_twice"):
        conv._reversed_padding_repeated_twice = tuple(
            p for p in reversed(conv.padding) for _ in (0, 1)
        )


def _new_conv3x3(old: nn.Conv2d, bias: bool) -> nn.Conv2d:
    return nn.Conv2d(
        old.in_channels,
        old.out_channels,
        kernel_size=3,
        stride=1,
        padding=1,
        bias=bias,
        device=old.weight.device,
        dtype=old.weight.dtype,
    )


def _low_res_resnet(model: nn.Module) -> None:
    stem = model.conv1
    if isinstance(stem, nn.Sequential):  # deep stem: keep the convs, first (strided) one -> s1
        strided = [m for m in stem.modules() if isinstance(m, nn.Conv2d) and _stride(m) > 1]
        for conv in strided[:1]:
            _set_stride_one(conv)
    else:
        conv = _new_conv3x3(stem, bias=False)
        nn.init.kaiming_normal_(conv.weight, mode="fan_out", nonlinearity="relu")
        model.conv1 = conv
    model.maxpool = nn.Identity()


def _low_res_efficientnet(model: nn.Module, model_name: str) -> None:
    _set_stride_one(model.conv_stem)
    for stage in model.blocks:
        first = stage[0] if isinstance(stage, nn.Sequential) and len(stage) else stage
        strided = [m for m in first.modules() if _stride(m) > 1]
        if not strided:
            continue
        others = [m for m in strided if not isinstance(m, (nn.Conv2d, CondConv2d))]
        if others:
            raise ConfigError(
                f"{_KEY}.low_res=True: {model_name!r} downsamples with "
                f"{type(others[0]).__name__}, not a strided conv; this variant is not supported."
            )
        for conv in strided:
            _set_stride_one(conv)
        return


def _low_res_convnext(model: nn.Module, model_name: str) -> None:
    old = model.stem[0]
    if not (isinstance(old, nn.Conv2d) and tuple(old.stride) == tuple(old.kernel_size)):
        raise ConfigError(
            f"{_KEY}.low_res=True: {model_name!r} has no patchify stem (stem_type 'patch'); "
            "this ConvNeXt variant is not supported."
        )
    conv = _new_conv3x3(old, bias=old.bias is not None)
    trunc_normal_(conv.weight, std=0.02)
    if conv.bias is not None:
        nn.init.zeros_(conv.bias)
    model.stem[0] = conv
