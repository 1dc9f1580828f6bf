"""Speaker-normalised models as they are served: one utterance at a time (issue 15).

A model trained with ``speaker_norm`` (:mod:`keras_dkd.speaker_norm`) standardises each speaker's
features with that speaker's own statistics. The recipes study scores it that way: every
utterance of the held-out speaker is standardised with statistics over all of that speaker's
utterances (a transductive step). A served model, or ``keras-dkd predict`` on one file, sees one
utterance and standardises it on itself. This script measures what that costs: for every
trained run under ``--runs`` whose model is speaker-normalised, the test speaker's utterances go
through :func:`keras_dkd.predict.predict_files`, the library's own prediction path, twice:

- ``per speaker``: one call with all of the test speaker's files (they are one speaker's);
- ``per utterance``: one call per file, as a served model or a one-file ``predict`` sees it.

``--split val`` does the same on each run's validation speaker (``splits.json``), which is what a
recipe may be chosen on; ``--split test`` on its held-out speaker. Writes
``speaker_norm_serving_<split>.json`` (one record per model: fold, seed, both UAs, and the UA
training recorded), ``.md`` and ``.png`` under ``--results``. No training.

Example::

    KERAS_BACKEND=tensorflow python benchmarks/speaker_norm_serving.py \\
        --runs RUNS --manual-dir ../shared/data/emodb --split val
"""

from __future__ import annotations

import argparse
import functools
import json
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]


@functools.cache
def _corpus(dataset: str, config: str, manual_dir: str, data_dir: str) -> dict:
    """The corpus' utterances by id (loaded once for all the runs on it)."""
    from keras_dkd.data import load_utterances

    return {r.utterance_id: r for r in load_utterances(
        dataset, config, manual_dir=manual_dir, data_dir=data_dir)}


def _score(run: Path, manual_dir: Path, split: str = "test") -> dict | None:
    from keras_dkd import corpora
    from keras_dkd.io import load_model
    from keras_dkd.metrics import classification_metrics
    from keras_dkd.models import get_class_names, get_speaker_norm
    from keras_dkd.predict import predict_files

    config = json.loads((run / "config.json").read_text())
    options = config["options"]
    model = load_model(run / "student.keras")
    if not get_speaker_norm(model):
        return None
    group = corpora.groups(options["dataset"])[options["fold"]]
    names = list(get_class_names(model))
    corpus_names = corpora.class_names(options["dataset"], options["config"],
                                       data_dir=options["data_dir"])
    wanted = json.loads((run / "splits.json").read_text())[split]
    found = _corpus(options["dataset"], options["config"], options["manual_dir"],
                    options["data_dir"])
    records = [found[u] for u in wanted]
    paths = [manual_dir / "wav" / f"{r.utterance_id}.wav" for r in records]
    labels = [names.index(corpus_names[r.label]) for r in records]
    start = time.perf_counter()
    together = predict_files(model, paths)
    alone = [predict_files(model, [path])[0] for path in paths]
    wall = time.perf_counter() - start
    failed = [r for r in together + alone if "error" in r]
    if failed:
        sys.exit(f"error: {failed[0]['error']}")

    def ua(results):
        return classification_metrics(labels, [names.index(r["label"]) for r in results],
                                      names)["ua"]

    if split == "test":
        study_ua = json.loads((run / "metrics.json").read_text())["student"]["ua"]
    else:  # the selected epoch's validation UA (student.keras is that epoch's model)
        state = json.loads((run / "checkpoints" / "student" / "state.json").read_text())
        study_ua = state.get("selected_val_ua")
    return {
        "run_dir": str(run), "split": split, "fold": options["fold"], "group": group,
        "speakers": sorted({r.speaker for r in records}), "seed": options["seed"],
        "n_utterances": len(paths),
        "ua_study": study_ua,
        "ua_per_speaker": ua(together), "ua_per_utterance": ua(alone),
        "wall_seconds": wall, "options": options, "backend": config["backend"],
        "versions": config["versions"],
    }


def _markdown(study: dict) -> str:
    records = study["records"]
    lines = [
        "# Speaker-normalised models served one utterance at a time (EmoDB four_class, LOSO)",
        "",
        f"- Made by `{study['command']}` (no training: the models of the recipes study).",
        f"- Split: `{study['split']}` (`test`: the fold's held-out speaker; `val`: its "
        "validation speaker, what a recipe is chosen on).",
        "- UA (%) of each model on that split's speaker, through "
        "`keras_dkd.predict.predict_files`: *per speaker* standardises every utterance of the "
        "split with statistics over all of them (as the recipes study scores it); *per utterance* "
        "standardises each on itself (a served model, or `keras-dkd predict` on one file). "
        "*study* is what training recorded (TFDS features, per speaker): `metrics.json`'s test UA, "
        "or the selected epoch's validation UA.",
        "",
        "| fold | speaker | seed | utterances | study | per speaker | per utterance |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]
    for r in sorted(records, key=lambda r: (r["seed"], r["fold"])):
        lines.append(f"| {r['fold']} | {', '.join(r['speakers'])} | {r['seed']} | "
                     f"{r['n_utterances']} | "
                     f"{r['ua_study'] * 100:.1f} | {r['ua_per_speaker'] * 100:.1f} | "
                     f"{r['ua_per_utterance'] * 100:.1f} |")
    if records:
        def col(key):
            v = np.array([r[key] for r in records]) * 100
            return f"{v.mean():.1f} ± {v.std(ddof=1) if len(v) > 1 else 0:.1f}"
        d = np.array([r["ua_per_utterance"] - r["ua_per_speaker"] for r in records]) * 100
        lines += [f"| mean ± sd | | | {len(records)} models | {col('ua_study')} | "
                  f"{col('ua_per_speaker')} | {col('ua_per_utterance')} |", "",
                  f"Per utterance − per speaker, paired over the {len(records)} models: "
                  f"{d.mean():+.1f} ± {d.std(ddof=1) if len(d) > 1 else 0:.1f} UA points."]
    return "\n".join(lines) + "\n"


def _plot(study: dict, path: Path) -> None:
    """Each model's UA standardised per speaker against per utterance (one line per model)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from keras_dkd.io import atomic_path

    fig, ax = plt.subplots(figsize=(5, 4.5))
    try:
        for r in study["records"]:
            ax.plot([0, 1], [r["ua_per_speaker"] * 100, r["ua_per_utterance"] * 100],
                    marker="o", color="C0" if r["seed"] == 0 else "C1", alpha=0.6)
        ax.set_xticks([0, 1], ["per speaker\n(as the study scores)",
                               "per utterance\n(as served)"])
        ax.set_xlim(-0.3, 1.3)
        ax.set_ylim(0, 100)
        ax.set_ylabel(f"{study['split']} UA (%)")
        ax.grid(axis="y", alpha=0.3)
        ax.set_title(f"speaker-normalised models, {study['split']} speaker\n"
                     "(seed 0 blue, seed 1 orange)", fontsize=10)
        fig.tight_layout()
        with atomic_path(path) as tmp:
            fig.savefig(tmp, format="png", dpi=110)
    finally:
        plt.close(fig)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", required=True,
                        help="a folder holding run directories (searched for student.keras)")
    parser.add_argument("--manual-dir", required=True, help="the EmoDB folder (wav/ inside)")
    parser.add_argument("--results", default=str(ROOT / "docs" / "results"))
    parser.add_argument("--split", choices=["test", "val"], default="test",
                        help="the held-out speaker (test) or the validation speaker (val)")
    parser.add_argument("--name", default=None,
                        help="file name under --results (default speaker_norm_serving_SPLIT)")
    args = parser.parse_args()
    from keras_dkd.io import atomic_write_json, atomic_write_text

    records = []
    for model_path in sorted(Path(args.runs).rglob("student.keras")):
        record = _score(model_path.parent, Path(args.manual_dir), args.split)
        if record is not None:
            records.append(record)
            print(f"fold {record['fold']} seed {record['seed']} ({args.split}): study "
                  f"{record['ua_study'] * 100:.1f}, per speaker "
                  f"{record['ua_per_speaker'] * 100:.1f}, per utterance "
                  f"{record['ua_per_utterance'] * 100:.1f}", flush=True)
    if not records:
        sys.exit(f"error: no speaker-normalised model under {args.runs}; give the folder of "
                 "a study's runs")
    name = args.name or f"speaker_norm_serving_{args.split}"
    command = ("python benchmarks/speaker_norm_serving.py --runs RUNS "
               f"--manual-dir ../shared/data/emodb --split {args.split}")
    study = {"study": name, "split": args.split, "command": command, "records": records}
    out = Path(args.results)
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_json(out / f"{name}.json", study)
    atomic_write_text(out / f"{name}.md", _markdown(study))
    _plot(study, out / f"{name}.png")
    print(_markdown(study))


if __name__ == "__main__":
    main()
