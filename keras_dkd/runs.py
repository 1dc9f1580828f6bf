"""Run directories: the files of one training run, its resumable checkpoints and its logs.

A run directory is the unit of reproducibility. :func:`keras_dkd.training.train` writes::

    RUN_DIR/
      config.json            resolved options, backend, library versions, seed, data description
      teacher.keras          the CE-trained teacher (distillation variants)
      student.keras          the distilled student (or the one CE model of variants ce / cnn)
      history.csv            one row per epoch of every phase (column ``phase``)
      metrics.json           {"teacher": {...}, "student": {...}} on the test split
      splits.json            the utterance ids of the train, val and test splits (evaluate
                             refuses to score a model on utterances it was trained on)
      confusion.png          the student's confusion matrix (confusion_teacher.png: the teacher's)
      logs/<phase>/          TensorBoard event files (scalars per epoch)
      checkpoints/<phase>/   resume state: state.json + the latest and best epoch weights

Every file is written atomically (:mod:`keras_dkd.io`): a kill at any moment leaves the old file
or the new one.

Resuming. At the end of every epoch :class:`keras_dkd.callbacks.PhaseCheckpoint` saves the
whole training state (the model's weights, BatchNorm statistics, the optimizer's moments and step
counter, the distiller's warm-up weight) to ``checkpoints/<phase>/epoch-NNNN.weights.h5``, then
atomically replaces ``state.json`` (completed epochs, history rows, best epoch) that names it. The
state file is written last, so it always describes a complete weights file; a kill in between
leaves an orphan file that the next run deletes. Together with
:class:`keras_dkd.batches.EpochBatches` (whose batch order is a pure function of the seed and the
epoch number) a resumed run replays exactly the steps an uninterrupted run takes.

A damaged ``config.json`` or ``state.json`` is refused with a message (never read as "no run" and
silently replaced), and ``--overwrite`` deletes only the run's own files (:data:`RUN_FILES`),
after taking the run's lock.

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
from keras_dkd.io import atomic_write_json, atomic_write_text

__all__ = ["RunDir", "compatible", "read_json", "set_seed", "to_builtin"]

CONFIG = "config.json"
METRICS = "metrics.json"
HISTORY = "history.csv"
SPLITS = "splits.json"
LOCK = ".lock"
# What a run writes, and so all that --overwrite may delete: anything else in the folder is the
# user's and stays.
RUN_FILES = frozenset(
    {CONFIG, METRICS, HISTORY, SPLITS, "teacher.keras", "student.keras", "confusion.png",
     "confusion_teacher.png", "logs", "checkpoints"}
)

# Options that do not change what a run computes: they may differ when a run is resumed.
NON_RESULT_OPTIONS = frozenset({"out", "quiet", "verbose", "overwrite", "unsafe"})


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
    """The result-changing options that differ between two configs' ``options`` (empty: same),
    and a change of backend."""
    from keras_dkd.options import RunOptions, result_differences

    old_options = old.get("options", {})
    try:
        # An option added after the old run was made takes its default there: the behaviour
        # the code had before the option existed.
        old_options = {**RunOptions.from_dict(old_options).to_dict(), **old_options}
    except Exception:  # noqa: BLE001 - a damaged config is reported by its caller
        pass
    new_options = new.get("options", {})
    differences = result_differences(
        to_builtin(old_options), to_builtin(new_options), NON_RESULT_OPTIONS
    )
    if old.get("backend") and new.get("backend") and old["backend"] != new["backend"]:
        differences.append(f"backend {old.get('backend')} -> {new.get('backend')}")
    return differences


def read_json(path) -> object | None:
    """A JSON file's value; None when the file does not exist.

    Raises:
        UserError: the file exists but cannot be read or parsed (named, with the fix).
    """
    path = Path(path)
    if not path.exists():
        return None
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as error:
        reason = error.strerror if isinstance(error, OSError) else "not valid JSON"
        raise UserError(
            f"{path} is damaged ({reason}); restore it, or rerun with --overwrite to train the "
            "run again"
        ) from None


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
    @property
    def splits(self) -> Path:
        return self.path / SPLITS

    def exists(self) -> bool:
        return self.config.is_file()

    def read_config(self) -> dict | None:
        """``config.json`` (None: not written yet); a damaged one raises a UserError."""
        config = read_json(self.config)
        if config is not None and not (
            isinstance(config, dict) and isinstance(config.get("options"), dict)
        ):
            raise UserError(
                f"{self.config} is damaged (not a keras-dkd run config); restore it, or rerun "
                "with --overwrite to train the run again"
            )
        return config

    def read_metrics(self) -> dict | None:
        metrics = read_json(self.metrics)
        return metrics if isinstance(metrics, dict) else None

    def write_config(self, config: dict) -> None:
        atomic_write_json(self.config, to_builtin(config))

    def write_metrics(self, metrics: dict) -> None:
        atomic_write_json(self.metrics, to_builtin(metrics))

    def check_target(self) -> None:
        """Refuse a path that cannot hold this run, before anything is written: a file, or a
        non-empty folder that holds no keras-dkd run (``--overwrite`` never empties a folder
        that is not a run directory)."""
        if self.path.exists() and not self.path.is_dir():
            raise UserError(f"{self.path} exists and is not a directory; choose another --out")
        if self.path.is_dir() and not self.exists():
            foreign = sorted(p.name for p in self.path.iterdir() if p.name != LOCK)
            if foreign:
                raise UserError(
                    f"{self.path} is not empty and holds no keras-dkd run (no {CONFIG}; it holds "
                    f"{', '.join(foreign[:3])}{' ...' if len(foreign) > 3 else ''}); choose "
                    "another --out"
                )

    def prepare(self, overwrite: bool = False) -> None:
        """Create the directory; refuse a path that cannot hold a run (:meth:`check_target`).

        With ``overwrite`` the files of the run it holds are deleted first (only those: the
        run's own files and folders of :data:`RUN_FILES`). Call it while holding :meth:`lock`,
        so that a run still training elsewhere is refused before anything is deleted.
        """
        self.check_target()
        if overwrite and self.path.is_dir():
            for child in self.path.iterdir():
                if child.name not in RUN_FILES:
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
        dies, even by ``kill -9``, so a stale lock never blocks a rerun. A path that cannot
        hold a run is refused first (:meth:`check_target`), so no ``.lock`` lands in the
        user's own folders.
        """
        import fcntl

        self.check_target()
        self.path.mkdir(parents=True, exist_ok=True)
        handle = open(self.path / LOCK, "a+")  # noqa: SIM115
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
