"""The progress protocol commands report to. Standard library only; render.py draws it on stderr."""

from __future__ import annotations


class Progress:
    """Does nothing: the default when nobody is watching (tests, --json to a pipe)."""

    def start(self, total: int, description: str = "") -> None:
        pass

    def advance(self, n: int = 1) -> None:
        pass

    def close(self) -> None:
        pass
