"""Cross-corpus study: train on each corpus, test on every corpus, as a table.

For each corpus of the study one run is trained (:func:`keras_dkd.training.train`, a resumable
run directory ``OUT/train-<dataset>-<config>``) with the base options and that corpus' data
options: protocol ``random``, so its own held-out 20 % gives the within-corpus cell of the
table. Its student is then scored on the ``all`` split of every other corpus
(:func:`keras_dkd.evaluation.evaluate`), classes matched by name
(:mod:`keras_dkd.class_mapping`). A pair whose test corpus lacks a class of the training corpus
gets no number, but the reason. Writes ``OUT/cross.json`` and ``OUT/cross.md``, atomically.

Example:
    >>> from keras_dkd.options import DataOptions, RunOptions
    >>> base = RunOptions.from_flat(epochs=30)
    >>> corpora = [DataOptions("iemocap", manual_dir="IEMOCAP_full_release"),
    ...            DataOptions("ravdess", manual_dir="ravdess"), DataOptions("emodb")]
    >>> table = cross(base, corpora, "runs/cross")                        # doctest: +SKIP
    >>> table["cells"][0]["ua"]                                           # doctest: +SKIP
    0.41
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from pathlib import Path

import keras

from keras_dkd.class_mapping import class_mapping
from keras_dkd.errors import UserError
from keras_dkd.io import atomic_write_json, atomic_write_text
from keras_dkd.options import DataOptions, RunOptions
from keras_dkd.runs import RunDir, to_builtin
from keras_dkd.training import Progress, train

__all__ = ["corpus_label", "cross", "format_cross"]

_METRICS = ("wa", "ua", "macro_f1", "n_utterances")


def corpus_label(data: DataOptions) -> str:
    """How the table names a corpus: ``dataset/config`` (``emodb/four_class``)."""
    return f"{data.dataset}/{data.config}"


def _train_options(base: RunOptions, data: DataOptions) -> RunOptions:
    """``base`` trained on ``data``'s corpus, random protocol, base's subset and locations."""
    shared = {k: getattr(base.data, k) for k in ("data_dir", "cache_dir", "max_utterances")
              if getattr(data, k) is None}
    data = dataclasses.replace(data, protocol="random", fold=None, **shared)
    return dataclasses.replace(base, data=data)


def cross(
    base: RunOptions,
    corpora: Sequence[DataOptions],
    out,
    *,
    progress: Progress | None = None,
    command: str | None = None,
    safe_mode: bool = True,
) -> dict:
    """Train on each corpus and test on each corpus.

    Args:
        base: the recipe, seed and shared data options (``data_dir``, ``cache_dir``,
            ``max_utterances``, features) of every run; its corpus is not used.
        corpora: the corpora, as data options (dataset, config, manual_dir, manifest); a
            location or subset left None takes ``base``'s.
        out: the study's folder.
        progress: progress reporting.
        command: the command line, recorded in ``cross.md``.
        safe_mode: load models with Keras safe mode.

    Returns:
        The ``cross.json`` dict: ``{"corpora": [label...], "runs": {label: run_dir}, "cells":
        [{"train", "test", "split", "wa", "ua", "macro_f1", "n_utterances",
        "unscored_utterances", "shared_utterances", "class_mapping"} or {"train", "test",
        "error"}], ...}``. The within-corpus cells are the run's own test split
        (``split: "test"``); the others the test corpus' ``all`` split.

    Raises:
        UserError: fewer than two corpora, or one corpus given twice.
    """
    from keras_dkd import evaluation

    progress = progress or Progress()
    runs = [_train_options(base, data) for data in corpora]
    labels = [corpus_label(r.data) for r in runs]
    if len(runs) < 2:
        raise UserError("a cross-corpus study needs at least two corpora")
    if len(set(labels)) != len(labels):
        raise UserError(f"a corpus is given twice: {', '.join(labels)}; give each once")
    out = Path(out)
    cells, run_dirs = [], {}
    for train_label, options in zip(labels, runs, strict=True):
        run_dir = out / f"train-{train_label.replace('/', '-')}"
        run_dirs[train_label] = str(run_dir)
        progress.emit(event="run", run=f"train on {train_label}", seed=options.seed,
                      run_dir=str(run_dir))
        result = train(options, run_dir, progress=progress, command=command,
                       safe_mode=safe_mode)
        model = run_dir / "student.keras"
        if "student" not in result["metrics"]:
            raise UserError(f"{run_dir} holds no student model; rerun the study")
        for test_label, test in zip(labels, runs, strict=True):
            cell = {"train": train_label, "test": test_label}
            if test_label == train_label:
                metrics = result["metrics"]["student"]
                cell.update(split="test", **{k: metrics[k] for k in _METRICS})
                cells.append(cell)
                continue
            try:
                class_mapping(_classes(options.data), _classes(test.data), test_label)
            except UserError as error:
                cells.append({**cell, "error": str(error)})
                continue
            metrics = evaluation.evaluate(model, test.data, split="all", seed=options.seed,
                                          allow_overlap=True, safe_mode=safe_mode)
            trained = evaluation.training_utterances(RunDir(run_dir), options)
            cell.update(split="all", **{k: metrics[k] for k in _METRICS},
                        unscored_utterances=metrics.get("unscored_utterances", 0),
                        class_mapping=metrics.get("class_mapping"),
                        shared_utterances=_shared(test, options.seed, trained))
            cells.append(cell)
            progress.emit(event="evaluated", train=train_label, test=test_label,
                          ua=metrics["ua"])
    report = {
        "corpora": labels, "runs": run_dirs, "variant": base.recipe.variant, "seed": base.seed,
        "recipe": base.recipe.name, "epochs": base.recipe.epochs,
        "max_utterances": base.data.max_utterances, "backend": keras.backend.backend(),
        "command": command, "options": {label: r.to_dict() for label, r in
                                        zip(labels, runs, strict=True)},
        "cells": cells,
    }
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_json(out / "cross.json", to_builtin(report))
    atomic_write_text(out / "cross.md", format_cross(report))
    progress.emit(event="done", out=str(out))
    return report


def _classes(data: DataOptions) -> list[str]:
    from keras_dkd import corpora

    return corpora.class_names(data.dataset, data.config, data_dir=data.data_dir,
                               manifest=data.manifest)


def _shared(test: RunOptions, seed: int, trained: set[str]) -> int:
    """How many test utterances share an id with the training run's train + val utterances
    (the same recordings listed by two corpora, e.g. a CSV copy of EmoDB)."""
    from keras_dkd.data import utterance_set

    utterances, _ = utterance_set(test.data, None, seed=seed)
    return sum(1 for i in utterances.utterance_ids if i in trained)


def _cell_text(cell: dict | None, key: str) -> str:
    if cell is None:
        return ""
    if "error" in cell:
        return "n/a ¹"
    text = f"{100 * float(cell[key]):.1f}"
    if cell["split"] == "test":
        text = f"*{text}*"
    if cell.get("shared_utterances"):
        text += " ²"
    return text


def format_cross(report: dict) -> str:
    """``cross.md``: UA and WA tables (rows: trained on; columns: tested on) and the notes."""
    labels = report["corpora"]
    table = {(c["train"], c["test"]): c for c in report["cells"]}
    lines = [
        "# Cross-corpus evaluation",
        "",
        f"- Variant {report['variant']} (student), recipe {report['recipe']}, "
        f"{report['epochs']} epochs, seed {report['seed']}, backend {report['backend']}"
        + (f", at most {report['max_utterances']} utterances per corpus"
           if report.get("max_utterances") else "") + ".",
        "- Utterance level, in %. Rows: the corpus trained on (random 80/20 split, validation "
        "carved from the 80 %); columns: the corpus tested on, all of it (its classes matched "
        "by name; utterances of classes the model lacks are not scored). *Italic*: the "
        "training corpus' own held-out 20 %.",
    ]
    if report.get("command"):
        lines.append(f"- Command: `{report['command']}`")
    for key, title in (("ua", "UA (unweighted accuracy)"), ("wa", "WA (weighted accuracy)")):
        lines += ["", f"## {title}", "", "| trained on \\ tested on | " + " | ".join(labels)
                  + " |", "| --- |" + " --- |" * len(labels)]
        for train_label in labels:
            cells = [_cell_text(table.get((train_label, t)), key) for t in labels]
            lines.append(f"| {train_label} | " + " | ".join(cells) + " |")
    notes = [c for c in report["cells"] if "error" in c]
    shared = [c for c in report["cells"] if c.get("shared_utterances")]
    unscored = [c for c in report["cells"] if c.get("unscored_utterances")]
    if notes or shared or unscored:
        lines += ["", "## Notes", ""]
    for c in notes:
        lines.append(f"- ¹ {c['train']} → {c['test']}: {c['error']}")
    for c in shared:
        lines.append(f"- ² {c['train']} → {c['test']}: {c['shared_utterances']} of the "
                     f"{c['n_utterances']} test utterances have the ids of training or "
                     "validation utterances (the same recordings?): not a held-out score.")
    for c in unscored:
        lines.append(f"- {c['train']} → {c['test']}: {c['unscored_utterances']} utterances of "
                     "classes the model does not predict were not scored.")
    return "\n".join(lines) + "\n"
