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
AGGREGATES = ("sum", "mean", "topk", "topk_sum")
RESIZES = ("letterbox", "squash")
ROIS = ("none", "auto", "mask")
ADV_HYPOTHESES = ("sample", "all", "group", "views")
GROUPED_HYPOTHESES = ("group", "views")  # D sees each input's K hypotheses as one group
ADV_SOURCES = ("split", "every")
ADV_BALANCES = ("adaptive", "fixed")
MIXTURES = ("wta", "mdn")  # as mhp_keras.training.mixture.MIXTURES, without importing TF
TILINGS = ("none", "tile")
# Config values the model resolves from other keys: score.tiling="auto" tiles at inference
# exactly when training does (data.crop="tile"; training resolves data.crop="auto" to "tile" or
# "none" from the images' sizes before it builds the model, `data.training_tiles.resolve_crop`).
AUTO = "auto"

# ConAD argument -> config key (dotted, below the config's root).
CONFIG_KEYS = {
    "image_size": "data.image_size",
    "channels": "data.channels",
    "hypotheses": "model.hypotheses",
    "latent_dim": "model.latent_dim",
    "latent_cell_px": "model.latent_cell_px",
    "base_filters": "model.base_filters",
    "max_filters": "model.max_filters",
    "dense_units": "model.dense_units",
    "logvar_min": "model.logvar_min",
    "logvar_max": "model.logvar_max",
    "disc_base_filters": "model.disc_base_filters",
    "minibatch_std": "model.minibatch_std",
    "minibatch_kernels": "model.minibatch_kernels",
    "fused_heads": "model.fused_heads",
    "wta": "loss.wta",
    "eps": "loss.eps",
    "kl_weight": "loss.kl_weight",
    "adv_weight": "loss.adv_weight",
    "adv_hypotheses": "loss.adv_hypotheses",
    "adv_sources": "loss.adv_sources",
    "adv_balance": "loss.adv_balance",
    "mixture": "loss.mixture",
    "score_aggregate": "score.aggregate",
    "topk_fraction": "score.topk_fraction",
    "tiling": "score.tiling",
    "tile_stride": "score.tile_stride",
    "tile_scale": "score.tile_scale",
    "map_sigma": "score.map_sigma",
    "resize": "data.resize",
    "roi": "score.roi",
    "roi_mask": "data.roi_mask",
    "roi_margin": "score.roi_margin",
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


def _is_set(value) -> bool:  # a path, array or stored mask; None and "" are unset
    return value is not None and not (isinstance(value, str) and value == "")


def _is_number(value) -> bool:
    return isinstance(value, numbers.Real) and not isinstance(value, bool)


def _is_power_of_two(value) -> bool:
    return _is_int(value) and value >= 1 and value & (value - 1) == 0


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
    "latent_cell_px": (
        lambda v, _: v == 0 or (_is_power_of_two(v) and v >= 8),
        "0 (one latent cell for the whole image) or a power of two >= 8 (pixels a side per cell)",
    ),
    "base_filters": (lambda v, _: _is_int(v) and v >= 1, "an integer >= 1"),
    "max_filters": (lambda v, _: _is_int(v) and v >= 1, "an integer >= 1"),
    "dense_units": (lambda v, _: _is_int(v) and v >= 0, "an integer >= 0 (0 = no dense layer)"),
    "disc_base_filters": (lambda v, _: _is_int(v) and v >= 1, "an integer >= 1"),
    "minibatch_kernels": (lambda v, _: _is_int(v) and v >= 0, "an integer >= 0 (0 = none)"),
    "logvar_min": (
        lambda v, values: _is_number(v) and v < values["logvar_max"],
        "a number below logvar_max",
    ),
    "wta": (lambda v, _: v in WTA_MODES, f"one of {list(WTA_MODES)}"),
    "eps": (lambda v, _: _is_number(v) and 0.0 <= v < 1.0, "a value in [0, 1)"),
    "kl_weight": (lambda v, _: _is_number(v) and v >= 0, "a weight >= 0"),
    "adv_weight": (lambda v, _: _is_number(v) and v >= 0, "a weight >= 0"),
    "adv_hypotheses": (
        lambda v, values: (
            v in ADV_HYPOTHESES and (v not in GROUPED_HYPOTHESES or values["hypotheses"] >= 2)
        ),
        f"one of {list(ADV_HYPOTHESES)} ({' and '.join(map(repr, GROUPED_HYPOTHESES))} need "
        "hypotheses >= 2)",
    ),
    "adv_sources": (lambda v, _: v in ADV_SOURCES, f"one of {list(ADV_SOURCES)}"),
    "adv_balance": (lambda v, _: v in ADV_BALANCES, f"one of {list(ADV_BALANCES)}"),
    "mixture": (
        lambda v, values: v in MIXTURES and (v != "mdn" or values["wta"] == "sample"),
        f"one of {list(MIXTURES)} ('mdn' mixes whole images: it needs wta='sample')",
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
    "resize": (lambda v, _: v in RESIZES, f"one of {list(RESIZES)}"),
    "roi": (
        lambda v, values: v in ROIS and (v == "mask") == _is_set(values.get("roi_mask")),
        f"one of {list(ROIS)}; 'mask' exactly when roi_mask (data.roi_mask) is set",
    ),
    "roi_margin": (lambda v, _: _is_int(v) and 0 <= v <= 64, "a number of pixels in [0, 64]"),
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


def upgrade_saved_config(config) -> dict:
    """A copy of a saved ConAD config, with what older saves meant spelt the current way.

    Models saved before letterboxing (their config has no "resize") squashed whole images, and
    their "topk" was the sum of the top pixels, now "topk_sum": their scores and thresholds stay.
    Models saved before the adaptive adversarial balance trained with the fixed weight, and
    resume training with it; those saved before `adv_sources` showed D every fake source for
    every image, and resume doing so.
    """
    config = dict(config)
    config.setdefault("adv_balance", "fixed")
    config.setdefault("adv_sources", "every")
    if "resize" not in config:
        config["resize"] = "squash"
        if config.get("score_aggregate") == "topk":
            config["score_aggregate"] = "topk_sum"
    return config


# Every ConAD default, read from the config's defaults ("auto" resolved as for a config that
# does not train on tiles).
DEFAULTS: Mapping = conad_arguments(base_config())
