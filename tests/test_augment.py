"""SpecAugment-style masking (keras_dkd.augment) and its use in EpochBatches."""

from __future__ import annotations

import dataclasses

import keras
import numpy as np
import pytest

from keras_dkd.augment import SpecAugment
from keras_dkd.batches import EpochBatches
from keras_dkd.errors import UserError

FRAMES, FILTERS = 197, 40


def _segments(n: int, seed: int = 0) -> np.ndarray:
    """Log-energy-like segments (values around 10) in which no value equals its segment's
    mean, so that a masked value is always a changed one."""
    x = (np.random.default_rng(seed).normal(size=(n, FRAMES, FILTERS)) * 4 + 10).astype(
        np.float32)
    while True:
        equal = x == x.mean(axis=(1, 2), keepdims=True, dtype=np.float32)
        if not equal.any():
            return x
        x[equal] += np.float32(0.5)


def _masked(original: np.ndarray, out: np.ndarray):
    """(frames masked (n, 197), filters masked (n, 40)), checking that every changed value is
    its segment's mean and that the changes are whole frames and whole filters."""
    changed = out != original
    means = original.mean(axis=(1, 2), keepdims=True, dtype=np.float32)
    np.testing.assert_array_equal(out[changed], np.broadcast_to(means, out.shape)[changed])
    frames, filters = changed.all(axis=2), changed.all(axis=1)
    np.testing.assert_array_equal(changed, frames[:, :, None] | filters[:, None, :])
    return frames, filters


def _runs(row: np.ndarray) -> list[tuple[int, int]]:
    """(start, length) of each run of True in a 1-D boolean array."""
    edges = np.diff(np.concatenate([[0], row.astype(np.int8), [0]]))
    starts, stops = np.nonzero(edges == 1)[0], np.nonzero(edges == -1)[0]
    return list(zip(starts.tolist(), (stops - starts).tolist(), strict=True))


# ------------------------------------------------------------------------------ SpecAugment


@pytest.mark.once
def test_config_active_and_validation():
    assert SpecAugment().active is False
    assert SpecAugment(time_masks=2).active is False  # width 0: nothing can change
    assert SpecAugment(freq_width=8).active is False
    assert SpecAugment(time_masks=1, time_width=1).active is True
    assert SpecAugment(freq_masks=1, freq_width=1).active is True
    augment = SpecAugment(time_masks=2, time_width=20, freq_masks=2, freq_width=6)
    assert augment.to_dict() == {"time_masks": 2, "time_width": 20, "freq_masks": 2,
                                 "freq_width": 6}
    assert SpecAugment.from_dict(augment.to_dict()) == augment
    assert SpecAugment.from_dict(None) == SpecAugment()
    assert SpecAugment(np.int64(3), 2).to_dict()["time_masks"] == 3
    with pytest.raises(dataclasses.FrozenInstanceError):
        augment.time_masks = 3
    for bad in ({"time_masks": -1}, {"time_width": 2.5}, {"freq_masks": True},
                {"freq_width": "6"}):
        with pytest.raises(UserError, match="must be a non-negative integer"):
            SpecAugment(**bad)
    with pytest.raises(UserError, match="unknown SpecAugment settings"):
        SpecAugment.from_dict({"time_mask": 2})
    with pytest.raises(UserError, match="batch, frames, filters"):
        augment.apply(np.zeros((197, 40), np.float32), np.random.default_rng(0))


@pytest.mark.once
def test_apply_is_seeded_returns_a_new_float32_array_and_leaves_the_batch_alone():
    augment = SpecAugment(time_masks=2, time_width=20, freq_masks=2, freq_width=6)
    batch = _segments(32)
    before = batch.copy()
    a = augment.apply(batch, np.random.default_rng([0, 1, 2]))
    b = augment.apply(batch, np.random.default_rng([0, 1, 2]))
    c = augment.apply(batch, np.random.default_rng([0, 1, 3]))
    np.testing.assert_array_equal(batch, before)
    assert a.dtype == np.float32 and a.shape == batch.shape and a is not batch
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)
    np.testing.assert_array_equal(augment.apply(batch.astype(np.float64),
                                                np.random.default_rng([0, 1, 2])), a)
    # inactive: an unmasked copy, the generator untouched
    rng = np.random.default_rng(7)
    same = SpecAugment().apply(batch, rng)
    np.testing.assert_array_equal(same, batch)
    assert same is not batch and rng.random() == np.random.default_rng(7).random()
    assert augment.apply(batch[:0], np.random.default_rng(0)).shape == (0, FRAMES, FILTERS)


@pytest.mark.once
@pytest.mark.parametrize("axis, width", [("time", 20), ("freq", 6), ("time", 500)])
def test_one_mask_is_a_band_whose_width_is_uniform_in_0_width(axis, width):
    """One mask per segment over 3000 segments: a single band of masked frames (filters) set to
    the segment's mean, inside the segment, of every width 0..width about equally often, at
    starts from the first to the last possible position."""
    n = 3000
    size = FRAMES if axis == "time" else FILTERS
    augment = SpecAugment(**{f"{axis}_masks": 1, f"{axis}_width": width})
    batch = _segments(n)
    frames, filters = _masked(batch, augment.apply(batch, np.random.default_rng(1)))
    masked, other = (frames, filters) if axis == "time" else (filters, frames)
    assert not other[masked.sum(axis=1) < size].any()  # (a fully masked segment has both)
    widths = masked.sum(axis=1)
    width = min(width, size)  # a band never runs off the segment
    for row in masked:
        assert len(_runs(row)) <= 1
    counts = np.bincount(widths, minlength=width + 1)
    assert len(counts) == width + 1  # no band wider than width
    expected = n / (width + 1)
    assert counts.min() > 0
    if width < 100:  # enough draws per width for a tight check
        assert np.all(np.abs(counts - expected) < 5 * np.sqrt(expected)), counts
    assert abs(widths.mean() - width / 2) < 0.05 * width
    starts = np.array([_runs(row)[0][0] for row, w in zip(masked, widths, strict=True) if w])
    ends = np.array([sum(_runs(row)[0]) for row, w in zip(masked, widths, strict=True) if w])
    assert starts.min() == 0 and ends.max() == size


@pytest.mark.once
def test_several_masks_of_both_axes():
    """Masks per segment bound the number of bands and the masked count; frames and filters
    are masked independently in each segment."""
    augment = SpecAugment(time_masks=3, time_width=10, freq_masks=2, freq_width=5)
    batch = _segments(1000)
    frames, filters = _masked(batch, augment.apply(batch, np.random.default_rng(2)))
    assert frames.sum(axis=1).max() <= 3 * 10 and filters.sum(axis=1).max() <= 2 * 5
    assert max(len(_runs(row)) for row in frames) == 3
    assert max(len(_runs(row)) for row in filters) == 2
    # overlapping or adjacent bands merge; otherwise three bands of mean width 5 -> about 15
    # frames (a little less for the overlaps), two of mean 2.5 -> about 5 filters
    assert 12 < frames.sum(axis=1).mean() <= 15 and 4 < filters.sum(axis=1).mean() <= 5
    assert len({row.tobytes() for row in frames}) > 900  # every segment its own masks


# ------------------------------------------------------------------------------ EpochBatches

AUGMENT = SpecAugment(time_masks=2, time_width=20, freq_masks=2, freq_width=6)


def _data(n: int = 50):
    return _segments(n, seed=3), np.arange(n) % 4


@pytest.mark.once
def test_batches_are_masked_per_seed_epoch_and_index():
    x, y = _data()
    before = x.copy()
    a = EpochBatches(x, y, 16, [0, 1], augment=AUGMENT)
    b = EpochBatches(x, y, 16, [0, 1], augment=AUGMENT.to_dict())  # a dict is taken too
    plain = EpochBatches(x, y, 16, [0, 1])

    def batch(batches, epoch, index):
        batches.epoch = epoch
        return batches[index]

    seen = {}
    for epoch in (0, 1, 2):
        for index in range(len(a)):
            xa, ya = batch(a, epoch, index)
            xp, yp = batch(plain, epoch, index)
            np.testing.assert_array_equal(ya, yp)  # the order does not depend on augment
            assert xa.dtype == np.float32 and xa.shape == (16, FRAMES, FILTERS)
            _masked(xp, xa)  # masks on the very segments of the unaugmented batch
            assert not np.array_equal(xa, xp)
            seen[epoch, index] = xa
    # the same batch in another process (a resumed run): visited in another order
    for epoch, index in [(2, 3), (0, 1), (1, 0), (2, 0), (0, 3)]:
        np.testing.assert_array_equal(batch(b, epoch, index)[0], seen[epoch, index])
    # different across epochs and indices (compare masks: the segments differ by order too)
    x0, _ = batch(plain, 0, 0)
    masks = {}
    for epoch in (0, 1, 2):
        a.epoch = epoch
        rng = a.augment_rng(epoch, 0)
        masks[epoch] = AUGMENT.apply(x0, rng) != x0
    assert not np.array_equal(masks[0], masks[1]) and not np.array_equal(masks[1], masks[2])
    assert not np.array_equal(seen[0, 0] != batch(plain, 0, 0)[0],
                              seen[0, 1] != batch(plain, 0, 1)[0])
    # another seed, other masks
    other = EpochBatches(x, y, 16, [0, 2], augment=AUGMENT)
    assert not np.array_equal(other[0][0], seen[0, 0])
    np.testing.assert_array_equal(x, before)  # the features array is never touched
    np.testing.assert_array_equal(a.features, before)


@pytest.mark.once
def test_inactive_augment_gives_todays_batches():
    x, y = _data()
    today = EpochBatches(x, y, 16, [4, 2])
    for augment in (None, SpecAugment(), SpecAugment(time_masks=3), {}):
        batches = EpochBatches(x, y, 16, [4, 2], augment=augment)
        for epoch in (0, 1):
            today.epoch = batches.epoch = epoch
            for index in range(len(batches)):
                for got, expected in zip(batches[index], today[index], strict=True):
                    np.testing.assert_array_equal(got, expected)
    with pytest.raises(UserError, match="augment must be a SpecAugment"):
        EpochBatches(x, y, 16, 0, augment="specaugment")


def test_fit_with_augmented_batches_on_this_backend():
    """model.fit on augmented EpochBatches: it trains, the same way twice, and the masks reach
    the model (other weights than without them)."""
    from keras_dkd.callbacks import EpochSetter

    x, y = _data(48)

    def train(augment):
        keras.utils.set_random_seed(0)
        inputs = keras.Input((FRAMES, FILTERS))
        h = keras.layers.Conv1D(4, 5, activation="relu")(inputs)
        h = keras.layers.GlobalAveragePooling1D()(h)
        model = keras.Model(inputs, keras.layers.Dense(4)(h))
        model.compile(optimizer=keras.optimizers.Adam(1e-2),
                      loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
        batches = EpochBatches(x, y, 16, [0, 0], augment=augment)
        history = model.fit(batches, epochs=1, verbose=0, shuffle=False,
                            callbacks=[EpochSetter(batches)])
        assert len(history.history["loss"]) == 1 and np.isfinite(history.history["loss"]).all()
        return [keras.ops.convert_to_numpy(w) for w in model.weights]

    first, second, plain = train(AUGMENT), train(AUGMENT), train(None)
    for a, b in zip(first, second, strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-6)
    assert any(not np.allclose(a, p, rtol=1e-5, atol=1e-6)
               for a, p in zip(first, plain, strict=True))
    np.testing.assert_array_equal(x, _data(48)[0])  # training never touched the features
