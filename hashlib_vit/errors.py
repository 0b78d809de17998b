"""Exceptions raised by hashlib_vit. Every message names what is wrong and what was expected."""


class HashlibVitError(Exception):
    """Base class of the package's own errors."""


class ConfigError(HashlibVitError, ValueError):
    """A parameter has a value that is not allowed (names the parameter, the value and the choices)."""


class DataError(HashlibVitError, ValueError):
    """Input data is missing or malformed (names the file, line or field)."""


class WriteError(HashlibVitError, OSError):
    """A file could not be written (names the file or folder and the reason: permission denied, a
    read-only file system, ...); nothing partial was left behind. Also an ``OSError`` (with ``errno``,
    ``strerror`` and ``filename`` of the failed write)."""

    def __str__(self) -> str:  # the message, not OSError's "[Errno 28] ..." built from errno/filename
        return str(self.args[0]) if self.args else super().__str__()


class DiskFullError(WriteError):
    """A write failed because the disk is full or the quota exceeded (ENOSPC / EDQUOT); names the file,
    the free bytes and the bytes needed when known. Nothing partial was left behind."""


class DivergenceError(HashlibVitError, FloatingPointError):
    """Training diverged: a non-finite loss or grad norm, or a loss far above its early value (names the
    step, the values, the likely cause and the last good checkpoint; hashlib_vit/train/divergence.py)."""


def bad_choice(param: str, value, choices) -> ConfigError:
    choices = sorted(choices, key=str)
    return ConfigError(f"{param}={value!r} is not a known value; allowed: {', '.join(map(str, choices))}")


class ExerciseNotAnswered(HashlibVitError, NotImplementedError):
    """A course exercise in the student edition has not been answered yet: its cell still holds the stub
    ``exercise_unanswered("N.k")`` (hashlib_vit/course.py writes it in place of the worked solution).
    The message is meant for the student: which exercise, and what to do.

    IPython 9 hides frames marked ``__tracebackhide__`` except the innermost one (the frame that raised),
    so the class also defines ``_render_traceback_``, which IPython (and so ipykernel, JupyterLab,
    papermill, nbval) uses in place of its traceback: the student sees the one line
    ``ExerciseNotAnswered: <message>`` and no library frame."""

    def _render_traceback_(self) -> list[str]:
        return [f"\x1b[0;31m{type(self).__name__}\x1b[0m: {self}"]
