"""Which config key feeds each `ConAD` argument, and what values each accepts: the one table that
ties the Keras class to the experiment config.

Default values live only in `mhp_keras.config.defaults.base_config()`; `DEFAULTS` reads them from
there, so `ConAD(...)`, the builders and `--config.*` can never disagree. Valid ranges live only
in `RULES`: `ConAD` raises a `ValueError` worded with its own argument names, and config
validation a `ConfigError` worded with the `config.` keys, from the same rule.
"""

from __future__ import annotations

import numbers
from collections.abc import Callable, Mapping

from mhp_keras.config.defaults import base_config

SUPPORTED_SIZES = (16, 32, 64, 128, 256)
WTA_MODES = ("sample", "pixel")
AGGREGATES = ("sum", "mean", "topk")
ADV_HYPOTHESES = ("sample", "all", "group")
TILINGS = ("none", "tile")
# Config values the model resolves from other keys: score.tiling="auto" tiles at inference
# exactly when training does (data.crop="tile").
AUTO = "auto"

# ConAD argument -> config key (dotted, below the config's root).
CONFIG_KEYS = {
    "image_size": "data.image_size",
    "channels": "data.channels",
    "hypotheses": "model.hypotheses",
    "latent_dim": "model.latent_dim",
    "base_filters": "model.base_filters",
    "max_filters": "model.max_filters",
    "dense_units": "model.dense_units",
    "logvar_min": "model.logvar_min",
    "logvar_max": "model.logvar_max",
    "disc_base_filters": "model.disc_base_filters",
    "minibatch_std": "model.minibatch_std",
    "fused_heads": "model.fused_heads",
    "wta": "loss.wta",
    "eps": "loss.eps",
    "kl_weight": "loss.kl_weight",
    "adv_weight": "loss.adv_weight",
    "adv_hypotheses": "loss.adv_hypotheses",
    "score_aggregate": "score.aggregate",
    "topk_fraction": "score.topk_fraction",
    "tiling": "score.tiling",
    "tile_stride": "score.tile_stride",
    "tile_scale": "score.tile_scale",
    "map_sigma": "score.map_sigma",
    "clip_norm": "train.clip_norm",
    "seed": "seed",
}


def config_value(config, key: str):
    """`config.a.b` for the dotted key "a.b"."""
    value = config
    for part in key.split("."):
        value = value[part]
    return value


def _is_int(value) -> bool:
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def _is_number(value) -> bool:
    return isinstance(value, numbers.Real) and not isinstance(value, bool)


# A rule is (is the value valid, given all values; what is expected). Arguments without a rule
# take any value of their type.
Rule = tuple[Callable[[object, Mapping], bool], str]
RULES: dict[str, Rule] = {
    "image_size": (
        lambda v, _: v in SUPPORTED_SIZES,
        f"a power of two in {list(SUPPORTED_SIZES)}",
    ),
    "channels": (lambda v, _: v in (1, 3), "1 (grey) or 3 (RGB)"),
    "hypotheses": (lambda v, _: _is_int(v) and v >= 1, "an integer >= 1"),
    "latent_dim": (lambda v, _: _is_int(v) and v >= 1, "an integer >= 1"),
    "base_filters": (lambda v, _: _is_int(v) and v >= 1, "an integer >= 1"),
    "max_filters": (lambda v, _: _is_int(v) and v >= 1, "an integer >= 1"),
    "dense_units": (lambda v, _: _is_int(v) and v >= 0, "an integer >= 0 (0 = no dense layer)"),
    "disc_base_filters": (lambda v, _: _is_int(v) and v >= 1, "an integer >= 1"),
    "logvar_min": (
        lambda v, values: _is_number(v) and v < values["logvar_max"],
        "a number below logvar_max",
    ),
    "wta": (lambda v, _: v in WTA_MODES, f"one of {list(WTA_MODES)}"),
    "eps": (lambda v, _: _is_number(v) and 0.0 <= v < 1.0, "a value in [0, 1)"),
    "kl_weight": (lambda v, _: _is_number(v) and v >= 0, "a weight >= 0"),
    "adv_weight": (lambda v, _: _is_number(v) and v >= 0, "a weight >= 0"),
    "adv_hypotheses": (
        lambda v, values: v in ADV_HYPOTHESES and (v != "group" or values["hypotheses"] >= 2),
        f"one of {list(ADV_HYPOTHESES)} ('group' needs hypotheses >= 2)",
    ),
    "score_aggregate": (lambda v, _: v in AGGREGATES, f"one of {list(AGGREGATES)}"),
    "topk_fraction": (lambda v, _: _is_number(v) and 0.0 < v <= 1.0, "a fraction in (0, 1]"),
    "clip_norm": (lambda v, _: _is_number(v) and v >= 0, "a norm >= 0 (0 = off)"),
    "tiling": (lambda v, _: v in TILINGS, f"one of {list(TILINGS)}"),
    "tile_stride": (
        lambda v, values: (
            v is None
            or (_is_int(v) and 1 <= v <= values["image_size"] and values["image_size"] % v == 0)
        ),
        "unset (half a tile) or a number of pixels >= 1 that divides the tile size image_size",
    ),
    "tile_scale": (lambda v, _: _is_number(v) and 0 < v <= 16, "a scale in (0, 16]"),
    "map_sigma": (
        lambda v, _: v is None or (_is_number(v) and 0 <= v <= 64),
        "unset (image_size / 32), 0 (off) or a blur in pixels up to 64",
    ),
}


def first_invalid(values: Mapping) -> tuple[str, str] | None:
    """(argument, what it expects) for the first ConAD argument in `values` that breaks its rule."""
    for arg, (valid, expected) in RULES.items():
        if arg in values and not valid(values[arg], values):
            return arg, expected
    return None


def conad_arguments(config) -> dict:
    """The ConAD constructor arguments of an experiment config ("auto" values resolved)."""
    arguments = {arg: config_value(config, key) for arg, key in CONFIG_KEYS.items()}
    if arguments["tiling"] == AUTO:
        arguments["tiling"] = "tile" if config.data.crop == "tile" else "none"
    return arguments


# Every ConAD default, read from the config's defaults ("auto" resolved as for a config that
# does not train on tiles).
DEFAULTS: Mapping = conad_arguments(base_config())
