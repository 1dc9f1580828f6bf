"""Run the library's ablation (``keras_dkd.experiments.ablate``) where TensorFlow is missing.

The GPU machines this project borrows have PyTorch and JAX but no TensorFlow, and TensorFlow
is too large to carry there; TFDS (and so ``keras_dkd.data.prepare``) needs it. Training itself
does not: ``experiments`` trains on NumPy arrays. So the ablation runs in two steps:

1. ``export`` (here, with TensorFlow): ``keras_dkd.data.prepare`` for each seed, saved as one
   ``.npz`` per seed (segments, utterance indices, labels, ids, speakers, the description);
2. ``run`` (anywhere with keras and a backend): the unchanged ``experiments.ablate``, with
   ``experiments.prepare_data`` replaced by a loader of those files and TensorBoard event files
   switched off (they are written with ``tf.summary``). Everything else, models, Distiller,
   optimiser, model selection on the validation speakers and test metrics, is the library's.

Example::

    python benchmarks/ablation_offline.py export --dataset emodb --protocol loso --fold 0 \\
        --seeds 0 1 2 --out bundles/
    KERAS_BACKEND=jax python benchmarks/ablation_offline.py run --bundles bundles/ \\
        --out ablation/ --epochs 50
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
from pathlib import Path

import numpy as np

SETS = ("train_set", "val", "test")
FIELDS = ("segments", "utterance_index", "labels", "utterance_ids", "speakers", "groups")


def export(args) -> None:
    from keras_dkd import data

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    for seed in args.seeds:
        bundle = data.prepare(
            args.dataset,
            config=args.config,
            protocol=args.protocol,
            fold=args.fold,
            seed=seed,
            normalize=args.normalize,
        )
        arrays = {"class_names": np.array(bundle.class_names)}
        if bundle.normalization is not None:
            arrays["norm_mean"], arrays["norm_variance"] = bundle.normalization
        for name in SETS:
            part = getattr(bundle, name)
            if part is None:
                continue
            for field in FIELDS:
                arrays[f"{name}.{field}"] = np.asarray(getattr(part, field))
            arrays[f"{name}.hop_seconds"] = np.array(part.hop_seconds)
        arrays["info"] = np.array(json.dumps(bundle.describe()))
        path = out / f"{args.dataset}-{args.protocol}-fold{args.fold}-seed{seed}.npz"
        np.savez_compressed(path, **arrays)
        print(f"wrote {path} ({path.stat().st_size / 2**20:.1f} MiB)")


def load_bundle(path):
    from keras_dkd.data import DataBundle, UtteranceSet

    z = np.load(path)
    class_names = [str(c) for c in z["class_names"]]

    def utterance_set(name):
        if f"{name}.segments" not in z:
            return None
        values = {f: z[f"{name}.{f}"] for f in FIELDS}
        for f in ("utterance_ids", "speakers", "groups"):
            values[f] = [str(v) for v in values[f]]
        return UtteranceSet(
            **values, class_names=class_names, hop_seconds=float(z[f"{name}.hop_seconds"])
        )

    normalization = None
    if "norm_mean" in z:
        normalization = (z["norm_mean"], z["norm_variance"])
    return DataBundle(
        class_names=class_names,
        train=None,
        val=utterance_set("val"),
        test=utterance_set("test"),
        normalization=normalization,
        train_set=utterance_set("train_set"),
        info=json.loads(str(z["info"])),
    )


def run(args) -> None:
    import keras

    from keras_dkd import experiments, runs

    bundles = Path(args.bundles)
    files = {}
    for path in sorted(bundles.glob("*.npz")):
        seed = int(path.stem.rsplit("seed", 1)[1])
        files[seed] = path
    first = load_bundle(next(iter(files.values())))
    info = first.info

    def prepare_data(dataset, *, seed=0, **_):
        return load_bundle(files[int(seed)])

    class NoEventFiles(keras.callbacks.Callback):
        def __init__(self, log_dir):
            super().__init__()

    experiments.prepare_data = prepare_data
    experiments.ScalarLogger = NoEventFiles
    runs.ScalarLogger = NoEventFiles

    kwargs = dict(
        seeds=sorted(files),
        config=info.get("config"),
        protocol=info.get("protocol", "loso"),
        fold=info.get("fold"),
        epochs=args.epochs,
        verbose=0,
        command=" ".join(shlex.quote(a) for a in sys.argv),
        on_event=lambda e: print(json.dumps(e, default=str), flush=True),
    )
    if args.betas:
        kwargs["betas"] = args.betas
    table = experiments.ablate(info["dataset"], args.out, **kwargs)
    print(experiments.format_ablation(table))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    e = sub.add_parser("export", help="save keras_dkd.data bundles (needs TensorFlow)")
    e.add_argument("--dataset", default="emodb")
    e.add_argument("--config", default=None)
    e.add_argument("--protocol", default="loso")
    e.add_argument("--fold", type=int, default=0)
    e.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    e.add_argument("--normalize", action="store_true")
    e.add_argument("--out", required=True)
    r = sub.add_parser("run", help="run experiments.ablate on exported bundles")
    r.add_argument("--bundles", required=True)
    r.add_argument("--out", required=True)
    r.add_argument("--epochs", type=int, default=50)
    r.add_argument("--betas", type=float, nargs="+", default=None)
    args = parser.parse_args()
    export(args) if args.command == "export" else run(args)


if __name__ == "__main__":
    main()
