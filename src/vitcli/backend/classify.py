"""Batched classification: timm's preprocessing (decoded by the worker pool), `torch.inference_mode`, softmax,
top-k."""

from __future__ import annotations

import torch

from vitcli.backend.models import LoadedModel, autocast
from vitcli.progress import Progress
from vitcli.results import Prediction, Skipped


def classify(model: LoadedModel, pool, recipe, items, labels: list[str], top_k: int = 5, batch_size: int = 32,
             progress: Progress | None = None, compile: bool = False) -> tuple[list[Prediction], list[Skipped]]:
    """Classify every item (decoded by `pool`, primed with them all), in order; pictures that cannot be read
    are skipped with their reason. `compile`: through torch.compile (compiled once per batch shape)."""
    from vitcli.backend.pipeline import batches

    progress = progress or Progress()
    module, info = model.module, model.info
    device = torch.device(info.device)
    if info.num_classes < 1:
        from vitcli.errors import ModelError

        raise ModelError(f"{info.name} has no classifier head (num_classes=0)",
                         hint="use `vitcli features` for its embeddings, or a checkpoint with a head")
    k = min(top_k, info.num_classes)
    forward = torch.compile(module, dynamic=False) if compile else module
    predictions: list[Prediction] = []
    skipped: list[Skipped] = []
    progress.start(len(items), "classify")
    with torch.inference_mode():
        for batch in batches(pool, recipe, batch_size, device, [(0, len(items))]):
            skipped += [Skipped(items[i].origin, out.error, items[i].frame) for i, out in batch.failures]
            if batch.tensors is not None:
                with autocast(device, info.dtype):
                    logits = forward(batch.tensors[0])  # (B, num_classes)
                probs = logits.float().softmax(dim=-1)
                top_p, top_i = probs.topk(k, dim=-1)
                for row, i in enumerate(batch.positions):
                    predictions.append(Prediction(items[i].label(), tuple(
                        (int(c), labels[int(c)], float(p)) for p, c in zip(top_p[row].tolist(), top_i[row].tolist())),
                        items[i].frame, items[i].time))
            progress.advance(len(batch.positions) + len(batch.failures))
    progress.close()
    return predictions, skipped
