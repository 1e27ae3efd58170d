"""`.npy` written incrementally, resumable, renamed into place when complete; the JSON sidecar. numpy only.

While a run works, the array lives at `TARGET.partial` (an `open_memmap` sized for every input, so memory is
bounded by one batch) with `TARGET.partial.json` beside it recording how far it got. Both are updated after
each complete batch: a run interrupted anywhere resumes from its last complete batch. When the run completes,
the array's row count is shrunk in place to the images that were read (a header rewrite and a truncate, no
copy), the sidecar is written, and the array is renamed onto the target.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from numpy.lib import format as npy_format

from vitcli.errors import OutputError
from vitcli.outputs import atomic_output


def save_npy(array: np.ndarray, target: Path | str) -> None:
    """np.save, atomically (to a file handle: np.save would append .npy to the temporary name)."""
    with atomic_output(target) as tmp, open(tmp, "wb") as f:
        np.save(f, array)


def partial_paths(target: Path) -> tuple[Path, Path]:
    return target.with_name(target.name + ".partial"), target.with_name(target.name + ".partial.json")


def sidecar_path(target: Path) -> Path:
    """feats.npy -> feats.json"""
    return target.with_suffix(".json")


def write_json_atomic(path: Path, data: dict) -> None:
    with atomic_output(path) as tmp:
        tmp.write_text(json.dumps(data, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")


@dataclass
class ResumeState:
    """How far a run got: inputs consumed, rows written, inputs skipped; `fingerprint` pins the settings."""

    next_input: int
    rows: int
    skipped: list
    fingerprint: dict

    def to_dict(self) -> dict:
        return {"next_input": self.next_input, "rows": self.rows, "skipped": self.skipped,
                "fingerprint": self.fingerprint}


class NpyWriter:
    """Rows appended to a memory-mapped `.npy` of `max_rows` x `row_shape`, resumable."""

    def __init__(self, target: Path, max_rows: int, row_shape: tuple[int, ...], dtype: str, fingerprint: dict,
                 resume: bool = False):
        self.target = Path(target)
        self.path, self.state_path = partial_paths(self.target)
        self.dtype = np.dtype(dtype)
        self.shape = (max_rows, *row_shape)
        self.state = ResumeState(0, 0, [], fingerprint)
        self.resumed = False
        if resume and self.path.exists() and self.state_path.exists():
            saved = json.loads(self.state_path.read_text(encoding="utf-8"))
            diff = sorted(k for k in set(saved["fingerprint"]) | set(fingerprint)
                          if saved["fingerprint"].get(k) != fingerprint.get(k))
            if diff:
                raise OutputError(f"{self.path}: the interrupted run used other settings ({', '.join(diff)})",
                                  hint="repeat its exact command to resume, or run without --resume to start over")
            self.mm = npy_format.open_memmap(self.path, mode="r+")
            if self.mm.shape != self.shape or self.mm.dtype != self.dtype:
                raise OutputError(f"{self.path}: shape or dtype differs from this run",
                                  hint="run without --resume to start over")
            self.state = ResumeState(saved["next_input"], saved["rows"], saved["skipped"], fingerprint)
            self.resumed = True
        else:
            self.mm = npy_format.open_memmap(self.path, mode="w+", dtype=self.dtype, shape=self.shape)
            self._save_state()

    def write(self, rows: np.ndarray, next_input: int, skipped: list) -> None:
        """Append `rows` (k, *row_shape), then record that inputs before `next_input` are done."""
        n = self.state.rows
        self.mm[n:n + len(rows)] = rows.astype(self.dtype, copy=False)
        self.mm.flush()
        self.state.rows = n + len(rows)
        self.state.next_input = next_input
        self.state.skipped = self.state.skipped + list(skipped)
        self._save_state()

    def _save_state(self) -> None:
        write_json_atomic(self.state_path, self.state.to_dict())

    def finish(self, sidecar: dict) -> None:
        """Shrink to the rows written, write the sidecar, rename the array onto the target, drop the state."""
        self.mm.flush()
        del self.mm
        shrink_rows(self.path, self.state.rows)
        write_json_atomic(sidecar_path(self.target), sidecar)
        os.replace(self.path, self.target)
        self.state_path.unlink(missing_ok=True)

    def close(self) -> None:
        """Leave the partial files for --resume (an interrupted or failed run)."""
        if hasattr(self, "mm"):
            self.mm.flush()
            del self.mm


def shrink_rows(path: Path, rows: int) -> None:
    """Set an `.npy` file's first dimension to `rows` in place: rewrite the header, truncate the data.

    The header is numpy's own for the new shape, so the result is byte-identical to a file written at that
    size from the start (numpy pads headers to 64 bytes, so fewer digits rarely change the header length;
    when they do, it is padded with spaces, which numpy reads the same).
    """
    import io

    with open(path, "r+b") as f:
        version = npy_format.read_magic(f)
        read = {(1, 0): npy_format.read_array_header_1_0, (2, 0): npy_format.read_array_header_2_0}[version]
        shape, fortran, dtype = read(f)
        data_start = f.tell()
        if shape[0] == rows:
            return
        header = {"descr": npy_format.dtype_to_descr(dtype), "fortran_order": fortran, "shape": (rows, *shape[1:])}
        buf = io.BytesIO()
        write = {(1, 0): npy_format.write_array_header_1_0, (2, 0): npy_format.write_array_header_2_0}[version]
        write(buf, header)
        new = buf.getvalue()
        if len(new) < data_start:  # keep the data where it is: pad the header text before its newline
            len_bytes = 2 if version == (1, 0) else 4
            text = new[6 + 2 + len_bytes:].rstrip(b"\n").rstrip(b" ")
            room = data_start - 6 - 2 - len_bytes
            new = new[:6 + 2] + room.to_bytes(len_bytes, "little") + text + b" " * (room - len(text) - 1) + b"\n"
        if len(new) != data_start:
            raise OutputError(f"{path}: cannot rewrite the .npy header in place")
        f.seek(0)
        f.write(new)
        f.truncate(data_start + rows * int(np.prod(shape[1:], dtype=np.int64)) * dtype.itemsize)


def open_rows(path: Path, rows: int, chunk: int = 4096):
    """Yield the first `rows` rows of an `.npy` file in chunks, memory-mapped (bounded memory)."""
    mm = np.load(path, mmap_mode="r")
    for i in range(0, rows, chunk):
        yield np.asarray(mm[i:min(rows, i + chunk)])
    del mm
