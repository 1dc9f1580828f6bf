"""Feature extraction and input-pipeline benchmark (run by hand; prints a markdown table).

1. Log filter-bank extraction over all of EmoDB (535 utterances), per second of audio:
   python_speech_features (float64 NumPy, one utterance at a time, what the cache uses) against
   :class:`keras_dkd.features.LogFBank` on the current Keras backend (float32, utterances sorted
   by length and batched, each batch zero-padded to its longest, run by ``predict_on_batch``:
   tf.function / jax.jit compile once per shape, in a warm-up pass reported apart; on
   TensorFlow also with XLA). Also the largest difference between the two over EmoDB.
2. The cached pipeline: ``data.prepare("emodb", protocol="loso", fold=0)`` (features cached on
   the first run), then the time to pull a batch of 32 from ``bundle.train``, against one train
   step of ``keras_dkd.models.build_model()`` (when that module exists) on the same batches.

Usage::

    OPENBLAS_NUM_THREADS=1 KERAS_BACKEND=jax python benchmarks/features.py [--emodb DIR]
        [--batch 8] [--rounds 5] [--skip-train] [--skip-pipeline]

python_speech_features is single-threaded except for one small matrix product that NumPy's
OpenBLAS spreads over every core; on a busy machine those threads spin and wait, which makes
psf up to 3x slower. ``OPENBLAS_NUM_THREADS=1`` (which no backend here uses) gives the fair,
single-threaded baseline.

CPU time (of this process, all threads) is reported beside wall time: on a shared machine it
is the steadier measure, and its ratio does not credit LogFBank for using several cores.
EmoDB comes from ``--emodb``, ``$KERAS_DKD_EMODB_DIR`` or ``../shared/data/emodb``. The TFDS data
and the feature cache go to the usual places (``keras_dkd.paths``) unless ``--data-dir`` /
``--cache-dir`` are given. Timings on a shared machine vary: compare ratios from one run.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]


def _emodb_dir(arg) -> Path:
    shared = REPO.parent / "shared" / "data" / "emodb"
    for candidate in (arg, os.environ.get("KERAS_DKD_EMODB_DIR"), shared):
        if candidate and (Path(candidate) / "wav").is_dir():
            return Path(candidate)
    sys.exit("EmoDB not found: pass --emodb DIR (a folder holding wav/)")


def read_waves(wav_dir: Path) -> list[np.ndarray]:
    import soundfile

    return [soundfile.read(str(p), dtype="int16")[0] for p in sorted(wav_dir.glob("*.wav"))]


def bench_extraction(waves: list[np.ndarray], batch: int, rounds: int = 5,
                     bucket_seconds: float = 0.01) -> dict:
    """psf vs LogFBank on int16 waveforms (16 kHz); returns times and the largest difference.

    LogFBank runs in a functional model through ``predict_on_batch`` (compiled: tf.function on
    TensorFlow, jax.jit on JAX, eager on torch), and on TensorFlow also with XLA
    (``jit_compile=True``), which Keras leaves off on CPU by default. After one warm-up pass
    (compilation, reported apart), python_speech_features and every LogFBank variant each run
    once per round, alternately, so that a slow spell of a shared machine hits all of them; the
    medians over the rounds and the median of the per-round ratios are reported.
    """
    import keras
    from python_speech_features import logfbank

    from keras_dkd.features import LogFBank, num_frames

    seconds = sum(len(w) for w in waves) / 16000

    def run_psf():
        return [logfbank(w, 16000, 0.04, 0.01, 40, 1024, 0, 4000) for w in waves]

    reference = run_psf()

    order = np.argsort([len(w) for w in waves])
    bucket = int(bucket_seconds * 16000)
    batches = []
    for i in range(0, len(order), batch):
        idx = order[i : i + batch]
        length = -(-max(len(waves[j]) for j in idx) // bucket) * bucket
        x = np.zeros((len(idx), length), np.float32)
        for row, j in enumerate(idx):
            x[row, : len(waves[j])] = waves[j] / 32768.0
        batches.append((idx, x))

    variants = [("", False)]
    if keras.backend.backend() == "tensorflow":
        variants.append((" + XLA", True))
    runners = {}
    layers = []
    worst = 0.0
    for label, jit in variants:
        inputs = keras.Input((None,))
        model = keras.Model(inputs, LogFBank()(inputs))
        if jit:  # False would make JAX run op by op: leave the backend's default alone
            model.jit_compile = True

        def run(model=model):
            outputs = {}
            for idx, x in batches:
                out = keras.ops.convert_to_numpy(model.predict_on_batch(x))
                for row, j in enumerate(idx):
                    outputs[j] = out[row]
            return outputs

        start = time.perf_counter()
        outputs = run()
        layers.append({"label": label, "first_time": time.perf_counter() - start,
                       "times": [], "cpus": []})
        runners[label] = run

        # Frames that lie entirely inside the utterance (padding changes only the last ones).
        for j, ref in enumerate(reference):
            inside = max(num_frames(len(waves[j])) - 4, 1)
            worst = max(worst, float(np.abs(outputs[j][:inside] - ref[:inside]).max()))
        # Exact lengths (no padding): every frame, on a sample of utterances.
        for j in order[:: max(len(order) // 12, 1)]:
            out = keras.ops.convert_to_numpy(model.predict_on_batch(waves[j][None] / 32768.0))
            worst = max(worst, float(np.abs(out[0] - reference[j]).max()))

    psf_times, psf_cpus = [], []
    for _ in range(rounds):
        start, cpu = time.perf_counter(), time.process_time()
        run_psf()
        psf_times.append(time.perf_counter() - start)
        psf_cpus.append(time.process_time() - cpu)
        for layer in layers:
            start, cpu = time.perf_counter(), time.process_time()
            runners[layer["label"]]()
            layer["times"].append(time.perf_counter() - start)
            layer["cpus"].append(time.process_time() - cpu)
    for layer in layers:
        layer["time"] = float(np.median(layer["times"]))
        layer["cpu"] = float(np.median(layer["cpus"]))
        ratios = np.array(psf_times) / np.array(layer["times"])
        layer["round_ratio"] = float(np.median(ratios))
        layer["ratio_range"] = (float(ratios.min()), float(ratios.max()))
    return {
        "utterances": len(waves),
        "seconds": seconds,
        "psf_time": float(np.median(psf_times)),
        "psf_cpu": float(np.median(psf_cpus)),
        "layers": layers,
        "max_abs_error": worst,
        "batches": len(batches),
        "rounds": rounds,
    }


def bench_pipeline(args, batch: int, skip_train: bool) -> dict:
    import keras

    from keras_dkd import data

    start = time.perf_counter()
    bundle = data.prepare("emodb", protocol="loso", fold=0, batch_size=batch,
                          data_dir=args.data_dir, cache_dir=args.cache_dir,
                          manual_dir=args.emodb)
    prepare_time = time.perf_counter() - start
    computed = bundle.describe()["cache"]["computed_utterances"]
    start = time.perf_counter()
    bundle2 = data.prepare("emodb", protocol="loso", fold=0, batch_size=batch,
                           data_dir=args.data_dir, cache_dir=args.cache_dir,
                           manual_dir=args.emodb)
    cached_time = time.perf_counter() - start
    assert bundle2.describe()["cache"]["computed_utterances"] == 0

    # Batches per second from the tf.data pipeline (as NumPy, like fit() consumes them).
    n_batches = 0
    start = time.perf_counter()
    for _ in range(3):
        for x, y in bundle.train:
            x.numpy()
            y.numpy()
            n_batches += 1
    batch_ms = 1000 * (time.perf_counter() - start) / n_batches

    result = {
        "prepare_time": prepare_time,
        "computed": computed,
        "cached_time": cached_time,
        "train_segments": bundle.train_set.n_segments,
        "batch_ms": batch_ms,
        "step_ms": None,
        "model": None,
    }
    if skip_train:
        return result
    try:
        from keras_dkd.models import build_model
    except ImportError:
        result["model"] = "keras_dkd.models not available"
        return result
    model = build_model()
    model.compile(
        optimizer=keras.optimizers.Adam(1e-4),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
    )
    batches = [(x.numpy(), y.numpy()) for x, y in bundle.train.take(8)]
    batches = [b for b in batches if len(b[0]) == batch]
    model.train_on_batch(*batches[0])  # compile
    model.train_on_batch(*batches[1])
    start = time.perf_counter()
    for x, y in batches[2:]:
        model.train_on_batch(x, y)
    result["step_ms"] = 1000 * (time.perf_counter() - start) / len(batches[2:])
    result["model"] = "build_model() (cnn_mha)"
    return result


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--emodb", default=None, help="EmoDB folder holding wav/")
    parser.add_argument("--data-dir", default=None, help="TFDS data dir")
    parser.add_argument("--cache-dir", default=None, help="feature cache dir")
    parser.add_argument("--batch", type=int, default=8,
                        help="utterances per LogFBank batch, sorted by length (8 was the "
                        "fastest on a 2-core CPU; the pipeline uses batches of 32)")
    parser.add_argument("--rounds", type=int, default=5,
                        help="alternating timed rounds of each implementation")
    parser.add_argument("--skip-train", action="store_true", help="do not time a train step")
    parser.add_argument("--skip-pipeline", action="store_true", help="extraction only")
    args = parser.parse_args(argv)
    args.emodb = _emodb_dir(args.emodb)

    import keras

    backend = keras.backend.backend()
    ex = bench_extraction(read_waves(args.emodb / "wav"), args.batch, args.rounds)
    psf_ms = 1000 * ex["psf_time"] / ex["seconds"]
    print(f"## Feature extraction, all of EmoDB ({ex['utterances']} utterances, "
          f"{ex['seconds']:.0f} s of audio), backend {backend}\n")
    print(f"Medians of {ex['rounds']} alternating rounds; OPENBLAS_NUM_THREADS="
          f"{os.environ.get('OPENBLAS_NUM_THREADS', 'unset')}.\n")
    psf_cpu_ms = 1000 * ex["psf_cpu"] / ex["seconds"]
    print("| implementation | wall (s) | wall ms per s of audio | speed-up (per-round median, "
          "range) | CPU ms per s of audio | CPU speed-up |")
    print("| --- | ---: | ---: | ---: | ---: | ---: |")
    print(f"| python_speech_features (NumPy float64, per utterance) | {ex['psf_time']:.2f} | "
          f"{psf_ms:.3f} | 1.0x | {psf_cpu_ms:.3f} | 1.0x |")
    for layer in ex["layers"]:
        name = f"LogFBank, {backend}{layer['label']}"
        layer_ms = 1000 * layer["time"] / ex["seconds"]
        layer_cpu_ms = 1000 * layer["cpu"] / ex["seconds"]
        low, high = layer["ratio_range"]
        print(f"| {name} (float32, batches of {args.batch}) | {layer['time']:.2f} | "
              f"{layer_ms:.3f} | {psf_ms / layer_ms:.1f}x ({layer['round_ratio']:.1f}x, "
              f"{low:.1f}-{high:.1f}x) | {layer_cpu_ms:.3f} | {psf_cpu_ms / layer_cpu_ms:.1f}x |")
        first = layer["first_time"]
        print(f"| {name}, first pass (compilation per batch shape, warm-up) | {first:.2f} | "
              f"{1000 * first / ex['seconds']:.3f} | {ex['psf_time'] / first:.1f}x | | |")
    print(f"\nLargest |LogFBank - python_speech_features| over EmoDB: "
          f"{ex['max_abs_error']:.2e} (log energy)\n")
    if args.skip_pipeline:
        return
    pipe = bench_pipeline(args, 32, args.skip_train)
    print(f"## Cached input pipeline: EmoDB four_class, LOSO fold 0, batch 32, "
          f"backend {backend}\n")
    print("| measure | value |")
    print("| --- | ---: |")
    print(f"| data.prepare, first call ({pipe['computed']} utterances computed) | "
          f"{pipe['prepare_time']:.1f} s |")
    print(f"| data.prepare, second call (all cached) | {pipe['cached_time']:.1f} s |")
    print(f"| training segments | {pipe['train_segments']} |")
    print(f"| bundle.train: time per batch | {pipe['batch_ms']:.2f} ms "
          f"({1000 / pipe['batch_ms']:.0f} batches/s) |")
    if pipe["step_ms"] is not None:
        print(f"| train step, {pipe['model']} | {pipe['step_ms']:.0f} ms |")
        print(f"| pipeline headroom (step / batch) | {pipe['step_ms'] / pipe['batch_ms']:.0f}x |")
        print(f"| headroom vs the 180-ms CE-step floor of REFERENCE.md | "
              f"{180 / pipe['batch_ms']:.0f}x |")
    else:
        print(f"| train step | not measured ({pipe['model'] or 'skipped'}); REFERENCE.md: "
              f"180-700 ms on this machine kind |")
        print(f"| pipeline headroom vs the 180-ms floor | {180 / pipe['batch_ms']:.0f}x |")


if __name__ == "__main__":
    main()
