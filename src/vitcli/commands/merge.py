"""`vitcli features merge FOLDER/ -o feats.npy`: a directory of shards as today's single `.npy` + sidecar.

Streamed shard by shard (memory bounded by one chunk of rows); the result is byte for byte the file a
single-process run of the same command would have written, and its sidecar says the same.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from vitcli.errors import InputError, UsageError
from vitcli.outputs import check_targets, ensure_room
from vitcli.progress import SILENT, Reporter
from vitcli.results import Outcome, Skipped


@dataclass(frozen=True, kw_only=True)
class MergeRequest:
    folders: tuple[str, ...]
    out: str
    force: bool = False

    def __post_init__(self):
        if len(self.folders) != 1:
            raise UsageError("give one folder of shards to merge", hint="vitcli features merge feats/ -o feats.npy")
        if Path(self.out).suffix != ".npy":
            raise UsageError(f"-o {self.out} must end in .npy", hint="e.g. -o feats.npy (the sidecar is feats.json)")


@dataclass(frozen=True)
class MergeResult(Outcome):
    out: str
    sidecar: str
    shards: int
    sidecar_data: dict

    @property
    def skipped(self) -> tuple[Skipped, ...]:
        return tuple(Skipped(**s) for s in self.sidecar_data["skipped"])

    @property
    def total(self) -> int:
        return self.sidecar_data["rows_in"]

    def to_dict(self) -> dict:
        return {"out": self.out, "sidecar": self.sidecar, "shards": self.shards, **self.sidecar_data}


def run_merge(req: MergeRequest, ui: Reporter = SILENT) -> MergeResult:
    import numpy as np

    from vitcli.commands.features import SHARD_ONLY
    from vitcli.export import INDEX, NpyWriter, append_rows, sidecar_path
    from vitcli.results import collapse

    folder, target = Path(req.folders[0]), Path(req.out)
    check_targets([target, sidecar_path(target)], req.force)
    if not (folder / INDEX).exists():
        raise InputError(f"{folder}: no {INDEX} here, so not a folder of vitcli feature shards",
                         hint="give the folder `vitcli features ... -o FOLDER/` wrote")
    index = json.loads((folder / INDEX).read_text(encoding="utf-8"))
    missing = [s["file"] for s in index["shards"]
               if not ((folder / s["file"]).exists() and (folder / s["file"]).with_suffix(".json").exists())]
    if missing:
        raise InputError(f"{folder}: {len(missing)} of {len(index['shards'])} shards are not complete "
                         f"({', '.join(missing[:3])}{', ...' if len(missing) > 3 else ''})",
                         hint="rerun the command that made them: it computes only what is missing")
    row_shape = tuple(index["row_shape"])
    sides = [json.loads((folder / s["file"]).with_suffix(".json").read_text(encoding="utf-8"))
             for s in index["shards"]]
    rows = sum(side["shape"][0] for side in sides)
    ensure_room(target, rows * int(np.prod(row_shape)) * np.dtype(index["dtype"]).itemsize)
    writer = NpyWriter(target, index["rows"], row_shape, index["dtype"], index["fingerprint"])
    progress = ui.progress()
    progress.start(len(sides), "merge")
    try:
        for s, side in zip(index["shards"], sides):
            append_rows(writer, folder / s["file"], side["shape"][0], index["rows"])
            progress.advance()
    except BaseException:
        writer.close()
        raise
    finally:
        progress.close()
    lost = collapse(Skipped(**d) for side in sides for d in side["skipped"])
    data = {"format": "vitcli-features/2", "file": target.name, "shape": [rows, *row_shape],
            **{k: v for k, v in index.items() if k not in SHARD_ONLY and k != "row_shape"},
            "rows_in": index["rows"], "rows": [r for side in sides for r in side["rows"]],
            "skipped": [*index.get("unopened", []), *(s.to_dict() for s in lost)]}
    if index.get("images_only"):
        data["images"] = [img for side in sides for img in side["images"]]
    writer.finish(data)
    return MergeResult(str(target), str(sidecar_path(target)), len(sides), data)
