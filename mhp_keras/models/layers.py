"""Custom layers: the fused hypothesis heads and the discriminator's minibatch features."""

import keras
import numpy as np
from keras import ops

from mhp_keras.config.model_settings import DEFAULTS

CHANNEL_LAYOUTS = ("blocked", "interleaved")


@keras.saving.register_keras_serializable(package="mhp_keras")
class HypothesisHeads(keras.layers.Layer):
    """H parallel Conv2DTranspose heads, each predicting a per-pixel Gaussian (mean, log-variance).

    With `fused=True` (the default) the H heads are one Conv2DTranspose with H * 2C output channels.
    A transposed convolution computes every output channel from its own kernel slice only, so this
    is exactly H separate heads (and a losing head still gets zero gradient), but it runs as one
    large convolution instead of H small ones. `fused=False` builds H separate layers, for
    comparison.

    `channel_layout` orders the fused output channels: "blocked" (the default) puts the H * C
    means first, then the H * C log-variances, each block channel-major (output channel c * H + k
    of a block is head k's image channel c), so that the means and the log-variances are each a
    contiguous half of the kernel (`native` runs one transposed convolution per half) and each
    result already is the training step's [B, h, w, C, H] layout.
    "interleaved" gives head k the channels [k*2C, (k+1)*2C), means first; it is how models saved
    before the blocked layout store their kernels (their configs have no `channel_layout`, and
    `from_config` keeps them interleaved). Separate heads are always stored interleaved.

    Outputs `means` in (0, 1) (a sigmoid; images are scaled to [0, 1]) and `log_vars` squashed
    smoothly into [logvar_min, logvar_max] so the NLL cannot collapse to -inf. Both are
    [B, H, h, w, C].
    """

    def __init__(
        self,
        hypotheses,
        channels,
        logvar_min=DEFAULTS["logvar_min"],
        logvar_max=DEFAULTS["logvar_max"],
        kernel_size=4,
        strides=2,
        fused=DEFAULTS["fused_heads"],
        channel_layout="blocked",
        **kwargs,
    ):
        super().__init__(**kwargs)
        if channel_layout not in CHANNEL_LAYOUTS:
            raise ValueError(
                f"channel_layout={channel_layout!r}: expected one of {list(CHANNEL_LAYOUTS)}."
            )
        self.hypotheses = int(hypotheses)
        self.channels = int(channels)
        self.logvar_min = float(logvar_min)
        self.logvar_max = float(logvar_max)
        self.kernel_size = kernel_size
        self.strides = strides
        self.fused = bool(fused)
        self.channel_layout = channel_layout
        conv_args = dict(kernel_size=kernel_size, strides=strides, padding="same")
        if self.fused:
            self.convs = [
                keras.layers.Conv2DTranspose(
                    self.hypotheses * 2 * self.channels, name="heads", **conv_args
                )
            ]
        else:
            self.convs = [
                keras.layers.Conv2DTranspose(2 * self.channels, name=f"head_{k}", **conv_args)
                for k in range(self.hypotheses)
            ]

    @classmethod
    def from_config(cls, config):
        config = dict(config)
        config.setdefault("channel_layout", "interleaved")  # saved before the blocked layout
        return cls(**config)

    def build(self, input_shape):
        for conv in self.convs:
            conv.build(input_shape)

    @property
    def _blocked(self) -> bool:
        return self.fused and self.channel_layout == "blocked"

    def _positions(self, part):
        """[C, H] table: where channel c of head k's `part` ("mean" or "log_var") is among the
        output channels of all convs, concatenated."""
        c = np.arange(self.channels)[:, None]
        k = np.arange(self.hypotheses)[None, :]
        offset = 0 if part == "mean" else 1
        if self._blocked:
            return offset * self.hypotheses * self.channels + c * self.hypotheses + k
        return k * 2 * self.channels + offset * self.channels + c

    def call(self, features):
        means, log_vars = self.native(features)
        order = (0, 4, 1, 2, 3)  # [B, h, w, C, H] -> [B, H, h, w, C]
        return ops.transpose(means, order), ops.transpose(log_vars, order)

    def native(self, features):
        """(means, log_vars) in the training step's layout [B, h, w, C, H].

        Heads last, channels before them: the NLL then broadcasts each pixel's image channel over
        a contiguous run of H values and sums over channels across those runs, which is faster on
        CPU than working on H runs of C values; and moving the heads axis in front of the pixels
        would be a full copy of both tensors (and of their gradients) that grows with H.
        """
        if self._blocked:
            raw_means, raw_log_vars = self._blocked_halves(features)
        else:
            raws = [conv(features) for conv in self.convs]
            raw = raws[0] if len(raws) == 1 else ops.concatenate(raws, axis=-1)
            raw = ops.cast(raw, "float32")
            raw_means = ops.take(raw, self._positions("mean").reshape(-1), axis=-1)
            raw_log_vars = ops.take(raw, self._positions("log_var").reshape(-1), axis=-1)
        h, w = raw_means.shape[1], raw_means.shape[2]
        shape = (-1, h, w, self.channels, self.hypotheses)
        means = ops.reshape(ops.sigmoid(raw_means), shape)
        span = self.logvar_max - self.logvar_min
        log_vars = ops.reshape(self.logvar_min + span * ops.sigmoid(raw_log_vars), shape)
        return means, log_vars

    def _blocked_halves(self, features):
        """The fused conv's means and log-variance blocks as two transposed convolutions, each
        with its half of the kernel (the same weights, so the same values up to rounding).

        One convolution into all 2 * H * C channels followed by a split was slower on CPU: the
        split copies the output, its gradient is a concat, and the bias add is not fused; two
        half-width convolutions (and their gradients) cost about the same as one (profiled with
        benchmarks/profile_step.py, measured in benchmarks/README.md#profile).
        """
        conv, half = self.convs[0], self.hypotheses * self.channels
        kernel, bias = ops.cast(conv.kernel, features.dtype), ops.cast(conv.bias, features.dtype)
        halves = []
        for part in (slice(0, half), slice(half, 2 * half)):
            raw = ops.conv_transpose(features, kernel[:, :, part], self.strides, padding="same")
            # The Gaussians are float32 whatever the compute dtype: the NLL is computed in float32
            # anyway, and CPU element-wise kernels run slower on bfloat16 than on float32.
            halves.append(ops.cast(raw + bias[part], "float32"))
        return halves

    def _mean_weights(self):
        """The means' kernel [k, k, C * H, F_in] and bias [C * H], channel-major like `native`,
        whatever the layout: the log-variance channels dropped."""
        kernels = [conv.kernel for conv in self.convs]
        biases = [conv.bias for conv in self.convs]
        kernel = kernels[0] if len(kernels) == 1 else ops.concatenate(kernels, axis=2)
        bias = biases[0] if len(biases) == 1 else ops.concatenate(biases, axis=0)
        index = self._positions("mean").reshape(-1)
        if self._blocked:  # already contiguous: a slice
            return kernel[:, :, : index.size], bias[: index.size]
        return ops.take(kernel, index, axis=2), ops.take(bias, index, axis=0)

    def means_only(self, features):
        """The hypothesis means alone, in the native layout [B, h, w, C, H], without the
        log-variances.

        For decodings whose variances nobody uses (the discriminator never sees one), this runs
        the transposed convolution with just the mean channels of each head's kernel: the values
        of `native(features)[0]` at half the head cost.
        """
        kernel, bias = self._mean_weights()
        raw = ops.conv_transpose(
            features, ops.cast(kernel, features.dtype), self.strides, padding="same"
        ) + ops.cast(bias, features.dtype)
        h, w = raw.shape[1], raw.shape[2]
        return ops.sigmoid(ops.reshape(raw, (-1, h, w, self.channels, self.hypotheses)))

    def selected_means(self, features, heads):
        """The mean of head `heads[b]` for each image b: [B, h, w, C], the values of
        `means_only(features)[b, ..., heads[b]]` at the cost of a single head.

        A transposed convolution is, per input pixel, a matmul with the kernel followed by an
        overlap-add of the k x k taps into the output. The matmul takes each image's own head
        (a batched matmul with gathered kernels); the overlap-add is a transposed convolution
        with a constant 0/1 kernel that routes tap (p, q, c) to kernel position (p, q), channel
        c, so strides and padding follow the real layer's exactly.
        """
        kernel, bias = self._mean_weights()
        kh, kw, _, fin = kernel.shape
        c = self.channels
        taps_per_pixel = kh * kw * c
        per_head = ops.reshape(kernel, (kh, kw, c, self.hypotheses, fin))
        per_head = ops.reshape(ops.transpose(per_head, (3, 4, 0, 1, 2)), (-1, fin, taps_per_pixel))
        chosen = ops.cast(ops.take(per_head, heads, axis=0), features.dtype)  # [B, F_in, taps]
        h, w = features.shape[1], features.shape[2]
        taps = ops.matmul(ops.reshape(features, (-1, h * w, fin)), chosen)
        taps = ops.reshape(taps, (-1, h, w, taps_per_pixel))
        route = ops.reshape(ops.eye(taps_per_pixel), (kh, kw, c, taps_per_pixel))
        raw = ops.conv_transpose(taps, ops.cast(route, features.dtype), self.strides, "same")
        head_bias = ops.take(ops.transpose(ops.reshape(bias, (c, self.hypotheses))), heads, axis=0)
        return ops.sigmoid(raw + ops.cast(head_bias, features.dtype)[:, None, None, :])

    def compute_output_shape(self, input_shape):
        b, h, w = input_shape[0], input_shape[1], input_shape[2]
        h = None if h is None else h * self.strides
        w = None if w is None else w * self.strides
        shape = (b, self.hypotheses, h, w, self.channels)
        return shape, shape

    def get_config(self):
        config = super().get_config()
        config.update(
            hypotheses=self.hypotheses,
            channels=self.channels,
            logvar_min=self.logvar_min,
            logvar_max=self.logvar_max,
            kernel_size=self.kernel_size,
            strides=self.strides,
            fused=self.fused,
            channel_layout=self.channel_layout,
        )
        return config


@keras.saving.register_keras_serializable(package="mhp_keras")
class MinibatchStdDev(keras.layers.Layer):
    """Appends the mean feature standard deviation of a group of images as one constant channel.

    With `group_size=0` the group is the whole batch (Karras et al.'s minibatch stddev): the
    discriminator sees each source as its own batch, so the channel tells it how varied that
    batch is. With `group_size=K` every K consecutive images form a group with its own statistic:
    the paper's *hypotheses discrimination* (ConAD §4.2, after Salimans et al.'s minibatch
    discrimination), where a fake group holds the K hypotheses decoded for one input and a real
    group K real images, so hypotheses that agree with each other look fake. The batch must then
    be a multiple of K.
    """

    def __init__(self, group_size: int = 0, **kwargs):
        super().__init__(**kwargs)
        self.group_size = int(group_size)

    def call(self, features):
        shape = ops.shape(features)
        if self.group_size > 0:
            grouped = ops.reshape(features, (-1, self.group_size, shape[1], shape[2], shape[3]))
            std = ops.sqrt(ops.var(grouped, axis=1) + 1e-8)  # [groups, h, w, c]
            stat = ops.repeat(ops.mean(std, axis=(1, 2, 3)), self.group_size, axis=0)  # [B]
        else:
            std = ops.sqrt(ops.var(features, axis=0) + 1e-8)  # [h, w, c]
            stat = ops.ones((shape[0],), dtype=features.dtype) * ops.mean(std)
        stat = ops.cast(stat, features.dtype)[:, None, None, None]
        channel = ops.ones((shape[0], shape[1], shape[2], 1), dtype=features.dtype) * stat
        return ops.concatenate([features, channel], axis=-1)

    def compute_output_shape(self, input_shape):
        return (*input_shape[:-1], input_shape[-1] + 1)

    def get_config(self):
        return super().get_config() | {"group_size": self.group_size}


@keras.saving.register_keras_serializable(package="mhp_keras")
class MinibatchDiscrimination(keras.layers.Layer):
    """Salimans et al.'s (2016) minibatch discrimination, within groups: appends, per image, how
    close it is to the other images of its group along `kernels` learnt projections.

    The flat features f [N, A] are projected by a learnt tensor T [A, kernels * dims] to
    M [N, kernels, dims]; for each kernel, image i's feature is the mean over the other images j
    of its group of exp(-||M_i - M_j||_1) (Salimans et al. sum over the batch, self included;
    the mean over the others keeps it in [0, 1] whatever the group's size). Identical images
    give 1, images far apart along that projection 0.

    With `group_size=K` every K consecutive images form a group: the paper's hypotheses
    discrimination (ConAD 4.2), where a fake group holds one input's K hypotheses and a real
    group K real images. Unlike `MinibatchStdDev`'s one fixed statistic, D learns along which
    directions hypotheses that agree give themselves away. With `group_size=0` the group is the
    whole batch.
    """

    def __init__(self, kernels: int, dims: int = 5, group_size: int = 0, **kwargs):
        super().__init__(**kwargs)
        self.kernels, self.dims, self.group_size = int(kernels), int(dims), int(group_size)

    def build(self, input_shape):
        # fan-in scaling: projections of order one, so exp(-L1) neither saturates at 0 for
        # every pair (no gradient) nor sits at 1.
        self.projection = self.add_weight(
            shape=(input_shape[-1], self.kernels * self.dims),
            initializer=keras.initializers.VarianceScaling(1.0, "fan_in", "truncated_normal"),
            name="projection",
        )

    def call(self, features):
        # In float32 whatever the policy: exp of an L1 distance loses its small differences in
        # bfloat16.
        x = ops.cast(features, "float32")
        projected = ops.matmul(x, ops.cast(self.projection, "float32"))
        group = self.group_size if self.group_size > 0 else ops.shape(x)[0]
        m = ops.reshape(projected, (-1, group, 1, self.kernels, self.dims))
        l1 = ops.sum(ops.abs(m - ops.transpose(m, (0, 2, 1, 3, 4))), axis=-1)  # [G, g, g, k]
        # Each image's own pair contributes exp(0) = 1; take it out and average the others.
        others = ops.maximum(ops.cast(group, "float32") - 1.0, 1.0)
        closeness = (ops.sum(ops.exp(-l1), axis=2) - 1.0) / others  # [G, g, k]
        closeness = ops.cast(ops.reshape(closeness, (-1, self.kernels)), features.dtype)
        return ops.concatenate([features, closeness], axis=-1)

    def compute_output_shape(self, input_shape):
        return (*input_shape[:-1], input_shape[-1] + self.kernels)

    def get_config(self):
        return super().get_config() | {
            "kernels": self.kernels,
            "dims": self.dims,
            "group_size": self.group_size,
        }
