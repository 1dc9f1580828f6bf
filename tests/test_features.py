"""keras_dkd.features: segmenting rules, python_speech_features equality, the LogFBank layer."""

from __future__ import annotations

import keras
import numpy as np
import pytest
import soundfile
from keras import ops
from python_speech_features import logfbank as psf_logfbank

from keras_dkd import features, logfbank
from keras_dkd.errors import UserError
from keras_dkd.features import LogFBank, logfbank_segments, num_segments

PSF = dict(samplerate=16000, winlen=0.04, winstep=0.01, nfilt=40, nfft=1024, lowfreq=0,
           highfreq=4000)


def _read(path) -> np.ndarray:
    audio, rate = soundfile.read(str(path), dtype="int16")
    assert rate == 16000
    return audio


@pytest.fixture(scope="module")
def utterances(emodb_wavs) -> list[np.ndarray]:
    """Six real EmoDB utterances: the shortest, the longest and four in between."""
    waves = sorted((_read(p) for p in emodb_wavs[::45]), key=len)
    return [waves[0], waves[len(waves) // 4], waves[len(waves) // 2], waves[-3], waves[-2],
            waves[-1]]


def _noise(seconds: float, seed: int = 0) -> np.ndarray:
    n = int(round(seconds * 16000))
    return (np.random.default_rng(seed).normal(size=n) * 2000).astype(np.int16)


# ------------------------------------------------------------------------------- segments


@pytest.mark.once
@pytest.mark.parametrize(
    "seconds, hop, drop_short, expected",
    [
        (1.5, 1.0, False, 1), (1.5, 0.4, False, 1), (1.5, 1.0, True, 0), (1.5, 0.4, True, 0),
        (2.0, 1.0, False, 1), (2.0, 0.4, False, 1), (2.0, 1.0, True, 0), (2.0, 0.4, True, 0),
        (4.5, 1.0, False, 3), (4.5, 0.4, False, 7), (4.5, 1.0, True, 3), (4.5, 0.4, True, 7),
    ],
)
def test_segment_counts(seconds, hop, drop_short, expected):
    wave = _noise(seconds)
    out = logfbank_segments(wave, hop_seconds=hop, drop_short=drop_short)
    assert out.shape == (expected, 197, 40)
    assert out.dtype == np.float32
    assert num_segments(len(wave), hop, drop_short=drop_short) == expected


@pytest.mark.once
def test_segments_equal_psf_on_each_segment(utterances):
    """One logfbank pass per utterance gives exactly psf run on every segment separately."""
    for wave in utterances:
        for hop in (1.0, 0.4):
            fast = logfbank_segments(wave, hop_seconds=hop)
            starts = features.segment_starts(len(wave), hop)
            signal = np.zeros(max(len(wave), 32000))
            signal[: len(wave)] = wave
            slow = np.stack([psf_logfbank(signal[s : s + 32000], **PSF) for s in starts])
            np.testing.assert_array_equal(fast, slow.astype(np.float32))
    multi = features.logfbank_segments_multi(utterances[-1], hops=(1.0, 0.4))
    np.testing.assert_array_equal(multi[0], logfbank_segments(utterances[-1], hop_seconds=1.0))
    np.testing.assert_array_equal(multi[1], logfbank_segments(utterances[-1], hop_seconds=0.4))


@pytest.mark.once
def test_short_utterance_is_zero_padded():
    wave = _noise(1.5, seed=1)
    padded = np.concatenate([wave, np.zeros(8000, np.int16)])
    expected = psf_logfbank(padded.astype(np.float64), **PSF).astype(np.float32)
    np.testing.assert_array_equal(logfbank_segments(wave)[0], expected)


@pytest.mark.once
def test_scale_convention_and_resampling(utterances):
    wave = utterances[1]
    as_int = logfbank_segments(wave)
    np.testing.assert_array_equal(as_int, logfbank_segments(wave.astype(np.float32) / 32768))
    np.testing.assert_array_equal(as_int, logfbank_segments(wave / 32768.0))
    # 48 kHz audio is resampled to 16 kHz: same segment count, nearly the same features.
    from scipy.signal import resample_poly

    up = resample_poly(wave / 32768.0, 3, 1)
    resampled = logfbank_segments(up, sample_rate=48000)
    assert resampled.shape == as_int.shape
    assert np.median(np.abs(resampled - as_int)) < 0.05


@pytest.mark.once
@pytest.mark.parametrize(
    "wave, match",
    [
        (np.zeros(0, np.int16), "empty"),
        (np.zeros((100, 2), np.int16), "1-D"),
        (np.full(100, np.nan), "NaN"),
        (np.full(100, 300.0), r"\[-1, 1\]"),
    ],
)
def test_bad_waveforms_raise(wave, match):
    with pytest.raises(UserError, match=match):
        logfbank_segments(wave)


# ------------------------------------------------------------------------------ LogFBank


def _frontend() -> keras.Model:
    """LogFBank in a functional model: predict() compiles it once per input length (fast on
    JAX, where eager ops compile one by one)."""
    inputs = keras.Input((None,))
    return keras.Model(inputs, LogFBank()(inputs))


def test_logfbank_layer_matches_psf(utterances):
    """In-graph float32 features within 1e-3 of python_speech_features (float64)."""
    model = _frontend()
    worst = 0.0
    for wave in utterances:
        reference = psf_logfbank(wave, **PSF)
        out = model.predict(wave[None].astype(np.float32) / 32768, verbose=0)[0]
        assert out.shape == reference.shape
        worst = max(worst, float(np.abs(out - reference).max()))
    assert worst < 1e-3


def test_logfbank_layer_eager_int16_and_float_agree(utterances):
    layer = LogFBank()
    wave = utterances[0]
    as_float = ops.convert_to_numpy(layer(wave[None].astype(np.float32) / 32768))[0]
    as_int = ops.convert_to_numpy(layer(wave[None]))[0]
    np.testing.assert_allclose(as_int, as_float, rtol=0, atol=1e-5)  # float32 rounding
    assert np.abs(as_float - psf_logfbank(wave, **PSF)).max() < 1e-3


def test_logfbank_layer_on_segments(utterances):
    """A batch of 2-s segments gives the (n, 197, 40) features logfbank_segments computes."""
    wave = utterances[-1]
    segments = np.stack([wave[s : s + 32000] for s in features.segment_starts(len(wave), 0.4)])
    inputs = keras.Input((32000,))
    model = keras.Model(inputs, LogFBank()(inputs))
    assert model.output.shape == (None, 197, 40)
    out = model.predict(segments.astype(np.float32) / 32768, verbose=0, batch_size=4)
    expected = logfbank_segments(wave, hop_seconds=0.4)
    assert out.shape == expected.shape
    assert np.abs(out - expected).max() < 1e-3


def test_logfbank_layer_edge_lengths_and_silence():
    model = _frontend()
    for n in (1, 640, 641, 32001):
        wave = _noise(n / 16000, seed=n)
        out = model.predict(wave[None].astype(np.float32) / 32768, verbose=0)[0]
        reference = psf_logfbank(wave, **PSF)
        assert out.shape == reference.shape == (features.num_frames(n), 40)
        assert np.abs(out - reference).max() < 1e-3
    silent = model.predict(np.zeros((2, 1000), np.float32), verbose=0)
    np.testing.assert_allclose(silent, np.log(np.finfo(float).eps), rtol=1e-6)


@pytest.mark.parametrize(
    "winlen, winstep",
    [(0.03, 0.01), (0.04, 0.005), (0.025, 0.01)],
    ids=["3-chunk-window", "8-chunk-window", "fft-fallback"],
)
def test_logfbank_layer_other_windows(winlen, winstep):
    """Windows of 3 and 8 steps (chunked DFT) and of 2.5 steps (framing + rfft fallback)."""
    inputs = keras.Input((None,))
    model = keras.Model(inputs, LogFBank(winlen=winlen, winstep=winstep)(inputs))
    wave = _noise(0.37, seed=5)
    out = model.predict(wave[None].astype(np.float32) / 32768, verbose=0)[0]
    reference = psf_logfbank(wave, **{**PSF, "winlen": winlen, "winstep": winstep})
    assert out.shape == reference.shape
    assert np.abs(out - reference).max() < 1e-3


@pytest.mark.parametrize(
    "nfilt, highfreq, preemph",
    [(26, None, 0.97), (64, 8000, 0.0), (40, 4000, 0.95)],
    ids=["26-filters-nyquist", "64-filters-no-preemphasis", "preemph-0.95"],
)
def test_logfbank_layer_other_filterbanks(nfilt, highfreq, preemph):
    """Other filterbanks (one or two filter groups) and pre-emphasis coefficients."""
    inputs = keras.Input((None,))
    layer = LogFBank(nfilt=nfilt, highfreq=highfreq, preemph=preemph)
    model = keras.Model(inputs, layer(inputs))
    wave = _noise(1.23, seed=nfilt)
    out = model.predict(wave[None].astype(np.float32) / 32768, verbose=0)[0]
    reference = psf_logfbank(wave, **{**PSF, "nfilt": nfilt, "highfreq": highfreq,
                                      "preemph": preemph})
    assert out.shape == reference.shape == (features.num_frames(len(wave)), nfilt)
    assert np.abs(out - reference).max() < 1e-3


@pytest.mark.once
@pytest.mark.parametrize("nfilt, highfreq", [(40, 4000), (26, 8000), (64, 8000), (3, 4000)])
def test_filter_groups_cover_every_filter_once(nfilt, highfreq):
    """The grouped filterbank products equal the dense one; the default does half the work."""
    dense = features.filterbank(nfilt=nfilt, highfreq=highfreq).T.astype(np.float32)
    groups = logfbank._filter_groups(dense)
    power = np.random.default_rng(0).random((7, dense.shape[0])).astype(np.float32)
    grouped = np.concatenate([power[:, lo:hi] @ w for lo, hi, w in groups], axis=1)
    np.testing.assert_allclose(grouped, power @ dense, rtol=1e-5)
    macs = sum(w.size for _, _, w in groups)
    assert sum(w.shape[1] for _, _, w in groups) == nfilt
    if (nfilt, highfreq) == (40, 4000):
        assert len(groups) == 2 and macs == 4952 and LogFBank()._filters.size == 10200


def test_logfbank_layer_serializes(tmp_path):
    inputs = keras.Input((None,))
    model = keras.Model(inputs, LogFBank(name="frontend")(inputs))
    path = tmp_path / "frontend.keras"
    model.save(path)
    loaded = keras.saving.load_model(path)
    assert loaded.get_layer("frontend").get_config() == model.get_layer("frontend").get_config()
    wave = _noise(0.5, seed=3)[None].astype(np.float32) / 32768
    np.testing.assert_array_equal(loaded.predict(wave, verbose=0), model.predict(wave, verbose=0))


@pytest.mark.skipif(keras.backend.backend() != "tensorflow", reason="tf.function: TF backend")
def test_logfbank_layer_dynamic_length_in_tf_function():
    import tensorflow as tf

    layer = LogFBank()
    fn = tf.function(layer, input_signature=[tf.TensorSpec([None, None], tf.float32)])
    for n in (500, 32000, 45678):
        wave = _noise(n / 16000, seed=n)
        out = fn(tf.constant(wave[None].astype(np.float32) / 32768)).numpy()[0]
        reference = psf_logfbank(wave, **PSF)
        assert out.shape == reference.shape
        assert np.abs(out - reference).max() < 1e-3


# ------------------------------------------------------------------------------- padding


@pytest.mark.once
def test_repeat_padding_fills_a_short_utterance_without_silence(utterances):
    """A 0.7-s utterance: zero padding gives log(eps) frames, repeat padding none; the frames
    whose window lies in the utterance are the same bit for bit."""
    wave = utterances[0][:11200]  # the first 0.7 s of the shortest EmoDB utterance
    zero = logfbank_segments(wave)
    repeat = logfbank_segments(wave, padding="repeat")
    assert zero.shape == repeat.shape == (1, 197, 40) and repeat.dtype == np.float32
    assert zero.min() < -20  # digital silence: log(eps) = -36
    assert repeat.min() > -20
    inside = (len(wave) - features.FRAME_LENGTH) // features.FRAME_STEP + 1  # 67 frames
    np.testing.assert_array_equal(repeat[0, :inside], zero[0, :inside])
    assert not np.array_equal(repeat[0, inside:], zero[0, inside:])
    # repeat = python_speech_features on the waveform tiled to 2 s
    tiled = np.tile(wave.astype(np.float64), 3)[:32000]
    np.testing.assert_array_equal(repeat[0], psf_logfbank(tiled, **PSF).astype(np.float32))
    # every hop gives the same single segment; float input in [-1, 1] the same as int16
    for hops in ((1.0,), (1.0, 0.4)):
        for seg in features.logfbank_segments_multi(wave, hops=hops, padding="repeat"):
            np.testing.assert_array_equal(seg, repeat)
    np.testing.assert_array_equal(
        logfbank_segments(wave.astype(np.float32) / 32768, padding="repeat"), repeat)


@pytest.mark.once
def test_repeat_padding_of_odd_lengths():
    """One sample, a length that does not divide 2 s, and one sample short of 2 s."""
    for n in (1, 641, 12345, 31999):
        wave = _noise(n / 16000, seed=n)
        tiled = np.tile(wave.astype(np.float64), -(-32000 // n))[:32000]
        expected = psf_logfbank(tiled, **PSF).astype(np.float32)
        np.testing.assert_array_equal(logfbank_segments(wave, padding="repeat")[0], expected)
    np.testing.assert_array_equal(features.pad_to_segment(np.arange(3.0), 7, "repeat"),
                                  [0, 1, 2, 0, 1, 2, 0])
    np.testing.assert_array_equal(features.pad_to_segment(np.arange(3.0), 7, "zero"),
                                  [0, 1, 2, 0, 0, 0, 0])


@pytest.mark.once
def test_padding_changes_nothing_but_the_short_segment(utterances):
    """Utterances of 2 s or more, and drop_short, give the same segments for both paddings;
    "zero" is the default and the existing result."""
    for wave in [_noise(2.0), _noise(4.5, seed=3), *utterances[2:]]:
        for hop in (1.0, 0.4):
            zero = logfbank_segments(wave, hop_seconds=hop)
            np.testing.assert_array_equal(
                logfbank_segments(wave, hop_seconds=hop, padding="repeat"), zero)
            np.testing.assert_array_equal(
                logfbank_segments(wave, hop_seconds=hop, padding="zero"), zero)
    short = _noise(1.5, seed=1)
    for padding in ("zero", "repeat"):  # drop_short wins: no segment
        assert logfbank_segments(short, drop_short=True, padding=padding).shape == (0, 197, 40)
        assert all(s.shape == (0, 197, 40) for s in features.logfbank_segments_multi(
            short, drop_short=True, padding=padding))
    zero_padded = np.concatenate([short, np.zeros(8000, np.int16)]).astype(np.float64)
    np.testing.assert_array_equal(logfbank_segments(short, padding="zero")[0],
                                  psf_logfbank(zero_padded, **PSF).astype(np.float32))


@pytest.mark.once
@pytest.mark.parametrize("padding", ["reflect", "", None, "Repeat"])
def test_unknown_padding_raises(padding):
    with pytest.raises(UserError, match="padding must be one of zero, repeat"):
        logfbank_segments(_noise(1.0), padding=padding)
    with pytest.raises(UserError, match="padding must be one of"):
        features.logfbank_segments_multi(_noise(3.0), padding=padding)
