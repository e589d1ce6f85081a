"""EffSSL's ``method_kwargs``: one typed definition and every check; the defaults are
``configs/effssl.yaml``'s, read from there.

Importing this module is light (no torch, solo-learn or Lightning), so the launcher can
check a config before anything heavy is imported or written.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping
from dataclasses import dataclass, fields
from importlib import resources
from typing import Any, Literal, get_args, get_origin, get_type_hints

from omegaconf import OmegaConf

from effssl_plugin.errors import ConfigError, suggest

__all__ = [
    "EffSSLSettings",
    "check_bank_shape",
    "default_method_kwargs",
    "numeric_method_kwargs",
]


_POS_INT = "a positive integer"


@dataclass(frozen=True)
class EffSSLSettings:
    """effssl's ``method_kwargs``: their types and every check. The defaults (the official
    ``run.sh``: CIFAR, ResNet-18) live only in ``configs/effssl.yaml``
    (:func:`default_method_kwargs`); :meth:`from_kwargs` fills absent keys from there.

    Constructing one checks every value (:class:`~effssl_plugin.errors.ConfigError` naming
    the key).
    """

    proj_hidden_dim: int
    proj_output_dim: int  # bank dimension D
    temperature: float  # tau of the instance CE
    num_negatives: int  # k random non-batch rows per step; -1 = all rows
    kl_weight: float  # lambda
    kl_power: float  # u = p^power / sum p^power
    kl_temperature: float  # p = softmax(s / kl_temperature)
    bank_momentum: float  # m
    bank_update: Literal["grad", "ema"]  # paper's correction | NPID's EMA
    bank_init: Literal["calibrate", "random"]  # one no-grad pass before step 1
    bank_dtype: Literal["float32", "float16", "bfloat16"]
    # dtype of the three bank products (logits, dL/dz, Delta); auto: the autocast dtype in a
    # mixed-precision run, else float32. Rows are always updated in float32
    bank_matmul: Literal["auto", "float32", "bfloat16", "float16"]
    cutmix_alpha: float  # 0 = off
    num_samples: int | None  # bank rows; the launcher fills it from the training set
    reinit_bank_on_resume: bool  # allow resuming with a different dataset size
    check_finite: bool  # stop on a NaN/inf loss, naming the step

    @classmethod
    def choices(cls) -> dict[str, tuple[str, ...]]:
        """The keys that take one of a few strings, and those strings (from the types)."""
        hints = get_type_hints(cls)
        return {
            f.name: get_args(hints[f.name])
            for f in fields(cls)
            if get_origin(hints[f.name]) is Literal
        }

    @classmethod
    def from_kwargs(cls, method_kwargs: Mapping[str, Any] | None) -> EffSSLSettings:
        """The settings of a ``method_kwargs`` mapping; absent keys take their defaults
        (:func:`default_method_kwargs`)."""
        kwargs = dict(method_kwargs or {})
        names = [f.name for f in fields(cls)]
        unknown = sorted(set(kwargs) - set(names))
        if unknown:
            key = unknown[0]
            raise ConfigError(
                f"unknown key method_kwargs.{key} for effssl.{suggest(key, names)}"
                f" Valid keys: {', '.join(names)}"
            )
        given = {k: None if v == "None" else v for k, v in kwargs.items()}
        return cls(**{**default_method_kwargs(), **given})

    @classmethod
    def from_cfg(cls, cfg: Mapping[str, Any], global_batch: int | None = None) -> EffSSLSettings:
        """The settings of a whole config, with the checks that need more of it: one crop
        per image and, given the global batch, negatives that fit the bank."""
        settings = cls.from_kwargs(cfg.get("method_kwargs"))
        num_crops = sum(int(a["num_crops"]) for a in cfg.get("augmentations") or [])
        if num_crops not in (0, 1):
            raise ConfigError(
                "effssl trains on exactly one view per image, but the augmentations ask for "
                f"{num_crops} crops: use a single pipeline with augmentations[0].num_crops=1"
            )
        if global_batch is not None:
            settings.check_global_batch(global_batch)
        return settings

    def __post_init__(self) -> None:
        """Every range; ``num_negatives`` against the bank rows once these are known."""
        for key, options in self.choices().items():
            self._require(getattr(self, key) in options, key, f"one of {list(options)}")
        for key in ("proj_hidden_dim", "proj_output_dim"):
            self._require(_is_int(getattr(self, key)) and getattr(self, key) > 0, key, _POS_INT)
        for key in ("temperature", "kl_temperature"):
            self._require(_is_number(getattr(self, key)) and getattr(self, key) > 0, key, "> 0")
        self._require(_is_number(self.kl_power) and 0 < self.kl_power < 1, "kl_power", "in (0, 1)")
        self._require(_is_number(self.kl_weight) and self.kl_weight >= 0, "kl_weight", ">= 0")
        m, alpha, k, n = self.bank_momentum, self.cutmix_alpha, self.num_negatives, self.num_samples
        self._require(_is_number(m) and 0 < m < 1, "bank_momentum", "in (0, 1)")
        self._require(_is_number(alpha) and alpha >= 0, "cutmix_alpha", ">= 0 (0 = off)")
        self._require(
            _is_int(k) and k >= -1, "num_negatives", "an integer >= 0, or -1 for all rows"
        )
        for key in ("reinit_bank_on_resume", "check_finite"):
            self._require(isinstance(getattr(self, key), bool), key, "true or false")
        if n is None:
            return
        self._require(_is_int(n) and n > 0, "num_samples", _POS_INT)
        if k >= n:
            raise ConfigError(
                f"method_kwargs.num_negatives={k} must be smaller than the number of bank rows "
                f"({n} training images), or -1 for all rows"
            )

    def _require(self, ok: bool, key: str, expected: str) -> None:
        if not ok:
            raise ConfigError(f"method_kwargs.{key} must be {expected}, got {getattr(self, key)!r}")

    def check_global_batch(self, global_batch: int) -> None:
        """The negatives plus a global batch of distinct rows must fit in the bank."""
        n, k = self.num_samples, self.num_negatives
        if n is not None and k >= 0 and k + global_batch > n:
            raise ConfigError(
                f"method_kwargs.num_negatives={k} plus the global batch ({global_batch}) exceeds "
                f"the {n} bank rows: lower it to at most {n - global_batch}, or use -1 for all rows"
            )

    @property
    def bank_rows(self) -> int:
        """``num_samples``, which the model needs to build its bank."""
        if self.num_samples is None:
            raise ConfigError(
                "method_kwargs.num_samples (memory-bank rows) is not set: the effssl launcher "
                "fills it from the training set; set it to the number of training images"
            )
        return self.num_samples


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def check_bank_shape(
    saved: tuple[int, ...], run: tuple[int, ...], reinit: bool, checkpoint: str | None = None
) -> bool:
    """Whether a checkpoint's memory bank of shape ``saved`` must be re-initialised for this
    run's ``run`` shape: ``False`` when they are equal, ``True`` when they differ and
    ``reinit`` (``method_kwargs.reinit_bank_on_resume``) allows it; else a ConfigError.
    """
    if tuple(saved) == tuple(run):
        return False
    if reinit:
        return True
    where = f" (checkpoint: {checkpoint})" if checkpoint else ""
    raise ConfigError(
        f"the checkpoint's memory bank is {saved[0]} x {saved[1]} but this run's is "
        f"{run[0]} x {run[1]} (training-set size x method_kwargs.proj_output_dim): "
        "resuming on a different dataset is refused; set method_kwargs.reinit_bank_on_resume=true "
        f"to re-initialise the bank{where}"
    )


@functools.cache
def _yaml_method_kwargs() -> dict[str, Any]:
    text = resources.files("effssl_plugin.configs").joinpath("effssl.yaml").read_text()
    return dict(OmegaConf.to_container(OmegaConf.create(text).method_kwargs))  # type: ignore[arg-type]


def default_method_kwargs() -> dict[str, Any]:
    """effssl's ``method_kwargs`` defaults, key by key: those of ``configs/effssl.yaml``,
    their only definition (read once, on first use)."""
    return dict(_yaml_method_kwargs())


def numeric_method_kwargs() -> dict[str, bool]:
    """The numeric ``method_kwargs`` keys of :class:`EffSSLSettings` (from their types), each
    with whether it takes an integer only."""
    hints = get_type_hints(EffSSLSettings)
    return {
        f.name: hints[f.name] is int
        for f in fields(EffSSLSettings)
        if hints[f.name] in (int, float)
    }


def __getattr__(name: str) -> Any:
    """``DEFAULT_METHOD_KWARGS``: :func:`default_method_kwargs`, read when first asked for."""
    if name == "DEFAULT_METHOD_KWARGS":
        return default_method_kwargs()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
