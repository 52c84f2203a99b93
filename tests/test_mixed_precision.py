"""Mixed precision: bfloat16 (CPU) and float16 with loss scaling (GPU) train with float32 losses."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from mhp_keras.training import losses
from mhp_keras.training.experiment import build_and_compile, resolve_precision, set_up_runtime


@pytest.mark.parametrize("precision", ["bfloat16", "float16"])
def test_mixed_precision_trains_with_float32_losses(tiny_config, precision):
    config = tiny_config(**{"train.mixed_precision": precision})
    set_up_runtime(config)
    model = build_and_compile(config, tf.distribute.get_strategy())
    assert model.decoder.compute_dtype == precision
    assert model.decoder.trainable_variables[0].dtype == "float32"  # variables stay float32
    if precision == "float16":
        assert isinstance(model.g_optimizer, keras.optimizers.LossScaleOptimizer)
        assert isinstance(model.d_optimizer, keras.optimizers.LossScaleOptimizer)
    x = np.random.default_rng(0).random((16, 16, 16, 1)).astype("float32")
    out = model.per_sample_losses(tf.constant(x), training=True)
    assert out["loss"].dtype == tf.float32 and out["d_loss"].dtype == tf.float32
    means, log_vars = model(x)
    assert losses.gaussian_nll(x, means, log_vars).dtype == tf.float32
    history = model.fit(x, epochs=2, batch_size=8, verbose=0)
    assert np.isfinite(history.history["loss"]).all()
    scores, maps = model.score(x)
    assert scores.dtype == np.float32 and np.isfinite(scores).all()


def test_auto_precision_is_bfloat16_only_with_native_support(monkeypatch):
    from mhp_keras.training import runtime

    monkeypatch.setattr(runtime, "cpu_has_native_bfloat16", lambda: False)
    assert resolve_precision("auto") == "none"
    monkeypatch.setattr(runtime, "cpu_has_native_bfloat16", lambda: True)
    monkeypatch.setattr(runtime, "gpu_compute_capability", lambda: None)
    assert resolve_precision("auto") == "bfloat16"
    assert resolve_precision("float16") == "float16"


@pytest.mark.parametrize(
    ("capability", "cpu_bf16", "expected"),
    [
        ((9, 0), False, "bfloat16"),  # Hopper
        ((8, 0), False, "bfloat16"),  # Ampere: bfloat16 tensor cores
        ((7, 5), True, "float16"),  # Turing: float16 tensor cores, loss-scaled
        ((7, 0), False, "float16"),  # Volta
        ((6, 1), True, "none"),  # Pascal: no tensor cores
        (None, True, "bfloat16"),  # CPU with native bfloat16
        (None, False, "none"),
    ],
)
def test_auto_precision_on_gpus_and_cpus(capability, cpu_bf16, expected):
    from mhp_keras.training.experiment import auto_precision

    assert auto_precision(capability, cpu_bf16) == expected
