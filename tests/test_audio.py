"""keras_dkd.audio: every format reads right, every bad file fails with a one-line AudioError.

Reading audio uses no Keras backend, so every test here runs once (the TensorFlow pass).
"""

from __future__ import annotations

import math
import os
import sys
import tempfile
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from scipy.signal import resample_poly

from keras_dkd.audio import Resampler, read_audio, resample, stream_audio
from keras_dkd.errors import AudioError, UserError

sys.path.insert(0, str(Path(__file__).resolve().parent))
import audio_fixtures as fx  # noqa: E402

pytestmark = pytest.mark.once

EDGE = 320  # samples at 16 kHz (20 ms) at each end where the resampling filter sees the padding


def _assert_clean_error(error: AudioError, path: Path):
    message = str(error)
    assert str(path) in message
    assert "\n" not in message
    assert isinstance(error, UserError)
    assert error.path == str(path)
    # no libsndfile exception chained to it (the CLI shows no traceback, but callers may)
    assert error.__cause__ is None
    assert error.__context__ is None or error.__suppress_context__


# ---------------------------------------------------------------------------------------------
# Bad files


BAD_CASES = {
    "missing": "no such file",
    "directory": "is a directory",
    "empty": "empty file",
    "truncated_header": "not a readable audio file",
    "header_only": "no audio samples",
    "text": "not a readable audio file",
    "nan": "NaN or infinite",
    "inf": "NaN or infinite",
    "truncated_flac": "damaged or truncated",
    "broken_symlink": "broken symbolic link",
}


@pytest.fixture(scope="module")
def bad_files(tmp_path_factory):
    return fx.make_bad_files(tmp_path_factory.mktemp("bad"))


@pytest.mark.parametrize("case", sorted(BAD_CASES))
def test_bad_file_read_audio(bad_files, case):
    path = bad_files[case]
    with pytest.raises(AudioError) as info:
        read_audio(path)
    _assert_clean_error(info.value, path)
    assert BAD_CASES[case] in info.value.problem


@pytest.mark.parametrize("case", sorted(BAD_CASES))
def test_bad_file_stream_audio(bad_files, case):
    path = bad_files[case]
    with pytest.raises(AudioError) as info:
        with stream_audio(path, block_seconds=0.1) as stream:
            for _ in stream:
                pass
    _assert_clean_error(info.value, path)
    assert BAD_CASES[case] in info.value.problem


def test_nan_error_says_where(bad_files):
    with pytest.raises(AudioError, match=r"first at 0\.077 s"):
        read_audio(bad_files["nan"])  # sample 1234 at 16 kHz


@pytest.mark.skipif(os.geteuid() == 0, reason="root can read any file")
def test_unreadable_file(tmp_path):
    path = fx.write_case(tmp_path, "wav_pcm16")
    path.chmod(0)
    try:
        with pytest.raises(AudioError, match="permission denied") as info:
            read_audio(path)
        _assert_clean_error(info.value, path)
    finally:
        path.chmod(0o644)


def test_truncated_wav_body_is_refused(tmp_path):
    """A WAV cut inside its data (an interrupted copy) is refused, not read in part."""
    whole = fx.write_case(tmp_path, "wav_pcm16")
    cut = tmp_path / "cut.wav"
    cut.write_bytes(whole.read_bytes()[: 44 + 2 * 5000 + 1])
    for read in (read_audio, lambda p: list(stream_audio(p))):
        with pytest.raises(AudioError, match=r"is truncated: its header announces 1\.00 s of "
                                             r"audio but the file holds 0\.31 s") as info:
            read(cut)
        _assert_clean_error(info.value, cut)


# ---------------------------------------------------------------------------------------------
# Formats, rates, channels


@pytest.fixture(scope="module")
def tone_16k():
    return fx.tone(1.0, 16000)


@pytest.mark.parametrize("case", sorted(fx.FORMAT_CASES))
def test_formats_read_as_16k_mono(tmp_path, tone_16k, case):
    path = fx.write_case(tmp_path, case)
    rate = fx.FORMAT_CASES[case][3]
    waveform = read_audio(path)
    assert waveform.dtype == np.float32 and waveform.ndim == 1
    assert waveform.size == fx.expected_length(rate, rate)  # 1 s of audio -> 16000 samples
    assert np.all(np.isfinite(waveform)) and np.abs(waveform).max() <= 1.0
    expected = fx.mono_gain(case) * tone_16k
    tolerance = fx.FORMAT_CASES[case][5]
    np.testing.assert_allclose(waveform[EDGE:-EDGE], expected[EDGE:-EDGE], rtol=0, atol=tolerance)


@pytest.mark.parametrize("rate", [8000, 11025, 22050, 44100, 48000, 96000])
def test_resampling_matches_scipy(tmp_path, rate):
    """Whatever the file's rate, the 16 kHz signal is exactly scipy's resample_poly of it."""
    path = tmp_path / f"noise_{rate}.wav"
    rng = np.random.default_rng(rate)
    sf.write(path, 0.3 * rng.standard_normal(rate // 2 + 7), rate, subtype="FLOAT")
    written, _ = sf.read(path, dtype="float32")
    expected = np.clip(resample_poly(written.astype(np.float64), 16000, rate), -1, 1)
    np.testing.assert_allclose(read_audio(path), expected, rtol=0, atol=1e-6)


def test_emodb_file_reads_exactly(emodb_wavs):
    path = emodb_wavs[0]
    pcm, rate = sf.read(path, dtype="int16")
    assert rate == 16000
    np.testing.assert_array_equal(read_audio(path), pcm.astype(np.float32) / 32768)


def test_emodb_file_at_other_rates(tmp_path, emodb_wavs):
    """An EmoDB file converted to 44.1 kHz stereo 24-bit reads back as the original."""
    original = read_audio(emodb_wavs[0]).astype(np.float64)
    up = resample_poly(original, 44100, 16000)
    path = tmp_path / "emodb_44k_stereo.wav"
    sf.write(path, np.stack([up, up], axis=1), 44100, subtype="PCM_24")
    back = read_audio(path)
    assert abs(back.size - original.size) <= 1
    n = min(back.size, original.size)
    # the round trip loses only what lies near 8 kHz, the old Nyquist frequency
    error = back[EDGE : n - EDGE] - original[EDGE : n - EDGE]
    assert np.sqrt(np.mean(error**2)) < 0.02 * np.sqrt(np.mean(original**2))


def test_silence_and_full_scale(tmp_path):
    silent = tmp_path / "silence.wav"
    sf.write(silent, np.zeros(8000), 16000, subtype="PCM_16")
    np.testing.assert_array_equal(read_audio(silent), np.zeros(8000, np.float32))
    loud = tmp_path / "loud.wav"
    sf.write(loud, np.array([0.5, 3.0, -7.0, 1.0, -1.0]), 16000, subtype="FLOAT")
    np.testing.assert_array_equal(read_audio(loud), np.array([0.5, 1, -1, 1, -1], np.float32))
    square = tmp_path / "square_48k.wav"  # resampling overshoots full scale; clipped
    sf.write(square, np.sign(np.sin(np.arange(4800) / 7.0)) * 0.999, 48000, subtype="PCM_16")
    assert np.abs(read_audio(square)).max() <= 1.0


@pytest.mark.parametrize("frames,rate", [(1, 16000), (1, 8000), (3, 44100), (800, 8000)])
def test_very_short_files(tmp_path, frames, rate):
    path = tmp_path / "short.wav"
    sf.write(path, np.full(frames, 0.25), rate, subtype="PCM_16")
    waveform = read_audio(path)
    assert waveform.size == fx.expected_length(frames, rate)
    assert np.all(np.isfinite(waveform))


def test_target_rate(tmp_path):
    path = fx.write_case(tmp_path, "wav_44k")
    assert read_audio(path, target_sr=8000).size == 8000
    assert read_audio(path, target_sr=44100).size == 44100


# ---------------------------------------------------------------------------------------------
# Streaming


@pytest.mark.parametrize("rate,channels,block_seconds", [
    (16000, 1, 0.37), (8000, 1, 0.05), (44100, 2, 0.013), (48000, 1, 1.0), (22050, 3, 0.2),
    (11025, 1, 10.0),
])
def test_stream_equals_whole(tmp_path, rate, channels, block_seconds):
    """Concatenated blocks equal the whole-file read, for blocks longer or much shorter than
    the resampling filter (0.013 s at 44.1 kHz is 574 frames; the filter spans 8821/160)."""
    path = tmp_path / "speech.wav"
    signal = fx.speechlike(round(3.3 * rate), rate)
    sf.write(path, np.stack([signal * (c + 1) / channels for c in range(channels)], 1), rate,
             subtype="PCM_16")
    whole = read_audio(path)
    with stream_audio(path, block_seconds=block_seconds) as stream:
        assert stream.sample_rate == rate and stream.channels == channels
        assert stream.num_samples == whole.size
        blocks = list(stream)
    assert len(blocks) >= 2
    assert all(b.dtype == np.float32 and b.ndim == 1 for b in blocks)
    np.testing.assert_allclose(np.concatenate(blocks), whole, rtol=0, atol=1e-6)


def test_stream_reports_nan_in_a_later_block(tmp_path):
    path = tmp_path / "late_nan.wav"
    signal = fx.tone(2.0, 16000)
    signal[25000] = np.nan
    sf.write(path, signal, 16000, subtype="FLOAT")
    stream = stream_audio(path, block_seconds=0.5)
    received = []
    with pytest.raises(AudioError, match=r"late_nan\.wav: holds NaN .* \(first at 1\.562 s\)"):
        for block in stream:
            received.append(block)
    assert sum(b.size for b in received) == 24000  # the three clean blocks came out first
    assert stream._handle is None  # the file was closed


def test_stream_opens_eagerly_and_closes(bad_files, tmp_path):
    with pytest.raises(AudioError):
        stream_audio(bad_files["text"])  # raised at the call, not at the first block
    stream = stream_audio(fx.write_case(tmp_path, "wav_pcm16"))
    stream.close()
    assert list(stream) == []
    with pytest.raises(ValueError):
        stream_audio(fx.write_case(tmp_path, "wav_pcm16"), block_seconds=0)


@pytest.mark.parametrize("rate", [8000, 22050, 44100, 48000, 7999, 96001])
def test_resampler_blocks_match_scipy(rate):
    rng = np.random.default_rng(rate)
    x = rng.standard_normal(rate // 3 + 11)
    expected = resample_poly(x, 16000, rate)
    np.testing.assert_allclose(resample(x, rate, 16000), expected, rtol=0, atol=1e-12)
    resampler = Resampler(rate, 16000)
    parts, start = [], 0
    while start < x.size:
        size = int(rng.integers(1, 3000))
        parts.append(resampler.push(x[start : start + size]))
        start += size
    parts.append(resampler.finish())
    np.testing.assert_allclose(np.concatenate(parts), expected, rtol=0, atol=1e-12)


# ---------------------------------------------------------------------------------------------
# Property-based: any rate, channel count, sample type and length


_SUBTYPES = {"WAV": ["PCM_U8", "PCM_16", "PCM_24", "PCM_32", "FLOAT", "DOUBLE"],
             "FLAC": ["PCM_S8", "PCM_16", "PCM_24"]}
_COMMON_RATES = [8000, 11025, 16000, 22050, 24000, 32000, 44100, 48000, 96000]


@st.composite
def audio_files(draw):
    fmt = draw(st.sampled_from(sorted(_SUBTYPES)))
    subtype = draw(st.sampled_from(_SUBTYPES[fmt]))
    rate = draw(st.one_of(st.sampled_from(_COMMON_RATES), st.integers(1000, 100_000)))
    channels = draw(st.integers(1, 3))
    frames = draw(st.integers(0, 3000))
    seed = draw(st.integers(0, 2**32 - 1))
    scale = draw(st.sampled_from([0.0, 1e-4, 0.5, 1.0, 4.0]))  # 4.0: beyond full scale
    poison = draw(st.sampled_from([None, np.nan, np.inf, -np.inf])) if subtype in (
        "FLOAT", "DOUBLE") else None
    return fmt, subtype, rate, channels, frames, seed, scale, poison


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(spec=audio_files(), block_seconds=st.sampled_from([0.003, 0.05, 1.0]))
def test_property_read_audio(spec, block_seconds):
    """Any file soundfile writes reads as finite float32 mono at 16 kHz of the right length,
    equal to its streamed reading, or fails with a one-line AudioError naming it."""
    fmt, subtype, rate, channels, frames, seed, scale, poison = spec
    data = scale * np.random.default_rng(seed).uniform(-1, 1, (frames, channels))
    if poison is not None and frames:
        data[frames // 2, channels - 1] = poison
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / f"case.{fmt.lower()}"
        try:
            sf.write(path, data, rate, format=fmt, subtype=subtype)
        except sf.LibsndfileError:
            assume(False)  # a combination libsndfile cannot write (e.g. FLAC at odd rates)
        try:
            waveform = read_audio(path)
        except AudioError as error:
            assert str(path) in str(error) and "\n" not in str(error)
            assert frames == 0 or (poison is not None)
            return
        assert frames > 0 and poison is None
        assert waveform.dtype == np.float32 and waveform.ndim == 1
        assert abs(waveform.size - math.ceil(frames * 16000 / rate)) <= 1
        assert np.all(np.isfinite(waveform)) and np.abs(waveform).max() <= 1.0
        if scale == 0.0:
            assert not waveform.any()
        with stream_audio(path, block_seconds=block_seconds) as stream:
            streamed = np.concatenate(list(stream))
        np.testing.assert_allclose(streamed, waveform, rtol=0, atol=1e-6)
