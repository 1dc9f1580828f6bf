"""How much a model's scores move when the same recipe is simply trained again (issue 15).

The recipes study compares a candidate with ``default`` paired on the same fold and seed. But
training on the CPU is not bit-for-bit repeatable (TensorFlow's multi-threaded kernels sum in
varying order), so even two trainings with *identical* options differ. This script takes the
records of such replicas from the studies' JSON files (same setting, variant ``cnn_mha``, same
seed, every option equal but the data paths; it refuses replicas that differ) and measures,
fold by fold, how far they fall apart: on the validation speaker (selected epoch, last epoch,
mean of the last 10 epochs) and on the test speaker. That is the noise floor of every paired
comparison in the study: a candidate's paired difference no larger than it says nothing.

It trains nothing. Writes ``docs/results/<name>.json`` (the replicas' records and the summary),
``.md`` and ``.png``.

Example (the command behind docs/results/recipes_retrain.md)::

    python benchmarks/retrain_noise.py \\
        --replica docs/results/recipes_rotate.json default_freq_warp-0.1 0 \\
        --replica docs/results/recipes_rotate2.json default 0 \\
        --replica docs/results/recipes_rotate3.json default 0 \\
        --replica docs/results/recipes_round2.json default 1 \\
        --replica docs/results/recipes_rotate2.json default 1
"""

from __future__ import annotations

import argparse
import itertools
import json
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
METRICS = (("val_ua", "validation, selected epoch"), ("val_ua_last", "validation, last epoch"),
           ("val_ua_last10", "validation, last 10 epochs"), ("ua", "test UA"))
#: Options that name where data lie, not what trains.
PATHS = ("manual_dir", "data_dir", "cache_dir")
#: The smallest difference the issue's target turns on (points).
EFFECT = 2.0


def _setting(record) -> str:
    return record.get("setting", record.get("recipe"))


def load_replica(path: str, setting: str, seed: int) -> dict:
    """The ``cnn_mha`` records of one setting and seed in one study JSON, by fold."""
    records = json.loads(Path(path).read_text())["records"]
    found = {r["fold"]: r for r in records
             if _setting(r) == setting and r["seed"] == seed and r["variant"] == "cnn_mha"}
    if not found:
        sys.exit(f"error: {path} has no cnn_mha records of setting {setting!r}, seed {seed}; "
                 "check the setting's name in that file")
    return found


def _what_trains(record) -> dict:
    """The record's options without the data paths (what makes two trainings the same)."""
    options = record.get("options") or {}
    flat = {}
    for key, value in options.items():
        if isinstance(value, dict):
            flat.update({f"{key}.{k}": v for k, v in value.items() if k not in PATHS})
        elif key not in PATHS:
            flat[key] = value
    return flat


def check_identical(replicas) -> None:
    """Exit with a one-line error if two replicas of one seed differ in anything but paths."""
    for a, b in itertools.combinations(replicas, 2):
        if a["seed"] != b["seed"]:
            continue
        for fold in set(a["records"]) & set(b["records"]):
            oa, ob = _what_trains(a["records"][fold]), _what_trains(b["records"][fold])
            diff = sorted(k for k in set(oa) | set(ob) if oa.get(k) != ob.get(k))
            if diff:
                sys.exit(f"error: replicas {a['label']} and {b['label']} differ in "
                         f"{', '.join(diff)} (fold {fold}): they are not the same training")


def _row(d) -> dict:
    from scipy import stats

    d = np.asarray(d, float)
    return {"n": int(len(d)), "mean": float(d.mean()), "sd": float(d.std(ddof=1)),
            "mean_abs": float(np.abs(d).mean()), "max_abs": float(np.abs(d).max()),
            "p": float(stats.ttest_1samp(d, 0).pvalue) if d.std() > 0 else None}


def summarize(replicas) -> dict:
    """Paired differences between every two replicas of one seed, pooled over the pairs."""
    pairs, pooled = [], {key: [] for key, _ in METRICS}
    for a, b in itertools.combinations(replicas, 2):
        if a["seed"] != b["seed"]:
            continue
        folds = sorted(set(a["records"]) & set(b["records"]))
        entry = {"a": a["label"], "b": b["label"], "seed": a["seed"], "folds": folds}
        for key, _ in METRICS:
            d = [(b["records"][f][key] - a["records"][f][key]) * 100 for f in folds
                 if a["records"][f].get(key) is not None
                 and b["records"][f].get(key) is not None]
            if len(d) > 1:
                entry[key] = _row(d)
                pooled[key] += d
        entry["selected_epochs_differ"] = sum(
            a["records"][f]["selected_epoch"] != b["records"][f]["selected_epoch"] for f in folds)
        pairs.append(entry)
    summary = {"pairs": pairs, "pooled": {}, "replica_means": []}
    for key, _ in METRICS:
        if len(pooled[key]) > 1:
            row = _row(pooled[key])
            # paired two-sided t-test at 5 %, power 80 %: n = ((1.96 + 0.84) sd / effect)^2
            row["pairs_for_2_points"] = int(np.ceil((2.8 * row["sd"] / EFFECT) ** 2))
            summary["pooled"][key] = row
    for r in replicas:
        ua = [x["ua"] for x in r["records"].values() if x.get("ua") is not None]
        val = [x["val_ua"] for x in r["records"].values() if x.get("val_ua") is not None]
        summary["replica_means"].append({
            "label": r["label"], "seed": r["seed"], "folds": len(r["records"]),
            "test_ua": float(np.mean(ua)) * 100 if ua else None,
            "val_ua": float(np.mean(val)) * 100 if val else None})
    return summary


def _markdown(study) -> str:
    s = study["summary"]
    lines = [
        "# Retraining noise: the same recipe trained again (EmoDB four_class, cnn_mha)",
        "",
        f"- Made by `{study['command']}` from the study records named below; nothing trained.",
        "- Each replica is one study's ten leave-one-speaker-out models of one setting and seed; "
        "replicas of one seed have every option equal (data paths aside), so they differ only by "
        "the CPU's non-repeatable arithmetic. Differences are paired on the fold, in UA points.",
        "",
        "| replica | seed | folds | validation UA, selected epoch (mean %) | test UA (mean %) |",
        "| --- | --- | --- | --- | --- |",
    ]
    for r in s["replica_means"]:
        val = f"{r['val_ua']:.1f}" if r["val_ua"] is not None else "—"
        test = f"{r['test_ua']:.1f}" if r["test_ua"] is not None else "—"
        lines.append(f"| {r['label']} | {r['seed']} | {r['folds']} | {val} | {test} |")
    lines += ["", "Replica − replica, paired on the fold (mean ± sd of the differences; "
              "t-test p; largest |difference|):", "",
              "| pair | seed | folds | " + " | ".join(name for _, name in METRICS)
              + " | folds where the selected epoch differs |",
              "| --- | --- | --- | " + " | ".join("---" for _ in METRICS) + " | --- |"]

    def cell(row):
        if not row:
            return "—"
        p = "—" if row["p"] is None else (f"{row['p']:.3f}" if row["p"] >= 0.001 else "< 0.001")
        return f"{row['mean']:+.1f} ± {row['sd']:.1f} (p {p}; max {row['max_abs']:.1f})"

    for pair in s["pairs"]:
        lines.append(f"| {pair['b']} − {pair['a']} | {pair['seed']} | {len(pair['folds'])} | "
                     + " | ".join(cell(pair.get(key)) for key, _ in METRICS)
                     + f" | {pair['selected_epochs_differ']} |")
    lines.append(f"| pooled | | {s['pooled']['ua']['n'] if 'ua' in s['pooled'] else 0} | "
                 + " | ".join(cell(s["pooled"].get(key)) for key, _ in METRICS) + " | |")
    lines += ["", "Pairs of models a paired comparison needs to see a true difference of "
              f"{EFFECT:.0f} points (two-sided t-test at 5 %, power 80 %, taking the pooled sd "
              "above as the sd of a candidate's paired differences):", "",
              "| measure | sd of a paired difference | pairs needed |", "| --- | --- | --- |"]
    for key, name in METRICS:
        row = s["pooled"].get(key)
        if row:
            lines.append(f"| {name} | {row['sd']:.1f} | {row['pairs_for_2_points']} |")
    return "\n".join(lines) + "\n"


def _plot(study, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(11, 4.6), sharey=True)
    for ax, key, title in ((axes[0], "val_ua", "validation UA, selected epoch"),
                           (axes[1], "ua", "test UA")):
        for i, r in enumerate(study["replicas"]):
            recs = sorted(r["records"], key=lambda x: x["fold"])
            folds = [x["fold"] + (i - len(study["replicas"]) / 2) * 0.06 for x in recs]
            ax.plot(folds, [x[key] * 100 if x.get(key) is not None else np.nan for x in recs],
                    "o" if r["seed"] == 0 else "s", alpha=0.8,
                    label=f"{r['label']} (seed {r['seed']})")
        ax.set_title(title)
        ax.set_xlabel("fold (test speaker)")
        ax.set_xticks(range(10))
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("UA (%)")
    handles, labels = axes[0].get_legend_handles_labels()
    fig.legend(handles, labels, fontsize=7, loc="lower center", ncol=3)
    fig.suptitle("The same recipe and seed, trained again: cnn_mha, EmoDB four_class, LOSO")
    fig.tight_layout(rect=(0, 0.1, 1, 1))
    from keras_dkd.io import atomic_path

    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=110)
    plt.close(fig)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--replica", nargs=3, action="append", required=True,
                        metavar=("JSON", "SETTING", "SEED"),
                        help="a study's records file, the setting's name there, the seed")
    parser.add_argument("--results", default=str(ROOT / "docs" / "results"))
    parser.add_argument("--name", default="recipes_retrain")
    args = parser.parse_args()
    replicas = []
    for path, setting, seed in args.replica:
        label = f"{Path(path).stem}:{setting}"
        replicas.append({"label": label, "file": path, "setting": setting, "seed": int(seed),
                         "records": load_replica(path, setting, int(seed))})
    check_identical(replicas)
    command = "python benchmarks/retrain_noise.py " + " ".join(
        f"--replica {p} {s} {d}" for p, s, d in args.replica)
    keep = ("setting", "recipe", "variant", "fold", "group", "seed", "val_ua", "val_ua_last",
            "val_ua_last10", "ua", "selected_epoch", "epochs_run", "wall_seconds")
    study = {
        "study": args.name, "command": command,
        "replicas": [{"label": r["label"], "file": r["file"], "setting": r["setting"],
                      "seed": r["seed"],
                      "records": [{k: x[k] for k in keep if k in x}
                                  for _, x in sorted(r["records"].items())]}
                     for r in replicas],
        "summary": summarize(replicas),
    }
    text = _markdown(study)
    print(text)
    from keras_dkd.io import atomic_write_json, atomic_write_text

    out = Path(args.results)
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_json(out / f"{args.name}.json", study)
    atomic_write_text(out / f"{args.name}.md", text)
    _plot(study, out / f"{args.name}.png")


if __name__ == "__main__":
    main()
