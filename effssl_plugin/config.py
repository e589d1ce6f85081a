"""solo-learn's ``parse_cfg`` with the real process count for the learning-rate scaling and
``auto`` values resolved, and the facts (:func:`describe_inputs`) the checks of
:mod:`effssl_plugin.checks` need from this machine."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from typing import Any

import omegaconf
import torch
from omegaconf import OmegaConf
from solo.args.pretrain import _SUPPORTED_DATASETS
from solo.args.pretrain import parse_cfg as solo_parse_pretrain_cfg
from solo.utils.misc import omegaconf_select

from effssl_plugin.checks import (
    NUMERIC_KEYS,
    InputFacts,
    check_config_and_paths,
    check_numeric_keys,
    check_stopping_condition,
)
from effssl_plugin.data import describe_data
from effssl_plugin.errors import ConfigError, suggest

__all__ = [
    "resolve_accelerator",
    "auto_precision",
    "local_device_count",
    "parse_with_real_devices",
    "parse_pretrain_cfg",
    "describe_inputs",
    # the checks' home is effssl_plugin.checks; these names stay importable from here
    "check_numeric_keys",
    "check_stopping_condition",
    "NUMERIC_KEYS",
]


def resolve_accelerator(accelerator: str | None) -> str:
    """Lightning's accelerator name that ``accelerator`` stands for on this machine."""
    acc = (accelerator or "auto").lower()
    if acc in ("auto", "gpu") and torch.cuda.is_available():
        return "cuda"
    if acc == "gpu" or (acc == "auto" and torch.backends.mps.is_available()):
        return "mps"
    return "cpu" if acc == "auto" else acc


def local_device_count(accelerator: str | None, devices: Any) -> int:
    """How many processes Lightning starts per node, from its own parsers: unlike solo-learn's
    ``len(cfg.devices)``, right for ``"auto"``, ``-1``, ints, ``"1"``, ``"0,1"`` and lists."""
    from lightning.pytorch.accelerators import AcceleratorRegistry

    acc = resolve_accelerator(accelerator)
    if acc not in AcceleratorRegistry:
        raise ConfigError(
            f"accelerator={accelerator!r} is unknown.{suggest(acc, AcceleratorRegistry.keys())}"
        )
    cls = AcceleratorRegistry[acc]["accelerator"]
    if OmegaConf.is_config(devices):
        devices = OmegaConf.to_container(devices)
    if devices is None or devices == "auto":
        devices = cls.auto_device_count()
    try:
        parsed = cls.parse_devices(devices)
    except Exception as err:
        raise ConfigError(
            f"devices={devices!r} is not valid for accelerator {acc}: {err}"
        ) from None
    return len(parsed) if isinstance(parsed, (list, tuple)) else int(parsed)


def parse_with_real_devices(
    cfg: omegaconf.DictConfig, solo_parse: Callable[[omegaconf.DictConfig], omegaconf.DictConfig]
) -> omegaconf.DictConfig:
    """Runs one of solo-learn's ``parse_cfg`` functions, which scale the learning rate by
    ``len(cfg.devices) * num_nodes``, with ``cfg.devices`` temporarily a list of the real
    per-node process count; records ``world_size`` (devices x nodes)."""
    OmegaConf.set_struct(cfg, False)
    devices = omegaconf_select(cfg, "devices", "auto")
    per_node = local_device_count(omegaconf_select(cfg, "accelerator", "auto"), devices)
    cfg.devices = list(range(per_node))
    try:
        cfg = solo_parse(cfg)
    except AssertionError as err:
        raise ConfigError(f"invalid config: {err or 'solo-learn rejected it'}") from None
    cfg.devices = devices
    cfg.world_size = per_node * int(omegaconf_select(cfg, "num_nodes", 1))
    return cfg


def auto_precision(accelerator: str, bf16_supported: bool) -> str:
    """What ``precision: auto`` stands for: on CUDA, ``bf16-mixed`` where the GPU computes in
    bfloat16 natively (compute capability >= 8.0, Ampere and newer; ROCm), which needs no
    GradScaler and has float32's range, else ``16-mixed``; ``32-true`` elsewhere."""
    if accelerator != "cuda":
        return "32-true"
    return "bf16-mixed" if bf16_supported else "16-mixed"


def cuda_bf16_supported() -> bool:
    """Whether the current CUDA device computes in bfloat16 natively (not emulated). It
    initialises CUDA in this process, which Lightning's DDP launcher for scripts (new
    processes, not forks) allows."""
    return torch.cuda.is_available() and torch.cuda.is_bf16_supported(including_emulation=False)


def resolve_auto_machine(cfg: omegaconf.DictConfig) -> omegaconf.DictConfig:
    """``precision: auto``: :func:`auto_precision` for this machine; ``sync_batchnorm: auto``:
    on when several CUDA processes train."""
    acc = resolve_accelerator(omegaconf_select(cfg, "accelerator", "auto"))
    if omegaconf_select(cfg, "precision", "auto") == "auto":
        cfg.precision = auto_precision(acc, acc == "cuda" and cuda_bf16_supported())
    if omegaconf_select(cfg, "sync_batchnorm", "auto") == "auto":
        cfg.sync_batchnorm = acc == "cuda" and int(omegaconf_select(cfg, "world_size", 1)) > 1
    return cfg


def describe_inputs(cfg: omegaconf.DictConfig, count_images: bool = True) -> InputFacts:
    """The facts :func:`~effssl_plugin.checks.check_inputs` needs beyond the config: the
    methods and datasets solo-learn knows, timm's model names (for the ``timm`` backbone), the
    process count, the data folders and (with ``count_images``) size, and whether NVIDIA DALI
    imports (with ``data.format=dali``)."""
    from solo.methods import METHODS

    from effssl_plugin import register

    register()
    world_size = None
    if omegaconf_select(cfg, "optimizer.batch_size", None) is not None:
        per_node = local_device_count(
            omegaconf_select(cfg, "accelerator", "auto"), omegaconf_select(cfg, "devices", "auto")
        )
        nodes = omegaconf_select(cfg, "num_nodes", 1)
        world_size = per_node * nodes if isinstance(nodes, int) else None
    dali_error = None
    if omegaconf_select(cfg, "data.format", None) == "dali":
        try:
            import solo.data.dali_dataloader  # noqa: F401
        except ImportError as err:
            dali_error = str(err)
    timm_models: tuple[str, ...] = ()
    if omegaconf_select(cfg, "backbone.name", None) == "timm":
        import timm

        timm_models = tuple(timm.list_models())
    return replace(
        describe_data(cfg, count_images=count_images),
        methods=tuple(METHODS),
        datasets=tuple(_SUPPORTED_DATASETS),
        world_size=world_size,
        dali_import_error=dali_error,
        timm_models=timm_models,
    )


def parse_pretrain_cfg(cfg: omegaconf.DictConfig, check: bool = True) -> omegaconf.DictConfig:
    """solo-learn's pretrain ``parse_cfg`` with the world size Lightning will really use
    (recorded as ``world_size``) and ``auto`` values; ``check``: after
    :func:`~effssl_plugin.checks.check_config_and_paths` on this machine's facts (the launcher
    runs the whole pass, :func:`~effssl_plugin.checks.check_inputs`, itself and passes
    ``check=False``)."""
    OmegaConf.set_struct(cfg, False)
    if check:
        check_config_and_paths(cfg, describe_inputs(cfg, count_images=False))
    if "num_workers" in cfg.data:  # machine=cpu's resolver: record the number in args.json
        cfg.data.num_workers = cfg.data.num_workers
    cfg = parse_with_real_devices(cfg, solo_parse_pretrain_cfg)
    if cfg.backbone.name == "timm":  # the timm factory uses it for ViT-like models only
        cfg.backbone.kwargs.img_size = omegaconf_select(
            cfg, "backbone.kwargs.img_size", int(cfg.augmentations[0].crop_size)
        )
    return resolve_auto_machine(cfg)
