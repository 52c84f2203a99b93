"""A setting added after a run was saved reads as its earlier behaviour, not as the default."""

import json

from mhp_keras.config import legacy
from mhp_keras.config.defaults import base_config
from mhp_keras.studies.ablation import stored_metrics
from mhp_keras.training.experiment import config_dict


def _without(config: dict, dotted: str) -> dict:
    section, key = dotted.split(".")
    config = json.loads(json.dumps(config))
    del config[section][key]
    return config


def test_a_run_saved_before_adv_balance_is_the_fixed_balance():
    now = config_dict(base_config())
    assert now["loss"]["adv_balance"] == "adaptive"
    before = _without(now, "loss.adv_balance")
    # Today's default changes the behaviour, so the old run is not today's run ...
    assert legacy.changed_keys(before, now) == ["loss.adv_balance"]
    # ... but it is exactly the run made with the fixed balance.
    fixed = json.loads(json.dumps(now))
    fixed["loss"]["adv_balance"] = "fixed"
    assert legacy.changed_keys(before, fixed) == []


def test_unlisted_missing_keys_and_changed_values_stay_differences():
    now = config_dict(base_config())
    assert legacy.changed_keys(_without(now, "loss.eps"), now) == ["loss.eps"]
    other = json.loads(json.dumps(now))
    other["model"]["hypotheses"] = 7
    assert legacy.changed_keys(now, other) == ["model.hypotheses"]
    assert legacy.changed_keys(now, now) == []


def test_ablation_reuses_only_runs_made_with_the_same_behaviour(tmp_path):
    now = config_dict(base_config())
    (tmp_path / "metrics.json").write_text(
        json.dumps({"config": _without(now, "loss.adv_balance"), "image_auroc": 0.7})
    )
    assert stored_metrics(str(tmp_path), now) is None
    fixed = json.loads(json.dumps(now))
    fixed["loss"]["adv_balance"] = "fixed"
    assert stored_metrics(str(tmp_path), fixed)["image_auroc"] == 0.7


def test_every_listed_key_is_a_config_key():
    keys = legacy.flatten(config_dict(base_config()))
    assert set(legacy.VALUES_BEFORE) <= set(keys)


def test_an_old_topk_run_was_the_sum_of_the_top_pixels():
    now = config_dict(base_config())
    now["score"]["aggregate"] = "topk"
    before = _without(now, "data.resize")
    before = _without(before, "score.roi")
    assert "score.aggregate" in legacy.changed_keys(before, now)
    summed = json.loads(json.dumps(now))
    summed["score"]["aggregate"] = "topk_sum"
    summed["data"]["resize"] = "squash"
    assert legacy.changed_keys(before, summed) == []
