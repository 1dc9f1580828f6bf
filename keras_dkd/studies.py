"""Studies: many runs of one base :class:`keras_dkd.options.RunOptions`, summarised.

- :func:`ablate`: the paper's Table 1 (or a β sweep) over several seeds;
- :func:`cv`: leave-one-group-out cross-validation over the folds of a corpus.

Every training is a resumable run directory (:func:`keras_dkd.training.train`), so an
interrupted study continues where it stopped when rerun. Variants of the base options are
``base.replace(variant=..., fold=..., seed=...)``. The trainings run one after another here, or
as Ray tasks with ``ray=RayOptions(...)`` (:mod:`keras_dkd.study_jobs`); the records are the
same.

Example:
    >>> from keras_dkd.options import RunOptions
    >>> base = RunOptions.from_flat(dataset="emodb", protocol="loso", fold=0, epochs=20)
    >>> table = ablate(base, "runs/ablation", seeds=[0, 1, 2])             # doctest: +SKIP
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import keras

from keras_dkd import corpora
from keras_dkd.errors import UserError
from keras_dkd.io import atomic_path, atomic_write_json, atomic_write_text
from keras_dkd.options import RunOptions
from keras_dkd.reports import (
    PAPER_TABLE1,
    format_ablation,
    format_cv,
    plot_ablation,
    protocol_description,
    summarize,
)
from keras_dkd.runs import to_builtin
from keras_dkd.study_jobs import Job, RayOptions, run_jobs
from keras_dkd.training import Progress

__all__ = ["ABLATION_ROWS", "ablate", "cv"]

#: The rows of the paper's Table 1, with the run and the model of that run each comes from.
ABLATION_ROWS = (
    ("CNN", "cnn", "student"),
    ("CNN+MHA", "dkd", "teacher"),
    ("+KD", "kd", "student"),
    ("TCKD", "tckd", "student"),
    ("NCKD", "nckd", "student"),
    ("DKD", "dkd", "student"),
)


def _unique_seeds(seeds) -> list[int]:
    seeds = [int(s) for s in seeds]
    if not seeds:
        raise UserError("give at least one seed")
    if len(set(seeds)) != len(seeds):
        raise UserError(f"seeds repeat: {seeds}")
    return seeds


def _plan(base: RunOptions, betas):
    """``(rows, runs)``: the table rows ``(name, run, model)`` and the runs ``(name, variant,
    beta)`` that make them."""
    beta = base.recipe.beta
    if betas is None:
        runs = [("dkd", "dkd", beta), ("kd", "kd", beta), ("tckd", "tckd", beta),
                ("nckd", "nckd", beta), ("cnn", "cnn", beta)]
        return list(ABLATION_ROWS), runs
    betas = [float(b) for b in betas]
    if not betas:
        raise UserError("give at least one beta to sweep")
    if any(b < 0 for b in betas):
        raise UserError(f"beta must be >= 0, got {betas}")
    rows = [("CNN+MHA (teacher)", _beta_dir(betas[0]), "teacher")] + [
        (f"DKD β={b:g}", _beta_dir(b), "student") for b in betas
    ]
    return rows, [(_beta_dir(b), "dkd", b) for b in betas]


def ablate(
    base: RunOptions,
    out,
    *,
    seeds: Sequence[int] = (0, 1, 2),
    betas: Sequence[float] | None = None,
    progress: Progress | None = None,
    command: str | None = None,
    ray: RayOptions | None = None,
) -> dict:
    """The paper's Table 1 (or its β sweep), mean ± std of WA and UA over ``seeds``.

    Each seed trains one CE teacher (the CNN+MHA row) in ``OUT/seed<s>/dkd`` and reuses it for
    every distillation row (``kd``, ``tckd``, ``nckd``); ``cnn`` trains the attention-free CNN.
    With ``betas`` the rows are DKD students for each β (``OUT/seed<s>/beta<β>``) instead,
    the first of which trains the teacher. Serially the data is prepared once per seed; on Ray
    a seed's distillation runs start when its teacher run has finished.

    Writes ``OUT/table.md`` (with the protocol and the command), ``OUT/table.json`` and
    ``OUT/ablation.png``.

    Args:
        base: the options every run starts from (its variant, seed and teacher are replaced).
        out: the study's folder.
        seeds: the seeds to average over.
        betas: sweep β instead of the Table 1 rows.
        progress: progress reporting (:class:`keras_dkd.training.Progress`).
        command: the command line, recorded in the table.
        ray: run the trainings as Ray tasks (:class:`keras_dkd.study_jobs.RayOptions`)
            instead of one after another in this process.

    Returns:
        The ``table.json`` dict: ``{"dataset", "config", "protocol", "seeds", "epochs",
        "mode" ("table" or "beta"), "rows": [{"name", "wa", "ua", "macro_f1", "runs"}]}`` where
        ``wa`` etc. are :func:`keras_dkd.reports.summarize` dicts.
    """
    progress = progress or Progress()
    seeds = _unique_seeds(seeds)
    plan, runs = _plan(base, betas)
    out = Path(out)
    jobs = []
    for seed in seeds:
        teacher_job = None
        for run_name, variant, run_beta in runs:
            run_dir = out / f"seed{seed}" / run_name
            distills = variant in ("dkd", "kd", "tckd", "nckd")
            reuse = distills and teacher_job is not None
            options = base.replace(variant=variant, beta=run_beta, seed=seed,
                                   teacher=str(teacher_job.run_dir / "teacher.keras") if reuse
                                   else None)
            jobs.append(Job(key=(seed, run_name), label=f"seed {seed}, {run_name}",
                            options=options, run_dir=run_dir,
                            event={"seed": seed, "run": run_name},
                            after=teacher_job.key if reuse else None, data_key=seed))
            if distills and teacher_job is None:
                teacher_job = jobs[-1]
    done = run_jobs(jobs, ray=ray, progress=progress, command=command)
    results = {key: result["metrics"] for key, result in done.items()}
    # the data each seed's runs were trained on, as train() recorded it
    descriptions = {seed: done[(seed, runs[0][0])]["config"]["data"] for seed in seeds}
    description = descriptions[seeds[-1]]
    val_speakers = {seed: d.get("val_speakers") or [] for seed, d in descriptions.items()}
    table = _ablation_table(base, out, seeds, plan, results, description, val_speakers)
    table.update({"mode": "table" if betas is None else "beta", "command": command,
                  "beta": base.recipe.beta if betas is None else [float(b) for b in betas]})
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_json(out / "table.json", to_builtin(table))
    atomic_write_text(out / "table.md", format_ablation(table))
    with atomic_path(out / "ablation.png") as tmp:
        plot_ablation(table, tmp)
    progress.emit(event="done", out=str(out))
    return table


def _ablation_table(base, out, seeds, plan, results, description, val_speakers) -> dict:
    data, recipe = base.data, base.recipe
    rows = []
    for name, run_name, model in plan:
        parts = [results[(s, run_name)][model] for s in seeds]
        rows.append({
            "name": name,
            "wa": summarize([p["wa"] for p in parts]),
            "ua": summarize([p["ua"] for p in parts]),
            "macro_f1": summarize([p["macro_f1"] for p in parts]),
            "runs": [str(out / f"seed{s}" / run_name / f"{model}.keras") for s in seeds],
            "paper": PAPER_TABLE1.get(name),
        })
    protocol = protocol_description({**description, "val_speakers": []}, data.protocol,
                                    data.fold)
    if any(val_speakers.values()):
        protocol += "; validation speakers per seed: " + ", ".join(
            f"seed {s} {'+'.join(v)}" for s, v in val_speakers.items()
        )
    return {
        "dataset": data.dataset, "config": data.config, "protocol": protocol,
        "protocol_name": data.protocol, "fold": data.fold, "data": description, "seeds": seeds,
        "epochs": recipe.epochs, "batch_size": recipe.batch_size,
        "learning_rate": recipe.learning_rate, "alpha": recipe.alpha,
        "temperature": recipe.temperature, "select": recipe.select,
        "options": base.to_dict(), "backend": keras.backend.backend(), "rows": rows,
    }


def _beta_dir(beta: float) -> str:
    return f"beta{beta:g}"


def cv(
    base: RunOptions,
    out,
    *,
    folds: Sequence | None = None,
    progress: Progress | None = None,
    command: str | None = None,
    ray: RayOptions | None = None,
) -> dict:
    """Leave-one-group-out cross-validation (IEMOCAP: 5 sessions; EmoDB: 10 speakers).

    Each fold is a resumable run directory ``OUT/fold<k>-<group>`` trained with
    ``base.replace(protocol="loso", fold=k)``. Writes ``OUT/cv.json`` and ``OUT/cv.md`` (per fold
    and mean ± std).

    Args:
        base: the options of every fold's run (its protocol and fold are replaced).
        out: the parent directory of the fold runs.
        folds: the folds to run, as indices or group names (default: all).
        progress: progress reporting.
        command: the command line, recorded in ``cv.md``.
        ray: run the folds as Ray tasks (:class:`keras_dkd.study_jobs.RayOptions`) instead of
            one after another in this process.

    Returns:
        The ``cv.json`` dict: ``{"dataset", "config", "variant", "groups", "folds": [{"fold",
        "group", "run_dir", "teacher": {...}, "student": {...}}], "summary": {model: {metric:
        summarize dict}}}``.
    """
    progress = progress or Progress()
    dataset = base.data.dataset
    groups = list(corpora.groups(dataset, base.data.config, data_dir=base.data.data_dir,
                                 manifest=base.data.manifest))
    folds = list(range(len(groups))) if folds is None else [
        groups.index(corpora.fold_group(f, groups)) for f in folds]
    if len(set(folds)) != len(folds):
        raise UserError(f"folds repeat: {folds}")
    out = Path(out)
    jobs = [Job(key=fold, label=f"fold {fold} ({groups[fold]})",
                options=base.replace(protocol="loso", fold=fold),
                run_dir=out / f"fold{fold}-{groups[fold]}",
                event={"fold": fold, "group": groups[fold]}) for fold in folds]
    done = run_jobs(jobs, ray=ray, progress=progress, command=command)
    fold_results = []
    for job in jobs:
        entry = {"fold": job.key, "group": groups[job.key], "run_dir": str(job.run_dir)}
        for name, metrics in done[job.key]["metrics"].items():
            entry[name] = {k: metrics[k] for k in ("wa", "ua", "macro_f1", "n_utterances")}
        fold_results.append(entry)
    models = [m for m in ("teacher", "student") if all(m in f for f in fold_results)]
    summary = {
        model: {key: summarize([f[model][key] for f in fold_results])
                for key in ("wa", "ua", "macro_f1")}
        for model in models
    }
    report = {
        "dataset": dataset, "config": base.data.config, "variant": base.recipe.variant,
        "seed": base.seed, "groups": groups, "options": base.to_dict(),
        "backend": keras.backend.backend(), "command": command, "folds": fold_results,
        "summary": summary,
    }
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_json(out / "cv.json", to_builtin(report))
    atomic_write_text(out / "cv.md", format_cv(report))
    progress.emit(event="done", out=str(out))
    return report
