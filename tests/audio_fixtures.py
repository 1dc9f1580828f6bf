"""Odd and broken audio files for the audio and predict tests, generated in temporary folders.

Nothing here is a test: ``test_audio.py`` and ``test_predict.py`` import these helpers.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import soundfile as sf

TONES = (300.0, 1000.0, 2000.0)


def tone(seconds: float, sample_rate: int, freqs=TONES, amplitude: float = 0.2) -> np.ndarray:
    """A sum of sines (each of ``amplitude``), float64, ``round(seconds * sample_rate)`` long."""
    t = np.arange(round(seconds * sample_rate)) / sample_rate
    return sum(amplitude * np.sin(2 * np.pi * f * t + k) for k, f in enumerate(freqs))


# name: (file suffix, libsndfile format, subtype, sample rate, channels, tolerance at 16 kHz)
FORMAT_CASES = {
    "wav_u8": ("wav", "WAV", "PCM_U8", 16000, 1, 1.2 / 128),
    "wav_pcm16": ("wav", "WAV", "PCM_16", 16000, 1, 1e-4),
    "wav_pcm24": ("wav", "WAV", "PCM_24", 16000, 1, 1e-6),
    "wav_pcm32": ("wav", "WAV", "PCM_32", 16000, 1, 1e-6),
    "wav_float": ("wav", "WAV", "FLOAT", 16000, 1, 1e-6),
    "wav_double": ("wav", "WAV", "DOUBLE", 16000, 1, 1e-6),
    "flac16": ("flac", "FLAC", "PCM_16", 16000, 1, 1e-4),
    "flac24_48k": ("flac", "FLAC", "PCM_24", 48000, 1, 2e-3),
    "wav_stereo": ("wav", "WAV", "PCM_16", 16000, 2, 1e-4),
    "wav_stereo_44k": ("wav", "WAV", "PCM_16", 44100, 2, 2e-3),
    "wav_8k": ("wav", "WAV", "PCM_16", 8000, 1, 2e-3),
    "wav_22k": ("wav", "WAV", "PCM_16", 22050, 1, 2e-3),
    "wav_44k": ("wav", "WAV", "PCM_16", 44100, 1, 2e-3),
    "wav_48k": ("wav", "WAV", "PCM_16", 48000, 1, 2e-3),
    "ogg_vorbis": ("ogg", "OGG", "VORBIS", 16000, 1, 0.05),
    "aiff_24": ("aiff", "AIFF", "PCM_24", 16000, 1, 1e-6),
}

STEREO_RIGHT_GAIN = 0.5  # the right channel of stereo cases is the left one times this gain


def write_case(folder, name: str, signal_at=None, seconds: float = 1.0) -> Path:
    """Write the ``FORMAT_CASES[name]`` file holding ``signal_at(sample_rate)`` (default a tone).

    Stereo files hold the signal on the left and ``STEREO_RIGHT_GAIN`` times it on the right, so
    their mono mix is ``(1 + gain) / 2`` times the signal.
    """
    suffix, fmt, subtype, rate, channels, _ = FORMAT_CASES[name]
    signal = signal_at(rate) if signal_at is not None else tone(seconds, rate)
    if channels == 2:
        signal = np.stack([signal, STEREO_RIGHT_GAIN * signal], axis=1)
    path = Path(folder) / f"{name}.{suffix}"
    sf.write(path, signal, rate, format=fmt, subtype=subtype)
    return path


def mono_gain(name: str) -> float:
    """How much the mono mix of a ``FORMAT_CASES`` file scales its signal."""
    return (1 + STEREO_RIGHT_GAIN) / 2 if FORMAT_CASES[name][4] == 2 else 1.0


def _valid_wav_bytes(seconds: float = 0.5, rate: int = 16000, subtype: str = "PCM_16") -> bytes:
    import io

    buffer = io.BytesIO()
    sf.write(buffer, tone(seconds, rate), rate, format="WAV", subtype=subtype)
    return buffer.getvalue()


def make_bad_files(folder) -> dict[str, Path]:
    """Broken or unusable audio files, each named after its problem; ``missing`` is not created.

    Returns:
        ``{case: path}`` for: missing, directory, empty, truncated_header, header_only (a
        complete header and no samples), text (a text file named .wav), nan and inf (float
        WAVs holding such samples), truncated_flac (a FLAC cut in half), broken_symlink.
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    files = {name: folder / f"{name}.wav" for name in (
        "missing", "directory", "empty", "truncated_header", "header_only", "text", "nan", "inf",
        "broken_symlink")}
    files["truncated_flac"] = folder / "truncated_flac.flac"
    files["directory"].mkdir()
    files["empty"].write_bytes(b"")
    wav = _valid_wav_bytes()
    files["truncated_header"].write_bytes(wav[:20])
    files["header_only"].write_bytes(wav[:44])
    files["text"].write_text("This is not audio.\n" * 20, encoding="utf-8")
    for name, bad in (("nan", np.nan), ("inf", np.inf)):
        signal = tone(0.5, 16000)
        signal[1234] = bad
        sf.write(files[name], signal, 16000, subtype="FLOAT")
    full_flac = folder / "full.flac"
    sf.write(full_flac, tone(3.0, 16000), 16000, format="FLAC")
    data = full_flac.read_bytes()
    files["truncated_flac"].write_bytes(data[: len(data) // 2])
    full_flac.unlink()
    files["broken_symlink"].symlink_to(folder / "nowhere.wav")
    return files


def speechlike(n: int, sample_rate: int, start: int = 0, seed: int = 0) -> np.ndarray:
    """Deterministic speech-like test signal (amplitude-modulated tones and noise), float64.

    Sample ``k`` depends only on ``start + k`` and the seed block, so a long file can be written
    in pieces. Values stay within about [-0.6, 0.6].
    """
    t = (start + np.arange(n)) / sample_rate
    envelope = 0.5 + 0.5 * np.sin(2 * np.pi * 0.37 * t) * np.sin(2 * np.pi * 3.1 * t)
    # instantaneous pitch 140 + 40 sin(2 pi 0.11 t) Hz, integrated analytically
    phase = 2 * np.pi * 140 * t - (40 / 0.11) * np.cos(2 * np.pi * 0.11 * t)
    voiced = sum(np.sin(k * phase) / k for k in range(1, 6))
    rng = np.random.default_rng([seed, start])
    noise = rng.standard_normal(n)
    return 0.25 * envelope * voiced + 0.02 * noise


def write_long_wav(path, seconds: float, sample_rate: int = 8000, block_seconds: float = 60.0,
                   subtype: str = "PCM_16") -> Path:
    """Write a long mono WAV block by block in bounded memory (an hour at 8 kHz: 58 MB, ~2 s).

    One ``block_seconds`` block of :func:`speechlike` signal is computed once and written again
    and again with a different gain each time.
    """
    path = Path(path)
    total = round(seconds * sample_rate)
    size = round(block_seconds * sample_rate)
    pattern = np.clip(speechlike(min(size, total), sample_rate), -1, 1)
    with sf.SoundFile(path, "w", samplerate=sample_rate, channels=1, format="WAV",
                      subtype=subtype) as handle:
        for k, start in enumerate(range(0, total, size)):
            n = min(size, total - start)
            handle.write(pattern[:n] * (0.4 + 0.6 * ((k * 7) % 10) / 9))
    return path


def expected_length(frames: int, sample_rate: int, target_sr: int = 16000) -> int:
    """The resampled length ``ceil(frames * target_sr / sample_rate)``."""
    return math.ceil(frames * target_sr / sample_rate)
