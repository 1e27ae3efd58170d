"""Decoded pictures -> normalised batches on the model's device, in order.

A pool of decoding workers (`vitcli.decode.start`, torch-free) is started before the models load, so decoding
runs while torch imports and the models build. `recipe_for` turns the loaded models' data configs into the
workers' recipe. `batches` then yields `Batch`es: rows at fixed positions (batch k always holds rows
k*B .. k*B+B-1 of the whole run, wherever a run starts or resumes, so every row is computed in the same batch
composition), each model's input as a normalised float32 (B, 3, H, W) tensor on the device, and the rows that
could not be read.

Pixels to tensors: uint8 arrays from the workers are stacked, copied to the device (pinned and non-blocking on
CUDA) and normalised there through timm's own lookup table (`tensor_preprocess.normalize_u8_batch`,
bit-identical to timm's transform); with GPU decoding, JPEG bytes are decoded on the device (nvJPEG), resized
and cropped there (`resize_crop_tensor`), and other files fall back to the CPU path per picture.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import torch

from vitcli.decode import Decoded, DecodePool, Prep, Recipe
from vitcli.preprocess import NotExact, Plan

def start_decoding(items, videos: dict, batch_size: int, workers: int | None, device: str = "cpu", start: int = 0,
                   stop: int | None = None, timeout: float | None = None, fast: bool = False, gpu: bool = False):
    """`vitcli.decode.start` for items[start:stop] (one item per row)."""
    from vitcli.decode import start as start_pool

    stop = len(items) if stop is None else stop
    return start_pool(items, videos, [(start, stop)], batch_size, workers, on_cpu=device == "cpu", timeout=timeout,
                      eager=not (fast or gpu))


def recipe_for(configs: list[dict], fast: bool = False, gpu: bool = False) -> Recipe:
    """The workers' recipe for models with these data configs: their exact plans (timm's own transform where a
    plan cannot reproduce the config)."""
    from vitcli.backend.data import eval_transform

    preps = []
    for cfg in configs:
        try:
            preps.append(Prep(plan=Plan.from_config(cfg)))
        except NotExact:
            preps.append(Prep(transform=eval_transform(cfg)))
    return Recipe(tuple(preps), fast=fast and all(p.plan is not None for p in preps), jpeg_bytes=gpu)


@dataclass
class Batch:
    positions: list[int]  # positions (in the run) of the rows that were read, in order
    tensors: tuple[torch.Tensor, ...] | None  # one normalised (B, 3, H, W) per model; None when none was read
    failures: list[tuple[int, Decoded]]  # (item position, why) of the rows that could not be read
    start: int  # the position of this batch's first row
    end: int  # the position after its last row


def batches(pool: DecodePool, recipe: Recipe, batch_size: int, device: torch.device,
            ranges: list[tuple[int, int]], group: int = 1) -> Iterator[Batch]:
    """Batches of the pool's rows, range by range, at fixed boundaries: a batch ends at every multiple of
    `batch_size` rows (counted from row 0 of the run) and at the end of a range. `group`: items per row (fused
    cameras: a row is `group` consecutive items, read or lost together)."""
    out = pool.run()
    for start, stop in ranges:
        row = start
        while row < stop:
            end = min(stop, (row // batch_size + 1) * batch_size)
            taken = [next(out) for _ in range((end - row) * group)]
            yield _batch(taken, recipe, device, group, row, end)
            row = end


def _batch(items: list[tuple[int, Decoded]], recipe: Recipe, device: torch.device, group: int, start: int,
           end: int) -> Batch:
    rows = [items[i:i + group] for i in range(0, len(items), group)]
    good, failures = [], []
    for row in rows:
        bad = next(((pos, out) for pos, out in row if out.error is not None), None)
        if bad is None:
            good.append(row)
        else:
            failures.append(bad)
    tensors = None
    if good:
        outs = [out for row in good for _, out in row]
        jpegs = [o.jpeg for o in outs if o.jpeg is not None]
        if jpegs:  # GPU decoding: every JPEG of the batch decoded once, on the device
            from vitcli.backend.tensor_preprocess import decode_jpeg_batch

            jpegs = decode_jpeg_batch(jpegs, device)
        tensors = tuple(_model_input(outs, jpegs, k, prep, device) for k, prep in enumerate(recipe.preps))
    return Batch([row[0][0] // group for row in good], tensors, failures, start, end)


def _model_input(outs: list[Decoded], jpegs: list, k: int, prep: Prep, device: torch.device) -> torch.Tensor:
    """One model's normalised input for these pictures: (N, 3, H, W) float32 on `device`. `jpegs`: the decoded
    uint8 (3, h, w) pictures of the outcomes that carried JPEG bytes, in order."""
    from vitcli.backend.tensor_preprocess import normalize_u8_batch, normalize_u8_chw

    cuda = device.type == "cuda"
    if not jpegs:
        stacked = _to_device(np.stack([o.arrays[k] for o in outs]), device, cuda)
        # timm's own transform ran in the worker (no plan): already normalised floats
        return stacked if prep.plan is None else normalize_u8_batch(stacked, prep.plan)
    from vitcli.backend.tensor_preprocess import resize_crop_tensor

    decoded = iter(jpegs)
    chw = [resize_crop_tensor(next(decoded), prep.plan) if o.jpeg is not None
           else _to_device(np.ascontiguousarray(o.arrays[k].transpose(2, 0, 1)), device, cuda) for o in outs]
    return normalize_u8_chw(torch.stack(chw), prep.plan)


def _to_device(a: np.ndarray, device: torch.device, cuda: bool) -> torch.Tensor:
    t = torch.from_numpy(a)
    return t.pin_memory().to(device, non_blocking=True) if cuda else t
