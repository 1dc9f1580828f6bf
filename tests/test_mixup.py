"""Mixup (keras_dkd.mixup): the mixtures, EpochBatches' soft targets and training with them."""

from __future__ import annotations

import dataclasses

import keras
import numpy as np
import pytest

from keras_dkd.batches import EpochBatches
from keras_dkd.errors import UserError
from keras_dkd.mixup import Mixup
from keras_dkd.perturb import SpeedPerturb


def _data(n: int = 40, seed: int = 0):
    x = np.random.default_rng(seed).normal(size=(n, 197, 40)).astype(np.float32)
    return x, np.arange(n) % 4


@pytest.mark.once
def test_config_and_validation():
    mixup = Mixup(alpha=0.4, classes=4)
    assert (mixup.alpha, mixup.classes) == (0.4, 4)
    with pytest.raises(dataclasses.FrozenInstanceError):
        mixup.alpha = 1.0
    for alpha in (0, -1, True, "0.4", float("inf")):
        with pytest.raises(UserError, match="mixup must be a positive number"):
            Mixup(alpha=alpha, classes=4)
    with pytest.raises(UserError, match="at least 2 classes"):
        Mixup(alpha=0.4, classes=1)
    x, y = _data(8)
    with pytest.raises(UserError, match="n labels"):
        mixup.apply(x, y[:5], np.random.default_rng(0))
    with pytest.raises(UserError, match="class ids below 4"):
        mixup.apply(x, y + 1, np.random.default_rng(0))


@pytest.mark.once
def test_each_segment_is_the_stated_mixture_of_two_and_so_is_its_target():
    x, y = _data(32)
    before = x.copy()
    mixup = Mixup(alpha=0.4, classes=4)
    mixed, targets = mixup.apply(x, y, np.random.default_rng([3, 1]))
    again, _ = mixup.apply(x, y, np.random.default_rng([3, 1]))
    np.testing.assert_array_equal(mixed, again)  # seeded
    np.testing.assert_array_equal(x, before)  # the batch is not changed
    assert mixed.dtype == targets.dtype == np.float32 and targets.shape == (32, 4)
    np.testing.assert_allclose(targets.sum(axis=1), 1, rtol=1e-6)
    # replay the draws: partner permutation, then Beta weights
    rng = np.random.default_rng([3, 1])
    partner, weight = rng.permutation(32), rng.beta(0.4, 0.4, size=32).astype(np.float32)
    for i in range(32):
        np.testing.assert_allclose(mixed[i], weight[i] * x[i] + (1 - weight[i]) * x[partner[i]],
                                   rtol=1e-5, atol=1e-5)
        expected = np.zeros(4, np.float32)
        expected[y[i]] += weight[i]
        expected[y[partner[i]]] += 1 - weight[i]
        np.testing.assert_allclose(targets[i], expected, rtol=1e-6, atol=1e-7)
    # Beta(0.4, 0.4) puts most weights near 0 or 1, not all
    assert 0 < np.mean((weight > 0.1) & (weight < 0.9)) < 0.7


@pytest.mark.once
def test_batches_mix_after_the_augmentations_with_the_batch_generator():
    x, y = _data(50, seed=3)
    perturb, mixup = SpeedPerturb(freq_warp=0.1), Mixup(alpha=0.3, classes=4)
    mixed = EpochBatches(x, y, 16, [0, 1], augment=[perturb], mixup=mixup)
    plain = EpochBatches(x, y, 16, [0, 1])
    for epoch in (0, 2):
        mixed.epoch = plain.epoch = epoch
        for index in range(len(plain)):
            xp, yp = plain[index]
            xm, ym = mixed[index]
            rng = plain.augment_rng(epoch, index)
            ex, ey = mixup.apply(perturb.apply(xp, rng), yp, rng)
            np.testing.assert_array_equal(xm, ex)
            np.testing.assert_array_equal(ym, ey)
            assert ym.shape == (16, 4)
    with pytest.raises(UserError, match="mixup must be a Mixup"):
        EpochBatches(x, y, 16, 0, mixup=0.4)
    with pytest.raises(UserError, match="distillation does not take"):
        EpochBatches(x, y, 16, 0, mixup=mixup, teacher_logits=np.zeros((50, 4)))


def test_a_cross_entropy_run_trains_with_mixup_and_a_distilled_student_without(tmp_path,
                                                                             toy_utterances):
    """On this backend: the teacher (cross-entropy) trains on soft targets, compiled with a
    categorical cross-entropy; the distilled student keeps hard labels; both train to finite
    losses and other weights than without mixup."""
    from keras_dkd import data
    from keras_dkd.io import load_model
    from keras_dkd.options import RunOptions
    from keras_dkd.training import train

    def run(name, **changes):
        options = RunOptions.from_flat(dataset="toy", protocol="loso", fold=0, variant="dkd",
                                       epochs=1, warmup_epochs=0, batch_size=4,
                                       cache_dir=str(tmp_path / "c"), **changes)
        bundle = data.prepare_utterances(toy_utterances, ["neutral", "happy", "angry", "sad"],
                                         options.data)
        train(options, tmp_path / name, bundle=bundle)
        return tmp_path / name

    mixed, plain = run("mixed", mixup=0.4), run("plain")
    teacher = load_model(mixed / "teacher.keras")
    assert isinstance(teacher.loss, keras.losses.CategoricalCrossentropy)
    for phase in ("teacher", "student"):
        a, b = load_model(mixed / f"{phase}.keras"), load_model(plain / f"{phase}.keras")
        assert any(not np.allclose(keras.ops.convert_to_numpy(u), keras.ops.convert_to_numpy(v))
                   for u, v in zip(a.weights, b.weights, strict=True)), phase
    history = (mixed / "history.csv").read_text()
    assert "nan" not in history.lower()
