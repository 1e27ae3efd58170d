"""`.npy` written incrementally, resumable, renamed into place when complete; the JSON sidecar. numpy only.

While a run works, the array lives at `TARGET.partial` (numpy's header for every input's row, then rows
written with positioned writes as batches complete) with `TARGET.partial.json` beside it recording how far it
got. Written pages belong to the file system's cache, not to the process, so resident memory stays at a few
batches whatever the number of rows (a memory map of the whole array would keep every written page resident).
Both are updated after each complete batch: a run interrupted anywhere resumes from its last complete batch.
When the run completes, the array's row count is shrunk in place to the rows that were read (a header rewrite
and a truncate, no copy), the sidecar is written, and the array is renamed onto the target.
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


def saved_state(target: Path) -> dict | None:
    """What an interrupted run of `target` recorded (`TARGET.partial.json`), or None unless both it and the
    partial array `TARGET.partial` exist: only then can a run resume (NpyWriter and --resume read it here)."""
    path, state_path = partial_paths(Path(target))
    if not (path.exists() and state_path.exists()):
        return None
    return json.loads(state_path.read_text(encoding="utf-8"))


def resume_point(target: Path) -> int:
    """The first input a resumed run of `target` computes: the interrupted run's `next_input`, else 0."""
    saved = saved_state(target)
    return int(saved["next_input"]) if saved else 0


def sidecar_path(target: Path) -> Path:
    """feats.npy -> feats.json"""
    return target.with_suffix(".json")


def write_json_atomic(path: Path, data: dict) -> None:
    with atomic_output(path) as tmp:
        tmp.write_text(json.dumps(data, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")


def write_lines_atomic(path: Path, lines: list[str]) -> None:
    with atomic_output(path) as tmp:
        tmp.write_text("".join(f"{line}\n" for line in lines), encoding="utf-8")


@dataclass
class ResumeState:
    """How far a run got: rows consumed (`next_input`), rows written, rows skipped (each with its `position`
    in the run); `fingerprint` pins the settings."""

    next_input: int
    rows: int
    skipped: list
    fingerprint: dict

    def to_dict(self) -> dict:
        return {"next_input": self.next_input, "rows": self.rows, "skipped": self.skipped,
                "fingerprint": self.fingerprint}


class NpyWriter:
    """Rows appended to an `.npy` of `max_rows` x `row_shape` with positioned writes, resumable."""

    def __init__(self, target: Path, max_rows: int, row_shape: tuple[int, ...], dtype: str, fingerprint: dict,
                 resume: bool = False):
        self.target = Path(target)
        self.path, self.state_path = partial_paths(self.target)
        self.dtype = np.dtype(dtype)
        self.shape = (max_rows, *row_shape)
        self.row_bytes = int(np.prod(row_shape, dtype=np.int64)) * self.dtype.itemsize
        self.state = ResumeState(0, 0, [], fingerprint)
        self.resumed = False
        saved = saved_state(self.target) if resume else None
        if saved is not None:
            diff = sorted(k for k in set(saved["fingerprint"]) | set(fingerprint)
                          if saved["fingerprint"].get(k) != fingerprint.get(k))
            if diff:
                raise OutputError(f"{self.path}: the interrupted run used other settings ({', '.join(diff)})",
                                  hint="repeat its exact command to resume, or run without --resume to start over")
            self.f = open(self.path, "r+b")
            shape, dtype, self.data_start, _, _ = _read_header(self.f)
            if shape != self.shape or dtype != self.dtype:
                self.f.close()
                raise OutputError(f"{self.path}: shape or dtype differs from this run",
                                  hint="run without --resume to start over")
            self.state = ResumeState(saved["next_input"], saved["rows"], saved["skipped"], fingerprint)
            self.f.truncate(self.data_start + self.state.rows * self.row_bytes)  # drop a half-written batch
            self.resumed = True
        else:
            self.f = open(self.path, "w+b")
            header = {"descr": npy_format.dtype_to_descr(self.dtype), "fortran_order": False, "shape": self.shape}
            _WRITE_HEADER[(2, 0) if _needs_v2(self.dtype, self.shape) else (1, 0)](self.f, header)
            self.data_start = self.f.tell()
            self._save_state()

    def write(self, rows: np.ndarray | None, next_input: int, skipped: list) -> None:
        """Append `rows` (k, *row_shape) (or none), then record that inputs before `next_input` are done."""
        n = self.state.rows
        if rows is not None and len(rows):
            data = np.ascontiguousarray(rows, dtype=self.dtype)
            view, offset = memoryview(data).cast("B"), self.data_start + n * self.row_bytes
            while view:  # one write may write less than asked (Linux: at most ~2 GiB)
                done = os.pwrite(self.f.fileno(), view, offset)
                view, offset = view[done:], offset + done
            n += len(rows)
        self.state.rows = n
        self.state.next_input = next_input
        self.state.skipped = self.state.skipped + list(skipped)
        self._save_state()

    def _save_state(self) -> None:
        write_json_atomic(self.state_path, self.state.to_dict())

    def finish(self, sidecar: dict) -> None:
        """Shrink to the rows written, write the sidecar, rename the array onto the target, drop the state."""
        self.f.flush()
        os.fsync(self.f.fileno())
        self.f.close()
        shrink_rows(self.path, self.state.rows)
        write_json_atomic(sidecar_path(self.target), sidecar)
        os.replace(self.path, self.target)
        self.state_path.unlink(missing_ok=True)

    def close(self) -> None:
        """Leave the partial files for --resume (an interrupted or failed run)."""
        if not self.f.closed:
            self.f.flush()
            self.f.close()


def _needs_v2(dtype: np.dtype, shape: tuple) -> bool:
    """numpy's own choice of header version for this array (1.0 unless the header would not fit)."""
    import io

    buf = io.BytesIO()
    try:
        npy_format.write_array_header_1_0(buf, {"descr": npy_format.dtype_to_descr(dtype), "fortran_order": False,
                                                "shape": shape})
    except ValueError:
        return True
    return False


_READ_HEADER = {(1, 0): npy_format.read_array_header_1_0, (2, 0): npy_format.read_array_header_2_0}
_WRITE_HEADER = {(1, 0): npy_format.write_array_header_1_0, (2, 0): npy_format.write_array_header_2_0}


def _read_header(f) -> tuple[tuple, np.dtype, int, bool, tuple[int, int]]:
    """(shape, dtype, data start, fortran order, format version) of an open `.npy` file."""
    f.seek(0)
    version = npy_format.read_magic(f)
    shape, fortran, dtype = _READ_HEADER[version](f)
    return tuple(shape), dtype, f.tell(), fortran, version


def shrink_rows(path: Path, rows: int) -> None:
    """Set an `.npy` file's first dimension to `rows` in place: rewrite the header, truncate the data.

    The header is numpy's own for the new shape, so the result is byte-identical to a file written at that
    size from the start (numpy pads headers to 64 bytes, so fewer digits rarely change the header length;
    when they do, it is padded with spaces, which numpy reads the same).
    """
    import io

    with open(path, "r+b") as f:
        shape, dtype, data_start, fortran, version = _read_header(f)
        if shape[0] == rows:
            return
        header = {"descr": npy_format.dtype_to_descr(dtype), "fortran_order": fortran, "shape": (rows, *shape[1:])}
        buf = io.BytesIO()
        _WRITE_HEADER[version](buf, header)
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


CHUNK_BYTES = 64 * 2**20  # rows are copied between files about this many bytes at a time


def chunk_rows(row_bytes: int) -> int:
    """Rows per chunk of about CHUNK_BYTES (at least one row, however large)."""
    return max(1, CHUNK_BYTES // max(1, row_bytes))


def open_rows(path: Path, rows: int, chunk: int | None = None):
    """Yield the first `rows` rows of an `.npy` file in chunks of `chunk` rows (default: about CHUNK_BYTES, so
    memory stays bounded whatever the row size); the file may be a partial one, whose header counts rows not
    yet written."""
    with open(path, "rb") as f:
        shape, dtype, *_ = _read_header(f)
        row_bytes = int(np.prod(shape[1:], dtype=np.int64)) * dtype.itemsize
        chunk = chunk or chunk_rows(row_bytes)
        for i in range(0, rows, chunk):
            n = min(rows, i + chunk) - i
            yield np.frombuffer(f.read(n * row_bytes), dtype=dtype).reshape(n, *shape[1:])


def append_rows(writer: NpyWriter, path: Path, rows: int, next_input: int) -> None:
    """Append the first `rows` rows of the `.npy` at `path` to `writer`, about CHUNK_BYTES at a time (the parts
    of a torchrun run, the shards of a folder), recording inputs before `next_input` as done."""
    for chunk in open_rows(Path(path), rows):
        writer.write(chunk, next_input, [])


# ---- a directory of shards ------------------------------------------------------------------------------------

INDEX = "index.json"


def shard_name(k: int) -> str:
    return f"shard-{k:05d}"


@dataclass(frozen=True)
class ShardPlan:
    """Rows [0, rows) of a run cut into shards of `shard_rows` rows (a multiple of the batch size, so no batch
    straddles two shards and every engine computes each shard identically)."""

    rows: int
    shard_rows: int

    @property
    def count(self) -> int:
        return max(1, -(-self.rows // self.shard_rows))

    def span(self, k: int) -> tuple[int, int]:
        return k * self.shard_rows, min(self.rows, (k + 1) * self.shard_rows)


class ShardSet:
    """`folder/shard-NNNNN.npy` + `shard-NNNNN.json` (the sidecar of its rows) per shard, and `index.json`
    (the plan, settings, shapes and which shards are complete). A shard is written under a temporary name
    (NpyWriter's `shard-NNNNN.npy.partial`); when complete, its sidecar is written, then the array is renamed
    into place: a shard is complete when both files exist, and a complete shard is never computed again."""

    def __init__(self, folder: Path, plan: ShardPlan, index: dict):
        self.folder, self.plan, self.index = Path(folder), plan, index

    @staticmethod
    def read_index(folder: Path) -> dict | None:
        path = Path(folder) / INDEX
        return json.loads(path.read_text(encoding="utf-8")) if path.exists() else None

    def check_compatible(self) -> None:
        """Refuse to add to a folder made with other settings (its shards would not fit this run's)."""
        old = self.read_index(self.folder)
        if old is None:
            return
        diff = sorted(k for k in set(old["fingerprint"]) | set(self.index["fingerprint"])
                      if old["fingerprint"].get(k) != self.index["fingerprint"].get(k))
        if diff or old["shard_rows"] != self.plan.shard_rows:
            raise OutputError(f"{self.folder}: holds shards made with other settings "
                              f"({', '.join(diff) or 'shard_rows'})",
                              hint="repeat that run's exact command to complete it, or choose another folder")

    def complete(self, k: int) -> bool:
        return (self.folder / f"{shard_name(k)}.json").exists() and (self.folder / f"{shard_name(k)}.npy").exists()

    def missing(self) -> list[int]:
        return [k for k in range(self.plan.count) if not self.complete(k)]

    def sidecars(self) -> dict[int, dict]:
        """shard k -> its sidecar, for every complete shard, read from disk now."""
        return {k: json.loads((self.folder / f"{shard_name(k)}.json").read_text(encoding="utf-8"))
                for k in range(self.plan.count) if self.complete(k)}

    def write_index(self, sidecars: dict[int, dict] | None = None) -> dict:
        """index.json with each shard's completion as the files show it now (the shard files are the truth);
        `sidecars`: what `sidecars()` returned, if the caller has read them already. Returns what it wrote."""
        sidecars = self.sidecars() if sidecars is None else sidecars
        shards = []
        for k in range(self.plan.count):
            start, stop = self.plan.span(k)
            written = sidecars[k]["shape"][0] if k in sidecars else None
            shards.append({"file": f"{shard_name(k)}.npy", "rows_in": [start, stop], "rows": written,
                           "complete": written is not None})
        index = {**self.index, "shards": shards, "complete": all(s["complete"] for s in shards)}
        write_json_atomic(self.folder / INDEX, index)
        return index

    def writer(self, k: int, row_shape: tuple[int, ...], dtype: str) -> NpyWriter:
        """A fresh writer of shard k under its temporary name (a half-written shard of a killed run is
        overwritten)."""
        start, stop = self.plan.span(k)
        target = self.folder / f"{shard_name(k)}.npy"
        return NpyWriter(target, stop - start, row_shape, dtype, self.index["fingerprint"])
