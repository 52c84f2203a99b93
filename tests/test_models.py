"""Shapes of every network for several image sizes and channel counts; fused = separate heads."""

import keras
import numpy as np
import pytest

from mhp_keras.models.decoder import build_decoder
from mhp_keras.models.discriminator import build_discriminator
from mhp_keras.models.encoder import build_encoder
from mhp_keras.models.layers import HypothesisHeads, MinibatchStdDev

SIZES = [(16, 1), (32, 3), (64, 3)]


@pytest.mark.parametrize("size,channels", SIZES)
def test_output_shapes(size, channels):
    x = np.random.default_rng(0).random((2, size, size, channels)).astype("float32")
    mu, log_var = build_encoder(size, channels, latent_dim=5, base_filters=8)(x)
    assert mu.shape == (2, 5) and log_var.shape == (2, 5)
    means, log_vars = build_decoder(size, channels, 5, hypotheses=3, base_filters=8)(mu)
    assert means.shape == (2, 3, size, size, channels)
    assert log_vars.shape == (2, 3, size, size, channels)
    assert build_discriminator(size, channels, base_filters=8)(x).shape == (2, 1)


def test_decoder_ranges():
    z = np.random.default_rng(1).normal(size=(4, 5)).astype("float32") * 10
    means, log_vars = build_decoder(
        16, 1, 5, hypotheses=2, base_filters=8, logvar_min=-4, logvar_max=1
    )(z)
    assert np.all((means.numpy() >= 0) & (means.numpy() <= 1))
    assert np.all((log_vars.numpy() >= -4) & (log_vars.numpy() <= 1))


def test_unsupported_image_size_is_a_value_error():
    with pytest.raises(ValueError, match="image_size=48"):
        build_encoder(48, 3, 4)


def _separate_weights_from_blocked(kernel, bias, hypotheses, channels):
    """Head k's own [mean, log-var] kernel and bias, read out of a blocked fused layer: mean
    channel c of head k is fused channel c * H + k, its log-variance H * C + c * H + k."""
    weights = []
    for k in range(hypotheses):
        index = [c * hypotheses + k for c in range(channels)]
        index += [hypotheses * channels + i for i in index]
        weights.append([kernel[:, :, index], bias[index]])
    return weights


def test_fused_heads_equal_separate_heads():
    features = np.random.default_rng(2).normal(size=(3, 8, 8, 6)).astype("float32")
    fused = HypothesisHeads(4, 3, fused=True)
    separate = HypothesisHeads(4, 3, fused=False)
    fused.build(features.shape)
    separate.build(features.shape)
    kernel, bias = fused.convs[0].get_weights()
    for conv, weights in zip(separate.convs, _separate_weights_from_blocked(kernel, bias, 4, 3)):
        conv.set_weights(weights)
    for a, b in zip(fused(features), separate(features)):
        np.testing.assert_allclose(a.numpy(), b.numpy(), rtol=1e-5, atol=1e-6)


def test_interleaved_layout_of_older_models_is_kept():
    """A heads config saved before the blocked layout has no channel_layout: it must load as
    interleaved (head k = channels [k*2C, (k+1)*2C)) and give the same heads as blocked weights."""
    features = np.random.default_rng(5).normal(size=(2, 8, 8, 4)).astype("float32")
    blocked = HypothesisHeads(3, 2)
    blocked.build(features.shape)
    config = blocked.get_config()
    del config["channel_layout"]
    old = HypothesisHeads.from_config(config)
    assert old.channel_layout == "interleaved"
    old.build(features.shape)
    kernel, bias = blocked.convs[0].get_weights()
    per_head = _separate_weights_from_blocked(kernel, bias, 3, 2)
    old.convs[0].set_weights(
        [np.concatenate([w[0] for w in per_head], axis=2), np.concatenate([w[1] for w in per_head])]
    )
    for a, b in zip(blocked(features), old(features)):
        np.testing.assert_allclose(a.numpy(), b.numpy(), rtol=1e-5, atol=1e-6)
    with pytest.raises(ValueError, match="channel_layout='rows'"):
        HypothesisHeads(2, 1, channel_layout="rows")


def test_layers_serialise():
    heads = HypothesisHeads(3, 1, logvar_min=-5, logvar_max=1, fused=False)
    clone = HypothesisHeads.from_config(heads.get_config())
    assert clone.get_config() == heads.get_config()
    restored = keras.saving.deserialize_keras_object(
        keras.saving.serialize_keras_object(MinibatchStdDev(group_size=3))
    )
    assert isinstance(restored, MinibatchStdDev) and restored.group_size == 3


def test_minibatch_std_channel():
    x = np.random.default_rng(3).normal(size=(5, 4, 4, 2)).astype("float32")
    out = MinibatchStdDev()(x).numpy()
    expected = np.sqrt(x.var(axis=0) + 1e-8).mean()
    np.testing.assert_allclose(out[..., -1], expected, rtol=1e-5)
    np.testing.assert_array_equal(out[..., :2], x)


def test_group_std_is_computed_within_each_group():
    # Two groups of three: the first three identical images (collapsed hypotheses), then three
    # different ones; each image carries its own group's statistic.
    rng = np.random.default_rng(4)
    same = np.repeat(rng.normal(size=(1, 4, 4, 2)), 3, axis=0)
    varied = rng.normal(size=(3, 4, 4, 2))
    x = np.concatenate([same, varied]).astype("float32")
    out = MinibatchStdDev(group_size=3)(x).numpy()
    np.testing.assert_allclose(out[:3, ..., -1], np.sqrt(1e-8), rtol=1e-3)
    expected = np.sqrt(varied.var(axis=0) + 1e-8).mean()
    np.testing.assert_allclose(out[3:, ..., -1], expected, rtol=1e-5)
    np.testing.assert_array_equal(out[..., :2], x)


HEAD_VARIANTS = [
    (True, "blocked", 3, 3),
    (True, "blocked", 4, 1),
    (True, "blocked", 1, 3),
    (True, "interleaved", 3, 3),
    (False, "blocked", 3, 3),
    (False, "blocked", 2, 1),
]


@pytest.mark.parametrize("fused,layout,hypotheses,channels", HEAD_VARIANTS)
def test_native_and_means_only_equal_the_full_heads(fused, layout, hypotheses, channels):
    features = np.random.default_rng(4).normal(size=(2, 8, 8, 6)).astype("float32")
    heads = HypothesisHeads(hypotheses, channels, fused=fused, channel_layout=layout)
    heads.build(features.shape)
    means, log_vars = heads(features)
    native_means, native_log_vars = heads.native(features)  # [B, h, w, C, K]
    assert native_means.shape == (2, 16, 16, channels, hypotheses)
    np.testing.assert_array_equal(np.moveaxis(native_means.numpy(), 4, 1), means.numpy())
    np.testing.assert_array_equal(np.moveaxis(native_log_vars.numpy(), 4, 1), log_vars.numpy())
    np.testing.assert_allclose(
        heads.means_only(features).numpy(), native_means.numpy(), rtol=1e-5, atol=1e-6
    )


@pytest.mark.parametrize("fused,layout,hypotheses,channels", HEAD_VARIANTS)
def test_selected_means_equal_each_images_head(fused, layout, hypotheses, channels):
    rng = np.random.default_rng(6)
    features = rng.normal(size=(5, 8, 8, 6)).astype("float32")
    heads = HypothesisHeads(hypotheses, channels, fused=fused, channel_layout=layout)
    heads.build(features.shape)
    chosen = rng.integers(0, hypotheses, size=5).astype("int32")
    means = heads(features)[0].numpy()  # [B, K, h, w, C]
    selected = heads.selected_means(features, chosen).numpy()
    np.testing.assert_allclose(selected, means[np.arange(5), chosen], rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("kernel_size,strides", [(3, 1), (5, 2)])
def test_selected_means_follow_any_kernel_and_stride(kernel_size, strides):
    features = np.random.default_rng(8).normal(size=(3, 5, 5, 4)).astype("float32")
    heads = HypothesisHeads(3, 2, kernel_size=kernel_size, strides=strides)
    heads.build(features.shape)
    chosen = np.array([2, 0, 1], "int32")
    expected = heads(features)[0].numpy()[np.arange(3), chosen]
    np.testing.assert_allclose(
        heads.selected_means(features, chosen).numpy(), expected, rtol=1e-5, atol=1e-6
    )


def test_largest_supported_size():
    x = np.zeros((1, 256, 256, 3), "float32")
    mu, _ = build_encoder(256, 3, latent_dim=2, base_filters=4, max_filters=16)(x)
    means, _ = build_decoder(256, 3, 2, hypotheses=2, base_filters=4, max_filters=16)(mu)
    assert means.shape == (1, 2, 256, 256, 3)
    assert build_discriminator(256, 3, base_filters=4, max_filters=16)(x).shape == (1, 1)
