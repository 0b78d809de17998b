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
