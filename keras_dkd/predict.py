"""Predicting the emotion of audio files, streamed, in bounded memory.

Each file is read block by block (:func:`keras_dkd.audio.stream_audio`: any format libsndfile
reads, resampled to 16 kHz mono), cut into 2-s segments at ``hop_seconds`` as
:func:`keras_dkd.features.logfbank_segments` cuts a whole utterance (a segment never straddles
a gap: the samples of the next segment are carried from one block to the next), and the model's
segment logits are summed per file. A file's logits are the mean of its segment logits (what
:func:`keras_dkd.metrics.aggregate_utterances` computes in evaluation) and its probabilities their
softmax. Memory depends on the block and batch sizes, not on the length of a file: an hour of
audio is predicted in the memory a minute needs.

A file shorter than one segment is padded to one the way the model's training padded short
utterances (recorded in the model, :func:`keras_dkd.models.get_padding`): with zeros, or with its
waveform repeated (``padding=`` overrides it). A model trained on repeat-padded segments has
never seen digital silence. Files of 2 s or more are not padded, whatever ``padding`` says.

A model trained on speaker-normalised features (:mod:`keras_dkd.speaker_norm`, recorded in the
model, :func:`keras_dkd.models.get_speaker_norm`) takes the files of one call as **one speaker's**
utterances: a first pass over them gathers that speaker's per-filter statistics, and the second
standardises every segment with them before the model sees it (one file alone is standardised on
itself). Predict one speaker's files per call.

Segments of consecutive files share model batches, so many short files run as fast as one long
one. A file that cannot be used (missing, empty, not audio, NaN samples, shorter than
``min_seconds``, ...) gets an ``"error"`` entry with a one-line message naming it; the other files'
results still come out.

Example:
    >>> from keras_dkd.io import load_model                    # doctest: +SKIP
    >>> from keras_dkd.predict import predict_files
    >>> model = load_model("runs/emodb/student.keras")          # doctest: +SKIP
    >>> predict_files(model, ["a.wav", "b.flac"])               # doctest: +SKIP
    [{'file': 'a.wav', 'label': 'angry', 'probabilities': {'neutral': 0.05, ...}},
     {'file': 'b.flac', 'error': 'b.flac: is an empty file (0 bytes); re-export or re-record it'}]
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from keras_dkd import features
from keras_dkd.audio import DEFAULT_BLOCK_SECONDS, stream_audio
from keras_dkd.errors import AudioError, UserError

DEFAULT_MIN_SECONDS = 0.1
"""Files with less audio than this are refused: there is no emotion to hear in them."""

__all__ = ["DEFAULT_MIN_SECONDS", "predict_files", "stream_segments"]


def _check_positive(value, name: str):
    if not (isinstance(value, int | float) and value > 0):
        raise UserError(f"{name} must be a positive number, got {value!r}")


def stream_segments(
    path,
    hop_seconds: float = features.EVAL_HOP_SECONDS,
    segment_seconds: float = features.SEGMENT_SECONDS,
    block_seconds: float = DEFAULT_BLOCK_SECONDS,
    min_seconds: float = DEFAULT_MIN_SECONDS,
    padding: str = "zero",
) -> Iterator[np.ndarray]:
    """Log filter-bank segments of an audio file, computed block by block.

    Concatenated, the yielded arrays equal
    ``features.logfbank_segments(audio.read_audio(path), hop_seconds=hop_seconds)``: segments
    start every ``hop_seconds`` and lie entirely in the file (a tail shorter than a hop is
    dropped), and a file shorter than a segment is padded to one segment (``padding``: zeros or
    the file repeated, as ``logfbank_segments(..., padding=padding)`` does). Only the samples
    that later segments still need are kept between blocks, so memory is bounded by
    ``block_seconds`` whatever the file's length.

    Args:
        path: any audio file libsndfile reads, any rate and channel count.
        hop_seconds: step between segment starts (0.4 s, the evaluation hop, by default).
        segment_seconds: segment length (2 s -> 197 frames).
        block_seconds: seconds of audio read at a time.
        min_seconds: refuse files shorter than this (0 accepts any file with a sample).
        padding: ``"zero"`` or ``"repeat"``: how a file shorter than a segment fills it.

    Yields:
        float32 arrays ``(k, 197, 40)``, ``k >= 1``.

    Raises:
        AudioError: the file cannot be read or used, or is shorter than ``min_seconds``; raised
            at the first ``next()`` for problems found on opening, later for problems found while
            reading (NaN samples, a damaged body).

    Example:
        >>> n = sum(len(s) for s in stream_segments("03a01Fa.wav"))   # doctest: +SKIP
    """
    features.check_padding(padding)
    rate = features.SAMPLE_RATE
    length = int(round(segment_seconds * rate))
    hop = int(round(hop_seconds * rate))
    if length <= 0 or hop <= 0:
        raise UserError(f"hop_seconds and segment_seconds must be positive, got {hop_seconds} "
                        f"and {segment_seconds}")
    with stream_audio(path, target_sr=rate, block_seconds=block_seconds) as stream:
        buffer = np.zeros(0, np.float32)  # samples from buffer_start on
        buffer_start = 0  # absolute index of buffer[0]
        next_start = 0  # absolute start of the next segment
        total = 0
        for block in stream:
            total += block.size
            buffer = np.concatenate([buffer, block]) if buffer.size else block
            available = buffer_start + buffer.size
            if available - next_start >= length:
                n = 1 + (available - next_start - length) // hop
                offset = next_start - buffer_start
                chunk = buffer[offset : offset + (n - 1) * hop + length]
                segments = features.logfbank_segments(
                    chunk, hop_seconds=hop_seconds, segment_seconds=segment_seconds)
                assert len(segments) == n
                next_start += n * hop
                yield segments
            # keep only what the next segments need (a hop may be longer than a segment)
            drop = min(max(next_start - buffer_start, 0), buffer.size)
            if drop:
                buffer = buffer[drop:].copy()  # copy: let the old block be freed
                buffer_start += drop
        seconds = total / rate
        if seconds < min_seconds:
            raise AudioError(
                stream.path,
                f"is only {seconds:.3f} s long; at least {min_seconds:g} s of speech is needed "
                "to predict an emotion",
            )
        if total < length:  # never reached a full segment: pad the whole file to one
            yield features.logfbank_segments(
                buffer, hop_seconds=hop_seconds, segment_seconds=segment_seconds,
                padding=padding)


def _softmax(logits: np.ndarray) -> np.ndarray:
    z = logits - logits.max()
    e = np.exp(z)
    return e / e.sum()


class _Batcher:
    """Collects segments of several files into model batches and sums logits per file."""

    def __init__(self, model, batch_size: int, num_files: int, num_classes: int):
        self.model = model
        self.batch_size = batch_size
        self.sums = np.zeros((num_files, num_classes), np.float64)
        self.counts = np.zeros(num_files, np.int64)
        self._segments: list[np.ndarray] = []
        self._owners: list[np.ndarray] = []
        self._pending = 0

    def add(self, segments: np.ndarray, owner: int):
        self._segments.append(segments)
        self._owners.append(np.full(len(segments), owner, np.int64))
        self._pending += len(segments)
        while self._pending >= self.batch_size:
            self._run(self.batch_size)

    def discard(self, owner: int):
        """Forget the pending segments of a file that turned out to be bad."""
        if not self._pending:
            return
        segments, owners = np.concatenate(self._segments), np.concatenate(self._owners)
        keep = owners != owner
        self._segments = [segments[keep]] if keep.any() else []
        self._owners = [owners[keep]] if keep.any() else []
        self._pending = int(keep.sum())

    def flush(self):
        while self._pending:
            self._run(min(self._pending, self.batch_size))

    def _run(self, n: int):
        segments = np.concatenate(self._segments)
        owners = np.concatenate(self._owners)
        batch, owners_now = segments[:n], owners[:n]
        self._segments = [segments[n:]] if n < len(segments) else []
        self._owners = [owners[n:]] if n < len(owners) else []
        self._pending -= n
        # Pad the last, partial batch: compiled backends (JAX, XLA) then compile one shape
        # only. That costs at most one batch of wasted segments per call, far less than a
        # compilation.
        if n < self.batch_size:
            pad = np.zeros((self.batch_size - n, *batch.shape[1:]), batch.dtype)
            batch = np.concatenate([batch, pad])
        logits = np.asarray(self.model.predict_on_batch(batch), np.float64)[:n]
        if logits.ndim != 2 or logits.shape[1] != self.sums.shape[1]:
            raise UserError(
                f"the model returned logits of shape {logits.shape}; expected (batch, "
                f"{self.sums.shape[1]}) for its {self.sums.shape[1]} classes"
            )
        np.add.at(self.sums, owners_now, logits)
        np.add.at(self.counts, owners_now, 1)


def _speaker_transform(paths, stream, errors):
    """The first pass of a speaker-normalised model: the files' per-filter statistics, as one
    speaker's; returns the standardising function (None if no file could be read). Files
    that cannot be read get their error in ``errors`` here."""
    from keras_dkd.speaker_norm import SpeakerStats, standardise

    stats = SpeakerStats()
    for index, path in enumerate(paths):
        found = SpeakerStats()  # this file's, merged once it is read whole
        try:
            for segments in stream_segments(Path(path), **stream):
                found.add(segments)
        except AudioError as error:
            errors[index] = str(error)
            continue
        stats.merge(found)
    if stats.count == 0:
        return None if len(errors) == len(paths) else _silence_error(paths, errors)
    mean, std = stats.mean_std()
    return lambda segments: standardise(segments, mean, std)


def _silence_error(paths, errors):
    """Every readable file is digital silence: nothing to standardise with."""
    for index, path in enumerate(paths):
        errors.setdefault(index, f"{path}: holds only digital silence; a model trained on "
                                 "speaker-normalised features needs speech to standardise with")
    return None


def predict_files(
    model,
    paths,
    hop_seconds: float = features.EVAL_HOP_SECONDS,
    batch_size: int = 64,
    min_seconds: float = DEFAULT_MIN_SECONDS,
    block_seconds: float = DEFAULT_BLOCK_SECONDS,
    padding: str | None = None,
) -> list[dict]:
    """Predict the emotion of each audio file, streaming it in bounded memory.

    Args:
        model: a keras-dkd model (input ``features`` ``(None, 197, 40)``, output logits, last
            layer :class:`keras_dkd.layers.Logits` holding the class names).
        paths: audio files (any format libsndfile reads, any rate and channel count), or one.
        hop_seconds: step between 2-s segments (0.4 s, the evaluation hop).
        batch_size: segments per model call.
        min_seconds: files shorter than this get an error instead of a prediction (default
            0.1 s); files shorter than a segment are padded to one segment.
        block_seconds: seconds of audio read at a time (bounds memory).
        padding: how a file shorter than a segment fills it: ``"zero"`` (digital silence) or
            ``"repeat"`` (the file's waveform repeated); None (default): the model's training
            padding, recorded in its ``Logits`` layer. Longer files are not affected.

    Returns:
        One dict per path, in the order given: ``{"file", "label", "probabilities"}`` with
        ``probabilities`` a ``{class name: probability}`` dict in the model's class order (the
        softmax of the mean segment logits), or ``{"file", "error"}`` with a one-line message
        naming the file and the problem.

    Raises:
        UserError: invalid arguments, or a model whose output does not match its class names.

    Example:
        >>> results = predict_files(model, ["happy.wav", "missing.wav"])   # doctest: +SKIP
        >>> [r.get("label", r.get("error")) for r in results]              # doctest: +SKIP
        ['happy', 'missing.wav: no such file; check the path']
    """
    from keras_dkd.models import get_class_names, get_padding, get_speaker_norm

    if padding is None:
        padding = get_padding(model)
    _check_positive(hop_seconds, "hop_seconds")
    _check_positive(block_seconds, "block_seconds")
    if not isinstance(batch_size, int) or isinstance(batch_size, bool) or batch_size < 1:
        raise UserError(f"batch_size must be a positive integer, got {batch_size!r}")
    if not (isinstance(min_seconds, int | float) and min_seconds >= 0):
        raise UserError(f"min_seconds must be zero or positive, got {min_seconds!r}")
    features.check_padding(padding)
    if isinstance(paths, str | os.PathLike):
        paths = [paths]
    paths = list(paths)
    class_names = list(get_class_names(model))
    batcher = _Batcher(model, batch_size, len(paths), len(class_names))
    errors: dict[int, str] = {}
    stream = {"hop_seconds": hop_seconds, "block_seconds": block_seconds,
              "min_seconds": min_seconds, "padding": padding}
    transform = None
    if get_speaker_norm(model):
        transform = _speaker_transform(paths, stream, errors)
    for index, path in enumerate(paths):
        if index in errors:
            continue
        try:
            for segments in stream_segments(Path(path), **stream):
                batcher.add(segments if transform is None else transform(segments), index)
        except AudioError as error:
            errors[index] = str(error)
            batcher.discard(index)
    batcher.flush()
    results = []
    for index, path in enumerate(paths):
        if index in errors:
            results.append({"file": str(path), "error": errors[index]})
            continue
        # stream_segments yields at least one segment for every file it accepts
        probabilities = _softmax(batcher.sums[index] / batcher.counts[index])
        results.append({
            "file": str(path),
            "label": class_names[int(np.argmax(probabilities))],
            "probabilities": {name: float(p) for name, p in zip(class_names, probabilities,
                                                                 strict=True)},
        })
    return results
