"""Turn INPUTS (files, directories, glob patterns) into an ordered list of image paths. Standard library only."""

from __future__ import annotations

import glob
from pathlib import Path

from vitcli.errors import InputError, UsageError

IMAGE_SUFFIXES = frozenset(
    ".jpg .jpeg .png .bmp .gif .tif .tiff .webp .ppm .pgm .pbm .pnm .tga .jp2 .j2k .pcx .sgi .qoi .avif".split()
)


def _images_in(folder: Path, recursive: bool) -> list[str]:
    found = folder.rglob("*") if recursive else folder.iterdir()
    return sorted(str(p) for p in found if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)


def collect_inputs(inputs: list[str], recursive: bool = False) -> list[str]:
    """Files are kept as given (a bad one is reported later, not dropped here); a directory gives its images
    sorted by path (`recursive`: its whole tree); a pattern with * ? [ gives its matches, sorted.
    Duplicates are removed, first occurrence kept."""
    if not inputs:
        raise UsageError("give at least one image, directory or glob pattern", hint="e.g. vitcli classify photo.jpg")
    out: list[str] = []
    for item in inputs:
        p = Path(item)
        if p.is_dir():
            found = _images_in(p, recursive)
            if not found:
                raise InputError(f"{item}: no images in this directory" + ("" if recursive else " (not recursive)"),
                                 hint="add --recursive to search sub-directories" if not recursive else None)
            out += found
        elif any(ch in item for ch in "*?[") and not p.exists():
            matches = sorted(m for m in glob.glob(item, recursive=True) if Path(m).is_file())
            if not matches:
                raise InputError(f"{item}: the pattern matches no files")
            out += matches
        else:
            out.append(item)
    return list(dict.fromkeys(out))
