"""keras_dkd.conv: the convolution with a matrix-product kernel gradient (the JAX path)."""

import keras
import numpy as np
import pytest

from keras_dkd.conv import conv2d, matmul_kernel_gradient


@pytest.mark.once
def test_the_matmul_kernel_gradient_is_chosen_on_jax_channels_last_only():
    assert matmul_kernel_gradient("channels_last", "jax")
    assert not matmul_kernel_gradient("channels_first", "jax")
    assert not matmul_kernel_gradient("channels_last", "tensorflow")
    assert not matmul_kernel_gradient("channels_first", "torch")


@pytest.mark.skipif(keras.backend.backend() != "jax", reason="the custom gradient is JAX's path")
@pytest.mark.parametrize(
    "kernel_size, padding, input_shape",
    [((3, 3), "same", (3, 11, 7, 5)), ((10, 2), "valid", (2, 17, 9, 2)),
     ((2, 8), "valid", (2, 9, 14, 3)), ((3, 3), "valid", (2, 8, 8, 4))],
)
def test_forward_and_both_gradients_equal_automatic_differentiation(kernel_size, padding,
                                                                     input_shape):
    import jax

    rng = np.random.default_rng(0)
    x = rng.normal(size=input_shape).astype("float32")
    w = rng.normal(size=(*kernel_size, input_shape[-1], 6)).astype("float32")

    def loss(conv):
        def f(x, w):
            y = conv(x, w)
            # a fixed, non-uniform upstream gradient
            return keras.ops.sum(y * keras.ops.sin(keras.ops.arange(y.shape[-1], dtype="float32")))
        return f

    ours = loss(lambda x, w: conv2d(x, w, padding=padding, data_format="channels_last"))
    stock = loss(lambda x, w: keras.ops.conv(x, w, padding=padding,
                                             data_format="channels_last"))
    np.testing.assert_allclose(
        conv2d(x, w, padding=padding, data_format="channels_last"),
        keras.ops.conv(x, w, padding=padding, data_format="channels_last"), rtol=1e-6)
    assert "custom_vjp" in str(jax.make_jaxpr(ours)(x, w))  # the matrix-product path ran
    got = jax.jit(jax.grad(ours, argnums=(0, 1)))(x, w)
    want = jax.grad(stock, argnums=(0, 1))(x, w)
    for a, b in zip(got, want, strict=True):
        assert a.shape == b.shape
        assert float(np.max(np.abs(b))) > 0
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-4)
