"""Speed perturbation and vocal-tract-length (frequency) warping of training batches (NumPy).

:class:`SpeedPerturb` resamples each ``(197, 40)`` log filter-bank segment of a batch as if its
audio had been spoken by a slightly different vocal tract, or played slightly faster or
slower, without recomputing features from audio. It runs on the NumPy batches
:class:`keras_dkd.batches.EpochBatches` hands to ``fit``, so it is the same on every Keras
backend, seeded per ``(seed, epoch, batch index)`` like :class:`keras_dkd.augment.SpecAugment`;
evaluation, prediction and export never see it.

**Frequency warping** (``freq_warp``, after VTLP, Jaitly & Hinton 2013): each segment draws a
factor ``a`` uniform in ``[1 − freq_warp, 1 + freq_warp]`` and its spectrum is scaled in
frequency by ``a``: filter ``k``, centred at ``f_k`` Hz, takes the log energy the segment had at
``f_k / a``, interpolated linearly between the two filters whose centres (on the mel scale)
enclose it, and clamped to the first or last filter outside their range. Speakers differ in
vocal-tract length by roughly ±10 %, which scales formants by about as much.

**Speed** (``speed``): audio played ``s`` times faster (Ko et al., 2015's 0.9 / 1.0 / 1.1, here
``s`` uniform in ``[1 − speed, 1 + speed]`` per segment) is shorter by ``s`` and higher in
frequency by ``s``. The segment is resampled in time about its centre (output frame ``t`` takes
the source at ``c + (t − c) · s``, linearly interpolated, edge frames repeated where a faster
segment runs out) and warped in frequency by ``s``, times the ``freq_warp`` factor if both are
set.

Digital silence (zero-padded frames, equal in every filter) stays silence under the warp; only
the frame where speech meets padding blends the two in time.

**Cost.** A gather and blend of whole frames for the speed, one batched matmul by a
``(filters, filters)`` interpolation matrix per segment for the frequency: for a
``(32, 197, 40)`` batch about 0.3 ms with ``freq_warp`` alone, 0.7 ms with ``speed`` and up to
2.7 ms with both (mean of 300, one core of the 2-core AVX-512 machine), against 0.05 ms to gather
the batch unperturbed and tens of milliseconds for the training step it feeds.

Example:
    >>> import numpy as np
    >>> from keras_dkd.perturb import SpeedPerturb
    >>> perturb = SpeedPerturb(freq_warp=0.1)
    >>> batch = np.random.default_rng(0).normal(size=(32, 197, 40)).astype("float32")
    >>> perturb.apply(batch, np.random.default_rng([0, 1, 2])).shape
    (32, 197, 40)
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np

from keras_dkd.errors import UserError

__all__ = ["SpeedPerturb", "filter_centres"]

_FIELDS = ("speed", "freq_warp")


def filter_centres(nfilt: int, lowfreq: float, highfreq: float) -> np.ndarray:
    """Centre frequencies (Hz) of the ``nfilt`` triangular mel filters over ``[lowfreq,
    highfreq]`` (:func:`keras_dkd.logfbank.filterbank`'s spacing: even on the mel scale)."""
    mel = np.linspace(_hz_to_mel(lowfreq), _hz_to_mel(highfreq), nfilt + 2)[1:-1]
    return 700.0 * (10.0 ** (mel / 2595.0) - 1.0)


def _hz_to_mel(hz):
    return 2595.0 * np.log10(1.0 + np.asarray(hz, np.float64) / 700.0)


@dataclasses.dataclass(frozen=True)
class SpeedPerturb:
    """Random speed and frequency-warp factors per segment of ``(batch, frames, filters)``.

    Args:
        speed: the largest relative change of speed (0.1: factors in ``[0.9, 1.1]``; 0: none).
        freq_warp: the largest relative frequency scaling, on top of the speed's (0: none).
        lowfreq, highfreq: the filter bank's range in Hz (keras-dkd's features: 0 to 4000).

    Raises:
        UserError: a factor outside ``[0, 0.5]`` or a bad range.

    Example:
        >>> SpeedPerturb().active
        False
        >>> SpeedPerturb(speed=0.1).to_dict()
        {'speed': 0.1, 'freq_warp': 0.0}
    """

    speed: float = 0.0
    freq_warp: float = 0.0
    lowfreq: float = 0.0
    highfreq: float = 4000.0

    def __post_init__(self):
        for name in _FIELDS:
            value = getattr(self, name)
            if (isinstance(value, bool) or not isinstance(value, int | float | np.number)
                    or not math.isfinite(value) or not 0 <= value <= 0.5):
                raise UserError(f"{name} must be a number in [0, 0.5], got {value!r}")
            object.__setattr__(self, name, float(value))
        if not 0 <= self.lowfreq < self.highfreq:
            raise UserError(f"the filter bank's range must satisfy 0 <= lowfreq < highfreq, "
                            f"got {self.lowfreq} and {self.highfreq}")

    @property
    def active(self) -> bool:
        """Whether :meth:`apply` can change a value (``speed`` or ``freq_warp`` above 0)."""
        return bool(self.speed or self.freq_warp)

    def to_dict(self) -> dict:
        """``speed`` and ``freq_warp`` as a JSON-ready dict (what ``config.json`` records)."""
        return {name: getattr(self, name) for name in _FIELDS}

    def apply(self, batch: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """A perturbed copy of ``batch``, float32; ``batch`` itself is not changed.

        Args:
            batch: ``(n, frames, filters)`` segments.
            rng: the source of the factors; the same state gives the same factors.

        Returns:
            float32 array of ``batch``'s shape. An inactive perturbation returns a float32 copy
            without drawing from ``rng``.
        """
        x = np.asarray(batch, np.float32)
        if x.ndim != 3:
            raise UserError(f"SpeedPerturb takes (batch, frames, filters) segments, got shape "
                            f"{x.shape}")
        if not self.active or x.size == 0:
            return x.copy()
        n, frames, filters = x.shape
        speed = rng.uniform(1 - self.speed, 1 + self.speed, size=n) if self.speed else None
        warp = (rng.uniform(1 - self.freq_warp, 1 + self.freq_warp, size=n) if self.freq_warp
                else np.ones(n))
        if speed is not None:
            centre = (frames - 1) / 2.0
            source = centre + (np.arange(frames)[None, :] - centre) * speed[:, None]
            x = _blend(x, source, axis=1)
            warp = warp * speed
        centres = filter_centres(filters, self.lowfreq, self.highfreq)
        mel = _hz_to_mel(centres)
        # the fractional filter index of each source frequency f_k / a, on the mel scale
        source = np.interp(_hz_to_mel(centres[None, :] / warp[:, None]), mel,
                           np.arange(filters, dtype=np.float64))
        return _blend(x, source, axis=2)


def _blend(x: np.ndarray, source: np.ndarray, axis: int) -> np.ndarray:
    """``x`` read at fractional positions ``source`` (``(n, size)``) along ``axis`` (1 or 2),
    linearly interpolated, positions clamped to ``[0, size − 1]``.

    Along frames it gathers the two neighbours and blends them; along the (few) filters it
    multiplies by a per-segment ``(filters, filters)`` interpolation matrix, which costs a
    sixth of the gather there."""
    size = x.shape[axis]
    if size == 1:
        return x.astype(np.float32, copy=True)
    source = np.clip(source, 0, size - 1)
    low = np.minimum(np.floor(source).astype(np.intp), size - 2)
    frac = (source - low).astype(np.float32)
    if axis == 2:
        n, out = source.shape
        weights = np.zeros((n, size, out), np.float32)
        segment, column = np.arange(n)[:, None], np.arange(out)[None, :]
        weights[segment, low, column] = 1 - frac
        weights[segment, low + 1, column] += frac
        return np.matmul(x, weights).astype(np.float32, copy=False)
    # whole frames are contiguous rows: index the (n · frames, filters) view by row
    rows = x.reshape(-1, x.shape[2])
    low = low + (np.arange(x.shape[0]) * size)[:, None]
    below, above = rows[low], rows[low + 1]
    return (below + frac[:, :, None] * (above - below)).astype(np.float32, copy=False)
