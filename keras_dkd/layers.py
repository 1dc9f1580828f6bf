"""Layers of the DKDFMH network (a CNN with head-fusion attention), in ``keras.ops`` only.

The network (see ``keras_dkd.models.build_model``) is built from five layers:

- :class:`ParallelConvBlock`: the two parallel first convolutions, kernel (10, 2) with zero padding
  (4, 0) and kernel (2, 8) with zero padding (0, 3), concatenated on channels, BatchNorm, ReLU.
- :class:`ConvBlock`: a 3x3 "same" convolution, BatchNorm, ReLU and an optional 2x2 max pool.
- :class:`HeadFusion`: fused multi-head attention (Q, K, V 1x1 convolutions per head, softmax over
  the channels of Q*K, times V, heads fused, ReLU, global average pool).
- :class:`GlobalAveragePool`: the global average pool of the "cnn" ablation variant.
- :class:`Logits`: an identity layer that stores the class names in the model's config.

**Internal layout.** The feature maps between these layers use the layout that is fastest on
the current backend: ``channels_first`` on PyTorch, ``channels_last`` on TensorFlow and JAX. The
layout is not a property of the weights (kernels are always stored as ``(kh, kw, in, out)``) and is
not written to a saved model unless asked for explicitly, so a ``.keras`` file saved under one
backend is rebuilt with the right layout by whichever backend loads it. Pass
``data_format="channels_first"`` or ``"channels_last"`` to pin a layout.

**Speed.** All three convolution layers fold BatchNorm into the convolution at inference (one
convolution plus a per-channel shift). In training, the batch statistics come from a
custom-gradient moment function (two memory passes in the backward pass instead of about eight
on eager PyTorch), the convolution bias is left out of the feature map (it cancels exactly in
training-mode BatchNorm) and, where a max pool follows, the per-channel affine and the ReLU are
applied after the pool (max pooling commutes with a per-channel increasing map; a negative
BatchNorm scale is handled by flipping the sign of that channel's kernel). On PyTorch the maps are
kept in ``channels_last`` memory order (NCHW shape, NHWC strides), which oneDNN convolutions and
max pooling run fastest on. Each of these rewrites is mathematically exact (they change float
rounding only) and is tested against stock Keras layers.
"""

from __future__ import annotations

import keras
from keras import ops

from keras_dkd.conv import conv2d
from keras_dkd.distribution import replica_mean
from keras_dkd.errors import UserError
from keras_dkd.pooling import max_pool_2x2

__all__ = [
    "ConvBlock",
    "GlobalAveragePool",
    "HeadFusion",
    "Logits",
    "ParallelConvBlock",
    "default_data_format",
]

DATA_FORMATS = ("channels_first", "channels_last")


def default_data_format(backend: str | None = None) -> str:
    """The internal feature-map layout used when none is given.

    Args:
        backend: a Keras backend name; defaults to the current one.

    Returns:
        ``"channels_first"`` for PyTorch (its convolutions and pools take NCHW-shaped tensors;
        Keras' channels_last path copies around each of them), ``"channels_last"`` for
        TensorFlow (no channels_first convolutions on CPU) and JAX (XLA runs it faster).

    Example:
        >>> default_data_format("jax")
        'channels_last'
    """
    backend = backend or keras.backend.backend()
    return "channels_first" if backend == "torch" else "channels_last"


def _resolve_data_format(data_format):
    if data_format is None:
        return default_data_format()
    if data_format not in DATA_FORMATS:
        raise UserError(
            f"data_format={data_format!r} is not supported; use None (the backend's fastest), "
            "'channels_first' or 'channels_last'"
        )
    return data_format


def _to_channels_last_shape(shape):
    shape = list(shape)
    return tuple(shape[:1] + shape[2:] + shape[1:2])


def _to_channels_first_shape(shape):
    shape = list(shape)
    return tuple(shape[:1] + shape[-1:] + shape[1:-1])


class _LayoutLayer(keras.layers.Layer):
    """Base for layers whose inputs and outputs use the internal layout.

    ``data_format=None`` (the default) means "the current backend's fastest" and is what the
    config stores, so a saved model is rebuilt in the loading backend's own layout. The build
    config stores the input shape in ``channels_last`` order for the same reason.
    """

    # Whether the layer's *input* uses the internal layout (False for layers fed raw features).
    _layout_input = True

    def __init__(self, data_format=None, **kwargs):
        super().__init__(**kwargs)
        self._data_format_arg = data_format
        self.data_format = _resolve_data_format(data_format)

    @property
    def channels_first(self) -> bool:
        return self.data_format == "channels_first"

    @property
    def _channel_axis(self) -> int:
        return 1 if self.channels_first else -1

    @property
    def _spatial_axes(self) -> tuple[int, int]:
        return (2, 3) if self.channels_first else (1, 2)

    def _per_channel(self, vector):
        """Reshape a (channels,) vector to broadcast against a 4-D map."""
        return ops.reshape(vector, (-1, 1, 1)) if self.channels_first else vector

    def get_config(self):
        config = super().get_config()
        config["data_format"] = self._data_format_arg
        return config

    def get_build_config(self):
        config = super().get_build_config()
        if config and "input_shape" in config and self._layout_input and self.channels_first:
            config = {"input_shape": _to_channels_last_shape(config["input_shape"])}
        return config

    def build_from_config(self, config):
        if config and "input_shape" in config and self._layout_input and self.channels_first:
            config = {"input_shape": _to_channels_first_shape(config["input_shape"])}
        super().build_from_config(config)


def _batch_moments(y, channels_first):
    """Per-channel batch mean and mean of squares of a 4-D map, with a hand-written gradient.

    Returns a (2, channels) tensor ``[mean, mean_of_squares]``. The gradient is
    ``(u_mean + 2 * y * u_sq) / n``: two elementwise passes, where automatic differentiation of
    ``mean(y)``, ``mean(square(y))`` costs about eight on eager PyTorch (XLA fuses either form).
    """
    axes = (0, 2, 3) if channels_first else (0, 1, 2)
    channels = y.shape[1] if channels_first else y.shape[-1]
    # Values per channel as a Python number where the shape is known (always on PyTorch and
    # JAX), so that the gradient divides by a constant instead of building a tensor from the
    # shape (on a GPU under PyTorch, a host-to-device copy that waits for the GPU).
    dims = [y.shape[axis] for axis in axes]
    count = None if any(d is None for d in dims) else dims[0] * dims[1] * dims[2]

    @ops.custom_gradient
    def moments(y):
        stats = ops.stack([ops.mean(y, axis=axes), ops.mean(ops.square(y), axis=axes)])

        def grad(*args, upstream=None):
            if upstream is None:  # TensorFlow and JAX pass the upstream gradient positionally
                (upstream,) = args
            n = count if count is not None else ops.cast(ops.size(y) // channels, y.dtype)
            u_mean = upstream[0] / n
            u_sq = upstream[1] * (2.0 / n)
            if channels_first:
                u_mean = ops.reshape(u_mean, (-1, 1, 1))
                u_sq = ops.reshape(u_sq, (-1, 1, 1))
            return y * u_sq + u_mean

        return stats, grad

    # Data-parallel TensorFlow: the global batch's statistics (the mean over the replicas'
    # equal shares); elsewhere unchanged (JAX partitions one global computation).
    stats = replica_mean(moments(y))
    mean = stats[0]
    variance = ops.relu(stats[1] - ops.square(mean))  # max(., 0): rounding can make it < 0
    return mean, variance


class _ConvBatchNorm(_LayoutLayer):
    """Shared BatchNorm state and arithmetic of the convolution blocks.

    BatchNorm follows PyTorch's defaults (``momentum=0.9`` in Keras terms, i.e. 0.1 of the new
    batch statistics per step; ``epsilon=1e-5``), like the reference network.
    """

    def __init__(self, momentum=0.9, epsilon=1e-5, data_format=None, **kwargs):
        super().__init__(data_format=data_format, **kwargs)
        self.momentum = float(momentum)
        self.epsilon = float(epsilon)

    def _add_batch_norm_weights(self, channels):
        # autocast=False: under a mixed dtype policy BatchNorm's parameters and statistics are
        # read (and computed) in float32; only the scaled map is cast to the compute dtype.
        def weight(name, initializer, trainable=True):
            return self.add_weight(shape=(channels,), initializer=initializer, name=name,
                                   trainable=trainable, autocast=False)

        self.gamma = weight("gamma", "ones")
        self.beta = weight("beta", "zeros")
        self.moving_mean = weight("moving_mean", "zeros", trainable=False)
        self.moving_variance = weight("moving_variance", "ones", trainable=False)

    def _inference_scale_shift(self, bias):
        """BatchNorm with moving statistics folded into ``conv * scale + shift`` (float32)."""
        scale = self.gamma * ops.rsqrt(self.moving_variance.value + self.epsilon)
        shift = self.beta + scale * (ops.cast(bias, "float32") - self.moving_mean)
        return scale, shift

    def _scaled_kernel(self, kernel, scale):
        """``kernel * scale`` computed in float32, in the compute dtype."""
        return ops.cast(ops.cast(kernel, "float32") * scale, self.compute_dtype)

    def _apply(self, y, scale, shift):
        """``y * scale + shift`` per channel, in ``y``'s dtype (None: no scale)."""
        if scale is not None:
            y = y * self._per_channel(ops.cast(scale, y.dtype))
        return y + self._per_channel(ops.cast(shift, y.dtype))

    def _training_scale_shift(self, y, bias, sign=None):
        """Batch statistics of the bias-free map ``y``; updates the moving statistics.

        ``sign`` (per channel, +-1) is the sign the kernel was multiplied by, if any. Returns
        ``(scale, shift)`` such that BatchNorm of the conv output with its bias is
        ``y * (scale * sign) + shift`` when ``sign`` is given (``y`` then being the output of the
        sign-flipped kernel), and ``y * scale + shift`` otherwise.
        """
        # float32 statistics whatever the compute dtype (a no-op cast in float32)
        mean, variance = _batch_moments(ops.cast(y, "float32"), self.channels_first)
        bias = ops.cast(bias, "float32")
        true_mean = (mean * sign if sign is not None else mean) + bias
        # Python numbers meet tensors through the tensors' own operators (`.value`: the
        # backend tensor): `keras.ops` would first turn each number into a tensor, which on a
        # GPU under PyTorch is a host-to-device copy that waits for the GPU to finish.
        m = self.momentum
        self.moving_mean.assign(
            self.moving_mean.value * m + ops.stop_gradient(true_mean) * (1.0 - m)
        )
        self.moving_variance.assign(
            self.moving_variance.value * m + ops.stop_gradient(variance) * (1.0 - m)
        )
        scale = self.gamma * ops.rsqrt(variance + self.epsilon)
        # The conv bias cancels in training-mode BatchNorm. Writing the shift with
        # (true_mean - bias) keeps the bias in the graph with an exactly zero gradient.
        shift = self.beta - scale * (true_mean - bias)
        return scale, shift

    def _max_pool(self, y):
        return max_pool_2x2(y, data_format=self.data_format)

    def get_config(self):
        config = super().get_config()
        config.update(momentum=self.momentum, epsilon=self.epsilon)
        return config


@keras.saving.register_keras_serializable(package="keras_dkd")
class ConvBlock(_ConvBatchNorm):
    """3x3 "same" convolution (with bias), BatchNorm, ReLU, and an optional 2x2 max pool.

    Args:
        filters: output channels.
        pool: follow with a 2x2 max pool (stride 2, floor).
        momentum: BatchNorm moving-average momentum (Keras convention).
        epsilon: BatchNorm epsilon.
        data_format: internal layout; None for the backend's fastest.

    Returns:
        A map of ``filters`` channels in the internal layout, spatial size halved if ``pool``.

    Example:
        >>> block = ConvBlock(32, pool=True, data_format="channels_last")
        >>> block(keras.ops.ones((2, 196, 39, 16))).shape
        (2, 98, 19, 32)
    """

    def __init__(self, filters, pool=False, momentum=0.9, epsilon=1e-5, data_format=None, **kw):
        super().__init__(momentum=momentum, epsilon=epsilon, data_format=data_format, **kw)
        self.filters = int(filters)
        self.pool = bool(pool)

    def build(self, input_shape):
        channels = input_shape[self._channel_axis]
        self.kernel = self.add_weight(
            shape=(3, 3, channels, self.filters), initializer="glorot_uniform", name="kernel"
        )
        self.bias = self.add_weight(shape=(self.filters,), initializer="zeros", name="bias")
        self._add_batch_norm_weights(self.filters)

    def call(self, inputs, training=None):
        def conv(kernel):
            return conv2d(inputs, kernel, padding="same", data_format=self.data_format)

        if not (training and self.trainable):
            scale, shift = self._inference_scale_shift(self.bias)
            y = conv(self._scaled_kernel(self.kernel, scale))
            if self.pool:
                y = self._max_pool(y)
            return ops.relu(self._apply(y, None, shift))
        if not self.pool:
            y = conv(self.kernel)
            scale, shift = self._training_scale_shift(y, self.bias)
            return ops.relu(self._apply(y, scale, shift))
        # max(a*y + b) over a window is a*max(y) + b for a >= 0. Flip the kernel's sign where
        # gamma < 0 so that |scale| applies, pool the raw map, then BatchNorm and ReLU the pooled
        # map (a quarter of the size).
        sign = 1.0 - 2.0 * ops.cast(self.gamma.value < 0, "float32")  # +1 where gamma >= 0
        y = conv(self.kernel * ops.cast(sign, self.compute_dtype))
        scale, shift = self._training_scale_shift(y, self.bias, sign=sign)
        y = self._max_pool(y)
        return ops.relu(self._apply(y, scale * sign, shift))

    def compute_output_shape(self, input_shape):
        shape = list(input_shape)
        shape[self._channel_axis] = self.filters
        if self.pool:
            for axis in self._spatial_axes:
                shape[axis] = None if shape[axis] is None else shape[axis] // 2
        return tuple(shape)

    def get_config(self):
        config = super().get_config()
        config.update(filters=self.filters, pool=self.pool)
        return config


@keras.saving.register_keras_serializable(package="keras_dkd")
class ParallelConvBlock(_ConvBatchNorm):
    """The network's first block: two parallel convolutions on the (time, freq) features.

    Branch a: kernel (10, 2) over (time, freq), zero padding (4, 0). Branch b: kernel (2, 8), zero
    padding (0, 3). Both with bias and ``filters`` outputs; on a (197, 40) input both give
    (196, 39). The branches are concatenated on channels (a first), then BatchNorm (one per channel,
    the same as one BatchNorm per branch) and ReLU.

    Args:
        filters: output channels of each branch (the block outputs ``2 * filters``).
        momentum: BatchNorm moving-average momentum (Keras convention).
        epsilon: BatchNorm epsilon.
        data_format: layout of the *output*; None for the backend's fastest.

    Returns:
        (batch, 2 * filters, time - 1, freq - 1) or (batch, time - 1, freq - 1, 2 * filters) for
        an input of shape (batch, time, freq).

    Example:
        >>> block = ParallelConvBlock(data_format="channels_last")
        >>> block(keras.ops.ones((2, 197, 40))).shape
        (2, 196, 39, 16)
    """

    _layout_input = False
    KERNEL_A, PADDING_A = (10, 2), (4, 0)
    KERNEL_B, PADDING_B = (2, 8), (0, 3)

    def __init__(self, filters=8, momentum=0.9, epsilon=1e-5, data_format=None, **kwargs):
        super().__init__(momentum=momentum, epsilon=epsilon, data_format=data_format, **kwargs)
        self.filters = int(filters)

    def build(self, input_shape):
        if len(input_shape) != 3:
            raise UserError(
                f"ParallelConvBlock expects (batch, time, freq) features, got shape {input_shape}"
            )
        f = self.filters
        self.kernel_a = self.add_weight(
            shape=(*self.KERNEL_A, 1, f), initializer="glorot_uniform", name="kernel_a"
        )
        self.bias_a = self.add_weight(shape=(f,), initializer="zeros", name="bias_a")
        self.kernel_b = self.add_weight(
            shape=(*self.KERNEL_B, 1, f), initializer="glorot_uniform", name="kernel_b"
        )
        self.bias_b = self.add_weight(shape=(f,), initializer="zeros", name="bias_b")
        self._add_batch_norm_weights(2 * f)

    def _branches(self, inputs, kernel_a, kernel_b):
        x = ops.expand_dims(inputs, -1)
        if self.channels_first:
            # A transpose (not an expand_dims at axis 1) gives NHWC strides, which PyTorch's
            # convolutions then keep through the whole network: its fastest CPU path.
            x = ops.transpose(x, (0, 3, 1, 2))

        def pad(pad_time, pad_freq):
            if self.channels_first:
                return ops.pad(x, ((0, 0), (0, 0), (pad_time,) * 2, (pad_freq,) * 2))
            return ops.pad(x, ((0, 0), (pad_time,) * 2, (pad_freq,) * 2, (0, 0)))

        a = conv2d(pad(*self.PADDING_A), kernel_a, data_format=self.data_format)
        b = conv2d(pad(*self.PADDING_B), kernel_b, data_format=self.data_format)
        return ops.concatenate([a, b], axis=self._channel_axis)

    def call(self, inputs, training=None):
        bias = ops.concatenate([self.bias_a, self.bias_b])
        f = self.filters
        if not (training and self.trainable):
            scale, shift = self._inference_scale_shift(bias)
            y = self._branches(inputs, self._scaled_kernel(self.kernel_a, scale[:f]),
                               self._scaled_kernel(self.kernel_b, scale[f:]))
            return ops.relu(self._apply(y, None, shift))
        y = self._branches(inputs, self.kernel_a, self.kernel_b)
        scale, shift = self._training_scale_shift(y, bias)
        return ops.relu(self._apply(y, scale, shift))

    def compute_output_shape(self, input_shape):
        batch, time, freq = input_shape
        out_time = None if time is None else time + 2 * self.PADDING_A[0] - self.KERNEL_A[0] + 1
        out_freq = None if freq is None else freq + 2 * self.PADDING_A[1] - self.KERNEL_A[1] + 1
        if self.channels_first:
            return (batch, 2 * self.filters, out_time, out_freq)
        return (batch, out_time, out_freq, 2 * self.filters)

    def get_config(self):
        config = super().get_config()
        config.update(filters=self.filters)
        return config


def fused_projection(data_format: str, backend: str | None = None) -> bool:
    """Whether :class:`HeadFusion` computes Q, K and V as one matrix product with a hand-written
    gradient (JAX, ``channels_last``).

    On XLA's CPU backend, automatic differentiation of the three projections transposes each
    upstream gradient (14112 x 256 floats at batch 32) before the kernel-gradient product: about
    60 ms of a 600 ms training step on 2 cores in a hand-read profile. ``dW = xᵀ · dY`` and
    ``dx = dY · Wᵀ`` written out avoid those copies (a hand-run A/B of the step: about 90 ms
    less). TensorFlow and PyTorch keep three plain products, so their numbers are unchanged.

    Args:
        data_format: the layer's input layout.
        backend: a Keras backend name; defaults to the current one.

    Returns:
        True on JAX with ``channels_last`` maps, False elsewhere.
    """
    backend = backend or keras.backend.backend()
    return backend == "jax" and data_format == "channels_last"


def _matmul_with_matmul_gradient(x, kernel):
    """``x @ kernel`` for x of shape (batch, positions, channels), gradients as matrix products."""
    channels, width = int(kernel.shape[0]), int(kernel.shape[1])

    @ops.custom_gradient
    def project(x, w):
        y = ops.matmul(x, w)

        def grad(*args, upstream=None):
            if upstream is None:  # TensorFlow and JAX pass the upstream gradient positionally
                (upstream,) = args
            dw = ops.matmul(ops.transpose(ops.reshape(x, (-1, channels))),
                            ops.reshape(upstream, (-1, width)))
            dx = ops.matmul(upstream, ops.transpose(w))
            return ops.cast(dx, x.dtype), ops.cast(dw, w.dtype)

        return y, grad

    return project(x, kernel)


@keras.saving.register_keras_serializable(package="keras_dkd")
class HeadFusion(_LayoutLayer):
    """Head-fusion multi-head attention, global-average-pooled.

    For each head h: ``Q_h, K_h, V_h`` are 1x1 convolutions (with bias) from the input channels to
    ``hidden``; ``A_h = softmax(Q_h * K_h)`` over the channel axis (an elementwise product, not a
    matrix product); the head's map is ``A_h * V_h``. The heads are stacked along the time axis,
    passed through ReLU and averaged over heads, time and frequency, giving (batch, hidden).

    All 3 * heads 1x1 convolutions share one weight, ``kernel`` of shape
    (channels, 3 * heads * hidden), and ``bias`` of shape (3 * heads * hidden,). Column
    ``(i * heads + h) * hidden + d`` is channel d of head h of Q (i=0), K (i=1) or V (i=2). The
    layer computes them as three matrix products (Q, K and V of all heads at once); the parameter
    count equals that of 3 * heads separate 1x1 convolutions.

    Args:
        heads: number of heads.
        hidden: channels of each head's Q, K and V.
        kernel_init: ``"fused"`` (Glorot uniform over the whole fused kernel: limit
            sqrt(6 / (channels + 3 * heads * hidden)), 0.084 for 80 -> 4 x 64) or ``"per_head"``
            (the limit of one head's 1x1 convolution, sqrt(6 / (channels + hidden)), 0.204, as
            3 * heads separate layers would be initialised).
        data_format: layout of the input map; None for the backend's fastest.

    Returns:
        (batch, hidden).

    Example:
        >>> layer = HeadFusion(heads=4, hidden=64, data_format="channels_last")
        >>> layer(keras.ops.ones((2, 49, 9, 80))).shape
        (2, 64)
    """

    def __init__(self, heads=4, hidden=64, kernel_init="fused", data_format=None, **kwargs):
        super().__init__(data_format=data_format, **kwargs)
        if int(heads) < 1 or int(hidden) < 1:
            raise UserError(f"HeadFusion needs heads >= 1 and hidden >= 1, got {heads}, {hidden}")
        if kernel_init not in ("fused", "per_head"):
            raise UserError(f"kernel_init must be 'fused' or 'per_head', got {kernel_init!r}")
        self.heads = int(heads)
        self.hidden = int(hidden)
        self.kernel_init = kernel_init

    def build(self, input_shape):
        channels = input_shape[self._channel_axis]
        width = 3 * self.heads * self.hidden
        initializer = "glorot_uniform"
        if self.kernel_init == "per_head":
            limit = (6.0 / (channels + self.hidden)) ** 0.5
            initializer = keras.initializers.RandomUniform(-limit, limit)
        self.kernel = self.add_weight(shape=(channels, width), initializer=initializer,
                                      name="kernel")
        self.bias = self.add_weight(shape=(width,), initializer="zeros", name="bias")

    def call(self, inputs):
        x = inputs
        if self.channels_first:
            # On PyTorch the map is NHWC in memory, so this transpose is a free view.
            x = ops.transpose(x, (0, 2, 3, 1))
        _, rows, cols, channels = x.shape
        if rows is not None and cols is not None:
            batch, positions = -1, rows * cols
        else:
            batch, positions = ops.shape(x)[0], -1
        x = ops.reshape(x, (batch, positions, channels))
        width = self.heads * self.hidden

        if fused_projection(self.data_format):
            y = _matmul_with_matmul_gradient(x, self.kernel) + self.bias
            y = ops.reshape(y, (batch, positions, 3, self.heads, self.hidden))
            q, k, v = y[:, :, 0], y[:, :, 1], y[:, :, 2]
        else:
            def project(i):
                w = self.kernel[:, i * width : (i + 1) * width]
                b = self.bias[i * width : (i + 1) * width]
                y = ops.matmul(x, w) + b
                return ops.reshape(y, (batch, positions, self.heads, self.hidden))

            q, k, v = project(0), project(1), project(2)
        # The softmax and the final mean in float32 (no-op casts in float32).
        attention = ops.cast(ops.softmax(ops.cast(q * k, "float32"), axis=-1), v.dtype)
        return ops.mean(ops.cast(ops.relu(attention * v), "float32"), axis=(1, 2))

    def compute_output_shape(self, input_shape):
        return (input_shape[0], self.hidden)

    def get_config(self):
        config = super().get_config()
        config.update(heads=self.heads, hidden=self.hidden, kernel_init=self.kernel_init)
        return config


@keras.saving.register_keras_serializable(package="keras_dkd")
class GlobalAveragePool(_LayoutLayer):
    """Mean over the two spatial axes of a map in the internal layout.

    Args:
        data_format: layout of the input map; None for the backend's fastest.

    Returns:
        (batch, channels).

    Example:
        >>> GlobalAveragePool(data_format="channels_last")(keras.ops.ones((2, 49, 9, 80))).shape
        (2, 80)
    """

    def call(self, inputs):
        return ops.mean(ops.cast(inputs, "float32"), axis=self._spatial_axes)

    def compute_output_shape(self, input_shape):
        return (input_shape[0], input_shape[self._channel_axis])


@keras.saving.register_keras_serializable(package="keras_dkd")
class Logits(keras.layers.Layer):
    """Identity layer that names the classes of the logits it passes through.

    keras-dkd models end with this layer, so a ``.keras`` file carries its class names, how
    an utterance shorter than one segment was padded in training (predict and export pad the
    same way), and whether its features were standardised per speaker (predict does the same).

    Args:
        class_names: one name per logit, in order.
        padding: ``"zero"`` or ``"repeat"``: the padding of short utterances the model was
            trained with.
        speaker_norm: whether the model was trained on speaker-normalised features
            (:mod:`keras_dkd.speaker_norm`).

    Returns:
        Its input, unchanged.

    Example:
        >>> layer = Logits(class_names=["neutral", "happy", "angry", "sad"])
        >>> layer.class_names
        ['neutral', 'happy', 'angry', 'sad']
    """

    def __init__(self, class_names, padding="zero", speaker_norm=False, **kwargs):
        # float32 whatever the global dtype policy: the logits a model returns (and its
        # softmax, losses and exports downstream) stay float32 under mixed precision.
        kwargs["dtype"] = "float32"
        super().__init__(**kwargs)
        names = [str(name) for name in class_names]
        if not names or len(set(names)) != len(names):
            raise UserError(f"class_names must be non-empty and distinct, got {names}")
        if padding not in ("zero", "repeat"):
            raise UserError(f"padding must be 'zero' or 'repeat', got {padding!r}")
        if not isinstance(speaker_norm, bool):
            raise UserError(f"speaker_norm must be true or false, got {speaker_norm!r}")
        self.class_names = names
        self.padding = padding
        self.speaker_norm = speaker_norm

    def build(self, input_shape):
        if input_shape[-1] is not None and input_shape[-1] != len(self.class_names):
            raise UserError(
                f"Logits got {input_shape[-1]} logits for {len(self.class_names)} class names"
            )

    def call(self, inputs):
        return inputs

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        config = super().get_config()
        config["class_names"] = list(self.class_names)
        config["padding"] = self.padding
        config["speaker_norm"] = self.speaker_norm
        return config
