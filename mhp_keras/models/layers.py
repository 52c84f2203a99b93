"""Custom layers: the fused hypothesis heads and the discriminator's minibatch statistic."""

import keras
from keras import ops


@keras.saving.register_keras_serializable(package="mhp_keras")
class HypothesisHeads(keras.layers.Layer):
    """H parallel Conv2DTranspose heads, each predicting a per-pixel Gaussian (mean, log-variance).

    With `fused=True` (the default) the H heads are one Conv2DTranspose with H * 2C output channels:
    output channels [k*2C, (k+1)*2C) are head k. A transposed convolution computes every output
    channel from its own kernel slice only, so this is exactly H separate heads (and a losing head
    still gets zero gradient), but it runs as one large convolution instead of H small ones.
    `fused=False` builds H separate layers, for comparison.

    Outputs `means` in (0, 1) (a sigmoid; images are scaled to [0, 1]) and `log_vars` squashed
    smoothly into [logvar_min, logvar_max] so the NLL cannot collapse to -inf. Both are
    [B, H, h, w, C].
    """

    def __init__(
        self,
        hypotheses,
        channels,
        logvar_min=-6.0,
        logvar_max=2.0,
        kernel_size=4,
        strides=2,
        fused=True,
        **kwargs,
    ):
        super().__init__(**kwargs)
        self.hypotheses = int(hypotheses)
        self.channels = int(channels)
        self.logvar_min = float(logvar_min)
        self.logvar_max = float(logvar_max)
        self.kernel_size = kernel_size
        self.strides = strides
        self.fused = bool(fused)
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

    def build(self, input_shape):
        for conv in self.convs:
            conv.build(input_shape)

    def call(self, features):
        means, log_vars = self.native(features)
        order = (0, 3, 1, 2, 4)  # [B, h, w, H, C] -> [B, H, h, w, C]
        return ops.transpose(means, order), ops.transpose(log_vars, order)

    def native(self, features):
        """(means, log_vars) in the convolution's own layout [B, h, w, H, C].

        The training step works in this layout: moving the heads axis in front of the pixels is
        a full copy of both tensors (and of their gradients) that grows with H.
        """
        raw = ops.concatenate([conv(features) for conv in self.convs], axis=-1)
        h, w = raw.shape[1], raw.shape[2]
        raw = ops.reshape(raw, (-1, h, w, self.hypotheses, 2 * self.channels))
        # A split, not two slices: the gradient of a slice (StridedSliceGrad) scatters into a
        # zero tensor and took half the heads' training time on CPU; a split's gradient is a concat.
        raw_means, raw_log_vars = ops.split(raw, 2, axis=-1)
        means = ops.sigmoid(raw_means)
        span = self.logvar_max - self.logvar_min
        log_vars = self.logvar_min + span * ops.sigmoid(raw_log_vars)
        return means, log_vars

    def means_only(self, features):
        """The hypothesis means alone, in the native layout [B, h, w, H, C], without the
        log-variances.

        Prior samples only need means (the discriminator never sees a variance), so this runs the
        transposed convolution with just the mean channels of each head's kernel: identical
        values to `native(features)[0]` at half the head cost.
        """
        width = 2 * self.channels
        kernels, biases = [], []
        for conv in self.convs:
            heads = conv.filters // width
            index = [k * width + c for k in range(heads) for c in range(self.channels)]
            kernels.append(ops.take(conv.kernel, index, axis=2))
            biases.append(ops.take(conv.bias, index, axis=0))
        kernel = ops.concatenate(kernels, axis=2)
        bias = ops.concatenate(biases, axis=0)
        raw = ops.conv_transpose(
            features, ops.cast(kernel, features.dtype), self.strides, padding="same"
        ) + ops.cast(bias, features.dtype)
        h, w = raw.shape[1], raw.shape[2]
        return ops.sigmoid(ops.reshape(raw, (-1, h, w, self.hypotheses, self.channels)))

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
        )
        return config


@keras.saving.register_keras_serializable(package="mhp_keras")
class MinibatchStdDev(keras.layers.Layer):
    """Appends the batch's mean feature standard deviation as one constant channel.

    The discriminator sees each source (real, prior samples, posterior samples, best guesses) as its
    own batch, so this channel tells it how varied that batch is. Heads that collapse onto each
    other produce too little variety and are penalised: the "hypotheses discrimination" of ConAD.
    """

    def call(self, features):
        std = ops.sqrt(ops.var(features, axis=0) + 1e-8)  # [h, w, c]
        stat = ops.mean(std)
        shape = ops.shape(features)
        channel = ops.ones((shape[0], shape[1], shape[2], 1), dtype=features.dtype) * ops.cast(
            stat, features.dtype
        )
        return ops.concatenate([features, channel], axis=-1)

    def compute_output_shape(self, input_shape):
        return (*input_shape[:-1], input_shape[-1] + 1)
