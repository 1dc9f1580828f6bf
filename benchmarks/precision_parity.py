"""bfloat16 accuracy parity (issue 16): the same trainings in float32 and mixed_bfloat16.

EmoDB four_class, one leave-one-speaker-out fold, several seeds: each seed trains the CE model
(``--variant``, default ``ce``: the head-fusion network) under the ``default`` recipe once with
the ``float32`` dtype policy and once with ``mixed_bfloat16``, with the library
(``keras_dkd.training.train``; one resumable run directory each, so an interrupted study
continues where it stopped). Reported per seed: test WA, UA and macro-F1 in both precisions,
the paired UA difference (bfloat16 − float32) and the wall time of each training. The issue's
bar: mean UA within 1 point of float32.

Run it where bfloat16 has hardware (a GPU, or a CPU with AVX-512 BF16/AMX): on a CPU without
bfloat16 arithmetic a bfloat16 training runs 5-13× slower than float32 and says nothing about
speed. ``keras-dkd info`` names the accelerators the backend sees; the records keep them.

Example::

    KERAS_BACKEND=jax python benchmarks/precision_parity.py --runs runs/parity \\
        --manual-dir ../shared/data/emodb

writes ``docs/results/precision_parity.json`` (one record per training) and ``.md``. On a GPU
machine without TensorFlow, save the data first where TensorFlow is, carry the folder, and
train from it::

    KERAS_BACKEND=jax python benchmarks/precision_parity.py --runs unused \\
        --manual-dir ../shared/data/emodb --export-bundles bundles/parity
    KERAS_BACKEND=jax python benchmarks/precision_parity.py --runs runs/parity \\
        --bundles bundles/parity                   # on the GPU machine
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
from _timed import train_timed

ROOT = Path(__file__).resolve().parents[1]
PRECISIONS = ("float32", "mixed_bfloat16")


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", required=True, help="folder of the run directories")
    parser.add_argument("--fold", type=int, default=0, help="the held-out speaker's index [0]")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2], help="[0 1 2]")
    parser.add_argument("--variant", choices=["ce", "cnn"], default="ce",
                        help="ce: the head-fusion network; cnn: without attention [ce]")
    parser.add_argument("--epochs", type=int, default=None,
                        help="epoch budget (default: the recipe's); small values for smoke runs")
    parser.add_argument("--max-utterances", type=int, default=None,
                        help="a stratified subset of this many utterances (smoke runs only)")
    parser.add_argument("--val-order", choices=["rotate", "seeded"], default="rotate",
                        help="which training speakers validate [rotate]; the records made "
                             "before 2026-12-01 used seeded")
    parser.add_argument("--manual-dir", default=None, help="the EmoDB folder (holding wav/)")
    parser.add_argument("--data-dir", default=None, help="TFDS data dir")
    parser.add_argument("--cache-dir", default=None, help="feature cache")
    parser.add_argument("--bundles", default=None, metavar="DIR",
                        help="train from the data bundles saved in DIR by --export-bundles "
                             "(no TensorFlow needed: a GPU machine with only PyTorch or JAX)")
    parser.add_argument("--export-bundles", default=None, metavar="DIR",
                        help="save the data bundles of these runs (fold, seeds, the default "
                             "recipe's data options) into DIR and stop; needs TensorFlow")
    parser.add_argument("--out", default=str(ROOT / "docs" / "results"),
                        help="where precision_parity.json and .md go [docs/results]")
    return parser.parse_args(argv)


def run_options(precision, seed, args):
    """The RunOptions of one training of the study."""
    from keras_dkd.options import RunOptions

    flat = {"epochs": args.epochs} if args.epochs else {}
    if args.max_utterances:
        flat["max_utterances"] = args.max_utterances
    return RunOptions.from_flat(
        dataset="emodb", protocol="loso", fold=args.fold, seed=seed, recipe="default",
        variant=args.variant, precision=precision, manual_dir=args.manual_dir,
        data_dir=args.data_dir, cache_dir=args.cache_dir, bundle_dir=args.bundles,
        val_order=args.val_order, **flat,
    )


def export_bundles(args) -> None:
    """Save each seed's prepared data where ``--bundles`` will look for it."""
    import dataclasses

    from keras_dkd import bundles, data

    for seed in args.seeds:
        options = run_options("float32", seed, args).data  # the same data in both precisions
        options = dataclasses.replace(options, bundle_dir=None)
        target = bundles.bundle_path(dataclasses.replace(options, bundle_dir=args.export_bundles),
                                     seed)
        path = bundles.save_bundle(data.prepare(options, seed), target)
        print(f"wrote {path} ({path.stat().st_size / 2**20:.1f} MiB)", flush=True)


def train_one(precision, seed, args) -> dict:
    """Train one model (or find it trained); return its record."""
    import keras

    from keras_dkd import bundles, corpora
    from keras_dkd.info import accelerators

    options = run_options(precision, seed, args)
    if args.bundles:  # the bundle names its test speaker (the corpus' builder needs TFDS)
        path = bundles.bundle_path(options.data, seed)
        with np.load(path) as saved:
            group = json.loads(str(saved["info"]))["test_group"]
    else:
        group = corpora.groups("emodb")[args.fold]
    run_dir = Path(args.runs) / precision / f"fold{args.fold}-{group}" / f"seed{seed}"
    result, wall = train_timed(options, run_dir)
    student = result["metrics"]["student"]
    phase = result["phases"].get("student", {})
    config = json.loads((run_dir / "config.json").read_text())
    backend = config["backend"]
    return {
        "precision": precision, "variant": args.variant, "fold": args.fold, "group": group,
        "seed": seed, "wa": student["wa"], "ua": student["ua"], "macro_f1": student["macro_f1"],
        "selected_epoch": phase.get("selected_epoch"),
        "epochs_run": phase.get("epochs_run", phase.get("epochs")),
        "wall_seconds": wall,
        "backend": backend, "accelerators": accelerators(keras.backend.backend()),
        "machine": config.get("machine"), "versions": config["versions"],
        "options": config["options"], "run_dir": str(run_dir),
    }


def summarize(records) -> dict:
    """Paired UA differences (bfloat16 − float32) and wall-time ratios over the seeds."""
    by = {(r["precision"], r["seed"]): r for r in records}
    seeds = sorted({r["seed"] for r in records})
    pairs = [(by[("float32", s)], by[("mixed_bfloat16", s)]) for s in seeds
             if ("float32", s) in by and ("mixed_bfloat16", s) in by]
    diffs = np.asarray([b["ua"] - f["ua"] for f, b in pairs], float)
    speed = np.asarray([f["wall_seconds"] / b["wall_seconds"] for f, b in pairs], float)
    mean = {p: float(np.mean([r["ua"] for r in records if r["precision"] == p]))
            for p in PRECISIONS if any(r["precision"] == p for r in records)}
    out = {"pairs": len(pairs), "mean_ua": mean}
    if len(pairs):
        out.update(
            mean_ua_difference=float(diffs.mean()),
            sd_ua_difference=float(diffs.std(ddof=1)) if len(diffs) > 1 else 0.0,
            max_abs_ua_difference=float(np.abs(diffs).max()),
            parity_within_1_point=bool(abs(diffs.mean()) <= 0.01),
            wall_speedup_median=float(np.median(speed)),
        )
    return out


def report(records, summary, command) -> str:
    from keras_dkd.info import machine_text

    lines = [
        "# bfloat16 accuracy parity (EmoDB four_class, one fold)",
        "",
        f"- Command: `{command}`",
        f"- Backend: {', '.join(sorted({r['backend'] for r in records}))}; accelerators: "
        f"{', '.join(sorted({a for r in records for a in r['accelerators']})) or 'none (CPU)'}.",
        *[f"- Machine: {m}." for m in sorted({machine_text(r["machine"]) for r in records
                                              if r.get("machine")})],
        "- The issue's bar: mean test UA in mixed_bfloat16 within 1 point of float32.",
        "",
        "| seed | float32 UA | bfloat16 UA | difference (points) | float32 wall | bfloat16 wall |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    by = {(r["precision"], r["seed"]): r for r in records}
    for seed in sorted({r["seed"] for r in records}):
        f, b = by.get(("float32", seed)), by.get(("mixed_bfloat16", seed))

        def cell(r, key, scale=100, fmt="{:.1f}"):
            return fmt.format(r[key] * scale) if r else "—"

        diff = f"{(b['ua'] - f['ua']) * 100:+.1f}" if f and b else "—"
        lines.append(f"| {seed} | {cell(f, 'ua')} | {cell(b, 'ua')} | {diff} | "
                     f"{cell(f, 'wall_seconds', 1, '{:.0f} s')} | "
                     f"{cell(b, 'wall_seconds', 1, '{:.0f} s')} |")
    if summary.get("pairs"):
        lines += [
            "",
            f"- Mean UA: float32 {summary['mean_ua']['float32'] * 100:.1f} %, bfloat16 "
            f"{summary['mean_ua']['mixed_bfloat16'] * 100:.1f} %; paired difference "
            f"{summary['mean_ua_difference'] * 100:+.1f} ± "
            f"{summary['sd_ua_difference'] * 100:.1f} points over {summary['pairs']} seeds "
            f"(largest {summary['max_abs_ua_difference'] * 100:.1f}): "
            f"**{'within' if summary['parity_within_1_point'] else 'not within'} 1 point**.",
            f"- Wall time, float32 over bfloat16 (median over seeds): "
            f"{summary['wall_speedup_median']:.2f}× (> 1: bfloat16 faster).",
        ]
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    from keras_dkd.allocator import tune_allocator
    from keras_dkd.io import atomic_write_json, atomic_write_text

    args = parse_args(argv)
    if args.export_bundles:
        export_bundles(args)
        return 0
    tune_allocator()  # on JAX, before its first computation (as the keras-dkd command does)
    command = "python " + " ".join([Path(sys.argv[0]).as_posix(), *sys.argv[1:]])
    records = []
    for seed in args.seeds:
        for precision in PRECISIONS:
            record = train_one(precision, seed, args)
            records.append(record)
            print(f"seed {seed} {precision:<15} test UA {record['ua'] * 100:.1f}, "
                  f"epoch {record['selected_epoch']}/{record['epochs_run']}, "
                  f"{record['wall_seconds']:.0f} s", flush=True)
    summary = summarize(records)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_json(out / "precision_parity.json",
                      {"study": "precision_parity", "command": command, "summary": summary,
                       "records": records})
    text = report(records, summary, command)
    atomic_write_text(out / "precision_parity.md", text)
    print("\n" + text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
