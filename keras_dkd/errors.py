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
