"""Log filter-bank features: 2-s segments of 197 x 40 log mel energies.

The network sees the features of DKDFMH and Head Fusion: python_speech_features ``logfbank`` with
a 0.04-s window, a 0.01-s step, 40 mel filters between 0 and 4000 Hz, a 1024-point FFT and its
default pre-emphasis (0.97) and rectangular window. A 2-s segment at 16 kHz gives 197 frames.

Two implementations compute the same numbers:

- :func:`logfbank_segments` (NumPy, python_speech_features itself): cuts an utterance into
  segments. It feeds the training and evaluation pipeline (:mod:`keras_dkd.data`) and
  ``keras-dkd predict``.
- :class:`LogFBank`: a Keras layer (``keras.ops`` only) computing the features in-graph from a
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

import keras
import numpy as np
from keras import ops

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


# ----------------------------------------------------------------------------------------------
# In-graph side (keras.ops)


def _ceil_div_at_least(n, d: int, minimum: int):
    """``max(ceil(n / d), minimum)`` for a Python int or a symbolic (TensorFlow) length."""
    if isinstance(n, int):
        return max(-(-n // d), minimum)
    return ops.maximum((n + (d - 1)) // d, minimum)


def _window_sum(a, width: int):
    """``out[:, i] = a[:, i] + ... + a[:, i + width - 1]`` along axis 1 (static offsets only)."""
    if width & (width - 1) == 0:  # power of two: log2(width) additions by doubling
        span = 1
        while span < width:
            a = a[:, :-span] + a[:, span:]
            span *= 2
        return a
    total = a[:, : 1 - width]
    for j in range(1, width):
        total = total + a[:, j : (j - width + 1) or None]
    return total


def _filter_groups(filters: np.ndarray) -> list:
    """Split a ``(bins, nfilt)`` filterbank into at most two groups of consecutive filters.

    Mel filters are triangles over consecutive bins: the low ones are a few bins wide, the high
    ones a few dozen. Each group is multiplied only with the bins its filters touch, which
    halves the multiply-adds of the default filterbank (4,952 instead of 10,200 per frame).

    Returns:
        A list of ``(first_bin, stop_bin, weights)`` with ``weights`` of shape
        ``(stop_bin - first_bin, filters_in_group)``, in filter order.
    """
    bins, nfilt = filters.shape

    def span(a, b):
        rows = np.nonzero(filters[:, a:b].any(axis=1))[0]
        return (int(rows[0]), int(rows[-1]) + 1) if rows.size else (0, 1)

    def cost(a, b):
        lo, hi = span(a, b)
        return (hi - lo) * (b - a)

    best = min(range(1, nfilt), key=lambda s: cost(0, s) + cost(s, nfilt), default=None)
    if best is None or cost(0, best) + cost(best, nfilt) > 0.75 * bins * nfilt:
        return [(0, bins, filters)]
    groups = []
    for a, b in ((0, best), (best, nfilt)):
        lo, hi = span(a, b)
        groups.append((lo, hi, np.ascontiguousarray(filters[lo:hi, a:b])))
    return groups


@keras.saving.register_keras_serializable(package="keras_dkd")
class LogFBank(keras.layers.Layer):
    """python_speech_features ``logfbank`` as a Keras layer (``keras.ops`` only, float32).

    Computes, for each waveform of a batch, what ``python_speech_features.logfbank`` computes
    (pre-emphasis, framing with a zero-padded last frame, rectangular window, power spectrum
    ``|DFT_nfft|^2 / nfft``, triangular mel filterbank, zeros replaced by machine epsilon,
    natural log), with the DKDFMH parameters by default. The number of samples may vary between
    calls (it may be dynamic inside a ``tf.function``).

    Sample scale: integer inputs are int16 samples; float inputs are in [-1, 1] and are
    taken as multiplied by 32768, like in :func:`logfbank_segments` (the two agree to float32
    rounding).

    How (and why it is fast): a 640-sample window at a 160-sample step is four 160-sample
    chunks, each shared by four frames. The layer computes, with matrix products, the DFT of
    every chunk at the 255 FFT bins the filters use (bins above 4 kHz are never computed), with
    a phase relative to the start of the signal; a frame's spectrum is then the sum of its four
    chunks' (a constant phase per frame does not change the power). Each chunk is split into its
    symmetric and antisymmetric halves, whose DFTs are a cosine and a sine transform of 80
    samples, which halves the products again: 80 x 2 x 255 multiply-adds per frame instead of
    the 640 x 2 x 255 of a frame-by-frame DFT, and matrix products run far closer to the CPU's
    peak than an FFT. The mel filters are applied in two groups, each to the bins it touches
    (half the products of one dense filterbank matrix). Pre-emphasis is computed as
    ``(100 x[n] - 97 x[n-1]) / 100``, exact in float32 for int16-valued samples. On EmoDB the
    log energies stay within 1e-4 of the float64 reference on every backend. Parameters whose
    window is not a whole number of even steps fall back to framing and ``keras.ops.rfft``.

    Args:
        sample_rate: the input's sample rate (16000 for keras-dkd models).
        winlen: window length in seconds.
        winstep: window step in seconds.
        nfilt: number of mel filters.
        nfft: FFT size (at least the window length in samples).
        lowfreq: lowest filter edge in Hz.
        highfreq: highest filter edge in Hz (default 4000, as in DKDFMH; None = Nyquist).
        preemph: pre-emphasis coefficient (0 disables it).
        **kwargs: base layer arguments (``name``, ...). The layer always computes in float32.

    Input shape:
        ``(batch, samples)``.

    Output shape:
        ``(batch, frames, nfilt)`` with ``frames = 1 + ceil((samples - winlen) / winstep)`` (1
        when ``samples <= winlen``, in samples); a 2-s segment at 16 kHz gives ``(197, 40)``.

    Example:
        >>> layer = LogFBank()
        >>> layer(np.zeros((2, 32000), "float32")).shape
        (2, 197, 40)
    """

    def __init__(
        self,
        sample_rate: int = SAMPLE_RATE,
        winlen: float = WINLEN,
        winstep: float = WINSTEP,
        nfilt: int = NFILT,
        nfft: int = NFFT,
        lowfreq: float = LOWFREQ,
        highfreq: float | None = HIGHFREQ,
        preemph: float = PREEMPH,
        **kwargs,
    ):
        kwargs["dtype"] = "float32"
        super().__init__(**kwargs)
        self.sample_rate = int(sample_rate)
        self.winlen = float(winlen)
        self.winstep = float(winstep)
        self.nfilt = int(nfilt)
        self.nfft = int(nfft)
        self.lowfreq = float(lowfreq)
        self.highfreq = None if highfreq is None else float(highfreq)
        self.preemph = float(preemph)
        from python_speech_features.sigproc import round_half_up

        self.frame_length = int(round_half_up(self.winlen * self.sample_rate))
        self.frame_step = int(round_half_up(self.winstep * self.sample_rate))
        if self.frame_length <= 0 or self.frame_step <= 0:
            raise ValueError("winlen and winstep must give at least one sample")
        if self.nfft < self.frame_length:
            raise ValueError(f"nfft ({self.nfft}) must be at least the window length "
                             f"({self.frame_length} samples)")
        fb = filterbank(self.nfilt, self.nfft, self.sample_rate, self.lowfreq,
                        self.highfreq or self.sample_rate / 2)
        # Only the FFT bins some filter uses are computed (bins 1..256 for highfreq 4000).
        used = np.nonzero(fb.any(axis=0))[0]
        first, last = (int(used[0]), int(used[-1])) if used.size else (0, 0)
        bins = np.arange(first, last + 1)
        self._filters = np.ascontiguousarray(fb[:, first : last + 1].T, dtype=np.float32)
        self._filter_groups = _filter_groups(self._filters)
        # Pre-emphasis with integer coefficients when preemph has two decimals (0.97 -> 100, 97).
        scaled = self.preemph * 100.0
        if abs(scaled - round(scaled)) < 1e-9:
            self._pre_scale, self._pre_coef = 100.0, float(round(scaled))
        else:
            self._pre_scale, self._pre_coef = 1.0, self.preemph
        self._log_offset = float(np.log(self.nfft * self._pre_scale**2))
        step = self.frame_step
        self._chunked = self.frame_length % step == 0 and step % 2 == 0
        if self._chunked:
            # Chunk c (samples step*c .. step*c + step - 1), centred on m = (step - 1) / 2:
            #   DFT_k = e^{-i w_k (step c + m)} (sum_r u_r cos(w_k (r - m))
            #                                    - i sum_r v_r sin(w_k (r - m))),
            # r < step / 2, u_r = x_r + x_{step-1-r}, v_r = x_r - x_{step-1-r}, w_k = 2 pi k / nfft.
            half = step // 2
            centred = np.arange(half) - (step - 1) / 2.0
            angle = 2.0 * np.pi * np.outer(centred, bins) / self.nfft
            self._cos = np.cos(angle).astype(np.float32)
            self._sin = np.sin(angle).astype(np.float32)
            # e^{-i w_k step c} depends on c modulo nfft / gcd(step, nfft); exact integer phases.
            period = self.nfft // math.gcd(step, self.nfft)
            phase = (np.arange(period)[:, None] * step * bins[None, :]) % self.nfft
            self._period = period
            self._rot_cos = np.cos(2.0 * np.pi * phase / self.nfft).astype(np.float32)
            self._rot_sin = np.sin(2.0 * np.pi * phase / self.nfft).astype(np.float32)
        else:
            self._bins = (first, last + 1)
        self.supports_masking = False

    def compute_output_shape(self, input_shape):
        batch, samples = input_shape[0], input_shape[-1]
        frames = None
        if samples is not None:
            samples = int(samples)
            frames = 1 if samples <= self.frame_length else (
                1 + -(-(samples - self.frame_length) // self.frame_step)
            )
        return (batch, frames, self.nfilt)

    def _pre_emphasis(self, inputs, length=None):
        """Pre-emphasised float32 signal and the log of its scale relative to int16 samples.

        With ``length`` (at least the number of samples, at most that plus ``frame_length``)
        the pre-emphasised signal is zero-padded to ``length`` samples.
        """
        x = inputs
        # Float inputs in [-1, 1] are not multiplied by 32768 (a power of two: it changes no
        # rounding); the factor is added to the log energies instead.
        if keras.backend.is_int_dtype(keras.backend.standardize_dtype(x.dtype)):
            log_scale = 0.0
        else:
            log_scale = -2.0 * float(np.log(INT16_SCALE))
        x = ops.cast(x, "float32")
        a, b = self._pre_scale, self._pre_coef
        if self.preemph == 0.0:
            y = x * a
        else:
            y = ops.concatenate([x[:, :1] * a, x[:, 1:] * a - x[:, :-1] * b], axis=1)
        if length is not None:
            y = ops.pad(y, [[0, 0], [0, self.frame_length]])[:, :length]
        return y, log_scale

    def _chunks(self, inputs, n_chunks):
        """Pre-emphasised chunks ``(batch, n_chunks, step)``, zero-padded to ``n_chunks * step``."""
        y, log_scale = self._pre_emphasis(inputs, n_chunks * self.frame_step)
        return ops.reshape(y, (ops.shape(y)[0], n_chunks, self.frame_step)), log_scale

    def _power_chunked(self, inputs):
        step = self.frame_step
        per = self.frame_length // step
        # psf pads the signal with zeros to (frames - 1) * step + length samples, that is
        # max(ceil(n / step), per) chunks; frame i is made of chunks i .. i + per - 1.
        n_chunks = _ceil_div_at_least(ops.shape(inputs)[1], step, per)
        c, log_scale = self._chunks(inputs, n_chunks)
        half = step // 2
        c = ops.reshape(c, (ops.shape(c)[0], n_chunks, 2, half))
        lo, hi = c[:, :, 0], ops.flip(c[:, :, 1], axis=-1)
        u = ops.matmul(lo + hi, ops.convert_to_tensor(self._cos))
        v = ops.matmul(lo - hi, ops.convert_to_tensor(self._sin))
        index = ops.arange(n_chunks) % self._period
        rot_cos = ops.take(ops.convert_to_tensor(self._rot_cos), index, axis=0)
        rot_sin = ops.take(ops.convert_to_tensor(self._rot_sin), index, axis=0)
        # Chunk spectra with a phase relative to sample 0 (up to a constant factor and the sign
        # of the imaginary part, neither of which changes the power of a sum).
        powers = []
        for lo, hi, _ in self._filter_groups:  # each group's bins, straight from u and v
            u_g, v_g, c_g, s_g = u[..., lo:hi], v[..., lo:hi], rot_cos[:, lo:hi], rot_sin[:, lo:hi]
            real = _window_sum(c_g * u_g - s_g * v_g, per)
            imag = _window_sum(s_g * u_g + c_g * v_g, per)
            powers.append(real * real + imag * imag)
        return powers, log_scale

    def _power_fft(self, inputs):
        length, step = self.frame_length, self.frame_step
        n = ops.shape(inputs)[1]
        if length % step == 0:
            per = length // step
            c, log_scale = self._chunks(inputs, _ceil_div_at_least(n, step, per))
            frames = ops.concatenate(
                [c[:, k : (k - per + 1) or None] for k in range(per)], axis=-1)
        else:
            y, log_scale = self._pre_emphasis(inputs)
            if isinstance(n, int):
                count = 1 if n <= length else 1 + -(-(n - length) // step)
            else:
                count = ops.maximum(1 + (n - length + step - 1) // step, 1)
            y = ops.pad(y, [[0, 0], [0, length + step]])
            index = ops.arange(count)[:, None] * step + ops.arange(length)[None, :]
            frames = ops.take(y, index, axis=1)
        real, imag = ops.rfft(frames, fft_length=self.nfft)
        first, stop = self._bins
        real, imag = real[..., first:stop], imag[..., first:stop]
        power = real * real + imag * imag
        return [power[..., lo:hi] for lo, hi, _ in self._filter_groups], log_scale

    def call(self, inputs):
        powers, log_scale = (
            self._power_chunked(inputs) if self._chunked else self._power_fft(inputs)
        )
        energies = [
            ops.matmul(power, ops.convert_to_tensor(weights))
            for power, (_, _, weights) in zip(powers, self._filter_groups, strict=True)
        ]
        energy = energies[0] if len(energies) == 1 else ops.concatenate(energies, axis=-1)
        zero = ops.equal(energy, 0.0)
        log_energy = ops.log(ops.where(zero, 1.0, energy)) - (self._log_offset + log_scale)
        return ops.where(zero, float(np.log(_EPS)), log_energy)

    def get_config(self):
        config = super().get_config()
        config.pop("dtype", None)
        config.update(
            {
                "sample_rate": self.sample_rate,
                "winlen": self.winlen,
                "winstep": self.winstep,
                "nfilt": self.nfilt,
                "nfft": self.nfft,
                "lowfreq": self.lowfreq,
                "highfreq": self.highfreq,
                "preemph": self.preemph,
            }
        )
        return config
