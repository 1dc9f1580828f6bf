"""The DKDFMH network as a functional Keras model: teacher and student share this architecture.

Layer by layer (REFERENCE.md, the Head Fusion lineage), for features of shape (197, 40) =
(time frames, filters):

| layer | operation | output (time x freq x channels) |
| --- | --- | --- |
| ``normalization`` | optional: per-filter (x - mean) / sqrt(variance) | 197 x 40 |
| ``conv1`` | conv 8 (10,2) pad (4,0) ‖ conv 8 (2,8) pad (0,3), BatchNorm, ReLU | 196 x 39 x 16 |
| ``conv2`` | conv 3x3 32 same, BatchNorm, ReLU, max pool 2 | 98 x 19 x 32 |
| ``conv3`` | conv 3x3 48 same, BatchNorm, ReLU, max pool 2 | 49 x 9 x 48 |
| ``conv4`` | conv 3x3 64 same, BatchNorm, ReLU | 49 x 9 x 64 |
| ``conv5`` | conv 3x3 80 same, BatchNorm, ReLU | 49 x 9 x 80 |
| ``head_fusion`` | 4 heads x 64 hidden, ReLU, global average pool ("cnn": plain pool) | 64 |
| ``dense`` | Dense(num_classes): raw logits, no dropout | num_classes |
| ``logits`` | identity, stores the class names | num_classes |

With 4 heads, 64 hidden and 4 classes the network has 155,636 trainable parameters (plus 480
BatchNorm moving statistics); the "cnn" ablation has 93,492.
"""

from __future__ import annotations

import keras
import numpy as np

from keras_dkd.errors import UserError
from keras_dkd.layers import ConvBlock, GlobalAveragePool, HeadFusion, Logits, ParallelConvBlock
from keras_dkd.options import ARCHITECTURES

__all__ = [
    "DEFAULT_CLASS_NAMES",
    "INPUT_SHAPE",
    "ARCHITECTURES",
    "build_model",
    "get_class_names",
    "get_padding",
    "get_speaker_norm",
    "recommended_jit_compile",
]

DEFAULT_CLASS_NAMES = ["neutral", "happy", "angry", "sad"]
INPUT_SHAPE = (197, 40)  # (time frames, log filter-bank filters) of a 2-s segment

# Measured with benchmarks/throughput.py on a 2-core CPU (see the README's Performance section).
# TensorFlow: "auto" is Keras' own choice, no XLA on a CPU-only machine (XLA was slower there)
# and XLA where a GPU is visible.
_RECOMMENDED_JIT_COMPILE = {"tensorflow": "auto", "jax": True, "torch": False}


def _class_names(num_classes, class_names):
    if class_names is not None:
        names = [str(name) for name in class_names]
        if num_classes is not None and num_classes != len(names) and num_classes != 4:
            raise UserError(
                f"num_classes={num_classes} does not match {len(names)} class_names; "
                "pass one of them or make them agree"
            )
        return names
    if num_classes is None or int(num_classes) < 2:
        raise UserError(f"num_classes must be at least 2, got {num_classes}")
    num_classes = int(num_classes)
    if num_classes == len(DEFAULT_CLASS_NAMES):
        return list(DEFAULT_CLASS_NAMES)
    return [f"class_{i}" for i in range(num_classes)]


def _normalization_layer(normalization):
    try:
        mean, variance = normalization
        mean = np.asarray(mean, dtype="float32")
        variance = np.asarray(variance, dtype="float32")
    except (TypeError, ValueError):
        raise UserError(
            "normalization must be None or a (mean, variance) pair of arrays of shape (40,)"
        ) from None
    expected = (INPUT_SHAPE[1],)
    if mean.shape != expected or variance.shape != expected:
        raise UserError(
            f"normalization mean and variance must have shape {expected}, got {mean.shape} and "
            f"{variance.shape}; compute them per filter over the training segments"
        )
    if not (np.all(np.isfinite(mean)) and np.all(np.isfinite(variance)) and np.all(variance >= 0)):
        raise UserError("normalization mean must be finite and variance finite and >= 0")
    return keras.layers.Normalization(axis=-1, mean=mean, variance=variance, name="normalization")


def build_model(  # noqa: PLR0913 (each is one documented property of the network)
    variant="cnn_mha",
    num_classes=4,
    heads=4,
    hidden=64,
    class_names=None,
    normalization=None,
    name=None,
    dropout=0.0,
    head_init="fused",
    padding="zero",
    speaker_norm=False,
):
    """Build the DKDFMH network (or its "cnn" ablation) as a functional ``keras.Model``.

    Args:
        variant: ``"cnn_mha"`` (CNN + head-fusion attention, the paper's network) or ``"cnn"``
            (the same stack without attention: conv 5 -> global average pool -> Dense).
        num_classes: number of classes; when ``class_names`` is given it follows them (a
            different value other than the default 4 is an error).
        heads: attention heads (``cnn_mha`` only).
        hidden: channels per head (``cnn_mha`` only).
        class_names: class names, stored in the model's final ``Logits`` layer. Default
            ``["neutral", "happy", "angry", "sad"]`` for 4 classes, else ``class_<i>``.
        normalization: None, or ``(mean, variance)`` arrays of shape (40,): a Normalization
            layer on the 40 filters right after the input, saved with the model.
        name: model name; default ``variant``.
        dropout: dropout rate before the final Dense layer (0: none, the paper's network).
        head_init: ``"fused"`` (Glorot over the head-fusion layer's fused kernel) or
            ``"per_head"`` (Glorot over each head's 1x1 convolution).
        padding: how short utterances were padded for training (``"zero"`` or ``"repeat"``),
            recorded in the ``Logits`` layer so that predict and export pad the same way.
        speaker_norm: whether the features were standardised per speaker for training
            (:mod:`keras_dkd.speaker_norm`), recorded in the ``Logits`` layer for predict.

    Returns:
        A ``keras.Model`` with input ``features`` of shape (None, 197, 40), float32, and raw
        logits of shape (None, num_classes) as output.

    Raises:
        UserError: unknown variant or inconsistent arguments.

    Example:
        >>> model = build_model()
        >>> sum(int(np.prod(w.shape)) for w in model.trainable_weights)
        155636
    """
    if variant not in ARCHITECTURES:
        raise UserError(f"unknown variant {variant!r}; choose one of {', '.join(ARCHITECTURES)}")
    names = _class_names(num_classes, class_names)

    inputs = keras.Input(shape=INPUT_SHAPE, name="features")
    x = inputs
    if normalization is not None:
        x = _normalization_layer(normalization)(x)
    x = ParallelConvBlock(8, name="conv1")(x)
    x = ConvBlock(32, pool=True, name="conv2")(x)
    x = ConvBlock(48, pool=True, name="conv3")(x)
    x = ConvBlock(64, name="conv4")(x)
    x = ConvBlock(80, name="conv5")(x)
    if variant == "cnn_mha":
        x = HeadFusion(heads=heads, hidden=hidden, kernel_init=head_init, name="head_fusion")(x)
    else:
        x = GlobalAveragePool(name="global_pool")(x)
    if dropout:
        x = keras.layers.Dropout(float(dropout), name="dropout")(x)
    x = keras.layers.Dense(len(names), name="dense")(x)
    outputs = Logits(class_names=names, padding=padding, speaker_norm=speaker_norm,
                     name="logits")(x)
    return keras.Model(inputs, outputs, name=name or variant)


def get_class_names(model) -> list[str]:
    """The class names stored in a keras-dkd model's final ``Logits`` layer.

    Args:
        model: a model built by :func:`build_model` (or loaded from its ``.keras`` file).

    Returns:
        The class names, in logit order.

    Raises:
        UserError: the model has no ``Logits`` layer (it was not built by keras-dkd).

    Example:
        >>> get_class_names(build_model(num_classes=3))
        ['class_0', 'class_1', 'class_2']
    """
    layer = _logits_layer(model)
    if layer is not None:
        return list(layer.class_names)
    raise UserError(
        f"model {getattr(model, 'name', model)!r} has no Logits layer holding class names; "
        "use a model built or trained by keras-dkd"
    )


def get_padding(model) -> str:
    """How a keras-dkd model's training padded utterances shorter than one segment
    (``"zero"`` for models saved before it was recorded).

    Example:
        >>> get_padding(build_model(padding="repeat"))
        'repeat'
    """
    return getattr(_logits_layer(model), "padding", "zero")


def get_speaker_norm(model) -> bool:
    """Whether a keras-dkd model was trained on speaker-normalised features (False for models
    saved before it was recorded).

    Example:
        >>> get_speaker_norm(build_model(speaker_norm=True))
        True
    """
    return bool(getattr(_logits_layer(model), "speaker_norm", False))


def _logits_layer(model):
    """A keras-dkd model's final ``Logits`` layer (None if it has none)."""
    for layer in reversed(getattr(model, "layers", [])):
        if isinstance(layer, Logits):
            return layer
    return None


def recommended_jit_compile(backend=None):
    """The ``jit_compile`` value to pass to ``compile`` for these models on a backend.

    On CPU these are the fastest settings measured with ``benchmarks/throughput.py``, and they
    are what Keras' default ``"auto"`` resolves to: JAX True (an un-jitted JAX step is many
    times slower); PyTorch False (eager; ``torch.compile`` recompiled around Keras' layers and
    ran slower); TensorFlow ``"auto"``, i.e. no XLA on a CPU-only machine (XLA's CPU
    convolutions, above all their weight gradients, were slower than TensorFlow's oneDNN
    kernels) and XLA when a GPU is visible (not measured here).

    Args:
        backend: a Keras backend name; defaults to the current one.

    Returns:
        True, False or ``"auto"``.

    Example:
        >>> recommended_jit_compile("torch")
        False
    """
    backend = backend or keras.backend.backend()
    return _RECOMMENDED_JIT_COMPILE.get(backend, "auto")
