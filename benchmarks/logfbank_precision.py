"""LogFBank against python_speech_features on every EmoDB evaluation segment, and what the
difference does to a trained model's utterance labels (run by hand, mainly on a GPU).

On NVIDIA GPUs with TF32 (Ampere and newer) JAX and TensorFlow compute float32 matrix products
in TF32 by default; ``--precision highest`` sets ``jax_default_matmul_precision`` for comparison.

Usage::

    KERAS_BACKEND=jax python benchmarks/logfbank_precision.py MODEL.keras \\
        [--emodb DIR | --npz EMODB.npz] [--precision default|highest]

``--npz``: the EmoDB waveforms as int16 arrays ``arr_0 ... arr_534`` in file-name order (for a
machine without libsndfile), e.g. ``np.savez_compressed(path, *waves)``.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))


def load_waves(args) -> list[np.ndarray]:
    if args.npz:
        data = np.load(args.npz)
        return [data[k] for k in sorted(data.files, key=lambda k: int(k.split("_")[1]))]
    from features import _emodb_dir, read_waves

    return read_waves(_emodb_dir(args.emodb) / "wav")


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model", help="a trained keras-dkd .keras model")
    parser.add_argument("--emodb", default=None, help="EmoDB folder holding wav/")
    parser.add_argument("--npz", default=None, help="EmoDB waveforms as an .npz of int16")
    parser.add_argument("--precision", default="default", choices=["default", "highest"])
    args = parser.parse_args(argv)
    if args.precision != "default":
        import jax

        jax.config.update("jax_default_matmul_precision", args.precision)
    import keras

    from keras_dkd.features import LogFBank, logfbank_segments, segment_starts
    from keras_dkd.io import load_model

    waves = load_waves(args)
    length = 32000  # 2-s segments every 0.4 s, shorter utterances zero-padded: the eval rule
    segments, owner = [], []
    for i, wave in enumerate(waves):
        for start in segment_starts(len(wave), hop_seconds=0.4):
            segment = np.zeros(length, np.float32)
            part = wave[start : start + length]
            segment[: len(part)] = part / 32768.0
            segments.append(segment)
            owner.append(i)
    segments, owner = np.stack(segments), np.array(owner)

    inputs = keras.Input((length,))
    frontend = keras.Model(inputs, LogFBank()(inputs))

    def batched(model, x):
        return np.concatenate([keras.ops.convert_to_numpy(model.predict_on_batch(x[i : i + 256]))
                               for i in range(0, len(x), 256)])

    layer = batched(frontend, segments)
    reference = np.concatenate([logfbank_segments(w, hop_seconds=0.4) for w in waves])
    error = np.abs(layer - reference)
    model = load_model(args.model)

    def labels(features):
        logits = batched(model, features)
        sums = np.zeros((len(waves), logits.shape[1]))
        np.add.at(sums, owner, logits)
        return sums.argmax(1), logits

    label_layer, logits_layer = labels(layer)
    label_reference, logits_reference = labels(reference)
    differ = int(np.sum(label_layer != label_reference))
    print(f"backend {keras.backend.backend()}, precision {args.precision}: {len(segments)} "
          f"segments of {len(waves)} utterances")
    print(f"|LogFBank - python_speech_features| (log energy): max {error.max():.3e}, "
          f"99.9th percentile {np.quantile(error, 0.999):.3e}, mean {error.mean():.2e}")
    print(f"utterance labels that differ: {differ} of {len(waves)}; largest logit difference "
          f"{np.abs(logits_layer - logits_reference).max():.3e}")


if __name__ == "__main__":
    main()
