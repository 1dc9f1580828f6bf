"""keras_dkd.layers: HeadFusion against a float64 NumPy reference of its formula, and the fused
convolution blocks against stock Keras layers (forward, gradients and moving statistics)."""

from __future__ import annotations

import keras
import numpy as np
import pytest
from keras import ops

from keras_dkd.errors import UserError
from keras_dkd.layers import (
    ConvBlock,
    GlobalAveragePool,
    HeadFusion,
    Logits,
    ParallelConvBlock,
    default_data_format,
)

LAYOUTS = ["channels_last", "channels_first"]


def to_numpy(x):
    return np.asarray(ops.convert_to_numpy(x))


def head_fusion_reference(x, kernel, bias, heads, hidden):
    """The formula of REFERENCE.md in float64, head by head, on a channels_last map.

    For each head h: Q_h, K_h, V_h are 1x1 convolutions (with bias); A_h = softmax over the
    channel axis of Q_h * K_h; the head's map is A_h * V_h. Heads are stacked along time, passed
    through ReLU and globally average-pooled over time x freq.
    """
    x = x.astype(np.float64)
    kernel = kernel.astype(np.float64)
    bias = bias.astype(np.float64)
    width = heads * hidden

    def conv1x1(which, h):
        cols = slice(which * width + h * hidden, which * width + (h + 1) * hidden)
        return np.einsum("bhwc,cd->bhwd", x, kernel[:, cols]) + bias[cols]

    maps = []
    for h in range(heads):
        q, k, v = conv1x1(0, h), conv1x1(1, h), conv1x1(2, h)
        s = q * k
        s = np.exp(s - s.max(axis=-1, keepdims=True))
        a = s / s.sum(axis=-1, keepdims=True)
        maps.append(a * v)
    stacked = np.concatenate(maps, axis=1)  # heads stacked along the time axis
    return np.maximum(stacked, 0.0).mean(axis=(1, 2))


@pytest.mark.parametrize("data_format", LAYOUTS)
@pytest.mark.parametrize("shape,heads,hidden", [((3, 49, 9, 80), 4, 64), ((2, 5, 3, 7), 3, 5)])
def test_head_fusion_matches_numpy_formula(data_format, shape, heads, hidden):
    if data_format == "channels_first" and keras.backend.backend() == "tensorflow":
        pytest.skip("TensorFlow has no channels_first kernels on CPU (unused there)")
    rng = np.random.default_rng(sum(shape) + heads)
    x = rng.normal(size=shape).astype("float32")
    layer = HeadFusion(heads=heads, hidden=hidden, data_format=data_format)
    inputs = np.transpose(x, (0, 3, 1, 2)) if data_format == "channels_first" else x
    layer.build(inputs.shape)
    kernel = rng.normal(scale=0.4, size=(shape[-1], 3 * heads * hidden)).astype("float32")
    bias = rng.normal(scale=0.4, size=(3 * heads * hidden,)).astype("float32")
    layer.set_weights([kernel, bias])
    out = to_numpy(layer(inputs))
    expected = head_fusion_reference(x, kernel, bias, heads, hidden)
    assert out.shape == (shape[0], hidden)
    np.testing.assert_allclose(out, expected, atol=1e-5, rtol=1e-5)


@pytest.mark.skipif(keras.backend.backend() != "jax", reason="the fused projection is JAX's")
def test_head_fusion_fused_projection_gradients_equal_three_products(monkeypatch):
    import jax

    import keras_dkd.layers as layers

    rng = np.random.default_rng(5)
    x = rng.normal(size=(2, 5, 3, 7)).astype("float32")
    kernel = rng.normal(scale=0.4, size=(7, 3 * 3 * 5)).astype("float32")
    bias = rng.normal(scale=0.4, size=(3 * 3 * 5,)).astype("float32")
    weights = np.sin(np.arange(5, dtype="float32"))

    def gradients():
        layer = HeadFusion(heads=3, hidden=5, data_format="channels_last")
        layer.build(x.shape)

        def loss(x, kernel, bias):
            out, _ = layer.stateless_call([kernel, bias], [], x)
            return ops.sum(out * weights)

        jaxpr = str(jax.make_jaxpr(loss)(x, kernel, bias))
        return jaxpr, jax.jit(jax.grad(loss, argnums=(0, 1, 2)))(x, kernel, bias)

    jaxpr, fused = gradients()
    assert "custom_vjp" in jaxpr  # the hand-written gradient ran
    monkeypatch.setattr(layers, "fused_projection", lambda *args, **kwargs: False)
    jaxpr, plain = gradients()
    assert "custom_vjp" not in jaxpr
    for a, b in zip(fused, plain, strict=True):
        assert float(np.max(np.abs(b))) > 0
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)


def test_head_fusion_parameter_count_equals_separate_convolutions():
    layer = HeadFusion(heads=4, hidden=64)
    layer.build((None, 49, 9, 80) if layer.data_format == "channels_last" else (None, 80, 49, 9))
    assert [tuple(w.shape) for w in layer.weights] == [(80, 768), (768,)]
    assert layer.count_params() == 12 * (80 * 64 + 64)  # 3 x 4 separate 1x1 convs with bias


def _random_batch_norm_weights(rng, channels):
    gamma = rng.uniform(0.5, 1.5, channels) * np.where(np.arange(channels) % 3 == 1, -1, 1)
    beta = rng.normal(scale=0.3, size=channels)
    mean = rng.normal(scale=0.3, size=channels)
    variance = rng.uniform(0.5, 2.0, channels)
    return [w.astype("float32") for w in (gamma, beta, mean, variance)]


def _to_layout(data_format):
    if data_format == "channels_first":
        return keras.layers.Permute((3, 1, 2))
    return keras.layers.Identity()


def _from_layout(data_format):
    if data_format == "channels_first":
        return keras.layers.Permute((2, 3, 1))
    return keras.layers.Identity()


def _compare_one_sgd_step(ours, reference, x, atol):
    """Same inference outputs, same training loss, same weights (trainable and moving statistics)
    after one SGD step, and the same inference outputs after it."""
    target = np.random.default_rng(5).normal(size=(len(x), *ours.output.shape[1:]))
    for model in (ours, reference):
        model.compile(optimizer=keras.optimizers.SGD(0.5), loss="mse")
    np.testing.assert_allclose(ours.predict_on_batch(x), reference.predict_on_batch(x), atol=atol)
    losses = [
        float(model.train_on_batch(x, target.astype("float32"))) for model in (ours, reference)
    ]
    np.testing.assert_allclose(losses[0], losses[1], rtol=1e-5)
    for a, b in zip(ours.get_weights(), reference.get_weights(), strict=True):
        np.testing.assert_allclose(a, b, atol=atol)
    np.testing.assert_allclose(ours.predict_on_batch(x), reference.predict_on_batch(x), atol=atol)


def test_conv_blocks_match_stock_keras_layers():
    """The blocks' rewrites (BatchNorm folded at inference, bias left out in training, affine and
    ReLU after the pool with a sign flip for gamma < 0, custom-gradient moments) compute the plain
    ZeroPadding2D/Conv2D -> BatchNormalization -> ReLU [-> MaxPooling2D] stack: same outputs in
    both modes, same weights and moving statistics after one SGD step."""
    rng = np.random.default_rng(3)
    x = rng.normal(size=(3, 21, 12)).astype("float32")
    data_format = default_data_format()

    inputs = keras.Input(x.shape[1:])
    y = ParallelConvBlock(4)(inputs)
    y = ConvBlock(6, pool=True)(y)
    y = ConvBlock(5)(y)
    ours = keras.Model(inputs, _from_layout(data_format)(y))

    def batch_norm_relu(y):
        y = keras.layers.BatchNormalization(momentum=0.9, epsilon=1e-5)(y)
        return keras.layers.ReLU()(y)

    inputs = keras.Input(x.shape[1:])
    image = keras.layers.Reshape((*x.shape[1:], 1))(inputs)
    a = keras.layers.Conv2D(4, (10, 2))(keras.layers.ZeroPadding2D(((4, 4), (0, 0)))(image))
    b = keras.layers.Conv2D(4, (2, 8))(keras.layers.ZeroPadding2D(((0, 0), (3, 3)))(image))
    y = batch_norm_relu(keras.layers.Concatenate()([a, b]))
    y = batch_norm_relu(keras.layers.Conv2D(6, 3, padding="same")(y))
    y = keras.layers.MaxPooling2D(2)(y)
    y = batch_norm_relu(keras.layers.Conv2D(5, 3, padding="same")(y))
    reference = keras.Model(inputs, y)

    def normal(*shape):
        return rng.normal(scale=0.3, size=shape).astype("float32")

    weights = [normal(10, 2, 1, 4), normal(4), normal(2, 8, 1, 4), normal(4)]
    weights += _random_batch_norm_weights(rng, 8)
    weights += [normal(3, 3, 8, 6), normal(6), *_random_batch_norm_weights(rng, 6)]
    weights += [normal(3, 3, 6, 5), normal(5), *_random_batch_norm_weights(rng, 5)]
    ours.set_weights(weights)
    reference.set_weights(weights)
    assert ours.output.shape == reference.output.shape == (None, 10, 5, 5)
    _compare_one_sgd_step(ours, reference, x, atol=2e-5)


def test_frozen_block_uses_moving_statistics():
    block = ConvBlock(4, pool=True)
    shape = (2, 3, 8, 8) if block.data_format == "channels_first" else (2, 8, 8, 3)
    x = np.random.default_rng(0).normal(size=shape).astype("float32")
    block.build(shape)
    stats = [block.moving_mean, block.moving_variance]
    before = [to_numpy(w) for w in stats]
    block.trainable = False
    np.testing.assert_allclose(to_numpy(block(x, training=True)), to_numpy(block(x)), atol=1e-6)
    for a, b in zip(before, stats, strict=True):
        np.testing.assert_array_equal(a, to_numpy(b))


@pytest.mark.parametrize(
    "layer",
    [
        ParallelConvBlock(8),
        ConvBlock(32, pool=True, momentum=0.8),
        HeadFusion(heads=2, hidden=16),
        GlobalAveragePool(),
        Logits(class_names=["a", "b"]),
        ConvBlock(8, data_format="channels_last"),
    ],
    ids=lambda layer: type(layer).__name__,
)
def test_get_config_round_trip(layer):
    config = layer.get_config()
    clone = type(layer).from_config(config)
    assert clone.get_config() == config
    restored = keras.saving.deserialize_keras_object(keras.saving.serialize_keras_object(layer))
    assert type(restored) is type(layer)
    assert restored.get_config() == config


def test_layout_is_not_stored_unless_pinned():
    auto = ConvBlock(8)
    assert auto.get_config()["data_format"] is None
    assert auto.data_format == default_data_format()
    pinned = ConvBlock(8, data_format="channels_last")
    assert pinned.get_config()["data_format"] == "channels_last"
    with pytest.raises(UserError, match="data_format"):
        ConvBlock(8, data_format="NHWC")


def test_build_config_is_stored_channels_last():
    block = ConvBlock(8, data_format="channels_first")
    block.build((None, 16, 20, 10))
    assert tuple(block.get_build_config()["input_shape"]) == (None, 20, 10, 16)
    other = ConvBlock(8, data_format="channels_last")
    other.build_from_config(block.get_build_config())
    assert tuple(other.kernel.shape) == (3, 3, 16, 8)


def test_default_data_format_per_backend():
    assert default_data_format("torch") == "channels_first"
    assert default_data_format("jax") == "channels_last"
    assert default_data_format("tensorflow") == "channels_last"


def test_logits_is_identity_and_checks_names():
    layer = Logits(class_names=["x", "y", "z"])
    value = np.arange(6, dtype="float32").reshape(2, 3)
    np.testing.assert_array_equal(to_numpy(layer(value)), value)
    with pytest.raises(UserError, match="distinct"):
        Logits(class_names=["a", "a"])
    with pytest.raises(UserError, match="3 logits for 2 class names"):
        Logits(class_names=["a", "b"])(value)


def test_head_fusion_per_head_initialisation_uses_one_heads_fan():
    """per_head: Glorot over a head's 80 -> 64 1x1 convolution (limit 0.204), not over the
    fused 80 -> 768 kernel (0.084); the choice is saved with the layer."""
    keras.utils.set_random_seed(0)
    limits = {}
    for init in ("fused", "per_head"):
        layer = HeadFusion(heads=4, hidden=64, kernel_init=init, data_format="channels_last")
        layer.build((None, 49, 9, 80))
        kernel = keras.ops.convert_to_numpy(layer.kernel)
        limits[init] = float(np.abs(kernel).max())
        assert HeadFusion.from_config(layer.get_config()).kernel_init == init
    assert 0.08 < limits["fused"] <= (6 / (80 + 768)) ** 0.5
    assert 0.19 < limits["per_head"] <= (6 / (80 + 64)) ** 0.5
    with pytest.raises(UserError, match="kernel_init"):
        HeadFusion(kernel_init="orthogonal")
