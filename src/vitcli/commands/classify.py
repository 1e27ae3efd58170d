"""`vitcli classify`: top-k classes per image with label names, batched, skipping bad files."""

from __future__ import annotations

import csv
from dataclasses import dataclass

from vitcli.commands.common import ModelRequest, RunOptions, load
from vitcli.errors import UsageError
from vitcli.inputs import collect_inputs
from vitcli.outputs import atomic_output, check_targets
from vitcli.progress import Progress


@dataclass(frozen=True)
class ClassifyResult:
    model: object  # backend.models.ModelInfo
    predictions: tuple  # backend.classify.Prediction, in input order
    skipped: tuple  # backend.classify.Skipped
    total: int
    csv_path: str | None = None

    def to_dict(self) -> dict:
        return {"model": self.model.to_dict(), "results": [p.to_dict() for p in self.predictions],
                "skipped": [s.to_dict() for s in self.skipped]}


def write_csv(path: str, predictions, k: int) -> None:
    """One row per classified image: image, then index/label/prob for ranks 1..k."""
    with atomic_output(path) as tmp, open(tmp, "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(["image"] + [f"{c}_{r}" for r in range(1, k + 1) for c in ("index", "label", "prob")])
        for p in predictions:
            w.writerow([p.image] + [v for i, s, prob in p.top for v in (i, s, f"{prob:.6g}")])


def run_classify(inputs: list[str], request: ModelRequest, run: RunOptions, top_k: int = 5,
                 labels_file: str | None = None, csv_path: str | None = None, force: bool = False,
                 progress: Progress | None = None) -> ClassifyResult:
    if top_k < 1:
        raise UsageError(f"--top-k {top_k} must be at least 1")
    check_targets([csv_path], force)
    paths = collect_inputs(inputs, run.recursive)
    from vitcli.backend.classify import classify
    from vitcli.backend.models import label_names

    model = load(request)
    labels = label_names(model, labels_file)
    predictions, skipped = classify(model, paths, labels, top_k, run.batch_size, run.workers, progress)
    if csv_path:
        write_csv(csv_path, predictions, min(top_k, model.info.num_classes))
    return ClassifyResult(model.info, tuple(predictions), tuple(skipped), len(paths), csv_path)
