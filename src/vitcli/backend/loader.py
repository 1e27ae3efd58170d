"""Batches of preprocessed images, decoded in DataLoader worker processes while the model computes.

A file that cannot be opened or preprocessed does not stop the run: its batch carries it as a failure
(index and reason) and the good images of the batch go on.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass
from functools import partial

import torch
from torch.utils.data import DataLoader, Dataset

from vitcli.errors import InputError
from vitcli.imaging import open_image


class ImageFiles(Dataset):
    """Item i: (i, tuple of tensors, one per transform) or (i, None, reason)."""

    def __init__(self, paths: list[str], transforms: list):
        self.paths, self.transforms = paths, transforms

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int):
        try:
            img = open_image(self.paths[i]).image
            return i, tuple(t(img) for t in self.transforms), None
        except InputError as e:
            return i, None, e.message.removeprefix(f"{self.paths[i]}: ")
        except Exception as e:  # a transform failing on a strange image: report it, keep going
            return i, None, f"cannot preprocess ({type(e).__name__}: {e})"


@dataclass
class Batch:
    indices: list[int]  # positions in the input list of the good images, in order
    tensors: tuple[torch.Tensor, ...] | None  # one (B, 3, H, W) per transform; None when all failed
    failures: list[tuple[int, str]]  # (position, reason)


def _collate(items) -> Batch:
    good = [(i, xs) for i, xs, err in items if err is None]
    tensors = None
    if good:
        tensors = tuple(torch.stack([xs[k] for _, xs in good]) for k in range(len(good[0][1])))
    return Batch([i for i, _ in good], tensors, [(i, err) for i, _, err in items if err is not None])


def default_workers(n_images: int, batch_size: int) -> int:
    """Decoding processes: none for a single batch (start-up would cost more than it saves), else up to 8."""
    if n_images <= batch_size:
        return 0
    return min(os.cpu_count() or 1, 8)


# Niceness added to decoding workers on a CPU run. There the model's threads already fill every core, and a
# worker that preempts one of them stalls the others at their next barrier; at the lowest priority the workers
# decode in the time the model leaves idle, and at full speed whenever the model waits for a batch.
# benchmarks/features.py measures it against normal priority (docs/benchmarks.md).
CPU_WORKER_NICENESS = 19


def _lower_priority(niceness: int, _worker_id: int) -> None:
    if hasattr(os, "nice"):  # POSIX
        os.nice(niceness)


def batches(paths: list[str], transforms: list, batch_size: int, workers: int | None = None,
            device: str = "cpu") -> Iterator[Batch]:
    """Yield Batches over `paths` in order; on CUDA in pinned memory, for non-blocking copies; on CPU decoded
    by workers at the lowest priority (CPU_WORKER_NICENESS)."""
    workers = default_workers(len(paths), batch_size) if workers is None else workers
    pin_memory = device.startswith("cuda")
    init = partial(_lower_priority, CPU_WORKER_NICENESS) if device == "cpu" else None
    loader = DataLoader(ImageFiles(paths, transforms), batch_size=batch_size, shuffle=False, num_workers=workers,
                        collate_fn=_collate, pin_memory=pin_memory, persistent_workers=False,
                        prefetch_factor=2 if workers else None, worker_init_fn=init)
    yield from loader
