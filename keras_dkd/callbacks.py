"""The Keras callbacks of a training phase.

- :class:`EpochSetter` tells :class:`keras_dkd.batches.EpochBatches` which epoch starts;
- :class:`AveragedWeights` puts the optimiser's moving average of the weights in the model
  between epochs (validation, checkpoints and selection see the average);
- :class:`ValidationMetrics` adds utterance-level ``val_wa``, ``val_ua``, ``val_macro_f1``;
- :class:`LearningRateLog` records the learning rate in effect;
- :class:`PhaseCheckpoint` saves the whole training state every epoch (resume) and tracks the
  best epoch (model selection);
- :class:`ScalarLogger` writes TensorBoard scalars on any backend;
- :class:`PatienceStop` ends a phase early once validation UA has stopped improving.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import keras
import numpy as np

from keras_dkd.errors import UserError
from keras_dkd.io import atomic_path, atomic_write_json
from keras_dkd.runs import read_json, to_builtin

__all__ = [
    "AveragedWeights",
    "EpochSetter",
    "LearningRateLog",
    "PatienceStop",
    "patience_exhausted",
    "PhaseCheckpoint",
    "ScalarLogger",
    "ValidationMetrics",
]


class EpochSetter(keras.callbacks.Callback):
    """Tell an :class:`EpochBatches` which epoch is starting (``on_epoch_begin``)."""

    def __init__(self, batches):
        super().__init__()
        self.batches = batches

    def on_epoch_begin(self, epoch, logs=None):
        self.batches.epoch = int(epoch)


class AveragedWeights(keras.callbacks.Callback):
    """Swap the optimiser's moving average of the weights (``use_ema=True``) into the model at
    each epoch's end, and the trained weights back in at the next epoch's start.

    Between epochs the model then holds the average: the callbacks after this one (validation,
    :class:`PhaseCheckpoint`) evaluate and save it, and the optimiser's average slots hold the
    trained weights. A checkpoint is therefore always saved swapped, so a phase resumed from one
    passes ``resumed=True`` and its first epoch swaps back before training: the resumed run
    follows the same trajectory as an uninterrupted one.

    This is :class:`keras.callbacks.SwapEMAWeights` (``swap_on_epoch=True``) with a state that
    survives a resume; like it, it swaps in place. After ``fit`` the model's weights are not
    defined (Keras' ``finalize_variable_values`` may copy either set in): load a checkpoint.

    Args:
        resumed: True when the model was restored from a checkpoint saved by this callback.
    """

    def __init__(self, resumed=False):
        super().__init__()
        self.average_in_model = bool(resumed)

    def _swap(self):
        optimizer = getattr(self.model.optimizer, "inner_optimizer", self.model.optimizer)
        if not getattr(optimizer, "use_ema", False):
            raise ValueError("AveragedWeights needs an optimizer built with use_ema=True")
        for variable, average in zip(optimizer._trainable_variables,
                                     optimizer._model_variables_moving_average, strict=True):
            trained = keras.ops.convert_to_numpy(variable)
            variable.assign(average)
            average.assign(trained)
        self.average_in_model = not self.average_in_model

    def on_epoch_begin(self, epoch, logs=None):
        if self.average_in_model:
            self._swap()

    def on_epoch_end(self, epoch, logs=None):
        if not self.average_in_model:
            self._swap()


class ScalarLogger(keras.callbacks.Callback):
    """Write each epoch's logs as TensorBoard scalars, on any Keras backend.

    ``keras.callbacks.TensorBoard`` needs the ``tensorboard`` package for ``tf.summary.scalar``,
    which TensorFlow no longer installs. This writes the same event files (scalar plugin
    metadata, one point per epoch at step = epoch) with TensorFlow's core summary writer, so
    ``tensorboard --logdir RUN_DIR/logs`` shows the curves of both phases.

    Without TensorFlow installed it writes nothing (training itself does not need it).

    Args:
        log_dir: the directory of this phase's event files.
    """

    def __init__(self, log_dir):
        super().__init__()
        self.log_dir = str(log_dir)
        self._writer = None

    def on_train_begin(self, logs=None):
        if importlib.util.find_spec("tensorflow") is None:
            return  # no TensorFlow (e.g. a GPU machine running torch or JAX): no event files
        import tensorflow as tf

        Path(self.log_dir).mkdir(parents=True, exist_ok=True)
        self._writer = tf.summary.create_file_writer(self.log_dir)

    def on_epoch_end(self, epoch, logs=None):
        if self._writer is None:
            return
        import tensorflow as tf
        from tensorflow.core.framework import summary_pb2

        metadata = summary_pb2.SummaryMetadata(
            plugin_data=summary_pb2.SummaryMetadata.PluginData(plugin_name="scalars")
        )
        with self._writer.as_default():
            for name, value in (logs or {}).items():
                try:
                    number = float(np.asarray(value))
                except (TypeError, ValueError):
                    continue
                tf.summary.write(
                    f"epoch_{name}",
                    tf.constant(number, tf.float32),
                    step=int(epoch),
                    metadata=metadata,
                )
        self._writer.flush()

    def on_train_end(self, logs=None):
        if self._writer is not None:
            self._writer.close()
            self._writer = None


class PhaseCheckpoint(keras.callbacks.Callback):
    """Per-epoch resumable checkpoints of one training phase, plus best-epoch selection.

    At each epoch end: save the full training state (model + optimizer) to a new weights file,
    atomically rewrite ``state.json`` naming it, delete the weights no longer referenced, and
    hand the phase's history rows to ``on_history``. :meth:`restore` (before ``fit``) loads
    the latest state and returns the epoch to resume from.

    Args:
        directory: ``RUN_DIR/checkpoints/<phase>``.
        phase: the phase name written in history rows.
        monitor: the log key used to pick the best epoch (higher is better); epochs without it
            never become best.
        on_history: called with the phase's rows after every epoch.
    """

    STATE = "state.json"

    def __init__(self, directory, phase, monitor="val_ua", on_history=None):
        super().__init__()
        self.directory = Path(directory)
        self.phase = phase
        self.monitor = monitor
        self.on_history = on_history
        self.state = self._read() or {
            "phase": phase,
            "epochs_completed": 0,
            "latest": None,
            "best": None,
            "history": [],
            "complete": False,
        }

    # ------------------------------------------------------------------ state file
    def _read(self):
        """The state file's dict, None when there is none; a damaged one is refused (its
        checkpoint is kept for the user to repair, never silently replaced)."""
        path = self.directory / self.STATE
        state = read_json(path)
        if state is None:
            return None
        fix = (f"restore it, or rerun with --overwrite to train the run again (its {self.phase} "
               "checkpoint is then discarded)")
        checks = {
            "epochs_completed": lambda v: isinstance(v, int) and not isinstance(v, bool)
            and v >= 0,
            "latest": lambda v: v is None or (isinstance(v, str) and "/" not in v),
            "best": lambda v: v is None or (isinstance(v, dict) and {"epoch", "score", "weights"}
                                            <= set(v)),
            "history": lambda v: isinstance(v, list) and all(isinstance(r, dict) and "epoch" in r
                                                             for r in v),
            "complete": lambda v: isinstance(v, bool),
        }
        if not isinstance(state, dict):
            raise UserError(f"{path} is damaged (not a JSON object); {fix}")
        for key, ok in checks.items():
            if key not in state or not ok(state[key]):
                raise UserError(f"{path} is damaged ({key!r} is missing or has the wrong type); "
                                f"{fix}")
        return state

    def _write(self):
        atomic_write_json(self.directory / self.STATE, to_builtin(self.state))
        self._clean()

    def _referenced(self):
        names = set()
        if self.state.get("latest"):
            names.add(self.state["latest"])
        if self.state.get("best"):
            names.add(self.state["best"]["weights"])
        return names

    def _clean(self):
        """Delete weight files the state does not reference (orphans of a kill)."""
        if not self.directory.is_dir():
            return
        keep = self._referenced()
        for path in self.directory.iterdir():
            if path.name == self.STATE or path.name in keep:
                continue
            if path.name.endswith(".weights.h5") or path.name.startswith("."):
                path.unlink(missing_ok=True)

    @property
    def complete(self) -> bool:
        return bool(self.state.get("complete"))

    @property
    def epochs_completed(self) -> int:
        return int(self.state.get("epochs_completed", 0))

    @property
    def history(self) -> list[dict]:
        return list(self.state.get("history", []))

    @property
    def best_epoch(self) -> int | None:
        best = self.state.get("best")
        return int(best["epoch"]) if best else None

    @property
    def best_score(self) -> float | None:
        best = self.state.get("best")
        return float(best["score"]) if best else None

    # ------------------------------------------------------------------ restore / finish
    def restore(self, model) -> int:
        """Load the latest saved state into ``model`` (compiled); return the epoch to start at."""
        self._clean()
        latest = self.state.get("latest")
        if not latest:
            return 0
        path = self.directory / latest
        if model.optimizer is not None and not model.optimizer.built:
            model.optimizer.build(model.trainable_variables)
        try:
            model.load_weights(path)
        except Exception as error:  # noqa: BLE001  (h5py/Keras raise many kinds)
            raise UserError(
                f"{path}: cannot restore the {self.phase} checkpoint ({error}); rerun with "
                "--overwrite to start the run again"
            ) from None
        return self.epochs_completed

    def load_best(self, model) -> int | None:
        """Load the best epoch's weights into ``model``; return that epoch (None: no best)."""
        best = self.state.get("best")
        if not best:
            return None
        model.load_weights(self.directory / best["weights"])
        return int(best["epoch"])

    def mark_complete(self, extra: dict | None = None):
        """Record the phase as finished and delete its weight files (the history stays)."""
        self.state["complete"] = True
        self.state["latest"] = None
        if self.state.get("best"):
            self.state["best"] = {**self.state["best"], "weights": None}
        if extra:
            self.state.update(to_builtin(extra))
        atomic_write_json(self.directory / self.STATE, to_builtin(self.state))
        self._clean()

    # ------------------------------------------------------------------ callback
    def on_epoch_end(self, epoch, logs=None):
        logs = dict(logs or {})
        number = int(epoch) + 1
        name = f"epoch-{number:04d}.weights.h5"
        self.directory.mkdir(parents=True, exist_ok=True)
        with atomic_path(self.directory / name, suffix=".weights.h5") as tmp:
            self.model.save_weights(tmp)
        row = {"phase": self.phase, "epoch": number}
        for key, value in logs.items():
            try:
                row[key] = float(np.asarray(value))
            except (TypeError, ValueError):
                continue
        history = [r for r in self.state.get("history", []) if int(r["epoch"]) < number]
        history.append(row)
        score = row.get(self.monitor)
        best = self.state.get("best")
        if score is not None and np.isfinite(score) and (best is None or score >= best["score"]):
            best = {"epoch": number, "score": score, "weights": name}
        self.state.update(
            {"epochs_completed": number, "latest": name, "best": best, "history": history}
        )
        self._write()
        if self.on_history is not None:
            self.on_history(history)


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

        if logs is None or self.utterance_set is None or self.utterance_set.n_utterances == 0:
            return
        result = evaluate_model(
            self.target, self.utterance_set, self.class_names, batch_size=self.batch_size
        )
        logs["val_wa"] = float(result["wa"])
        logs["val_ua"] = float(result["ua"])
        logs["val_macro_f1"] = float(result["macro_f1"])


class LearningRateLog(keras.callbacks.Callback):
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


def patience_exhausted(checkpoint: PhaseCheckpoint, patience: int) -> bool:
    """True when ``patience`` (> 0) epochs have passed since the checkpoint's best epoch."""
    best = checkpoint.best_epoch
    return bool(patience) and best is not None and (
        checkpoint.epochs_completed - best >= patience)


class PatienceStop(keras.callbacks.Callback):
    """Stop training when ``should_stop()`` says so at an epoch's end (after the checkpoint).

    The decision is a function of the phase's checkpoint state (the epochs completed and the best
    epoch), not of state kept in this callback, so a resumed phase stops where an uninterrupted
    one does.

    Args:
        should_stop: a function of no arguments returning True to stop.
    """

    def __init__(self, should_stop):
        super().__init__()
        self.should_stop = should_stop

    def on_epoch_end(self, epoch, logs=None):
        if self.should_stop():
            self.model.stop_training = True
