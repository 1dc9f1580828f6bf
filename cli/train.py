"""``keras-dkd train``, ``ablate`` and ``cv``: parse, build the run options, call
:mod:`keras_dkd.training` / :mod:`keras_dkd.studies`, print."""

from __future__ import annotations

import shlex
from pathlib import Path

import click

from keras_dkd.cli.options import (
    MultiValueOption,
    check_data_options,
    check_unique,
    data_options,
    dataset_option,
    fold_index,
    protocol_options,
    quiet_option,
    ray_options,
    recipe_values,
    seed_option,
    training_options,
    unsafe_option,
    user_errors,
    variant_options,
    verbosity,
)


def _command_line() -> str:
    """The running command with the options the user set (defaults left out), for the record.

    Rebuilt from click's parsed parameters rather than ``sys.argv``, so it is the same however
    the command was started (console script, ``python -m``, a test runner).
    """
    from click.core import ParameterSource

    ctx = click.get_current_context()
    parts = ["keras-dkd", ctx.info_name]
    for param in ctx.command.params:
        if not isinstance(param, click.Option) or param.name not in ctx.params:
            continue
        if ctx.get_parameter_source(param.name) in (ParameterSource.DEFAULT, None):
            continue
        value = ctx.params[param.name]
        flag = param.opts[0]
        if param.is_flag:
            if param.secondary_opts and not value:
                parts.append(param.secondary_opts[0])
            elif value:
                parts.append(flag)
        elif param.multiple:
            if value:
                parts += [flag, *(str(v) for v in value)]
        elif value is not None:
            parts += [flag, str(value)]
    return " ".join(shlex.quote(p) for p in parts)


def _where(options: dict) -> dict:
    """Where a CSV corpus is found: its ``manifest`` and the ``data_dir``."""
    return {"manifest": options.get("manifest"), "data_dir": options.get("data_dir")}


def _reporting(quiet: bool) -> dict:
    """The progress and record keyword arguments of training and studies."""
    from keras_dkd.training import Progress

    progress = Progress(verbose=verbosity(quiet), on_event=Printer(quiet))
    return {"progress": progress, "command": _command_line()}


def _percent(value) -> str:
    return "—" if value is None else f"{100 * float(value):.1f}"


class Printer:
    """Prints one line per stage of :func:`keras_dkd.training.train` (the ``on_event`` hook)."""

    def __init__(self, quiet: bool, prefix: str = ""):
        self.quiet = quiet
        self.prefix = prefix

    def __call__(self, event: dict):
        if self.quiet:
            return
        kind = event.get("event")
        if kind == "data":
            d = event.get("description") or {}
            splits = d.get("splits") or {}
            counts = " / ".join(
                f"{(splits.get(key) or {}).get('utterances', 0)} {key}"
                for key in ("train", "val", "test")
            )
            segments = (splits.get("train") or {}).get("segments")
            name = f"{d.get('dataset', '')}/{d.get('config', '')}".strip("/")
            click.echo(
                f"{self.prefix}data     {name}: {counts} utterances"
                + (f" ({segments} training segments)" if segments else "")
                + f"; {event.get('protocol', '')}"
            )
        elif kind == "phase" and event.get("status") == "start":
            phase = event["phase"]
            what = (
                "cross-entropy"
                if event.get("mode") == "ce"
                else f"{event.get('mode', '').upper()} from the teacher"
                + (" (its logits cached)" if event.get("teacher_logits") == "cached" else "")
                + (", starting from its weights" if event.get("student_init") == "teacher"
                   else "")
            )
            start = event.get("initial_epoch", 0)
            resume = f", resuming after epoch {start}" if start else ""
            if start >= event["epochs"]:
                resume = ", all epochs done: selecting and saving"
            click.echo(
                f"{self.prefix}{phase:<8} {event.get('model_variant')} with {what}, "
                f"{event['epochs']} epochs x {event.get('steps_per_epoch')} steps"
                f"{resume}"
            )
        elif kind == "phase" and event.get("status") == "done" and event.get("reused"):
            click.echo(f"{self.prefix}{event['phase']:<8} reused {event.get('source')}")
        elif kind == "phase" and event.get("status") == "done" and event.get("skipped"):
            click.echo(f"{self.prefix}{event['phase']:<8} already trained: {event.get('path')}")
        elif kind == "run":
            where = (
                f"seed {event['seed']}, {event['run']}"
                if "seed" in event
                else f"fold {event['fold']} ({event['group']})"
            )
            queued = " (queued on Ray)" if event.get("queued") else ""
            click.echo(f"{self.prefix}== {where}: {event['run_dir']}{queued}")
        elif kind == "ray":
            finished = event.get("finished")
            click.echo(
                f"{self.prefix}ray      {event['address']}: {event['tasks']} training(s) as "
                f"tasks, {event['workers']} at once, {event['threads']} thread(s) each"
                + (f" ({finished} already finished)" if finished else "")
            )
        elif kind == "finished":
            minutes, seconds = divmod(round(event.get("seconds", 0)), 60)
            click.echo(
                f"{self.prefix}{event['status']:<8} {event['label']} "
                f"[{event['done']}/{event['total']}, {minutes}m{seconds:02d}s]"
            )


def print_train_result(result: dict):
    """The final summary of a run: test metrics of each model and where the files are."""
    metrics = result["metrics"]
    phases = result.get("phases", {})
    if result.get("status") == "complete":
        click.echo(
            f"{result['run_dir']} already holds this finished run (pass --overwrite to "
            "train again)."
        )
    click.echo(f"{'model':<8} {'WA %':>6} {'UA %':>6} {'F1 %':>6}  {'epoch':>7}  file")
    for name in ("teacher", "student"):
        if name not in metrics:
            continue
        m = metrics[name]
        info = phases.get(name, {})
        if info.get("reused"):
            epoch = "reused"
        elif info.get("selected_epoch"):
            epoch = f"{info['selected_epoch']}/{info.get('epochs')}"
        else:
            epoch = ""
        path = info.get("path") or str(Path(result["run_dir"]) / f"{name}.keras")
        click.echo(
            f"{name:<8} {_percent(m['wa']):>6} {_percent(m['ua']):>6} "
            f"{_percent(m['macro_f1']):>6}  {epoch:>7}  {path}"
        )
    any_metrics = next(iter(metrics.values()), {})
    click.echo(
        f"test split: {any_metrics.get('n_utterances', '?')} utterances; "
        f"run dir {result['run_dir']}"
    )


# ------------------------------------------------------------------------------------------
# train
# ------------------------------------------------------------------------------------------


@click.command()
@dataset_option()
@click.option(
    "--out",
    type=click.Path(file_okay=False),
    default=None,
    metavar="RUN_DIR",
    help="Run directory [$KERAS_DKD_RUNS_DIR/<dataset>-<protocol><fold>-<variant>-"
    "seed<seed>, e.g. runs/emodb-loso0-dkd-seed0]. "
    "Rerunning into it resumes an interrupted run.",
)
@data_options
@protocol_options()
@variant_options(
    "Student objective: dkd/kd/tckd/nckd distil from a CE teacher; ce trains one head-fusion "
    "CNN, cnn one CNN without attention (no teacher)."
)
@training_options
@seed_option("Seed of the data split, the shuffling and the weight initialisation.")
@click.option(
    "--teacher",
    type=click.Path(dir_okay=False),
    default=None,
    metavar="PATH",
    help="Reuse this trained teacher (.keras) instead of training one.",
)
@click.option(
    "--overwrite",
    is_flag=True,
    help="Start afresh in a run directory holding another or a finished run.",
)
@unsafe_option
@quiet_option
@user_errors
def train(dataset, out, config_name, protocol, fold, teacher, overwrite, unsafe, quiet,
          **options):
    """Train a CE teacher, then a distilled student, and evaluate both on the test split.

    Writes RUN_DIR/config.json, teacher.keras, student.keras, history.csv, metrics.json,
    splits.json, confusion.png and TensorBoard logs (logs/). Interrupted (Ctrl-C, kill)? Rerun
    the same command: it resumes from the last completed epoch.
    """
    config_name, fold = check_data_options(dataset, config_name, protocol, fold,
                                           **_where(options))
    if teacher is not None and options["variant"] in ("ce", "cnn"):
        raise click.BadParameter(
            f"--variant {options['variant']} trains without a teacher", param_hint="'--teacher'"
        )
    from keras_dkd.options import RunOptions
    from keras_dkd.training import train as train_run

    # options: the data, training, --variant, --beta and --seed options, named as RunOptions'.
    run = RunOptions.from_flat(dataset=dataset, config=config_name, protocol=protocol, fold=fold,
                               teacher=teacher, **recipe_values(options))
    result = train_run(run, out, overwrite=overwrite, safe_mode=not unsafe, **_reporting(quiet))
    print_train_result(result)


# ------------------------------------------------------------------------------------------
# ablate
# ------------------------------------------------------------------------------------------


@click.command()
@dataset_option()
@click.option(
    "--out",
    type=click.Path(file_okay=False),
    required=True,
    metavar="DIR",
    help="Folder of the ablation: one run directory per seed and row, table.md, "
    "table.json, ablation.png.",
)
@data_options
@protocol_options(default_protocol="loso")
@click.option(
    "--seeds",
    cls=MultiValueOption,
    type=click.IntRange(min=0),
    metavar="S...",
    help="Seeds to average over [0 1 2].",
)
@click.option(
    "--beta",
    "betas",
    cls=MultiValueOption,
    type=click.FloatRange(min=0),
    metavar="B...",
    help="Sweep β instead (e.g. --beta 1 2 4 8 16): DKD students for each β.",
)
@training_options
@ray_options
@quiet_option
@user_errors
def ablate(dataset, out, config_name, protocol, fold, seeds, betas, quiet, ray, **options):
    """The paper's ablation (Table 1): CNN, CNN+MHA, +KD, TCKD, NCKD, DKD over several seeds.

    One CE teacher per seed (the CNN+MHA row) is shared by the distillation rows. Each row is
    the mean ± std of WA and UA over the seeds. Default protocol: leave-one-speaker/session-out,
    fold 0 (speaker-independent; the table states it). Rerun to resume an interrupted ablation.
    With --ray the trainings run as Ray tasks (a seed's distillation runs after its teacher).
    """
    config_name, fold = check_data_options(dataset, config_name, protocol, fold,
                                           **_where(options))
    check_unique(seeds, "'--seeds'")
    check_unique(betas, "'--beta'")
    from keras_dkd import reports, studies
    from keras_dkd.options import RunOptions

    base = RunOptions.from_flat(dataset=dataset, config=config_name, protocol=protocol, fold=fold,
                                **recipe_values(options))
    table = studies.ablate(base, out, seeds=seeds or (0, 1, 2), betas=betas or None, ray=ray,
                           **_reporting(quiet))
    click.echo(reports.format_ablation(table).rstrip())
    click.echo(f"\nwritten: {Path(out) / 'table.md'}, table.json, ablation.png")


# ------------------------------------------------------------------------------------------
# cv
# ------------------------------------------------------------------------------------------


@click.command()
@dataset_option()
@click.option(
    "--out",
    type=click.Path(file_okay=False),
    required=True,
    metavar="DIR",
    help="Folder of the cross-validation: one run directory per fold, cv.json, cv.md.",
)
@data_options
@click.option(
    "--folds",
    cls=MultiValueOption,
    type=str,
    metavar="K...",
    help="Run only these folds (indices or group names) [all].",
)
@variant_options(
    "As for train: dkd/kd/tckd/nckd (teacher + student per fold), ce or cnn (one model)."
)
@training_options
@seed_option("Seed of the data split, the shuffling and the weight initialisation.")
@ray_options
@quiet_option
@user_errors
def cv(dataset, out, config_name, folds, quiet, ray, **options):
    """Leave-one-group-out cross-validation: IEMOCAP by session (5 folds), EmoDB by speaker (10).

    Each fold is a run directory under DIR (teacher and student, as `train`); cv.md and cv.json
    report every fold and the mean ± std. Rerun to resume. With --ray the folds run as Ray
    tasks, several at once.
    """
    config_name, _ = check_data_options(dataset, config_name, **_where(options))
    fold_list = None
    if folds:
        fold_list = [fold_index(dataset, f, "'--folds'", config=config_name, **_where(options))
                     for f in folds]
        check_unique(fold_list, "'--folds'")
    from keras_dkd import reports, studies
    from keras_dkd.options import RunOptions

    base = RunOptions.from_flat(dataset=dataset, config=config_name, protocol="loso", fold=0,
                                **recipe_values(options))
    report = studies.cv(base, out, folds=fold_list, ray=ray, **_reporting(quiet))
    click.echo(reports.format_cv(report).rstrip())
    click.echo(f"\nwritten: {Path(out) / 'cv.md'}, cv.json")
