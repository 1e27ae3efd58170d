"""Batched classification: timm's preprocessing, `torch.inference_mode`, softmax, top-k."""

from __future__ import annotations

import torch

from vitcli.backend.data import eval_transform
from vitcli.backend.loader import batches
from vitcli.backend.models import LoadedModel, autocast
from vitcli.progress import Progress
from vitcli.results import Prediction, Skipped


def classify(model: LoadedModel, paths: list[str], labels: list[str], top_k: int = 5, batch_size: int = 32,
             workers: int | None = None, progress: Progress | None = None) -> tuple[list[Prediction], list[Skipped]]:
    """Classify `paths` in order; images that cannot be read are skipped with their reason."""
    progress = progress or Progress()
    module, info = model.module, model.info
    device = torch.device(info.device)
    if info.num_classes < 1:
        from vitcli.errors import ModelError

        raise ModelError(f"{info.name} has no classifier head (num_classes=0)",
                         hint="use `vitcli features` for its embeddings, or a checkpoint with a head")
    k = min(top_k, info.num_classes)
    transform = eval_transform(info.data_config)
    results: dict[int, Prediction] = {}
    skipped: list[Skipped] = []
    progress.start(len(paths), "classify")
    with torch.inference_mode():
        for batch in batches(paths, [transform], batch_size, workers, device=device.type):
            skipped += [Skipped(paths[i], reason) for i, reason in batch.failures]
            if batch.tensors is not None:
                x = batch.tensors[0].to(device, non_blocking=True)  # (B, 3, H, W), normalised
                with autocast(device, info.dtype):
                    logits = module(x)  # (B, num_classes)
                probs = logits.float().softmax(dim=-1)
                top_p, top_i = probs.topk(k, dim=-1)
                for row, i in enumerate(batch.indices):
                    results[i] = Prediction(paths[i], tuple(
                        (int(c), labels[int(c)], float(p)) for p, c in zip(top_p[row].tolist(), top_i[row].tolist())))
            progress.advance(len(batch.indices) + len(batch.failures))
    progress.close()
    return [results[i] for i in sorted(results)], skipped
