"""`vitcli bench`: measured images/s, latency, memory and MFU per model x batch size."""

from __future__ import annotations

from dataclasses import dataclass

from vitcli.commands.common import ModelRequest, load
from vitcli.core.tokens import parse_pair
from vitcli.errors import UsageError
from vitcli.inputs import collect_inputs


@dataclass(frozen=True)
class BenchResult:
    rows: tuple  # backend.bench.BenchRow

    def to_dict(self) -> list[dict]:
        return [r.to_dict() for r in self.rows]


def flops_per_image(name: str, size) -> tuple[int, str]:
    """The exact count of `vitcli cost` for this model at this size, or FlopCounterMode's outside the ViT family."""
    from vitcli.commands.specs import resolve_spec
    from vitcli.core.cost import cost_report
    from vitcli.errors import ModelError

    try:
        return cost_report(resolve_spec(name, size)).flops, "analytic (vitcli cost)"
    except ModelError:
        from vitcli.backend.arch import measure_flops

        return measure_flops(name, size)["flops"], "torch FlopCounterMode (fused attention off)"


def run_bench(models: list[str], batch_sizes: list[int], size: str | None = None, device: str = "auto",
              dtype: str = "float32", compile: bool = False, channels_last: bool = False, pretrained: bool = False,
              warmup: int = 2, iters: int = 5, peak: float | None = None, end_to_end: list[str] | None = None,
              workers: int | None = None, note=lambda text: None) -> BenchResult:
    from vitcli.backend import bench

    if not models:
        raise UsageError("name at least one --model", hint="e.g. vitcli bench --model vit_base_patch16_224")
    if any(b < 1 for b in batch_sizes) or warmup < 0 or iters < 1:
        raise UsageError("--batch-size and --iters must be at least 1, --warmup at least 0")
    if peak is not None and peak <= 0:
        raise UsageError(f"--peak {peak} must be a positive number of TFLOP/s")
    size_pair = parse_pair(size, "--size") if size else None
    images = collect_inputs(end_to_end) if end_to_end else None
    rows = []
    for name in models:
        model = load(ModelRequest(name, pretrained=pretrained, device=device, dtype=dtype), img_size=size_pair)
        _, h, w = model.info.data_config["input_size"]
        flops, source = flops_per_image(name, (h, w))
        for b in batch_sizes or [1]:
            rows.append(bench.run_bench(model, b, flops, source, warmup, iters, compile, channels_last, peak, images,
                                        workers, note))
    return BenchResult(tuple(rows))
