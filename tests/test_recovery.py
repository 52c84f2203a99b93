"""Automatic recovery from a divergence (rollback to the last good epoch, lower learning rates,
continue) and the training-health warnings, on a tiny model."""

import csv
import json
import subprocess
import sys

import keras
import numpy as np
import pytest
from cli_helpers import ENV, ROOT

from mhp_keras.config.defaults import base_config
from mhp_keras.config.validation import validate_config
from mhp_keras.data import load_data
from mhp_keras.errors import ConfigError
from mhp_keras.training import callbacks as cb
from mhp_keras.training import experiment
from mhp_keras.training.health import D_ACC_KEY, HEAD_SHARE_KEY, TrainingHealth
from mhp_keras.training.recovery import RECORD_FILE, Recovery

EPOCHS = 5
BATCH = 16


def tiny_config(**train):
    c = base_config()
    c.data.max_train = 48
    c.data.batch_size = BATCH
    c.model.hypotheses = 2
    c.model.latent_dim = 4
    c.model.base_filters = 8
    c.model.disc_base_filters = 8
    c.train.epochs = EPOCHS
    c.train.verbose = 0
    c.train.jit_compile = "false"
    c.eval.report = False
    for key, value in train.items():
        c.train[key] = value
    return c


class PoisonWeights(keras.callbacks.Callback):
    """Sets the encoder's first kernel to NaN before the given batches of the given epochs (each
    (epoch, batch) once): the loss of that batch is NaN, as in a real divergence."""

    def __init__(self, *at):
        super().__init__()
        self.at = set(at)
        self.epoch = 0

    def on_epoch_begin(self, epoch, logs=None):
        self.epoch = epoch

    def on_train_batch_begin(self, batch, logs=None):
        if (self.epoch, batch) in self.at:
            self.at.discard((self.epoch, batch))
            kernel = self.model.encoder.trainable_variables[0]
            kernel.assign(np.full(kernel.shape, np.nan, kernel.dtype))


def history_epochs(workdir):
    with open(workdir / "history.csv") as f:
        return [int(row["epoch"]) for row in csv.DictReader(f)]


@pytest.fixture(scope="module")
def digits():
    return load_data(tiny_config())


def test_a_nan_rolls_back_one_epoch_lowers_the_rates_and_loses_no_epoch(tmp_path, digits):
    config = tiny_config()
    experiment.set_up_runtime(config)
    model, info = experiment.train(
        config, digits, str(tmp_path), extra_callbacks=[PoisonWeights((2, 1))]
    )
    (record,) = info["recoveries"]
    assert "loss=nan" in record["cause"] and "epoch 3, step 2" in record["cause"]
    assert record["resumed_after_epoch"] == 2
    assert record["g_lr"] == pytest.approx(config.train.g_lr * 0.5)
    assert record["d_lr"] == pytest.approx(config.train.d_lr * 0.5)
    assert float(model.g_optimizer.learning_rate) == pytest.approx(config.train.g_lr * 0.5)
    assert float(model.d_optimizer.learning_rate) == pytest.approx(config.train.d_lr * 0.5)
    # The diverged epoch was undone and run again: one row and one optimizer step per batch
    # of every epoch, none lost, none repeated.
    assert history_epochs(tmp_path) == list(range(EPOCHS))
    steps = int(np.ceil(len(digits.train) / BATCH))
    assert int(model.g_optimizer.iterations.numpy()) == EPOCHS * steps
    assert int(model.d_optimizer.iterations.numpy()) == EPOCHS * steps
    assert all(np.isfinite(w).all() for w in model.get_weights())
    assert info["epochs"] == {"first": 0, "run": EPOCHS}
    stored = json.loads((tmp_path / "backup" / RECORD_FILE).read_text())
    assert stored == info["recoveries"]


def test_a_nan_in_the_first_epoch_rolls_back_to_the_start(tmp_path, digits):
    config = tiny_config(epochs=2)
    experiment.set_up_runtime(config)
    model, info = experiment.train(
        config, digits, str(tmp_path), extra_callbacks=[PoisonWeights((0, 0))]
    )
    assert [r["resumed_after_epoch"] for r in info["recoveries"]] == [0]
    assert history_epochs(tmp_path) == [0, 1]
    steps = int(np.ceil(len(digits.train) / BATCH))
    assert int(model.g_optimizer.iterations.numpy()) == 2 * steps


def test_when_the_recoveries_are_used_up_the_error_is_clear_and_the_checkpoint_kept(
    tmp_path, digits
):
    config = tiny_config(recoveries=1, epochs=3)
    experiment.set_up_runtime(config)
    with pytest.raises(experiment.TrainingDiverged, match=r"after 1 automatic recover"):
        experiment.train(
            config, digits, str(tmp_path), extra_callbacks=[PoisonWeights((1, 0), (1, 1))]
        )
    # Epoch 1 finished before the divergences: it is the checkpoint and the backup.
    assert (tmp_path / "checkpoints" / "last.keras").exists()
    assert history_epochs(tmp_path) == [0]
    records = json.loads((tmp_path / "backup" / RECORD_FILE).read_text())
    assert [r["resumed_after_epoch"] for r in records] == [1]


def test_recoveries_zero_stops_at_the_first_divergence(tmp_path, digits):
    config = tiny_config(recoveries=0, epochs=2)
    experiment.set_up_runtime(config)
    with pytest.raises(experiment.TrainingDiverged, match="epoch 2, step 1"):
        experiment.train(config, digits, str(tmp_path), extra_callbacks=[PoisonWeights((1, 0))])


def test_a_resumed_run_keeps_its_lowered_rates_and_budget(tmp_path):
    from model_helpers import tiny_conad

    model = tiny_conad()
    first = Recovery(str(tmp_path), limit=2, lr_factor=0.25, g_lr=1e-3, d_lr=2e-4)
    first.save_start(model, 0)

    class Guard:
        diverged = "training diverged: kl=inf at epoch 1, step 1"

        def forget_after(self, epochs):
            self.forgot = epochs

        def reset(self):
            self.diverged = None

    assert first.roll_back(model, Guard()) == 0
    again = Recovery(str(tmp_path), limit=2, lr_factor=0.25, g_lr=1e-3, d_lr=2e-4)
    assert not again.exhausted and len(again.records) == 1
    fresh = tiny_conad()
    again.apply_learning_rates(fresh)
    assert float(fresh.g_optimizer.learning_rate) == pytest.approx(2.5e-4)
    assert float(fresh.d_optimizer.learning_rate) == pytest.approx(5e-5)
    again.roll_back(model, Guard())
    assert again.exhausted


class FakeModel:
    stop_training = False


def run_guard(guard, epochs):
    """Feeds `guard` epochs of batch logs ({name: value} per batch); returns the model."""
    model = FakeModel()
    guard.set_model(model)
    for epoch, batches in enumerate(epochs):
        guard.on_epoch_begin(epoch)
        for batch, logs in enumerate(batches):
            guard.on_train_batch_end(batch, logs)
            if model.stop_training:
                return model
        guard.on_epoch_end(epoch, batches[-1])
    return model


def epochs_of(name, values):
    return [[{name: v}] for v in values]


def test_a_normal_rise_of_the_kl_is_no_spike_but_a_blow_up_is():
    # A 128 px run whose KL woke up after its first epochs (25 at epoch 1): no spike at 18.
    woke = epochs_of("kl", [25.1, 0.52, 1.86, 2.54, 6.5])
    assert not run_guard(cb.DivergenceGuard(10.0), woke + [[{"kl": 18.2}]]).stop_training
    # The reported divergence: 2.3, 5.6, 16, 12, 30, then 402. Limit 19.33 + 10 * 30 = 319.3.
    reported = epochs_of("kl", [2.3, 5.6, 16.0, 12.0, 30.0])
    assert not run_guard(cb.DivergenceGuard(10.0), reported + [[{"kl": 319.0}]]).stop_training
    guard = cb.DivergenceGuard(10.0)
    assert run_guard(guard, reported + [[{"kl": 402.0}]]).stop_training
    assert "kl=402 (over 319.333" in guard.diverged


def test_the_spike_test_against_the_mean_of_the_last_three_epochs():
    calm = [[{"kl": 10.0, "loss": -100.0}]] * 4
    # limit = 10 + 10 * 10 = 110 for kl; loss limit = -100 + 10 * 100 = 900.
    assert not run_guard(cb.DivergenceGuard(10.0), calm + [[{"kl": 109.0}]]).stop_training
    guard = cb.DivergenceGuard(10.0)
    assert run_guard(guard, calm + [[{"kl": 50.0}, {"kl": 111.0}]]).stop_training
    assert "kl=111 (over 110" in guard.diverged and "epoch 5, step 2" in guard.diverged
    # Off, and not before three epochs of reference.
    assert not run_guard(cb.DivergenceGuard(0.0), calm + [[{"kl": 1e9}]]).stop_training
    assert not run_guard(cb.DivergenceGuard(10.0), [[{"kl": 1.0}], [{"kl": 500.0}]]).stop_training
    # Values near zero are compared with a scale of at least 1.
    tiny = [[{"kl": 0.01}]] * 3
    assert not run_guard(cb.DivergenceGuard(10.0), tiny + [[{"kl": 10.0}]]).stop_training
    # Rolled-back epochs leave the reference.
    guard = cb.DivergenceGuard(10.0)
    run_guard(guard, [[{"kl": 1.0}]] * 2 + [[{"kl": 1000.0}]] * 3)
    guard.forget_after(2)
    assert guard._history["kl"] == [(0, 1.0), (1, 1.0)]


def feed_health(health, epochs):
    all_logs = []
    for epoch, logs in enumerate(epochs):
        logs = dict(logs)
        health.on_epoch_end(epoch, logs)
        all_logs.append(logs)
    return all_logs


def test_health_says_once_when_the_discriminator_wins_everything():
    health = TrainingHealth(adversarial=True, d_acc_limit=0.95, patience=3)
    strong = {"d_acc_real": 0.99, "d_acc_fake": 0.97, "win_0": 0.5, "win_1": 0.5}
    weak = dict(strong, d_acc_fake=0.6)
    # Epochs 1-3 are the warm-up; the streak starts at epoch 4, breaks at epoch 6 and is said
    # once, at epoch 9.
    epochs = [strong] * 3 + [strong, strong, weak] + [strong] * 6
    logs = feed_health(health, epochs)
    assert len(health.warnings) == 1
    assert "epoch 9" in health.warnings[0] and "config.loss.adv_weight" in health.warnings[0]
    assert [entry[D_ACC_KEY] for entry in logs[4:7]] == pytest.approx([0.97, 0.6, 0.97])
    assert logs[0][HEAD_SHARE_KEY] == 0.5


def test_health_says_when_the_discriminator_does_not_reach_the_generator():
    health = TrainingHealth(adversarial=True, adv_share_limit=0.01, patience=2)
    balanced = {"d_acc_real": 0.8, "d_acc_fake": 0.8, "adv_grad_share": 0.2}
    unreached = dict(balanced, adv_grad_share=4e-4)
    feed_health(health, [balanced] * 4 + [unreached] * 2)
    (message,) = health.warnings
    assert "does not reach the generator" in message and "4.0e-04" in message
    assert "Raise config.loss.adv_weight" in message and "epoch 6" in message


def test_health_says_when_a_head_draws_a_pattern():
    health = TrainingHealth(adversarial=True, head_sharpness_limit=2.0, patience=2)
    images = {"d_acc_real": 0.8, "d_acc_fake": 0.8, "head_sharpness_max": 0.4}
    pattern = dict(images, head_sharpness_max=16.8)
    feed_health(health, [images] * 3 + [pattern] + [images] + [pattern] * 2)
    (message,) = health.warnings
    assert "16.8 times the inputs' high-frequency energy" in message and "epoch 7" in message
    assert "config.loss.evolving_wta_epochs" in message
    assert "raise config.loss.eps above its 0.05 (e.g. to 0.1)" in message  # the default eps


@pytest.mark.parametrize(
    "eps, schedule, says, not_says",
    [
        (0.0, 0, ["Set config.loss.evolving_wta_epochs", "set config.loss.eps > 0"], ["above"]),
        (0.1, 0, ["Set config.loss.evolving_wta_epochs", "above its 0.1 (e.g. to 0.2)"], []),
        (0.0, 10, ["already uses the evolving WTA", "set config.loss.eps > 0"], ["Set config"]),
        (0.6, 10, ["above its 0.6 (e.g. to 0.8)"], ["to 1.2"]),  # eps must stay below 1
    ],
)
def test_the_heads_advice_names_a_change_the_run_has_not_made(eps, schedule, says, not_says):
    # One head winning everything and a pattern head get the same advice, from the run's own
    # relaxation and schedule (a run with eps = 0.05 was once told to set eps to 0.05).
    health = TrainingHealth(
        adversarial=True,
        head_share_limit=0.95,
        head_sharpness_limit=2.0,
        patience=2,
        eps=eps,
        evolving_wta_epochs=schedule,
    )
    feed_health(health, [{"win_0": 0.0, "win_1": 1.0, "head_sharpness_max": 9.0}] * 4)
    assert len(health.warnings) == 2
    for message in health.warnings:
        assert all(text in message for text in says), message
        assert not any(text in message for text in not_says), message


def test_the_health_callback_reads_the_runs_wta_settings():
    config = tiny_config()
    config.loss.eps, config.loss.evolving_wta_epochs = 0.0, 7
    health = TrainingHealth.from_config(config)
    assert (health.eps, health.evolving_wta_epochs) == (0.0, 7)


def test_a_dominant_discriminator_that_does_not_reach_the_generator_is_not_weakened():
    # D wins everything yet its gradient is negligible: the advice is to weigh it more.
    health = TrainingHealth(adversarial=True, d_acc_limit=0.95, adv_share_limit=0.01, patience=2)
    feed_health(health, [{"d_acc_real": 1.0, "d_acc_fake": 1.0, "adv_grad_share": 3e-4}] * 4)
    dominance = [w for w in health.warnings if "has won" in w]
    assert len(dominance) == 1 and "raise config.loss.adv_weight rather than" in dominance[0]
    assert "Lower config.loss.adv_weight" not in dominance[0]


def test_health_is_quiet_in_the_warm_up_and_below_the_limit():
    health = TrainingHealth(adversarial=True, d_acc_limit=0.97, patience=5)
    early = {"d_acc_real": 1.0, "d_acc_fake": 1.0, "win_0": 1.0, "win_1": 0.0}
    later = {"d_acc_real": 0.99, "d_acc_fake": 0.96, "win_0": 0.9, "win_1": 0.1}
    feed_health(health, [early] * 5 + [later] * 20)
    assert health.warnings == []


def test_health_says_once_when_one_head_wins_everything():
    health = TrainingHealth(adversarial=False, head_share_limit=0.95, patience=2)
    logs = feed_health(health, [{"win_0": 0.02, "win_1": 0.98, "d_acc_real": 1.0}] * 5)
    (message,) = health.warnings
    assert "hypothesis 1 has won 98%" in message and "config.loss.eps" in message
    assert D_ACC_KEY not in logs[0]  # no discriminator: its accuracy is no signal


@pytest.mark.parametrize(
    "key, value",
    [("recoveries", -1), ("recovery_lr_factor", 1.0), ("spike_factor", -2.0), ("health_epochs", 0)],
)
def test_bad_recovery_settings_name_the_key(key, value):
    config = tiny_config(**{key: value})
    with pytest.raises(ConfigError, match=f"config.train.{key}="):
        validate_config(config)


def test_the_result_line_counts_the_recoveries():
    # In a child process: train_main defines absl flags, which other tests' modules define too.
    code = (
        "import train_main; m = {'image_auroc': 0.9, 'n_test': 4, 'n_anomalous': 2, "
        "'recoveries': [{'cause': 'x'}, {'cause': 'y'}]}; print(train_main.summary_line(m)); "
        "m['recoveries'] = []; print(train_main.summary_line(m))"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, env=ENV, check=True
    )
    with_recoveries, without = result.stdout.strip().splitlines()[-2:]
    assert with_recoveries.endswith(" recoveries=2")
    assert "recoveries" not in without
