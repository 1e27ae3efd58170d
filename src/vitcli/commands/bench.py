"""`vitcli bench`: measured images/s, latency, memory and MFU per model x batch size."""

from __future__ import annotations

from dataclasses import dataclass

from vitcli.core.tokens import Pair, parse_pair
from vitcli.errors import UsageError
from vitcli.inputs import collect_inputs
from vitcli.progress import SILENT, Reporter
from vitcli.requests import ModelRequest, at_least
from vitcli.results import BenchRow


@dataclass(frozen=True, kw_only=True)
class BenchRequest:
    models: tuple[str, ...]
    batch_sizes: tuple[int, ...] = (1,)
    size: Pair | None = None  # default: each model's own
    device: str = "auto"
    dtype: str = "float32"
    compile: bool = False
    channels_last: bool = False
    pretrained: bool = False  # random weights by default: no download
    warmup: int = 2
    iters: int = 5  # at least this many timed iterations...
    min_time: float = 1.0  # ...and at least this many seconds of them
    peak: float | None = None  # TFLOP/s; None: measured by a matmul probe
    end_to_end: tuple[str, ...] = ()  # images decoded and preprocessed in the loop
    workers: int | None = None

    def __post_init__(self):
        if not self.models:
            raise UsageError("name at least one --model", hint="e.g. vitcli bench --model vit_base_patch16_224")
        for b in self.batch_sizes:
            at_least("--batch-size", b, 1)
        at_least("--iters", self.iters, 1)
        at_least("--warmup", self.warmup, 0)
        at_least("--min-time", self.min_time, 0)
        at_least("--workers", self.workers, 0)
        if self.peak is not None and self.peak <= 0:
            raise UsageError(f"--peak {self.peak} must be a positive number of TFLOP/s")
        if self.size is not None:
            object.__setattr__(self, "size", parse_pair(self.size, "--size"))
        ModelRequest(device=self.device, dtype=self.dtype)  # the same checks as every model-loading command


@dataclass(frozen=True)
class BenchResult:
    rows: tuple[BenchRow, ...]

    def to_dict(self) -> list[dict]:
        return [r.to_dict() for r in self.rows]


def flops_per_image(name: str, size) -> tuple[int, str]:
    """The exact count of `vitcli cost` for this model at this size, or FlopCounterMode's outside the ViT family."""
    from vitcli.core.cost import cost_report
    from vitcli.errors import ModelError
    from vitcli.specs import resolve_spec

    try:
        return cost_report(resolve_spec(name, size)).flops, "analytic (vitcli cost)"
    except ModelError:
        from vitcli.backend.arch import measure_flops

        return measure_flops(name, size)["flops"], "torch FlopCounterMode (fused attention off)"


def run_bench(req: BenchRequest, ui: Reporter = SILENT) -> BenchResult:
    from vitcli.backend import bench
    from vitcli.backend.models import load_model

    images = collect_inputs(req.end_to_end) if req.end_to_end else None
    rows = []
    for name in req.models:
        model = load_model(ModelRequest(name=name, pretrained=req.pretrained, device=req.device, dtype=req.dtype),
                           img_size=req.size)
        _, h, w = model.info.data_config["input_size"]
        flops, source = flops_per_image(name, (h, w))
        for b in req.batch_sizes:
            rows.append(bench.run_bench(model, b, flops, source, warmup=req.warmup, iters=req.iters,
                                        min_time=req.min_time, compile=req.compile, channels_last=req.channels_last,
                                        peak_tflops=req.peak, images=images, workers=req.workers, note=ui.warn))
    return BenchResult(tuple(rows))
