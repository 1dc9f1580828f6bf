"""Audio in the exported graph: WAV bytes decoded, mixed down and resampled with TensorFlow ops.

The SavedModel's ``classify_wav`` signature takes WAV files as bytes. Everything
:func:`keras_dkd.audio.read_audio` does to such a file is done here in the graph, with standard
TensorFlow ops only (TF Serving runs no Python), so that the exported model and
``keras-dkd predict`` hear the same signal:

- :func:`decode_wav`: ``tf.audio.decode_wav`` (16-bit PCM WAV, any channel count), after checks
  that turn a damaged or unsupported file into an ``InvalidArgument`` error naming the file's
  position in the batch and the problem (not a RIFF/WAVE file, not 16-bit PCM, no samples, a
  sample rate outside 1 kHz .. 384 kHz). Other formats (24-bit, float, FLAC, ...) cannot be
  decoded in the graph: convert them to 16-bit WAV, or send the waveform to
  ``classify_waveform``;
- channels are mixed down by their mean;
- :func:`resample`: the polyphase resampler of :func:`scipy.signal.resample_poly` (the filter
  that ``firwin`` designs, Kaiser window β 5, 10 zero crossings per side), designed in the graph
  for the file's sample rate and applied in float64, as the library does; then clipped to
  [-1, 1] and cast to float32.

This module needs TensorFlow: it is used by :mod:`keras_dkd.export` only.

Example:
    >>> import tensorflow as tf                                    # doctest: +SKIP
    >>> wav = tf.io.read_file("03a01Fa.wav")                       # doctest: +SKIP
    >>> waveform = decode_wav(wav, index=0)                        # doctest: +SKIP
"""

from __future__ import annotations

import math

import tensorflow as tf

from keras_dkd.audio import MAX_SAMPLE_RATE, MIN_SAMPLE_RATE, TARGET_SAMPLE_RATE

__all__ = ["decode_wav", "lowpass_taps", "resample"]

#: Output samples computed per step of the resampler's loop (bounds its memory).
RESAMPLE_BLOCK = 160_000
_KAISER_BETA = 5.0
_ZERO_CROSSINGS = 10


def _gcd(a, b):
    """Greatest common divisor of two positive int64 scalars (Euclid, in the graph)."""
    _, g = tf.while_loop(lambda b, a: b > 0, lambda b, a: (a % b, b), [b, a])
    return g


def lowpass_taps(up, down):
    """The anti-aliasing filter of ``resample_poly(x, up, down)`` scaled by ``up`` (float64).

    ``scipy.signal.firwin(2 * half + 1, 1 / max_rate, window=("kaiser", 5.0)) * up`` with
    ``max_rate = max(up, down)`` and ``half = 10 * max_rate``, computed with TensorFlow ops.

    Args:
        up: int64 scalar tensor, the upsampling factor.
        down: int64 scalar tensor, the downsampling factor.

    Returns:
        float64 tensor of ``2 * half + 1`` taps.
    """
    max_rate = tf.maximum(up, down)
    half = _ZERO_CROSSINGS * max_rate
    n = tf.cast(tf.range(2 * half + 1) - half, tf.float64)  # centred tap index
    cutoff = 1.0 / tf.cast(max_rate, tf.float64)
    x = cutoff * n
    safe = tf.where(tf.equal(x, 0.0), tf.ones_like(x), x)
    sinc = tf.where(tf.equal(x, 0.0), tf.ones_like(x), tf.sin(math.pi * safe) / (math.pi * safe))
    ratio = n / tf.cast(half, tf.float64)
    beta = tf.constant(_KAISER_BETA, tf.float64)
    window = tf.math.special.bessel_i0(beta * tf.sqrt(tf.maximum(1.0 - ratio * ratio, 0.0)))
    window = window / tf.math.special.bessel_i0(beta)
    taps = cutoff * sinc * window
    return taps / tf.reduce_sum(taps) * tf.cast(up, tf.float64)


def resample(signal, rate, target_rate: int = TARGET_SAMPLE_RATE):
    """Resample a 1-D float64 signal from ``rate`` to ``target_rate`` as ``resample_poly`` does.

    Output sample ``m`` is ``sum_n x[n] * h[m * down - n * up + half]`` (zeros outside the
    signal), ``ceil(len * up / down)`` samples; computed :data:`RESAMPLE_BLOCK` outputs at a time
    from a per-phase table of the filter, so memory grows with the block, not the filter's
    zero-stuffed length. An identity ratio returns the signal unchanged.

    Args:
        signal: float64 tensor ``[n]``.
        rate: int64 scalar tensor, the signal's sample rate in Hz.
        target_rate: the wanted sample rate in Hz.

    Returns:
        float64 tensor ``[ceil(n * target_rate / rate)]``.
    """
    rate = tf.cast(rate, tf.int64)
    target = tf.constant(target_rate, tf.int64)
    g = _gcd(rate, target)
    up, down = target // g, rate // g

    def identity():
        return tf.identity(signal)

    def polyphase():
        taps = lowpass_taps(up, down)
        half = (tf.size(taps, out_type=tf.int64) - 1) // 2
        k = (2 * half + 1 + up - 1) // up  # taps per output sample
        padded = tf.pad(taps, [[0, k * up - tf.size(taps, out_type=tf.int64)]])
        table = tf.transpose(tf.reshape(padded, tf.stack([k, up])))  # [phase, k]
        n_in = tf.size(signal, out_type=tf.int64)
        n_out = (n_in * up + down - 1) // down
        # x padded with k zeros on each side: input n is at n + k.
        x = tf.pad(signal, [[k, k]])

        def block(start, parts):
            m = tf.range(start, tf.minimum(start + RESAMPLE_BLOCK, n_out), dtype=tf.int64)
            t = m * down + half
            phase, last = t % up, t // up  # the last input each output reads, and its tap
            index = last[:, None] - tf.range(k, dtype=tf.int64)[None, :] + k
            index = tf.clip_by_value(index, 0, n_in + 2 * k - 1)
            y = tf.reduce_sum(tf.gather(x, index) * tf.gather(table, phase), axis=1)
            return start + RESAMPLE_BLOCK, parts.write(parts.size(), y)

        parts = tf.TensorArray(tf.float64, size=0, dynamic_size=True, infer_shape=False)
        _, parts = tf.while_loop(
            lambda start, parts: start < n_out, block, [tf.constant(0, tf.int64), parts],
            parallel_iterations=1,
        )
        return tf.reshape(parts.concat(), [-1])

    return tf.cond(tf.logical_and(tf.equal(up, 1), tf.equal(down, 1)), identity, polyphase)


def _assert(condition, message):
    return tf.debugging.Assert(condition, [message], summarize=1)


def decode_wav(contents, index):
    """Decode one WAV file (bytes) to the models' signal: 16 kHz mono float32 in [-1, 1].

    Args:
        contents: scalar ``tf.string``, the file's bytes.
        index: int scalar tensor, the file's position in the request (for error messages).

    Returns:
        float32 tensor ``[n]``.

    Raises:
        tf.errors.InvalidArgumentError (when run): the bytes are not a RIFF/WAVE file, not
            16-bit PCM, hold no samples, or give a sample rate outside 1 kHz .. 384 kHz.
    """
    where = tf.strings.join(["classify_wav: file ", tf.strings.as_string(index), " of the batch "])
    size = tf.strings.length(contents)
    head = tf.strings.substr(tf.strings.join([contents, "\0" * 12]), 0, 12)  # safe if short
    is_wav = tf.logical_and(
        tf.greater_equal(size, 12),
        tf.logical_and(tf.equal(tf.strings.substr(head, 0, 4), "RIFF"),
                       tf.equal(tf.strings.substr(head, 8, 4), "WAVE")),
    )
    checks = [_assert(is_wav, tf.strings.join(
        [where, "is not a WAV file (no RIFF/WAVE header); send 16-bit PCM WAV bytes"]))]
    with tf.control_dependencies(checks):
        tag, bits, data_end = tf.unstack(_chunks(contents))
    checks = [
        _assert(tf.greater_equal(tag, 0), tf.strings.join(
            [where, "is damaged or truncated (no complete fmt chunk)"])),
        _assert(tf.logical_or(tf.less(tag, 0), tf.logical_and(
            tf.logical_or(tf.equal(tag, 1), tf.equal(tag, 65534)), tf.equal(bits, 16))),
            tf.strings.join([where, "is not 16-bit PCM (format tag ", tf.strings.as_string(tag),
                             ", ", tf.strings.as_string(bits), " bits); convert it to 16-bit "
                             "PCM WAV or send the waveform to classify_waveform"])),
        _assert(tf.logical_or(tf.less(tag, 0), tf.logical_and(
            tf.greater(data_end, 0), tf.less_equal(data_end, tf.cast(size, tf.int64)))),
            tf.strings.join([where, "is truncated: its data chunk is missing or shorter than "
                             "its header says (an interrupted copy?); send the whole file"])),
    ]
    with tf.control_dependencies(checks):
        audio, rate = tf.audio.decode_wav(contents)
    rate = tf.cast(rate, tf.int64)
    checks = [
        _assert(tf.greater(tf.shape(audio)[0], 0),
                tf.strings.join([where, "holds no samples"])),
        _assert(tf.logical_and(rate >= MIN_SAMPLE_RATE, rate <= MAX_SAMPLE_RATE),
                tf.strings.join([where, "gives a sample rate of ", tf.strings.as_string(rate),
                                 " Hz (a damaged header): 1000 .. 384000 Hz are accepted"])),
    ]
    with tf.control_dependencies(checks):
        mono = tf.reduce_mean(tf.cast(audio, tf.float64), axis=1)
    signal = resample(mono, rate)
    return tf.cast(tf.clip_by_value(signal, -1.0, 1.0), tf.float32)


def _chunks(contents):
    """``[format tag, bits per sample, end of the data chunk]`` of a RIFF/WAVE file (int64).

    Walks the chunks from byte 12 (at most 64 of them). The format fields are -1 when there is
    no complete ``fmt `` chunk; the data end is -1 when there is no ``data`` chunk (it may lie
    beyond the file's size: a truncated file).
    """
    size = tf.cast(tf.strings.length(contents), tf.int64)
    padded = tf.strings.join([contents, "\0" * 32])  # reads near the end stay in range

    def read(offset, width):
        raw = tf.io.decode_raw(tf.strings.substr(padded, offset, width), tf.uint8)
        raw = tf.cast(raw, tf.int64)
        return tf.reduce_sum(raw * tf.constant([1, 256, 65536, 16777216][:width], tf.int64))

    def body(offset, found, steps):
        name = tf.strings.substr(padded, offset, 4)
        length = read(offset + 4, 4)
        is_fmt = tf.logical_and(tf.equal(name, "fmt "), offset + 24 <= size)
        is_data = tf.equal(name, "data")
        found = tf.stack([
            tf.where(is_fmt, read(offset + 8, 2), found[0]),
            tf.where(is_fmt, read(offset + 22, 2), found[1]),
            tf.where(is_data, offset + 8 + length, found[2]),
        ])
        return offset + 8 + length + length % 2, found, steps + 1

    _, found, _ = tf.while_loop(
        lambda offset, found, steps: tf.logical_and(
            offset + 8 <= size, tf.logical_and(steps < 64, found[2] < 0)),
        body,
        [tf.constant(12, tf.int64), tf.constant([-1, -1, -1], tf.int64), tf.constant(0)],
    )
    return found
