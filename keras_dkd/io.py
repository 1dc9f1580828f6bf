"""Atomic file writes and safe model loading.

Every file keras-dkd writes that a user relies on (``.keras`` models, exports, ``metrics.json``,
feature caches) is written to a temporary sibling and moved into place with :func:`os.replace`,
which is atomic on POSIX file systems: a kill at any moment leaves either the old file or the new
one, never a partial file under the final name.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
from pathlib import Path

from keras_dkd.errors import UserError


@contextlib.contextmanager
def atomic_path(path, suffix: str | None = None):
    """Yield a temporary path beside ``path``; move it onto ``path`` if the block succeeds.

    Works for files and directories (a directory replaces an existing one only if that one is
    empty; use :func:`atomic_directory` to replace a full one).

    Args:
        path: the final path.
        suffix: suffix of the temporary name (defaults to ``path``'s own, which some writers,
            such as ``keras.Model.save``, require).

    Example:
        >>> with atomic_path("model.keras") as tmp:   # doctest: +SKIP
        ...     model.save(tmp)
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    suffix = path.suffix if suffix is None else suffix
    fd, tmp = tempfile.mkstemp(prefix=f".{path.stem}.", suffix=f".tmp{suffix}", dir=path.parent)
    os.close(fd)
    os.unlink(tmp)
    try:
        yield Path(tmp)
        os.replace(tmp, path)
    except BaseException:
        if os.path.isdir(tmp):
            shutil.rmtree(tmp, ignore_errors=True)
        elif os.path.exists(tmp):
            os.unlink(tmp)
        raise


def atomic_write_text(path, text: str) -> Path:
    """Write ``text`` to ``path`` atomically (fsynced before the rename)."""
    path = Path(path)
    with atomic_path(path) as tmp:
        with open(tmp, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
    return path


def atomic_write_json(path, data) -> Path:
    """Write ``data`` as indented JSON to ``path`` atomically."""
    return atomic_write_text(path, json.dumps(data, indent=2, sort_keys=False) + "\n")


def save_model(model, path) -> Path:
    """Save a Keras model as ``.keras`` atomically."""
    path = Path(path)
    if path.suffix != ".keras":
        raise UserError(f"{path}: a model file must end in .keras")
    with atomic_path(path) as tmp:
        model.save(tmp)
    return path


@contextlib.contextmanager
def atomic_directory(path):
    """Yield a temporary directory beside ``path``; swap it in for ``path`` on success.

    An existing directory at ``path`` is renamed aside first and deleted only after the new one
    is in place, so an interruption leaves either the old directory or the new one.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent))
    try:
        yield tmp
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    old = None
    if path.exists():
        old = path.with_name(f".{path.name}.old-{os.getpid()}")
        os.replace(path, old)
    os.replace(tmp, path)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def load_model(path, safe_mode: bool = True):
    """Load a keras-dkd ``.keras`` model, with Keras safe mode on by default.

    Safe mode refuses to deserialize Python bytecode (``Lambda`` layers and other pickled
    functions) stored in the file: loading an untrusted ``.keras`` file therefore cannot run
    arbitrary code. Pass ``safe_mode=False`` only for files you trust.

    Args:
        path: a ``.keras`` file.
        safe_mode: keep Keras safe mode on (default).

    Returns:
        The ``keras.Model``.

    Raises:
        UserError: the file is missing, not a ``.keras`` archive, or refused by safe mode.
    """
    import zipfile

    import keras

    import keras_dkd.layers  # noqa: F401  (registers the custom layers)

    path = Path(path)
    if not path.is_file():
        raise UserError(f"{path}: model file not found; pass the path of a .keras file")
    if path.suffix != ".keras" or not zipfile.is_zipfile(path):
        raise UserError(f"{path}: not a .keras model archive; pass a file saved by keras-dkd")
    try:
        return keras.saving.load_model(path, safe_mode=safe_mode)
    except ValueError as error:
        if "safe_mode" in str(error) or "unsafe" in str(error).lower():
            raise UserError(
                f"{path}: the model holds Python code (e.g. a Lambda layer), which safe mode "
                "refuses to load; rerun with --unsafe only if you trust the file"
            ) from None
        raise UserError(f"{path}: cannot load the model ({str(error).splitlines()[0]})") from None
