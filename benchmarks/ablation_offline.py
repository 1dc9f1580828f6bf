"""Run the paper's ablation where TensorFlow is missing (a GPU machine with PyTorch or JAX).

TFDS (and so reading a corpus) needs TensorFlow; training does not. The library's seam for this
is :mod:`keras_dkd.bundles`: prepared data saved as one ``.npz`` per seed, read back by
``keras_dkd.data.prepare`` when ``DataOptions.bundle_dir`` is set. So the ablation runs in two
steps, both through the public API:

1. ``export`` (here, with TensorFlow): ``data.prepare`` for each seed, saved with
   ``bundles.save_bundle`` under the name ``bundles.bundle_path`` gives it;
2. ``run`` (anywhere with keras and a backend): ``studies.ablate`` with
   ``bundle_dir=<that folder>``, the same data options, and the ablation's training options.
   TensorBoard event files are skipped where TensorFlow is missing.

Example::

    python benchmarks/ablation_offline.py export --dataset emodb --protocol loso --fold 0 \\
        --seeds 0 1 2 --out bundles/
    KERAS_BACKEND=jax python benchmarks/ablation_offline.py run --dataset emodb --protocol loso \\
        --fold 0 --seeds 0 1 2 --bundles bundles/ --out ablation/ --epochs 50
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import shlex
import sys


def _data_options(args, bundle_dir=None):
    from keras_dkd.options import DataOptions

    return DataOptions(args.dataset, args.config, args.protocol,
                       args.fold if args.protocol == "loso" else None,
                       normalize=args.normalize, bundle_dir=bundle_dir,
                       val_order=args.val_order)


def export(args) -> None:
    from keras_dkd import bundles, data

    options = _data_options(args)
    for seed in args.seeds:
        target = bundles.bundle_path(dataclasses.replace(options, bundle_dir=args.out), seed)
        path = bundles.save_bundle(data.prepare(options, seed), target)
        print(f"wrote {path} ({path.stat().st_size / 2**20:.1f} MiB)")


def run(args) -> None:
    from keras_dkd import reports, studies
    from keras_dkd.options import Recipe, RunOptions
    from keras_dkd.training import Progress

    recipe = Recipe(epochs=args.epochs)
    base = RunOptions(data=_data_options(args, bundle_dir=args.bundles), recipe=recipe)
    progress = Progress(on_event=lambda e: print(json.dumps(e, default=str), flush=True))
    table = studies.ablate(base, args.out, seeds=args.seeds, betas=args.betas, progress=progress,
                           command=" ".join(shlex.quote(a) for a in sys.argv))
    print(reports.format_ablation(table))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    e = sub.add_parser("export", help="save data bundles (needs TensorFlow)")
    r = sub.add_parser("run", help="run studies.ablate on saved bundles")
    for p in (e, r):
        p.add_argument("--dataset", default="emodb")
        p.add_argument("--config", default=None)
        p.add_argument("--protocol", default="loso")
        p.add_argument("--fold", type=int, default=0)
        p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
        p.add_argument("--normalize", action="store_true")
        p.add_argument("--val-order", choices=["rotate", "seeded"], default="rotate",
                       help="which training speakers validate; the records made before "
                            "2026-12-01 used seeded")
        p.add_argument("--out", required=True)
    r.add_argument("--bundles", required=True)
    r.add_argument("--epochs", type=int, default=50)
    r.add_argument("--betas", type=float, nargs="+", default=None)
    args = parser.parse_args()
    export(args) if args.command == "export" else run(args)


if __name__ == "__main__":
    main()
