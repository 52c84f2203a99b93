"""What a setting's absence means in a run saved before that setting existed.

Resumable studies (`--mode=ablation`, `benchmark_classes`) reuse a finished run only when its
stored config is the config it would run now, and a workdir refuses a different config. A setting
added later is missing from every older run's stored config. Reading "missing" as "whatever the
default is now" would silently pass off old runs as new ones whenever the new default changes the
behaviour (the adaptive adversarial balance does), and reading it as "different" would throw away
hours of runs whenever any key is added. So each added key records here the value that reproduces
what runs made before it did; a stored config missing the key is read with that value, and keys
not listed here stay strict. A value whose meaning changed is read under its new name.
"""

from __future__ import annotations

# Dotted config key -> the value that behaves as runs made before the key existed.
VALUES_BEFORE = {
    "loss.adv_balance": "fixed",
    "loss.mixture": "wta",
    "loss.adv_sources": "every",
    "data.tiles_per_image": 0,
    "data.resize": "squash",
    "data.roi_mask": "",
    "score.roi": "none",
    "score.roi_margin": 2,
    "train.keep_weights": "last",
    "model.minibatch_kernels": 0,
    "loss.evolving_wta_epochs": 0,
    # A warning's limit, not a result: older runs read as the default so studies reuse them.
    "train.health_head_sharpness": 2.0,
}


# (key, stored value) -> (the key whose absence marks the run as older, the value's name now):
# values whose meaning changed when that key was added. `topk` summed the top pixels before
# data.resize existed; that sum is `topk_sum` now, and `topk` is their mean.
MEANINGS_BEFORE = {("score.aggregate", "topk"): ("data.resize", "topk_sum")}


def flatten(config: dict, prefix: str = "") -> dict:
    """{"a.b": value} for a nested config dict."""
    flat = {}
    for key, value in config.items():
        if isinstance(value, dict):
            flat.update(flatten(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat


def with_values_before(stored: dict, expected: dict) -> dict:
    """A flat stored config with every listed key it lacks, and the expected config has, read as
    its value before the key."""
    flat, keys = flatten(stored), flatten(expected)
    before = {k: v for k, v in VALUES_BEFORE.items() if k not in flat and k in keys}
    for (key, value), (marker, renamed) in MEANINGS_BEFORE.items():
        if flat.get(key) == value and marker not in flat:
            flat[key] = renamed
    return {**before, **flat}


def changed_keys(stored: dict, expected: dict) -> list[str]:
    """The dotted keys whose values differ between a stored config (read with
    `with_values_before`) and the expected one, both nested dicts; sorted."""
    old, new = with_values_before(stored, expected), flatten(expected)
    return sorted(k for k in set(old) | set(new) if old.get(k) != new.get(k))


# Where the data and the logs are, and how steps are compiled: keys that name the same run
# wherever the data set was moved, so a study reuses its finished runs after a move.
LOCATION_KEYS = (
    "train.jit_compile",  # how steps are compiled, not what they compute
    "train.verbose",
    "data.data_dir",
    "data.root",
    "data.normal_dir",
    "data.abnormal_dir",
    "data.mask_dir",
)


def is_under(key: str, prefixes) -> bool:
    """Whether dotted `key` is one of `prefixes` or below one of them."""
    return any(key == p or key.startswith(p + ".") for p in prefixes)


def result_changes(stored: dict, expected: dict) -> list[str]:
    """`changed_keys` without LOCATION_KEYS: the differences that make a stored run's results
    another run's."""
    return [k for k in changed_keys(stored, expected) if not is_under(k, LOCATION_KEYS)]
