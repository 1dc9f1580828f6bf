"""The network's 2x2 max pool, with a gradient that is cheap on XLA's CPU backend.

JAX differentiates ``keras.ops.max_pool`` (a ``reduce_window`` of ``max``) through a
variadic reduce-window that carries four int32 index maps the size of the input, each
materialised by an ``iota``: in a hand-read profile on 2 CPU cores, about 150 ms of a 700 ms
training step of the network, for a pool whose forward pass costs a few milliseconds.

For the network's pools (2x2 windows, stride 2, "valid"), :func:`max_pool_2x2` on JAX
(``channels_last``) reshapes the map to ``(batch, h/2, 2, w/2, 2, channels)`` and takes the
maximum over the two window axes; its gradient, written by hand through
``keras.ops.custom_gradient``, routes each window's upstream gradient to the first maximum of
the window in row-major order (what ``reduce_window``'s own gradient, PyTorch and TensorFlow
do), as one fused elementwise pass. Elsewhere it is ``keras.ops.max_pool``. Both give the same
values and gradients (tested).

Example:
    >>> x = keras.ops.reshape(keras.ops.arange(16.0), (1, 4, 4, 1))
    >>> keras.ops.squeeze(max_pool_2x2(x, "channels_last"))  # doctest: +SKIP
    [[ 5.,  7.], [13., 15.]]
"""

from __future__ import annotations

import keras
from keras import ops

__all__ = ["max_pool_2x2", "reshape_max_pool"]


def reshape_max_pool(data_format: str, backend: str | None = None) -> bool:
    """Whether :func:`max_pool_2x2` takes the reshape path with the hand-written gradient.

    Args:
        data_format: the feature maps' layout.
        backend: a Keras backend name; defaults to the current one.

    Returns:
        True on JAX with ``channels_last`` maps; False on TensorFlow and PyTorch, whose own
        max-pool gradients are single fast kernels.

    Example:
        >>> reshape_max_pool("channels_last", "jax")
        True
    """
    backend = backend or keras.backend.backend()
    return backend == "jax" and data_format == "channels_last"


def max_pool_2x2(inputs, data_format: str = "channels_last"):
    """2x2 max pool, stride 2, "valid" padding (odd trailing rows and columns are dropped).

    Args:
        inputs: a 4-D map, (batch, height, width, channels) for ``channels_last`` (or
            channels first).
        data_format: ``"channels_last"`` or ``"channels_first"``.

    Returns:
        The map of spatial size ``(height // 2, width // 2)``, as
        ``keras.ops.max_pool(inputs, (2, 2), strides=(2, 2), padding="valid")`` gives it.
    """
    if not reshape_max_pool(data_format):
        return ops.max_pool(inputs, (2, 2), strides=(2, 2), padding="valid",
                            data_format=data_format)
    return _reshape_max_pool(inputs)


def _reshape_max_pool(inputs):
    height, width, channels = (int(d) for d in inputs.shape[1:])
    h2, w2 = height // 2, width // 2

    @ops.custom_gradient
    def pool(x):
        windows = ops.reshape(x[:, :2 * h2, :2 * w2, :], (-1, h2, 2, w2, 2, channels))
        y = ops.max(windows, axis=(2, 4))

        def grad(*args, upstream=None):
            if upstream is None:  # TensorFlow and JAX pass the upstream gradient positionally
                (upstream,) = args
            peak = ops.expand_dims(ops.expand_dims(y, 2), 4)
            hit = ops.equal(windows, peak)
            h00, h01 = hit[:, :, 0, :, 0, :], hit[:, :, 0, :, 1, :]
            h10 = hit[:, :, 1, :, 0, :]
            # the first maximum of each window in row-major order takes the gradient
            first = [
                h00,
                ops.logical_and(h01, ops.logical_not(h00)),
                ops.logical_and(h10, ops.logical_not(ops.logical_or(h00, h01))),
                ops.logical_not(ops.logical_or(ops.logical_or(h00, h01), h10)),
            ]
            zero = ops.zeros_like(upstream)
            taps = [ops.where(mask, upstream, zero) for mask in first]
            rows = [ops.stack(taps[:2], axis=3), ops.stack(taps[2:], axis=3)]
            dx = ops.reshape(ops.stack(rows, axis=2), (-1, 2 * h2, 2 * w2, channels))
            if (2 * h2, 2 * w2) != (height, width):
                dx = ops.pad(dx, ((0, 0), (0, height - 2 * h2), (0, width - 2 * w2), (0, 0)))
            return dx

        return y, grad

    return pool(inputs)
