"""Exceptions for mistakes in what a user gave (a value, a file, a name), as opposed to bugs.

The command line turns these, and the OS errors about the user's files, into one line on stderr
with exit code 2; anything else is a bug and keeps its traceback.
"""
from __future__ import annotations

__all__ = ["UserInputError", "UserTypeError", "UnknownNameError", "USER_ERRORS", "check_choice"]


class UserInputError(ValueError):
    """A value the user gave is wrong; the message names it and the fix."""


class UserTypeError(TypeError, UserInputError):
    """A user value has the wrong type (e.g. a recipe key); still a TypeError for library callers."""


class UnknownNameError(KeyError, UserInputError):
    """A name that is not registered (a model, bundled weights); still a KeyError for library callers."""

    def __str__(self) -> str:  # KeyError quotes its message; this one reads as a sentence
        return str(self.args[0]) if self.args else ""


#: what the CLI reports as the user's mistake: bad values, and the user's files being missing,
#: unreadable or of the wrong kind. (FloatingPointError: a diverging adaptation or training step.)
USER_ERRORS: tuple[type[BaseException], ...] = (ValueError, FileNotFoundError, IsADirectoryError, NotADirectoryError,
                                                PermissionError, FloatingPointError)


def check_choice(name: str, value: object, options: tuple[str, ...] | list[str]) -> None:
    """Raise :class:`UserInputError` naming ``name``, its ``value`` and the options when ``value`` is not one of them."""
    if value not in options:
        raise UserInputError(f"{name}={value!r}: choose one of {', '.join(repr(o) for o in options)}")
