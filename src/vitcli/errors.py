"""Errors that carry a message, a hint and an exit code. Standard library only.

Code below `cli.py` raises these; it never prints or exits. The one error boundary (`cli.Boundary`) prints
`Error: <message>; <hint>` as one line on stderr and exits with the error's code:

    0 ok · 1 failure (VitcliError, InputError, ModelError, OutputError; also "some inputs were skipped")
    2 usage error (UsageError, and Typer's own parse errors) · 130 interrupted (Ctrl-C, Interrupted)
"""

from __future__ import annotations

import os


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


class Interrupted(VitcliError):
    """Ctrl-C, with what was kept and how to continue (a bare KeyboardInterrupt says just 'interrupted')."""

    exit_code = 130


class MissingExtra(VitcliError):
    """An optional library is not installed: the message names the extra that brings it."""

    def __init__(self, what: str, extra: str, module: str):
        super().__init__(f"{what} needs {module}, which is not installed",
                         hint=f'pip install "vitcli[{extra}]"')


def debug_enabled() -> bool:
    """VITCLI_DEBUG=1 (anything but empty or 0): tracebacks and library logs are shown."""
    return os.environ.get("VITCLI_DEBUG", "") not in ("", "0")
