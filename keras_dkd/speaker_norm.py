"""Per-speaker feature standardisation (speaker normalisation).

Each speaker's log filter-bank energies are standardised per filter with that speaker's own
mean and standard deviation, taken over the frames of all their utterances: ``(x - mean_s) /
std_s``. Voices differ in level and spectral tilt far more than one voice's emotions do, and a
test speaker is a voice the network has never heard; standardising each voice on itself
removes much of that difference and keeps what varies within a voice (angry louder and
brighter than sad). It is the classic speaker normalisation of speech emotion recognition.

It needs no labels, but it needs several utterances of the speaker: in the benchmarks, every
utterance of a validation or test speaker is standardised with that speaker's statistics,
taken from their unlabelled audio (a transductive step that the published DKDFMH numbers do not
take). ``keras-dkd predict`` takes the files of one call as one speaker's utterances.

The statistics are taken over real frames only: a frame of digital silence or of zero padding
(every filter at the floor, ``log(eps)``) is not counted, but it is transformed like the others,
so padding stays one value per speaker. The transform is NumPy on the data side, before the
model's own per-filter :mod:`normalisation <keras_dkd.data>` (which then sees zero-mean,
unit-variance features); the model itself is unchanged.

Example:
    >>> import numpy as np
    >>> rng = np.random.default_rng(0)
    >>> segments = [rng.normal(5.0, 2.0, (3, 197, 40)).astype("float32")]
    >>> mean, std = speaker_stats(segments)
    >>> out = standardise(segments[0], mean, std)
    >>> bool(abs(out.mean()) < 0.05 and abs(out.std() - 1) < 0.05)
    True
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from keras_dkd import features as F
from keras_dkd.errors import UserError

__all__ = ["MIN_STD", "REAL_FRAME_ABOVE", "SpeakerStats", "speaker_stats", "standardise",
           "standardise_by_speaker"]

_FLOOR = float(np.log(F._EPS))
REAL_FRAME_ABOVE = _FLOOR + 1e-3
"""A frame is real (counted in the statistics) if a filter lies above this: not every filter
at the floor ``log(eps)`` of digital silence and zero padding."""
MIN_STD = 1e-3
"""The least deviation divided by: a filter that never moves is only centred."""


class SpeakerStats:
    """Running per-filter sums over the real frames of one speaker's segments.

    ``add`` takes ``(n, frames, filters)`` segments; ``mean_std`` gives the statistics. Frames
    of overlapping segments are counted once per segment they fall in: the hops of keras-dkd's
    segments cover an utterance's frames nearly evenly, so this weights each frame about alike.
    """

    def __init__(self, filters: int = F.NFILT):
        self.count = 0
        self.total = np.zeros(filters, np.float64)
        self.squares = np.zeros(filters, np.float64)

    def add(self, segments: np.ndarray) -> None:
        frames = np.asarray(segments, np.float64).reshape(-1, segments.shape[-1])
        real = frames[np.any(frames > REAL_FRAME_ABOVE, axis=1)]
        self.count += len(real)
        self.total += real.sum(axis=0)
        self.squares += np.square(real).sum(axis=0)

    def merge(self, other: SpeakerStats) -> None:
        """Add ``other``'s sums to these (e.g. one file's, once it was read whole)."""
        self.count += other.count
        self.total += other.total
        self.squares += other.squares

    def mean_std(self) -> tuple[np.ndarray, np.ndarray]:
        """``(mean, std)``, float32 per filter.

        Raises:
            UserError: no real frame was added (only silence or nothing).
        """
        if self.count == 0:
            raise UserError("speaker normalisation needs speech: the speaker's audio holds "
                            "only silence; leave speaker_norm off for it")
        mean = self.total / self.count
        var = np.maximum(self.squares / self.count - np.square(mean), 0.0)
        std = np.maximum(np.sqrt(var), MIN_STD)
        return mean.astype(np.float32), std.astype(np.float32)


def speaker_stats(segments: Sequence[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """Per-filter ``(mean, std)`` over the real frames of one speaker's segment arrays.

    Args:
        segments: the speaker's utterances, each ``(n_i, frames, filters)``.

    Returns:
        Two float32 ``(filters,)`` arrays.
    """
    stats = None
    for seg in segments:
        seg = np.asarray(seg)
        if stats is None:
            stats = SpeakerStats(seg.shape[-1])
        if len(seg):
            stats.add(seg)
    if stats is None:
        raise UserError("speaker normalisation needs at least one utterance of the speaker")
    return stats.mean_std()


def standardise(segments: np.ndarray, mean: np.ndarray, std: np.ndarray) -> np.ndarray:
    """``(segments - mean) / std`` per filter, as a new float32 array."""
    out = np.asarray(segments, np.float32) - mean
    out /= std
    return out


def standardise_by_speaker(records: Sequence, per_hop: Sequence[list], stats_hop: int = -1):
    """Standardise every record's segments with its speaker's statistics.

    Args:
        records: the utterances (``record.speaker``; an empty speaker is its own speaker:
            the utterance is standardised on itself).
        per_hop: per hop, a list with each record's ``(n_i, frames, filters)`` segments
            (as :meth:`keras_dkd.cache.FeatureCache.segments` returns them).
        stats_hop: which hop's segments give the statistics (the densest, by default the last:
            the evaluation hop).

    Returns:
        ``(per_hop, stats)``: new lists of standardised float32 arrays, and ``{speaker: (mean,
        std)}``.
    """
    members: dict[str, list[int]] = {}
    for i, r in enumerate(records):
        members.setdefault(r.speaker or f"utterance:{r.utterance_id}", []).append(i)
    stats = {}
    for speaker, idx in members.items():
        try:
            stats[speaker] = speaker_stats([per_hop[stats_hop][i] for i in idx])
        except UserError as error:
            raise UserError(f"speaker {speaker!r}: {error}") from None
    out = [[None] * len(records) for _ in per_hop]
    for speaker, idx in members.items():
        mean, std = stats[speaker]
        for k, segs in enumerate(per_hop):
            for i in idx:
                out[k][i] = standardise(segs[i], mean, std)
    return out, stats
