"""keras_dkd.losses against a float64 NumPy reference written here from the formulas."""

from __future__ import annotations

import contextlib

import keras
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from keras_dkd import losses

# ----------------------------------------------------------------------------- reference
# Straight from the definitions (REFERENCE.md, "Losses"), in float64 and in log space:
#   p = softmax(z / T); KD = T² KL(p_t ‖ p_s)
#   b = [p_y, 1 - p_y]; TCKD = T² KL(b_t ‖ b_s)
#   p̃ = softmax over the classes c != y; NCKD = T² KL(p̃_t ‖ p̃_s)
# Log space is the only way to evaluate the definitions for logits of ±1e4: p_c underflows to
# exactly 0 even in float64, so log p_c must come from log-sum-exp, never from log(p_c).


def _lse(z, where=None):
    """log sum_c exp(z_c) over the last axis (restricted to ``where``)."""
    if where is not None:
        z = np.where(where, z, -np.inf)
    peak = np.max(z, axis=-1, keepdims=True)
    return peak[..., 0] + np.log(np.sum(np.exp(z - peak), axis=-1))


def reference(student, teacher, labels, temperature):
    """Per-sample (kd, tckd, nckd, teacher p_y, teacher 1 - p_y) in float64."""
    zs = np.asarray(student, np.float64) / temperature
    zt = np.asarray(teacher, np.float64) / temperature
    labels = np.asarray(labels)
    n, c = zs.shape
    target = np.arange(c)[None, :] == labels[:, None]
    t2 = temperature**2

    def log_p(z):
        return z - _lse(z)[:, None]

    def kl(log_pt, log_ps, where=None):
        if where is not None:  # 0 · log 0 = 0 outside the support
            log_pt = np.where(where, log_pt, -np.inf)
            log_ps = np.where(where, log_ps, 0.0)
        diff = np.where(np.isneginf(log_pt), 0.0, log_pt - log_ps)
        return np.sum(np.exp(log_pt) * diff, axis=-1)

    kd = t2 * kl(log_p(zt), log_p(zs))

    def binary(z):  # log [p_y, 1 - p_y]
        log_y = z[target] - _lse(z)
        log_rest = _lse(z, where=~target) - _lse(z)
        return np.stack([log_y, log_rest], axis=-1)

    tckd = t2 * kl(binary(zt), binary(zs))

    def log_p_tilde(z):  # softmax over the non-target classes
        return z - _lse(z, where=~target)[:, None]

    nckd = t2 * kl(log_p_tilde(zt), log_p_tilde(zs), where=~target)
    p_target = np.exp(zt[target] - _lse(zt))
    rest = np.exp(_lse(zt, where=~target) - _lse(zt))
    return kd, tckd, nckd, p_target, rest


def _np(x):
    return keras.ops.convert_to_numpy(x)


def _close(actual, expected, rtol=1e-5, atol=1e-5):
    np.testing.assert_allclose(np.asarray(actual, np.float64), expected, rtol=rtol, atol=atol)


def _random_case(seed, n=32, c=4, scale=3.0):
    rng = np.random.default_rng(seed)
    s = (rng.standard_normal((n, c)) * scale).astype("float32")
    t = (rng.standard_normal((n, c)) * scale).astype("float32")
    y = rng.integers(0, c, n)
    return s, t, y


def _extreme_case(c=4):
    """Logits of ±1e4: a certain teacher, a certain (and wrong) student, ties, mixtures."""
    big = 1e4
    rows_s, rows_t, labels = [], [], []
    for y in range(c):
        for variant in range(6):
            t = np.full(c, -big)
            s = np.full(c, -big)
            t[y] = big  # teacher certain of the target: p_t,y == 1 exactly
            if variant == 0:
                s[(y + 1) % c] = big  # student certain of a wrong class
            elif variant == 1:
                s[:] = 0.0
            elif variant == 2:
                s[y] = big
                s[(y + 2) % c] = big - 3.0  # student almost right, second guess close
            elif variant == 3:
                t[(y + 1) % c] = big - 1.0  # teacher torn between two classes
                s[:] = np.linspace(-big, big, c)
            elif variant == 4:
                t[:] = big  # teacher uniform at ±1e4 offsets
                s[y] = -big
                s[(y + 1) % c] = big
            else:
                t[y] = -big  # teacher certain the target is wrong
                t[(y + 3) % c] = big
                s[:] = 7.5
            rows_s.append(s)
            rows_t.append(t)
            labels.append(y)
    return np.array(rows_s, "float32"), np.array(rows_t, "float32"), np.array(labels)


def _all_losses(s, t, y, temperature, reduction="none"):
    return (
        losses.kd_loss(s, t, temperature, reduction=reduction),
        losses.tckd_loss(s, t, y, temperature, reduction=reduction),
        losses.nckd_loss(s, t, y, temperature, reduction=reduction),
    )


# ----------------------------------------------------------------------------- values


@pytest.mark.parametrize(
    "seed,classes,scale,temperature",
    [(0, 4, 3.0, 4.0), (1, 7, 1.0, 1.0), (2, 4, 10.0, 2.5), (3, 2, 5.0, 0.7), (4, 5, 30.0, 8.0)],
)
def test_losses_match_reference_random(seed, classes, scale, temperature):
    s, t, y = _random_case(seed, c=classes, scale=scale)
    kd, tckd, nckd, _, _ = reference(s, t, y, temperature)
    got = _all_losses(s, t, y, temperature)
    for value, expected in zip(got, (kd, tckd, nckd), strict=True):
        _close(_np(value), expected)
    # batch means and the DKD combination
    _close(_np(losses.kd_loss(s, t, temperature)), kd.mean())
    _close(_np(losses.tckd_loss(s, t, y, temperature)), tckd.mean())
    _close(_np(losses.nckd_loss(s, t, y, temperature)), nckd.mean())
    _close(
        _np(losses.dkd_loss(s, t, y, alpha=0.5, beta=8.0, temperature=temperature)),
        (0.5 * tckd + 8.0 * nckd).mean(),
    )
    _close(_np(losses.dkd_loss(s, t, y, temperature=temperature)), (tckd + 8.0 * nckd).mean())


@pytest.mark.parametrize("temperature", [1.0, 2.0, 4.0])
@pytest.mark.parametrize("classes", [4, 7])
def test_losses_match_reference_extreme(temperature, classes):
    s, t, y = _extreme_case(classes)
    kd, tckd, nckd, p_target, _ = reference(s, t, y, temperature)
    assert np.all(np.isfinite([kd, tckd, nckd]))
    assert np.any(p_target == 1.0)  # the reference case really has a certain teacher
    for value, expected in zip(_all_losses(s, t, y, temperature), (kd, tckd, nckd), strict=True):
        value = _np(value)
        assert np.all(np.isfinite(value))
        _close(value, expected)
    dkd = _np(losses.dkd_loss(s, t, y, temperature=temperature, reduction="none"))
    _close(dkd, tckd + 8.0 * nckd)


def test_identical_logits_give_zero():
    s, _, y = _random_case(5)
    for value in _all_losses(s, s, y, 4.0):
        np.testing.assert_allclose(_np(value), 0.0, atol=1e-6)


def test_labels_of_shape_batch_by_one_and_int64():
    s, t, y = _random_case(6)
    a = _np(losses.dkd_loss(s, t, y.astype("int64")[:, None]))
    b = _np(losses.dkd_loss(s, t, y.astype("int32")))
    np.testing.assert_allclose(a, b, rtol=1e-6)


def test_half_precision_logits_are_computed_in_float32():
    s, t, y = _random_case(7)
    value = losses.dkd_loss(s.astype("float16"), t.astype("float16"), y)
    assert keras.backend.standardize_dtype(value.dtype) == "float32"
    _, tckd, nckd, _, _ = reference(s.astype("float16"), t.astype("float16"), y, 4.0)
    _close(_np(value), (tckd + 8 * nckd).mean())


def test_bad_reduction_raises():
    s, t, _ = _random_case(8)
    with pytest.raises(ValueError, match="reduction"):
        losses.kd_loss(s, t, 4.0, reduction="sum")


# ----------------------------------------------------------------------------- identity

_element = st.one_of(st.floats(-30, 30, width=32), st.sampled_from([-1e4, -1e3, 0.0, 1e3, 1e4]))


@st.composite
def _logits(draw):
    """(student, teacher, labels): float32 logits, moderate or as large as ±1e4.

    Few distinct shapes: JAX compiles every eager op once per shape.
    """
    c = draw(st.sampled_from([2, 4, 7]))
    n = 8
    s = draw(hnp.arrays(np.float32, (n, c), elements=_element))
    t = draw(hnp.arrays(np.float32, (n, c), elements=_element))
    y = draw(hnp.arrays(np.int64, (n,), elements=st.integers(0, c - 1)))
    return s, t, y


@settings(max_examples=60, deadline=None, database=None, derandomize=True)
@given(case=_logits(), temperature=st.sampled_from([0.5, 1.0, 2.0, 3.0, 4.0, 8.0]))
def test_kd_equals_tckd_plus_weighted_nckd_per_sample(case, temperature):
    """KD = TCKD + (1 − p_t,y) · NCKD, exactly, for every sample."""
    s, t, y = case
    kd, tckd, nckd = (_np(v).astype(np.float64) for v in _all_losses(s, t, y, temperature))
    rest = reference(s, t, y, temperature)[4]  # 1 - p_t,y of the teacher
    # float32 terms: compare relative to the size of the terms involved
    scale = 1.0 + np.abs(kd) + np.abs(tckd) + np.abs(nckd)
    assert np.all(np.isfinite(kd) & np.isfinite(tckd) & np.isfinite(nckd))
    assert np.all(np.abs(kd - (tckd + rest * nckd)) <= 2e-5 * scale)
    assert np.all(kd >= -1e-5 * scale) and np.all(tckd >= -1e-5 * scale)
    assert np.all(nckd >= -1e-5 * scale)


# ----------------------------------------------------------------------------- gradients


@contextlib.contextmanager
def _float64():
    """Let the backend compute in float64 (JAX needs x64 switched on, locally)."""
    if keras.backend.backend() == "jax":
        import jax

        with jax.enable_x64(True):
            yield
    else:
        yield


def _grad(fn, s):
    """d fn(s) / d s with the backend's own autodiff (tests only)."""
    backend = keras.backend.backend()
    if backend == "tensorflow":
        import tensorflow as tf

        s = tf.constant(s)
        with tf.GradientTape() as tape:
            tape.watch(s)
            value = fn(s)
        return tape.gradient(value, s).numpy()
    if backend == "torch":
        import torch

        s = torch.tensor(s, requires_grad=True)
        fn(s).backward()
        return s.grad.numpy()
    if backend == "jax":
        import jax
        import jax.numpy as jnp

        return np.asarray(jax.grad(fn)(jnp.asarray(s)))
    pytest.skip(f"no autodiff for backend {backend}")


def _reference_losses(temperature, t, y):
    def kd(s):
        return reference(s, t, y, temperature)[0].mean()

    def tckd(s):
        return reference(s, t, y, temperature)[1].mean()

    def nckd(s):
        return reference(s, t, y, temperature)[2].mean()

    def dkd(s):
        _, a, b, _, _ = reference(s, t, y, temperature)
        return (a + 8.0 * b).mean()

    return {"kd": kd, "tckd": tckd, "nckd": nckd, "dkd": dkd}


def _keras_losses(temperature, t, y):
    return {
        "kd": lambda s: losses.kd_loss(s, t, temperature),
        "tckd": lambda s: losses.tckd_loss(s, t, y, temperature),
        "nckd": lambda s: losses.nckd_loss(s, t, y, temperature),
        "dkd": lambda s: losses.dkd_loss(s, t, y, temperature=temperature),
    }


def _finite_differences(fn, s, eps=1e-6):
    grad = np.zeros_like(s)
    for index in np.ndindex(*s.shape):
        up, down = s.copy(), s.copy()
        up[index] += eps
        down[index] -= eps
        grad[index] = (fn(up) - fn(down)) / (2 * eps)
    return grad


@pytest.mark.parametrize("name", ["kd", "tckd", "nckd", "dkd"])
def test_gradient_matches_finite_differences_float64(name):
    rng = np.random.default_rng(11)
    s = rng.standard_normal((6, 4)) * 3.0
    t = rng.standard_normal((6, 4)) * 3.0
    t[0] = [40.0, -40.0, 0.0, 1.0]  # a confident teacher row
    y = rng.integers(0, 4, 6)
    temperature = 2.0
    expected = _finite_differences(_reference_losses(temperature, t, y)[name], s)
    with _float64():
        t64 = keras.ops.convert_to_tensor(t, dtype="float64")
        fn = _keras_losses(temperature, t64, y)[name]
        got = _grad(fn, s)
    assert got.dtype == np.float64
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize("name", ["kd", "tckd", "nckd", "dkd"])
def test_gradient_finite_for_extreme_logits(name):
    s, t, y = _extreme_case(4)
    for temperature in (1.0, 4.0):
        got = _grad(_keras_losses(temperature, t, y)[name], s)
        assert np.all(np.isfinite(got)), name
        # each T²·KL term has |∂/∂z_s| <= T per entry (a difference of two distributions,
        # times T); DKD weighs them 1 + 8; the losses are batch means
        weight = 9.0 if name == "dkd" else 1.0
        assert np.max(np.abs(got)) <= weight * temperature / len(s) + 1e-6


# ----------------------------------------------------------------------------- cross-entropy


def _reference_cross_entropy(z, y, eps):
    """Per-sample CE against the target (1 - eps) one_hot(y) + eps / K, float64."""
    z = np.asarray(z, np.float64)
    log_p = z - _lse(z)[:, None]
    target = np.full(z.shape, eps / z.shape[-1])
    target[np.arange(len(y)), y] += 1.0 - eps
    return -(target * log_p).sum(-1)


@pytest.mark.parametrize("eps", [0.0, 0.1, 0.5])
def test_cross_entropy_matches_reference_and_keras(eps):
    s, _, y = _random_case(11, scale=5.0)
    _close(_np(losses.cross_entropy(s, y, eps, reduction="none")),
           _reference_cross_entropy(s, y, eps))
    _close(_np(losses.cross_entropy(s, y, eps)), _reference_cross_entropy(s, y, eps).mean())
    # Keras' one-hot CategoricalCrossentropy defines label smoothing the same way
    keras_ce = keras.losses.CategoricalCrossentropy(from_logits=True, label_smoothing=eps)
    _close(_np(losses.SparseCrossEntropy(eps)(y, s)),
           _np(keras_ce(np.eye(s.shape[-1])[y].astype("float32"), s)))


def test_cross_entropy_is_finite_for_extreme_logits_and_checks_its_arguments():
    s, _, y = _extreme_case(4)
    assert np.all(np.isfinite(_np(losses.cross_entropy(s, y, 0.1, reduction="none"))))
    with pytest.raises(ValueError, match="label_smoothing"):
        losses.cross_entropy(s, y, 1.0)
    with pytest.raises(ValueError, match="label_smoothing"):
        losses.SparseCrossEntropy(-0.1)


def test_sparse_cross_entropy_compiles_saves_and_reloads(tmp_path):
    from keras_dkd.io import load_model, save_model
    from keras_dkd.models import build_model

    model = build_model(variant="cnn")
    model.compile(optimizer="adam", loss=losses.SparseCrossEntropy(0.2))
    rng = np.random.default_rng(0)
    x = rng.standard_normal((4, 197, 40)).astype("float32")
    y = np.array([0, 1, 2, 3])
    model.fit(x, y, epochs=1, verbose=0)
    reloaded = load_model(save_model(model, tmp_path / "m.keras"))
    assert isinstance(reloaded.loss, losses.SparseCrossEntropy)
    assert reloaded.loss.label_smoothing == pytest.approx(0.2)
