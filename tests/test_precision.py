"""Mixed precision: the network under Keras' ``mixed_bfloat16`` dtype policy, on every backend.

The layers compute in bfloat16 with float32 variables; BatchNorm's parameters and statistics,
the attention softmax, the pooled means and the logits stay float32. A run trained with
``precision="mixed_bfloat16"`` records it, and its saved model keeps the policy.
"""

from __future__ import annotations

import json

import keras
import numpy as np
import pytest

from keras_dkd.layers import ConvBlock, HeadFusion, ParallelConvBlock
from keras_dkd.models import build_model


@pytest.fixture
def mixed_policy():
    previous = keras.config.dtype_policy()
    keras.config.set_dtype_policy("mixed_bfloat16")
    yield
    keras.config.set_dtype_policy(previous)


def _data(n=8, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.normal(2.0, 3.0, size=(n, 197, 40)).astype("float32")
    return x, (np.arange(n) % 4).astype("int32")


def _normalization(x):
    flat = x.reshape(-1, 40)
    return flat.mean(axis=0), flat.var(axis=0)


def test_the_network_computes_in_bfloat16_and_keeps_float32_where_it_matters(mixed_policy):
    x, y = _data()
    model = build_model(normalization=_normalization(x))
    blocks = [layer for layer in model.layers
              if isinstance(layer, ConvBlock | ParallelConvBlock | HeadFusion)]
    assert blocks and all(layer.compute_dtype == "bfloat16" for layer in blocks)
    assert all(v.dtype == "float32" for v in model.weights)
    bn = [v for layer in blocks for v in layer.weights
          if v.name in ("gamma", "beta", "moving_mean", "moving_variance")]
    assert bn and not any(v._autocast for v in bn)  # read in float32 inside the layers
    assert model.get_layer(index=-1).compute_dtype == "float32"  # Logits

    out = model(x, training=False)
    assert keras.backend.standardize_dtype(out.dtype) == "float32"

    # the same weights in float32: bfloat16 keeps about 3 significant digits
    keras.config.set_dtype_policy("float32")
    reference = build_model(normalization=_normalization(x))
    reference.set_weights(model.get_weights())
    want = keras.ops.convert_to_numpy(reference(x, training=False))
    got = keras.ops.convert_to_numpy(out)
    assert np.abs(got - want).max() <= 0.05 * np.abs(want).max() + 0.02, (got, want)

    # a training step: finite loss, float32 BatchNorm statistics that moved
    keras.config.set_dtype_policy("mixed_bfloat16")
    before = [keras.ops.convert_to_numpy(v) for v in bn if "moving" in v.name]
    model.compile(optimizer=keras.optimizers.AdamW(1e-3),
                  loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    loss = model.train_on_batch(x, y)
    assert np.isfinite(loss)
    after = [keras.ops.convert_to_numpy(v) for v in bn if "moving" in v.name]
    assert all(a.dtype == np.float32 for a in after)
    assert any(not np.array_equal(a, b) for a, b in zip(after, before, strict=True))


def test_a_run_trained_in_mixed_bfloat16_records_and_keeps_it(emodb_data, tmp_path):
    from keras_dkd.io import load_model
    from keras_dkd.options import RunOptions
    from keras_dkd.training import train

    data = dict(zip(("data_dir", "cache_dir", "manual_dir"), emodb_data[1::2], strict=True))
    options = RunOptions.from_flat(dataset="emodb", max_utterances=24, epochs=1, batch_size=8,
                                   variant="ce", precision="mixed_bfloat16", **data)
    result = train(options, tmp_path / "run")
    assert result["status"] == "trained"
    config = json.loads((tmp_path / "run" / "config.json").read_text())
    assert config["options"]["precision"] == "mixed_bfloat16"
    assert keras.config.dtype_policy().name == "float32"  # the global policy is left alone
    model = load_model(tmp_path / "run" / "student.keras")
    assert any(layer.compute_dtype == "bfloat16" for layer in model.layers)
    x, _ = _data(2)
    out = model(x, training=False)
    assert keras.backend.standardize_dtype(out.dtype) == "float32"
    assert np.isfinite(result["metrics"]["student"]["ua"])

    if keras.backend.backend() == "tensorflow":  # the export: float32 at every signature
        import tensorflow as tf

        from keras_dkd.export import export_saved_model

        path = export_saved_model(tmp_path / "run" / "student.keras", tmp_path / "export")
        signatures = tf.saved_model.load(str(path)).signatures
        served = signatures["serving_default"](features=tf.constant(x))
        assert served["probabilities"].dtype == tf.float32
        answer = signatures["classify_waveform"](waveform=tf.zeros([40000]) + 0.01)
        assert answer["probabilities"].dtype == tf.float32
        np.testing.assert_allclose(served["logits"].numpy(), keras.ops.convert_to_numpy(out),
                                   atol=1e-3)
