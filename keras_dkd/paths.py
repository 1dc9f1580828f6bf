"""Where keras-dkd looks for data and writes its outputs.

Every location can be set by an environment variable, and every CLI command takes an option that
overrides it:

=========================  ===========================  ==========================================
variable                   default                      what lives there
=========================  ===========================  ==========================================
``KERAS_DKD_DATA_DIR``     ``$TFDS_DATA_DIR`` or        built TFDS datasets (``tfds build`` output)
                           ``~/tensorflow_datasets``
``KERAS_DKD_CACHE_DIR``    ``~/.cache/keras_dkd``       cached log filter-bank segments
``KERAS_DKD_RUNS_DIR``     ``./runs``                   run directories, when ``--out`` is omitted
``KERAS_DKD_EMODB_DIR``    (none)                       a local copy of EmoDB (a folder holding
                                                        ``wav/``): used instead of downloading
``KERAS_DKD_IEMOCAP_DIR``  (none)                       ``IEMOCAP_full_release`` or its parent
``KERAS_DKD_RAVDESS_DIR``  (none)                       RAVDESS' speech archive or its extracted
                                                        ``Actor_01`` ... ``Actor_24`` folders
=========================  ===========================  ==========================================

A variable naming a file (or a path under a file) raises :class:`keras_dkd.errors.UserError`
naming the variable, instead of a ``NotADirectoryError`` deep in a command.
"""

from __future__ import annotations

import os
from pathlib import Path

from keras_dkd.errors import UserError


def _env_path(name: str) -> Path | None:
    value = os.environ.get(name)
    return Path(value).expanduser() if value else None


def _env_dir(name: str) -> Path | None:
    """The folder ``$name`` names, refused if it, or a folder above it, is a file."""
    path = _env_path(name)
    if path is None:
        return None
    for part in (path, *path.parents):
        if part.exists():
            if not part.is_dir():
                what = "is a file" if part == path else f"lies under {part}, which is a file"
                raise UserError(
                    f"{name}={os.environ[name]} {what}, not a folder; set {name} to a folder "
                    "(it is created if missing) or unset it"
                )
            break
    return path


def data_dir() -> Path:
    """The TFDS data directory datasets are built into and loaded from."""
    return (
        _env_dir("KERAS_DKD_DATA_DIR")
        or _env_dir("TFDS_DATA_DIR")
        or Path("~/tensorflow_datasets").expanduser()
    )


def cache_dir() -> Path:
    """The directory holding cached feature segments."""
    return _env_dir("KERAS_DKD_CACHE_DIR") or Path("~/.cache/keras_dkd").expanduser()


def runs_dir() -> Path:
    """The default parent of run directories."""
    return _env_dir("KERAS_DKD_RUNS_DIR") or Path("runs")


def manual_dir(dataset: str) -> Path | None:
    """The manual-download directory set for ``dataset`` in the environment, if any."""
    return _env_path(f"KERAS_DKD_{dataset.upper()}_DIR")
