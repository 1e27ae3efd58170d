"""Scale-out under torchrun: shard inputs across ranks with torch.distributed, gather at rank 0.

`torchrun --nproc-per-node N -m vitcli features ...` (and torchrun's multi-node flags) sets RANK, WORLD_SIZE
and LOCAL_RANK. Each rank takes a contiguous run of whole batches — the same batches a one-process run makes —
so rows are computed identically, and rank 0 concatenates the parts in rank order. Outputs must be on a file
system every rank sees.
"""

from __future__ import annotations

import os

import torch
import torch.distributed as dist


def local_device(device: str) -> str:
    """Each rank on its own GPU (LOCAL_RANK) when CUDA is used."""
    if device in ("auto", "cuda") and torch.cuda.is_available():
        return f"cuda:{int(os.environ.get('LOCAL_RANK', 0))}"
    return "cpu" if device == "auto" else device


def init(device: str) -> None:
    if not dist.is_initialized():
        dist.init_process_group(backend="nccl" if device.startswith("cuda") else "gloo")


def gather(obj) -> list:
    """Every rank's `obj`, in rank order (on every rank)."""
    out = [None] * dist.get_world_size()
    dist.all_gather_object(out, obj)
    return out


def barrier() -> None:
    dist.barrier()


def finish() -> None:
    if dist.is_initialized():
        dist.destroy_process_group()


def under_torchrun() -> bool:
    return int(os.environ.get("WORLD_SIZE", 1)) > 1 and "RANK" in os.environ
