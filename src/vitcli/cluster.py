"""Where this process stands in a run spread over processes and machines, without torch: its rank and the
world size (torchrun's RANK/WORLD_SIZE), and which rows it takes. Standard library only."""

from __future__ import annotations

import os
import sys


def world() -> tuple[int, int]:
    """(rank, world size) under torchrun, which sets RANK and WORLD_SIZE > 1; (0, 1) otherwise (WORLD_SIZE
    without RANK too)."""
    size = int(os.environ.get("WORLD_SIZE", 1))
    if size <= 1 or "RANK" not in os.environ:
        return 0, 1
    return int(os.environ["RANK"]), size


def under_torchrun() -> bool:
    """Whether this process is one of several torchrun ranks: the one test every caller uses."""
    return world()[1] > 1


def shard(n_rows: int, batch_size: int, rank: int, size: int) -> tuple[int, int]:
    """[start, stop) of this rank's rows: contiguous whole batches, as evenly as possible (a long video is
    shared by the ranks like any other rows)."""
    n_batches = -(-n_rows // batch_size)
    first, last = rank * n_batches // size, (rank + 1) * n_batches // size
    return min(first * batch_size, n_rows), min(last * batch_size, n_rows)


def probably_cpu(device: str) -> bool:
    """Whether the model will run on the CPU, known before torch is imported: `cpu`, or `auto` on a machine
    with no NVIDIA driver and no Apple GPU. (Decoding workers yield to the model's threads there.)"""
    if device == "cpu":
        return True
    if device != "auto":
        return False
    return not os.path.exists("/proc/driver/nvidia/version") and sys.platform != "darwin"
