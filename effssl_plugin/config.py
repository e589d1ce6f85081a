"""solo-learn's ``parse_cfg`` with the checks that run before anything is written, the real
process count for the learning-rate scaling, and ``auto`` values resolved."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import omegaconf
import torch
from omegaconf import OmegaConf
from solo.args.pretrain import _SUPPORTED_DATASETS
from solo.args.pretrain import parse_cfg as solo_parse_pretrain_cfg
from solo.utils.misc import omegaconf_select

from effssl_plugin.data import check_data_paths
from effssl_plugin.errors import ConfigError, suggest
from effssl_plugin.settings import DEFAULT_METHOD_KWARGS, EffSSLSettings

__all__ = [
    "resolve_accelerator",
    "auto_precision",
    "local_device_count",
    "parse_with_real_devices",
    "parse_pretrain_cfg",
    "check_global_batch",
    "check_numeric_keys",
    "check_stopping_condition",
    "NUMERIC_KEYS",
]


class Numeric(NamedTuple):
    """What a numeric config key accepts: an integer or any number, and a lower bound."""

    integer: bool = False
    low: float | None = None  # None: no bound
    low_allowed: bool = True  # >= low (True) or > low (False)

    def describe(self) -> str:
        """E.g. ``"an integer >= 1"``."""
        kind = "an integer" if self.integer else "a number"
        return (
            kind if self.low is None else f"{kind} {'>=' if self.low_allowed else '>'} {self.low}"
        )

    def accepts(self, value: Any) -> bool:
        """Whether ``value`` has the type (booleans are not numbers here) and the range."""
        if isinstance(value, bool) or not isinstance(value, int if self.integer else (int, float)):
            return False
        return self.low is None or (value >= self.low if self.low_allowed else value > self.low)


#: Every numeric config key the launcher or solo-learn computes with, and its range. Checked
#: once (:func:`check_numeric_keys`) before anything else reads them; absent or null keys are
#: skipped (required ones are checked before). Ranges of ``method_kwargs`` are the method's
#: to check (EffSSL: ``method.py``); here only their type. ``max_epochs`` also allows -1, see
#: :func:`check_stopping_condition`.
NUMERIC_KEYS: dict[str, Numeric] = {
    "optimizer.lr": Numeric(low=0, low_allowed=False),
    "optimizer.classifier_lr": Numeric(low=0, low_allowed=False),
    "optimizer.weight_decay": Numeric(low=0),
    "optimizer.batch_size": Numeric(integer=True, low=1),
    "max_epochs": Numeric(integer=True, low=-1),
    "max_steps": Numeric(integer=True, low=-1),
    "seed": Numeric(integer=True),
    "num_views": Numeric(integer=True, low=1),
    "data.num_workers": Numeric(integer=True, low=0),
    "data.fraction": Numeric(low=-1),
    "data.crop_size": Numeric(integer=True, low=1),
    "data.val_crop_pct": Numeric(low=0, low_allowed=False),
    "scheduler.warmup_epochs": Numeric(low=0),
    "scheduler.warmup_start_lr": Numeric(low=0),
    "scheduler.min_lr": Numeric(low=0),
    "knn_eval.k": Numeric(integer=True, low=1),
    "checkpoint.frequency": Numeric(integer=True, low=1),
    "checkpoint.keep_last": Numeric(integer=True, low=1),
    "auto_resume.max_hours": Numeric(low=0, low_allowed=False),
    "momentum.base_tau": Numeric(low=0),
    "momentum.final_tau": Numeric(low=0),
    # solo-learn baselines' method_kwargs (simclr, byol, mocov2plus)
    "method_kwargs.pred_hidden_dim": Numeric(integer=True),
    "method_kwargs.queue_size": Numeric(integer=True),
    # effssl's, from its defaults (floats accept integers)
    **{
        f"method_kwargs.{key}": Numeric(integer=isinstance(default, int))
        for key, default in DEFAULT_METHOD_KWARGS.items()
        if isinstance(default, (int, float)) and not isinstance(default, bool)
    },
}


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


def check_numeric_keys(cfg: omegaconf.DictConfig) -> None:
    """Every key of :data:`NUMERIC_KEYS` that is set holds a number in its range."""
    for key, rule in NUMERIC_KEYS.items():
        value = omegaconf_select(cfg, key, None)
        if value is not None and not rule.accepts(value):
            raise ConfigError(f"{key} must be {rule.describe()}, got {value!r}")


#: schedulers whose length solo-learn derives from ``max_epochs`` (unusable with -1)
_SCHEDULERS_WITHOUT_EPOCHS = ("none", "step")


def check_stopping_condition(cfg: omegaconf.DictConfig) -> None:
    """``max_epochs`` must end training: >= 1, or -1 (Lightning: no epoch limit) only with
    ``max_steps`` or ``max_time`` set and a scheduler that does not need a number of epochs."""
    if cfg.max_epochs >= 1:
        return
    if cfg.max_epochs == 0:
        raise ConfigError("max_epochs must be >= 1 (or -1 with +max_steps/+max_time), got 0")
    max_steps = omegaconf_select(cfg, "max_steps", -1) or -1
    if max_steps <= 0 and omegaconf_select(cfg, "max_time", None) is None:
        raise ConfigError(
            "max_epochs=-1 with neither max_steps nor max_time set would train forever: set "
            "max_epochs to a number of epochs, or add +max_steps=N or +max_time=DD:HH:MM:SS"
        )
    scheduler = str(omegaconf_select(cfg, "scheduler.name", "none")).lower()
    if scheduler not in _SCHEDULERS_WITHOUT_EPOCHS:
        raise ConfigError(
            f"max_epochs=-1: scheduler.name={scheduler} needs a number of epochs; set max_epochs "
            "(max_steps and max_time still stop earlier) or scheduler.name=none"
        )


def parse_pretrain_cfg(cfg: omegaconf.DictConfig) -> omegaconf.DictConfig:
    """solo-learn's pretrain ``parse_cfg`` after every check that needs no data, with the
    world size Lightning will really use (recorded as ``world_size``) and ``auto`` values."""
    OmegaConf.set_struct(cfg, False)
    required = ["method", "backbone.name", "data.dataset", "data.train_path", "optimizer.lr"]
    required += ["optimizer.batch_size", "augmentations", "max_epochs"]
    if omegaconf_select(cfg, "data.val_path", None) is not None:
        required.append("optimizer.classifier_lr")
    for key in required:
        if omegaconf_select(cfg, key, None) is None:
            raise ConfigError(f"{key} is missing from the config")
    check_numeric_keys(cfg)
    check_stopping_condition(cfg)
    if "num_workers" in cfg.data:  # machine=cpu's resolver: record the number in args.json
        cfg.data.num_workers = cfg.data.num_workers
    if cfg.data.dataset not in _SUPPORTED_DATASETS:  # solo-learn: a bare assert
        raise ConfigError(
            f"data.dataset={cfg.data.dataset!r} is not one of {_SUPPORTED_DATASETS}."
            f"{suggest(str(cfg.data.dataset), _SUPPORTED_DATASETS)}"
        )
    check_data_paths(cfg)  # solo-learn lists data.train_path while parsing
    cfg = parse_with_real_devices(cfg, solo_parse_pretrain_cfg)
    if cfg.backbone.name == "timm":  # the timm factory uses it for ViT-like models only
        cfg.backbone.kwargs.img_size = omegaconf_select(
            cfg, "backbone.kwargs.img_size", int(cfg.augmentations[0].crop_size)
        )
    return resolve_auto_machine(cfg)


def check_global_batch(cfg: omegaconf.DictConfig, num_samples: int) -> None:
    """The global batch must fit the dataset, and effssl's negatives must fit the bank."""
    global_batch = int(cfg.optimizer.batch_size) * int(cfg.world_size)
    if global_batch > num_samples:
        raise ConfigError(
            f"optimizer.batch_size={cfg.optimizer.batch_size} x {cfg.world_size} process(es) = "
            f"{global_batch} is larger than the training set ({num_samples} images): with "
            "drop_last no training step would run"
        )
    if cfg.method == "effssl":  # negatives vs bank rows, with every other effssl check
        EffSSLSettings.from_cfg(cfg, global_batch)
