"""What the host-allocator tuning (``keras_dkd.allocator``) does to a real training, per backend.

For each backend, the same short ``keras-dkd train`` (EmoDB four_class, leave-one-speaker-out
fold 0, the ``ce`` variant, ``--epochs N``) runs in a fresh process with
``KERAS_DKD_MALLOC=tuned`` and with ``KERAS_DKD_MALLOC=default``, alternately (``--rounds``
pairs). Recorded per training: the seconds of each epoch after the first (from the
TensorBoard event times; the first epoch includes compilation), the process's minor page faults
and peak resident memory (``wait4``), and whether the two settings' ``history.csv`` and
``metrics.json`` are identical (they must be: only where buffers live changes).

Example (the command behind docs/results/allocator.md)::

    python benchmarks/allocator.py --manual-dir ../shared/data/emodb --epochs 4

Time it on a quiet machine: anything else running changes the figures.
"""

from __future__ import annotations

import argparse
import glob
import json
import os
import resource
import shutil
import statistics
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SETTINGS = ("tuned", "default")


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--backends", nargs="+", default=["jax", "tensorflow", "torch"])
    parser.add_argument("--epochs", type=int, default=4, help="epochs per training [4]")
    parser.add_argument("--rounds", type=int, default=1, help="tuned/default pairs [1]")
    parser.add_argument("--manual-dir", default=None, help="the EmoDB folder (holding wav/)")
    parser.add_argument("--cache-dir", default=None, help="feature cache")
    parser.add_argument("--out", default=str(ROOT / "docs" / "results"),
                        help="where allocator.json and .md go [docs/results]")
    return parser.parse_args(argv)


def epoch_seconds(run_dir: Path) -> list[float]:
    """Seconds between consecutive epoch-end summaries (epoch 2 onwards)."""
    from tensorflow.python.summary.summary_iterator import summary_iterator

    ends = {}
    for path in glob.glob(str(run_dir / "logs" / "*" / "events.out.tfevents.*")):
        for event in summary_iterator(path):
            if any(v.tag == "epoch_loss" for v in event.summary.value):
                ends[event.step] = event.wall_time
    steps = sorted(ends)
    return [ends[b] - ends[a] for a, b in zip(steps, steps[1:], strict=False)]


def _mb(value):
    """A peak in MB as shown: rounded, or 'n/a' where it could not be measured."""
    return "n/a" if value is None else round(value)


def run_child_usage(backend, setting, run_dir, args) -> dict:
    """Run one training and return its record with the child's own resource usage."""
    exe = Path(sys.executable).with_name("keras-dkd")
    command = [str(exe), "train", "--dataset", "emodb", "--protocol", "loso", "--fold", "0",
               "--variant", "ce", "--epochs", str(args.epochs), "--out", str(run_dir),
               "--quiet"]
    if args.manual_dir:
        command += ["--manual-dir", args.manual_dir]
    if args.cache_dir:
        command += ["--cache-dir", args.cache_dir]
    env = {**os.environ, "KERAS_BACKEND": backend, "KERAS_DKD_MALLOC": setting}
    # posix_spawn starts the child with vfork semantics, and Linux carries the spawning
    # process's peak into the child's ru_maxrss at exec: the figure is max(this process's peak
    # now, the child's own). It is the child's own only when it exceeds ours (checked below).
    parent_peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    pid = os.posix_spawn(command[0], command, env)
    _, status, usage = os.wait4(pid, 0)
    if os.waitstatus_to_exitcode(status):
        raise SystemExit(f"{backend}/{setting}: keras-dkd train failed (exit "
                         f"{os.waitstatus_to_exitcode(status)})")
    config = json.loads((run_dir / "config.json").read_text())
    seconds = epoch_seconds(run_dir)
    return {
        "backend": backend, "setting": setting, "allocator": config.get("allocator"),
        "epochs": args.epochs, "epoch_seconds": seconds,
        "median_epoch_seconds": statistics.median(seconds) if seconds else None,
        "minor_page_faults": usage.ru_minflt,
        # None where the child's peak cannot be told from ours (see above)
        "peak_rss_mb": usage.ru_maxrss / 1024 if usage.ru_maxrss / 1024 > parent_peak_mb
        else None,
        "parent_peak_rss_mb": parent_peak_mb,
        "history": (run_dir / "history.csv").read_text(),
        "metrics": (run_dir / "metrics.json").read_text(),
    }


def main(argv=None) -> int:
    from keras_dkd.io import atomic_write_json, atomic_write_text

    args = parse_args(argv)
    command = "python " + " ".join([Path(sys.argv[0]).as_posix(), *sys.argv[1:]])
    records = []
    scratch = Path(tempfile.mkdtemp(prefix="allocator-bench-"))
    try:
        for backend in args.backends:
            for round_ in range(args.rounds):
                order = SETTINGS if round_ % 2 == 0 else SETTINGS[::-1]
                for setting in order:
                    run_dir = scratch / f"{backend}-{setting}-{round_}"
                    record = run_child_usage(backend, setting, run_dir, args)
                    record["round"] = round_
                    records.append(record)
                    print(f"{backend:<10} {setting:<8} epochs 2+: "
                          + ", ".join(f"{s:.1f}" for s in record["epoch_seconds"])
                          + f" s; page faults {record['minor_page_faults']:,}; "
                          f"peak RSS {_mb(record['peak_rss_mb'])} MB", flush=True)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)

    rows, summary = [], {}
    for backend in args.backends:
        mine = [r for r in records if r["backend"] == backend]
        same = all(r["history"] == mine[0]["history"] and r["metrics"] == mine[0]["metrics"]
                   for r in mine)
        cell = {}
        for setting in SETTINGS:
            runs = [r for r in mine if r["setting"] == setting]
            epochs = [s for r in runs for s in r["epoch_seconds"]]
            cell[setting] = {
                "median_epoch_seconds": statistics.median(epochs),
                "epoch_seconds_range": [min(epochs), max(epochs)],
                "minor_page_faults": [r["minor_page_faults"] for r in runs],
                "peak_rss_mb": [_mb(r["peak_rss_mb"]) for r in runs],
                "allocator": runs[0]["allocator"],
            }
        speedup = cell["default"]["median_epoch_seconds"] / cell["tuned"]["median_epoch_seconds"]
        summary[backend] = {**cell, "speedup": speedup, "identical_results": same}
        t, d = cell["tuned"], cell["default"]
        rows.append(
            f"| {backend} | {t['median_epoch_seconds']:.1f} s "
            f"({t['epoch_seconds_range'][0]:.1f}–{t['epoch_seconds_range'][1]:.1f}) | "
            f"{d['median_epoch_seconds']:.1f} s "
            f"({d['epoch_seconds_range'][0]:.1f}–{d['epoch_seconds_range'][1]:.1f}) | "
            f"{speedup:.2f}× | {', '.join(f'{x / 1e6:.2f}' for x in t['minor_page_faults'])} M"
            f" / {', '.join(f'{x / 1e6:.2f}' for x in d['minor_page_faults'])} M | "
            f"{', '.join(map(str, t['peak_rss_mb']))} / {', '.join(map(str, d['peak_rss_mb']))}"
            f" MB | {'yes' if same else '**no**'} |")
    for record in records:  # keep the records small: the comparison is done
        record.pop("history")
        record.pop("metrics")
    text = "\n".join([
        "# Host-allocator tuning in a real training (keras_dkd.allocator)",
        "",
        f"- Command: `{command}`",
        f"- Each backend: `keras-dkd train --dataset emodb --protocol loso --fold 0 --variant ce "
        f"--epochs {args.epochs}` in a fresh process with `KERAS_DKD_MALLOC=tuned` and "
        f"`=default`, alternately, {args.rounds} pair(s). Epoch seconds: epochs 2 to "
        f"{args.epochs} (the first compiles), from the TensorBoard event times; page faults "
        "and peak resident memory of the whole process (`wait4`).",
        f"- Machine: {os.cpu_count()} CPUs; run on a quiet machine.",
        "",
        "| backend | epoch, tuned | epoch, default | speed-up | page faults tuned / default |"
        " peak RSS tuned / default | identical results |",
        "| --- | --- | --- | --- | --- | --- | --- |",
        *rows,
        "",
    ])
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_json(out / "allocator.json", {"study": "allocator", "command": command,
                                               "summary": summary, "records": records})
    atomic_write_text(out / "allocator.md", text)
    print("\n" + text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
