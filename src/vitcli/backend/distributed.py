"""Scale-out under torchrun: the process group, each rank's device, and gathering at rank 0.

`torchrun --nproc-per-node N -m vitcli features ...` (and torchrun's multi-node flags) sets RANK, WORLD_SIZE
and LOCAL_RANK (whether this process is a rank: `vitcli.cluster.under_torchrun`). With a folder output, rank r
computes the shards k with k mod WORLD_SIZE = r and writes them itself, and nothing is concatenated (rank 0
then writes index.json and failed.txt). Only a single `.npy` output is split into contiguous runs of whole
batches (the same batches a one-process run makes, so rows are computed identically), which rank 0
concatenates in rank order. Outputs must be on a file system every rank sees.
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
    """Make `device` this rank's current CUDA device (NCCL's collectives use the current device), then join the
    process group: NCCL on CUDA, gloo on the CPU."""
    if device.startswith("cuda") and torch.device(device).index is not None:
        torch.cuda.set_device(torch.device(device))
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
