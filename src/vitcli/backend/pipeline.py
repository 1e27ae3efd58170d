"""Decoded pictures -> normalised batches on the model's device, in order.

A pool of decoding workers (`vitcli.decode.start`, torch-free) is started before the models load, so decoding
runs while torch imports and the models build. `recipe_for` turns the loaded models' data configs into the
workers' recipe. `batches` then yields `Batch`es: rows at fixed positions (batch k always holds rows
k*B .. k*B+B-1 of the whole run, wherever a run starts or resumes, so every row is computed in the same batch
composition), each model's input as a normalised float32 (B, 3, H, W) tensor on the device, and the rows that
could not be read.

Pixels to tensors: uint8 arrays from the workers are stacked, copied to the device (pinned and non-blocking on
CUDA) and normalised there (`tensor_preprocess.normalize_u8_batch`, bit-identical to timm's transform: on CPU
with torchvision's own arithmetic, on other devices through a lookup table timm's stages computed on CPU);
with GPU decoding, JPEG bytes are decoded on the device (nvJPEG), resized and cropped there
(`resize_crop_tensor`), and other files fall back to the CPU path per picture. A JPEG that cannot be decoded
fails its row alone, as on the CPU path.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import torch

from vitcli.decode import Decoded, DecodePool, Prep, Recipe
from vitcli.errors import InputError
from vitcli.preprocess import NotExact, Plan


def recipe_for(configs: list[dict], fast: bool = False, gpu: bool = False) -> Recipe:
    """The workers' recipe for models with these data configs: their exact plans (timm's own transform where a
    plan cannot reproduce the config). `gpu`: JPEGs are handed back as bytes for decoding on the device, if every
    model allows it (`gpu_refusal`); otherwise decoded on the CPU (`jpeg_bytes` False)."""
    from vitcli.backend.data import eval_transform

    preps = []
    for cfg in configs:
        try:
            preps.append(Prep(plan=Plan.from_config(cfg)))
        except NotExact:
            preps.append(Prep(transform=eval_transform(cfg)))
    return Recipe(tuple(preps), fast=fast and all(p.plan is not None for p in preps),
                  jpeg_bytes=gpu and gpu_refusal(preps) is None)


def gpu_refusal(preps) -> str | None:
    """Why these models' JPEGs cannot be resized and cropped on the device (None: they can): `resize_crop_tensor`
    needs each model's exact plan, with an interpolation it has (bilinear, bicubic)."""
    from vitcli.backend.tensor_preprocess import TENSOR_MODES

    for p in preps:
        if p.plan is None:
            return "a model's preprocessing has no exact plan (timm's own transform runs on the CPU)"
        if p.plan.interpolation not in TENSOR_MODES:
            return f"{p.plan.interpolation} interpolation has no tensor equivalent (only {' and '.join(TENSOR_MODES)})"
    return None


@dataclass
class Batch:
    positions: list[int]  # positions (in the run) of the rows that were read, in order
    tensors: tuple[torch.Tensor, ...] | None  # one normalised (B, 3, H, W) per model; None when none was read
    failures: list[tuple[int, Decoded]]  # (item position, why) of the rows that could not be read
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
            yield _batch(taken, recipe, device, group, end)
            row = end


def _batch(items: list[tuple[int, Decoded]], recipe: Recipe, device: torch.device, group: int, end: int) -> Batch:
    items, pictures = _decode_jpegs(items, device)
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
        jpegs = [pictures[pos] for row in good for pos, out in row if out.jpeg is not None]
        tensors = tuple(_model_input(outs, jpegs, k, prep, device) for k, prep in enumerate(recipe.preps))
    return Batch([row[0][0] // group for row in good], tensors, failures, end)


def _decode_jpegs(items: list[tuple[int, Decoded]], device: torch.device
                  ) -> tuple[list[tuple[int, Decoded]], dict[int, torch.Tensor]]:
    """GPU decoding: every JPEG of the batch decoded once, on the device. Returns the items, each JPEG that could
    not be decoded turned into its error (worded as the CPU path words it), and {item position: uint8 (3, h, w)}
    for the others."""
    jpegs = [(pos, out.jpeg) for pos, out in items if out.jpeg is not None]
    if not jpegs:
        return items, {}
    from vitcli.backend.tensor_preprocess import decode_jpeg_batch

    names = [f"item {pos}" for pos, _ in jpegs]
    got = decode_jpeg_batch([data for _, data in jpegs], device, names=names)
    pictures = {pos: t for (pos, _), t in zip(jpegs, got) if not isinstance(t, InputError)}
    errors = {pos: Decoded(error=e.message.removeprefix(f"{name}: "))
              for (pos, _), name, e in zip(jpegs, names, got) if isinstance(e, InputError)}
    return [(pos, errors.get(pos, out)) for pos, out in items], pictures


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
