"""Shared by the data-loader tests: the default config with only its `data` section changed."""

from mhp_keras.config_defaults import base_config


def data_config(fields: dict):
    """`base_config()` with each `data.<key>` of `fields` set; later keys of a merged dict win,
    so a test's defaults can be overridden with `defaults | overrides`."""
    c = base_config()
    for key, value in fields.items():
        c.data[key] = value
    return c
