"""User-facing errors.

Every problem a user can fix themselves (a missing manual dir, a bad audio file, a wrong option)
is raised as a :class:`UserError` whose message is one line naming the problem and the fix. The CLI
turns it into ``Error: <message>`` and a non-zero exit, without a traceback.
"""


class UserError(Exception):
    """A problem the user can fix; ``str(error)`` is a one-line message naming the fix."""

    def __init__(self, message: str):
        super().__init__(" ".join(str(message).split()))


class AudioError(UserError):
    """An audio file that cannot be read or used. The message names the file."""

    def __init__(self, path, problem: str):
        self.path = str(path)
        self.problem = problem
        super().__init__(f"{self.path}: {problem}")


class DatasetError(UserError):
    """A corpus that cannot be found, built or parsed."""


# --------------------------------------------------------------------------------------------
# Storage problems: a full disk, a read-only or forbidden folder


_STORAGE_PROBLEMS = {
    # errno: (regex matched in messages that carry no errno, problem, fix)
    28: (r"No space left on device|Errno 28\b|\d+ requested and \d+ written",
         "the disk is full (no space left on device)",
         "free some space there or choose a folder on another disk, then rerun the same command"),
    122: (r"Disk quota exceeded|Errno 122\b", "the disk quota is exceeded",
          "free some space there or choose a folder on another disk, then rerun the same command"),
    30: (r"Read-only file system|Errno 30\b", "the file system is read-only",
         "choose a folder you can write to, then rerun the same command"),
    13: (r"Permission denied|Errno 13\b", "permission denied",
         "choose a folder you can write to, or fix its permissions, then rerun the same command"),
    20: (r"Not a directory|Errno 20\b", "a file stands where a folder is needed",
         "move that file away or choose another folder, then rerun the same command"),
}

_PATH_PATTERNS = (
    r"filename = '([^']+)'",  # h5py
    r"'(/[^']+)'",            # a quoted absolute path
    r"(?<![\w.])(/[^\s'\":;,]+)",  # a bare absolute path
)


def _chain(error: BaseException):
    seen = set()
    while error is not None and id(error) not in seen:
        seen.add(id(error))
        yield error
        error = error.__cause__ or error.__context__


def _shown_path(path: str) -> str:
    """A path worth showing: the folder holding a temporary file or folder, not its inside
    (``out/.1.x7f3k2q9.tmp/variables/...`` -> ``out``)."""
    import re
    from pathlib import PurePath

    parts = PurePath(path).parts
    for k, part in enumerate(parts):
        if re.match(r"\..*\.tmp|incomplete\.", part) and k:
            return str(PurePath(*parts[:k]))
    return path


def storage_error(error: BaseException, path=None) -> UserError | None:
    """The one-line :class:`UserError` for a full disk or an unwritable folder, if ``error`` is one.

    Looks through ``error`` and its chain (``__cause__`` / ``__context__``) for an ``OSError``
    with errno ENOSPC, EDQUOT, EROFS, EACCES or ENOTDIR, or for their messages in exceptions
    that carry no errno (TensorFlow's ``ResourceExhaustedError``, h5py's, NumPy's "N requested
    and M written", a subprocess' error text).

    Args:
        error: any exception.
        path: the file or folder being written, named when the error names none.

    Returns:
        ``UserError("<path>: <problem>; <fix>")``, or None when ``error`` is something else.

    Example:
        >>> import errno, os
        >>> str(storage_error(OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), "/mnt/x/a.npy")))
        '/mnt/x/a.npy: the disk is full (no space left on device); free some space there or choose a folder on another disk, then rerun the same command'
    """  # noqa: E501
    import re

    for exc in _chain(error):
        if isinstance(exc, UserError):
            return None
        code = getattr(exc, "errno", None) if isinstance(exc, OSError) else None
        text = str(exc)
        if code not in _STORAGE_PROBLEMS:
            code = next((c for c, (pattern, _, _) in _STORAGE_PROBLEMS.items()
                         if re.search(pattern, text)), None)
        if code is None:
            continue
        _, problem, fix = _STORAGE_PROBLEMS[code]
        where = getattr(exc, "filename", None) if isinstance(exc, OSError) else None
        if not where:
            for pattern in _PATH_PATTERNS:
                found = re.search(pattern, text)
                if found:
                    where = found.group(1)
                    break
        if not where and path is not None:
            where = path
        where = _shown_path(str(where)) if where else "an output folder"
        return UserError(f"{where}: {problem}; {fix}")
    return None
