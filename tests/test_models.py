"""keras_dkd.models: the DKDFMH network's size, interface, options, and .keras portability
across the three backends."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import zipfile
from pathlib import Path

import keras
import numpy as np
import pytest

from keras_dkd import io
from keras_dkd.errors import UserError
from keras_dkd.layers import default_data_format
from keras_dkd.models import ARCHITECTURES, build_model, get_class_names, recommended_jit_compile

REPO = Path(__file__).resolve().parents[1]


def count(weights) -> int:
    return sum(int(np.prod(w.shape)) for w in weights)


def randomize(model, seed=0):
    """Random weights, mixed-sign BatchNorm gammas and non-trivial moving statistics."""
    rng = np.random.default_rng(seed)
    for w in model.weights:
        value = rng.normal(scale=0.3, size=w.shape)
        if w.path.endswith("moving_variance"):
            value = np.abs(value) + 0.5
        w.assign(value.astype("float32"))
    return model


@pytest.fixture(scope="module")
def model():
    return build_model()


@pytest.fixture(scope="module")
def segments():
    return np.random.default_rng(1).normal(size=(4, 197, 40)).astype("float32")


def test_default_model_has_the_reference_parameter_count(model):
    assert count(model.trainable_weights) == 155_636
    assert count(model.non_trainable_weights) == 480  # BatchNorm moving mean and variance


def test_cnn_variant_parameter_count():
    cnn = build_model("cnn")
    # The same stack without attention: 155,636 - 62,208 (head fusion) - 260 + 324 (Dense 80->4).
    assert count(cnn.trainable_weights) == 93_492
    assert count(cnn.non_trainable_weights) == 480


def test_heads_and_hidden_set_the_attention_size():
    small = build_model(heads=2, hidden=16, num_classes=3)
    convs = 155_636 - 12 * (80 * 64 + 64) - (64 * 4 + 4)
    assert count(small.trainable_weights) == convs + 6 * (80 * 16 + 16) + (16 * 3 + 3)


def test_interface(model, segments):
    assert model.layers[0].name == "features"
    assert tuple(model.input.shape) == (None, 197, 40)
    assert tuple(model.output.shape) == (None, 4)
    assert model.layers[-1].name == "logits"
    assert [layer.name for layer in model.layers[1:]] == [
        "conv1",
        "conv2",
        "conv3",
        "conv4",
        "conv5",
        "head_fusion",
        "dense",
        "logits",
    ]
    assert model.get_layer("conv5").data_format == default_data_format()
    logits = keras.ops.convert_to_numpy(model(segments))
    assert logits.shape == (4, 4) and logits.dtype == np.float32 and np.all(np.isfinite(logits))


def test_class_names():
    assert get_class_names(build_model()) == ["neutral", "happy", "angry", "sad"]
    assert get_class_names(build_model(num_classes=3)) == ["class_0", "class_1", "class_2"]
    names = ["anger", "boredom", "disgust", "fear", "happiness", "neutral", "sadness"]
    seven = build_model(class_names=names)
    assert get_class_names(seven) == names
    assert tuple(seven.output.shape) == (None, 7)
    with pytest.raises(UserError, match="does not match"):
        build_model(num_classes=3, class_names=names)
    with pytest.raises(UserError, match="has no Logits layer"):
        get_class_names(keras.Sequential([keras.Input((3,)), keras.layers.Dense(2)]))


def test_recommended_jit_compile():
    # The fastest settings measured on CPU; they equal what Keras' "auto" resolves to there.
    assert recommended_jit_compile("torch") is False
    assert recommended_jit_compile("jax") is True
    assert recommended_jit_compile("tensorflow") == "auto"


def test_bad_arguments_raise_user_errors():
    with pytest.raises(UserError, match="unknown variant 'resnet'"):
        build_model("resnet")
    assert ARCHITECTURES == ("cnn_mha", "cnn")
    with pytest.raises(UserError, match="shape \\(40,\\)"):
        build_model(normalization=(np.zeros(39), np.ones(39)))
    with pytest.raises(UserError, match="mean, variance"):
        build_model(normalization=np.zeros(40))


def test_normalization_is_carried_in_the_model(model, segments):
    rng = np.random.default_rng(2)
    mean = rng.normal(size=40).astype("float32")
    variance = rng.uniform(0.5, 2.0, size=40).astype("float32")
    normalized = build_model(normalization=(mean, variance))
    assert normalized.layers[1].name == "normalization"
    assert count(normalized.weights) == count(model.weights)
    randomize(model, seed=3)
    normalized.set_weights(model.get_weights())
    expected = keras.ops.convert_to_numpy(model((segments - mean) / np.sqrt(variance)))
    got = keras.ops.convert_to_numpy(normalized(segments))
    np.testing.assert_allclose(got, expected, atol=1e-5)


def test_config_and_keras_file_round_trip(model, segments, tmp_path):
    randomize(model, seed=4)
    expected = keras.ops.convert_to_numpy(model(segments))
    clone = keras.Model.from_config(model.get_config())
    clone.set_weights(model.get_weights())
    np.testing.assert_allclose(keras.ops.convert_to_numpy(clone(segments)), expected, atol=1e-6)

    mean, variance = np.full(40, 0.5, "float32"), np.full(40, 2.0, "float32")
    normalized = build_model(normalization=(mean, variance), class_names=["a", "b"], name="m")
    path = io.save_model(normalized, tmp_path / "model.keras")
    loaded = io.load_model(path)
    assert get_class_names(loaded) == ["a", "b"] and loaded.name == "m"
    np.testing.assert_allclose(
        keras.ops.convert_to_numpy(loaded(segments)),
        keras.ops.convert_to_numpy(normalized(segments)),
        atol=1e-6,
    )
    config = json.loads(zipfile.ZipFile(path).read("config.json"))
    layers = {layer["config"]["name"]: layer["config"] for layer in config["config"]["layers"]}
    assert layers["conv2"]["data_format"] is None  # layout chosen by the loading backend


def test_training_steps_reduce_the_loss(segments):
    keras.utils.set_random_seed(0)
    net = build_model()
    net.compile(
        optimizer=keras.optimizers.Adam(1e-3),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
    )
    labels = np.arange(len(segments)) % 4
    losses = [float(net.train_on_batch(segments, labels)) for _ in range(4)]
    assert np.all(np.isfinite(losses)) and losses[-1] < losses[0]


# One script, run under each backend: ``save`` writes <backend>.keras with random weights and the
# outputs that backend computes; ``load A B ...`` loads those files and compares.
SCRIPT = textwrap.dedent(
    """
    import sys
    from pathlib import Path
    import keras
    import numpy as np
    from keras_dkd import io
    from keras_dkd.layers import default_data_format
    from keras_dkd.models import build_model

    folder, actions = Path(sys.argv[1]), sys.argv[2:]
    backend = keras.backend.backend()
    x = np.load(folder / "x.npy")
    for action in actions:
        if action == "save":
            model = build_model(normalization=(np.full(40, 0.1), np.full(40, 1.5)))
            rng = np.random.default_rng(7)
            for w in model.weights:
                value = rng.normal(scale=0.3, size=w.shape)
                if w.path.endswith("moving_variance"):
                    value = np.abs(value) + 0.5
                w.assign(value.astype("float32"))
            io.save_model(model, folder / f"{backend}.keras")
            np.save(folder / f"{backend}.npy", keras.ops.convert_to_numpy(model(x)))
        else:
            model = io.load_model(folder / f"{action}.keras")
            assert model.get_layer("conv2").data_format == default_data_format(), action
            got = keras.ops.convert_to_numpy(model(x))
            error = float(np.abs(got - np.load(folder / f"{action}.npy")).max())
            print(f"{action} -> {backend}: max abs difference {error:.2e}")
            assert error < 1e-5, (action, backend, error)
    """
)


def run_under(backend, folder, *actions):
    env = dict(os.environ, KERAS_BACKEND=backend, TF_CPP_MIN_LOG_LEVEL="3")
    result = subprocess.run(
        [sys.executable, "-c", SCRIPT, str(folder), *actions],
        env=env,
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, f"{backend} {actions}:\n{result.stdout}\n{result.stderr[-3000:]}"
    return result.stdout


@pytest.mark.once
def test_keras_file_portable_across_backends(tmp_path):
    """Saved under each backend, loaded under each other: outputs equal within 1e-5.

    PyTorch runs the network channels_first, TensorFlow and JAX channels_last; the file stores
    neither. Three subprocesses cover the 3 x 2 matrix (this process is the TensorFlow one).
    """
    x = np.random.default_rng(0).normal(size=(3, 197, 40)).astype("float32")
    np.save(tmp_path / "x.npy", x)
    here = keras.backend.backend()
    others = [b for b in ("tensorflow", "torch", "jax") if b != here]
    first, second = others
    log = _run_here(tmp_path, "save")
    log += run_under(first, tmp_path, here, "save")
    log += run_under(second, tmp_path, here, first, "save")
    log += run_under(first, tmp_path, second)
    log += _run_here(tmp_path, first, second)
    assert log.count("max abs difference") == 6, log


def _run_here(folder, *actions):
    """Run SCRIPT's actions in this process (saves one interpreter start)."""
    import contextlib
    import io as _io

    buffer = _io.StringIO()
    argv = sys.argv
    try:
        sys.argv = ["-c", str(folder), *actions]
        with contextlib.redirect_stdout(buffer):
            exec(compile(SCRIPT, "<portable>", "exec"), {"__name__": "__portable__"})
    finally:
        sys.argv = argv
    return buffer.getvalue()


def test_recipe_knobs_dropout_and_per_head_init_keep_the_parameter_count(segments, tmp_path):
    from keras_dkd.io import load_model

    model = build_model(dropout=0.3, head_init="per_head")
    assert sum(int(np.prod(w.shape)) for w in model.trainable_weights) == 155636
    assert model.get_layer("dropout").rate == 0.3
    assert model.get_layer("head_fusion").kernel_init == "per_head"
    # dropout is off at inference: predictions are deterministic and survive a save
    first = model.predict(segments, verbose=0)
    np.testing.assert_array_equal(first, model.predict(segments, verbose=0))
    model.save(tmp_path / "m.keras")
    np.testing.assert_allclose(
        load_model(tmp_path / "m.keras").predict(segments, verbose=0), first, atol=1e-5
    )
    assert "dropout" not in [layer.name for layer in build_model().layers]
