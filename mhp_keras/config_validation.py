"""Checks a whole experiment config before anything is built, so every bad value is reported as a
ConfigError naming its `--config.` key and the expected range, never as a traceback."""

from __future__ import annotations

from mhp_keras.errors import ConfigError
from mhp_keras.models.conad import ADV_HYPOTHESES, validate_model_args

MIXED_PRECISION = ("auto", "none", "bfloat16", "float16")
CROPS = ("none", "random", "tile")
ON_BAD_FILE = ("error", "skip")


def _check(condition: bool, key: str, value, expected: str) -> None:
    if not condition:
        raise ConfigError(f"config.{key}={value!r}: expected {expected}.")


def validate_config(config) -> None:
    from mhp_keras.data.registry import DATASETS

    _check(
        config.data.name in DATASETS, "data.name", config.data.name, f"one of {sorted(DATASETS)}"
    )
    validate_model_args(
        config.model.hypotheses,
        config.model.latent_dim,
        config.data.image_size,
        config.data.channels,
        config.loss.wta,
        config.loss.eps,
        config.score.aggregate,
        config.score.topk_fraction,
    )
    _check(
        config.data.batch_size >= 1, "data.batch_size", config.data.batch_size, "an integer >= 1"
    )
    _check(
        0.0 <= config.data.val_fraction < 1.0,
        "data.val_fraction",
        config.data.val_fraction,
        "a fraction in [0, 1)",
    )
    _check(config.data.crop in CROPS, "data.crop", config.data.crop, f"one of {list(CROPS)}")
    _check(
        config.data.on_bad_file in ON_BAD_FILE,
        "data.on_bad_file",
        config.data.on_bad_file,
        f"one of {list(ON_BAD_FILE)}",
    )
    _check(config.model.base_filters >= 1, "model.base_filters", config.model.base_filters, ">= 1")
    _check(
        config.model.logvar_min < config.model.logvar_max,
        "model.logvar_min",
        config.model.logvar_min,
        f"a value below model.logvar_max={config.model.logvar_max}",
    )
    _check(config.loss.kl_weight >= 0, "loss.kl_weight", config.loss.kl_weight, "a weight >= 0")
    _check(config.loss.adv_weight >= 0, "loss.adv_weight", config.loss.adv_weight, "a weight >= 0")
    _check(
        config.loss.adv_hypotheses in ADV_HYPOTHESES,
        "loss.adv_hypotheses",
        config.loss.adv_hypotheses,
        f"one of {list(ADV_HYPOTHESES)}",
    )
    _check(config.train.epochs >= 1, "train.epochs", config.train.epochs, "an integer >= 1")
    _check(config.train.g_lr > 0, "train.g_lr", config.train.g_lr, "a learning rate > 0")
    _check(config.train.d_lr > 0, "train.d_lr", config.train.d_lr, "a learning rate > 0")
    _check(config.train.clip_norm >= 0, "train.clip_norm", config.train.clip_norm, ">= 0 (0 = off)")
    _check(
        config.train.mixed_precision in MIXED_PRECISION,
        "train.mixed_precision",
        config.train.mixed_precision,
        f"one of {list(MIXED_PRECISION)}",
    )
    _check(
        0.0 < config.eval.threshold_quantile <= 1.0,
        "eval.threshold_quantile",
        config.eval.threshold_quantile,
        "a quantile in (0, 1]",
    )
    _check(config.eval.every_epochs >= 0, "eval.every_epochs", config.eval.every_epochs, ">= 0")
