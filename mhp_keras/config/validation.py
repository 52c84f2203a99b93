"""Checks a whole experiment config before anything is built, so every bad value is reported as a
ConfigError naming its `--config.` key and the expected range, never as a traceback.

This is the only place that words errors as `config.` keys. The model's ranges come from
`model_settings.RULES`, the same rules `ConAD` applies to its own arguments.
"""

from __future__ import annotations

import math
import numbers

from mhp_keras.config.model_settings import CONFIG_KEYS, RULES, conad_arguments
from mhp_keras.data.image_files import ON_BAD_FILE
from mhp_keras.data.pipeline import CROP_MODES
from mhp_keras.errors import ConfigError
from mhp_keras.training.jit import SETTINGS as JIT_SETTINGS
from mhp_keras.training.jit import is_valid_setting as valid_jit_setting

MIXED_PRECISION = ("auto", "none", "bfloat16", "float16")
# train.keep_weights (training/selection.py): the best validation epoch's weights, or the last's.
KEEP_WEIGHTS = ("best_val", "last")


def _check(condition: bool, key: str, value, expected: str) -> None:
    if not condition:
        raise ConfigError(f"config.{key}={value!r}: expected {expected}.")


def _check_model(config) -> None:
    arguments = conad_arguments(config)
    for arg, (valid, expected) in RULES.items():
        # The one cross-key rule names the other key as the user knows it.
        expected = expected.replace("logvar_max", f"model.logvar_max={config.model.logvar_max}")
        expected = expected.replace("image_size", f"data.image_size={config.data.image_size}")
        if arg == "tiling":  # the config also takes "auto", resolved by conad_arguments
            expected = expected.replace("['none'", "['auto', 'none'")
        _check(valid(arguments[arg], arguments), CONFIG_KEYS[arg], arguments[arg], expected)


def _check_finite(config, prefix: str = "") -> None:
    """No number anywhere in the config is NaN or infinite: no setting means either, and a range
    check such as `g_lr > 0` lets +inf through."""
    for key, value in config.items():
        if hasattr(value, "items"):
            _check_finite(value, f"{prefix}{key}.")
        elif isinstance(value, numbers.Real) and not isinstance(value, bool):
            _check(math.isfinite(value), f"{prefix}{key}", value, "a finite number")


def validate_config(config) -> None:
    from mhp_keras.data.registry import DATASETS

    _check_finite(config)

    _check(
        config.data.name in DATASETS, "data.name", config.data.name, f"one of {sorted(DATASETS)}"
    )
    _check_model(config)
    _check(
        config.data.batch_size >= 1, "data.batch_size", config.data.batch_size, "an integer >= 1"
    )
    _check(
        0.0 <= config.data.val_fraction < 1.0,
        "data.val_fraction",
        config.data.val_fraction,
        "a fraction in [0, 1)",
    )
    _check(
        config.data.crop in CROP_MODES, "data.crop", config.data.crop, f"one of {list(CROP_MODES)}"
    )
    _check(
        config.data.on_bad_file in ON_BAD_FILE,
        "data.on_bad_file",
        config.data.on_bad_file,
        f"one of {list(ON_BAD_FILE)}",
    )
    _check(config.data.max_train >= 0, "data.max_train", config.data.max_train, ">= 0 (0 = all)")
    _check(config.train.epochs >= 1, "train.epochs", config.train.epochs, "an integer >= 1")
    _check(
        config.loss.evolving_wta_epochs >= 0,
        "loss.evolving_wta_epochs",
        config.loss.evolving_wta_epochs,
        "an integer >= 0 (0 = off)",
    )
    if config.loss.evolving_wta_epochs and config.loss.mixture != "wta":
        raise ConfigError(
            f"config.loss.evolving_wta_epochs={config.loss.evolving_wta_epochs} needs "
            f"config.loss.mixture=wta (got {config.loss.mixture!r}, which has no winners)."
        )
    _check(config.train.g_lr > 0, "train.g_lr", config.train.g_lr, "a learning rate > 0")
    _check(config.train.d_lr > 0, "train.d_lr", config.train.d_lr, "a learning rate > 0")
    _check(
        0.0 <= config.train.beta_1 < 1.0, "train.beta_1", config.train.beta_1, "a value in [0, 1)"
    )
    t = config.train
    _check(t.recoveries >= 0, "train.recoveries", t.recoveries, "an integer >= 0 (0 = none)")
    _check(
        0.0 < t.recovery_lr_factor < 1.0,
        "train.recovery_lr_factor",
        t.recovery_lr_factor,
        "a factor in (0, 1)",
    )
    _check(t.spike_factor >= 0, "train.spike_factor", t.spike_factor, "a number >= 0 (0 = off)")
    for key in ("health_d_acc", "health_head_share"):
        _check(0.0 < t[key] <= 1.0, f"train.{key}", t[key], "a fraction in (0, 1]")
    _check(t.health_epochs >= 1, "train.health_epochs", t.health_epochs, "an integer >= 1")
    _check(
        config.train.mixed_precision in MIXED_PRECISION,
        "train.mixed_precision",
        config.train.mixed_precision,
        f"one of {list(MIXED_PRECISION)}",
    )
    _check(
        config.train.keep_weights in KEEP_WEIGHTS,
        "train.keep_weights",
        config.train.keep_weights,
        f"one of {list(KEEP_WEIGHTS)}",
    )
    _check(
        valid_jit_setting(config.train.jit_compile),
        "train.jit_compile",
        config.train.jit_compile,
        f"one of {list(JIT_SETTINGS)} (or True/False)",
    )
    _check(
        0.0 < config.eval.threshold_quantile <= 1.0,
        "eval.threshold_quantile",
        config.eval.threshold_quantile,
        "a quantile in (0, 1]",
    )
    _check(config.eval.every_epochs >= 0, "eval.every_epochs", config.eval.every_epochs, ">= 0")
