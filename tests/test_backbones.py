"""Tests for the timm backbone factory (CPU, small models, tiny batches)."""

from __future__ import annotations

import warnings

import pytest
import timm
import torch
from torch import nn

from effssl_plugin.backbones import LOW_RES_FAMILIES, timm_backbone
from effssl_plugin.errors import ConfigError


def _x(size: int = 32, n: int = 2) -> torch.Tensor:
    return torch.randn(n, 3, size, size, generator=torch.Generator().manual_seed(0))


@pytest.mark.parametrize(
    ("name", "dim"),
    [
        ("resnet18", 512),
        ("resnet10t", 512),
        ("mobilenetv3_small_100", 1024),
        ("efficientnet_b0", 1280),
        ("convnext_atto", 320),
    ],
)
def test_low_res_cnn_output_and_stride_8(name: str, dim: int) -> None:
    model = timm_backbone("effssl", model_name=name, low_res=True).eval()
    assert model.num_features == dim
    with torch.no_grad():
        out = model(_x())
        fmap = model.forward_features(_x())
    assert out.shape == (2, dim)
    assert fmap.shape[-2:] == (4, 4)  # 32 px / total stride 8


def test_low_res_vit_output_and_tokens() -> None:
    model = timm_backbone(model_name="vit_tiny_patch16_224", low_res=True).eval()
    assert isinstance(model, timm.models.vision_transformer.VisionTransformer)
    assert model.num_features == 192
    assert tuple(model.patch_embed.patch_size) == (4, 4)
    assert tuple(model.patch_embed.img_size) == (32, 32)
    with torch.no_grad():
        out = model(_x())
        tokens = model.forward_features(_x())
    assert out.shape == (2, 192)
    assert tokens.shape == (2, 1 + 8 * 8, 192)  # cls + (32 / 4) ** 2 patches


def test_low_res_vit_keeps_user_patch_size_and_img_size() -> None:
    model = timm_backbone(
        model_name="deit_tiny_patch16_224", low_res=True, img_size=48, patch_size=8
    )
    assert tuple(model.patch_embed.patch_size) == (8, 8)
    assert tuple(model.patch_embed.img_size) == (48, 48)
    with torch.no_grad():
        assert model.forward_features(_x(48)).shape == (2, 1 + 6 * 6, 192)


def test_without_low_res_resnet18_reduces_32px_to_1x1() -> None:
    model = timm_backbone(model_name="resnet18").eval()
    assert isinstance(model.maxpool, nn.MaxPool2d)
    with torch.no_grad():
        assert model.forward_features(_x()).shape == (2, 512, 1, 1)
        assert model(_x()).shape == (2, 512)


def test_resnet18_low_res_stem() -> None:
    model = timm_backbone(model_name="resnet18", low_res=True)
    conv = model.conv1
    assert type(conv) is nn.Conv2d
    assert conv.kernel_size == (3, 3) and conv.stride == (1, 1) and conv.padding == (1, 1)
    assert conv.bias is None
    assert (conv.in_channels, conv.out_channels) == (3, 64)
    assert isinstance(model.maxpool, nn.Identity)


def test_resnet10t_deep_stem_keeps_convs_first_gets_stride_1() -> None:
    ref = timm_backbone(model_name="resnet10t")
    model = timm_backbone(model_name="resnet10t", low_res=True)
    assert isinstance(model.conv1, nn.Sequential)
    ref_convs = [m for m in ref.conv1 if isinstance(m, nn.Conv2d)]
    convs = [m for m in model.conv1 if isinstance(m, nn.Conv2d)]
    assert len(convs) == len(ref_convs) == 3
    assert ref_convs[0].stride == (2, 2) and convs[0].stride == (1, 1)
    for c, r in zip(convs, ref_convs, strict=True):
        assert (c.in_channels, c.out_channels, c.kernel_size) == (
            r.in_channels,
            r.out_channels,
            r.kernel_size,
        )
        assert c.padding == r.padding  # 3x3 'same' padding is 1 at stride 1 and 2
    assert isinstance(model.maxpool, nn.Identity)


def test_convnext_low_res_stem() -> None:
    ref = timm_backbone(model_name="convnext_atto")
    assert ref.stem[0].kernel_size == (4, 4) and ref.stem[0].stride == (4, 4)
    conv = timm_backbone(model_name="convnext_atto", low_res=True).stem[0]
    assert conv.kernel_size == (3, 3) and conv.stride == (1, 1) and conv.padding == (1, 1)
    assert (conv.in_channels, conv.out_channels) == (3, ref.stem[0].out_channels)


def test_efficientnet_low_res_strides() -> None:
    model = timm_backbone(model_name="efficientnet_b0", low_res=True)
    assert model.conv_stem.stride == (1, 1)
    assert model.blocks[0][0].conv_dw.stride == (1, 1)  # stage 0 was already stride 1
    assert model.blocks[1][0].conv_dw.stride == (1, 1)  # first stride-2 stage
    assert model.blocks[2][0].conv_dw.stride == (2, 2)  # later stages untouched
    mnv3 = timm_backbone(model_name="mobilenetv3_small_100", low_res=True)
    assert mnv3.blocks[0][0].conv_dw.stride == (1, 1)  # its stage 0 is the stride-2 one
    assert mnv3.blocks[1][0].conv_dw.stride == (2, 2)
    es = timm_backbone(model_name="efficientnet_es", low_res=True)  # EdgeResidual blocks
    assert es.blocks[1][0].conv_exp.stride == (1, 1)


def _stage_sizes(model: nn.Module, size: int) -> list[int]:
    sizes: list[int] = []
    hooks = [
        m.register_forward_hook(lambda _m, _i, o: sizes.append(o.shape[-1]))
        for m in [model.conv_stem, *model.blocks]
    ]
    with torch.no_grad():
        model.eval().forward_features(_x(size, n=1))
    for h in hooks:
        h.remove()
    return sizes


@pytest.mark.parametrize(
    "name",
    [
        "efficientnet_b0",
        "tf_efficientnet_b0",
        "efficientnet_es",
        "mobilenetv3_small_100",
        "mobilenetv2_100",
    ],
)
def test_efficientnet_family_low_res_padding(name: str) -> None:
    # Without low_res a 128 px input reaches 32 px after the stem and first stride-2 stage; with
    # low_res a 32 px input must stay exactly 32 px up to there (so padding is right, including
    # the TF-"same" Conv2dSame of tf_ models) and then match the reference stage by stage.
    ref = _stage_sizes(timm_backbone(model_name=name), 128)
    low = _stage_sizes(timm_backbone(model_name=name, low_res=True), 32)
    assert low == [min(32, r) for r in ref]
    assert low[-1] == 4


def test_unknown_model_name_suggests() -> None:
    with pytest.raises(ConfigError) as info:
        timm_backbone(model_name="resnet81")
    msg = str(info.value)
    assert "backbone.kwargs.model_name" in msg and "'resnet81'" in msg
    assert "Did you mean:" in msg and "resnet18" in msg
    assert "\n" not in msg


def test_low_res_unsupported_family() -> None:
    probe = timm.create_model("regnetx_002", num_classes=0)
    supported = tuple(c for classes in LOW_RES_FAMILIES.values() for c in classes)
    assert not isinstance(probe, supported)
    with pytest.raises(ConfigError) as info:
        timm_backbone(model_name="regnetx_002", low_res=True)
    msg = str(info.value)
    assert "backbone.kwargs.low_res" in msg
    assert "regnetx_002" in msg and "RegNet" in msg
    for family in ("ResNet", "EfficientNet", "ConvNeXt", "VisionTransformer"):
        assert family in msg
    # without low_res the same model builds fine
    assert timm_backbone(model_name="regnetx_002").num_features == probe.num_features


def test_img_size_dropped_for_cnn_used_for_vit() -> None:
    with pytest.raises(TypeError):  # timm itself rejects img_size for a ResNet ...
        timm.create_model("resnet18", num_classes=0, img_size=64)
    cnn = timm_backbone(model_name="resnet18", img_size=64)  # ... the factory drops it
    assert isinstance(cnn, timm.models.resnet.ResNet)
    vit = timm_backbone(model_name="vit_tiny_patch16_224", img_size=64).eval()
    assert tuple(vit.patch_embed.img_size) == (64, 64)
    assert tuple(vit.patch_embed.patch_size) == (16, 16)  # patch size only changes for low_res
    with torch.no_grad():
        assert vit.forward_features(_x(64, n=1)).shape == (1, 1 + 4 * 4, 192)


def test_bad_kwargs_are_config_errors() -> None:
    with pytest.raises(ConfigError, match=r"backbone\.kwargs.*not_an_arg"):
        timm_backbone(model_name="resnet18", not_an_arg=1)
    with pytest.raises(ConfigError, match=r"backbone\.kwargs\.num_classes"):
        timm_backbone(model_name="resnet18", num_classes=10)


def test_solo_registry_override_still_builds_timm_model() -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        pytest.importorskip("solo.methods", reason="solo-learn is not installed")
    entry = timm.models.model_entrypoint("convnext_tiny")
    assert not entry.__module__.startswith("timm."), "solo-learn no longer overrides convnext_tiny"

    model = timm_backbone(model_name="convnext_tiny").eval()
    assert type(model).__module__ == "timm.models.convnext"
    assert type(model).__name__ == "ConvNeXt"
    assert model.num_features == 768
    assert model.pretrained_cfg["architecture"] == "convnext_tiny"
    with torch.no_grad():
        assert model(_x(64, n=1)).shape == (1, 768)
    assert timm.models.model_entrypoint("convnext_tiny") is entry  # registry left untouched

    low = timm_backbone(model_name="convnext_tiny", low_res=True)
    assert type(low).__module__ == "timm.models.convnext"
    assert low.stem[0].stride == (1, 1)

    # a name only solo registers is not a timm model
    with pytest.raises(ConfigError, match=r"backbone\.kwargs\.model_name='vit_tiny'.*solo"):
        timm_backbone(model_name="vit_tiny")
