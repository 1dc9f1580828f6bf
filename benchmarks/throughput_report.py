"""Collect ``benchmarks/throughput.py --json`` files into one study: JSON, markdown table, plot.

Run by hand after ``benchmarks/gpu_throughput.sh`` (or any set of throughput runs)::

    python benchmarks/throughput_report.py runs/gpu/throughput_*.json \\
        --machine runs/gpu/machine.txt --out docs/results/throughput_gpu \\
        --command "bash benchmarks/gpu_throughput.sh runs/gpu torch jax"

writes ``OUT.json`` (every run's info and figures as throughput.py wrote them, with the
command and the machine), ``OUT.md`` (one row per backend, batch, precision and step:
medians, segments per second, ratios against plain PyTorch eager float32 and under bfloat16
autocast, and the spread of the Keras step over the rounds) and ``OUT.png`` (segments per
second of each step against plain PyTorch's). Ratios > 1 mean Keras is faster.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from keras_dkd.io import atomic_path, atomic_write_json, atomic_write_text  # noqa: E402

PRECISIONS = {"float32": "float32", "mixed_bfloat16": "bfloat16"}
SHORT = {"float32": "fp32", "mixed_bfloat16": "bf16"}
STEPS = {"train": "training step", "infer": "inference", "dkd": "DKD step",
         "dkd_cached": "DKD (cached)"}


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("runs", nargs="+", help="JSON files written by throughput.py --json")
    parser.add_argument("--out", required=True, help="output prefix (OUT.json, OUT.md, OUT.png)")
    parser.add_argument("--machine", help="a text file describing the machine (machine.txt)")
    parser.add_argument("--command", default="", help="the command that made the runs")
    parser.add_argument("--date", default=None, help="measurement date (default: today, UTC)")
    parser.add_argument("--log", help="a text file kept whole in OUT.json (e.g. the runs' log)")
    parser.add_argument("--note", action="append", default=[],
                        help="a line to add to the report's header (repeatable)")
    return parser.parse_args(argv)


def load_runs(paths):
    """The runs, ordered by backend, batch size and file name."""
    runs = []
    for path in paths:
        with open(path, encoding="utf-8") as f:
            run = json.load(f)
        if "info" not in run or "results" not in run:
            raise SystemExit(f"Error: {path} is not a throughput.py --json file")
        run["file"] = os.path.basename(path)
        runs.append(run)
    return sorted(runs, key=lambda r: (r["info"]["backend"], r["info"]["batch_size"],
                                       r["file"]))


def table_rows(runs):
    """Markdown rows: one per (backend, batch, precision, step)."""
    rows = []
    for run in runs:
        info = run["info"]
        for precision, sections in run["results"].items():
            for section, f in sections.items():
                k = f["keras"]
                cells = [run["file"].removesuffix(".json"), info["backend"],
                         str(info["batch_size"]), PRECISIONS[precision],
                         STEPS[section],
                         f"{k['median_ms']:.1f} ms ({k['segments_per_s']:,.0f} seg/s)",
                         f"{k['min_ms']:.1f}–{k['max_ms']:.1f}"]
                if "torch" in f:
                    cells += [f"{f['torch']['median_ms']:.1f} ms",
                              f"{f['ratio_torch']:.2f}× ({f['paired_ratio_torch']:.2f}×)"]
                else:
                    cells += ["—", "—"]
                if "torch_bf16" in f:
                    cells += [f"{f['torch_bf16']['median_ms']:.1f} ms",
                              f"{f['ratio_torch_bf16']:.2f}×"]
                else:
                    cells += ["—", "—"]
                rows.append("| " + " | ".join(cells) + " |")
    return rows


def markdown(runs, machine, command, date, notes=()):
    first = runs[0]["info"]
    lines = [
        "# Throughput, collected runs of benchmarks/throughput.py",
        "",
        f"- Command: `{command}`; collected with `python benchmarks/throughput_report.py`.",
        f"- Measured {date}. Keras {first.get('keras')}, Python {first.get('python')}, "
        f"PyTorch {first.get('torch', '?')}; Keras ran on "
        + ", ".join(sorted({d for r in runs for d in r['info'].get('keras_devices', [])}))
        + "; plain PyTorch on "
        + ", ".join(sorted({r["info"].get("plain_torch_device", "—") for r in runs})) + ".",
    ]
    if machine:
        lines.append("- Machine: " + "; ".join(line.strip() for line in machine.splitlines()
                                               if line.strip() and not line.startswith("==")))
    lines += [
        "- Each run: " + ", ".join(
            f"{r['info']['backend']} batch {r['info']['batch_size']} "
            f"({r['info']['steps']} rounds after {r['info']['warmup']} warm-up, "
            f"jit_compile={r['info']['jit_compile']})" for r in runs) + ".",
        "- Keras and plain PyTorch steps alternate round by round; medians, and in brackets "
        "the median of the per-round ratios. Ratios > 1: Keras faster. \"DKD (cached)\" is "
        "keras-dkd's step with the teacher's logits computed once; its baseline is plain "
        "PyTorch's DKD step, which runs its teacher. \"range\" is the Keras step's fastest and "
        "slowest round.",
        *[f"- {note}" for note in notes],
        "",
        "| run | backend | batch | precision | step | keras (median) | range (ms) "
        "| plain PyTorch fp32 | ratio | plain PyTorch bf16 autocast | ratio |",
        "| --- |" + " --- |" * 10,
    ]
    return "\n".join(lines + table_rows(runs) + precision_rows(runs)) + "\n"


def precision_rows(runs):
    """A second table: bfloat16's speed-up over float32 within each run (the same process,
    the same rounds), for the runs that timed both precisions."""
    rows = []
    for run in runs:
        results = run["results"]
        if not {"float32", "mixed_bfloat16"} <= set(results):
            continue
        for section in STEPS:
            if section in results["float32"] and section in results["mixed_bfloat16"]:
                fp32 = results["float32"][section]["keras"]["median_ms"]
                bf16 = results["mixed_bfloat16"][section]["keras"]["median_ms"]
                rows.append(f"| {run['file'].removesuffix('.json')} | {run['info']['backend']} "
                            f"| {run['info']['batch_size']} | {STEPS[section]} | {fp32:.1f} ms "
                            f"| {bf16:.1f} ms | {fp32 / bf16:.2f}× |")
    if not rows:
        return []
    return ["", "bfloat16 over float32 in the same run (Keras step medians; > 1: bfloat16 "
            "faster):", "", "| run | backend | batch | step | float32 | bfloat16 | speed-up |",
            "| --- |" + " --- |" * 6, *rows]


def render(study):
    """OUT.md's text from OUT.json's content."""
    return markdown(study["runs"], study["machine"], study["command"], study["date"],
                    study.get("notes", ()))


def plot(runs, path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(runs), figsize=(3.2 * len(runs), 4.6), sharey=False)
    axes = [axes] if len(runs) == 1 else list(axes)
    for ax, run in zip(axes, runs, strict=True):
        info = run["info"]
        labels, keras_rates, torch_rates = [], [], []
        for precision, sections in run["results"].items():
            for section in ("train", "dkd_cached"):
                if section not in sections:
                    continue
                f = sections[section]
                labels.append(f"{'CE' if section == 'train' else 'DKD*'}\n"
                              f"{SHORT[precision]}")
                keras_rates.append(f["keras"]["segments_per_s"])
                torch_rates.append(f["torch"]["segments_per_s"] if "torch" in f else 0)
        xs = range(len(labels))
        ax.bar([x - 0.2 for x in xs], keras_rates, 0.4, label="keras-dkd")
        ax.bar([x + 0.2 for x in xs], torch_rates, 0.4, label="plain PyTorch fp32")
        ax.set_xticks(list(xs), labels, fontsize=8)
        ax.set_title(f"{run['file'].removesuffix('.json')}\n{info['backend']}, batch "
                     f"{info['batch_size']}", fontsize=9)
        ax.set_ylabel("segments / s")
    handles, names = axes[0].get_legend_handles_labels()
    fig.legend(handles, names, fontsize=8, loc="lower center", ncol=2)
    fig.suptitle("Training steps (DKD* = cached teacher logits; plain PyTorch runs its teacher)",
                 fontsize=9)
    fig.tight_layout(rect=(0, 0.06, 1, 1))
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=110)
    plt.close(fig)


def main(argv=None):
    args = parse_args(argv)
    runs = load_runs(args.runs)
    machine = ""
    if args.machine:
        with open(args.machine, encoding="utf-8") as f:
            machine = f.read()
    log = ""
    if args.log:
        with open(args.log, encoding="utf-8") as f:
            log = f.read()
    date = args.date or datetime.datetime.now(datetime.UTC).date().isoformat()
    atomic_write_json(args.out + ".json", {"date": date, "command": args.command,
                                           "machine": machine, "notes": args.note,
                                           "log": log, "runs": runs})
    atomic_write_text(args.out + ".md", markdown(runs, machine, args.command, date, args.note))
    plot(runs, args.out + ".png")
    print(f"wrote {args.out}.json, {args.out}.md, {args.out}.png ({len(runs)} runs)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
