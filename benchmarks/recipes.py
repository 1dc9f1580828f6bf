"""The recipes study: which training recipe makes the head-fusion network learn (issue 15).

EmoDB four_class, leave-one-speaker-out: every setting (recipe × variant) is trained on each
fold and seed with the library (``keras_dkd.training.train``, one resumable run directory each,
so an interrupted study continues where it stopped), then tested once on the held-out speaker.

Three modes:

- ``explore``: candidate recipes on some folds, reporting **validation** UA only (the selected
  epoch's UA on the validation speakers, carved from the training speakers): this is what the
  default recipe was chosen on. Test numbers are not printed. A distilling variant
  (``--variants dkd``, ``kd``, ...) distils a student from the ``default`` ``cnn_mha`` CE model
  that ``final`` trained on the same fold and seed (``--teachers``, ``final``'s ``--runs``).
  The student starts from that model's initial weights and sees the same batches (both are
  seeded by the run's seed and the phase), so ``student - teacher`` validation UA, printed
  paired, is what distillation adds to the same training.
- ``summarize``: the validation-only records of every finished run under ``--runs``, grouped by
  folder, with how each differs from today's ``default``: ``docs/results/recipes_explore.json``
  and ``.md`` (made with ``summarize --runs <the explore runs>``; the folders were named after
  the runs, e.g. ``specaugment``). ``--baseline FOLDER`` adds each folder's paired differences
  against that one on the same (variant, fold, seed), hence the same validation speakers.
  Records already in ``recipes_explore.json`` stay unless a run under ``--runs`` replaces
  them, so runs can be summarised after earlier run folders were deleted. Distilled runs
  (``explore --variants dkd``) are also paired with their teachers (student − teacher), and
  ``<name>.png`` plots those differences (``docs/results/students.*``: ``summarize --runs
  <the student runs> --name students``).
- ``final``: the settings of the report (``default`` for ``cnn`` and ``cnn_mha``, ``paper`` and
  ``headfusion`` for ``cnn_mha``) on all folds, writing ``docs/results/recipes.json`` (one record
  per trained model), ``recipes.md`` (per fold and mean ± sd) and ``recipes.png`` after every
  training (``--name`` renames the three: ``recipes_round1`` is the first round, made with
  ``--val-order seeded`` before validation speakers rotated; ``recipes_round2`` the second,
  made as ``recipes.json`` before ``default`` kept its last epoch). The records are the study's
  checkpoint: a rerun trains only what they lack (the
  default variants seed by seed first, then ``paper`` and ``headfusion`` fold by fold), so the
  study can be spread over sessions and machines; ``--max-trainings`` bounds one sitting.
  ``--candidates SETTING ...`` adds settings chosen on validation speakers in ``explore`` (e.g.
  ``default:ema=0.98``): ``cnn_mha`` on every fold and seed, after the report's own trainings,
  compared paired with ``default``. ``--candidate-seeds`` sets the candidates' seeds;
  ``SETTING@0,1`` gives one candidate its own (e.g. a second seed for one of them).

Example (the command behind docs/results/recipes.md)::

    KERAS_BACKEND=tensorflow python benchmarks/recipes.py final --runs runs/recipes \\
        --seeds 0 1 --manual-dir ../shared/data/emodb

Candidates for ``explore`` are named ``recipe[:key=value,...]``, e.g.
``default:dropout=0,time_masks=0``.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
from _timed import train_timed

ROOT = Path(__file__).resolve().parents[1]
FINAL = (("default", "cnn_mha"), ("default", "cnn"), ("paper", "cnn_mha"),
         ("headfusion", "cnn_mha"))


def _parse_setting(text: str) -> tuple[str, dict]:
    name, _, rest = text.partition(":")
    changes = {}
    for item in filter(None, rest.split(",")):
        key, _, value = item.partition("=")
        try:
            changes[key] = json.loads(value)
        except ValueError:
            changes[key] = value
    return name, changes


def _train_one(setting, variant, fold, seed, args, extra=None):
    """Train one model (or find it trained); return its record."""
    from keras_dkd import corpora
    from keras_dkd.options import RunOptions

    name, changes = _parse_setting(setting)
    group = corpora.groups("emodb")[fold]
    if variant not in ("cnn_mha", "cnn"):  # a distilled student: from the study's CE model
        extra = {**(extra or {}), "teacher": str(_teacher_path(args, fold, group, seed))}
    options = RunOptions.from_flat(
        dataset="emodb", protocol="loso", fold=fold, seed=seed, recipe=name,
        variant={"cnn_mha": "ce", "cnn": "cnn"}.get(variant, variant),
        manual_dir=args.manual_dir,
        data_dir=args.data_dir, cache_dir=args.cache_dir, val_order=args.val_order,
        **{**changes, **(extra or {})},
    )
    run_dir = Path(args.runs) / setting.replace(":", "_").replace(",", "_").replace("=", "-") \
        / variant / f"fold{fold}-{group}" / f"seed{seed}"
    result, wall = train_timed(options, run_dir)
    student = result["metrics"]["student"]
    phase = result["phases"].get("student", {})
    config = json.loads((run_dir / "config.json").read_text())
    return {
        "setting": setting, "recipe": name, "variant": variant, "fold": fold, "group": group,
        "seed": seed, "wa": student["wa"], "ua": student["ua"], "macro_f1": student["macro_f1"],
        "per_class_recall": student["per_class_recall"],
        "one_class": int(np.count_nonzero(np.asarray(student["confusion"]).sum(axis=0))) == 1,
        "val_ua": phase.get("val_ua"), "selected_epoch": phase.get("selected_epoch"),
        "epochs_run": phase.get("epochs_run", phase.get("epochs")),
        "wall_seconds": wall,
        "n_test_utterances": student["n_utterances"], "run_dir": str(run_dir),
        "options": config["options"], "backend": config["backend"],
        "versions": config["versions"],
    }


def _teacher_path(args, fold, group, seed) -> Path:
    """The ``default`` ``cnn_mha`` CE model of (fold, seed) under ``--teachers``."""
    if not getattr(args, "teachers", None):
        raise SystemExit("error: distilled variants need --teachers (the runs of `final`)")
    path = Path(args.teachers) / "default" / "cnn_mha" / f"fold{fold}-{group}" / f"seed{seed}" \
        / "student.keras"
    if not path.is_file():
        raise SystemExit(f"error: {path}: no teacher; train it with `final --seeds {seed}` first")
    return path


def _teacher_val_ua(model_path: Path):
    """The validation UA of the epoch a CE run kept (its ``selected_val_ua``)."""
    state = model_path.parent / "checkpoints" / "student" / "state.json"
    return json.loads(state.read_text()).get("selected_val_ua") if state.is_file() else None


def _mean_sd(values):
    values = np.asarray([v for v in values if v is not None], float)
    if not len(values):
        return "—"
    sd = values.std(ddof=1) if len(values) > 1 else 0.0
    return f"{values.mean() * 100:.1f} ± {sd * 100:.1f}"


def explore(args) -> None:
    """Validation UA only: what a recipe is chosen on (``summarize`` writes the records)."""
    rows = []
    for setting in args.settings:
        for variant in args.variants:
            done = [_train_one(setting, variant, f, s, args)
                    for f in args.folds for s in args.seeds]
            rows.append((setting, variant, [r["val_ua"] for r in done],
                         [r["selected_epoch"] for r in done],
                         sum(r["wall_seconds"] for r in done)))
            print(f"{setting:<50} {variant:<8} val UA {_mean_sd(rows[-1][2])} "
                  f"(n={len(done)}), selected epochs {rows[-1][3]}, "
                  f"{rows[-1][4]:.0f} s", flush=True)
            if variant not in ("cnn_mha", "cnn"):
                # paired with its teacher (same fold, seed, validation speakers and batches)
                diffs = [r["val_ua"] - _teacher_val_ua(Path(r["options"]["teacher"]))
                         for r in done]
                print(f"{'':<50} {'':<8} student - teacher val UA {_mean_sd(diffs)} "
                      f"points {[round(d * 100, 1) for d in diffs]}", flush=True)
    folds = ", ".join(str(f) for f in args.folds)
    lines = [
        "# Recipe exploration on EmoDB four_class (validation speakers only)",
        "",
        f"- Leave-one-speaker-out folds {folds}, seeds {args.seeds}; each cell is the mean ± "
        "sd over those runs of the validation UA of the selected epoch (validation speakers "
        "are carved from the training speakers). No test metric is recorded here.",
        f"- Command: `python {' '.join(sys.argv)}`",
        "",
        "| setting | variant | validation UA (%) | selected epochs | wall (s) |",
        "| --- | --- | --- | --- | --- |",
    ]
    for setting, variant, val, epochs, wall in rows:
        lines.append(f"| `{setting}` | {variant} | {_mean_sd(val)} | {epochs} | {wall:.0f} |")
    print("\n" + "\n".join(lines))


def summarize(args) -> None:
    """Validation-only records of every finished run under ``--runs`` (whatever command made
    it), grouped by the run's folder; each group states how its options differ from today's
    ``default`` recipe. Writes ``<name>.json`` and ``.md`` (``--name``, by default
    recipes_explore; the second round, under rotating validation speakers, is
    ``recipes_rotate``)."""
    from keras_dkd.options import RunOptions

    records = []
    for config_path in sorted(Path(args.runs).glob("*/*/*/seed*/config.json")):
        run = config_path.parent
        state_path = run / "checkpoints" / "student" / "state.json"
        if not (run / "metrics.json").is_file() or not state_path.is_file():
            continue
        config, state = json.loads(config_path.read_text()), json.loads(state_path.read_text())
        options = config["options"]
        wall = run / "wall.json"
        records.append({
            "setting": run.parents[2].name, "variant": run.parents[1].name,
            "fold": options["fold"], "group": run.parent.name.split("-", 1)[1],
            "seed": options["seed"], "val_ua": state.get("selected_val_ua"),
            **_late_val_ua(state.get("history", [])),
            "selected_epoch": state.get("selected_epoch"),
            "epochs_run": state.get("epochs_completed"),
            "wall_seconds": json.loads(wall.read_text())["seconds"] if wall.is_file() else None,
            "options": options, "backend": config["backend"], "versions": config["versions"],
            **({"ua": json.loads((run / "metrics.json").read_text())["student"]["ua"]}
               if args.with_test else {}),
            **_teacher_fields(options.get("teacher"), args.with_test),
        })
    records = _kept_records(Path(args.results) / f"{args.name}.json", records)
    orders = sorted({r["options"].get("val_order", "seeded") for r in records})
    lines = [
        "# Recipe exploration on EmoDB four_class ("
        + ("validation speakers; test added after the decision)" if args.with_test
           else "validation speakers only)"),
        "",
        "- Leave-one-speaker-out; each cell is the mean ± sd over runs (folds × seeds) of the "
        "validation UA of the selected epoch; the validation speakers are carved from the "
        "training speakers. "
        + ("The test UA is added (`--with-test`) only for settings already decided on "
           "validation." if args.with_test else
           "No test metric is recorded here: this is what `default` was chosen on."),
        f"- Made by `python {' '.join(sys.argv)}` from the runs of `benchmarks/recipes.py "
        "explore`; `options` in the JSON hold every value of every run.",
        "",
        f"- Validation speakers: `val_order` {' and '.join(orders)} (`seeded`: one shuffle of "
        "the training speakers for every fold, so one speaker validates most folds; `rotate`: "
        "fold k validates on the speaker after its test speaker, shifted by the seed).",
        "",
        "- Besides the selected epoch's validation UA (a maximum over epochs, so it favours noisy "
        "curves), the last epoch's and the mean of the last 10 epochs' validation UA.",
        "",
        "| setting (folder) | how it differs from `default` (its value -> default's) | variant "
        "| runs | validation UA (%) | last epoch | last 10 epochs | selected epochs | wall (s) |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for setting, variant in dict.fromkeys((r["setting"], r["variant"]) for r in records):
        rs = [r for r in records if (r["setting"], r["variant"]) == (setting, variant)]
        first = rs[0]["options"]
        same = ("dataset", "config", "protocol", "fold", "seed", "variant", "manual_dir")
        default = RunOptions.from_flat(recipe="default", **{k: first[k] for k in same},
                                       val_order=first.get("val_order", "seeded"))
        diff = "; ".join(d.replace("'", "")  # (options newer than a run take their default)
                         for d in default.differences(RunOptions.from_dict(first))) or "—"
        groups = list(dict.fromkeys(r["group"] for r in rs))
        seeds = sorted({r["seed"] for r in rs})
        runs = (str(groups) if len(rs) <= 4
                else f"{len(groups)} folds × seed{'s' * (len(seeds) > 1)} "
                     f"{', '.join(map(str, seeds))}")
        epochs = [r["selected_epoch"] for r in rs]
        lines.append(
            f"| {setting} | {diff} | {variant} | {runs} | "
            f"{_mean_sd(r['val_ua'] for r in rs)} | {_mean_sd(r['val_ua_last'] for r in rs)} | "
            f"{_mean_sd(r['val_ua_last10'] for r in rs)} | "
            f"{epochs if len(rs) <= 4 else f'{np.mean(epochs):.1f} (mean)'} | "
            f"{sum(r['wall_seconds'] or 0 for r in rs):.0f} |"
        )
    lines += _paired_teacher(records, with_test=args.with_test)
    if args.baseline:
        lines += _paired_validation(records, args.baseline, with_test=args.with_test)
        if args.with_test:
            agreement = _validation_agreement(records, args.baseline,
                                              lambda setting: setting != args.baseline)
            lines += ["", agreement] if agreement else []
    text = "\n".join(lines) + "\n"
    print(text)
    from keras_dkd.io import atomic_write_json, atomic_write_text

    out = Path(args.results)
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_json(out / f"{args.name}.json",
                      {"study": args.name, "command": "python " + " ".join(sys.argv),
                       "records": records})
    atomic_write_text(out / f"{args.name}.md", text)
    if any("teacher_val_ua" in r for r in records):
        _plot_students(records, out / f"{args.name}.png")


def _kept_records(path: Path, found: list) -> list:
    """The records already in ``path`` whose run is not among ``found`` (their run folders may
    be gone: the JSON is the study's record), then ``found``: a summary adds to the
    earlier ones instead of forgetting what it cannot see."""
    key = lambda r: (r["setting"], r["variant"], r["fold"], r["seed"])  # noqa: E731
    seen = {key(r) for r in found}
    old = json.loads(path.read_text())["records"] if path.is_file() else []
    return [r for r in old if key(r) not in seen] + found


def _teacher_fields(teacher, with_test=False) -> dict:
    """A distilled run's teacher (a CE model of ``final``): its kept validation UA (and test
    UA, ``with_test``), for the paired student - teacher comparison."""
    if not teacher:
        return {}
    model = Path(teacher)
    fields = {"teacher_val_ua": _teacher_val_ua(model)}
    metrics = model.parent / "metrics.json"
    if with_test and metrics.is_file():
        fields["teacher_ua"] = json.loads(metrics.read_text())["student"]["ua"]
    return fields


def _paired_teacher(records, with_test=False) -> list[str]:
    """Each distilled (setting, variant) against its teachers: student - teacher, paired."""
    groups = dict.fromkeys((r["setting"], r["variant"]) for r in records
                           if r.get("teacher_val_ua") is not None)
    if not groups:
        return []
    lines = ["", "Distilled students against their teachers (the CE model each was distilled "
             "from: same fold, seed, validation speakers, initial weights and batches), "
             "student − teacher in points, mean ± sd (t-test p), then per run:", "",
             "| setting | variant | pairs | validation UA |"
             + (" test UA (after the decision) |" if with_test else ""),
             "| --- | --- | --- | --- |" + (" --- |" if with_test else "")]
    for setting, variant in groups:
        rs = [r for r in records if (r["setting"], r["variant"]) == (setting, variant)
              and r.get("teacher_val_ua") is not None]
        cells = []
        for mine, theirs in (("val_ua", "teacher_val_ua"),) + ((("ua", "teacher_ua"),)
                                                                 if with_test else ()):
            d = [r[mine] - r[theirs] for r in rs
                 if r.get(mine) is not None and r.get(theirs) is not None]
            cells.append(f"{_difference_cell(d)}: " + ", ".join(f"{x * 100:+.1f}" for x in d))
        lines.append(f"| {setting} | {variant} | {len(rs)} | " + " | ".join(cells) + " |")
    return lines


def _plot_students(records, path) -> None:
    """Student - teacher validation UA per run, one row of points per distilled setting."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    groups = list(dict.fromkeys((r["setting"], r["variant"]) for r in records
                                if r.get("teacher_val_ua") is not None))
    fig, ax = plt.subplots(figsize=(8, 1.2 + 0.6 * len(groups)))
    try:
        for i, group in enumerate(groups):
            d = [(r["val_ua"] - r["teacher_val_ua"]) * 100 for r in records
                 if (r["setting"], r["variant"]) == group and r.get("teacher_val_ua") is not None]
            ax.scatter(d, [i] * len(d), alpha=0.7)
            ax.plot([np.mean(d)] * 2, [i - 0.3, i + 0.3], color="black")
        ax.axvline(0, color="grey", lw=0.8)
        ax.set_yticks(range(len(groups)), [f"{s} {v}" for s, v in groups], fontsize=8)
        ax.set_xlabel("student − teacher validation UA (points; bar: mean)")
        ax.set_title("Distillation on top of the teacher's own training (validation speakers)")
        fig.tight_layout()
        fig.savefig(path, format="png", dpi=110)
    finally:
        plt.close(fig)


def _late_val_ua(history) -> dict:
    """The last epoch's validation UA and the mean over the last 10 epochs (student phase)."""
    values = [r["val_ua"] for r in history if r.get("val_ua") is not None]
    return {"val_ua_last": values[-1] if values else None,
            "val_ua_last10": float(np.mean(values[-10:])) if values else None}


def _difference_cell(differences) -> str:
    """Paired differences (fractions) as ``mean ± sd (p …)`` in points (one-sample t-test)."""
    from scipy import stats

    d = np.asarray(differences, float) * 100
    p = f"p {_p(stats.ttest_1samp(d, 0).pvalue)}" if len(d) > 2 and d.std() > 0 else "no test"
    return f"{d.mean():+.1f} ± {d.std(ddof=1) if len(d) > 1 else 0:.1f} ({p})"


def _paired_validation(records, baseline, with_test=False) -> list[str]:
    """Each folder against ``baseline`` on the (variant, fold, seed) runs both have (and the
    test UA's paired difference, ``with_test``)."""

    base = {(r["variant"], r["fold"], r["seed"]): r for r in records if r["setting"] == baseline}
    lines = ["", f"Paired against `{baseline}` on the same (variant, fold, seed), so the same "
             "validation speakers (mean ± sd of the differences, points; t-test p):", "",
             "| setting | pairs | selected epoch | last epoch | last 10 epochs |"
             + (" test UA (after the decision) |" if with_test else ""),
             "| --- | --- | --- | --- | --- |" + (" --- |" if with_test else "")]
    for setting in dict.fromkeys(r["setting"] for r in records):
        pairs = [(r, base[(r["variant"], r["fold"], r["seed"])]) for r in records
                 if r["setting"] == setting != baseline
                 and (r["variant"], r["fold"], r["seed"]) in base]
        if not pairs:
            continue
        cells = []
        for key in ("val_ua", "val_ua_last", "val_ua_last10") + (("ua",) if with_test else ()):
            cells.append(_difference_cell(
                [a[key] - b[key] for a, b in pairs
                 if a.get(key) is not None and b.get(key) is not None]))
        lines.append(f"| {setting} | {len(pairs)} | " + " | ".join(cells) + " |")
    return lines


def _plan(seeds, folds, candidates=(), candidate_seeds=None):
    """The trainings of the report, most informative first: the two ``default`` variants fold
    by fold for the first seed (the paired comparison the target is about), then the other
    seeds, then ``paper`` and ``headfusion`` fold by fold (first seed only), then each candidate
    setting (chosen on validation speakers, e.g. ``default:ema=0.98``) for ``cnn_mha``, seed by
    seed (``candidate_seeds``, default ``seeds``) and fold by fold. Each entry is
    ``(setting, variant, fold, seed)``."""
    plan = []
    for seed in seeds:
        for fold in folds:
            plan += [("default", variant, fold, seed) for variant in ("cnn_mha", "cnn")]
    others = [(recipe, variant) for recipe, variant in FINAL if recipe != "default"]
    for fold in folds:  # fold by fold, so that a partial study compares them on the same folds
        plan += [(recipe, variant, fold, seeds[0]) for recipe, variant in others]
    for spec in candidates:
        setting, seeds_of = _candidate_seeds(spec, candidate_seeds or seeds)
        plan += [(setting, "cnn_mha", fold, seed) for seed in seeds_of for fold in folds]
    return plan


def _candidate_seeds(spec: str, seeds) -> tuple[str, list[int]]:
    """``SETTING[@SEED,...]``: the setting, and its own seeds if given (else ``seeds``)."""
    setting, at, text = spec.partition("@")
    if not at:
        return setting, list(seeds)
    try:
        own = [int(item) for item in text.split(",")]
    except ValueError:
        sys.exit(f"error: bad seeds in candidate {spec!r}; write SETTING@0,1")
    return setting, own


def _setting(record) -> str:
    """A record's setting: its recipe's name, with a candidate's changes (older records may lack
    the field)."""
    return record["setting"] if "setting" in record else record["recipe"]


def _machine() -> str:
    from keras_dkd.info import machine_text

    return machine_text()


def final(args) -> None:
    """Train what the report still lacks, writing the records after every training.

    ``recipes.json`` is the study's checkpoint: a (recipe, variant, fold, seed) already recorded
    there is not trained again, so the study can be stopped at any point and continued later,
    on this machine or another (each record names its machine and wall time). The table says
    how many of the planned trainings it is over.
    """
    from keras_dkd.io import atomic_write_json

    out = Path(args.results)
    out.mkdir(parents=True, exist_ok=True)
    path = out / f"{args.name}.json"
    records = json.loads(path.read_text())["records"] if path.is_file() else []
    orders = {r["options"].get("val_order", "seeded") for r in records}
    if orders - {args.val_order}:
        sys.exit(f"error: {path} holds trainings made with --val-order "
                 f"{', '.join(sorted(orders))}; add --val-order {min(orders)} to continue that "
                 "study, or give this one its own --results folder")
    plan = _plan(args.seeds, args.folds, args.candidates, args.candidate_seeds)
    done = {(_setting(r), r["variant"], r["fold"], r["seed"]) for r in records}
    todo = [key for key in plan if key not in done]
    print(f"{len(plan) - len(todo)} of {len(plan)} trainings recorded in {path}; "
          f"{len(todo)} to go", flush=True)
    machine = _machine()
    for count, (recipe, variant, fold, seed) in enumerate(todo[: args.max_trainings], 1):
        record = _train_one(recipe, variant, fold, seed, args)
        record["machine"] = machine
        records.append(record)
        print(f"[{count}/{len(todo)}] {recipe:<10} {variant:<8} fold {fold} seed {seed}: "
              f"test UA {record['ua'] * 100:.1f}, val UA {(record['val_ua'] or 0) * 100:.1f}, "
              f"epoch {record['selected_epoch']}/{record['epochs_run']}, "
              f"{record['wall_seconds']:.0f} s", flush=True)
        study = {
            "study": "recipes", "dataset": "emodb/four_class",
            "protocol": "leave-one-speaker-out, all 10 folds; validation speakers carved from "
                        "the training speakers; each recipe keeps the epoch its select names "
                        "(best on validation, or the last); the test speaker is scored once",
            "command": "python benchmarks/recipes.py final --runs RUNS --seeds "
                       + " ".join(map(str, args.seeds)) + " --manual-dir ../shared/data/emodb"
                       + (" --candidates " + " ".join(args.candidates) if args.candidates else "")
                       + (" --candidate-seeds " + " ".join(map(str, args.candidate_seeds))
                          if args.candidates and args.candidate_seeds else "")
                       + (" --val-order seeded" if args.val_order == "seeded" else "")
                       + (f" --name {args.name}" if args.name != "recipes" else ""),
            "planned": len(plan),
            "wall_seconds": float(sum(r["wall_seconds"] for r in records)),
            "records": records,
        }
        atomic_write_json(path, study)
        _write_report(out, study, args.name)
    if path.is_file():  # also the report alone: `final --max-trainings 0`
        study = json.loads(path.read_text())
        _write_report(out, study, args.name)
        print(_markdown(study))


def _write_report(out: Path, study: dict, name: str = "recipes") -> None:
    from keras_dkd.io import atomic_path, atomic_write_text

    atomic_write_text(out / f"{name}.md", _markdown(study))
    with atomic_path(out / f"{name}.png") as tmp:
        _plot(study, tmp)


def _markdown(study) -> str:
    records = study["records"]
    settings = list(dict.fromkeys((_setting(r), r["variant"]) for r in records))
    folds = sorted({r["fold"] for r in records})
    groups = {r["fold"]: r["group"] for r in records}
    lines = [
        "# Recipes on EmoDB four_class, leave-one-speaker-out",
        "",
        f"- Protocol: {study['protocol']}.",
        "- Cells: utterance-level test metrics in %, mean ± sample sd over the trained models "
        "of the row (folds × seeds).",
        f"- Command: `{study['command']}`; training wall time {study['wall_seconds'] / 60:.0f} "
        f"min in all (backend {records[0]['backend']}; {_machines(records)}).",
        f"- Trainings recorded: {len(records)} of the {study.get('planned', len(records))} "
        "planned" + (" (**partial**: the study continues where it stopped when rerun)."
                     if len(records) < study.get("planned", len(records)) else "."),
        "",
        "| recipe | variant | seeds | WA | UA | macro-F1 | folds predicting one class | "
        "mean epochs run |",
        "| --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for recipe, variant in settings:
        rs = [r for r in records if (_setting(r), r["variant"]) == (recipe, variant)]
        seeds = sorted({r["seed"] for r in rs})
        lines.append(
            f"| {recipe} | {variant} | {len(seeds)} | {_mean_sd(r['wa'] for r in rs)} | "
            f"{_mean_sd(r['ua'] for r in rs)} | {_mean_sd(r['macro_f1'] for r in rs)} | "
            f"{sum(r['one_class'] for r in rs)} | "
            f"{np.mean([r['epochs_run'] for r in rs]):.1f} |"
        )
    lines += ["", "Test UA (%) per fold (held-out speaker), mean over seeds:", "",
              "| recipe | variant | " + " | ".join(groups[f] for f in folds) + " |",
              "| --- | --- |" + " --- |" * len(folds)]
    for recipe, variant in settings:
        cells = []
        for f in folds:
            ua = [r["ua"] for r in records
                  if (_setting(r), r["variant"], r["fold"]) == (recipe, variant, f)]
            cells.append(f"{np.mean(ua) * 100:.1f}" if ua else "—")
        lines.append(f"| {recipe} | {variant} | " + " | ".join(cells) + " |")
    comparisons = [(("default", "cnn_mha"), ("default", "cnn"))]
    comparisons += [(("default", "cnn_mha"), setting) for setting in settings
                    if setting[0] != "default"]
    for a, b in comparisons:
        paired = _paired(records, a, b)
        if paired:
            lines += ["", paired]
    agreement = _validation_agreement(records)
    if agreement:
        lines += ["", agreement]
    if any(recipe == "headfusion" for recipe, _ in settings):
        lines += ["", "`headfusion` drops utterances of 2 s or less from the test speaker too: "
                  "its test UA is over fewer utterances than the other rows'."]
    return "\n".join(lines) + "\n"


def _machines(records) -> str:
    """Each machine the trainings ran on, with its count of trainings."""
    from collections import Counter

    counts = Counter(r.get("machine", "?") for r in records)
    return "; ".join(f"{machine}: {n} trainings" for machine, n in sorted(counts.items()))


def _paired(records, a, b) -> str:
    """A paired comparison of two settings over the (fold, seed) pairs both have."""
    key = {(_setting(r), r["variant"], r["fold"], r["seed"]): r["ua"] for r in records}
    runs = sorted({(f, s) for (_, _, f, s) in key})
    pairs = [(key[(*a, f, s)], key[(*b, f, s)]) for f, s in runs
             if (*a, f, s) in key and (*b, f, s) in key]
    if len(pairs) < 2:
        return ""
    diff = np.array([x - y for x, y in pairs])
    text = (f"Paired over {len(pairs)} (fold, seed) pairs: {a[0]} {a[1]} − {b[0]} {b[1]} = "
            f"{diff.mean() * 100:+.1f} ± {diff.std(ddof=1) * 100:.1f} UA points")
    if len(pairs) < 6:  # too few pairs for a test to mean anything
        return text + f" (no test with {len(pairs)} pairs; at least 6 are needed)."
    from scipy import stats

    t = stats.ttest_rel([x for x, _ in pairs], [y for _, y in pairs])
    w = stats.wilcoxon(diff) if np.any(diff) else None
    return (text + f"; paired t-test p {_p(t.pvalue)}"
            + (f", Wilcoxon p {_p(w.pvalue)}" if w else "") + ".")


def _validation_agreement(records, baseline="default",
                          is_candidate=lambda setting: setting.startswith("default:")) -> str:
    """How well a candidate's validation difference from ``baseline`` (selected epoch, same
    fold and seed, so the same validation speakers) foretells its test difference: the
    correlation over every candidate training with a ``baseline`` pair."""
    base = {(r["fold"], r["seed"]): r for r in records
            if _setting(r) == baseline and r["variant"] == "cnn_mha"}
    pairs = [(r["val_ua"] - base[(r["fold"], r["seed"])]["val_ua"],
              r["ua"] - base[(r["fold"], r["seed"])]["ua"])
             for r in records if is_candidate(_setting(r)) and r["variant"] == "cnn_mha"
             and (r["fold"], r["seed"]) in base
             and all(x.get(k) is not None for x in (r, base[(r["fold"], r["seed"])])
                     for k in ("val_ua", "ua"))]
    if len(pairs) < 10:
        return ""
    from scipy import stats

    val, test = (np.array(column) * 100 for column in zip(*pairs, strict=True))
    r = stats.pearsonr(val, test)
    rho = stats.spearmanr(val, test)
    agree = np.mean(np.sign(val[val != 0]) == np.sign(test[val != 0])) * 100
    return (f"Does validation foretell test? Over the {len(pairs)} candidate trainings paired "
            f"with `default` (same fold and seed), the validation difference (selected epoch, "
            f"sd {val.std(ddof=1):.1f} points) against the test difference (sd "
            f"{test.std(ddof=1):.1f}): Pearson r = {r.statistic:+.2f} (p {_p(r.pvalue)}), "
            f"Spearman ρ = {rho.statistic:+.2f}; the signs agree in {agree:.0f} % of the pairs "
            f"whose validation differs.")


def _p(value) -> str:
    """A p-value as ``= 0.034``, or ``< 0.001``."""
    return "< 0.001" if value < 0.001 else f"= {value:.3f}"


def _plot(study, path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    records = study["records"]
    settings = list(dict.fromkeys((_setting(r), r["variant"]) for r in records))
    folds = sorted({r["fold"] for r in records})
    fig, ax = plt.subplots(figsize=(10, 4.8))
    try:
        width = 0.8 / len(settings)
        for i, setting in enumerate(settings):
            means = [np.mean([r["ua"] for r in records
                              if (_setting(r), r["variant"]) == setting and r["fold"] == f]
                             or [0])
                     * 100 for f in folds]
            ax.bar(np.arange(len(folds)) + i * width, means, width, label=" ".join(setting))
        ax.set_xticks(np.arange(len(folds)) + 0.4 - width / 2,
                      [next(r["group"] for r in records if r["fold"] == f) for f in folds],
                      rotation=30)
        ax.set_ylabel("test UA (%)")
        ax.set_ylim(0, 100)
        ax.legend(fontsize=8, ncol=4, loc="upper center", bbox_to_anchor=(0.5, -0.2), frameon=False)
        ax.grid(axis="y", alpha=0.3)
        ax.set_title("EmoDB four_class, leave-one-speaker-out: test UA per held-out speaker")
        fig.tight_layout()
        fig.savefig(path, format="png", dpi=110)
    finally:
        plt.close(fig)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="mode", required=True)
    e = sub.add_parser("explore", help="candidates, validation UA only")
    f = sub.add_parser("final", help="the reported settings, all folds")
    for p in (e, f):
        p.add_argument("--runs", required=True, help="parent folder of the run directories")
        p.add_argument("--folds", type=int, nargs="+", default=list(range(10)))
        p.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
        p.add_argument("--manual-dir", default=None)
        p.add_argument("--data-dir", default=None)
        p.add_argument("--cache-dir", default=None)
        p.add_argument("--val-order", choices=["rotate", "seeded"], default="rotate",
                       help="which training speakers validate; the first round "
                            "(recipes_round1) was made with seeded")
    e.add_argument("--settings", nargs="+", required=True)
    e.add_argument("--variants", nargs="+", default=["cnn_mha"],
                   help="cnn_mha, cnn (CE), or a distilling variant (dkd, kd, tckd, nckd), "
                        "whose teacher is the default cnn_mha model of --teachers")
    e.add_argument("--teachers", default=None,
                   help="the --runs folder of `final`, for distilled variants")
    f.add_argument("--results", default=str(ROOT / "docs" / "results"))
    f.add_argument("--candidates", nargs="*", default=[],
                   help="settings chosen on validation speakers (e.g. default:ema=0.98) to "
                        "train for cnn_mha on every fold and seed after the report's own; "
                        "SETTING@0,1 gives one its own seeds")
    f.add_argument("--candidate-seeds", type=int, nargs="+", default=None,
                   help="the seeds of the candidates (default: --seeds)")
    f.add_argument("--max-trainings", type=int, default=None,
                   help="stop after this many new trainings (rerun to continue)")
    f.add_argument("--name", default="recipes",
                   help="the records' file name under --results, without .json / .md / .png "
                        "(recipes_round1: the first round, --val-order seeded)")
    m = sub.add_parser("summarize", help="validation-only table of the runs under --runs")
    m.add_argument("--runs", required=True)
    m.add_argument("--results", default=str(ROOT / "docs" / "results"))
    m.add_argument("--with-test", action="store_true",
                   help="also the test UA (paired) and whether validation foretold it: for "
                        "after a decision made on validation alone")
    m.add_argument("--name", default="recipes_explore",
                   help="the records' file name under --results, without .json / .md")
    m.add_argument("--baseline", default=None,
                   help="folder to pair every other folder against (same variant, fold, seed)")
    args = parser.parse_args()
    if args.mode != "summarize":
        from keras_dkd.allocator import tune_allocator

        # before the first computation, as the keras-dkd command does: on TensorFlow a
        # training's system time falls from half the CPU (page faults) to little
        tune_allocator()
    {"explore": explore, "final": final, "summarize": summarize}[args.mode](args)


if __name__ == "__main__":
    main()
