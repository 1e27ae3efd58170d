"""The decoding loader: worker priority on CPU runs."""

from __future__ import annotations

import os

import pytest
import torch

from vitcli.backend.loader import batches

from conftest import DATA

pytestmark = pytest.mark.skipif(not hasattr(os, "nice"), reason="process priority is POSIX")


def _niceness(_img) -> torch.Tensor:
    """A transform that reports the priority of the process it runs in."""
    return torch.tensor(float(os.nice(0)))


def _seen(workers: int, device: str) -> list[float]:
    paths = [str(DATA / "chelsea.jpg")] * 4
    return [v for b in batches(paths, [_niceness], 2, workers, device=device) for v in b.tensors[0].tolist()]


def test_cpu_workers_decode_at_the_lowest_priority_and_the_model_keeps_its_own():
    base = os.nice(0)
    assert _seen(1, "cpu") == [float(min(19, base + 19))] * 4
    assert os.nice(0) == base  # the main process, where the model runs, is untouched
    assert _seen(0, "cpu") == [float(base)] * 4  # no workers: decoding in the main process, at its priority


@pytest.mark.filterwarnings("ignore:'pin_memory' argument is set as true")  # this CPU-only machine has no CUDA
def test_workers_feeding_a_gpu_keep_normal_priority():
    base = os.nice(0)
    assert _seen(1, "cuda") == [float(base)] * 4  # the model runs elsewhere; decoding is the critical path
