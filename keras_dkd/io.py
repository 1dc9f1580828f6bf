"""Atomic file writes and safe model loading.

Every file keras-dkd writes that a user relies on (``.keras`` models, exports, ``metrics.json``,
feature caches) is written to a temporary sibling and moved into place with :func:`os.replace`,
which is atomic on POSIX file systems: a kill at any moment leaves either the old file or the new
one, never a partial file under the final name.

A kill leaves the temporary sibling behind (``.NAME.XXXXXXXX.tmp...``). The next write of the
same path removes such leftovers once they are *stale*: nothing under them was modified for
:data:`STALE_SECONDS` (an hour). A process still writing a temporary file touches it far more
often than that, so a concurrent writer's work in progress is never removed; a leftover younger
than an hour is left for a later run. :func:`remove_stale` applies the same rule to other
writers' leftovers (TFDS ``incomplete.*`` build folders, export versions).
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import tempfile
import time
from pathlib import Path

from keras_dkd.errors import UserError

STALE_SECONDS = 3600.0
"""A temporary file or folder untouched for this long is a dead process' leftover."""


def _newest_mtime(path: Path) -> float:
    """The latest modification time of ``path`` and, for a folder, anything inside it."""
    newest = path.lstat().st_mtime
    if path.is_dir() and not path.is_symlink():
        for root, dirs, files in os.walk(path):
            for name in dirs + files:
                try:
                    newest = max(newest, os.lstat(os.path.join(root, name)).st_mtime)
                except OSError:  # removed meanwhile
                    continue
    return newest


def remove_stale(folder, pattern: str, max_age: float | None = None) -> list[Path]:
    r"""Remove the entries of ``folder`` whose name fully matches ``pattern`` and that are stale.

    Stale means that neither the entry nor anything inside it was modified for ``max_age``
    seconds (default :data:`STALE_SECONDS`), so a temporary file another process is still
    writing is never touched. Errors (a missing folder, a read-only one, a race with another
    cleaner) are ignored: cleaning is best effort.

    Args:
        folder: where to look (not recursive).
        pattern: a regular expression for the names of temporary entries.
        max_age: seconds without modification after which an entry counts as stale.

    Returns:
        The paths removed.

    Example:
        >>> remove_stale("/nonexistent", r"\.x\..*\.tmp")
        []
    """
    max_age = STALE_SECONDS if max_age is None else max_age
    folder = Path(folder)
    removed = []
    try:
        entries = list(folder.iterdir())
    except OSError:
        return removed
    now = time.time()
    regex = re.compile(pattern)
    for entry in entries:
        if not regex.fullmatch(entry.name):
            continue
        try:
            if now - _newest_mtime(entry) < max_age:
                continue
            if entry.is_dir() and not entry.is_symlink():
                shutil.rmtree(entry)
            else:
                entry.unlink()
            removed.append(entry)
        except OSError:
            continue
    return removed


def _temp_pattern(name: str) -> str:
    """Names of the temporaries :func:`atomic_path` / :func:`atomic_directory` make for ``name``."""
    stem = re.escape(Path(name).stem)
    full = re.escape(name)
    return rf"\.(?:{stem}|{full})\.[A-Za-z0-9_]{{8}}\.tmp.*"


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
    remove_stale(path.parent, _temp_pattern(path.name))
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
    remove_stale(path.parent, _temp_pattern(path.name))
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


def check_model_input(model, path=None) -> None:
    """Refuse a model that does not take keras-dkd's input, one ``(None, 197, 40)`` tensor.

    Call it on every model loaded from a user's file (:func:`load_model` does): a model of
    another input shape would otherwise fail deep inside Keras with a message holding a whole
    tensor.

    Args:
        model: a ``keras.Model``.
        path: the file it came from, named in the message (optional).

    Raises:
        UserError: ``"<path>: the model takes inputs of shape ...; ..."``, one line.

    Example:
        >>> from keras_dkd.models import build_model
        >>> check_model_input(build_model(), "student.keras")
    """
    from keras_dkd.models import INPUT_SHAPE

    inputs = getattr(model, "inputs", None)
    if inputs is None:  # a subclassed model that was never built: nothing to check
        return
    shapes = [tuple(getattr(x, "shape", ())) for x in inputs]
    if len(shapes) == 1 and tuple(shapes[0][1:]) == tuple(INPUT_SHAPE):
        return
    where = f"{path}: " if path is not None else ""
    found = shapes[0] if len(shapes) == 1 else shapes
    raise UserError(
        f"{where}the model takes inputs of shape {found}, not (None, {INPUT_SHAPE[0]}, "
        f"{INPUT_SHAPE[1]}) (2-s log filter-bank segments); pass a model trained by keras-dkd"
    )


def _first_line(error: BaseException, limit: int = 160) -> str:
    text = (str(error).strip().splitlines() or [""])[0].strip()
    if isinstance(error, KeyError):  # str(KeyError) is the quoted key
        text = f"missing {text}"
    if len(text) > limit:
        text = text[: limit - 3].rstrip() + "..."
    return f"{type(error).__name__}: {text}" if text else type(error).__name__


def _check_archive(path: Path) -> None:
    """Refuse a ``.keras`` zip whose members are damaged or that lacks ``config.json``."""
    import zipfile

    damaged = (f"{path}: the model file is damaged ({{}}); copy it again or re-save it from "
               "the run that trained it")
    try:
        with zipfile.ZipFile(path) as archive:
            names = set(archive.namelist())
            if "config.json" not in names:
                raise UserError(damaged.format("no config.json in the .keras archive"))
            bad = archive.testzip()  # reads every member and checks its CRC-32
    except (zipfile.BadZipFile, zipfile.LargeZipFile, EOFError, ValueError,
            NotImplementedError) as error:
        raise UserError(damaged.format(_first_line(error))) from None
    except OSError as error:
        raise UserError(f"{path}: cannot be read ({error.strerror or error}); check that the "
                        "file is readable") from None
    if bad is not None:
        raise UserError(damaged.format(f"member {bad} fails its CRC-32 check"))


def load_model(path, safe_mode: bool = True, check_input: bool = True):
    """Load a keras-dkd ``.keras`` model, with Keras safe mode on by default.

    Safe mode refuses to deserialize Python bytecode (``Lambda`` layers and other pickled
    functions) stored in the file: loading an untrusted ``.keras`` file therefore cannot run
    arbitrary code. Pass ``safe_mode=False`` only for files you trust.

    Before Keras sees the file, the archive is checked: every member's CRC-32 (a file damaged
    in a copy) and the presence of ``config.json``. After loading, :func:`check_model_input`
    checks the input shape.

    Args:
        path: a ``.keras`` file.
        safe_mode: keep Keras safe mode on (default).
        check_input: refuse a model whose input is not ``(None, 197, 40)`` (default).

    Returns:
        The ``keras.Model``.

    Raises:
        UserError: the file is missing, not a ``.keras`` archive, damaged, refused by safe
            mode, not loadable by Keras, or takes inputs of another shape. One line naming the
            file and the fix.
    """
    import zipfile

    import keras

    import keras_dkd.layers  # noqa: F401  (registers the custom layers)
    import keras_dkd.losses  # noqa: F401  (registers the loss a model may be compiled with)
    import keras_dkd.schedules  # noqa: F401  (registers the learning-rate schedule of the
    # optimizer a training run compiles into its models)

    path = Path(path)
    if not path.is_file():
        raise UserError(f"{path}: model file not found; pass the path of a .keras file")
    if path.suffix != ".keras" or not zipfile.is_zipfile(path):
        raise UserError(f"{path}: not a .keras model archive; pass a file saved by keras-dkd")
    _check_archive(path)
    try:
        model = keras.saving.load_model(path, safe_mode=safe_mode)
    except ValueError as error:
        if "safe_mode" in str(error) or "unsafe" in str(error).lower():
            raise UserError(
                f"{path}: the model holds Python code (e.g. a Lambda layer), which safe mode "
                "refuses to load; rerun with --unsafe only if you trust the file"
            ) from None
        raise UserError(f"{path}: cannot load the model ({_first_line(error)}); pass a .keras "
                        "file saved by keras-dkd") from None
    except MemoryError:
        raise
    except Exception as error:  # Keras raises many types for a file it cannot rebuild
        raise UserError(f"{path}: cannot load the model ({_first_line(error)}); pass a .keras "
                        "file saved by keras-dkd") from None
    if check_input:
        check_model_input(model, path)
    return model
