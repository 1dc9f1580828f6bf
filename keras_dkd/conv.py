"""A 2-D convolution whose kernel gradient is written as matrix products (fast on XLA's CPU).

XLA's CPU backend differentiates a convolution with respect to its kernel by another
convolution, whose "kernel" is the whole feature map (e.g. 196 x 39): Eigen runs that at a
fraction of its speed on ordinary convolutions (about 8 GFLOP/s against 40-70 for the forward
pass of the network's second and third blocks on 2 cores). Written as one matrix product per
kernel tap, ``dW[i, j] = X[:, i:i+H, j:j+W, :]ᵀ · dY`` over the flattened (batch, time,
frequency) positions, the same gradient runs at matrix-product speed.

:func:`conv2d` computes the forward pass and the input gradient with the backend's own
convolution ops and, where :func:`matmul_kernel_gradient` says so (JAX, channels_last), the
kernel gradient as above, through ``keras.ops.custom_gradient``. Elsewhere it is
``keras.ops.conv``. Both give the same values up to float rounding (tested).

Example:
    >>> x = keras.ops.ones((2, 12, 10, 3))
    >>> w = keras.ops.ones((3, 3, 3, 4))
    >>> conv2d(x, w, padding="same", data_format="channels_last").shape
    (2, 12, 10, 4)
"""

from __future__ import annotations

import keras
from keras import ops

__all__ = ["conv2d", "matmul_kernel_gradient"]


def matmul_kernel_gradient(data_format: str, backend: str | None = None) -> bool:
    """Whether :func:`conv2d` computes the kernel gradient as matrix products.

    Args:
        data_format: the feature maps' layout.
        backend: a Keras backend name; defaults to the current one.

    Returns:
        True on JAX with ``channels_last`` maps (XLA's own kernel gradient is the slow part
        of a training step on CPU; as matrix products it is not slower on GPU either), False
        on TensorFlow and PyTorch, whose oneDNN/Eigen kernel gradients are already fast.

    Example:
        >>> matmul_kernel_gradient("channels_last", "jax")
        True
    """
    backend = backend or keras.backend.backend()
    return backend == "jax" and data_format == "channels_last"


def conv2d(inputs, kernel, *, padding: str = "valid", data_format: str = "channels_last"):
    """Stride-1, undilated 2-D convolution, ``keras.ops.conv`` with a faster kernel gradient.

    Args:
        inputs: (batch, height, width, in_channels) for ``channels_last`` (or channels first).
        kernel: (kernel_height, kernel_width, in_channels, out_channels).
        padding: ``"valid"``, or ``"same"`` (odd kernel sizes only on the fast path).
        data_format: ``"channels_last"`` or ``"channels_first"``.

    Returns:
        The convolution, as ``keras.ops.conv(inputs, kernel, padding=padding,
        data_format=data_format)`` gives it. The fast kernel gradient is used for kernels of
        more than one input channel (with one, XLA's own is as fast).
    """
    kh, kw = int(kernel.shape[0]), int(kernel.shape[1])
    if not matmul_kernel_gradient(data_format) or int(kernel.shape[2]) == 1 or (
        padding == "same" and (kh % 2 == 0 or kw % 2 == 0)
    ):
        # One input channel (the first block): XLA's own kernel gradient is as fast there.
        return ops.conv(inputs, kernel, padding=padding, data_format=data_format)
    return _conv_with_matmul_kernel_gradient(inputs, kernel, padding)


def _conv_with_matmul_kernel_gradient(inputs, kernel, padding):
    kh, kw = int(kernel.shape[0]), int(kernel.shape[1])
    in_channels, out_channels = int(kernel.shape[2]), int(kernel.shape[3])

    @ops.custom_gradient
    def conv(x, w):
        y = ops.conv(x, w, padding=padding, data_format="channels_last")

        def grad(*args, upstream=None):
            if upstream is None:
                (upstream,) = args
            # dL/dx: the transposed convolution (what automatic differentiation does too).
            dx = ops.conv_transpose(upstream, w, strides=1, padding=padding,
                                    data_format="channels_last")
            if padding == "same":
                xp = ops.pad(x, ((0, 0), (kh // 2, kh // 2), (kw // 2, kw // 2), (0, 0)))
            else:
                xp = x
            height, width = upstream.shape[1], upstream.shape[2]
            dy = ops.reshape(upstream, (-1, out_channels))
            taps = []
            for i in range(kh):
                for j in range(kw):
                    window = ops.reshape(xp[:, i:i + height, j:j + width, :], (-1, in_channels))
                    taps.append(ops.matmul(ops.transpose(window), dy))
            dw = ops.reshape(ops.stack(taps), (kh, kw, in_channels, out_channels))
            return dx, ops.cast(dw, w.dtype)

        return y, grad

    return conv(inputs, kernel)
