"""`vitcli cost`: parameters, MACs/FLOPs and memory for models x sizes, analytic and optionally measured."""

from __future__ import annotations

from dataclasses import dataclass, replace

from vitcli.core.cost import DTYPE_BYTES, CostReport, cost_report
from vitcli.core.tokens import Pair, fmt_pair, parse_pairs
from vitcli.errors import UsageError
from vitcli.requests import at_least, one_of
from vitcli.specs import resolve_spec, resolve_variant


@dataclass(frozen=True, kw_only=True)
class CostRequest:
    models: tuple[str, ...] = ()
    variants: tuple[str, ...] = ()
    sizes: tuple[Pair, ...] = ()  # default: each model's native size
    measure: bool = False
    num_classes: int | None = None
    act_dtype: str = "float32"
    preset: str | None = None

    def __post_init__(self):
        object.__setattr__(self, "sizes", parse_pairs(self.sizes, "--size"))
        at_least("--num-classes", self.num_classes, 0)
        one_of("--dtype", self.act_dtype, tuple(DTYPE_BYTES))
        if self.preset and (self.models or self.variants or self.sizes):
            raise UsageError(f"--preset {self.preset} sets the models and size itself",
                             hint="drop --model/--variant/--size")
        if not self.preset and not self.models and not self.variants:
            raise UsageError("name at least one --model or --variant",
                             hint="e.g. vitcli cost --variant B/16 --size 224")


@dataclass(frozen=True)
class CostResult:
    rows: tuple[CostReport, ...]
    preset: dict | None = None  # core.presets.budget, with --preset

    def to_dict(self) -> list[dict] | dict:
        """A list of rows; with a preset, {"preset": budget, "rows": [...]}."""
        rows = [r.to_dict() for r in self.rows]
        return {"preset": self.preset, "rows": rows} if self.preset else rows


def run_cost(req: CostRequest) -> CostResult:
    """One row per (model or variant) x size, in the order given; with a preset, its models at its size plus
    the per-frame budget."""
    if req.preset:
        from vitcli.core.presets import budget, get_preset

        p = get_preset(req.preset)
        result = run_cost(replace(req, preset=None, models=p.models, sizes=(p.size,)))
        return replace(result, preset=budget(p, [resolve_spec(m, p.size) for m in p.models]))
    rows = []
    for kind, name in [("model", m) for m in req.models] + [("variant", v) for v in req.variants]:
        for size in req.sizes or (None,):
            spec = (resolve_spec if kind == "model" else resolve_variant)(name, size, req.num_classes)
            layout = spec.layout()
            if layout.non_divisible:
                raise UsageError(
                    f"--size {fmt_pair(spec.img_size)} is not a multiple of {name}'s patch {fmt_pair(spec.patch_size)}",
                    hint=f"`vitcli tokens --size {fmt_pair(spec.img_size)} --patch {fmt_pair(spec.patch_size)}` "
                         "shows what padding or dropping the remainder gives")
            report = cost_report(spec, req.act_dtype, model=name if kind == "model" else None)
            if req.measure:
                from vitcli.backend.arch import measure_flops  # imports torch

                measured = measure_flops(spec.pretrained_name if kind == "variant" else name, spec.img_size,
                                         req.num_classes)
                measured["diff"] = measured["flops"] / report.flops - 1
                report = replace(report, measured=measured)
            rows.append(report)
    return CostResult(tuple(rows))
