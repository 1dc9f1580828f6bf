"""Losses on logits: KD, TCKD, NCKD and DKD, and the (label-smoothed) cross-entropy.

Decoupled Knowledge Distillation (Zhao et al., CVPR 2022) splits the classical KD loss
(Hinton et al., 2015) into a *target-class* term and a *non-target-class* term. With
``p = softmax(z / T)`` for the teacher (``t``) and the student (``s``) and ``y`` the label:

* ``KD   = T² · KL(p_t ‖ p_s)``
* ``TCKD = T² · KL(b_t ‖ b_s)`` where ``b = [p_y, 1 − p_y]`` (binary target / rest split);
* ``NCKD = T² · KL(p̃_t ‖ p̃_s)`` where ``p̃`` is the softmax over the non-target classes only
  (the target logit is masked out before the softmax);
* ``DKD  = α · TCKD + β · NCKD``.

Per sample, exactly: ``KD = TCKD + (1 − p_t,y) · NCKD``.

All functions are pure ``keras.ops`` code, so they run on TensorFlow, PyTorch and JAX. They work
in log space throughout (log-softmax with the maximum subtracted, log-sum-exp for the non-target
mass ``log(1 − p_y)``), so they give finite values and finite gradients for logits up to ±1e4 and
for a teacher that is certain of its class (``p_t,y == 1`` in floating point): no ``log(0)`` is
ever taken. Half-precision logits are computed in float32; float64 stays float64.

The cross-entropy (:func:`cross_entropy`, and :class:`SparseCrossEntropy` to compile a model
with) takes integer labels and an optional label smoothing ``ε``: the target is
``(1 − ε) · one_hot(y) + ε / K`` over ``K`` classes, as in Keras' ``CategoricalCrossentropy``
and PyTorch's ``cross_entropy(label_smoothing=ε)``.

Each loss returns the batch mean of the per-sample loss (``reduction="mean"``, the default), or
the per-sample values with ``reduction="none"``.
"""

from __future__ import annotations

import keras
from keras import ops

__all__ = ["kd_loss", "tckd_loss", "nckd_loss", "dkd_loss", "dkd_terms", "cross_entropy",
           "SparseCrossEntropy"]

# Subtracted from the (temperature-scaled) target logit to mask it out of the non-target softmax.
# Any finite value far beyond the float32 exp() range relative to the largest logit works: after
# the subtraction the target's weight exp(z_y - BIG - max) is exactly 0, and its gradient is 0
# too (no inf, so no inf · 0 = NaN). 1e9 keeps that true for logits up to ~±1e8.
_MASK = 1e9


def _prepare(logits):
    """Return logits as a float tensor of at least float32 precision."""
    logits = ops.convert_to_tensor(logits)
    dtype = keras.backend.standardize_dtype(logits.dtype)
    if dtype not in ("float32", "float64"):
        logits = ops.cast(logits, "float32")
    return logits


def _reduce(values, reduction):
    if reduction == "mean":
        return ops.mean(values)
    if reduction == "none":
        return values
    raise ValueError(f"reduction must be 'mean' or 'none', got {reduction!r}")


def _log_softmax(z):
    """Log-softmax on the last axis, with the (constant) maximum subtracted first.

    Returns ``(log_p, log_sum_exp)``; ``log_sum_exp`` keeps the last axis (size 1).
    Subtracting the maximum first keeps ``log_p`` accurate to O(ulp(1)) for the classes that
    carry probability, however large the logits are.
    """
    peak = ops.stop_gradient(ops.max(z, axis=-1, keepdims=True))
    shifted = z - peak
    log_norm = ops.log(ops.sum(ops.exp(shifted), axis=-1, keepdims=True))
    return shifted - log_norm, peak + log_norm


def _split_log_probs(logits, one_hot, temperature):
    """Log-probabilities of the full, binary and non-target distributions at ``temperature``.

    Returns a dict with (shapes ``(B, C)`` or ``(B,)``):
        ``log_p``: log softmax(z / T);
        ``log_p_target``: log p_y;
        ``log_rest``: log(1 − p_y), as log-sum-exp over the non-target classes minus the
            log-sum-exp over all classes (never log(0), even when p_y rounds to 1);
        ``log_p_tilde``: log softmax over the non-target classes (the target entry is a huge
            negative number whose probability is exactly 0).
    """
    z = logits / temperature
    shifted = z - ops.stop_gradient(ops.max(z, axis=-1, keepdims=True))
    log_p, log_norm = _log_softmax(shifted)
    # Non-target softmax: mask the target out and renormalise with the non-target maximum, so
    # that the non-target mass cannot underflow to 0 when the target dominates.
    log_p_tilde, log_rest_mass = _log_softmax(shifted - _MASK * one_hot)
    log_rest = ops.squeeze(log_rest_mass - log_norm, axis=-1)
    log_p_target = ops.sum(log_p * one_hot, axis=-1)
    return {
        "log_p": log_p,
        "log_p_target": log_p_target,
        "log_rest": log_rest,
        "log_p_tilde": log_p_tilde,
    }


def _one_hot(labels, num_classes, dtype):
    labels = ops.reshape(ops.cast(ops.convert_to_tensor(labels), "int32"), (-1,))
    return ops.one_hot(labels, num_classes, dtype=dtype)


def _kl(log_p_teacher, log_p_student):
    """Per-sample KL(p_t ‖ p_s) from log-probabilities on the last axis (0 · finite = 0)."""
    return ops.sum(ops.exp(log_p_teacher) * (log_p_teacher - log_p_student), axis=-1)


def dkd_terms(student_logits, teacher_logits, labels, temperature=4.0):
    """Per-sample TCKD and NCKD (both already multiplied by T²), computed together.

    This is the fused form the :class:`keras_dkd.distiller.Distiller` uses: one pass of
    log-softmaxes gives both terms.

    Args:
        student_logits: float tensor ``(batch, classes)``.
        teacher_logits: float tensor ``(batch, classes)``.
        labels: integer class ids ``(batch,)`` (or ``(batch, 1)``).
        temperature: softmax temperature ``T > 0``.

    Returns:
        ``(tckd, nckd)``: two float tensors of shape ``(batch,)``.

    Example:
        >>> import numpy as np
        >>> s = np.array([[2.0, 0.5, -1.0, 0.0]], "float32")
        >>> t = np.array([[3.0, 0.0, -2.0, 1.0]], "float32")
        >>> tckd, nckd = dkd_terms(s, t, np.array([0]), temperature=4.0)
    """
    student_logits = _prepare(student_logits)
    teacher_logits = ops.cast(_prepare(teacher_logits), student_logits.dtype)
    one_hot = _one_hot(labels, ops.shape(student_logits)[-1], student_logits.dtype)
    s = _split_log_probs(student_logits, one_hot, temperature)
    t = _split_log_probs(teacher_logits, one_hot, temperature)
    t2 = temperature * temperature
    tckd = ops.exp(t["log_p_target"]) * (t["log_p_target"] - s["log_p_target"]) + ops.exp(
        t["log_rest"]
    ) * (t["log_rest"] - s["log_rest"])
    nckd = _kl(t["log_p_tilde"], s["log_p_tilde"])
    return t2 * tckd, t2 * nckd


def kd_loss(student_logits, teacher_logits, temperature=4.0, reduction="mean"):
    """Classical knowledge distillation loss (Hinton et al., 2015).

    ``KD = T² · KL(softmax(z_t / T) ‖ softmax(z_s / T))``, per sample, then averaged.

    Args:
        student_logits: float tensor ``(batch, classes)``.
        teacher_logits: float tensor ``(batch, classes)``.
        temperature: softmax temperature ``T > 0``.
        reduction: ``"mean"`` (batch mean, a scalar) or ``"none"`` (shape ``(batch,)``).

    Returns:
        The loss: a scalar, or per-sample values with ``reduction="none"``.

    Example:
        >>> import numpy as np
        >>> s = np.array([[2.0, 0.5, -1.0, 0.0]], "float32")
        >>> t = np.array([[3.0, 0.0, -2.0, 1.0]], "float32")
        >>> round(float(kd_loss(s, t, temperature=4.0)), 4)
        0.3372
    """
    student_logits = _prepare(student_logits)
    teacher_logits = ops.cast(_prepare(teacher_logits), student_logits.dtype)
    log_ps, _ = _log_softmax(student_logits / temperature)
    log_pt, _ = _log_softmax(teacher_logits / temperature)
    return _reduce(temperature * temperature * _kl(log_pt, log_ps), reduction)


def tckd_loss(student_logits, teacher_logits, labels, temperature=4.0, reduction="mean"):
    """Target-class knowledge distillation (the binary part of DKD).

    ``TCKD = T² · KL(b_t ‖ b_s)`` with ``b = [p_y, 1 − p_y]`` and ``p = softmax(z / T)``.
    ``log(1 − p_y)`` is computed as log-sum-exp over the non-target logits minus the log
    normaliser, so a confident teacher (``p_y`` = 1 in floating point) gives no ``log(0)``.

    Args:
        student_logits: float tensor ``(batch, classes)``.
        teacher_logits: float tensor ``(batch, classes)``.
        labels: integer class ids ``(batch,)``.
        temperature: softmax temperature ``T > 0``.
        reduction: ``"mean"`` (batch mean, a scalar) or ``"none"`` (shape ``(batch,)``).

    Returns:
        The loss: a scalar, or per-sample values with ``reduction="none"``.

    Example:
        >>> import numpy as np
        >>> s = np.array([[2.0, 0.5, -1.0, 0.0]], "float32")
        >>> t = np.array([[3.0, 0.0, -2.0, 1.0]], "float32")
        >>> loss = tckd_loss(s, t, np.array([0]), temperature=4.0)
    """
    tckd, _ = dkd_terms(student_logits, teacher_logits, labels, temperature)
    return _reduce(tckd, reduction)


def nckd_loss(student_logits, teacher_logits, labels, temperature=4.0, reduction="mean"):
    """Non-target-class knowledge distillation (the "dark knowledge" part of DKD).

    ``NCKD = T² · KL(p̃_t ‖ p̃_s)`` where ``p̃ = softmax`` over the non-target classes only: the
    target logit is pushed down by a huge constant before the softmax, so its probability is
    exactly 0 and its gradient is 0.

    Args:
        student_logits: float tensor ``(batch, classes)``.
        teacher_logits: float tensor ``(batch, classes)``.
        labels: integer class ids ``(batch,)``.
        temperature: softmax temperature ``T > 0``.
        reduction: ``"mean"`` (batch mean, a scalar) or ``"none"`` (shape ``(batch,)``).

    Returns:
        The loss: a scalar, or per-sample values with ``reduction="none"``.

    Example:
        >>> import numpy as np
        >>> s = np.array([[2.0, 0.5, -1.0, 0.0]], "float32")
        >>> t = np.array([[3.0, 0.0, -2.0, 1.0]], "float32")
        >>> loss = nckd_loss(s, t, np.array([0]), temperature=4.0)
    """
    _, nckd = dkd_terms(student_logits, teacher_logits, labels, temperature)
    return _reduce(nckd, reduction)


def dkd_loss(
    student_logits,
    teacher_logits,
    labels,
    alpha=1.0,
    beta=8.0,
    temperature=4.0,
    reduction="mean",
):
    """Decoupled knowledge distillation: ``DKD = α · TCKD + β · NCKD``.

    Defaults follow the DKDFMH paper (α = 1, β = 8, T = 4). See :func:`tckd_loss` and
    :func:`nckd_loss` for the two terms.

    Args:
        student_logits: float tensor ``(batch, classes)``.
        teacher_logits: float tensor ``(batch, classes)``.
        labels: integer class ids ``(batch,)``.
        alpha: weight of TCKD.
        beta: weight of NCKD.
        temperature: softmax temperature ``T > 0``.
        reduction: ``"mean"`` (batch mean, a scalar) or ``"none"`` (shape ``(batch,)``).

    Returns:
        The loss: a scalar, or per-sample values with ``reduction="none"``.

    Example:
        >>> import numpy as np
        >>> s = np.array([[2.0, 0.5, -1.0, 0.0]], "float32")
        >>> t = np.array([[3.0, 0.0, -2.0, 1.0]], "float32")
        >>> loss = dkd_loss(s, t, np.array([0]), alpha=1.0, beta=8.0, temperature=4.0)
    """
    tckd, nckd = dkd_terms(student_logits, teacher_logits, labels, temperature)
    return _reduce(alpha * tckd + beta * nckd, reduction)


def cross_entropy(logits, labels, label_smoothing=0.0, reduction="mean"):
    """Cross-entropy of integer labels against logits, with optional label smoothing.

    With ``ε = label_smoothing`` and ``K`` classes the target distribution is
    ``(1 − ε) · one_hot(y) + ε / K``, so per sample
    ``CE = (1 − ε) · (−log p_y) + ε · mean_k(−log p_k)``. ``ε = 0`` is the plain sparse
    cross-entropy.

    Args:
        logits: float tensor ``(batch, classes)``.
        labels: integer class ids ``(batch,)`` (or ``(batch, 1)``).
        label_smoothing: ``ε`` in ``[0, 1)``.
        reduction: ``"mean"`` (batch mean, a scalar) or ``"none"`` (shape ``(batch,)``).

    Returns:
        The loss: a scalar, or per-sample values with ``reduction="none"``.

    Example:
        >>> import numpy as np
        >>> z = np.array([[2.0, 0.5, -1.0, 0.0]], "float32")
        >>> loss = cross_entropy(z, np.array([0]), label_smoothing=0.1)
    """
    if not 0.0 <= float(label_smoothing) < 1.0:
        raise ValueError(f"label_smoothing must be in [0, 1), got {label_smoothing}")
    logits = _prepare(logits)
    log_p, _ = _log_softmax(logits)
    one_hot = _one_hot(labels, ops.shape(logits)[-1], logits.dtype)
    nll = -ops.sum(one_hot * log_p, axis=-1)
    if label_smoothing:
        nll = (1.0 - label_smoothing) * nll - label_smoothing * ops.mean(log_p, axis=-1)
    return _reduce(nll, reduction)


@keras.saving.register_keras_serializable(package="keras_dkd")
class SparseCrossEntropy(keras.losses.Loss):
    """:func:`cross_entropy` as a Keras loss (integer labels, logits), for ``Model.compile``.

    Keras' ``SparseCategoricalCrossentropy`` has no label smoothing (only the one-hot
    ``CategoricalCrossentropy`` has); this one takes integer labels and smooths them.

    Args:
        label_smoothing: ``ε`` in ``[0, 1)`` (0: the plain cross-entropy).
        name: the loss' name.

    Example:
        >>> loss = SparseCrossEntropy(label_smoothing=0.1)
        >>> loss.get_config()["label_smoothing"]
        0.1
    """

    def __init__(self, label_smoothing=0.0, name="sparse_cross_entropy", **kwargs):
        super().__init__(name=name, **kwargs)
        if not 0.0 <= float(label_smoothing) < 1.0:
            raise ValueError(f"label_smoothing must be in [0, 1), got {label_smoothing}")
        self.label_smoothing = float(label_smoothing)

    def call(self, y_true, y_pred):
        return cross_entropy(y_pred, y_true, self.label_smoothing, reduction="none")

    def get_config(self):
        return {**super().get_config(), "label_smoothing": self.label_smoothing}
