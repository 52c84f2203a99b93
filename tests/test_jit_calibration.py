"""`train.jit_compile=auto` picks XLA or not by timing both on the machine that trains; these tests
pin what it accepts, how it decides, that it falls back when XLA fails, that forcing skips it, and
that calibrating never changes the training itself (same weights as a forced run, the choice
reused on resume)."""

import contextlib
import json
import math

import keras
import numpy as np
import pytest
import tensorflow as tf
from conftest import make_tiny_config

import mhp_keras
from mhp_keras.config.defaults import base_config
from mhp_keras.config.validation import validate_config
from mhp_keras.data import load_data
from mhp_keras.errors import ConfigError
from mhp_keras.training import jit as jit_calibration
from mhp_keras.training import jit_shared, jit_timing
from mhp_keras.training.experiment import build_and_compile, run

DEFAULT_STRATEGY = tf.distribute.get_strategy()


# -- the setting ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "value, expected",
    [
        ("auto", "auto"),
        ("AUTO", "auto"),
        ("true", True),
        ("True", True),
        ("1", True),
        ("false", False),
        ("FALSE", False),
        ("0", False),
        (True, True),
        (False, False),
        (1, True),
        (0, False),
    ],
)
def test_accepted_settings(value, expected):
    assert jit_calibration.parse_setting(value) == expected
    # The config field takes strings and bools (a config file may write True / False), and the
    # command line's "0" / "1" arrive as ints.
    config = base_config()
    config.train.jit_compile = value
    validate_config(config)


@pytest.mark.parametrize("value", ["yes", "", "xla", "2", 2, 0.5])
def test_rejected_settings_name_the_key(value):
    config = base_config()
    config.train.jit_compile = value
    with pytest.raises(ConfigError, match=r"config\.train\.jit_compile=.*'auto', 'true', 'false'"):
        validate_config(config)


def test_the_default_is_auto_and_compiles_without_xla_until_resolved():
    assert base_config().train.jit_compile == "auto"
    assert jit_calibration.compile_flag("auto") is False
    assert jit_calibration.compile_flag("True") is True


# -- the decision, from injected timings ---------------------------------------------------------


def test_the_faster_setting_wins():
    assert jit_calibration.decide(100.0, 50.0)[0] is True
    assert jit_calibration.decide(50.0, 100.0)[0] is False


def test_xla_must_win_clearly_and_repay_its_compile():
    assert jit_calibration.decide(100.0, 97.0)[0] is False  # within the noise margin
    # 2x faster, but 10 steps save 0.5 s against 10 s more compile time.
    chosen, reason = jit_calibration.decide(
        100.0, 50.0, default_first_s=2.0, xla_first_s=12.0, steps_left=10
    )
    assert chosen is False and "compile" in reason
    assert jit_calibration.decide(
        100.0, 50.0, default_first_s=2.0, xla_first_s=12.0, steps_left=10_000
    )[0]


@pytest.mark.parametrize("xla_ms", [None, math.inf])
def test_a_failed_xla_loses(xla_ms):
    assert jit_calibration.decide(100.0, xla_ms) == (False, "XLA failed")


def test_xla_is_only_tried_when_its_trial_fits_the_budget():
    # A 2 s first step predicts a 10 s compile; with 22 steps of 10 ms the trial is ~10.2 s:
    # over 10 % of 100 s of training, under 10 % of 1000 s.
    def fits(first_s, step_ms, steps_left):
        return jit_calibration.xla_trial_fits(
            jit_calibration.predict(first_s, step_ms, steps_left)
        )[0]

    assert fits(2.0, 10.0, steps_left=10_000) is False
    assert fits(2.0, 100.0, steps_left=10_000) is True
    assert fits(2.0, 10.0, steps_left=None) is True


# -- the rule on a fake clock: no real timing ----------------------------------------------------


class _FakeClock:
    def __init__(self):
        self.now = 0.0

    def __call__(self):
        return self.now


class _FakeModel:
    """A model whose steps cost what they are told on the fake clock: each setting's first step
    its trace (default) or compile (XLA), then its step time."""

    def __init__(self, clock, first_s, step_s, xla_first_s, xla_step_s):
        self.clock, self.jit_compile, self.xla_steps = clock, False, 0
        self.costs = {False: (first_s, step_s), True: (xla_first_s, xla_step_s)}

    def make_train_function(self, force=False):
        jit, done = self.jit_compile, []
        first_s, step_s = self.costs[jit]

        def function(iterator):
            self.clock.now += step_s if done else first_s
            self.xla_steps += jit
            done.append(True)
            return {"loss": 0.0}

        self.train_function = function


class _FakeStrategy:
    num_replicas_in_sync = 1

    def scope(self):
        return contextlib.nullcontext()

    def experimental_distribute_dataset(self, dataset):
        return dataset


def _fake_build(clock, first_s, step_s, xla_step_s, built=None):
    """`build` for `calibrate`: a compile of 5x the default's first step, as estimated."""

    def build(jit_compile):
        model = _FakeModel(clock, first_s, step_s, 5 * first_s, xla_step_s)
        if built is not None:
            built.append(model)
        return model

    return build


def _fake_calibrate(steps_left, first_s, step_s, xla_step_s):
    clock, built = _FakeClock(), []
    build = _fake_build(clock, first_s, step_s, xla_step_s, built)
    record = jit_calibration.calibrate(build, [], _FakeStrategy(), steps_left, clock=clock)
    return record, built[0]


def test_a_long_predicted_run_tries_xla_and_keeps_it_when_faster():
    # The grey 64 px inspection run: 1,290 steps of 1.4 s, a 4 s first step (20 s compile).
    record, model = _fake_calibrate(1290, 4.0, 1.4, 1.4 / 1.28)
    assert record["xla_tried"] is True and model.xla_steps > 0
    assert record["predicted_train_s"] == pytest.approx(1290 * 1.4)
    assert record["xla_compile_estimate_s"] == pytest.approx(20.0)
    assert record["default_step_ms"] == pytest.approx(1400)
    assert record["chosen"] is True and "1.28x faster" in record["reason"]
    assert "predicted" in jit_calibration.describe(record)


def test_xla_is_kept_only_if_faster():
    record, _ = _fake_calibrate(1290, 4.0, 1.4, 1.5)
    assert record["xla_tried"] is True and record["chosen"] is False
    assert "not above" in record["reason"]


def test_a_short_predicted_run_does_not_try_xla():
    # Enough steps to time the default, but 300 steps of 0.05 s are 15 s of training.
    record, model = _fake_calibrate(300, 0.5, 0.05, 0.01)
    assert record["xla_tried"] is False and model.xla_steps == 0
    assert record["chosen"] is False and "XLA not tried" in record["reason"]
    assert record["predicted_train_s"] == pytest.approx(15.0)


def test_a_very_short_run_builds_nothing(tmp_path, monkeypatch):
    # 50 steps of 0.05 s: under MIN_STEPS, so not even the default is timed.
    monkeypatch.setattr(jit_calibration, "keras_allows_xla", lambda model: True)
    config = make_tiny_config(**{"train.epochs": 1})
    model = _FakeModel(_FakeClock(), 0.5, 0.05, 2.5, 0.01)
    record = _resolve(config, model, tmp_path, steps_per_epoch=50)
    assert record["source"] == "skipped" and "50 training steps left" in record["reason"]
    assert model.xla_steps == 0


def test_runs_of_one_step_cost_share_one_calibration(tmp_path, monkeypatch):
    monkeypatch.setattr(jit_calibration, "keras_allows_xla", lambda model: True)
    monkeypatch.setattr(jit_calibration, "calibration_dataset", lambda images, config: [])
    clock, built = _FakeClock(), []
    build = _fake_build(clock, 4.0, 1.4, 1.0, built)

    def resolve(config, name, steps_per_epoch=645):
        model = _FakeModel(clock, 0, 0, 0, 0)
        return jit_calibration.resolve(
            config,
            _FakeStrategy(),
            model,
            range(64),
            str(tmp_path / name),
            steps_per_epoch=steps_per_epoch,
            initial_epoch=0,
            build=build,
            clock=clock,
        )

    conad = make_tiny_config(**{"model.hypotheses": 8})
    other_class = make_tiny_config(**{"model.hypotheses": 8, "data.normal_class": "3"})
    with jit_shared.shared_choices(str(tmp_path / jit_shared.SHARED_FILE)):
        first = resolve(conad, "a")
        second = resolve(other_class, "b")
        # A shorter run of the same shape decides again from the shared timings: its trial would
        # not have fitted its budget, but the trial is paid already and XLA repays its compile.
        third = resolve(other_class, "c", steps_per_epoch=120)
        vae = resolve(make_tiny_config(**{"model.hypotheses": 1}), "d")
    assert first["source"] == "calibrated" and first["chosen"] is True
    assert second["source"] == "shared" and second["chosen"] is True
    assert second["default_step_ms"] == first["default_step_ms"]
    assert third["source"] == "shared" and third["chosen"] is True
    assert third["steps_left"] == 240 and third["predicted_train_s"] == pytest.approx(336)
    assert vae["source"] == "calibrated"
    assert len(built) == 2  # one throw-away model per step cost
    # Outside a study nothing is shared.
    assert resolve(conad, "e")["source"] == "calibrated" and len(built) == 3


def test_remaining_steps():
    config = make_tiny_config(**{"train.epochs": 5})
    assert jit_calibration.remaining_steps(config, 10, 1000, initial_epoch=2) == 30
    # Tiled data has no known epoch length: one example per image at least, 64 / 32 steps.
    assert jit_calibration.remaining_steps(config, None, 64, initial_epoch=0) == 10
    assert jit_calibration.remaining_steps(config, 10, 1000, initial_epoch=5) == 0


# -- real timing on small Keras models -----------------------------------------------------------


class _Regressor(keras.Model):
    """A one-layer model; with `host_step` its training step calls back into Python, which XLA
    cannot compile."""

    def __init__(self, host_step=False):
        super().__init__(name="regressor")
        self.dense = keras.layers.Dense(1)
        self.host_step = host_step

    def call(self, x):
        return self.dense(x)

    def train_step(self, x):
        if self.host_step:
            x = tf.ensure_shape(tf.numpy_function(lambda a: a, [x], tf.float32), [None, 4])
        with tf.GradientTape() as tape:
            loss = tf.reduce_mean(self(x) ** 2)
        grads = tape.gradient(loss, self.trainable_variables)
        self.optimizer.apply_gradients(zip(grads, self.trainable_variables))
        return {"loss": loss}


def _regressor_build(host_step):
    def build(jit_compile):
        model = _Regressor(host_step)
        model.compile(optimizer="sgd", jit_compile=jit_compile)
        return model

    return build


def _vectors():
    data = np.random.default_rng(0).random((64, 4), dtype=np.float32)
    return tf.data.Dataset.from_tensor_slices(data).batch(16).repeat()


@pytest.fixture
def quick_timing(monkeypatch):
    monkeypatch.setattr(jit_timing, "TIMED_STEPS", 3)


def test_a_failing_xla_falls_back_to_the_default(quick_timing):
    record = jit_calibration.calibrate(_regressor_build(True), _vectors(), DEFAULT_STRATEGY, None)
    assert record["chosen"] is False and record["reason"] == "XLA failed"
    assert record["xla_error"] and record["xla_step_ms"] is None
    assert record["default_step_ms"] > 0 and record["calibration_seconds"] > 0


def test_both_settings_are_timed_and_the_decision_follows_the_medians(quick_timing):
    if not jit_calibration.keras_allows_xla(_regressor_build(False)(False)):
        pytest.skip("op determinism is on in this process: Keras refuses XLA")
    record = jit_calibration.calibrate(_regressor_build(False), _vectors(), DEFAULT_STRATEGY, None)
    assert record["xla_error"] is None and record["timed_steps"] == 3
    assert record["xla_step_ms"] > 0 and record["xla_first_step_s"] > 0
    expected = jit_calibration.decide(record["default_step_ms"], record["xla_step_ms"])
    assert (record["chosen"], record["reason"]) == expected


# -- resolve: forced, skipped, stored and reused -------------------------------------------------


def _never(*args, **kwargs):
    raise AssertionError("nothing should be timed")


def _tiny_model(setting):
    config = make_tiny_config(**{"train.jit_compile": setting})
    return config, build_and_compile(config, DEFAULT_STRATEGY)


def _resolve(config, model, state_dir, steps_per_epoch=2, initial_epoch=0):
    return jit_calibration.resolve(
        config,
        DEFAULT_STRATEGY,
        model,
        range(64),
        str(state_dir),
        steps_per_epoch=steps_per_epoch,
        initial_epoch=initial_epoch,
        build=_never,
    )


@pytest.mark.parametrize("setting, forced", [("true", True), ("False", False)])
def test_forced_settings_skip_calibration(setting, forced, tmp_path, monkeypatch):
    monkeypatch.setattr(jit_calibration, "calibrate", _never)
    config, model = _tiny_model(setting)
    expected = forced and jit_calibration.keras_allows_xla(model)
    record = _resolve(config, model, tmp_path)
    assert record["source"] == "forced" and record["setting"] == str(forced).lower()
    assert record["chosen"] is expected and model.jit_compile is expected
    assert not (tmp_path / jit_calibration.CHOICE_FILE).exists()


def test_auto_calibrates_stores_and_reuses_the_choice(tmp_path, monkeypatch):
    monkeypatch.setattr(jit_calibration, "keras_allows_xla", lambda model: True)
    monkeypatch.setattr(jit_calibration, "MIN_STEPS", 0)
    monkeypatch.setattr(jit_calibration, "calibration_dataset", lambda images, config: None)
    calibrated = {
        "setting": "auto",
        "source": "calibrated",
        "chosen": False,
        "reason": "test",
        "calibration_seconds": 1.0,
    }
    calls = []
    monkeypatch.setattr(
        jit_calibration,
        "calibrate",
        lambda *args, **kwargs: calls.append(args[-1]) or dict(calibrated),
    )
    config, model = _tiny_model("auto")
    assert _resolve(config, model, tmp_path, steps_per_epoch=3) == calibrated
    assert calls == [2 * 3]  # the tiny config's 2 epochs of 3 steps
    stored = json.loads((tmp_path / jit_calibration.CHOICE_FILE).read_text())
    assert stored == calibrated

    monkeypatch.setattr(jit_calibration, "calibrate", _never)
    record = _resolve(config, model, tmp_path, initial_epoch=1)
    assert record["source"] == "reused" and record["chosen"] is False
    assert record["calibration_seconds"] == 0.0


def test_a_stored_xla_choice_is_applied_to_the_model(tmp_path, monkeypatch):
    monkeypatch.setattr(jit_calibration, "calibrate", _never)
    config, model = _tiny_model("auto")
    if not jit_calibration.keras_allows_xla(model):
        pytest.skip("op determinism is on in this process: Keras refuses XLA")
    (tmp_path / jit_calibration.CHOICE_FILE).write_text(json.dumps({"chosen": True}))
    assert _resolve(config, model, tmp_path)["chosen"] is True
    assert model.jit_compile is True


def test_short_runs_build_nothing_and_keep_that_choice(tmp_path, monkeypatch):
    monkeypatch.setattr(jit_calibration, "keras_allows_xla", lambda model: True)
    monkeypatch.setattr(jit_calibration, "calibrate", _never)
    config, model = _tiny_model("auto")
    record = _resolve(config, model, tmp_path)
    assert record["source"] == "skipped" and record["chosen"] is False
    assert "4 training steps left" in record["reason"]
    assert (tmp_path / jit_calibration.CHOICE_FILE).exists()


def test_several_replicas_build_nothing(tmp_path, monkeypatch):
    class TwoReplicas:
        num_replicas_in_sync = 2

    monkeypatch.setattr(jit_calibration, "keras_allows_xla", lambda model: True)
    monkeypatch.setattr(jit_calibration, "calibrate", _never)
    config, model = _tiny_model("auto")
    record = jit_calibration.resolve(
        config,
        TwoReplicas(),
        model,
        range(64),
        str(tmp_path),
        steps_per_epoch=2,
        initial_epoch=0,
        build=_never,
    )
    assert record["source"] == "skipped" and "2 replicas" in record["reason"]
    assert record["chosen"] is False and model.jit_compile is False


def test_calibration_batches_are_full_training_batches_of_real_images():
    config = make_tiny_config(**{"data.batch_size": 100})  # more than the training images
    train = load_data(config).train
    assert len(train) < 100
    batch = next(iter(jit_calibration.calibration_dataset(train, config)))
    assert batch.shape == (100, 16, 16, 1)
    assert float(tf.reduce_min(batch)) >= 0.0 and float(tf.reduce_max(batch)) <= 1.0


# -- end to end: calibrating does not change the training ----------------------------------------
# Last in this file: `train.deterministic=True` turns op determinism on for the whole process.


@pytest.fixture(scope="module")
def auto_run(tmp_path_factory):
    """A tiny deterministic run with "auto" that really calibrates: the step floor and budget
    are lifted, and XLA is offered although Keras then refuses it under op determinism."""
    workdir = tmp_path_factory.mktemp("auto")
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(jit_calibration, "MIN_STEPS", 0)
        patch.setattr(jit_calibration, "TRIAL_BUDGET", math.inf)
        patch.setattr(jit_calibration, "TIMED_STEPS", 3)
        patch.setattr(jit_calibration, "keras_allows_xla", lambda model: True)
        metrics = run(make_tiny_config(**{"train.deterministic": True}), str(workdir))
    return workdir, metrics


def test_auto_writes_its_choice_into_metrics_json(auto_run):
    workdir, _ = auto_run
    metrics = json.loads((workdir / "metrics.json").read_text())
    record = metrics["jit_compile"]
    assert record["setting"] == "auto" and record["source"] == "calibrated"
    assert isinstance(record["chosen"], bool)
    assert record["default_step_ms"] > 0 and record["warmup_steps"] >= 1
    assert 0 < record["calibration_seconds"] < metrics["timings"]["train_seconds"]


def test_auto_trains_the_same_weights_as_a_run_forced_to_its_choice(auto_run, tmp_path):
    workdir, metrics = auto_run
    forced = "true" if metrics["jit_compile"]["chosen"] else "false"
    config = make_tiny_config(**{"train.deterministic": True, "train.jit_compile": forced})
    run(config, str(tmp_path), mode="train")
    auto_weights = mhp_keras.load_model(str(workdir / "model.keras")).get_weights()
    forced_weights = mhp_keras.load_model(str(tmp_path / "model.keras")).get_weights()
    assert len(auto_weights) == len(forced_weights)
    for a, b in zip(auto_weights, forced_weights, strict=True):
        np.testing.assert_array_equal(a, b)


def test_a_resumed_run_reuses_the_stored_choice(auto_run, monkeypatch):
    workdir, metrics = auto_run
    monkeypatch.setattr(jit_calibration, "keras_allows_xla", lambda model: True)
    monkeypatch.setattr(jit_calibration, "calibrate", _never)
    config = make_tiny_config(**{"train.deterministic": True, "train.epochs": 3})
    summary = run(config, str(workdir), mode="train")
    assert summary["epochs"]["first"] == 2  # resumed after the 2 epochs of the first run
    assert summary["jit_compile"]["source"] == "reused"
    assert summary["jit_compile"]["chosen"] == metrics["jit_compile"]["chosen"]
