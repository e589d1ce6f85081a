"""EffSSLSettings: the typed definition of effssl's method_kwargs and its checks; the YAML
holds the defaults."""

from __future__ import annotations

import subprocess
import sys
from dataclasses import MISSING, asdict, fields
from typing import Literal, get_args, get_origin, get_type_hints

import pytest
from conftest import REPO
from omegaconf import OmegaConf

from effssl_plugin.errors import ConfigError
from effssl_plugin.settings import (
    DEFAULT_METHOD_KWARGS,
    EffSSLSettings,
    check_bank_shape,
    default_method_kwargs,
)


def test_the_yaml_is_the_only_definition_of_the_defaults():
    """configs/effssl.yaml holds the defaults; the dataclass only their keys (same order) and
    types, so the two cannot drift apart. Hydra overrides without ``+`` need every key."""
    block = OmegaConf.to_container(OmegaConf.load(REPO / "configs" / "effssl.yaml").method_kwargs)
    assert all(
        f.default is MISSING and f.default_factory is MISSING for f in fields(EffSSLSettings)
    )
    assert list(block) == [f.name for f in fields(EffSSLSettings)]
    assert DEFAULT_METHOD_KWARGS == default_method_kwargs() == block
    assert asdict(EffSSLSettings.from_kwargs({})) == block  # the defaults pass every check
    hints = get_type_hints(EffSSLSettings)
    for key, value in block.items():  # the YAML's types are the annotated ones
        expected = hints[key]
        if get_origin(expected) is Literal:
            assert value in get_args(expected), key
        elif value is not None:
            assert isinstance(value, expected) and type(value) is not bool or expected is bool, key


def test_bank_dtype_choices_are_the_banks_dtypes():
    from effssl_plugin.bank import BANK_DTYPES

    assert EffSSLSettings.choices()["bank_dtype"] == tuple(BANK_DTYPES)
    assert EffSSLSettings.choices()["bank_update"] == ("grad", "ema")


def test_importing_the_settings_imports_no_torch_solo_or_lightning():
    code = (
        "import sys, effssl_plugin.settings\n"
        "print(*[m in sys.modules for m in ('torch', 'solo', 'lightning')])"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["False", "False", "False"]


def test_absent_keys_take_their_defaults_and_null_num_samples_is_allowed():
    settings = EffSSLSettings.from_kwargs({"temperature": 0.1, "num_samples": None})
    assert settings.temperature == 0.1 and settings.num_negatives == 10000
    with pytest.raises(ConfigError, match=r"method_kwargs\.num_samples \(memory-bank rows\)"):
        settings.bank_rows  # noqa: B018 - the model needs it
    assert EffSSLSettings.from_kwargs({"num_samples": 20000}).bank_rows == 20000


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (
            {"bank_update": "sgd"},
            "method_kwargs.bank_update must be one of ['grad', 'ema'], got 'sgd'",
        ),
        ({"bank_init": "zeros"}, "method_kwargs.bank_init must be one of ['calibrate', 'random']"),
        ({"bank_dtype": "float64"}, "one of ['float32', 'float16', 'bfloat16'], got 'float64'"),
        ({"proj_output_dim": 0}, "method_kwargs.proj_output_dim must be a positive integer, got 0"),
        ({"proj_hidden_dim": True}, "method_kwargs.proj_hidden_dim must be a positive integer"),
        ({"temperature": 0}, "method_kwargs.temperature must be > 0, got 0"),
        ({"kl_temperature": None}, "method_kwargs.kl_temperature must be > 0, got None"),
        ({"kl_power": 1.0}, "method_kwargs.kl_power must be in (0, 1), got 1.0"),
        ({"kl_power": None}, "method_kwargs.kl_power must be in (0, 1), got None"),
        ({"kl_weight": -1}, "method_kwargs.kl_weight must be >= 0, got -1"),
        ({"bank_momentum": 1.0}, "method_kwargs.bank_momentum must be in (0, 1), got 1.0"),
        ({"cutmix_alpha": -0.5}, "method_kwargs.cutmix_alpha must be >= 0 (0 = off), got -0.5"),
        ({"num_negatives": -2}, "num_negatives must be an integer >= 0, or -1 for all rows"),
        ({"num_negatives": 8.5}, "num_negatives must be an integer >= 0, or -1 for all rows"),
        ({"num_samples": 0}, "method_kwargs.num_samples must be a positive integer, got 0"),
        ({"check_finite": "yes"}, "method_kwargs.check_finite must be true or false, got 'yes'"),
        (
            {"num_samples": 18, "num_negatives": 18},
            "method_kwargs.num_negatives=18 must be smaller than the number of bank rows "
            "(18 training images), or -1 for all rows",
        ),
        (
            {"temprature": 0.1},
            "unknown key method_kwargs.temprature for effssl. Did you mean: temperature,",
        ),
    ],
)
def test_every_invalid_value_is_named(kwargs, message):
    with pytest.raises(ConfigError) as err:
        EffSSLSettings.from_kwargs(kwargs)
    assert message in str(err.value)


def test_unknown_key_lists_the_valid_ones():
    with pytest.raises(ConfigError) as err:
        EffSSLSettings.from_kwargs({"negatives": 5})
    assert str(err.value).endswith(
        "Valid keys: " + ", ".join(f.name for f in fields(EffSSLSettings))
    )


def test_negatives_plus_global_batch_must_fit_the_bank():
    settings = EffSSLSettings.from_kwargs({"num_samples": 100, "num_negatives": 60})
    settings.check_global_batch(40)
    with pytest.raises(
        ConfigError, match=r"num_negatives=60 plus the global batch \(41\) exceeds "
    ):
        settings.check_global_batch(41)
    EffSSLSettings.from_kwargs({"num_samples": 100, "num_negatives": -1}).check_global_batch(
        100
    )  # all rows
    EffSSLSettings.from_kwargs({"num_negatives": 60}).check_global_batch(
        10**6
    )  # bank size not known yet


def test_whole_config_checks_one_crop_and_the_global_batch():
    cfg = {"method_kwargs": {"num_samples": 100, "num_negatives": 60}, "augmentations": []}
    assert EffSSLSettings.from_cfg(cfg).num_negatives == 60
    with pytest.raises(ConfigError, match="exceeds the 100 bank rows: lower it to at most 49"):
        EffSSLSettings.from_cfg(cfg, global_batch=50 + 1)
    cfg["augmentations"] = [{"num_crops": 1}, {"num_crops": 1}]
    with pytest.raises(ConfigError, match=r"exactly one view per image, .* ask for 2 crops"):
        EffSSLSettings.from_cfg(cfg)


def test_bank_shape_check_on_resume():
    assert check_bank_shape((18, 16), (18, 16), reinit=False) is False
    assert check_bank_shape((18, 16), (21, 16), reinit=True) is True
    with pytest.raises(ConfigError) as err:
        check_bank_shape((18, 16), (21, 16), reinit=False, checkpoint="run/a.ckpt")
    assert str(err.value) == (
        "the checkpoint's memory bank is 18 x 16 but this run's is 21 x 16 (training-set size x "
        "method_kwargs.proj_output_dim): resuming on a different dataset is refused; set "
        "method_kwargs.reinit_bank_on_resume=true to re-initialise the bank "
        "(checkpoint: run/a.ckpt)"
    )
