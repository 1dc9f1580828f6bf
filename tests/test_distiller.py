"""The Distiller: frozen teacher, warm-up schedule, logs, saving, resuming, cross-backend steps."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import zipfile

import keras
import numpy as np
import pytest

from keras_dkd.distiller import MODES, Distiller
from keras_dkd.errors import UserError

FRAMES, FILTERS, CLASSES = 12, 5, 4


def tiny_model(seed, name=None):
    """A small conv net with BatchNormalization (logits out), same shape of API as build_model."""
    keras.utils.set_random_seed(seed)
    inputs = keras.Input((FRAMES, FILTERS), name="features")
    h = keras.layers.Conv1D(6, 3, padding="same", use_bias=False)(inputs)
    h = keras.layers.BatchNormalization()(h)
    h = keras.layers.ReLU()(h)
    h = keras.layers.GlobalAveragePooling1D()(h)
    outputs = keras.layers.Dense(CLASSES)(h)
    return keras.Model(inputs, outputs, name=name)


def randomize(model, seed):
    """Random weights everywhere, BatchNorm moving statistics included (variances > 0)."""
    rng = np.random.default_rng(seed)
    weights = []
    for v in model.weights:
        w = rng.standard_normal(v.shape).astype("float32")
        if "variance" in v.path:
            w = np.abs(w) + 0.5
        weights.append(w)
    model.set_weights(weights)
    return model


def batch(n=16, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, FRAMES, FILTERS)).astype("float32")
    y = rng.integers(0, CLASSES, n).astype("int32")
    return x, y


def snapshot(variables):
    return {v.path: keras.ops.convert_to_numpy(v.value).copy() for v in variables}


def make_distiller(mode="dkd", warmup_epochs=20, teacher=True, **kwargs):
    t = randomize(tiny_model(0, name="teacher"), 1) if teacher else None
    s = tiny_model(2, name="student")
    return Distiller(t, s, mode=mode, warmup_epochs=warmup_epochs, **kwargs)


# ----------------------------------------------------------------------------- training


def test_fit_trains_student_and_leaves_teacher_bit_identical():
    """The DKDFMH network itself (keras_dkd.models): a few DKD steps on batches of 4."""
    models = pytest.importorskip("keras_dkd.models")
    teacher = models.build_model(name="teacher")
    student = models.build_model(name="student")
    distiller = Distiller(teacher, student, warmup_epochs=0)
    distiller.compile(optimizer=keras.optimizers.Adam(1e-3))
    assert not teacher.trainable
    assert {id(v) for v in distiller.trainable_variables} == {
        id(v) for v in student.trainable_variables
    }
    moving = [v.path for v in teacher.non_trainable_variables]
    assert any("moving_mean" in p for p in moving) and any("moving_variance" in p for p in moving)

    teacher_before = snapshot(teacher.variables)
    student_before = snapshot(student.variables)
    rng = np.random.default_rng(0)
    x = rng.standard_normal((8, 197, 40)).astype("float32")
    y = np.arange(8, dtype="int32") % CLASSES
    history = distiller.fit(x, y, batch_size=4, epochs=1, verbose=0).history
    assert np.isfinite(history["loss"][0]) and history["warmup"] == [1.0]

    teacher_after = snapshot(teacher.variables)
    assert teacher_after.keys() == teacher_before.keys()
    for path, value in teacher_before.items():
        assert np.array_equal(value, teacher_after[path]), f"teacher variable {path} moved"
    student_after = snapshot(student.variables)
    for v in student.trainable_variables:
        # (a convolution's bias right before BatchNorm gets an exactly zero gradient)
        if not v.path.split("/")[-1].startswith("bias") or "conv" not in v.path:
            assert not np.array_equal(student_before[v.path], student_after[v.path]), v.path
    # the student's own BatchNorm statistics do move (training=True), unlike the teacher's
    for v in student.non_trainable_variables:
        assert not np.array_equal(student_before[v.path], student_after[v.path]), v.path
    if keras.backend.backend() == "torch":
        assert all(v.value.grad is None for v in teacher.variables)


def _objective(h, epoch, mode="dkd", alpha=1.0, beta=8.0, ce_weight=1.0):
    terms = {
        "dkd": lambda: alpha * h["tckd"][epoch] + beta * h["nckd"][epoch],
        "tckd": lambda: alpha * h["tckd"][epoch],
        "nckd": lambda: beta * h["nckd"][epoch],
        "kd": lambda: alpha * h["kd"][epoch],
        "ce": lambda: 0.0,
    }
    return ce_weight * h["ce"][epoch] + h["warmup"][epoch] * terms[mode]()


@pytest.mark.parametrize("jit_compile", ["auto", True])
def test_warmup_weight_follows_epochs_inside_compiled_steps(jit_compile):
    backend = keras.backend.backend()
    if jit_compile is True and backend == "torch":
        pytest.skip("torch.compile takes about a minute to compile here; checked by hand")
    if jit_compile is True and backend == "jax":
        pytest.skip("on JAX 'auto' already means jit")
    distiller = make_distiller(warmup_epochs=20)
    distiller.compile(optimizer=keras.optimizers.Adam(1e-3), jit_compile=jit_compile)
    x, y = batch()
    history = distiller.fit(x, y, batch_size=8, epochs=4, verbose=0).history
    # the DKD reference's 1-based count: 1/20 in the first epoch, full weight at epoch 20
    assert history["warmup"] == pytest.approx([1 / 20, 2 / 20, 3 / 20, 4 / 20], abs=1e-7)
    assert set(history) == {"loss", "ce", "tckd", "nckd", "accuracy", "warmup"}
    # The logged objective uses that epoch's weight: the variable reaches the compiled step.
    for epoch in range(4):
        assert history["loss"][epoch] == pytest.approx(_objective(history, epoch), rel=1e-5)
    assert history["loss"][0] > history["ce"][0]  # weight 1/20: the first epoch distils too
    assert history["loss"][3] > history["ce"][3] + 1e-3  # weight 4/20 really counts

    # a second fit continues the schedule from initial_epoch
    resumed = distiller.fit(x, y, batch_size=8, epochs=22, initial_epoch=20, verbose=0)
    assert resumed.history["warmup"] == pytest.approx([1.0, 1.0])


def test_warmup_epochs_zero_gives_full_weight():
    distiller = make_distiller(warmup_epochs=0)
    assert keras.ops.convert_to_numpy(distiller.warmup_weight.value) == 1.0
    distiller.compile(optimizer="adam")
    x, y = batch()
    val = batch(6, seed=9)
    history = distiller.fit(x, y, batch_size=8, epochs=2, validation_data=val, verbose=0).history
    assert history["warmup"] == [1.0, 1.0]
    # validation evaluates the student alone: cross-entropy and accuracy
    assert {"val_loss", "val_accuracy"} <= set(history) and "val_tckd" not in history
    assert history["val_loss"][-1] == pytest.approx(
        distiller.evaluate(*val, verbose=0, return_dict=True)["loss"], rel=1e-5
    )
    for epoch in range(2):
        assert history["loss"][epoch] == pytest.approx(_objective(history, epoch), rel=1e-5)


@pytest.mark.parametrize("mode", [m for m in MODES if m != "dkd"])  # dkd: the warm-up test
def test_every_mode_logs_its_terms(mode):
    distiller = make_distiller(
        mode=mode, warmup_epochs=0, teacher=mode != "ce", alpha=0.5, beta=2.0, ce_weight=0.7
    )
    distiller.compile(optimizer="adam")
    x, y = batch()
    history = distiller.fit(x, y, batch_size=8, epochs=1, verbose=0).history
    extra = {
        "dkd": {"tckd", "nckd"},
        "tckd": {"tckd", "nckd"},
        "nckd": {"tckd", "nckd"},
        "kd": {"kd"},
        "ce": set(),
    }[mode]
    assert set(history) == {"loss", "ce", "accuracy", "warmup"} | extra
    expected = _objective(history, 0, mode=mode, alpha=0.5, beta=2.0, ce_weight=0.7)
    assert history["loss"][0] == pytest.approx(expected, rel=1e-5)


def test_label_smoothing_changes_the_cross_entropy_term_only():
    from keras_dkd import losses

    x, y = batch()
    plain = make_distiller(warmup_epochs=0)
    smooth = make_distiller(warmup_epochs=0, label_smoothing=0.1)
    assert Distiller.from_config(smooth.get_config()).label_smoothing == pytest.approx(0.1)
    logits = smooth.student(x, training=False)
    teacher = smooth.teacher_logits(x)
    total_plain, terms_plain = plain.compute_losses(logits, teacher, y)
    total, terms = smooth.compute_losses(logits, teacher, y)
    expected = keras.ops.convert_to_numpy(losses.cross_entropy(logits, y, 0.1))
    assert float(terms["ce"]) == pytest.approx(float(expected), rel=1e-6)
    for name in ("tckd", "nckd"):
        assert float(terms[name]) == pytest.approx(float(terms_plain[name]), rel=1e-6)
    assert float(total) - float(terms["ce"]) == pytest.approx(
        float(total_plain) - float(terms_plain["ce"]), rel=1e-5)


def test_call_predict_and_evaluate_use_the_student():
    distiller = make_distiller(warmup_epochs=0)
    distiller.compile(optimizer="adam")
    x, y = batch(12, seed=3)
    logits = keras.ops.convert_to_numpy(distiller.student(x, training=False))
    np.testing.assert_allclose(
        keras.ops.convert_to_numpy(distiller(x)), logits, rtol=1e-6, atol=1e-6
    )
    np.testing.assert_allclose(distiller.predict(x, verbose=0), logits, rtol=1e-5, atol=1e-6)
    result = distiller.evaluate(x, y, batch_size=5, verbose=0, return_dict=True)
    assert set(result) == {"loss", "accuracy"}
    shifted = logits - logits.max(-1, keepdims=True)
    log_p = shifted - np.log(np.exp(shifted).sum(-1, keepdims=True))
    ce = -log_p[np.arange(len(y)), y].mean()
    assert result["loss"] == pytest.approx(ce, rel=1e-5)
    assert result["accuracy"] == pytest.approx(np.mean(logits.argmax(-1) == y))


def test_user_errors():
    student = tiny_model(0)
    with pytest.raises(UserError, match="mode"):
        Distiller(tiny_model(1), student, mode="fitnet")
    with pytest.raises(UserError, match="teacher"):
        Distiller(None, student, mode="dkd")
    with pytest.raises(UserError, match="same model"):
        Distiller(student, student)
    with pytest.raises(UserError, match="temperature"):
        Distiller(tiny_model(1), student, temperature=0)
    with pytest.raises(UserError, match="warmup_epochs"):
        Distiller(tiny_model(1), student, warmup_epochs=-1)
    with pytest.raises(UserError, match="label_smoothing"):
        Distiller(tiny_model(1), student, label_smoothing=1.0)
    other = keras.Sequential(
        [keras.Input((FRAMES, FILTERS)), keras.layers.Flatten(), keras.layers.Dense(7)]
    )
    with pytest.raises(UserError, match="classes"):
        Distiller(other, student)
    distiller = Distiller(None, student, mode="ce")
    with pytest.raises(UserError, match="no loss"):
        distiller.compile(optimizer="adam", loss="sparse_categorical_crossentropy")


# ----------------------------------------------------------------------------- saving


def test_student_saves_alone_and_reloads_without_the_distiller(tmp_path):
    distiller = make_distiller(warmup_epochs=4)
    distiller.compile(optimizer="adam")
    x, y = batch()
    distiller.fit(x, y, batch_size=8, epochs=2, verbose=0)
    expected = distiller.student.predict(x, verbose=0)

    path = tmp_path / "student.keras"
    distiller.student.save(path)
    with zipfile.ZipFile(path) as archive:
        config = archive.read("config.json").decode()
    assert "Distiller" not in config and "teacher" not in config
    reloaded = keras.saving.load_model(path)
    np.testing.assert_allclose(reloaded.predict(x, verbose=0), expected, atol=1e-6)

    # The whole distiller saves too (teacher, student, optimizer state, warm-up weight).
    whole = tmp_path / "distiller.keras"
    distiller.save(whole)
    again = keras.saving.load_model(whole)
    assert isinstance(again, Distiller) and again.mode == "dkd" and not again.teacher.trainable
    # the second epoch's weight, 2/4 (1-based count)
    assert float(keras.ops.convert_to_numpy(again.warmup_weight.value)) == pytest.approx(0.5)
    assert int(keras.ops.convert_to_numpy(again.optimizer.iterations)) == 4
    np.testing.assert_allclose(again.student.predict(x, verbose=0), expected, atol=1e-6)

    # A training checkpoint: save_weights, then load_weights into a freshly compiled distiller
    # restores the student, the optimizer state and the warm-up weight (resume with
    # fit(initial_epoch=...)).
    weights = tmp_path / "state.weights.h5"
    distiller.save_weights(weights)
    fresh = make_distiller(warmup_epochs=4)
    fresh.compile(optimizer="adam")
    fresh.load_weights(weights)
    assert int(keras.ops.convert_to_numpy(fresh.optimizer.iterations)) == 4
    assert float(keras.ops.convert_to_numpy(fresh.warmup_weight.value)) == pytest.approx(0.5)
    for a, b in zip(distiller.optimizer.variables, fresh.optimizer.variables, strict=True):
        np.testing.assert_array_equal(
            keras.ops.convert_to_numpy(a.value), keras.ops.convert_to_numpy(b.value)
        )
    np.testing.assert_allclose(fresh.student.predict(x, verbose=0), expected, atol=1e-6)


class _Interrupt(keras.callbacks.Callback):
    """Simulates a kill at the start of ``epoch``."""

    def __init__(self, epoch):
        super().__init__()
        self.epoch = epoch

    def on_epoch_begin(self, epoch, logs=None):
        if epoch == self.epoch:
            raise KeyboardInterrupt


def test_backup_and_restore_resumes_exactly(tmp_path):
    mode = "dkd"
    teacher = randomize(tiny_model(0), 1)
    teacher.save(tmp_path / "teacher.keras")
    tiny_model(2).save(tmp_path / "student.keras")
    x, y = batch()

    def fresh():
        d = Distiller(
            keras.saving.load_model(tmp_path / "teacher.keras"),
            keras.saving.load_model(tmp_path / "student.keras"),
            mode=mode,
            warmup_epochs=4,
        )
        d.compile(optimizer=keras.optimizers.Adam(1e-2))
        return d

    def fit(d, callbacks):
        return d.fit(x, y, batch_size=8, epochs=4, shuffle=False, verbose=0, callbacks=callbacks)

    reference = fresh()
    full = fit(reference, []).history

    backup = str(tmp_path / "backup")
    with pytest.raises(KeyboardInterrupt):
        fit(fresh(), [keras.callbacks.BackupAndRestore(backup), _Interrupt(2)])
    assert os.path.exists(os.path.join(backup, "latest.weights.h5"))

    resumed_distiller = fresh()
    resumed = fit(resumed_distiller, [keras.callbacks.BackupAndRestore(backup)])
    assert resumed.epoch == [2, 3]
    assert resumed.history["warmup"] == pytest.approx([0.75, 1.0])  # epochs 3 and 4 of 4
    assert resumed.history["loss"] == pytest.approx(full["loss"][2:], rel=1e-5)
    assert int(keras.ops.convert_to_numpy(resumed_distiller.optimizer.iterations)) == 8
    for a, b in zip(reference.student.weights, resumed_distiller.student.weights, strict=True):
        np.testing.assert_allclose(
            keras.ops.convert_to_numpy(a.value), keras.ops.convert_to_numpy(b.value), atol=1e-6
        )
    assert not os.path.exists(backup)  # deleted once training finished


# ----------------------------------------------------------------------------- cross-backend

_ONE_STEP = r"""
import json

import keras
import numpy as np

from keras_dkd.distiller import Distiller


def one_step(folder, mode):
    data = np.load(f"{folder}/batch.npz")
    distiller = Distiller(
        keras.saving.load_model(f"{folder}/teacher.keras"),
        keras.saving.load_model(f"{folder}/student.keras"),
        mode=mode,
        warmup_epochs=0,
    )
    distiller.compile(optimizer=keras.optimizers.SGD(0.1))
    logs = distiller.train_on_batch(data["x"], data["y"], return_dict=True)
    after = keras.ops.convert_to_numpy(distiller.student(data["x"], training=False))
    return {
        "backend": keras.backend.backend(),
        "logs": {k: float(v) for k, v in logs.items()},
        "after": after.tolist(),
    }


if __name__ == "__main__":
    import sys

    print("RESULT" + json.dumps(one_step(sys.argv[1], sys.argv[2])))
"""


def _start_one_step(folder, mode, backend):
    """Start one train_on_batch step on ``backend`` in a child process."""
    env = dict(os.environ, KERAS_BACKEND=backend, TF_CPP_MIN_LOG_LEVEL="3")
    return subprocess.Popen(
        [sys.executable, "-c", _ONE_STEP, str(folder), mode],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def _finish_one_step(child, backend):
    out, err = child.communicate(timeout=300)
    assert child.returncode == 0, err[-3000:]
    line = next(s for s in out.splitlines() if s.startswith("RESULT"))
    result = json.loads(line[len("RESULT") :])
    assert result["backend"] == backend
    return result


@pytest.mark.once
def test_one_step_agrees_across_backends(tmp_path):
    """Same .keras weights, same batch: one DKD step logs the same terms on every backend."""
    randomize(tiny_model(0), 1).save(tmp_path / "teacher.keras")
    randomize(tiny_model(2), 3).save(tmp_path / "student.keras")
    x, y = batch(8, seed=4)
    np.savez(tmp_path / "batch.npz", x=x, y=y)
    here = keras.backend.backend()
    others = [b for b in ("tensorflow", "torch", "jax") if b != here]
    children = [_start_one_step(tmp_path, "dkd", b) for b in others]  # run while we work
    namespace = {"__name__": "one_step"}
    exec(_ONE_STEP, namespace)
    first = namespace["one_step"](str(tmp_path), "dkd")
    results = [first] + [_finish_one_step(c, b) for c, b in zip(children, others, strict=True)]
    assert set(first["logs"]) == {"loss", "ce", "tckd", "nckd", "accuracy", "warmup"}
    assert first["logs"]["nckd"] > 0.01 and first["logs"]["tckd"] > 0.001  # a real test
    for other in results[1:]:
        for key, value in first["logs"].items():
            assert other["logs"][key] == pytest.approx(value, abs=1e-4, rel=1e-4), (
                other["backend"],
                key,
            )
        # and the update itself agrees: the student's logits after the step
        np.testing.assert_allclose(other["after"], first["after"], atol=1e-4, rtol=1e-4)


# ----------------------------------------------------------------------------- cached teacher


def test_cached_teacher_logits_give_the_same_training():
    """Logits computed once (teacher_logits_of) and passed with the inputs give the losses and
    the student weights of a distiller that runs the teacher in every step."""
    from keras_dkd.distiller import teacher_logits_of

    x, y = batch(n=32, seed=3)
    results = []
    for cached in (False, True):
        distiller = make_distiller(warmup_epochs=2)
        distiller.compile(optimizer=keras.optimizers.Adam(1e-2))
        initial = [keras.ops.convert_to_numpy(v) for v in distiller.student.trainable_variables]
        inputs = x
        if cached:
            inputs = {"features": x, "teacher_logits": teacher_logits_of(distiller.teacher, x)}
            assert inputs["teacher_logits"].shape == (32, CLASSES)
        history = distiller.fit(inputs, y, batch_size=8, epochs=3, shuffle=False,
                                verbose=0).history
        weights = [keras.ops.convert_to_numpy(v) for v in distiller.student.trainable_variables]
        results.append((history, weights, distiller))
    (online, online_weights, _), (cached, cached_weights, distiller) = results
    for key in ("loss", "ce", "tckd", "nckd"):
        np.testing.assert_allclose(cached[key], online[key], rtol=1e-4, atol=1e-6)
    assert any(not np.allclose(w, v) for w, v in zip(cached_weights, initial, strict=True))
    for got, want in zip(cached_weights, online_weights, strict=True):
        np.testing.assert_allclose(got, want, rtol=1e-3, atol=1e-5)
    # call / predict / evaluate take the dict too, and use the student
    xs = {"features": x, "teacher_logits": np.zeros((32, CLASSES), np.float32)}
    np.testing.assert_allclose(
        keras.ops.convert_to_numpy(distiller(xs)),
        keras.ops.convert_to_numpy(distiller.student(x)), rtol=1e-6, atol=1e-6)
    with pytest.raises(UserError, match="exactly the keys"):
        distiller({"features": x})


def test_epoch_batches_carry_the_cached_logits_of_their_segments():
    from keras_dkd.augment import SpecAugment
    from keras_dkd.batches import EpochBatches

    x, y = batch(n=20, seed=4)
    logits = np.arange(20 * CLASSES, dtype=np.float32).reshape(20, CLASSES)
    batches = EpochBatches(x, y, batch_size=8, seed=[1, 2], teacher_logits=logits)
    plain = EpochBatches(x, y, batch_size=8, seed=[1, 2])
    for i in range(len(batches)):
        inputs, labels = batches[i]
        xs, ys = plain[i]
        np.testing.assert_array_equal(inputs["features"], xs)
        np.testing.assert_array_equal(labels, ys)
        rows = (inputs["teacher_logits"][:, 0] // CLASSES).astype(int)  # which segment
        np.testing.assert_array_equal(x[rows], xs)
    with pytest.raises(UserError, match="unaugmented inputs"):
        EpochBatches(x, y, 8, seed=0, augment=SpecAugment(time_masks=1, time_width=2),
                     teacher_logits=logits)
    with pytest.raises(UserError, match="differ in length"):
        EpochBatches(x, y, 8, seed=0, teacher_logits=logits[:5])
