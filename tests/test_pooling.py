"""keras_dkd.pooling: the 2x2 max pool with a reshape path and a hand-written gradient (JAX)."""

import keras
import numpy as np
import pytest

from keras_dkd.pooling import max_pool_2x2, reshape_max_pool


@pytest.mark.once
def test_the_reshape_path_is_chosen_on_jax_channels_last_only():
    assert reshape_max_pool("channels_last", "jax")
    assert not reshape_max_pool("channels_first", "jax")
    assert not reshape_max_pool("channels_last", "tensorflow")
    assert not reshape_max_pool("channels_first", "torch")


def _first_max_gradient(x, upstream):
    """NumPy reference: each window's upstream gradient goes to its first maximum (row-major)."""
    dx = np.zeros_like(x)
    n, h, w, c = x.shape
    for b in range(n):
        for i in range(h // 2):
            for j in range(w // 2):
                for ch in range(c):
                    window = x[b, 2 * i:2 * i + 2, 2 * j:2 * j + 2, ch].reshape(-1)
                    k = int(np.argmax(window))  # the first maximum
                    dx[b, 2 * i + k // 2, 2 * j + k % 2, ch] += upstream[b, i, j, ch]
    return dx


@pytest.mark.skipif(keras.backend.backend() != "jax", reason="the reshape path is JAX's")
@pytest.mark.parametrize("shape", [(2, 8, 6, 3), (3, 9, 7, 2), (1, 5, 11, 4)])
def test_forward_and_gradient_equal_the_stock_pool_and_the_first_maximum_rule(shape):
    import jax

    rng = np.random.default_rng(1)
    x = rng.normal(size=shape).astype("float32")
    # ties: a constant block and a window of equal values, as zero-padded frames give
    x[0, :4, :4, 0] = 0.5
    x[-1, 2:4, 2:4, -1] = 3.0
    h2, w2 = shape[1] // 2, shape[2] // 2
    upstream = rng.normal(size=(shape[0], h2, w2, shape[3])).astype("float32")

    def loss(pool):
        return lambda x: keras.ops.sum(pool(x) * upstream)

    ours = loss(lambda x: max_pool_2x2(x, "channels_last"))
    stock = keras.ops.max_pool(x, (2, 2), strides=(2, 2), padding="valid",
                               data_format="channels_last")
    np.testing.assert_array_equal(max_pool_2x2(x, "channels_last"), stock)
    assert "custom_vjp" in str(jax.make_jaxpr(ours)(x))  # the hand-written gradient ran
    got = np.asarray(jax.jit(jax.grad(ours))(x))
    np.testing.assert_allclose(got, _first_max_gradient(x, upstream), rtol=1e-6, atol=1e-6)
    # away from ties it is the stock pool's gradient too
    no_ties = rng.normal(size=shape).astype("float32")
    np.testing.assert_allclose(
        jax.grad(ours)(no_ties),
        jax.grad(loss(lambda x: keras.ops.max_pool(x, (2, 2), strides=(2, 2),
                                                   padding="valid")))(no_ties),
        rtol=1e-6, atol=1e-6)


def test_other_layouts_and_backends_use_the_stock_pool():
    x = np.random.default_rng(2).normal(size=(2, 3, 6, 8)).astype("float32")
    np.testing.assert_array_equal(
        keras.ops.convert_to_numpy(max_pool_2x2(x, "channels_first")),
        keras.ops.convert_to_numpy(keras.ops.max_pool(x, (2, 2), strides=(2, 2),
                                                      padding="valid",
                                                      data_format="channels_first")))
