"""Measured throughput, latency, memory and MFU of a model's forward pass.

Timing: warm-up iterations, then timed ones, each closed by `torch.cuda.synchronize()` on CUDA; median and
10th/90th percentiles of the per-batch time. FLOPs per image are the exact analytic count of `vitcli cost`
(FLOPs = 2 x MACs; for a timm model outside the ViT family, torch's FlopCounterMode on the meta device).
MFU = achieved FLOP/s / the device's peak, measured on the spot by a large matmul in the run's dtype (or
given with --peak).
"""

from __future__ import annotations

import functools
import itertools
import resource
import statistics
import time
from dataclasses import dataclass, field

import torch

from vitcli.backend.data import eval_transform
from vitcli.backend.loader import batches
from vitcli.backend.models import LoadedModel, autocast
from vitcli.errors import ModelError


@dataclass(frozen=True)
class BenchRow:
    model: str
    image_size: tuple[int, int]
    batch_size: int
    requested_batch_size: int
    dtype: str
    device: str
    compile: bool
    channels_last: bool
    end_to_end: bool
    img_per_s: float
    ms_per_batch: float
    ms_per_batch_p10: float
    ms_per_batch_p90: float
    flops_per_image: int
    flops_source: str
    tflops: float
    peak_tflops: float
    peak_source: str
    mfu: float
    peak_memory_bytes: int
    memory_source: str
    iterations: int
    notes: tuple[str, ...] = field(default_factory=tuple)

    def to_dict(self) -> dict:
        d = dict(self.__dict__)
        d["image_size"] = list(self.image_size)
        d["notes"] = list(self.notes)
        return d


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def is_oom(e: BaseException) -> bool:
    text = str(e)
    return isinstance(e, torch.OutOfMemoryError) or "out of memory" in text or "can't allocate memory" in text


@functools.lru_cache(maxsize=None)
def matmul_peak(device: torch.device, dtype: str, n: int | None = None, reps: int = 5) -> float:
    """Achieved TFLOP/s of an n x n matmul in `dtype` on `device`: the practical peak for MFU.

    Measured once per device and dtype in a process, so every row of a run divides by the same peak."""
    n = n or (8192 if device.type == "cuda" else 2048)
    dt = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}[dtype]
    a = torch.randn(n, n, device=device, dtype=dt)
    b = torch.randn(n, n, device=device, dtype=dt)
    for _ in range(2):
        a @ b
    _sync(device)
    times = []
    for _ in range(reps):
        t = time.perf_counter()
        a @ b
        _sync(device)
        times.append(time.perf_counter() - t)
    return 2 * n ** 3 / min(times) / 1e12


def _peak_memory(device: torch.device) -> tuple[int, str]:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device), "torch.cuda.max_memory_allocated"
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024, "process peak RSS (getrusage)"


def run_bench(model: LoadedModel, batch_size: int, flops_per_image: int, flops_source: str, warmup: int = 2,
              iters: int = 5, compile: bool = False, channels_last: bool = False, peak_tflops: float | None = None,
              images: list[str] | None = None, workers: int | None = None, note=lambda text: None) -> BenchRow:
    """Time the forward pass; on out-of-memory halve the batch (and say so) until it fits or reaches 1."""
    info, module = model.info, model.module
    device = torch.device(info.device)
    _, h, w = info.data_config["input_size"]
    notes = []
    if channels_last:
        module = module.to(memory_format=torch.channels_last)
    fn = torch.compile(module) if compile else module
    peak_source = "given (--peak)"
    if peak_tflops is None:
        peak_tflops, peak_source = matmul_peak(device, info.dtype), f"measured: matmul probe in {info.dtype}"
    requested = b = batch_size
    while True:
        try:
            if device.type == "cuda":
                torch.cuda.reset_peak_memory_stats(device)
            times = _timed(fn, device, info.dtype, b, h, w, warmup, iters, channels_last, images,
                           eval_transform(info.data_config) if images else None, workers)
            break
        except Exception as e:  # noqa: BLE001 — only out-of-memory is retried
            if not is_oom(e) or b == 1:
                if is_oom(e):
                    raise ModelError(f"{info.name}: batch 1 does not fit in memory on {device}") from e
                raise
            if device.type == "cuda":
                torch.cuda.empty_cache()
            b //= 2
            text = f"batch {b * 2} did not fit in memory on {device}; trying {b}"
            notes.append(text)
            note(text)
    med = statistics.median(times)
    img_s = b / med
    achieved = flops_per_image * img_s / 1e12
    qs = statistics.quantiles(times, n=10) if len(times) > 1 else [times[0]] * 9
    mem, mem_source = _peak_memory(device)
    return BenchRow(
        model=info.name, image_size=(h, w), batch_size=b, requested_batch_size=requested, dtype=info.dtype,
        device=str(device), compile=compile, channels_last=channels_last, end_to_end=images is not None,
        img_per_s=img_s, ms_per_batch=med * 1e3, ms_per_batch_p10=qs[0] * 1e3, ms_per_batch_p90=qs[-1] * 1e3,
        flops_per_image=flops_per_image, flops_source=flops_source, tflops=achieved, peak_tflops=peak_tflops,
        peak_source=peak_source, mfu=achieved / peak_tflops, peak_memory_bytes=mem, memory_source=mem_source,
        iterations=len(times), notes=tuple(notes))


def _timed(fn, device, dtype, b, h, w, warmup, iters, channels_last, images, transform, workers) -> list:
    """Per-batch seconds of `iters` timed iterations after `warmup` untimed ones."""
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    times = []
    with torch.inference_mode(), autocast(device, dtype):
        if images is None:
            x = torch.randn(b, 3, h, w, device=device).contiguous(memory_format=fmt)
            for i in range(warmup + iters):
                _sync(device)
                t = time.perf_counter()
                fn(x)
                _sync(device)
                if i >= warmup:
                    times.append(time.perf_counter() - t)
            return times
        # end to end: decoding and preprocessing in the loop; the images are cycled to fill a batch
        paths = list(itertools.islice(itertools.cycle(images), b))
        for i in range(warmup + iters):
            t = time.perf_counter()
            for batch in batches(paths, [transform], b, workers, device=device.type):
                if batch.tensors is None or len(batch.indices) < b:
                    raise ModelError(f"--end-to-end needs {b} readable images; {len(batch.indices)} could be read")
                fn(batch.tensors[0].to(device, non_blocking=True).contiguous(memory_format=fmt))
            _sync(device)
            if i >= warmup:
                times.append(time.perf_counter() - t)
    return times
