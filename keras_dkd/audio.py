"""Reading user audio: any file libsndfile reads, as 16 kHz mono float32, whole or streamed.

keras-dkd models are trained on 16 kHz mono 16-bit speech. This module turns whatever a user
hands in (8/16/24/32-bit or float WAV, FLAC, OGG, AIFF, ..., any channel count and sample rate)
into that signal:

- channels are mixed down by their mean;
- the signal is resampled to ``target_sr`` with a polyphase low-pass filter, the one
  :func:`scipy.signal.resample_poly` designs (Kaiser window, beta 5, 10 zero crossings per side);
  the streamed and the whole-file paths compute the very same samples;
- samples beyond full scale (float files, resampling overshoot) are clipped to [-1, 1], as they
  would be in the 16-bit audio the models were trained on.

Problems with a file never surface as a libsndfile exception or a traceback: they raise
:class:`keras_dkd.errors.AudioError`, whose one-line message names the file, the problem and what
to do. What is refused:

- a missing path, a directory, anything that is not a regular file (a FIFO, a device: refused
  from ``stat`` before any ``open``, which would block on a FIFO), an empty (0-byte) file;
- anything libsndfile cannot open: a truncated header, a text file named ``.wav``, ...;
- a header sample rate outside 1 kHz .. 384 kHz (:data:`MIN_SAMPLE_RATE`,
  :data:`MAX_SAMPLE_RATE`): a damaged header, refused before anything is allocated;
- a file that holds no samples (0 frames);
- a WAV whose body is shorter than its header's data size (an interrupted copy or download;
  libsndfile would silently read what is there): a prediction on part of a recording would look
  like one on the whole;
- NaN or infinite samples (a corrupt float file). They are refused rather than silently replaced,
  because no replacement value is right and a prediction on patched audio would look trustworthy.

Digital silence and very short files are read normally (the caller decides what to do with them).

Example:
    >>> from keras_dkd.audio import read_audio, stream_audio   # doctest: +SKIP
    >>> waveform = read_audio("speech_48k_stereo.flac")         # doctest: +SKIP
    >>> with stream_audio("one_hour.wav", block_seconds=30) as stream:   # doctest: +SKIP
    ...     for block in stream:
    ...         ...
"""

from __future__ import annotations

import math
import os
import stat
from functools import lru_cache
from pathlib import Path

import numpy as np

from keras_dkd.errors import AudioError, DatasetError

TARGET_SAMPLE_RATE = 16000
DEFAULT_BLOCK_SECONDS = 30.0
MIN_SAMPLE_RATE = 1_000
"""Files whose header gives a lower sample rate are refused (a damaged header)."""
MAX_SAMPLE_RATE = 384_000
"""Files whose header gives a higher sample rate are refused: a damaged header (2,147,483,647 Hz)
would otherwise make the resampler allocate gigabytes."""

__all__ = [
    "MAX_SAMPLE_RATE",
    "MIN_SAMPLE_RATE",
    "TARGET_SAMPLE_RATE",
    "AudioStream",
    "Resampler",
    "read_audio",
    "resample",
    "stream_audio",
]


# --------------------------------------------------------------------------------------------
# Resampling
# --------------------------------------------------------------------------------------------


@lru_cache(maxsize=4)  # odd rates need filters of megabytes: keep few
def _lowpass(up: int, down: int) -> np.ndarray:
    """The anti-aliasing filter of ``resample_poly(x, up, down)``, scaled by ``up`` (float64)."""
    from scipy.signal import firwin

    max_rate = max(up, down)
    half_len = 10 * max_rate
    taps = firwin(2 * half_len + 1, 1.0 / max_rate, window=("kaiser", 5.0)) * up
    taps.setflags(write=False)
    return taps


def _ceil_div(a: int, b: int) -> int:
    return -((-a) // b)


class Resampler:
    """Streaming rational resampler, sample-exact with :func:`scipy.signal.resample_poly`.

    Output sample ``m`` is the low-pass filtered, zero-stuffed input evaluated at input time
    ``m * orig_sr / target_sr``, with zeros assumed before the first and after the last input
    sample (``resample_poly``'s default ``padtype="constant"``). Feeding the signal in blocks of
    any size through :meth:`push` and calling :meth:`finish` yields, concatenated, the same
    ``ceil(n * target_sr / orig_sr)`` samples as resampling the whole signal at once: the
    resampler keeps the input samples that later outputs still need (one filter length).

    Args:
        orig_sr: sample rate of the input, in Hz (a positive integer).
        target_sr: sample rate of the output, in Hz (a positive integer).

    Example:
        >>> r = Resampler(48000, 16000)
        >>> parts = [r.push(np.zeros(4800)), r.push(np.zeros(4800)), r.finish()]
        >>> sum(len(p) for p in parts)
        3200
    """

    def __init__(self, orig_sr: int, target_sr: int):
        orig_sr, target_sr = int(orig_sr), int(target_sr)
        if orig_sr < 1 or target_sr < 1:
            raise ValueError(f"sample rates must be positive, got {orig_sr} and {target_sr}")
        g = math.gcd(orig_sr, target_sr)
        self.up = target_sr // g
        self.down = orig_sr // g
        self.identity = self.up == self.down == 1
        self.half_len = 10 * max(self.up, self.down)
        self._taps = None if self.identity else _lowpass(self.up, self.down)
        self._buffer = np.zeros(0, dtype=np.float64)  # input samples from _buffer_start on
        self._buffer_start = 0
        self._n_in = 0  # input samples received
        self._m = 0  # next output sample
        self._finished = False

    def output_length(self, n_in: int) -> int:
        """Number of output samples for ``n_in`` input samples: ``ceil(n_in * up / down)``."""
        return _ceil_div(n_in * self.up, self.down)

    def push(self, samples) -> np.ndarray:
        """Add input samples; return the output samples that are now complete (float64)."""
        if self._finished:
            raise RuntimeError("push() after finish()")
        samples = np.asarray(samples, dtype=np.float64).reshape(-1)
        if self.identity:
            self._n_in += samples.size
            return samples.copy()
        self._buffer = np.concatenate([self._buffer, samples])
        self._n_in += samples.size
        # Output m needs input up to floor((m * down + half_len) / up) <= n_in - 1.
        m_end = (self._n_in * self.up - 1 - self.half_len) // self.down + 1
        return self._emit(m_end)

    def finish(self) -> np.ndarray:
        """Return the remaining output samples (the input is taken to be zero after its end)."""
        if self._finished:
            return np.zeros(0, dtype=np.float64)
        self._finished = True
        if self.identity:
            return np.zeros(0, dtype=np.float64)
        return self._emit(self.output_length(self._n_in))

    def _emit(self, m_end: int) -> np.ndarray:
        m0 = self._m
        if m_end <= m0:
            return np.zeros(0, dtype=np.float64)
        up, down, half = self.up, self.down, self.half_len
        i0 = _ceil_div(m0 * down - half, up)  # first input the block needs (may be < 0)
        i1 = ((m_end - 1) * down + half) // up + 1  # one past the last input it needs
        xs = self._slice(i0, i1)
        # Shift the filter so that output j of upfirdn lands on output sample base + j.
        n_pre = (i0 * up - half) % down
        base = (i0 * up - half - n_pre) // down
        taps = np.concatenate([np.zeros(n_pre), self._taps]) if n_pre else self._taps
        from scipy.signal import upfirdn

        y = upfirdn(taps, xs, up, down)[m0 - base : m_end - base]
        assert y.size == m_end - m0
        self._m = m_end
        # Drop the input that no later output needs.
        keep_from = max(_ceil_div(m_end * down - half, up), self._buffer_start)
        if keep_from > self._buffer_start:
            self._buffer = self._buffer[keep_from - self._buffer_start :]
            self._buffer_start = keep_from
        return y

    def _slice(self, i0: int, i1: int) -> np.ndarray:
        """Input samples ``[i0, i1)``, zero outside ``[0, n_in)``."""
        lead = max(0, -i0)
        start = max(i0, 0) - self._buffer_start
        stop = min(i1, self._n_in) - self._buffer_start
        assert start >= 0, "resampler dropped input it still needs"
        body = self._buffer[start:max(stop, start)]
        tail = i1 - max(i0, 0) - body.size
        if lead == 0 and tail == 0:
            return body
        return np.concatenate([np.zeros(lead), body, np.zeros(tail)])


def resample(waveform, orig_sr: int, target_sr: int = TARGET_SAMPLE_RATE) -> np.ndarray:
    """Resample a 1-D signal at once, as :class:`Resampler` does block by block.

    Args:
        waveform: 1-D array.
        orig_sr: its sample rate in Hz.
        target_sr: the wanted sample rate in Hz.

    Returns:
        float64 array of ``ceil(len(waveform) * target_sr / orig_sr)`` samples.

    Example:
        >>> resample(np.ones(441), 44100, 16000).shape
        (160,)
    """
    resampler = Resampler(orig_sr, target_sr)
    head = resampler.push(waveform)
    tail = resampler.finish()
    return np.concatenate([head, tail]) if tail.size else head


# --------------------------------------------------------------------------------------------
# Opening files
# --------------------------------------------------------------------------------------------


def _libsndfile_reason(error: Exception) -> str:
    reason = getattr(error, "error_string", None) or str(error) or type(error).__name__
    reason = " ".join(str(reason).split()).rstrip(".")
    for prefix in ("Error :", "Error:"):
        if reason.startswith(prefix):
            reason = reason[len(prefix):].strip()
    return reason


def _open(path: Path):
    """Open ``path`` with soundfile, turning every failure into an :class:`AudioError`."""
    import soundfile

    if not os.path.lexists(path):
        raise AudioError(path, "no such file; check the path")
    if not path.exists():
        raise AudioError(path, "is a broken symbolic link; point it at an existing audio file")
    if path.is_dir():
        raise AudioError(path, "is a directory, not an audio file; pass the audio files in it")
    try:
        info = path.stat()  # stat never blocks, unlike open() on a FIFO
    except OSError as error:
        raise AudioError(path, f"cannot be read ({error.strerror or error})") from None
    if not stat.S_ISREG(info.st_mode):
        raise AudioError(
            path,
            f"is not a regular file (a {_file_kind(info.st_mode)}); pass an audio file saved "
            "on disk",
        )
    if info.st_size == 0:
        raise AudioError(path, "is an empty file (0 bytes); re-export or re-record it")
    if not os.access(path, os.R_OK):
        raise AudioError(path, "cannot be read (permission denied); check its permissions")
    try:
        handle = soundfile.SoundFile(str(path))
    except Exception as error:  # libsndfile raises several types; none may reach the user
        raise AudioError(
            path,
            f"is not a readable audio file (libsndfile: {_libsndfile_reason(error)}); "
            "check that it is a complete WAV, FLAC, OGG or other libsndfile format",
        ) from None
    try:
        if handle.channels < 1:
            raise AudioError(
                path,
                f"has an invalid header ({handle.samplerate} Hz, {handle.channels} channels); "
                "re-export it",
            )
        if not MIN_SAMPLE_RATE <= handle.samplerate <= MAX_SAMPLE_RATE:
            raise AudioError(
                path,
                f"has a sample rate of {handle.samplerate:,} Hz in its header, outside "
                f"{MIN_SAMPLE_RATE:,}..{MAX_SAMPLE_RATE:,} Hz (a damaged header); re-export it "
                "at a usual rate such as 16,000 or 48,000 Hz",
            )
        if handle.frames == 0:
            raise AudioError(path, _NO_SAMPLES)
        truncated = wav_truncation(path)
        if truncated is not None:
            claimed, present = truncated
            rate, width = handle.samplerate, _frame_bytes(handle)
            raise AudioError(
                path,
                f"is truncated: its header announces {_seconds(claimed, rate, width)} of audio "
                f"but the file holds {_seconds(present, rate, width)} (an interrupted copy or "
                "download); re-export or re-download it",
            )
    except BaseException:
        handle.close()
        raise
    return handle


def _file_kind(mode: int) -> str:
    for test, kind in ((stat.S_ISFIFO, "FIFO / named pipe"), (stat.S_ISCHR, "character device"),
                       (stat.S_ISBLK, "block device"), (stat.S_ISSOCK, "socket")):
        if test(mode):
            return kind
    return "special file"


def _frame_bytes(handle) -> int | None:
    """Bytes per frame of an uncompressed PCM/float WAV, or None if unknown."""
    widths = {"PCM_U8": 1, "PCM_S8": 1, "PCM_16": 2, "PCM_24": 3, "PCM_32": 4, "FLOAT": 4,
              "DOUBLE": 8, "ULAW": 1, "ALAW": 1}
    width = widths.get(handle.subtype)
    return None if width is None else width * handle.channels


def _seconds(data_bytes: int, rate: int, frame_bytes: int | None) -> str:
    if not frame_bytes:
        return f"{data_bytes:,} bytes"
    seconds = data_bytes / frame_bytes / rate
    if seconds >= 3600:
        return f"{seconds / 3600:.1f} h"
    return f"{seconds:.2f} s"


_NO_SAMPLES = "holds no audio samples (0 frames); re-export or re-record it"


def _read_block(handle, path: Path, frames: int, position: int) -> np.ndarray:
    """Read up to ``frames`` frames as float32 (frames, channels), or raise AudioError."""
    try:
        return handle.read(frames, dtype="float32", always_2d=True)
    except Exception as error:
        where = f" after {position / handle.samplerate:.2f} s" if position else ""
        raise AudioError(
            path,
            f"is damaged or truncated: reading failed{where} "
            f"(libsndfile: {_libsndfile_reason(error)}); re-export or re-download it",
        ) from None


def _mono(block: np.ndarray, path: Path, position: int, sample_rate: int) -> np.ndarray:
    """Mix a (frames, channels) float32 block to float64 mono; refuse NaN and inf."""
    finite = np.isfinite(block)
    if not finite.all():
        first = int(np.argmin(finite.all(axis=1)))
        seconds = (position + first) / sample_rate
        raise AudioError(
            path,
            f"holds NaN or infinite samples (first at {seconds:.3f} s), a corrupt float file; "
            "repair or re-export it",
        )
    if block.shape[1] == 1:
        return block[:, 0].astype(np.float64)
    return block.astype(np.float64).mean(axis=1)


def _finish(samples: np.ndarray) -> np.ndarray:
    return np.clip(samples, -1.0, 1.0).astype(np.float32)


# --------------------------------------------------------------------------------------------
# Corpus files (the TFDS builders): strict 16 kHz mono 16-bit WAV
# --------------------------------------------------------------------------------------------


def read_corpus_wav(path, corpus: str, wrong_format: str, damaged: str) -> np.ndarray:
    """Read a corpus WAV that must be 16 kHz mono 16-bit, as int16 samples.

    Unlike :func:`read_audio` nothing is converted: a corpus file in another format, or a
    damaged one, means the corpus copy is wrong, and building a dataset from it would be too.

    Args:
        path: the WAV file.
        corpus: the corpus name that starts every message (``"EmoDB"``).
        wrong_format: what to do about a file of another rate or channel count.
        damaged: what to do about an unreadable, empty or truncated file.

    Returns:
        int16 array of the samples.

    Raises:
        DatasetError: ``"<corpus>: <path> <problem>: <remedy>"``, one line.
    """
    import soundfile

    path = Path(path)
    try:
        with soundfile.SoundFile(str(path)) as wav:
            rate, channels, frames = wav.samplerate, wav.channels, wav.frames
            if rate != TARGET_SAMPLE_RATE or channels != 1:
                raise DatasetError(
                    f"{corpus}: {path} is {rate} Hz with {channels} channel(s), expected "
                    f"16000 Hz mono: {wrong_format}"
                )
            audio = wav.read(dtype="int16")
    except DatasetError:
        raise
    except (RuntimeError, OSError) as error:  # soundfile.LibsndfileError is a RuntimeError
        raise DatasetError(
            f"{corpus}: cannot read {path} ({error}): the file is corrupt; {damaged}"
        ) from error
    if frames == 0:
        problem = "holds no samples"
    elif len(audio) != frames or wav_is_truncated(path):
        problem = "is truncated (shorter than its header says)"
    else:
        return audio
    raise DatasetError(f"{corpus}: {path} {problem}: {damaged}")


def wav_is_truncated(path) -> bool:
    """Whether a RIFF/WAVE file is shorter than its data chunk says (an interrupted copy).

    libsndfile silently reads what is there, so a half-extracted file would pass unnoticed.
    Files that are not RIFF/WAVE give False (libsndfile judges them).
    """
    return wav_truncation(path) is not None


def wav_truncation(path) -> tuple[int, int] | None:
    """``(bytes the data chunk announces, bytes present)`` of a truncated RIFF/WAVE file, else
    None (complete, not RIFF/WAVE, or a streamed file whose data size is left open)."""
    path = Path(path)
    with path.open("rb") as stream:
        head = stream.read(12)
        if len(head) < 12 or head[:4] != b"RIFF" or head[8:12] != b"WAVE":
            return None
        while len(chunk := stream.read(8)) == 8:
            size = int.from_bytes(chunk[4:], "little")
            if chunk[:4] == b"data":
                if size in (0, 0xFFFFFFFF):  # streamed files leave the size open
                    return None
                present = os.fstat(stream.fileno()).st_size - stream.tell()
                return (size, max(present, 0)) if size > present else None
            stream.seek(size + (size & 1), 1)
    return None


# --------------------------------------------------------------------------------------------
# Public API
# --------------------------------------------------------------------------------------------


def read_audio(path, target_sr: int = TARGET_SAMPLE_RATE) -> np.ndarray:
    """Read a whole audio file as a mono float32 waveform at ``target_sr``.

    Args:
        path: any file libsndfile reads (WAV of any bit depth, FLAC, OGG, AIFF, ...), with any
            number of channels and any sample rate.
        target_sr: the wanted sample rate in Hz (16 kHz, the models' rate, by default).

    Returns:
        float32 array of ``ceil(frames * target_sr / file_rate)`` samples in [-1, 1]. For files
        too long to hold in memory, use :func:`stream_audio`.

    Raises:
        AudioError: the file is missing, a directory, empty, unreadable, holds no samples, or
            holds NaN/inf samples. The message names the file and the fix.

    Example:
        >>> waveform = read_audio("03a01Fa.wav")   # doctest: +SKIP
        >>> waveform.dtype, waveform.ndim          # doctest: +SKIP
        (dtype('float32'), 1)
    """
    path = Path(path)
    with _open(path) as handle:
        rate = handle.samplerate
        data = _read_block(handle, path, -1, 0)
    if data.shape[0] == 0:
        raise AudioError(path, _NO_SAMPLES)
    mono = _mono(data, path, 0, rate)
    del data
    return _finish(resample(mono, rate, target_sr))


class AudioStream:
    """An open audio file read block by block as mono float32 at ``target_sr``.

    Iterating yields contiguous blocks: concatenated, they equal :func:`read_audio` of the same
    file (up to float rounding). Memory stays bounded by the block size, whatever the file's
    length. Use it as a context manager, or call :meth:`close`, to release the file.

    Attributes:
        path: the file (a ``Path``).
        sample_rate: the file's own sample rate in Hz.
        channels: the file's channel count.
        frames: the file's length in frames, from its header.
        target_sr: the sample rate of the blocks.
        num_samples: the total number of samples the blocks will hold.
        duration: the file's length in seconds.
    """

    def __init__(self, path, target_sr: int = TARGET_SAMPLE_RATE,
                 block_seconds: float = DEFAULT_BLOCK_SECONDS):
        if not block_seconds > 0:
            raise ValueError(f"block_seconds must be positive, got {block_seconds}")
        self.path = Path(path)
        self.target_sr = int(target_sr)
        self._handle = _open(self.path)
        self.sample_rate = self._handle.samplerate
        self.channels = self._handle.channels
        self.frames = self._handle.frames
        self._resampler = Resampler(self.sample_rate, self.target_sr)
        self.num_samples = self._resampler.output_length(self.frames)
        self.duration = self.frames / self.sample_rate
        self._block_frames = max(1, math.ceil(block_seconds * self.sample_rate))
        self._blocks = self._generate()

    def _generate(self):
        position = 0
        try:
            while True:
                if self._handle is None:  # closed by the caller
                    return
                data = _read_block(self._handle, self.path, self._block_frames, position)
                if data.shape[0] == 0:
                    break
                mono = _mono(data, self.path, position, self.sample_rate)
                position += data.shape[0]
                del data
                out = self._resampler.push(mono)
                if out.size:
                    yield _finish(out)
            if position == 0:
                raise AudioError(self.path, _NO_SAMPLES)
            out = self._resampler.finish()
            if out.size:
                yield _finish(out)
        finally:
            self.close()

    def __iter__(self):
        return self

    def __next__(self) -> np.ndarray:
        return next(self._blocks)

    def close(self) -> None:
        """Close the file (iteration then stops)."""
        handle, self._handle = self._handle, None
        if handle is not None:
            handle.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc_info):
        self._blocks.close()
        self.close()
        return False

    def __repr__(self):
        return (f"AudioStream({str(self.path)!r}, {self.sample_rate} Hz, {self.channels} ch, "
                f"{self.duration:.2f} s -> {self.target_sr} Hz mono)")


def stream_audio(path, target_sr: int = TARGET_SAMPLE_RATE,
                 block_seconds: float = DEFAULT_BLOCK_SECONDS) -> AudioStream:
    """Open an audio file for reading block by block as mono float32 at ``target_sr``.

    The file is opened and checked at once (a missing, empty or unreadable file raises here);
    problems found while reading (NaN samples, a damaged body) raise during iteration. Memory is
    bounded by ``block_seconds`` whatever the file's length.

    Args:
        path: any file libsndfile reads, any channel count and sample rate.
        target_sr: the blocks' sample rate in Hz (16 kHz by default).
        block_seconds: how much of the file to read at a time, in seconds of audio.

    Returns:
        An :class:`AudioStream`: an iterator of contiguous float32 blocks in [-1, 1] whose
        concatenation equals :func:`read_audio` of the file, and a context manager.

    Raises:
        AudioError: as :func:`read_audio`, naming the file.

    Example:
        >>> with stream_audio("one_hour.flac", block_seconds=60) as stream:   # doctest: +SKIP
        ...     total = sum(block.size for block in stream)
    """
    return AudioStream(path, target_sr=target_sr, block_seconds=block_seconds)
