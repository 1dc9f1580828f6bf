"""Experiments: train a teacher and a distilled student, evaluate, ablate and cross-validate.

The functions here do the work of the ``keras-dkd`` commands and return plain dicts; they never
print. Progress reaches the caller through Keras' own ``verbose`` progress bars, extra Keras
``callbacks``, and an ``on_event(dict)`` hook called once per stage (data ready, phase started,
phase finished, ...).

The recipe (DKDFMH, Zhao et al., ICASSP 2023):

- the **teacher** (the head-fusion CNN, ``build_model("cnn_mha")``) is trained with
  cross-entropy; the **student** (the same network) is then trained with cross-entropy plus the
  distillation term of ``variant`` (``dkd``, ``kd``, ``tckd``, ``nckd``) against the frozen
  teacher, through :class:`keras_dkd.distiller.Distiller`;
- variants ``ce`` (the head-fusion CNN) and ``cnn`` (the CNN without attention, the ablation's
  first row) train one model with cross-entropy and no teacher; it is saved as ``student.keras``;
- Adam, learning rate 1e-4 with the paper's "decay 1e-6", i.e. the legacy Keras 2 ``decay``
  argument, ``lr / (1 + 1e-6 · step)`` (:class:`keras.optimizers.schedules.InverseTimeDecay`
  with ``decay_steps=1``; it lowers the rate by well under 1 % over a run), batch 32,
  50 epochs by default;
- **model selection uses the validation split only**: with ``select="best"`` (default) each
  phase keeps the weights of its epoch with the highest utterance-level validation UA (the
  later epoch on ties; the last epoch when there is no validation split); ``select="last"``
  keeps the last epoch. The test split is evaluated once, at the end.

Determinism: ``keras.utils.set_random_seed`` is called with a per-phase seed before each model
is built, data splits use ``seed``, and training batches come from
:class:`keras_dkd.runs.EpochBatches`, whose order depends only on ``(seed, phase, epoch)``. A
run interrupted at any moment and resumed (rerun the same call) therefore finishes with the
same weights as an uninterrupted run on the same backend and machine (see
:mod:`keras_dkd.runs`).

Example:
    >>> from keras_dkd import experiments                                # doctest: +SKIP
    >>> result = experiments.train("emodb", "runs/demo", protocol="loso", fold=0,
    ...                            epochs=20)                            # doctest: +SKIP
    >>> result["metrics"]["student"]["ua"]                               # doctest: +SKIP
    0.61
"""

from __future__ import annotations

import datetime
import hashlib
import math
from collections.abc import Callable, Sequence
from pathlib import Path

import keras
import numpy as np

from keras_dkd import paths
from keras_dkd.errors import UserError
from keras_dkd.io import atomic_path, atomic_write_json, atomic_write_text, save_model
from keras_dkd.runs import (
    EpochBatches,
    EpochSetter,
    PhaseCheckpoint,
    RunDir,
    ScalarLogger,
    compatible,
    set_seed,
    to_builtin,
)

__all__ = [
    "VARIANTS",
    "DISTILLATION_VARIANTS",
    "ABLATION_ROWS",
    "train",
    "evaluate",
    "ablate",
    "cv",
    "summarize",
    "protocol_description",
]

#: Every ``variant`` of :func:`train`.
VARIANTS = ("dkd", "kd", "tckd", "nckd", "ce", "cnn")
#: The variants that distil a student from a teacher.
DISTILLATION_VARIANTS = ("dkd", "kd", "tckd", "nckd")
#: The rows of the paper's Table 1, with the run and the model of that run each comes from.
ABLATION_ROWS = (
    ("CNN", "cnn", "student"),
    ("CNN+MHA", "dkd", "teacher"),
    ("+KD", "kd", "student"),
    ("TCKD", "tckd", "student"),
    ("NCKD", "nckd", "student"),
    ("DKD", "dkd", "student"),
)
#: The paper's Table 1 (IEMOCAP improvised, random 80/20 split), WA / UA in %.
PAPER_TABLE1 = {
    "CNN": (74.5, 72.2),
    "CNN+MHA": (76.2, 74.8),
    "+KD": (76.9, 76.4),
    "TCKD": (75.3, 72.6),
    "NCKD": (77.7, 76.9),
    "DKD": (79.1, 77.1),
}
PROTOCOLS = ("random", "loso")
SELECTIONS = ("best", "last")
LR_DECAY = 1e-6
# Seed offsets per phase: the teacher and the student start from different initial weights, and
# the student of every ablation row starts from the same ones for a given seed.
_PHASE_SEED = {"teacher": 0, "student": 1}

Event = Callable[[dict], None]


def _phase_seed(seed: int, phase: str) -> int:
    """The seed set before a phase's model is built (fits NumPy's 32-bit seeds)."""
    return (int(seed) * 1000 + _PHASE_SEED[phase]) % (2**32 - 1)


# ------------------------------------------------------------------------------------------
# helpers
# ------------------------------------------------------------------------------------------


def _emit(on_event: Event | None, **event):
    if on_event is not None:
        on_event(event)


def _check_options(
    variant,
    alpha,
    beta,
    temperature,
    warmup_epochs,
    epochs,
    batch_size,
    learning_rate,
    seed,
    select,
    protocol,
    val_fraction,
    max_utterances,
):
    if variant not in VARIANTS:
        raise UserError(f"unknown variant {variant!r}; use one of {', '.join(VARIANTS)}")
    if protocol not in PROTOCOLS:
        raise UserError(f"unknown protocol {protocol!r}; use one of {', '.join(PROTOCOLS)}")
    if select not in SELECTIONS:
        raise UserError(f"unknown selection {select!r}; use 'best' or 'last'")
    checks = [
        (alpha >= 0, f"alpha must be >= 0, got {alpha}"),
        (beta >= 0, f"beta must be >= 0, got {beta}"),
        (temperature > 0, f"temperature must be > 0, got {temperature}"),
        (
            int(warmup_epochs) == warmup_epochs and warmup_epochs >= 0,
            f"warmup_epochs must be an integer >= 0, got {warmup_epochs}",
        ),
        (int(epochs) == epochs and epochs >= 1, f"epochs must be an integer >= 1, got {epochs}"),
        (
            int(batch_size) == batch_size and batch_size >= 1,
            f"batch_size must be an integer >= 1, got {batch_size}",
        ),
        (
            learning_rate > 0 and math.isfinite(learning_rate),
            f"learning_rate must be > 0, got {learning_rate}",
        ),
        (int(seed) == seed and seed >= 0, f"seed must be an integer >= 0, got {seed}"),
        (0 <= val_fraction < 1, f"val_fraction must be in [0, 1), got {val_fraction}"),
        (
            max_utterances is None
            or (int(max_utterances) == max_utterances and max_utterances > 0),
            f"max_utterances must be a positive integer, got {max_utterances}",
        ),
    ]
    for ok, message in checks:
        if not ok:
            raise UserError(message)


def _sha256(path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _optimizer(learning_rate: float):
    """Adam with the paper's legacy decay: ``lr / (1 + 1e-6 * step)``."""
    schedule = keras.optimizers.schedules.InverseTimeDecay(
        initial_learning_rate=float(learning_rate), decay_steps=1, decay_rate=LR_DECAY
    )
    return keras.optimizers.Adam(learning_rate=schedule)


def _train_arrays(bundle):
    """The training segments and their labels of a DataBundle, as NumPy arrays."""
    train_set = bundle.train_set
    return (
        np.asarray(train_set.segments, np.float32),
        np.asarray(train_set.segment_labels, np.int32),
    )


def _n_utterances(utterance_set) -> int:
    if utterance_set is None:
        return 0
    return len(utterance_set.labels)


class ValidationMetrics(keras.callbacks.Callback):
    """Add utterance-level validation metrics (``val_wa``, ``val_ua``, ``val_macro_f1``) to the
    epoch logs, for model selection, the history and the progress bar.

    Args:
        model: the model to evaluate (the student inside a Distiller).
        utterance_set: the validation :class:`keras_dkd.data.UtteranceSet`.
        class_names: class names in label order.
        batch_size: segments per inference batch.
    """

    def __init__(self, model, utterance_set, class_names, batch_size=64):
        super().__init__()
        self.target = model
        self.utterance_set = utterance_set
        self.class_names = list(class_names)
        self.batch_size = batch_size

    def on_epoch_end(self, epoch, logs=None):
        from keras_dkd.metrics import evaluate_model

        if logs is None or _n_utterances(self.utterance_set) == 0:
            return
        result = evaluate_model(
            self.target, self.utterance_set, self.class_names, batch_size=self.batch_size
        )
        logs["val_wa"] = float(result["wa"])
        logs["val_ua"] = float(result["ua"])
        logs["val_macro_f1"] = float(result["macro_f1"])


class _LearningRateLog(keras.callbacks.Callback):
    """Log the learning rate in effect at the end of each epoch."""

    def on_epoch_end(self, epoch, logs=None):
        if logs is None or self.model.optimizer is None:
            return
        optimizer = self.model.optimizer
        rate = optimizer.learning_rate
        try:
            logs["learning_rate"] = float(keras.ops.convert_to_numpy(rate))
        except (TypeError, ValueError):
            pass


def protocol_description(description: dict | None, protocol: str, fold=None) -> str:
    """A one-line statement of the evaluation protocol, for tables and reports.

    Args:
        description: ``DataBundle.describe()`` (None: a generic statement).
        protocol: ``"random"`` or ``"loso"``.
        fold: the LOSO fold.

    Example:
        >>> protocol_description({"dataset": "emodb", "test_group": "speaker03"}, "loso", 0)
        'speaker-independent: leave-one-speaker-out, fold 0 (test speaker03)'
    """
    description = description or {}
    dataset = description.get("dataset", "")
    unit = {"emodb": "speaker", "iemocap": "session"}.get(dataset, "group")
    if protocol == "loso":
        group = description.get("test_group") or ", ".join(description.get("test_groups") or [])
        text = f"speaker-independent: leave-one-{unit}-out, fold {fold}"
        text += f" (test {group})" if group else ""
        if description.get("val_speakers"):
            text += f"; validation speakers {', '.join(description['val_speakers'])}"
        return text
    text = "speaker-dependent: random 80/20 utterance split"
    if "split_seed" in description:
        text += f" (seed {description['split_seed']})"
    if description.get("val_fraction"):
        text += f"; validation {description['val_fraction']:.0%} of the training utterances"
    return text


# ------------------------------------------------------------------------------------------
# data
# ------------------------------------------------------------------------------------------


def prepare_data(
    dataset,
    *,
    config=None,
    protocol="random",
    fold=None,
    seed=0,
    batch_size=32,
    val_fraction=0.1,
    normalize=False,
    max_utterances=None,
    data_dir=None,
    manual_dir=None,
    cache_dir=None,
):
    """:func:`keras_dkd.data.prepare` with the options :func:`train` takes (one place to adapt)."""
    from keras_dkd import data

    return data.prepare(
        dataset,
        config=config,
        protocol=protocol,
        fold=fold,
        seed=seed,
        batch_size=batch_size,
        val_fraction=val_fraction,
        normalize=normalize,
        data_dir=data_dir,
        manual_dir=manual_dir,
        cache_dir=cache_dir,
        max_utterances=max_utterances,
    )


# ------------------------------------------------------------------------------------------
# train
# ------------------------------------------------------------------------------------------


def train(
    dataset: str,
    out=None,
    *,
    config: str | None = None,
    protocol: str = "random",
    fold: int | None = None,
    variant: str = "dkd",
    alpha: float = 1.0,
    beta: float = 8.0,
    temperature: float = 4.0,
    warmup_epochs: int = 20,
    epochs: int = 50,
    batch_size: int = 32,
    learning_rate: float = 1e-4,
    seed: int = 0,
    teacher=None,
    select: str = "best",
    val_fraction: float = 0.1,
    normalize: bool = False,
    max_utterances: int | None = None,
    data_dir=None,
    manual_dir=None,
    cache_dir=None,
    overwrite: bool = False,
    safe_mode: bool = True,
    verbose=0,
    callbacks: Sequence | None = None,
    on_event: Event | None = None,
    bundle=None,
    command: str | None = None,
) -> dict:
    """Train the teacher (cross-entropy), then the student (``variant``), in a run directory.

    Rerunning the same call resumes an interrupted run from its last completed epoch (a
    finished phase is never retrained) and returns a finished run's results without training.
    A run directory holding a run with other options is refused unless ``overwrite``.

    Args:
        dataset: ``"emodb"`` or ``"iemocap"``.
        out: the run directory (default :func:`default_run_dir`, e.g.
            ``$KERAS_DKD_RUNS_DIR/emodb-loso0-dkd-seed0``).
        config: the dataset config (default: the corpus default, e.g. ``four_class``).
        protocol: ``"random"`` (speaker-dependent utterance split, the paper's) or ``"loso"``
            (leave one speaker / session out; ``fold`` picks which).
        fold: the held-out group's index for ``protocol="loso"``.
        variant: ``dkd``, ``kd``, ``tckd``, ``nckd`` (distil a student from a CE teacher),
            ``ce`` (one head-fusion CNN with CE) or ``cnn`` (one CNN without attention, CE).
        alpha, beta, temperature: the distillation weights and temperature (α=1, β=8, T=4).
        warmup_epochs: epochs over which the distillation weight ramps up (20, as in DKD).
        epochs: epochs of each phase.
        batch_size: training batch size.
        learning_rate: Adam's initial learning rate.
        seed: seeds weights, data split and batch order.
        teacher: a trained teacher ``.keras`` file to reuse instead of training one.
        select: ``"best"`` (the epoch with the best validation UA) or ``"last"``.
        val_fraction: fraction of the training utterances held out for validation.
        normalize: standardize features with the training split's mean and variance (a
            Normalization layer inside the models); the paper does not.
        max_utterances: use at most this many utterances (quick tests).
        data_dir, manual_dir, cache_dir: TFDS data dir, manual download dir, feature cache.
        overwrite: replace a run directory that holds another or a finished run.
        safe_mode: load ``teacher`` with Keras safe mode (refuses Lambda layers).
        verbose: Keras ``fit`` verbosity (0 silent, 1 progress bar, 2 one line per epoch).
        callbacks: extra Keras callbacks for every phase.
        on_event: called with a dict at each stage (``event``: ``data``, ``phase``,
            ``evaluated``, ``done``).
        bundle: an already prepared :class:`keras_dkd.data.DataBundle` (skips data loading;
            it must match the data options).
        command: the command line that started the run, recorded in ``config.json``.

    Returns:
        ``{"run_dir", "status" ("trained", "resumed" or "complete"), "config", "metrics"
        ({"teacher": ..., "student": ...}), "phases" ({phase: {...}})}``.

    Raises:
        UserError: bad options, a run directory in use or holding another run, data problems.
    """
    from keras_dkd import info

    _check_options(
        variant,
        alpha,
        beta,
        temperature,
        warmup_epochs,
        epochs,
        batch_size,
        learning_rate,
        seed,
        select,
        protocol,
        val_fraction,
        max_utterances,
    )
    if teacher is not None and variant not in DISTILLATION_VARIANTS:
        raise UserError(
            f"variant {variant!r} trains without a teacher; drop --teacher or use "
            f"one of {', '.join(DISTILLATION_VARIANTS)}"
        )
    if teacher is not None and not Path(teacher).is_file():
        raise UserError(f"{teacher}: teacher model not found; pass a .keras file")
    if protocol != "loso" and fold is not None:
        raise UserError("fold applies to protocol 'loso' only")
    out = Path(out) if out is not None else default_run_dir(dataset, protocol, fold, variant, seed)
    run = RunDir(out)
    run.prepare(overwrite=overwrite)

    with run.lock():
        return _train_locked(
            run,
            dataset,
            config=config,
            protocol=protocol,
            fold=fold,
            variant=variant,
            alpha=alpha,
            beta=beta,
            temperature=temperature,
            warmup_epochs=warmup_epochs,
            epochs=int(epochs),
            batch_size=int(batch_size),
            learning_rate=float(learning_rate),
            seed=int(seed),
            teacher=teacher,
            select=select,
            val_fraction=val_fraction,
            normalize=normalize,
            max_utterances=max_utterances,
            data_dir=data_dir,
            manual_dir=manual_dir,
            cache_dir=cache_dir,
            overwrite=overwrite,
            safe_mode=safe_mode,
            verbose=verbose,
            callbacks=callbacks,
            on_event=on_event,
            bundle=bundle,
            versions=info.library_versions(),
            command=command,
        )


def _train_locked(
    run: RunDir,
    dataset,
    *,
    config,
    protocol,
    fold,
    variant,
    alpha,
    beta,
    temperature,
    warmup_epochs,
    epochs,
    batch_size,
    learning_rate,
    seed,
    teacher,
    select,
    val_fraction,
    normalize,
    max_utterances,
    data_dir,
    manual_dir,
    cache_dir,
    overwrite,
    safe_mode,
    verbose,
    callbacks,
    on_event,
    bundle,
    versions,
    command,
):
    from keras_dkd import corpora

    config = config or corpora.DEFAULT_CONFIG[dataset]
    options = {
        "dataset": dataset,
        "config": config,
        "protocol": protocol,
        "fold": fold,
        "variant": variant,
        "alpha": float(alpha),
        "beta": float(beta),
        "temperature": float(temperature),
        "warmup_epochs": int(warmup_epochs),
        "epochs": epochs,
        "batch_size": batch_size,
        "learning_rate": learning_rate,
        "lr_decay": LR_DECAY,
        "optimizer": "adam",
        "seed": seed,
        "select": select,
        "val_fraction": float(val_fraction),
        "normalize": bool(normalize),
        "max_utterances": max_utterances,
        "teacher": str(teacher) if teacher is not None else None,
        "teacher_sha256": _sha256(teacher) if teacher is not None else None,
        "data_dir": str(data_dir) if data_dir else None,
        "manual_dir": str(manual_dir) if manual_dir else None,
        "cache_dir": str(cache_dir) if cache_dir else None,
        "out": str(run.path),
    }
    old = run.read_config()
    new = {"backend": keras.backend.backend(), "options": options}
    if old is not None:
        differences = compatible(old, new)
        if differences:
            raise UserError(
                f"{run.path} holds a run with other options ({'; '.join(differences)}); "
                "pass --overwrite to replace it, or choose another --out"
            )
        finished = run.read_metrics()
        if finished is not None:
            result = {
                "run_dir": str(run.path),
                "status": "complete",
                "config": old,
                "metrics": finished,
                "phases": _phase_summaries(run, variant, teacher),
            }
            _emit(on_event, event="done", **{k: v for k, v in result.items() if k != "config"})
            return result

    if bundle is None:
        bundle = prepare_data(
            dataset,
            config=config,
            protocol=protocol,
            fold=fold,
            seed=seed,
            batch_size=batch_size,
            val_fraction=val_fraction,
            normalize=normalize,
            max_utterances=max_utterances,
            data_dir=data_dir,
            manual_dir=manual_dir,
            cache_dir=cache_dir,
        )
    description = to_builtin(bundle.describe())
    class_names = list(bundle.class_names)
    _emit(
        on_event,
        event="data",
        description=description,
        protocol=protocol_description(description, protocol, fold),
    )

    now = datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds")
    run_config = {
        "keras_dkd": versions.get("keras-dkd"),
        "created": (old or {}).get("created", now),
        "updated": now,
        "command": command,
        "backend": keras.backend.backend(),
        "versions": versions,
        "seed": seed,
        "phase_seeds": {p: _phase_seed(seed, p) for p in _PHASE_SEED},
        "options": options,
        "protocol": protocol_description(description, protocol, fold),
        "data": description,
        "recipe": {
            "optimizer": f"Adam, learning rate {learning_rate:g} / (1 + {LR_DECAY:g} * step)",
            "model_selection": (
                "epoch with the best validation UA (utterance level)"
                if select == "best"
                else "last epoch"
            ),
            "teacher": "cnn_mha trained with cross-entropy"
            if variant in DISTILLATION_VARIANTS
            else None,
            "student": {
                "cnn": "cnn (no attention) trained with cross-entropy",
                "ce": "cnn_mha trained with cross-entropy",
            }.get(variant, f"cnn_mha distilled with {variant} from the teacher"),
        },
    }
    run.write_config(run_config)

    features, labels = _train_arrays(bundle)
    status = "trained"
    phases: dict = {}
    models: dict = {}
    history_rows: list[dict] = []

    def phase_done(name, phase_info):
        phases[name] = phase_info
        _emit(on_event, event="phase", phase=name, status="done", **phase_info)

    phase_args = dict(
        class_names=class_names,
        bundle=bundle,
        features=features,
        labels=labels,
        seed=seed,
        epochs=epochs,
        batch_size=batch_size,
        learning_rate=learning_rate,
        alpha=alpha,
        beta=beta,
        temperature=temperature,
        warmup_epochs=warmup_epochs,
        select=select,
        verbose=verbose,
        callbacks=callbacks,
        on_event=on_event,
        previous_rows=history_rows,
    )

    def train_phase(name, **kwargs):
        nonlocal status
        model, info = _run_phase(run, name, **kwargs, **phase_args)
        models[name] = model
        history_rows.extend(info.pop("rows"))
        if info.get("resumed_from") or info.get("skipped"):
            status = "resumed"
        phase_done(name, info)

    # ---------------------------------------------------------------- teacher
    if variant in DISTILLATION_VARIANTS:
        if teacher is not None:
            teacher_model = _load_teacher(teacher, class_names, safe_mode)
            save_model(teacher_model, run.model("teacher"))
            models["teacher"] = teacher_model
            phase_done(
                "teacher",
                {
                    "source": str(teacher),
                    "path": str(run.model("teacher")),
                    "epochs": 0,
                    "reused": True,
                },
            )
        else:
            train_phase("teacher", model_variant="cnn_mha", mode="ce", teacher=None)

    # ---------------------------------------------------------------- student
    train_phase(
        "student",
        model_variant="cnn" if variant == "cnn" else "cnn_mha",
        mode="ce" if variant in ("ce", "cnn") else variant,
        teacher=models.get("teacher"),
    )
    run.write_history(history_rows)

    # ---------------------------------------------------------------- test evaluation
    from keras_dkd.metrics import evaluate_model, plot_confusion

    metrics = {}
    for name in ("teacher", "student"):
        if name not in models:
            continue
        result = to_builtin(evaluate_model(models[name], bundle.test, class_names))
        metrics[name] = result
        title = f"{name} - {dataset} {config} - WA {result['wa']:.1%} UA {result['ua']:.1%}"
        plot_confusion(result["confusion"], result["classes"], run.confusion(name), title=title)
        _emit(on_event, event="evaluated", phase=name, metrics=result)
    run.write_metrics(metrics)
    result = {
        "run_dir": str(run.path),
        "status": status,
        "config": run_config,
        "metrics": metrics,
        "phases": phases,
    }
    _emit(on_event, event="done", **{k: v for k, v in result.items() if k != "config"})
    return result


def _phase_summaries(run: RunDir, variant, teacher) -> dict:
    summaries = {}
    for name in ("teacher", "student"):
        checkpoint = PhaseCheckpoint(run.checkpoints(name), name)
        if checkpoint.complete:
            summaries[name] = {
                "path": str(run.model(name)),
                "epochs": checkpoint.epochs_completed,
                "selected_epoch": checkpoint.state.get("selected_epoch"),
                "val_ua": checkpoint.state.get("selected_val_ua"),
            }
        elif name == "teacher" and run.model(name).is_file() and variant in DISTILLATION_VARIANTS:
            summaries[name] = {
                "path": str(run.model(name)),
                "epochs": 0,
                "reused": True,
                "source": str(teacher) if teacher else None,
            }
    return summaries


def _load_teacher(path, class_names, safe_mode):
    from keras_dkd.io import load_model
    from keras_dkd.models import get_class_names

    model = load_model(path, safe_mode=safe_mode)
    names = list(get_class_names(model))
    if names != list(class_names):
        raise UserError(
            f"{path}: the teacher predicts {names} but the dataset has {list(class_names)}; "
            "use a teacher trained on the same dataset config"
        )
    shape = tuple(model.inputs[0].shape[1:]) if getattr(model, "inputs", None) else None
    if shape is not None and shape != (197, 40):
        raise UserError(f"{path}: the teacher takes inputs of shape {shape}, not (197, 40)")
    return model


def _run_phase(
    run: RunDir,
    phase,
    *,
    model_variant,
    mode,
    teacher,
    class_names,
    bundle,
    features,
    labels,
    seed,
    epochs,
    batch_size,
    learning_rate,
    alpha,
    beta,
    temperature,
    warmup_epochs,
    select,
    verbose,
    callbacks,
    on_event,
    previous_rows,
):
    """Train (or resume, or load) one phase; return ``(model, info)``."""
    from keras_dkd.distiller import Distiller
    from keras_dkd.io import load_model
    from keras_dkd.models import build_model

    history_cb = []

    def on_history(rows):
        run.write_history(previous_rows + rows)
        history_cb[:] = rows

    checkpoint = PhaseCheckpoint(
        run.checkpoints(phase), phase, monitor="val_ua", on_history=on_history
    )
    if checkpoint.complete and run.model(phase).is_file():
        model = load_model(run.model(phase))
        info = {
            "path": str(run.model(phase)),
            "epochs": checkpoint.epochs_completed,
            "selected_epoch": checkpoint.state.get("selected_epoch"),
            "val_ua": checkpoint.state.get("selected_val_ua"),
            "resumed_from": None,
            "skipped": True,
            "rows": checkpoint.history,
        }
        return model, info

    phase_seed = _phase_seed(seed, phase)
    set_seed(phase_seed)
    model = build_model(
        variant=model_variant,
        class_names=class_names,
        normalization=bundle.normalization,
        name=phase,
    )
    if mode == "ce" and teacher is None:
        trainer = model
        trainer.compile(
            optimizer=_optimizer(learning_rate),
            loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
            metrics=[keras.metrics.SparseCategoricalAccuracy(name="accuracy")],
        )
    else:
        trainer = Distiller(
            teacher,
            model,
            mode=mode,
            alpha=alpha,
            beta=beta,
            temperature=temperature,
            warmup_epochs=warmup_epochs,
        )
        trainer.compile(optimizer=_optimizer(learning_rate))
    initial_epoch = checkpoint.restore(trainer)
    batches = EpochBatches(features, labels, batch_size, seed=[seed, _PHASE_SEED[phase]])
    _emit(
        on_event,
        event="phase",
        phase=phase,
        status="start",
        epochs=epochs,
        initial_epoch=initial_epoch,
        mode=mode,
        model_variant=model_variant,
        steps_per_epoch=len(batches),
    )
    phase_callbacks = [
        EpochSetter(batches),
        ValidationMetrics(model, bundle.val, class_names),
        _LearningRateLog(),
        checkpoint,
        ScalarLogger(run.logs(phase)),
        *(callbacks or []),
    ]
    if initial_epoch < epochs:
        trainer.fit(
            batches,
            epochs=epochs,
            initial_epoch=initial_epoch,
            shuffle=False,
            verbose=verbose,
            callbacks=phase_callbacks,
        )
    selected = epochs
    if select == "best" and checkpoint.best_epoch is not None:
        selected = checkpoint.load_best(trainer)
    selected_row = next((r for r in checkpoint.history if int(r["epoch"]) == selected), {})
    save_model(model, run.model(phase))
    checkpoint.mark_complete(
        {"selected_epoch": selected, "selected_val_ua": selected_row.get("val_ua")}
    )
    info = {
        "path": str(run.model(phase)),
        "epochs": epochs,
        "selected_epoch": selected,
        "val_ua": selected_row.get("val_ua"),
        "resumed_from": initial_epoch or None,
        "skipped": False,
        "rows": checkpoint.history,
    }
    return model, info


# ------------------------------------------------------------------------------------------
# evaluate
# ------------------------------------------------------------------------------------------


def evaluate(
    model,
    dataset: str,
    *,
    config=None,
    split="test",
    protocol="random",
    fold=None,
    seed=0,
    val_fraction=0.1,
    max_utterances=None,
    data_dir=None,
    manual_dir=None,
    cache_dir=None,
    safe_mode=True,
    batch_size=64,
) -> dict:
    """Utterance-level metrics of a model on a dataset split.

    Args:
        model: a ``.keras`` path or a ``keras.Model``.
        dataset, config: the corpus and its config.
        split: ``"test"`` / ``"val"`` (the splits of ``protocol``/``fold``/``seed``, as
            :func:`train` makes them), or a corpus split name (``speaker03``, ``session1``),
            several joined by ``+``, or ``"all"``.
        protocol, fold, seed, val_fraction: how ``test`` / ``val`` are made.
        max_utterances, data_dir, manual_dir, cache_dir: data options.
        safe_mode: load the model with Keras safe mode.
        batch_size: segments per inference batch.

    Returns:
        The dict of :func:`keras_dkd.metrics.classification_metrics` (``wa``, ``ua``,
        ``macro_f1``, ``per_class_recall``, ``confusion``, ``classes``, ``n_utterances``) plus
        ``split`` and ``model``.
    """
    from keras_dkd import corpora
    from keras_dkd.io import load_model
    from keras_dkd.metrics import evaluate_model
    from keras_dkd.models import get_class_names

    config = config or corpora.DEFAULT_CONFIG[dataset]
    model_path = None
    if not isinstance(model, keras.Model):
        model_path = str(model)
        model = load_model(model, safe_mode=safe_mode)
    utterances, class_names = _evaluation_set(
        dataset,
        config=config,
        split=split,
        protocol=protocol,
        fold=fold,
        seed=seed,
        val_fraction=val_fraction,
        max_utterances=max_utterances,
        data_dir=data_dir,
        manual_dir=manual_dir,
        cache_dir=cache_dir,
    )
    model_classes = list(get_class_names(model))
    if model_classes != list(class_names):
        raise UserError(
            f"the model predicts {model_classes} but {dataset}/{config} has "
            f"{list(class_names)}; evaluate on the config the model was trained on"
        )
    if _n_utterances(utterances) == 0:
        raise UserError(f"split {split!r} of {dataset}/{config} holds no utterances")
    result = to_builtin(evaluate_model(model, utterances, class_names, batch_size=batch_size))
    result["split"] = split
    result["dataset"] = f"{dataset}/{config}"
    if model_path:
        result["model"] = model_path
    return result


def _evaluation_set(
    dataset,
    *,
    config,
    split,
    protocol,
    fold,
    seed,
    val_fraction,
    max_utterances,
    data_dir,
    manual_dir,
    cache_dir,
):
    from keras_dkd import data

    if split in ("test", "val"):
        bundle = prepare_data(
            dataset,
            config=config,
            protocol=protocol,
            fold=fold,
            seed=seed,
            val_fraction=val_fraction,
            max_utterances=max_utterances,
            data_dir=data_dir,
            manual_dir=manual_dir,
            cache_dir=cache_dir,
        )
        return (bundle.test if split == "test" else bundle.val), bundle.class_names
    return data.utterance_set(
        dataset,
        config=config,
        split=None if split == "all" else split,
        max_utterances=max_utterances,
        seed=seed,
        data_dir=data_dir,
        manual_dir=manual_dir,
        cache_dir=cache_dir,
    )


# ------------------------------------------------------------------------------------------
# summaries: mean ± std
# ------------------------------------------------------------------------------------------


def summarize(values: Sequence[float]) -> dict:
    """``{"mean", "std", "n", "values"}`` of ``values``; ``std`` is the sample standard deviation
    (ddof 1; 0 for a single value)."""
    array = np.asarray([float(v) for v in values], np.float64)
    n = int(array.size)
    return {
        "mean": float(array.mean()) if n else float("nan"),
        "std": float(array.std(ddof=1)) if n > 1 else 0.0,
        "n": n,
        "values": [float(v) for v in array],
    }


def _pm(summary: dict, scale=100.0, digits=1) -> str:
    if not summary["n"]:
        return "—"
    mean = summary["mean"] * scale
    if summary["n"] == 1:
        return f"{mean:.{digits}f}"
    return f"{mean:.{digits}f} ± {summary['std'] * scale:.{digits}f}"


# ------------------------------------------------------------------------------------------
# ablate
# ------------------------------------------------------------------------------------------


def ablate(
    dataset: str,
    out,
    *,
    seeds: Sequence[int] = (0, 1, 2),
    betas: Sequence[float] | None = None,
    config=None,
    protocol="loso",
    fold=0,
    epochs=50,
    batch_size=32,
    learning_rate=1e-4,
    alpha=1.0,
    beta=8.0,
    temperature=4.0,
    warmup_epochs=20,
    select="best",
    val_fraction=0.1,
    normalize=False,
    max_utterances=None,
    data_dir=None,
    manual_dir=None,
    cache_dir=None,
    verbose=0,
    callbacks=None,
    on_event: Event | None = None,
    command: str | None = None,
) -> dict:
    """The paper's Table 1 (or its β sweep), mean ± std of WA and UA over ``seeds``.

    Each seed trains one CE teacher (the CNN+MHA row) in ``OUT/seed<s>/dkd`` and reuses it for
    every distillation row (``kd``, ``tckd``, ``nckd``); ``cnn`` trains the attention-free CNN.
    With ``betas`` the rows are DKD students for each β (``OUT/seed<s>/beta<β>``) instead,
    the first of which trains the teacher. Every run is a resumable run directory, so an
    interrupted ablation continues where it stopped when rerun.

    Writes ``OUT/table.md`` (with the protocol and the command), ``OUT/table.json`` and
    ``OUT/ablation.png``.

    Returns:
        The ``table.json`` dict: ``{"dataset", "config", "protocol", "seeds", "epochs",
        "mode" ("table" or "beta"), "rows": [{"name", "wa", "ua", "macro_f1", "runs"}]}`` where
        ``wa`` etc. are :func:`summarize` dicts.
    """
    from keras_dkd import corpora

    seeds = [int(s) for s in seeds]
    if not seeds:
        raise UserError("give at least one seed")
    if len(set(seeds)) != len(seeds):
        raise UserError(f"seeds repeat: {seeds}")
    if betas is not None:
        betas = [float(b) for b in betas]
        if not betas:
            raise UserError("give at least one beta to sweep")
        if any(b < 0 for b in betas):
            raise UserError(f"beta must be >= 0, got {betas}")
    config = config or corpora.DEFAULT_CONFIG[dataset]
    out = Path(out)
    common = dict(
        config=config,
        protocol=protocol,
        fold=fold if protocol == "loso" else None,
        epochs=epochs,
        batch_size=batch_size,
        learning_rate=learning_rate,
        alpha=alpha,
        temperature=temperature,
        warmup_epochs=warmup_epochs,
        select=select,
        val_fraction=val_fraction,
        normalize=normalize,
        max_utterances=max_utterances,
        data_dir=data_dir,
        manual_dir=manual_dir,
        cache_dir=cache_dir,
        verbose=verbose,
        callbacks=callbacks,
    )
    if betas is None:
        plan = [(name, run, model) for name, run, model in ABLATION_ROWS]
        runs = [
            ("dkd", "dkd", beta),
            ("kd", "kd", beta),
            ("tckd", "tckd", beta),
            ("nckd", "nckd", beta),
            ("cnn", "cnn", beta),
        ]
    else:
        plan = [("CNN+MHA (teacher)", _beta_dir(betas[0]), "teacher")] + [
            (f"DKD β={b:g}", _beta_dir(b), "student") for b in betas
        ]
        runs = [(_beta_dir(b), "dkd", b) for b in betas]

    results: dict = {}  # (seed, run name) -> metrics
    description = None
    val_speakers = {}
    for seed in seeds:
        bundle = prepare_data(
            dataset,
            config=config,
            protocol=protocol,
            fold=common["fold"],
            seed=seed,
            batch_size=batch_size,
            val_fraction=val_fraction,
            normalize=normalize,
            max_utterances=max_utterances,
            data_dir=data_dir,
            manual_dir=manual_dir,
            cache_dir=cache_dir,
        )
        description = to_builtin(bundle.describe())
        val_speakers[seed] = description.get("val_speakers") or []
        teacher_path = None
        for run_name, variant, run_beta in runs:
            run_dir = out / f"seed{seed}" / run_name
            uses_teacher = variant in DISTILLATION_VARIANTS and teacher_path is not None
            _emit(on_event, event="run", seed=seed, run=run_name, run_dir=str(run_dir))
            result = train(
                dataset,
                run_dir,
                variant=variant,
                beta=run_beta,
                seed=seed,
                teacher=teacher_path if uses_teacher else None,
                bundle=bundle,
                on_event=on_event,
                command=command,
                **common,
            )
            results[(seed, run_name)] = result["metrics"]
            if variant in DISTILLATION_VARIANTS and teacher_path is None:
                teacher_path = run_dir / "teacher.keras"

    rows = []
    for name, run_name, model in plan:
        parts = [results[(s, run_name)][model] for s in seeds]
        rows.append(
            {
                "name": name,
                "wa": summarize([p["wa"] for p in parts]),
                "ua": summarize([p["ua"] for p in parts]),
                "macro_f1": summarize([p["macro_f1"] for p in parts]),
                "runs": [str(out / f"seed{s}" / run_name / f"{model}.keras") for s in seeds],
                "paper": PAPER_TABLE1.get(name) if betas is None else None,
            }
        )
    protocol_text = protocol_description(
        {**description, "val_speakers": []}, protocol, common["fold"]
    )
    if any(val_speakers.values()):
        protocol_text += "; validation speakers per seed: " + ", ".join(
            f"seed {s} {'+'.join(v)}" for s, v in val_speakers.items()
        )
    table = {
        "dataset": dataset,
        "config": config,
        "protocol": protocol_text,
        "protocol_name": protocol,
        "fold": common["fold"],
        "data": description,
        "seeds": seeds,
        "epochs": epochs,
        "batch_size": batch_size,
        "learning_rate": learning_rate,
        "alpha": alpha,
        "beta": beta if betas is None else betas,
        "temperature": temperature,
        "select": select,
        "mode": "table" if betas is None else "beta",
        "backend": keras.backend.backend(),
        "command": command,
        "rows": rows,
    }
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_json(out / "table.json", to_builtin(table))
    atomic_write_text(out / "table.md", format_ablation(table))
    with atomic_path(out / "ablation.png") as tmp:
        plot_ablation(table, tmp)
    _emit(on_event, event="done", out=str(out))
    return table


def _beta_dir(beta: float) -> str:
    return f"beta{beta:g}"


def format_ablation(table: dict) -> str:
    """``table.md``: the ablation as a Markdown table with its protocol and command."""
    seeds = table["seeds"]
    lines = [
        f"# Ablation on {table['dataset']} ({table['config']})",
        "",
        f"- Protocol: {table['protocol']}.",
        f"- {len(seeds)} seed(s) ({', '.join(str(s) for s in seeds)}); "
        f"{table['epochs']} epochs per phase, batch {table['batch_size']}, Adam "
        f"{table['learning_rate']:g}; model selection: "
        + ("best validation UA" if table["select"] == "best" else "last epoch")
        + f"; backend {table['backend']}.",
        "- Cells: mean ± sample standard deviation over the seeds, utterance level, "
        "test split, in %.",
    ]
    if table.get("command"):
        lines.append(f"- Command: `{table['command']}`")
    lines.append("")
    if table["mode"] == "table":
        lines += [
            "| model | WA (%) | UA (%) | macro-F1 (%) | paper WA / UA (IEMOCAP, random split) |",
            "| --- | --- | --- | --- | --- |",
        ]
        for row in table["rows"]:
            paper = row.get("paper")
            paper_text = f"{paper[0]:.1f} / {paper[1]:.1f}" if paper else "—"
            lines.append(
                f"| {row['name']} | {_pm(row['wa'])} | {_pm(row['ua'])} | "
                f"{_pm(row['macro_f1'])} | {paper_text} |"
            )
    else:
        lines += ["| model | WA (%) | UA (%) | macro-F1 (%) |", "| --- | --- | --- | --- |"]
        for row in table["rows"]:
            lines.append(
                f"| {row['name']} | {_pm(row['wa'])} | {_pm(row['ua'])} | {_pm(row['macro_f1'])} |"
            )
    lines.append("")
    lines.append("Per seed (WA / UA %):")
    lines.append("")
    lines.append("| model | " + " | ".join(f"seed {s}" for s in seeds) + " |")
    lines.append("| --- |" + " --- |" * len(seeds))
    for row in table["rows"]:
        cells = [
            f"{w * 100:.1f} / {u * 100:.1f}"
            for w, u in zip(row["wa"]["values"], row["ua"]["values"], strict=True)
        ]
        lines.append(f"| {row['name']} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def plot_ablation(table: dict, path) -> None:
    """A bar plot of the ablation (WA and UA, mean with ± std error bars)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = table["rows"]
    x = np.arange(len(rows))
    width = 0.38
    fig, ax = plt.subplots(figsize=(max(6, 1.2 * len(rows) + 2), 4))
    try:
        for offset, key, label in ((-width / 2, "wa", "WA"), (width / 2, "ua", "UA")):
            means = [r[key]["mean"] * 100 for r in rows]
            stds = [r[key]["std"] * 100 for r in rows]
            ax.bar(x + offset, means, width, yerr=stds, capsize=3, label=label)
        ax.set_xticks(x, [r["name"] for r in rows], rotation=20, ha="right")
        ax.set_ylabel("%")
        ax.set_ylim(0, 100)
        ax.set_title(
            f"{table['dataset']} ({table['config']}), {len(table['seeds'])} seed(s)", fontsize=10
        )
        ax.legend()
        ax.grid(axis="y", alpha=0.3)
        fig.tight_layout()
        fig.savefig(path, format="png", dpi=120)
    finally:
        plt.close(fig)


# ------------------------------------------------------------------------------------------
# cv
# ------------------------------------------------------------------------------------------


def cv(
    dataset: str,
    out,
    *,
    folds: Sequence[int] | None = None,
    config=None,
    variant="dkd",
    seed=0,
    command: str | None = None,
    on_event: Event | None = None,
    **train_options,
) -> dict:
    """Leave-one-group-out cross-validation (IEMOCAP: 5 sessions; EmoDB: 10 speakers).

    Each fold is a resumable run directory ``OUT/fold<k>-<group>`` trained with
    ``protocol="loso"``. Writes ``OUT/cv.json`` and ``OUT/cv.md`` (per fold and mean ± std).

    Args:
        dataset, config, variant, seed: as for :func:`train`.
        out: the parent directory of the fold runs.
        folds: the fold indices to run (default: all).
        command: the command line, recorded in ``cv.md``.
        **train_options: any other :func:`train` option (epochs, beta, ...).

    Returns:
        The ``cv.json`` dict: ``{"dataset", "config", "variant", "groups", "folds": [{"fold",
        "group", "run_dir", "teacher": {...}, "student": {...}}], "summary": {model: {metric:
        summarize dict}}}``.
    """
    from keras_dkd import corpora

    config = config or corpora.DEFAULT_CONFIG[dataset]
    groups = list(corpora.groups(dataset))
    folds = list(range(len(groups))) if folds is None else [int(f) for f in folds]
    for fold in folds:
        if not 0 <= fold < len(groups):
            raise UserError(
                f"fold {fold} is out of range: {dataset} has {len(groups)} "
                f"groups (0-{len(groups) - 1})"
            )
    if len(set(folds)) != len(folds):
        raise UserError(f"folds repeat: {folds}")
    out = Path(out)
    fold_results = []
    for fold in folds:
        run_dir = out / f"fold{fold}-{groups[fold]}"
        _emit(on_event, event="run", fold=fold, group=groups[fold], run_dir=str(run_dir))
        result = train(
            dataset,
            run_dir,
            config=config,
            protocol="loso",
            fold=fold,
            variant=variant,
            seed=seed,
            on_event=on_event,
            command=command,
            **train_options,
        )
        entry = {"fold": fold, "group": groups[fold], "run_dir": str(run_dir)}
        for name, metrics in result["metrics"].items():
            entry[name] = {k: metrics[k] for k in ("wa", "ua", "macro_f1", "n_utterances")}
        fold_results.append(entry)
    models = [m for m in ("teacher", "student") if all(m in f for f in fold_results)]
    summary = {
        model: {
            key: summarize([f[model][key] for f in fold_results])
            for key in ("wa", "ua", "macro_f1")
        }
        for model in models
    }
    report = {
        "dataset": dataset,
        "config": config,
        "variant": variant,
        "seed": seed,
        "groups": groups,
        "options": to_builtin(
            {k: v for k, v in train_options.items() if k not in ("callbacks", "verbose", "bundle")}
        ),
        "backend": keras.backend.backend(),
        "command": command,
        "folds": fold_results,
        "summary": summary,
    }
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_json(out / "cv.json", to_builtin(report))
    atomic_write_text(out / "cv.md", format_cv(report))
    _emit(on_event, event="done", out=str(out))
    return report


def format_cv(report: dict) -> str:
    """``cv.md``: per-fold and mean ± std metrics of a cross-validation."""
    models = list(report["summary"])
    unit = {"emodb": "speaker", "iemocap": "session"}.get(report["dataset"], "group")
    lines = [
        f"# Leave-one-{unit}-out cross-validation on {report['dataset']} ({report['config']})",
        "",
        f"- Variant {report['variant']}, seed {report['seed']}, backend {report['backend']}; "
        f"{len(report['folds'])} of {len(report['groups'])} folds.",
        "- Utterance level, each fold's held-out group, in %; mean ± sample standard deviation "
        "over the folds.",
    ]
    if report.get("command"):
        lines.append(f"- Command: `{report['command']}`")
    lines += [
        "",
        "| fold | held out | n | " + " | ".join(f"{m} WA | {m} UA | {m} F1" for m in models) + " |",
        "| --- | --- | --- |" + " --- | --- | --- |" * len(models),
    ]
    for fold in report["folds"]:
        n = fold[models[0]]["n_utterances"] if models else ""
        cells = []
        for m in models:
            cells += [
                f"{fold[m]['wa'] * 100:.1f}",
                f"{fold[m]['ua'] * 100:.1f}",
                f"{fold[m]['macro_f1'] * 100:.1f}",
            ]
        lines.append(f"| {fold['fold']} | {fold['group']} | {n} | " + " | ".join(cells) + " |")
    cells = []
    for m in models:
        cells += [_pm(report["summary"][m][k]) for k in ("wa", "ua", "macro_f1")]
    lines.append("| **mean ± std** | | | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def default_run_dir(dataset, protocol, fold, variant, seed) -> Path:
    """The run directory used when ``out`` is not given, e.g. ``runs/emodb-loso0-dkd-seed0``."""
    where = f"loso{fold}" if protocol == "loso" else protocol
    return paths.runs_dir() / f"{dataset}-{where}-{variant}-seed{seed}"
