"""Run directories: the files of one training run, its resumable checkpoints and its logs.

A run directory is the unit of reproducibility. :func:`keras_dkd.experiments.train` writes::

    RUN_DIR/
      config.json            resolved options, backend, library versions, seed, data description
      teacher.keras          the CE-trained teacher (distillation variants)
      student.keras          the distilled student (or the one CE model of variants ce / cnn)
      history.csv            one row per epoch of every phase (column ``phase``)
      metrics.json           {"teacher": {...}, "student": {...}} on the test split
      confusion.png          the student's confusion matrix (confusion_teacher.png: the teacher's)
      logs/<phase>/          TensorBoard event files (scalars per epoch)
      checkpoints/<phase>/   resume state: state.json + the latest and best epoch weights

Every file is written atomically (:mod:`keras_dkd.io`): a kill at any moment leaves the old file
or the new one.

Resuming. At the end of every epoch :class:`PhaseCheckpoint` saves the whole training state (the
model's weights, BatchNorm statistics, the optimizer's moments and step counter, the distiller's
warm-up weight) to ``checkpoints/<phase>/epoch-NNNN.weights.h5``, then atomically replaces
``state.json`` (completed epochs, history rows, best epoch) that names it. The state file is
written last, so it always describes a complete weights file; a kill in between leaves an orphan
file that the next run deletes. Together with :class:`EpochBatches` (whose batch order is a pure
function of the seed and the epoch number) a resumed run replays exactly the steps an
uninterrupted run takes.

Example:
    >>> run = RunDir("runs/demo")                     # doctest: +SKIP
    >>> with run.lock():                               # doctest: +SKIP
    ...     run.write_config(config)
"""

from __future__ import annotations

import contextlib
import csv
import io
import json
import os
import shutil
from pathlib import Path

import keras
import numpy as np

from keras_dkd.errors import UserError
from keras_dkd.io import atomic_path, atomic_write_json, atomic_write_text

__all__ = [
    "RunDir",
    "PhaseCheckpoint",
    "EpochBatches",
    "EpochSetter",
    "ScalarLogger",
    "compatible",
    "set_seed",
    "to_builtin",
]

CONFIG = "config.json"
METRICS = "metrics.json"
HISTORY = "history.csv"

# Options that do not change what a run computes: they may differ when a run is resumed.
NON_RESULT_OPTIONS = frozenset(
    {
        "out",
        "quiet",
        "verbose",
        "data_dir",
        "manual_dir",
        "cache_dir",
        "teacher",
        "overwrite",
        "unsafe",
    }
)


def set_seed(seed: int) -> None:
    """Seed Python, NumPy and the Keras backend (``keras.utils.set_random_seed``)."""
    keras.utils.set_random_seed(int(seed))


def to_builtin(value):
    """``value`` with NumPy scalars/arrays and paths turned into JSON-serialisable built-ins."""
    if isinstance(value, dict):
        return {str(k): to_builtin(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [to_builtin(v) for v in value]
    if isinstance(value, np.ndarray):
        return to_builtin(value.tolist())
    if isinstance(value, np.bool_):
        return bool(value)
    if isinstance(value, np.integer):
        return int(value)
    if isinstance(value, np.floating):
        return float(value)
    if isinstance(value, os.PathLike):
        return str(value)
    return value


def compatible(old: dict, new: dict) -> list[str]:
    """The result-changing options that differ between two configs' ``options`` (empty: same)."""
    old_options = old.get("options", {})
    new_options = new.get("options", {})
    keys = sorted((set(old_options) | set(new_options)) - NON_RESULT_OPTIONS)
    return [
        f"{key} {old_options.get(key)!r} -> {new_options.get(key)!r}"
        for key in keys
        if to_builtin(old_options.get(key)) != to_builtin(new_options.get(key))
    ] + (
        [f"backend {old.get('backend')} -> {new.get('backend')}"]
        if old.get("backend") and new.get("backend") and old["backend"] != new["backend"]
        else []
    )


class RunDir:
    """The paths of one run directory, with locking and atomic writers.

    Args:
        path: the run directory (created on first write).
    """

    def __init__(self, path):
        self.path = Path(path)

    # ------------------------------------------------------------------ paths
    @property
    def config(self) -> Path:
        return self.path / CONFIG

    @property
    def metrics(self) -> Path:
        return self.path / METRICS

    @property
    def history(self) -> Path:
        return self.path / HISTORY

    def model(self, phase: str) -> Path:
        """``teacher.keras`` or ``student.keras``."""
        return self.path / f"{phase}.keras"

    def confusion(self, phase: str) -> Path:
        return self.path / ("confusion.png" if phase == "student" else f"confusion_{phase}.png")

    def logs(self, phase: str) -> Path:
        return self.path / "logs" / phase

    def checkpoints(self, phase: str) -> Path:
        return self.path / "checkpoints" / phase

    # ------------------------------------------------------------------ state
    def exists(self) -> bool:
        return self.config.is_file()

    def read_config(self) -> dict | None:
        return _read_json(self.config)

    def read_metrics(self) -> dict | None:
        return _read_json(self.metrics)

    def write_config(self, config: dict) -> None:
        atomic_write_json(self.config, to_builtin(config))

    def write_metrics(self, metrics: dict) -> None:
        atomic_write_json(self.metrics, to_builtin(metrics))

    def prepare(self, overwrite: bool = False) -> None:
        """Create the directory; refuse a non-empty folder that is not a run directory.

        With ``overwrite`` an existing run directory is emptied first.
        """
        if self.path.exists() and not self.path.is_dir():
            raise UserError(f"{self.path} exists and is not a directory; choose another --out")
        if self.path.is_dir() and any(self.path.iterdir()) and not self.exists():
            leftovers = {p.name for p in self.path.iterdir()}
            if not leftovers <= {".lock", "checkpoints", "logs"}:
                raise UserError(
                    f"{self.path} is not empty and holds no keras-dkd run (no {CONFIG}); "
                    "choose another --out"
                )
        if overwrite and self.path.is_dir():
            for child in self.path.iterdir():
                if child.name == ".lock":
                    continue
                if child.is_dir() and not child.is_symlink():
                    shutil.rmtree(child)
                else:
                    child.unlink()
        self.path.mkdir(parents=True, exist_ok=True)

    @contextlib.contextmanager
    def lock(self):
        """Hold an exclusive lock on the run directory (another process gets a UserError).

        The lock is an ``flock`` on ``RUN_DIR/.lock``: the kernel releases it when the process
        dies, even by ``kill -9``, so a stale lock never blocks a rerun.
        """
        import fcntl

        self.path.mkdir(parents=True, exist_ok=True)
        handle = open(self.path / ".lock", "a+")  # noqa: SIM115
        try:
            try:
                fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                raise UserError(
                    f"{self.path} is in use by another keras-dkd process; wait for it to "
                    "finish or choose another --out"
                ) from None
            yield self
        finally:
            handle.close()

    def write_history(self, rows: list[dict]) -> None:
        """Write ``history.csv`` (all rows of all phases) atomically."""
        columns = ["phase", "epoch"]
        for row in rows:
            for key in row:
                if key not in columns:
                    columns.append(key)
        buffer = io.StringIO()
        writer = csv.DictWriter(buffer, fieldnames=columns, restval="", lineterminator="\n")
        writer.writeheader()
        for row in rows:
            writer.writerow({k: _csv_value(v) for k, v in row.items()})
        atomic_write_text(self.history, buffer.getvalue())


def _csv_value(value):
    if isinstance(value, float):
        return repr(value)
    return value


def _read_json(path: Path):
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


# ------------------------------------------------------------------------------------------
# Training-time helpers (Keras callbacks and the deterministic batch source)
# ------------------------------------------------------------------------------------------


class EpochBatches(keras.utils.PyDataset):
    """Training batches whose order depends only on ``(seed, epoch)``.

    ``fit`` must be called with ``shuffle=False`` and an :class:`EpochSetter` callback that sets
    :attr:`epoch` at the start of each epoch. Batch ``i`` of epoch ``e`` is then the same in
    every process, which makes a resumed run replay an uninterrupted one (``tf.data``'s
    ``shuffle(reshuffle_each_iteration=True)`` would instead restart its sequence of orders in
    the new process).

    Every batch has ``batch_size`` segments: the last batch of an epoch is filled up with the
    first segments of the epoch's order (so a few segments are seen twice in that epoch, a
    different few each epoch). One batch shape means one compiled train step on XLA backends
    (TensorFlow's jit, JAX) instead of a second compilation for a smaller last batch.

    Args:
        features: float32 ``(n, 197, 40)`` segments.
        labels: int ``(n,)`` class ids.
        batch_size: segments per batch.
        seed: the shuffling seed (an int or a sequence of ints).

    Example:
        >>> batches = EpochBatches(x, y, batch_size=32, seed=[0, 1])       # doctest: +SKIP
        >>> model.fit(batches, epochs=5, shuffle=False,
        ...           callbacks=[EpochSetter(batches)])                   # doctest: +SKIP
    """

    def __init__(self, features, labels, batch_size, seed):
        super().__init__()
        if len(features) != len(labels):
            raise UserError("features and labels differ in length")
        if len(features) == 0:
            raise UserError("the training split holds no segments; use more utterances")
        self.features = np.asarray(features, np.float32)
        self.labels = np.asarray(labels, np.int32)
        self.batch_size = int(batch_size)
        self.seed = [int(s) for s in np.atleast_1d(seed)]
        self.epoch = 0
        self._order_epoch = None
        self._order = None

    def __len__(self):
        return -(-len(self.features) // self.batch_size)

    def order(self, epoch: int) -> np.ndarray:
        """The permutation of the segments used in ``epoch``."""
        if self._order_epoch != epoch:
            rng = np.random.default_rng([*self.seed, int(epoch)])
            self._order = rng.permutation(len(self.features))
            self._order_epoch = epoch
        return self._order

    def __getitem__(self, index):
        if index < 0 or index >= len(self):
            raise IndexError(index)
        start = index * self.batch_size
        positions = np.arange(start, start + self.batch_size)
        chosen = np.take(self.order(self.epoch), positions, mode="wrap")
        return self.features[chosen], self.labels[chosen]


class EpochSetter(keras.callbacks.Callback):
    """Tell an :class:`EpochBatches` which epoch is starting (``on_epoch_begin``)."""

    def __init__(self, batches):
        super().__init__()
        self.batches = batches

    def on_epoch_begin(self, epoch, logs=None):
        self.batches.epoch = int(epoch)


class ScalarLogger(keras.callbacks.Callback):
    """Write each epoch's logs as TensorBoard scalars, on any Keras backend.

    ``keras.callbacks.TensorBoard`` needs the ``tensorboard`` package for ``tf.summary.scalar``,
    which TensorFlow no longer installs. This writes the same event files (scalar plugin
    metadata, one point per epoch at step = epoch) with TensorFlow's core summary writer, so
    ``tensorboard --logdir RUN_DIR/logs`` shows the curves of both phases.

    Args:
        log_dir: the directory of this phase's event files.
    """

    def __init__(self, log_dir):
        super().__init__()
        self.log_dir = str(log_dir)
        self._writer = None

    def on_train_begin(self, logs=None):
        import tensorflow as tf

        Path(self.log_dir).mkdir(parents=True, exist_ok=True)
        self._writer = tf.summary.create_file_writer(self.log_dir)

    def on_epoch_end(self, epoch, logs=None):
        import tensorflow as tf
        from tensorflow.core.framework import summary_pb2

        if self._writer is None:
            return
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
        return _read_json(self.directory / self.STATE)

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
