"""Which epoch of a training to keep: the one a validation speaker chose, or the last (issue 15).

The recipes study keeps, by default (``select="best"``), the epoch with the best validation UA
on one held-out training speaker. Retraining the same recipe shows that choice to be a lottery
on the test speaker (``docs/results/recipes_retrain.md``: validation barely moves, the selected
epoch changes, test UA moves by up to 37 points). Whether another rule would keep better models
cannot be judged on the selecting speaker itself (its best epoch is its own maximum), nor on the
test speakers (that would choose on the test set). So this study holds out **two** training
speakers per fold (``val_fraction=0.2``: the first two in the rotating order), records every
epoch's utterance logits on both, and judges each rule on the speaker it did not look at:

- ``best``: the epoch with the best UA on the selecting speaker (ties: the later epoch, as
  :class:`keras_dkd.callbacks.PhaseCheckpoint` breaks them), scored on the judging speaker;
- ``last``: the last epoch (``select="last"``; uses no validation speaker);
- ``last5`` / ``last10``: the utterance logits of the last 5 / 10 epochs averaged (an ensemble
  of snapshots; uses no validation speaker either).

Each held-out speaker judges the rule that the other chose with, so one training gives two
judgements; the two are averaged into one number per training, and rules are compared paired
over the trainings (fold × seed). Nothing here looks at the test speaker.

Two modes:

- ``run``: train (resumable, one run directory per fold and seed under ``--runs``, TensorFlow
  by default), with the per-epoch logits in ``RUN/curves.json``.
- ``report``: ``docs/results/selection.json`` (one record per training), ``.md`` (a table per
  seed, then over all) and ``.png``. The JSON is the study's record: ``report`` keeps the
  trainings recorded there whose run folders are gone, and ``run`` does not train them again,
  so the study can be spread over sessions and machines.

Example (the commands behind docs/results/selection.md)::

    KERAS_BACKEND=tensorflow python benchmarks/selection.py run --runs runs/selection \\
        --seeds 0 1 --manual-dir ../shared/data/emodb
    python benchmarks/selection.py report --runs runs/selection
"""

from __future__ import annotations

import argparse
import itertools
import json
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
RULES = ("best", "last", "last5", "last10")
#: ``val_fraction`` tried in turn until two training speakers are held out (0.2 does it on
#: every EmoDB fold but one, where the first speaker alone is closest to a fifth).
VAL_FRACTIONS = (0.2, 0.25, 0.3)


def _curves_callback(utterance_set, path: Path):
    """A Keras callback writing every epoch's utterance logits on ``utterance_set`` to
    ``path`` (rewritten atomically each epoch; a resumed run keeps the earlier epochs)."""
    import keras

    from keras_dkd.io import atomic_write_json
    from keras_dkd.metrics import predict_utterances

    class Curves(keras.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            model = getattr(self.model, "student", self.model)
            logits = predict_utterances(model, utterance_set)
            data = json.loads(path.read_text()) if path.is_file() else {}
            epochs = data.get("epochs", {})
            epochs[str(int(epoch) + 1)] = np.round(logits, 5).tolist()
            atomic_write_json(path, {
                "utterance_ids": list(utterance_set.utterance_ids),
                "speakers": list(utterance_set.speakers),
                "labels": [int(x) for x in utterance_set.labels],
                "class_names": list(utterance_set.class_names),
                "epochs": epochs,
            })

    return Curves()


def _run_dir(args, fold, seed) -> Path:
    from keras_dkd import corpora

    return Path(args.runs) / "cnn_mha" / f"fold{fold}-{corpora.groups('emodb')[fold]}" \
        / f"seed{seed}"


def run(args) -> None:
    from _timed import train_timed

    from keras_dkd.data import prepare
    from keras_dkd.options import RunOptions

    recorded = {(r["fold"], r["seed"]) for r in _recorded(Path(args.results))}
    for seed in args.seeds:
        for fold in args.folds:
            run_dir = _run_dir(args, fold, seed)
            if (run_dir / "metrics.json").is_file() and (run_dir / "curves.json").is_file():
                print(f"fold {fold} seed {seed}: done", flush=True)
                continue
            if (fold, seed) in recorded:
                print(f"fold {fold} seed {seed}: recorded in selection.json", flush=True)
                continue
            for fraction in VAL_FRACTIONS:
                options = RunOptions.from_flat(
                    dataset="emodb", protocol="loso", fold=fold, seed=seed, recipe="default",
                    variant="ce", manual_dir=args.manual_dir, data_dir=args.data_dir,
                    cache_dir=args.cache_dir, val_fraction=fraction,
                    **({"epochs": args.epochs} if args.epochs else {}))
                bundle = prepare(options.data, seed)
                held = bundle.describe().get("val_speakers") or []
                if len(held) >= 2:
                    break
            else:
                sys.exit(f"error: fold {fold} seed {seed} holds out {held}: this study needs two "
                         "validation speakers")
            run_dir.mkdir(parents=True, exist_ok=True)
            _, wall = train_timed(options, run_dir, bundle=bundle,
                                  callbacks=[_curves_callback(bundle.val,
                                                              run_dir / "curves.json")])
            print(f"fold {fold} seed {seed}: validation speakers {held}, {wall:.0f} s",
                  flush=True)


def _ua(labels, predictions, class_names) -> float:
    """UA as the study's validation UA computes it (over the classes the speaker has)."""
    from keras_dkd.metrics import classification_metrics

    return float(classification_metrics(labels, predictions, class_names)["ua"])


def judge(curves: dict) -> dict:
    """Every rule's UA on each held-out speaker when the other one selects (``best``), and
    the mean over the judging speakers: ``{"judgements": [...], "mean": {rule: UA}}``."""
    epochs = sorted(curves["epochs"], key=int)
    logits = np.asarray([curves["epochs"][e] for e in epochs], float)  # (E, U, C)
    labels = np.asarray(curves["labels"])
    speakers = np.asarray(curves["speakers"])
    names = curves["class_names"]
    per_speaker = {}
    for s in sorted(set(speakers)):
        mask = speakers == s
        per_speaker[s] = [_ua(labels[mask], np.argmax(logits[k][mask], axis=1), names)
                          for k in range(len(epochs))]
    judgements = []
    for selector, judge_speaker in itertools.permutations(sorted(per_speaker), 2):
        mask = speakers == judge_speaker
        curve_s = np.asarray(per_speaker[selector])
        best = int(np.flatnonzero(curve_s == curve_s.max())[-1])  # ties: the later epoch
        scores = {"best": per_speaker[judge_speaker][best],
                  "last": per_speaker[judge_speaker][-1]}
        for k in (5, 10):
            mean_logits = logits[-k:, mask].mean(axis=0)
            scores[f"last{k}"] = _ua(labels[mask], np.argmax(mean_logits, axis=1), names)
        judgements.append({"selector": selector, "judge": judge_speaker,
                           "selected_epoch": int(epochs[best]), **scores})
    return {"judgements": judgements,
            "mean": {r: float(np.mean([j[r] for j in judgements])) for r in RULES},
            "epochs": len(epochs)}


def _recorded(results: Path) -> list:
    """The records already in ``selection.json``: the study's record, kept when their run
    folders are gone (a later sitting adds seeds and folds to them)."""
    path = results / "selection.json"
    return json.loads(path.read_text())["records"] if path.is_file() else []


def report(args) -> None:
    from keras_dkd.io import atomic_path, atomic_write_json, atomic_write_text

    records = []
    for curves_path in sorted(Path(args.runs).glob("cnn_mha/*/seed*/curves.json")):
        run = curves_path.parent
        if not (run / "metrics.json").is_file():
            continue
        config = json.loads((run / "config.json").read_text())
        curves = json.loads(curves_path.read_text())
        result = judge(curves)
        wall = run / "wall.json"
        records.append({
            "setting": f"default:val_fraction={config['options']['val_fraction']}",
            "fold": config["options"]["fold"], "group": run.parent.name.split("-", 1)[1],
            "seed": config["options"]["seed"],
            "validation_speakers": sorted(set(curves["speakers"])),
            **{f"judge_ua_{r}": result["mean"][r] for r in RULES},
            "judgements": result["judgements"], "epochs_run": result["epochs"],
            "wall_seconds": json.loads(wall.read_text())["seconds"] if wall.is_file() else None,
            "options": config["options"], "backend": config["backend"],
            "versions": config["versions"],
        })
    found = {(r["fold"], r["seed"]) for r in records}
    kept = [r for r in _recorded(Path(args.results)) if (r["fold"], r["seed"]) not in found]
    records = sorted(kept + records, key=lambda r: (r["seed"], r["fold"]))
    if not records:
        sys.exit(f"error: no finished runs with curves under {args.runs}; run "
                 "`benchmarks/selection.py run` first")
    study = {"study": "selection", "command": "python " + " ".join(sys.argv),
             "records": records}
    text = _markdown(study)
    print(text)
    out = Path(args.results)
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_json(out / "selection.json", study)
    atomic_write_text(out / "selection.md", text)
    with atomic_path(out / "selection.png") as tmp:
        _plot(study, tmp)


def _markdown(study) -> str:
    from scipy import stats

    records = study["records"]
    seeds = sorted({r["seed"] for r in records})
    folds = sorted({r["fold"] for r in records})
    lines = [
        "# Which epoch to keep, judged on a speaker that did not choose it "
        "(EmoDB four_class, cnn_mha, `default`)",
        "",
        f"- Made by `{study['command']}` over the runs of `benchmarks/selection.py run`: "
        f"{len(records)} trainings (folds {', '.join(map(str, folds))}; seeds "
        f"{', '.join(map(str, seeds))}), `default` with `val_fraction` 0.2 (0.25 where 0.2 "
        "holds out one speaker), so two training speakers are held out; each judges the epoch "
        "the other selects. No test metric is used.",
        "- Rules: `best` = the selecting speaker's best epoch (today's `select=\"best\"`); "
        "`last` = the last epoch; `last5`, `last10` = the utterance logits of the last 5 / 10 "
        "epochs averaged. UA on the judging speaker, %; one number per training (the mean of "
        "its two judgements).",
    ]
    def count(n):
        return f"{n} training{'s' * (n != 1)}"

    groups = [(f"Seed {seed} ({count(sum(r['seed'] == seed for r in records))})",
               [r for r in records if r["seed"] == seed]) for seed in seeds]
    if len(seeds) > 1:
        groups.append((f"All {len(records)} trainings", records))
    for title, group in groups:
        lines += ["", f"## {title}", ""] + _rules_table(group, stats)
    selected = [j["selected_epoch"] for r in records for j in r["judgements"]]
    lines += [
        "",
        f"Epochs the selecting speaker chose (of {records[0]['epochs_run']}): median "
        f"{np.median(selected):.0f}, {sum(e <= 20 for e in selected)} of {len(selected)} at "
        "epoch 20 or before.",
        "",
        "Per training (judging-speaker UA, %, mean of the two judgements):",
        "",
        "| fold | test speaker (not used) | seed | held-out speakers | "
        + " | ".join(f"`{r}`" for r in RULES) + " |",
        "| --- | --- | --- | --- | " + " | ".join("---" for _ in RULES) + " |",
    ]
    for r in sorted(records, key=lambda x: (x["seed"], x["fold"])):
        lines.append(f"| {r['fold']} | {r['group']} | {r['seed']} | "
                     f"{', '.join(r['validation_speakers'])} | "
                     + " | ".join(f"{r[f'judge_ua_{k}'] * 100:.1f}" for k in RULES) + " |")
    return "\n".join(lines) + "\n"


def _rules_table(records, stats) -> list[str]:
    lines = ["| rule | judging-speaker UA (mean ± sd over trainings) | − `best`, paired (points) | "
             "t-test p | Wilcoxon p | trainings where higher / equal / lower |",
             "| --- | --- | --- | --- | --- | --- |"]
    base = np.array([r["judge_ua_best"] for r in records]) * 100
    for rule in RULES:
        values = np.array([r[f"judge_ua_{rule}"] for r in records]) * 100
        sd = values.std(ddof=1) if len(values) > 1 else 0.0
        cell = f"{values.mean():.1f} ± {sd:.1f}"
        if rule == "best":
            lines.append(f"| `{rule}` | {cell} | — | — | — | — |")
            continue
        d = values - base
        t = stats.ttest_1samp(d, 0).pvalue if len(d) > 2 and d.std() > 0 else float("nan")
        w = stats.wilcoxon(d).pvalue if len(d) > 2 and np.any(d != 0) else float("nan")
        d_sd = d.std(ddof=1) if len(d) > 1 else 0.0
        lines.append(
            f"| `{rule}` | {cell} | {d.mean():+.1f} ± {d_sd:.1f} | {_p(t)} | {_p(w)} | "
            f"{int((d > 0).sum())} / {int((d == 0).sum())} / {int((d < 0).sum())} |")
    return lines


def _p(value) -> str:
    if value != value:  # NaN
        return "—"
    return f"{value:.3f}" if value >= 0.001 else "< 0.001"


def _plot(study, path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    records = study["records"]
    base = np.array([r["judge_ua_best"] for r in records]) * 100
    fig, ax = plt.subplots(figsize=(7, 4))
    for i, rule in enumerate(RULES[1:]):
        d = np.array([r[f"judge_ua_{rule}"] for r in records]) * 100 - base
        x = np.full(len(d), i) + np.linspace(-0.15, 0.15, len(d))
        ax.scatter(x, d, alpha=0.6)
        ax.errorbar(i + 0.3, d.mean(), yerr=d.std(ddof=1) / np.sqrt(len(d)), fmt="D", color="k")
    ax.axhline(0, color="grey", lw=1)
    ax.set_xticks(range(len(RULES) - 1), [f"{r} − best" for r in RULES[1:]])
    ax.set_ylabel("judging-speaker UA difference (points)")
    ax.set_title("Which epoch to keep: paired against the selected epoch\n"
                 "(dots: trainings; diamond: mean ± standard error)")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="mode", required=True)
    r = sub.add_parser("run", help="train, recording every epoch's validation logits")
    r.add_argument("--runs", required=True)
    r.add_argument("--folds", type=int, nargs="+", default=list(range(10)))
    r.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    r.add_argument("--manual-dir", default=None)
    r.add_argument("--data-dir", default=None)
    r.add_argument("--cache-dir", default=None)
    r.add_argument("--results", default=str(ROOT / "docs" / "results"),
                   help="trainings recorded in selection.json there are not run again")
    r.add_argument("--epochs", type=int, default=None,
                   help="override the recipe's 40 epochs (a quick check; the study uses 40)")
    m = sub.add_parser("report", help="judge the rules; write docs/results/selection.*")
    m.add_argument("--runs", required=True)
    m.add_argument("--results", default=str(ROOT / "docs" / "results"))
    args = parser.parse_args()
    if args.mode == "run":
        from keras_dkd.allocator import tune_allocator

        tune_allocator()  # before the first computation, as the keras-dkd command does
    {"run": run, "report": report}[args.mode](args)


if __name__ == "__main__":
    main()
