"""Read what `vitcli features` wrote, one file or a folder of shards, as one array. numpy only.

    import vitcli.features
    feats = vitcli.features.open("feats/")      # or "feats.npy"
    feats.shape, feats.dtype                      # (rows, ...) over every shard
    feats[1000:1064]                              # reads only the shards that hold those rows
    feats.rows[1000]                              # where row 1000 came from (source, frame, time, ...)

Rows are read through memory maps, shard by shard: nothing is loaded until it is indexed.
"""

from __future__ import annotations

import bisect
import json
from pathlib import Path

import numpy as np


class Features:
    """A lazily concatenated view of a features output: `shape`, `dtype`, `len`, integer and slice indexing
    along the first axis (returns numpy arrays), `rows` (the sidecar's description of each row) and `info`
    (the sidecar, or the folder's index)."""

    def __init__(self, files: list[Path], sidecars: list[dict], info: dict):
        self.files, self.sidecars, self.info = files, sidecars, info
        self._maps: list[np.ndarray | None] = [None] * len(files)
        counts = [s["shape"][0] for s in sidecars]
        self._starts = list(np.cumsum([0, *counts[:-1]])) if counts else [0]
        self._n = int(sum(counts))
        self.row_shape = tuple(info.get("row_shape") or sidecars[0]["shape"][1:])
        self.dtype = np.dtype(info["dtype"])

    @property
    def shape(self) -> tuple[int, ...]:
        return (self._n, *self.row_shape)

    def __len__(self) -> int:
        return self._n

    @property
    def rows(self) -> list[dict]:
        return [r for s in self.sidecars for r in s["rows"]]

    def _map(self, k: int) -> np.ndarray:
        if self._maps[k] is None:
            self._maps[k] = np.load(self.files[k], mmap_mode="r")
        return self._maps[k]

    def __getitem__(self, key) -> np.ndarray:
        if isinstance(key, (int, np.integer)):
            i = int(key) + (self._n if key < 0 else 0)
            if not 0 <= i < self._n:
                raise IndexError(f"row {key} is outside 0..{self._n - 1}")
            k = bisect.bisect_right(self._starts, i) - 1
            return np.asarray(self._map(k)[i - self._starts[k]])
        if isinstance(key, slice):
            start, stop, step = key.indices(self._n)
            if step != 1:
                return np.stack([self[i] for i in range(start, stop, step)]) if stop > start else \
                    np.empty((0, *self.row_shape), self.dtype)
            parts = []
            for k, s0 in enumerate(self._starts):
                s1 = s0 + self.sidecars[k]["shape"][0]
                a, b = max(start, s0), min(stop, s1)
                if a < b:
                    parts.append(np.asarray(self._map(k)[a - s0:b - s0]))
            return np.concatenate(parts) if parts else np.empty((0, *self.row_shape), self.dtype)
        raise TypeError("index rows with an integer or a slice")

    def __array__(self, dtype=None, copy=None):
        a = self[:]
        return a.astype(dtype) if dtype is not None else a


def open(path: str | Path) -> Features:  # noqa: A001 — vitcli.features.open, like numpy's load
    """A `Features` view of `feats.npy` (with its sidecar `feats.json`) or of a folder of shards."""
    p = Path(path)
    if p.is_dir():
        index = json.loads((p / "index.json").read_text(encoding="utf-8"))
        incomplete = [s["file"] for s in index["shards"] if not (p / s["file"]).with_suffix(".json").exists()]
        if incomplete:
            raise FileNotFoundError(f"{p}: {len(incomplete)} shards are not complete yet ({incomplete[0]}, ...)")
        files = [p / s["file"] for s in index["shards"]]
        return Features(files, [json.loads(f.with_suffix(".json").read_text(encoding="utf-8")) for f in files], index)
    side = json.loads(p.with_suffix(".json").read_text(encoding="utf-8"))
    return Features([p], [side], side)
