"""Errors that carry a message, a hint and an exit code. Standard library only.

Code below `cli.py` raises these; it never prints or exits. One handler in `cli.py` prints
`Error: <message>` and the hint on stderr and exits with `exit_code`.
"""

from __future__ import annotations


class VitcliError(Exception):
    """A failure the user can act on: `message` says what, `hint` says what to do next."""

    exit_code = 1

    def __init__(self, message: str, hint: str | None = None, exit_code: int | None = None):
        super().__init__(message)
        self.message = message
        self.hint = hint
        if exit_code is not None:
            self.exit_code = exit_code


class UsageError(VitcliError):
    """Bad flags or values: exit code 2, like Typer's own usage errors."""

    exit_code = 2


class InputError(VitcliError):
    """An input file that cannot be used (missing, not an image, too large, truncated)."""


class ModelError(VitcliError):
    """A model that cannot be found, built or loaded."""


class OutputError(VitcliError):
    """An output that cannot be written (exists without --force, no room, no permission)."""
