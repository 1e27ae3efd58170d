"""How commands talk to the person running them while they work: warnings, notes and a progress bar.
Standard library only; `render.ConsoleReporter` draws them on stderr, the default says nothing (tests, APIs)."""

from __future__ import annotations


class Progress:
    """A progress bar that does nothing: the default when nobody is watching."""

    def start(self, total: int, description: str = "") -> None:
        pass

    def advance(self, n: int = 1) -> None:
        pass

    def close(self) -> None:
        pass


class Reporter:
    """Silent: what a command is given when nobody is watching."""

    def warn(self, text: str) -> None:
        pass

    def note(self, text: str) -> None:
        pass

    def progress(self) -> Progress:
        """A fresh progress bar for one long stretch of work (start/advance/close)."""
        return Progress()


SILENT = Reporter()
