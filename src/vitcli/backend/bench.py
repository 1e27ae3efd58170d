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
import re
import resource
import statistics
import time
from collections.abc import Callable

import torch

from vitcli.backend.models import LoadedModel, autocast
from vitcli.errors import ModelError
from vitcli.results import BenchRow


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


def _proc_kib(field: str) -> int | None:
    try:
        with open("/proc/self/status") as f:
            m = re.search(rf"^{field}:\s+(\d+) kB", f.read(), re.M)
        return int(m.group(1)) if m else None
    except OSError:
        return None


class MemoryMeter:
    """The peak memory of one stretch of work, and how far it rose above what was in use when it began.

    CUDA: `torch.cuda.max_memory_allocated` after `reset_peak_memory_stats`. CPU on Linux: the process's
    resident peak (VmHWM) after resetting it through /proc/self/clear_refs, so each row has its own peak
    rather than the process's lifetime peak. Elsewhere: the lifetime peak (getrusage), and `source` says so."""

    def __init__(self, device: torch.device):
        self.device = device
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(device)
            self.base, self.source = torch.cuda.memory_allocated(device), "torch.cuda.max_memory_allocated"
            return
        self.base = (_proc_kib("VmRSS") or 0) * 1024
        try:
            with open("/proc/self/clear_refs", "w") as f:
                f.write("5")  # reset the resident-set peak (Linux >= 4.0)
            self.source = "peak resident memory of the process during this row (VmHWM, reset per row)"
        except OSError:
            self.source = "process lifetime peak RSS (getrusage; cannot reset per row here)"

    def peak(self) -> int:
        if self.device.type == "cuda":
            return torch.cuda.max_memory_allocated(self.device)
        hwm = _proc_kib("VmHWM")
        if hwm is not None and "reset per row" in self.source:
            return hwm * 1024
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def fit_batch(run: Callable[[int], object], batch: int, is_oom: Callable[[BaseException], bool],
              on_halve: Callable[[str], None], where: str = "",
              name: str = "the model") -> tuple[object, int, list[str]]:
    """`run(batch)`; while it fails for lack of memory, halve the batch (saying so) and run again.

    Returns (result, the batch that fit, the notes said). Out of memory at batch 1 is a ModelError; any other
    failure propagates at once."""
    notes = []
    while True:
        try:
            return run(batch), batch, notes
        except Exception as e:  # noqa: BLE001 — only out-of-memory is retried
            if not is_oom(e):
                raise
            if batch == 1:
                raise ModelError(f"{name}: batch 1 does not fit in memory{where}") from e
            batch //= 2
            notes.append(f"batch {batch * 2} did not fit in memory{where}; trying {batch}")
            on_halve(notes[-1])


def run_bench(model: LoadedModel, batch_size: int, flops_per_image: int, flops_source: str, warmup: int = 2,
              iters: int = 5, min_time: float = 0.0, compile: bool = False, channels_last: bool = False,
              peak_tflops: float | None = None, images: list[str] | None = None, workers: int | None = None,
              note=lambda text: None) -> BenchRow:
    """Time the forward pass: `warmup` untimed iterations, then at least `iters` timed ones and at least
    `min_time` seconds of them. On out-of-memory halve the batch (and say so) until it fits or reaches 1."""
    info, module = model.info, model.module
    device = torch.device(info.device)
    _, h, w = info.data_config["input_size"]
    if channels_last:
        module = module.to(memory_format=torch.channels_last)
    fn = torch.compile(module) if compile else module
    peak_source = "given (--peak)"
    if peak_tflops is None:
        peak_tflops, peak_source = matmul_peak(device, info.dtype), f"measured: matmul probe in {info.dtype}"
    transform = None
    if images:
        from vitcli.backend.pipeline import recipe_for

        transform = recipe_for([info.data_config])

    def attempt(b: int):
        if device.type == "cuda":
            torch.cuda.empty_cache()
        meter = MemoryMeter(device)
        times = _timed(fn, device, info.dtype, b, h, w, warmup, iters, min_time, channels_last, images, transform,
                       workers)
        return times, meter

    (times, meter), b, notes = fit_batch(attempt, batch_size, is_oom, note, f" on {device}", info.name)
    peak = meter.peak()
    med = statistics.median(times)
    img_s = b / med
    achieved = flops_per_image * img_s / 1e12
    qs = statistics.quantiles(times, n=10) if len(times) > 1 else [times[0]] * 9
    return BenchRow(
        model=info.name, image_size=(h, w), batch_size=b, requested_batch_size=batch_size, dtype=info.dtype,
        device=str(device), compile=compile, channels_last=channels_last, end_to_end=images is not None,
        img_per_s=img_s, ms_per_batch=med * 1e3, ms_per_batch_p10=qs[0] * 1e3, ms_per_batch_p90=qs[-1] * 1e3,
        flops_per_image=flops_per_image, flops_source=flops_source, tflops=achieved, peak_tflops=peak_tflops,
        peak_source=peak_source, mfu=achieved / peak_tflops, peak_memory_bytes=peak,
        memory_over_model_bytes=max(0, peak - meter.base), memory_source=meter.source, iterations=len(times),
        seconds=sum(times), notes=tuple(notes))


def _timed(fn, device, dtype, b, h, w, warmup, iters, min_time, channels_last, images, transform, workers) -> list:
    """Per-batch seconds of the timed iterations (at least `iters`, and at least `min_time` seconds in all)
    after `warmup` untimed ones."""
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    times: list[float] = []

    def enough(i: int) -> bool:
        return i >= warmup + iters and sum(times) >= min_time

    with torch.inference_mode(), autocast(device, dtype):
        if images is None:
            x = torch.randn(b, 3, h, w, device=device).contiguous(memory_format=fmt)
            i = 0
            while not enough(i):
                _sync(device)
                t = time.perf_counter()
                fn(x)
                _sync(device)
                if i >= warmup:
                    times.append(time.perf_counter() - t)
                i += 1
            return times
        # end to end: decoding and preprocessing in the loop; the images are cycled to fill a batch
        from vitcli import decode
        from vitcli.backend.pipeline import batches
        from vitcli.inputs import Item

        items = [Item(p) for p in itertools.islice(itertools.cycle(images), b)]
        i = 0
        while not enough(i):
            t = time.perf_counter()
            with decode.start(items, {}, [(0, b)], b, workers, on_cpu=device.type == "cpu") as pool:
                pool.set_recipe(transform)
                for batch in batches(pool, transform, b, device, [(0, b)]):
                    if batch.tensors is None or len(batch.positions) < b:
                        raise ModelError(f"--end-to-end needs {b} readable images; {len(batch.positions)} could "
                                         "be read")
                    fn(batch.tensors[0].contiguous(memory_format=fmt))
            _sync(device)
            if i >= warmup:
                times.append(time.perf_counter() - t)
            i += 1
    return times
