"""The `.keras` format stays loadable: a model saved by release 0.1.0 (before ConAD was split into
model, objective and scorer) scores as it did then, and a new model survives a save/load trip,
including one built from sub-models passed in."""

import os

import numpy as np
import pytest
from model_helpers import TINY, tiny_conad

import mhp_keras
from mhp_keras.models import ConAD
from mhp_keras.models.decoder import build_decoder
from mhp_keras.models.discriminator import build_discriminator
from mhp_keras.models.encoder import build_encoder

OLD_MODEL = os.path.join(os.path.dirname(__file__), "data", "conad_0_1_0.keras")
# model.score(...)[0] of OLD_MODEL on the images below, computed by release 0.1.0.
OLD_SCORES = [64.85933, 53.740128, 53.913998, 52.819523]


def images():
    return np.random.default_rng(0).random((64, 16, 16, 1)).astype("float32")[:4]


def test_model_saved_by_release_0_1_0_scores_as_it_did():
    model = mhp_keras.load_model(OLD_MODEL)
    np.testing.assert_allclose(model.score(images())[0], OLD_SCORES, rtol=1e-4)
    assert np.isfinite(float(model.threshold.numpy()))
    assert model.compiled  # both optimizers are restored, so training can resume
    # It was trained with the fixed adversarial weight and resumes with it; it is a WTA model.
    assert model.adv_balance == "fixed" and model.mixture == "wta" and model.mixer is None


def round_trip(model, tmp_path):
    path = str(tmp_path / "model.keras")
    model.save(path)
    loaded = mhp_keras.load_model(path)
    for a, b in zip(model.weights, loaded.weights, strict=True):
        np.testing.assert_array_equal(a.numpy(), b.numpy())
    np.testing.assert_array_equal(model.score(images())[0], loaded.score(images())[0])
    return loaded


def test_new_model_round_trip(tmp_path):
    model = tiny_conad(seed=0)
    model.fit(images(), epochs=1, batch_size=4, verbose=0)
    model.fit_threshold(images())
    loaded = round_trip(model, tmp_path)
    assert float(loaded.threshold.numpy()) == float(model.threshold.numpy())
    assert loaded.get_config() == model.get_config()


def test_given_sub_models_are_used_and_saved(tmp_path):
    size, channels, latent = TINY["image_size"], TINY["channels"], TINY["latent_dim"]
    encoder = build_encoder(size, channels, latent, base_filters=4)
    decoder = build_decoder(size, channels, latent, 3, base_filters=4)
    discriminator = build_discriminator(size, channels, base_filters=4)
    model = ConAD(
        **(TINY | {"hypotheses": 3}),
        encoder=encoder,
        decoder=decoder,
        discriminator=discriminator,
    )
    assert model.encoder is encoder and model.decoder is decoder
    assert model.discriminator is discriminator
    model.compile()
    loaded = round_trip(model, tmp_path)
    assert loaded.encoder.count_params() == encoder.count_params()


def test_a_given_sub_model_must_fit_the_arguments():
    size, channels = TINY["image_size"], TINY["channels"]
    with pytest.raises(ValueError, match="ConAD encoder="):
        ConAD(**TINY, encoder=build_encoder(size, channels, latent_dim=7))
