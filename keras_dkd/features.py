"""Log filter-bank features: 2-s segments of 197 x 40 log mel energies.

The network sees the features of DKDFMH and Head Fusion: python_speech_features ``logfbank`` with
a 0.04-s window, a 0.01-s step, 40 mel filters between 0 and 4000 Hz, a 1024-point FFT and its
default pre-emphasis (0.97) and rectangular window. A 2-s segment at 16 kHz gives 197 frames.

Two implementations compute the same numbers:

- :func:`logfbank_segments` (NumPy, python_speech_features itself): cuts an utterance into
  segments. It feeds the training and evaluation pipeline (:mod:`keras_dkd.data`) and
  ``keras-dkd predict``.
- :class:`LogFBank` (in :mod:`keras_dkd.logfbank`): a Keras layer (``keras.ops`` only) computing
  the features in-graph from a
  waveform batch, on every backend, in float32. It lets an exported model take raw audio. It
  matches python_speech_features within 1e-4 on the log energies of every EmoDB utterance
  (7.5e-5 measured, on every backend).

**Sample scale.** python_speech_features is fed int16-scale samples (full scale 32768), the scale
of the 16-bit corpora; the log energies therefore sit about 20.8 (= 2 ln 32768) above those of
a [-1, 1] signal. Both implementations follow one rule: integer inputs (int16 samples) are used
as they are, floating-point inputs are taken to be in [-1, 1] (what soundfile,
:func:`keras_dkd.audio.read_audio` and ``tf.audio.decode_wav`` return) and multiplied by 32768.
An int16 waveform and the same waveform divided by 32768 give identical segments (and, in
:class:`LogFBank`, features equal to float32 rounding).

**Segments.** With ``L`` = 2 s and hop ``H`` (both in samples at 16 kHz), an utterance of ``N``
samples gives segments starting at ``0, H, 2H, ...`` that fit entirely in it:
``1 + (N - L) // H`` segments when ``N >= L`` (a tail shorter than a hop is dropped). An
utterance shorter than ``L`` is padded at the end to one segment, so that no utterance drops
out of a test set. With ``drop_short=True`` utterances of ``L`` samples or fewer give no
segment, as in the Head Fusion code. For example, at hop 1.0 / 0.4 s: 1.5 s -> 1 / 1 segment
(0 / 0 with ``drop_short``), 2.0 s -> 1 / 1 (0 / 0), 4.5 s -> 3 / 7 (3 / 7).

**Padding.** ``padding`` says how the one segment of a short utterance is filled:

- ``"zero"`` (the default, the paper's): zeros after the utterance. Digital silence gives
  frames of ``log(eps)`` ≈ -36 where speech lies between about 0 and 20: the network can read
  the utterance's length off the padding.
- ``"repeat"``: the utterance's waveform is repeated (tiled) from its start until the segment is
  full, then framed like any 2-s signal. No silent frame appears; the frames whose window lies in
  the first copy equal the zero-padded ones bit for bit.

Padding concerns only that single segment of an utterance shorter than ``L``: longer utterances
(``N >= L``) give the same segments whatever ``padding`` says, and with ``drop_short=True`` a
short utterance gives no segment at all (dropping wins over padding).

Example:
    >>> import numpy as np
    >>> from keras_dkd.features import logfbank_segments
    >>> wave = (np.random.default_rng(0).normal(size=72000) * 1000).astype("int16")  # 4.5 s
    >>> logfbank_segments(wave, hop_seconds=0.4).shape
    (7, 197, 40)
"""

from __future__ import annotations

import math

import numpy as np

from keras_dkd.errors import UserError

SAMPLE_RATE = 16000
"""The sample rate every feature is computed at; other rates are resampled to it."""
WINLEN = 0.04
WINSTEP = 0.01
NFILT = 40
NFFT = 1024
LOWFREQ = 0
HIGHFREQ = 4000
PREEMPH = 0.97
FRAME_LENGTH = 640  # WINLEN * SAMPLE_RATE
FRAME_STEP = 160  # WINSTEP * SAMPLE_RATE
SEGMENT_SECONDS = 2.0
SEGMENT_FRAMES = 197
TRAIN_HOP_SECONDS = 1.0
EVAL_HOP_SECONDS = 0.4
INT16_SCALE = 32768.0
"""Float waveforms in [-1, 1] are multiplied by this before the features are computed."""

FEATURE_PARAMS = {
    "implementation": "python_speech_features.logfbank",
    "sample_rate": SAMPLE_RATE,
    "winlen": WINLEN,
    "winstep": WINSTEP,
    "nfilt": NFILT,
    "nfft": NFFT,
    "lowfreq": LOWFREQ,
    "highfreq": HIGHFREQ,
    "preemph": PREEMPH,
    "scale": "int16",
}
"""Everything that determines a frame's features (part of the feature cache key)."""

PADDINGS = ("zero", "repeat")
"""How the one segment of an utterance shorter than a segment is filled (module docstring)."""

_EPS = float(np.finfo(float).eps)  # python_speech_features' floor for zero energies

__all__ = [
    "LogFBank",
    "FEATURE_PARAMS",
    "PADDINGS",
    "SEGMENT_FRAMES",
    "check_padding",
    "filterbank",
    "logfbank",
    "logfbank_segments",
    "logfbank_segments_multi",
    "num_frames",
    "num_segments",
    "pad_to_segment",
    "segment_starts",
    "to_int16_scale",
]


# ----------------------------------------------------------------------------------------------
# NumPy side (python_speech_features)


def to_int16_scale(waveform, sample_rate: int = SAMPLE_RATE) -> np.ndarray:
    """Return a mono waveform as float64 samples on the int16 scale, at 16 kHz.

    Args:
        waveform: 1-D array. Integer dtypes are int16 samples; floating dtypes are in [-1, 1].
        sample_rate: its sample rate; anything but 16000 is resampled with
            :func:`scipy.signal.resample_poly`.

    Returns:
        float64 array, full scale 32768.

    Raises:
        UserError: not 1-D, empty, non-finite, a float signal far beyond [-1, 1] (int16-scale
            floats) or a bad sample rate.
    """
    x = np.asarray(waveform)
    if x.ndim != 1:
        raise UserError(
            f"a waveform must be 1-D (mono samples), got shape {x.shape}; mix channels down first"
        )
    if x.size == 0:
        raise UserError("the waveform is empty; pass at least one sample")
    if np.issubdtype(x.dtype, np.integer):
        x = x.astype(np.float64)
    elif np.issubdtype(x.dtype, np.floating):
        x = x.astype(np.float64)
        if not np.all(np.isfinite(x)):
            raise UserError("the waveform holds NaN or infinite samples; pass finite audio")
        peak = float(np.max(np.abs(x)))
        if peak > 2.0:
            raise UserError(
                f"a float waveform must be in [-1, 1] but its peak is {peak:.1f}; pass int16 "
                "samples as an integer array or divide them by 32768"
            )
        x = x * INT16_SCALE
    else:
        raise UserError(f"unsupported waveform dtype {x.dtype}; pass int16 or float samples")
    sample_rate = int(sample_rate)
    if sample_rate <= 0:
        raise UserError(f"sample rate must be positive, got {sample_rate}")
    if sample_rate != SAMPLE_RATE:
        from scipy.signal import resample_poly

        g = math.gcd(SAMPLE_RATE, sample_rate)
        x = resample_poly(x, SAMPLE_RATE // g, sample_rate // g)
    return x


def _samples(seconds: float, name: str) -> int:
    n = int(round(float(seconds) * SAMPLE_RATE))
    if n <= 0:
        raise UserError(f"{name} must be positive, got {seconds}")
    return n


def segment_starts(
    n_samples: int,
    hop_seconds: float = TRAIN_HOP_SECONDS,
    segment_seconds: float = SEGMENT_SECONDS,
    drop_short: bool = False,
) -> list[int]:
    """Start samples (at 16 kHz) of the segments of an utterance of ``n_samples`` samples.

    See the module docstring for the rule. A start of 0 for an utterance shorter than a segment
    means "padded to one segment" (with zeros or by repetition: see ``padding`` in
    :func:`logfbank_segments`).
    """
    length = _samples(segment_seconds, "segment_seconds")
    hop = _samples(hop_seconds, "hop_seconds")
    n_samples = int(n_samples)
    if n_samples < length or (drop_short and n_samples <= length):
        return [] if drop_short else [0]
    return list(range(0, n_samples - length + 1, hop))


def num_segments(
    n_samples: int,
    hop_seconds: float = TRAIN_HOP_SECONDS,
    segment_seconds: float = SEGMENT_SECONDS,
    drop_short: bool = False,
) -> int:
    """The number of segments :func:`logfbank_segments` returns for ``n_samples`` at 16 kHz."""
    return len(segment_starts(n_samples, hop_seconds, segment_seconds, drop_short))


def num_frames(n_samples: int) -> int:
    """python_speech_features' frame count for ``n_samples``: ``1 + ceil((n - 640) / 160)``.

    Signals of at most 640 samples give one frame; the last frame is zero-padded.
    """
    n_samples = int(n_samples)
    if n_samples <= FRAME_LENGTH:
        return 1
    return 1 + -(-(n_samples - FRAME_LENGTH) // FRAME_STEP)


def _psf_logfbank(x: np.ndarray) -> np.ndarray:
    from python_speech_features import logfbank as psf_logfbank

    return psf_logfbank(
        x,
        samplerate=SAMPLE_RATE,
        winlen=WINLEN,
        winstep=WINSTEP,
        nfilt=NFILT,
        nfft=NFFT,
        lowfreq=LOWFREQ,
        highfreq=HIGHFREQ,
        preemph=PREEMPH,
    )


def logfbank(waveform, sample_rate: int = SAMPLE_RATE) -> np.ndarray:
    """python_speech_features log filter-bank of a whole utterance, ``(num_frames, 40)`` float32.

    Args:
        waveform: 1-D int16 samples, or floats in [-1, 1].
        sample_rate: resampled to 16 kHz when different.

    Returns:
        float32 array ``(num_frames(n), 40)``.
    """
    return _psf_logfbank(to_int16_scale(waveform, sample_rate)).astype(np.float32)


def check_padding(padding) -> str:
    """Return ``padding`` if it is one of :data:`PADDINGS`, else raise a :class:`UserError`."""
    if padding not in PADDINGS:
        raise UserError(f"padding must be one of {', '.join(PADDINGS)}, got {padding!r}")
    return padding


def pad_to_segment(x: np.ndarray, length: int, padding: str = "zero") -> np.ndarray:
    """A signal shorter than ``length`` samples filled up to ``length`` (float64).

    ``"zero"`` appends zeros; ``"repeat"`` tiles the signal from its start (``x, x, x, ...``,
    the last copy cut short) so that the segment holds no digital silence.
    """
    n = x.shape[0]
    if padding == "repeat":
        return np.tile(np.asarray(x, np.float64), -(-length // n))[:length]
    padded = np.zeros(length, np.float64)
    padded[:n] = x
    return padded


def _segments(x: np.ndarray, hops, segment_seconds: float, drop_short: bool,
              padding: str = "zero") -> list:
    """Segments of an int16-scale 16 kHz signal for several hops, from one logfbank pass."""
    check_padding(padding)
    length = _samples(segment_seconds, "segment_seconds")
    seg_frames = num_frames(length)
    n = x.shape[0]
    starts = [segment_starts(n, h, segment_seconds, drop_short) for h in hops]
    if n < length:
        if drop_short:
            return [np.zeros((0, seg_frames, NFILT), np.float32) for _ in hops]
        one = _psf_logfbank(pad_to_segment(x, length, padding)).astype(np.float32)[None]
        return [one for _ in hops]
    aligned = length % FRAME_STEP == 0 and all(
        s % FRAME_STEP == 0 for ss in starts for s in ss
    )
    if not aligned:  # frames of the whole signal do not line up with segments: one by one
        return [
            np.stack([_psf_logfbank(x[s : s + length]) for s in ss]).astype(np.float32)
            if ss
            else np.zeros((0, seg_frames, NFILT), np.float32)
            for ss in starts
        ]
    # One pass over the signal up to the end of the last segment. A segment's frames are the
    # whole signal's frames from start / 160 on, bit for bit, except its first frame: computed
    # on its own, the segment's first sample is not pre-emphasised against the sample before
    # it. That frame is recomputed from the segment's first 640 samples.
    end = max((ss[-1] + length for ss in starts if ss), default=0)
    if end == 0:
        return [np.zeros((0, seg_frames, NFILT), np.float32) for _ in hops]
    frames = _psf_logfbank(x[:end])
    first = {}
    for s in sorted({s for ss in starts for s in ss if s > 0}):
        first[s] = _psf_logfbank(x[s : s + FRAME_LENGTH])[0]
    out = []
    for ss in starts:
        seg = np.empty((len(ss), seg_frames, NFILT), np.float32)
        for i, s in enumerate(ss):
            f = s // FRAME_STEP
            seg[i] = frames[f : f + seg_frames]
            if s > 0:
                seg[i, 0] = first[s]
        out.append(seg)
    return out


def logfbank_segments(
    waveform,
    sample_rate: int = SAMPLE_RATE,
    hop_seconds: float = TRAIN_HOP_SECONDS,
    segment_seconds: float = SEGMENT_SECONDS,
    drop_short: bool = False,
    padding: str = "zero",
) -> np.ndarray:
    """Cut an utterance into 2-s segments of log filter-bank features (python_speech_features).

    The result equals running ``python_speech_features.logfbank`` on each segment separately
    (the segmenting rule is in the module docstring), but costs one pass over the utterance.

    Args:
        waveform: 1-D int16 samples, or floats in [-1, 1] (multiplied by 32768).
        sample_rate: the waveform's rate; anything else than 16000 is resampled to 16 kHz.
        hop_seconds: the step between segment starts (1.0 in training, 0.4 in evaluation).
        segment_seconds: the segment length (2.0 -> 197 frames).
        drop_short: give no segment for utterances of at most ``segment_seconds`` (Head
            Fusion) instead of padding a shorter one to a single segment.
        padding: how an utterance shorter than ``segment_seconds`` fills its one segment:
            ``"zero"`` (digital silence) or ``"repeat"`` (the waveform tiled). Longer utterances
            are not affected, and ``drop_short`` wins (no segment either way).

    Returns:
        float32 array ``(n_segments, 197, 40)`` (``n_segments`` may be 0 with ``drop_short``).

    Raises:
        UserError: an empty, non-1-D or non-finite waveform, non-positive durations or an
            unknown ``padding``.

    Example:
        >>> logfbank_segments(np.zeros(24000, "int16")).shape   # 1.5 s, padded
        (1, 197, 40)
    """
    x = to_int16_scale(waveform, sample_rate)
    return _segments(x, [hop_seconds], segment_seconds, drop_short, padding)[0]


def logfbank_segments_multi(
    waveform,
    sample_rate: int = SAMPLE_RATE,
    hops=(TRAIN_HOP_SECONDS, EVAL_HOP_SECONDS),
    segment_seconds: float = SEGMENT_SECONDS,
    drop_short: bool = False,
    padding: str = "zero",
) -> list[np.ndarray]:
    """:func:`logfbank_segments` for several hops at once, from a single logfbank pass.

    ``padding`` is :func:`logfbank_segments`' (``"zero"`` or ``"repeat"``).

    Returns:
        A list with one float32 ``(n_segments, 197, 40)`` array per hop, in ``hops`` order.
    """
    x = to_int16_scale(waveform, sample_rate)
    return _segments(x, list(hops), segment_seconds, drop_short, padding)


def filterbank(
    nfilt: int = NFILT,
    nfft: int = NFFT,
    sample_rate: int = SAMPLE_RATE,
    lowfreq: float = LOWFREQ,
    highfreq: float = HIGHFREQ,
) -> np.ndarray:
    """python_speech_features' triangular mel filterbank, ``(nfilt, nfft // 2 + 1)`` float64."""
    from python_speech_features.base import get_filterbanks

    return get_filterbanks(nfilt, nfft, sample_rate, lowfreq, highfreq)


# The in-graph implementation lives in keras_dkd.logfbank; it is part of this module's API.
from keras_dkd.logfbank import LogFBank  # noqa: E402
