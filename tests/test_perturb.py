"""Speed and frequency-warp perturbation (keras_dkd.perturb) and its use in EpochBatches."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from keras_dkd.augment import SpecAugment
from keras_dkd.batches import EpochBatches
from keras_dkd.errors import UserError
from keras_dkd.features import HIGHFREQ, LOWFREQ, NFILT
from keras_dkd.perturb import SpeedPerturb, filter_centres

pytestmark = pytest.mark.once

FRAMES, FILTERS = 197, 40


class _Fixed:
    """A stand-in generator whose uniform draws are all ``value`` (a chosen factor)."""

    def __init__(self, value):
        self.value = value

    def uniform(self, low, high, size):
        assert low <= self.value <= high
        return np.full(size, self.value)


def _segments(n: int, seed: int = 0) -> np.ndarray:
    return (np.random.default_rng(seed).normal(size=(n, FRAMES, FILTERS)) * 4 + 10).astype(
        np.float32)


def test_config_active_and_validation():
    assert SpeedPerturb().active is False
    assert SpeedPerturb(speed=0.1).active and SpeedPerturb(freq_warp=0.05).active
    assert SpeedPerturb(speed=0.1, freq_warp=0.05).to_dict() == {"speed": 0.1, "freq_warp": 0.05}
    assert SpeedPerturb(speed=np.float64(0.2)).speed == 0.2
    with pytest.raises(dataclasses.FrozenInstanceError):
        SpeedPerturb().speed = 0.1
    for bad in ({"speed": -0.1}, {"speed": 0.6}, {"freq_warp": True}, {"freq_warp": "0.1"},
                {"speed": float("nan")}):
        with pytest.raises(UserError, match="must be a number in \\[0, 0.5\\]"):
            SpeedPerturb(**bad)
    with pytest.raises(UserError, match="lowfreq < highfreq"):
        SpeedPerturb(lowfreq=4000, highfreq=300)
    with pytest.raises(UserError, match="batch, frames, filters"):
        SpeedPerturb(speed=0.1).apply(np.zeros((FRAMES, FILTERS)), np.random.default_rng(0))


def test_filter_centres_are_the_feature_filter_banks():
    """The centres are the peaks of the filter bank the features are computed with."""
    from keras_dkd.features import NFFT, SAMPLE_RATE, filterbank

    bank = filterbank(NFILT, NFFT, SAMPLE_RATE, LOWFREQ, HIGHFREQ)  # (nfilt, bins)
    bins = np.fft.rfftfreq(NFFT, 1 / SAMPLE_RATE)
    peaks = bins[np.argmax(bank, axis=1)]
    centres = filter_centres(NFILT, LOWFREQ, HIGHFREQ)
    assert centres.shape == (NFILT,) and np.all(np.diff(centres) > 0)
    assert np.abs(peaks - centres).max() <= SAMPLE_RATE / NFFT  # within one FFT bin


def test_factor_one_changes_nothing_and_silence_stays_silence():
    x = _segments(4)
    both = SpeedPerturb(speed=0.1, freq_warp=0.1)
    np.testing.assert_allclose(both.apply(x, _Fixed(1.0)), x, rtol=0, atol=1e-4)
    silence = np.full((3, FRAMES, FILTERS), -36.04, np.float32)  # log(eps): digital silence
    for factor in (0.9, 1.1):
        np.testing.assert_allclose(both.apply(silence, _Fixed(factor)), silence, atol=1e-5)
    inactive = SpeedPerturb()
    out = inactive.apply(x, None)  # draws nothing
    assert out is not x and out.dtype == np.float32
    np.testing.assert_array_equal(out, x)


def test_freq_warp_moves_a_formant_by_its_factor():
    """A peak at the filter centred near 1500 Hz moves to about 1500 · a Hz."""
    centres = filter_centres(FILTERS, LOWFREQ, HIGHFREQ)
    k = int(np.argmin(np.abs(centres - 1500)))
    x = np.zeros((1, FRAMES, FILTERS), np.float32)
    x[0, :, k] = 10.0
    warp = SpeedPerturb(freq_warp=0.2)
    for factor in (0.85, 0.9, 1.1, 1.2):
        out = warp.apply(x, _Fixed(factor))[0]
        np.testing.assert_array_equal(out, np.broadcast_to(out[:1], out.shape))  # per frame
        peak = np.sum(out[0] * centres) / np.sum(out[0])
        spacing = centres[k + 1] - centres[k]
        assert abs(peak - centres[k] * factor) < spacing, (factor, peak)
        assert (peak > centres[k]) == (factor > 1)


def test_speed_scales_time_about_the_centre_and_frequency_with_it():
    centre = (FRAMES - 1) / 2
    x = np.zeros((1, FRAMES, FILTERS), np.float32)
    x[0, 150, :] = 10.0  # one loud frame, 52 frames after the centre
    for factor in (0.9, 1.1):
        out = SpeedPerturb(speed=0.1).apply(x, _Fixed(factor))[0]
        energy = out.sum(axis=1)
        where = np.sum(energy * np.arange(FRAMES)) / energy.sum()
        assert abs(where - (centre + (150 - centre) / factor)) < 0.5, (factor, where)
    # faster speech is higher: the speed warps frequency as freq_warp does
    y = np.zeros((1, FRAMES, FILTERS), np.float32)
    y[0, :, 20] = 10.0
    fast = SpeedPerturb(speed=0.1).apply(y, _Fixed(1.1))
    np.testing.assert_allclose(fast, SpeedPerturb(freq_warp=0.1).apply(y, _Fixed(1.1)),
                               atol=1e-5)


def test_apply_is_seeded_per_segment_and_leaves_the_batch_alone():
    x = _segments(32)
    before = x.copy()
    perturb = SpeedPerturb(speed=0.1, freq_warp=0.1)
    a = perturb.apply(x, np.random.default_rng([1, 2]))
    b = perturb.apply(x, np.random.default_rng([1, 2]))
    c = perturb.apply(x, np.random.default_rng([1, 3]))
    assert a.dtype == np.float32 and a.shape == x.shape
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)
    np.testing.assert_array_equal(x, before)
    # each segment gets its own factors: one segment copied 32 times comes out 32 ways
    same = np.repeat(x[:1], 32, axis=0)
    out = perturb.apply(same, np.random.default_rng(0))
    assert len({segment.tobytes() for segment in out}) == 32


def test_batches_take_a_list_of_augmentations_seeded_per_batch():
    x, y = _segments(50, seed=3), np.arange(50) % 4
    perturb = SpeedPerturb(freq_warp=0.1)
    masks = SpecAugment(time_masks=2, time_width=20)
    both = EpochBatches(x, y, 16, [0, 1], augment=[perturb, masks])
    only = EpochBatches(x, y, 16, [0, 1], augment=perturb)
    plain = EpochBatches(x, y, 16, [0, 1])
    assert both.augmented and only.augmented and not plain.augmented
    for epoch in (0, 1):
        both.epoch = only.epoch = plain.epoch = epoch
        for index in range(len(plain)):
            xp, yp = plain[index]
            xo, yo = only[index]
            xb, yb = both[index]
            np.testing.assert_array_equal(yo, yp)
            np.testing.assert_array_equal(yb, yp)
            # the perturbation draws first from the batch's generator, the masks after it
            rng = plain.augment_rng(epoch, index)
            expected = masks.apply(perturb.apply(xp, rng), rng)
            np.testing.assert_array_equal(xb, expected)
            np.testing.assert_array_equal(xo, perturb.apply(xp, plain.augment_rng(epoch, index)))
            assert not np.array_equal(xo, xp)
    # inactive perturbations give today's batches
    idle = EpochBatches(x, y, 16, [0, 1], augment=[SpeedPerturb(), SpecAugment()])
    assert not idle.augmented
    idle.epoch = plain.epoch
    np.testing.assert_array_equal(idle[2][0], plain[2][0])
    with pytest.raises(UserError, match="augment must be a SpecAugment, a SpeedPerturb"):
        EpochBatches(x, y, 16, 0, augment=[perturb, "speed"])
    with pytest.raises(UserError, match="cached teacher logits need unaugmented inputs"):
        EpochBatches(x, y, 16, 0, augment=[perturb], teacher_logits=np.zeros((50, 4)))


def test_recipe_options_and_cli_flags():
    from click.testing import CliRunner

    from keras_dkd.options import RunOptions

    options = RunOptions.from_flat(speed=0.1, freq_warp=0.05)
    assert (options.recipe.speed, options.recipe.freq_warp) == (0.1, 0.05)
    assert RunOptions.from_flat().recipe.speed == 0.0  # off in default
    assert RunOptions.from_flat().recipe.freq_warp == 0.1  # default's since 2026-12-01
    for recipe in ("paper", "headfusion"):
        flat = RunOptions.from_flat(recipe=recipe).to_dict()
        assert flat["speed"] == 0.0 and flat["freq_warp"] == 0.0
    with pytest.raises(UserError, match="speed must be <= 0.5"):
        RunOptions.from_flat(speed=0.7)
    from keras_dkd.cli.main import cli  # noqa: PLC0415

    result = CliRunner().invoke(cli, ["train", "--help"])
    assert "--speed" in result.output and "--freq-warp" in result.output
    result = CliRunner().invoke(cli, ["train", "--speed", "0.9"])
    assert result.exit_code == 2 and "0.9 is not in the range" in result.output
