"""Shared pieces of the ``keras-dkd`` commands: error handling, option groups and validation.

Everything here runs before any work starts: a bad option value is a click usage error (exit 2)
raised while parsing, or by :func:`check_data_options` at the top of a command, before a dataset
is built or a model created.
"""

from __future__ import annotations

import functools
import sys

import click

from keras_dkd.corpora import CORPORA as DATASETS
from keras_dkd.errors import UserError
from keras_dkd.options import (
    HEAD_INITS,
    OPTIMIZERS,
    PADDINGS,
    PRECISIONS,
    PROTOCOLS,
    SCHEDULES,
    SELECTIONS,
    STUDENT_INITS,
    VAL_ORDERS,
    VARIANTS,
)
from keras_dkd.recipes import RECIPES


def user_errors(func):
    """Turn a library :class:`UserError` into a one-line click error (exit 1, no traceback).

    Ctrl-C becomes a one-line note (exit 130): training saves a checkpoint every epoch, so the
    same command resumes it.
    """

    @functools.wraps(func)
    def wrapper(*args, **kwargs):
        try:
            return func(*args, **kwargs)
        except UserError as error:
            raise click.ClickException(str(error)) from None
        except KeyboardInterrupt:
            click.echo(
                "\nInterrupted. Rerun the same command to resume from the last completed epoch.",
                err=True,
            )
            sys.exit(130)

    return wrapper


# ------------------------------------------------------------------------------------------
# options taking several values after one flag: --seeds 0 1 2
# ------------------------------------------------------------------------------------------


def _is_option_like(arg: str) -> bool:
    if not arg.startswith("-") or arg == "-":
        return False
    try:
        float(arg)  # a negative number is a value (validated later), not an option
        return False
    except ValueError:
        return True


class MultiValueOption(click.Option):
    """An option that takes one or more values after one flag (``--seeds 0 1 2``).

    Repeating the flag (``--seeds 0 --seeds 1``) and commas (``--seeds 0,1,2``) work too. The
    command receives a tuple of the converted values, or ``None`` when the option is absent.
    """

    def __init__(self, *args, **kwargs):
        kwargs["multiple"] = True
        super().__init__(*args, **kwargs)

    def add_to_parser(self, parser, ctx):
        result = super().add_to_parser(parser, ctx)
        table = {**getattr(parser, "_long_opt", {}), **getattr(parser, "_short_opt", {})}
        for name in self.opts:
            option = table.get(name)
            if option is None or getattr(option, "_greedy", False):
                continue
            original = option.process

            def process(value, state, original=original):
                values = [value]
                while state.rargs and not _is_option_like(state.rargs[0]):
                    values.append(state.rargs.pop(0))
                for item in values:
                    for part in str(item).split(","):
                        if part.strip():
                            original(part.strip(), state)

            option.process = process
            option._greedy = True
        return result


# ------------------------------------------------------------------------------------------
# option groups
# ------------------------------------------------------------------------------------------


def _stack(*decorators):
    def apply(func):
        for decorator in reversed(decorators):
            func = decorator(func)
        return func

    return apply


def dataset_option(required=True):
    return click.option(
        "--dataset",
        type=click.Choice(DATASETS),
        required=required,
        help="The corpus (built with TFDS on first use); csv: your own, listed in --manifest.",
    )


def data_options(func):
    """--config, --manifest, --data-dir, --manual-dir, --cache-dir, --max-utterances."""
    return _stack(
        click.option(
            "--config",
            "config_name",
            metavar="NAME",
            default=None,
            help="Dataset config (emodb, ravdess: four_class [default], full; iemocap: "
            "improvised [default], scripted, all, *_exc; csv: the name the corpus is built "
            "under [the manifest's file stem]).",
        ),
        click.option(
            "--manifest",
            type=click.Path(dir_okay=False),
            default=None,
            metavar="FILE",
            help="--dataset csv: the CSV manifest (path,label,speaker[,split,session,gender]; "
            "paths relative to it). Not needed once built: then --config NAME.",
        ),
        click.option(
            "--data-dir",
            type=click.Path(file_okay=False),
            default=None,
            help="TFDS data dir [$KERAS_DKD_DATA_DIR or ~/tensorflow_datasets].",
        ),
        click.option(
            "--manual-dir",
            type=click.Path(file_okay=False),
            default=None,
            help="Folder holding the corpus' files [$KERAS_DKD_<DATASET>_DIR].",
        ),
        click.option(
            "--cache-dir",
            type=click.Path(file_okay=False),
            default=None,
            help="Feature cache [$KERAS_DKD_CACHE_DIR or ~/.cache/keras_dkd].",
        ),
        click.option(
            "--max-utterances",
            type=click.IntRange(min=2),
            default=None,
            metavar="N",
            help="Use at most N utterances (quick trials and tests).",
        ),
    )(func)


def protocol_options(default_protocol="random", fold_help=None):
    return _stack(
        click.option(
            "--protocol",
            type=click.Choice(PROTOCOLS),
            default=default_protocol,
            show_default=default_protocol is not None,
            help="random: speaker-dependent utterance split (the paper's); loso: "
            "leave one speaker (EmoDB) / session (IEMOCAP) / actor (RAVDESS) / group (csv) "
            "out.",
        ),
        click.option(
            "--fold",
            type=str,
            default=None,
            metavar="K",
            help=fold_help
            or "loso only: the held-out group, by index (0-based) or "
            "name (speaker03, session1) [0].",
        ),
    )


def training_options(func):
    """Optimisation and distillation hyper-parameters shared by train, ablate and cv."""
    return _stack(
        click.option(
            "--alpha",
            type=click.FloatRange(min=0),
            metavar="FLOAT",
            default=1.0,
            show_default=True,
            help="Weight of TCKD (dkd, tckd) or of KD (kd).",
        ),
        click.option(
            "--temperature",
            type=click.FloatRange(min=0, min_open=True),
            metavar="FLOAT",
            default=4.0,
            show_default=True,
            help="Softmax temperature of the distillation terms.",
        ),
        click.option(
            "--warmup-epochs",
            type=click.IntRange(min=0),
            metavar="INT",
            default=20,
            show_default=True,
            help="Epochs over which the distillation weight ramps from 0 to 1 (scale it "
            "down with --epochs for short runs; 0: full weight at once).",
        ),
        click.option(
            "--recipe",
            type=click.Choice(tuple(RECIPES)),
            default=None,
            help="The named recipe the training options start from: default (keras-dkd's, "
            "measured), paper (DKDFMH as published), headfusion (the Head Fusion code's) "
            "[default]. Options given below replace the recipe's values.",
        ),
        click.option(
            "--epochs",
            type=click.IntRange(min=1),
            metavar="INT",
            default=None,
            help="Epoch budget of each phase (teacher, student) [recipe's].",
        ),
        click.option(
            "--batch-size", type=click.IntRange(min=1), metavar="INT", default=None,
            help="[recipe's: 32]",
        ),
        click.option(
            "--learning-rate",
            type=click.FloatRange(min=0, min_open=True),
            metavar="FLOAT",
            default=None,
            help="Peak learning rate [recipe's].",
        ),
        click.option(
            "--weight-decay",
            type=click.FloatRange(min=0),
            metavar="FLOAT",
            default=None,
            help="Decoupled weight decay [recipe's].",
        ),
        click.option(
            "--optimizer",
            type=click.Choice(OPTIMIZERS),
            default=None,
            help="Keras' Adam or AdamW (both apply --weight-decay decoupled) [recipe's].",
        ),
        click.option(
            "--schedule",
            type=click.Choice(SCHEDULES),
            default=None,
            help="Learning rate over training, after the warm-up: constant, inverse_time "
            "(lr / (1 + LR_DECAY x step)), step (x STEP_FACTOR every STEP_EPOCHS epochs), "
            "cosine (to 0 at the end of the budget) [recipe's].",
        ),
        click.option(
            "--lr-warmup-epochs",
            type=click.IntRange(min=0),
            metavar="INT",
            default=None,
            help="Epochs of linear learning-rate warm-up from 0 [recipe's].",
        ),
        click.option(
            "--lr-decay", type=click.FloatRange(min=0), metavar="FLOAT", default=None,
            help="Rate of --schedule inverse_time [recipe's].",
        ),
        click.option(
            "--step-epochs", type=click.IntRange(min=1), metavar="INT", default=None,
            help="Period of --schedule step, in epochs [recipe's].",
        ),
        click.option(
            "--step-factor", type=click.FloatRange(min=0, max=1, min_open=True),
            metavar="FLOAT", default=None, help="Factor of --schedule step [recipe's].",
        ),
        click.option(
            "--patience",
            type=click.IntRange(min=0),
            metavar="INT",
            default=None,
            help="Stop a phase after INT epochs without a better validation UA (0: never) "
            "[recipe's].",
        ),
        click.option(
            "--dropout",
            type=click.FloatRange(min=0, max=1, max_open=True),
            metavar="FLOAT",
            default=None,
            help="Dropout before the classifier [recipe's]; a resumed run with dropout is "
            "not bit-identical to an uninterrupted one.",
        ),
        click.option(
            "--label-smoothing", type=click.FloatRange(min=0, max=1, max_open=True),
            metavar="FLOAT", default=None,
            help="Label smoothing of the cross-entropy (0: none) [recipe's].",
        ),
        click.option(
            "--ema", type=click.FloatRange(min=0, max=1, max_open=True), metavar="FLOAT",
            default=None,
            help="Momentum of a moving average of the weights, which validation, selection and "
            "the saved model use (0: none) [recipe's].",
        ),
        click.option(
            "--balance-classes/--no-balance-classes", default=None,
            help="Draw each epoch's training segments in equal shares per class [recipe's].",
        ),
        click.option(
            "--time-masks", type=click.IntRange(min=0), metavar="INT", default=None,
            help="SpecAugment: time masks per training segment (0: none) [recipe's].",
        ),
        click.option(
            "--time-width", type=click.IntRange(min=0), metavar="INT", default=None,
            help="SpecAugment: the widest time mask, in frames [recipe's].",
        ),
        click.option(
            "--freq-masks", type=click.IntRange(min=0), metavar="INT", default=None,
            help="SpecAugment: frequency masks per training segment (0: none) [recipe's].",
        ),
        click.option(
            "--freq-width", type=click.IntRange(min=0), metavar="INT", default=None,
            help="SpecAugment: the widest frequency mask, in filters [recipe's].",
        ),
        click.option(
            "--speed", type=click.FloatRange(min=0, max=0.5), metavar="FLOAT", default=None,
            help="Speed perturbation of training segments: factors uniform in "
            "[1 - speed, 1 + speed] (0: none) [recipe's].",
        ),
        click.option(
            "--freq-warp", type=click.FloatRange(min=0, max=0.5), metavar="FLOAT", default=None,
            help="Vocal-tract-length perturbation of training segments: frequency scaled by a "
            "factor uniform in [1 - freq_warp, 1 + freq_warp] (0: none) [recipe's].",
        ),
        click.option(
            "--mixup", type=click.FloatRange(min=0), metavar="ALPHA", default=None,
            help="Mixup of training segments in cross-entropy phases, weights ~ Beta(ALPHA, "
            "ALPHA) (0: none) [recipe's].",
        ),
        click.option(
            "--head-init",
            type=click.Choice(HEAD_INITS),
            default=None,
            help="Initialisation of the head-fusion attention: Glorot over the fused Q/K/V "
            "kernel, or over each head's 1x1 convolution [recipe's].",
        ),
        click.option(
            "--select",
            type=click.Choice(SELECTIONS),
            default=None,
            help="Keep each phase's epoch with the best validation UA, or the last "
            "[recipe's: last in default, best in paper and headfusion].",
        ),
        click.option(
            "--student-init",
            type=click.Choice(STUDENT_INITS),
            default=None,
            help="Where a distilled student starts: its own initial weights, or a copy of the "
            "teacher's trained weights (same network) [recipe's].",
        ),
        click.option(
            "--val-fraction",
            type=click.FloatRange(min=0, max=1, max_open=True),
            metavar="FLOAT",
            default=0.1,
            show_default=True,
            help="Share of training utterances held out for model selection.",
        ),
        click.option(
            "--val-order",
            type=click.Choice(VAL_ORDERS),
            default="rotate",
            show_default=True,
            help="loso: validate on the speakers that follow the test speakers in corpus order "
            "(rotate: every speaker validates in one fold per seed) or on a seeded shuffle "
            "that is the same in every fold (seeded, before 2026-12-01).",
        ),
        click.option(
            "--normalize/--no-normalize",
            default=None,
            help="Standardize features with training-split statistics, inside the model "
            "[recipe's].",
        ),
        click.option(
            "--speaker-norm/--no-speaker-norm",
            default=None,
            help="Standardise each speaker's features with that speaker's own per-filter "
            "statistics (validation and test speakers with theirs, from their unlabelled audio) "
            "[recipe's].",
        ),
        click.option(
            "--drop-short/--keep-short",
            default=None,
            help="Drop utterances of 2 s or less (from every split, the Head Fusion code's "
            "choice) or keep them padded [recipe's].",
        ),
        click.option(
            "--padding",
            type=click.Choice(PADDINGS),
            default=None,
            help="How an utterance shorter than 2 s fills its segment: zero (silence) or "
            "repeat [recipe's].",
        ),
        click.option(
            "--precision",
            type=click.Choice(PRECISIONS),
            default=None,
            help="Keras dtype policy of the models: float32, or mixed_bfloat16 (bfloat16 "
            "compute; softmax, losses, BatchNorm statistics and logits in float32) "
            "[float32].",
        ),
        click.option(
            "--devices",
            type=click.IntRange(min=1),
            metavar="N",
            default=None,
            help="Train each run data-parallel over N devices (GPUs, else CPUs; jax and "
            "tensorflow backends): --batch-size stays the global batch, a multiple of N [1].",
        ),
    )(func)


def recipe_values(options: dict) -> dict:
    """The options a command was given, without those left out (the recipe's apply)."""
    return {key: value for key, value in options.items() if value is not None}


def variant_options(help_text):
    """--variant and --beta: the student objective and the NCKD weight (train, cv)."""
    return _stack(
        click.option(
            "--variant",
            type=click.Choice(VARIANTS),
            default="dkd",
            show_default=True,
            help=help_text,
        ),
        click.option(
            "--beta",
            type=click.FloatRange(min=0),
            metavar="FLOAT",
            default=8.0,
            show_default=True,
            help="Weight of NCKD (dkd, nckd).",
        ),
    )


def seed_option(help_text=None):
    return click.option(
        "--seed",
        type=click.IntRange(min=0),
        metavar="INT",
        default=0,
        show_default=True,
        help=help_text,
    )


def inference_batch_option(func):
    """--batch-size of the inference commands (evaluate, predict)."""
    return click.option(
        "--batch-size",
        type=click.IntRange(min=1),
        metavar="INT",
        default=64,
        show_default=True,
        help="Segments per inference batch.",
    )(func)


def quiet_option(func):
    return click.option(
        "--quiet",
        "-q",
        is_flag=True,
        help="No progress bars or phase lines; print only the results.",
    )(func)


def unsafe_option(func):
    return click.option(
        "--unsafe",
        is_flag=True,
        help="Load .keras files with Keras safe mode off (allows Lambda layers, which run "
        "arbitrary Python code): only for files you trust.",
    )(func)


def ray_options(func):
    """--ray, --ray-address, --ray-workers, --ray-threads: run a study's trainings on Ray.

    The command receives them as one argument, ``ray``: a
    :class:`keras_dkd.study_jobs.RayOptions`, or None to train serially (:func:`ray_choice`).
    """

    @functools.wraps(func)
    def wrapper(*args, ray_local, ray_address, ray_workers, ray_threads, **kwargs):
        return func(*args, ray=ray_choice(ray_local, ray_address, ray_workers, ray_threads),
                    **kwargs)

    return _stack(
        click.option(
            "--ray",
            "ray_local",
            is_flag=True,
            help="Run the trainings as Ray tasks on a local Ray instance started for the study "
            "(needs the ray extra: pip install 'keras-dkd[ray]').",
        ),
        click.option(
            "--ray-address",
            metavar="ADDR",
            default=None,
            help="Run the trainings as tasks on this running Ray cluster (host:6379, "
            "ray://host:10001 or auto); runs, data and cache on a filesystem all nodes share.",
        ),
        click.option(
            "--ray-workers",
            type=click.IntRange(min=1),
            metavar="N",
            default=None,
            help="With --ray/--ray-address: trainings at once [locally one per core].",
        ),
        click.option(
            "--ray-threads",
            type=click.IntRange(min=1),
            metavar="N",
            default=None,
            help="With --ray/--ray-address: CPU threads per training [the cores divided "
            "among the workers].",
        ),
    )(wrapper)


def ray_choice(ray_local, ray_address, ray_workers, ray_threads):
    """The :class:`keras_dkd.study_jobs.RayOptions` of the --ray options (None: serially).

    Raises:
        click.BadParameter: --ray-workers or --ray-threads without --ray or --ray-address.
    """
    if ray_address is None and not ray_local:
        for value, flag in ((ray_workers, "'--ray-workers'"), (ray_threads, "'--ray-threads'")):
            if value is not None:
                raise click.BadParameter("applies to Ray studies only: add --ray or "
                                         "--ray-address ADDR", param_hint=flag)
        return None
    from keras_dkd.study_jobs import RayOptions

    return RayOptions(address=ray_address, workers=ray_workers, threads=ray_threads)


# ------------------------------------------------------------------------------------------
# validation that needs the corpus
# ------------------------------------------------------------------------------------------


def check_data_options(dataset, config, protocol=None, fold=None, *, manifest=None,
                       data_dir=None):
    """Validate ``--config`` and ``--fold`` against the corpus; return ``(config, fold_index)``.

    For ``csv``, the config is the name the corpus is built under (the manifest's file stem
    unless given), and the groups are read from the manifest or the built corpus.

    Raises:
        click.BadParameter: unknown config, ``--fold`` without ``--protocol loso``, or a fold
            out of range (exit 2, before any work); a csv corpus with neither a manifest nor a
            built config.
    """
    from keras_dkd import corpora

    where = {"config": None, "manifest": manifest, "data_dir": data_dir}
    if dataset == "csv":
        config = _csv_config(config, manifest, data_dir)
        where["config"] = config
    elif manifest is not None:
        raise click.BadParameter(f"--manifest applies to --dataset csv, not {dataset}",
                                 param_hint="'--manifest'")
    configs = list(corpora.configs(dataset))
    if dataset == "csv":
        pass  # any name: the one the corpus is (or will be) built under
    elif config is None:
        config = corpora.DEFAULT_CONFIG[dataset]
    elif config not in configs:
        raise click.BadParameter(
            f"{config!r} is not a {dataset} config; choose from {', '.join(configs)}",
            param_hint="'--config'",
        )
    if fold is None:
        if protocol == "loso":
            return config, 0
        return config, None
    if protocol is not None and protocol != "loso":
        raise click.BadParameter("--fold applies to --protocol loso only", param_hint="'--fold'")
    return config, fold_index(dataset, fold, **where)


def _csv_config(config, manifest, data_dir) -> str:
    """The config of a CSV corpus, checked: a usage error when it cannot be found."""
    from keras_dkd import corpora
    from keras_dkd.errors import DatasetError

    try:
        config = corpora.csv_config(config, manifest)
        corpora.groups("csv", config, manifest=manifest, data_dir=data_dir)
    except DatasetError as error:
        hint = "'--manifest'" if manifest is not None else "'--config' / '--manifest'"
        raise click.BadParameter(str(error), param_hint=hint) from None
    return config


def fold_index(dataset, fold, param_hint="'--fold'", **where) -> int:
    """``fold`` (an index or a group name) as a 0-based index, or a click usage error.

    ``where``: ``config``, ``manifest`` and ``data_dir`` of a CSV corpus.
    """
    from keras_dkd import corpora

    try:
        return corpora.fold_index(dataset, fold, **where)
    except UserError as error:
        raise click.BadParameter(str(error), param_hint=param_hint) from None


def check_unique(values, param_hint):
    """A usage error when a multi-value option repeats a value."""
    if values and len(set(values)) != len(values):
        raise click.BadParameter(
            f"values repeat: {' '.join(str(v) for v in values)}", param_hint=param_hint
        )


def verbosity(quiet: bool) -> int:
    """Keras ``verbose``: progress bars on a terminal, one line per epoch otherwise."""
    if quiet:
        return 0
    return 1 if sys.stdout.isatty() else 2
