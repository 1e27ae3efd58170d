"""Nothing lost: outputs are written to a temporary file beside the target and renamed when complete.

An existing output is never replaced without `force`; a failure or Ctrl-C leaves the target as it was.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from vitcli.errors import OutputError


def check_targets(paths: list[Path | str | None], force: bool, keep_none: bool = False) -> list[Path | None]:
    """Refuse before any work when a target exists (without `force`), repeats, or its folder is missing.

    Returns the targets as Paths (`keep_none`: one entry per argument, None where none was given)."""
    seen: set[Path] = set()
    out = []
    for p in paths:
        if p is None:
            if keep_none:
                out.append(None)
            continue
        p = Path(p)
        if p.resolve() in seen:
            raise OutputError(f"{p}: given twice as an output", hint="give each output its own path", exit_code=2)
        seen.add(p.resolve())
        if p.is_dir():
            raise OutputError(f"{p}: is a directory", hint="give a file name")
        if p.exists() and not force:
            raise OutputError(f"{p}: already exists", hint="pass --force to overwrite it, or choose another path")
        if not p.parent.exists():
            raise OutputError(f"{p.parent}: no such directory", hint="create it first")
        out.append(p)
    return out


def temp_path(target: Path) -> Path:
    """A fresh, unused path beside `target` (same file system, so the final rename is atomic)."""
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".part", dir=target.parent)
    os.close(fd)
    os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600; an output gets the permissions any new file gets
    return Path(tmp)


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


@contextmanager
def atomic_output(target: Path | str) -> Iterator[Path]:
    """Yield a temporary path; on success rename it onto `target`, on any failure delete it."""
    target = Path(target)
    tmp = temp_path(target)
    try:
        yield tmp
        os.replace(tmp, target)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def save_picture(img, target: Path | str) -> None:
    """Save a PIL image as PNG, atomically."""
    with atomic_output(target) as tmp:
        img.save(tmp, format="PNG")


def ensure_room(target: Path, nbytes: int, margin: int = 64 * 1024 * 1024) -> None:
    """Raise OutputError when the disk holding `target` has less than `nbytes` (+ margin) free."""
    free = shutil.disk_usage(target.parent).free
    if nbytes + margin > free:
        raise OutputError(f"{target}: needs {nbytes:,} bytes but only {free:,} are free on that disk",
                          hint="free some space or write elsewhere")
