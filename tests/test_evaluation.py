"""Threshold choice: a quantile of normal validation scores, or F1-optimal with labelled ones."""

import numpy as np
import pytest

from mhp_keras import metrics
from mhp_keras.data import load_data
from mhp_keras.evaluation import choose_threshold, collect
from mhp_keras.models import build_conad


@pytest.fixture
def model_and_data(tiny_config):
    config = tiny_config()
    model = build_conad(config)
    model.compile()
    return model, load_data(config), config


def test_normal_validation_gives_the_quantile(model_and_data):
    model, data, config = model_and_data
    threshold, source = choose_threshold(model, data.val, config)
    scores = collect(model, data.val, config)["scores"]
    assert source == "validation quantile 0.99"
    assert threshold == pytest.approx(np.quantile(scores, 0.99), rel=1e-6)


def test_labelled_validation_gives_the_f1_optimum(model_and_data):
    model, data, config = model_and_data
    labelled = data.test.subset(np.arange(0, len(data.test), 5))
    assert set(labelled.labels) == {0, 1}
    threshold, source = choose_threshold(model, labelled, config)
    result = collect(model, labelled, config)
    assert source.startswith("F1-optimal")
    assert threshold == metrics.f1_optimal_threshold(result["labels"], result["scores"])
