"""Training one run: a CE teacher, then a student, in a resumable run directory.

The recipe (DKDFMH, Zhao et al., ICASSP 2023), as :class:`keras_dkd.options.Recipe` describes it:

- the **teacher** (the head-fusion CNN, ``build_model("cnn_mha")``) is trained with
  cross-entropy; the **student** (the same network) is then trained with cross-entropy plus the
  distillation term of ``variant`` (``dkd``, ``kd``, ``tckd``, ``nckd``) against the frozen
  teacher, through :class:`keras_dkd.distiller.Distiller`;
- variants ``ce`` (the head-fusion CNN) and ``cnn`` (the CNN without attention) train one model
  with cross-entropy and no teacher; it is saved as ``student.keras``;
- Adam with the paper's "decay 1e-6" read as Keras 2's legacy ``decay`` argument,
  ``lr / (1 + 1e-6 · step)``;
- **model selection uses the validation split only**: with ``select="best"`` each phase keeps
  the weights of its epoch with the highest utterance-level validation UA (the later epoch on
  ties; the last epoch when there is no validation split). The test split is evaluated once, at
  the end.

Determinism: ``keras.utils.set_random_seed`` is called with a per-phase seed before each model
is built, data splits use the split seed, and training batches come from
:class:`keras_dkd.batches.EpochBatches`, whose order depends only on ``(seed, phase, epoch)``. A
run interrupted at any moment and resumed (the same call again) finishes with the same weights as
an uninterrupted run on the same backend and machine (see :mod:`keras_dkd.runs`).

Example:
    >>> from keras_dkd.options import RunOptions
    >>> from keras_dkd.training import train
    >>> options = RunOptions.from_flat(dataset="emodb", protocol="loso", fold=0, epochs=20)
    >>> result = train(options, "runs/demo")                             # doctest: +SKIP
    >>> result["metrics"]["student"]["ua"]                               # doctest: +SKIP
    0.61
"""

from __future__ import annotations

import dataclasses
import datetime
import hashlib
from collections.abc import Callable, Sequence
from pathlib import Path

import keras
import numpy as np

from keras_dkd import paths
from keras_dkd.allocator import allocator_setting
from keras_dkd.distribution import data_parallel
from keras_dkd.errors import UserError
from keras_dkd.io import atomic_write_json, save_model
from keras_dkd.options import RunOptions, architecture
from keras_dkd.runs import RunDir, compatible, to_builtin

__all__ = ["Progress", "default_run_dir", "phase_seed", "train"]

# Seed offsets per phase: the teacher and the student start from different initial weights, and
# the student of every ablation row starts from the same ones for a given seed.
PHASE_SEEDS = {"teacher": 0, "student": 1}


@dataclasses.dataclass
class Progress:
    """How a long call reports progress: Keras ``verbose``, extra callbacks, an event hook.

    Args:
        verbose: Keras ``fit`` verbosity (0 silent, 1 progress bar, 2 one line per epoch).
        callbacks: extra Keras callbacks for every training phase.
        on_event: called with a dict at each stage (``event``: ``data``, ``phase``,
            ``evaluated``, ``run``, ``done``).
    """

    verbose: int = 0
    callbacks: Sequence = ()
    on_event: Callable[[dict], None] | None = None

    def emit(self, **event) -> None:
        if self.on_event is not None:
            self.on_event(event)


def phase_seed(seed: int, phase: str) -> int:
    """The seed set before a phase's model is built (fits NumPy's 32-bit seeds)."""
    return (int(seed) * 1000 + PHASE_SEEDS[phase]) % (2**32 - 1)


def default_run_dir(options: RunOptions) -> Path:
    """The run directory used when none is given, e.g. ``runs/emodb-loso0-dkd-seed0``."""
    data = options.data
    where = f"loso{data.fold}" if data.protocol == "loso" else data.protocol
    return paths.runs_dir() / f"{data.dataset}-{where}-{options.recipe.variant}-seed{options.seed}"


def train(
    options: RunOptions,
    out=None,
    *,
    overwrite: bool = False,
    safe_mode: bool = True,
    bundle=None,
    progress: Progress | None = None,
    command: str | None = None,
) -> dict:
    """Train the teacher (cross-entropy), then the student (``options.recipe.variant``).

    Rerunning the same call resumes an interrupted run from its last completed epoch (a finished
    phase is never retrained) and returns a finished run's results without training. A run
    directory holding a run with other options, or damaged, is refused unless ``overwrite``.

    Args:
        options: the :class:`keras_dkd.options.RunOptions` of the run.
        out: the run directory (default :func:`default_run_dir`).
        overwrite: replace the run a run directory holds (only its own files are deleted).
        safe_mode: load ``options.teacher`` with Keras safe mode (refuses Lambda layers).
        bundle: an already prepared :class:`keras_dkd.data.DataBundle` for ``options.data``
            and ``options.seed`` (skips data loading).
        progress: :class:`Progress` (default: silent).
        command: the command line that started the run, recorded in ``config.json``.

    Returns:
        ``{"run_dir", "status" ("trained", "resumed" or "complete"), "config", "metrics"
        ({"teacher": ..., "student": ...}), "phases" ({phase: {...}})}``.

    Raises:
        UserError: a run directory in use, damaged or holding another run; data problems;
            ``options.devices`` more than the backend sees, or above 1 on PyTorch.
    """
    if options.teacher is not None and not Path(options.teacher).is_file():
        raise UserError(f"{options.teacher}: teacher model not found; pass a .keras file")
    run = RunDir(out if out is not None else default_run_dir(options))
    run.check_target()
    # (the devices are checked first; the models and optimizers are built inside)
    with data_parallel(options.devices), run.lock():
        run.prepare(overwrite=overwrite)
        return _Training(run, options, safe_mode, progress or Progress(), command).run(bundle)


class _Training:
    """One run's training, holding what its steps share."""

    def __init__(self, run: RunDir, options: RunOptions, safe_mode, progress, command):
        self.run_dir, self.options = run, options
        self.safe_mode, self.progress, self.command = safe_mode, progress, command
        self.teacher_sha256 = _sha256(options.teacher) if options.teacher else None
        self.status = "trained"
        self.phases: dict = {}
        self.models: dict = {}
        self.history_rows: list[dict] = []

    # -------------------------------------------------------------- the whole run
    def run(self, bundle) -> dict:
        run, options = self.run_dir, self.options
        old = self._previous_config()
        if old is not None and (finished := run.read_metrics()) is not None:
            result = {"run_dir": str(run.path), "status": "complete", "config": old,
                      "metrics": finished, "phases": _phase_summaries(run, options)}
            self.progress.emit(event="done", **{k: v for k, v in result.items() if k != "config"})
            return result
        if bundle is None:
            from keras_dkd import data

            bundle = data.prepare(options.data, options.seed)
        description = to_builtin(bundle.describe())
        protocol = _protocol_text(description, options)
        self.progress.emit(event="data", description=description, protocol=protocol)
        config = self._config(old, description, protocol)
        run.write_config(config)
        atomic_write_json(run.splits, bundle.utterance_ids())

        if options.recipe.distills:
            self._teacher(bundle)
        self._phase("student", bundle, mode=options.recipe.student_mode,
                    teacher=self.models.get("teacher"))
        run.write_history(self.history_rows)
        metrics = self._evaluate(bundle)
        result = {"run_dir": str(run.path), "status": self.status, "config": config,
                  "metrics": metrics, "phases": self.phases}
        self.progress.emit(event="done", **{k: v for k, v in result.items() if k != "config"})
        return result

    def _previous_config(self) -> dict | None:
        """The run directory's config, checked against these options (None: a new run)."""
        run = self.run_dir
        old = run.read_config()
        if old is None:
            return None
        try:
            RunOptions.from_dict(old["options"])
        except UserError as error:
            raise UserError(f"{run.config} is damaged ({error}); restore it, or pass --overwrite "
                            "to train the run again") from None
        new = {"backend": keras.backend.backend(), "options": self.options.to_dict()}
        differences = compatible(old, new)
        if old.get("teacher_sha256") != self.teacher_sha256 and self.options.teacher:
            differences.append("teacher (another file)")
        if differences:
            raise UserError(
                f"{run.path} holds a run with other options ({'; '.join(differences)}); pass "
                "--overwrite to replace it, or choose another --out"
            )
        return old

    def _config(self, old, description, protocol) -> dict:
        from keras_dkd import info

        options, recipe = self.options, self.options.recipe
        versions = info.library_versions()
        now = datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds")
        return {
            "keras_dkd": versions.get("keras-dkd"),
            "created": (old or {}).get("created", now),
            "updated": now,
            "command": self.command,
            "backend": keras.backend.backend(),
            "versions": versions,
            "allocator": allocator_setting(),
            "machine": info.machine(),
            "source": info.source(),
            "seed": options.seed,
            "phase_seeds": {p: phase_seed(options.seed, p) for p in PHASE_SEEDS},
            "options": options.to_dict(),
            "teacher_sha256": self.teacher_sha256,
            "run_dir": str(self.run_dir.path),
            "protocol": protocol,
            "data": description,
            "recipe": {
                "optimizer": _optimizer_text(recipe),
                "model_selection": "epoch with the best validation UA (utterance level)"
                if recipe.select == "best" else "last epoch",
                "teacher": "cnn_mha trained with cross-entropy" if recipe.distills else None,
                "student": {"cnn": "cnn (no attention) trained with cross-entropy",
                            "ce": "cnn_mha trained with cross-entropy"}.get(
                    recipe.variant, f"cnn_mha distilled with {recipe.variant} from the teacher"
                    + (", starting from the teacher's trained weights"
                       if recipe.student_init == "teacher" else "")),
            },
        }

    # -------------------------------------------------------------- phases
    def _teacher(self, bundle) -> None:
        run, source = self.run_dir, self.options.teacher
        if source is None:
            self._phase("teacher", bundle, mode="ce", teacher=None)
            return
        model = _load_teacher(source, bundle.class_names, self.safe_mode)
        save_model(model, run.model("teacher"))
        self.models["teacher"] = model
        self._phase_done("teacher", {"source": str(source), "path": str(run.model("teacher")),
                                     "epochs": 0, "reused": True})

    def _phase_done(self, name, info) -> None:
        self.phases[name] = info
        self.progress.emit(event="phase", phase=name, status="done", **info)

    def _phase(self, name, bundle, *, mode, teacher) -> None:
        from keras_dkd.phase import Phase

        variant = "cnn_mha" if name == "teacher" else architecture(self.options.recipe.variant)
        phase = Phase(self.run_dir, name, self.options, bundle,
                      previous_rows=self.history_rows, progress=self.progress)
        model, info = phase.train(variant, mode=mode, teacher=teacher)
        self.models[name] = model
        self.history_rows.extend(info.pop("rows"))
        if info.get("resumed_from") or info.get("skipped"):
            self.status = "resumed"
        self._phase_done(name, info)

    # -------------------------------------------------------------- test
    def _evaluate(self, bundle) -> dict:
        from keras_dkd.metrics import evaluate_model, plot_confusion

        data = self.options.data
        metrics = {}
        for name in ("teacher", "student"):
            if name not in self.models:
                continue
            result = to_builtin(evaluate_model(self.models[name], bundle.test,
                                               bundle.class_names))
            metrics[name] = result
            title = (f"{name} - {data.dataset} {data.config} - WA {result['wa']:.1%} "
                     f"UA {result['ua']:.1%}")
            plot_confusion(result["confusion"], result["classes"], self.run_dir.confusion(name),
                           title=title)
            self.progress.emit(event="evaluated", phase=name, metrics=result)
        self.run_dir.write_metrics(metrics)
        return metrics


def _optimizer_text(recipe) -> str:
    """The recipe's optimiser and learning-rate schedule in words (``config.json``)."""
    rate = f"{recipe.learning_rate:g}"
    schedule = {
        "constant": f"learning rate {rate}",
        "inverse_time": f"learning rate {rate} / (1 + {recipe.lr_decay:g} * step)",
        "step": f"learning rate {rate} x {recipe.step_factor:g} every {recipe.step_epochs} epochs",
        "cosine": f"learning rate {rate}, cosine to 0 over {recipe.epochs} epochs",
    }[recipe.schedule]
    text = f"{'AdamW' if recipe.optimizer == 'adamw' else 'Adam'}, {schedule}"
    if recipe.lr_warmup_epochs:
        text += f" after {recipe.lr_warmup_epochs} epochs of linear warm-up"
    if recipe.weight_decay:
        text += f", weight decay {recipe.weight_decay:g}"
    if recipe.label_smoothing:
        text += f"; labels smoothed by {recipe.label_smoothing:g}"
    if recipe.ema:
        text += f"; weights averaged (EMA, momentum {recipe.ema:g})"
    return text


def _protocol_text(description: dict, options: RunOptions) -> str:
    from keras_dkd.reports import protocol_description

    return protocol_description(description, options.data.protocol, options.data.fold)


def _sha256(path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _phase_summaries(run: RunDir, options: RunOptions) -> dict:
    from keras_dkd.callbacks import PhaseCheckpoint

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
        elif name == "teacher" and run.model(name).is_file() and options.recipe.distills:
            summaries[name] = {"path": str(run.model(name)), "epochs": 0, "reused": True,
                               "source": options.teacher}
    return summaries


def _load_teacher(path, class_names, safe_mode):
    from keras_dkd.io import load_model
    from keras_dkd.models import get_class_names

    model = load_model(path, safe_mode=safe_mode)  # refuses damaged files and other input shapes
    names = list(get_class_names(model))
    if names != list(class_names):
        raise UserError(
            f"{path}: the teacher predicts {names} but the dataset has {list(class_names)}; "
            "use a teacher trained on the same dataset config"
        )
    return model


def train_arrays(bundle) -> tuple[np.ndarray, np.ndarray]:
    """The training segments and their labels of a DataBundle, as NumPy arrays."""
    return (np.asarray(bundle.train_set.segments, np.float32),
            np.asarray(bundle.train_set.segment_labels, np.int32))
