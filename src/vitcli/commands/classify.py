"""`vitcli classify`: top-k classes per image with label names, batched, skipping bad files."""

from __future__ import annotations

import csv
from dataclasses import dataclass

from vitcli.errors import UsageError
from vitcli.outputs import atomic_output, check_targets
from vitcli.progress import SILENT, Reporter
from vitcli.requests import ModelRequest, RunOptions
from vitcli.results import ModelInfo, Outcome, collapse


@dataclass(frozen=True, kw_only=True)
class ClassifyRequest:
    inputs: tuple[str, ...]
    model: ModelRequest
    run: RunOptions = RunOptions()
    top_k: int = 5
    labels: str | None = None  # label file, one name per line in class order
    csv: str | None = None
    force: bool = False
    sampling: object = None  # vitcli.video.Sampling: which frames of videos

    def __post_init__(self):
        if self.top_k < 1:
            raise UsageError(f"--top-k {self.top_k} must be at least 1")
        if not self.inputs:
            raise UsageError("give at least one image, directory or glob pattern",
                             hint="e.g. vitcli classify photo.jpg")


@dataclass(frozen=True)
class ClassifyResult(Outcome):
    model: ModelInfo
    predictions: tuple  # results.Prediction, in input order
    skipped: tuple  # results.Skipped
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


def run_classify(req: ClassifyRequest, ui: Reporter = SILENT) -> ClassifyResult:
    from vitcli import cluster, decode
    from vitcli.inputs import collect, read_labels

    check_targets([req.csv], req.force)
    given_labels = read_labels(req.labels) if req.labels else None
    collected = collect(req.inputs, req.run.recursive, req.sampling.video() if req.sampling else None)
    items = collected.items
    pool = decode.start(items, collected.videos, [(0, len(items))], req.run.batch_size, req.run.workers,
                        on_cpu=cluster.probably_cpu(req.model.device))  # decoding while the model loads
    try:
        from vitcli.backend.classify import classify
        from vitcli.backend.models import label_names, load_model
        from vitcli.backend.pipeline import recipe_for

        if not req.model.pretrained:
            ui.warn("--no-pretrained: random weights, the predictions below are meaningless")
        model = load_model(req.model)
        labels = label_names(model, req.labels, given_labels)
        recipe = recipe_for([model.info.data_config])
        pool.set_recipe(recipe)
        predictions, skipped = classify(model, pool, recipe, items, labels, req.top_k, req.run.batch_size,
                                        ui.progress(), compile=req.run.compile)
    finally:
        pool.close()
    if req.csv:
        write_csv(req.csv, predictions, min(req.top_k, model.info.num_classes))
    return ClassifyResult(model.info, tuple(predictions), (*collected.skipped, *collapse(skipped)),
                          len(items) + len(collected.skipped), req.csv)
