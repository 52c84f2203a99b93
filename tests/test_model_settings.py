"""One source of truth: ConAD's defaults are the config's, and one rule table gives ConAD's
ValueErrors (worded with its arguments) and the config's ConfigErrors (worded with its keys)."""

import inspect

import pytest

from mhp_keras.config.defaults import base_config
from mhp_keras.config.model_settings import CONFIG_KEYS, RULES, conad_arguments, config_value
from mhp_keras.config.validation import validate_config
from mhp_keras.errors import ConfigError
from mhp_keras.models import ConAD, build_conad
from mhp_keras.models.conad import SUB_MODELS


def test_conad_defaults_equal_the_config_defaults():
    config = base_config()
    signature = inspect.signature(ConAD.__init__).parameters
    arguments = conad_arguments(config)
    for arg, key in CONFIG_KEYS.items():
        assert signature[arg].default == arguments[arg], arg
        if arg != "tiling":  # the config's "auto" resolves to the model's "none" here
            assert arguments[arg] == config_value(config, key), arg
    # And the other way round: every ConAD argument but the saved-layout switch and the given
    # sub-models has a key.
    args = {n for n, p in signature.items() if p.default is not inspect.Parameter.empty}
    assert args - set(CONFIG_KEYS) == {"head_channel_layout", *SUB_MODELS}
    assert all(signature[name].default is None for name in SUB_MODELS)


def test_build_conad_passes_every_key_and_get_config_mirrors_init():
    config = base_config()
    config.model.hypotheses = 3
    config.loss.eps = 0.2
    config.score.aggregate = "topk"
    config.score.tile_stride = 8
    model = build_conad(config)
    saved = model.get_config()
    for arg, value in conad_arguments(config).items():
        assert saved[arg] == value, arg
    assert ConAD.from_config(saved).get_config() == saved


BAD_VALUES = {
    "image_size": 48,
    "channels": 2,
    "hypotheses": 0,
    "latent_dim": 0,
    "latent_cell_px": 12,
    "base_filters": 0,
    "max_filters": 0,
    "dense_units": -1,
    "disc_base_filters": 0,
    "logvar_min": 5.0,
    "wta": "image",
    "eps": 1.0,
    "kl_weight": -1.0,
    "adv_weight": -0.1,
    "adv_hypotheses": "some",
    "adv_sources": "both",
    "adv_balance": "sometimes",
    "mixture": "mdm",
    "score_aggregate": "median",
    "topk_fraction": 0.0,
    "clip_norm": -1.0,
    "tiling": "tiles",
    "tile_stride": 5,
    "tile_scale": 0.0,
    "map_sigma": -1.0,
    "resize": "stretch",
    "roi": "mask",  # without a roi_mask
    "roi_margin": -1,
    "minibatch_kernels": -1,
}


def test_every_rule_has_a_bad_value_here():
    assert set(BAD_VALUES) == set(RULES)


@pytest.mark.parametrize("arg", sorted(BAD_VALUES))
def test_conad_names_its_own_argument(arg):
    value = BAD_VALUES[arg]
    with pytest.raises(ValueError, match=f"ConAD {arg}={value!r}: expected") as info:
        ConAD(**{arg: value})
    assert "config." not in str(info.value)


@pytest.mark.parametrize("arg", sorted(BAD_VALUES))
def test_config_validation_names_the_config_key(arg):
    config = base_config()
    key = CONFIG_KEYS[arg]
    section, name = key.split(".")
    config[section][name] = BAD_VALUES[arg]
    with pytest.raises(ConfigError, match=f"config.{key}={BAD_VALUES[arg]!r}: expected"):
        validate_config(config)
