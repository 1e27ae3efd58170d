"""`vitcli cost`: parameters, MACs/FLOPs and memory for models x sizes, analytic and optionally measured."""

from __future__ import annotations

from dataclasses import dataclass, replace

from vitcli.commands.common import check_num_classes
from vitcli.commands.specs import resolve_spec, resolve_variant
from vitcli.core.cost import DTYPE_BYTES, CostReport, cost_report
from vitcli.core.tokens import fmt_pair, parse_pair
from vitcli.errors import UsageError


@dataclass(frozen=True)
class CostResult:
    rows: tuple[CostReport, ...]
    preset: dict | None = None  # core.presets.budget, with --preset

    def to_dict(self) -> list[dict] | dict:
        """A list of rows; with a preset, {"preset": budget, "rows": [...]}."""
        rows = [r.to_dict() for r in self.rows]
        return {"preset": self.preset, "rows": rows} if self.preset else rows


def run_cost(models: list[str], variants: list[str], sizes: list[str], measure: bool = False,
             num_classes: int | None = None, act_dtype: str = "float32", preset: str | None = None) -> CostResult:
    """One row per (model or variant) x size, in the order given. Sizes default to each model's native size.

    `preset`: its models at its size, plus the per-frame budget."""
    if preset:
        from vitcli.core.presets import budget, get_preset

        p = get_preset(preset)
        if models or variants or sizes:
            raise UsageError(f"--preset {p.name} sets the models and size itself", hint="drop --model/--variant/--size")
        result = run_cost(list(p.models), [], [f"{p.size[0]}x{p.size[1]}"], measure, num_classes, act_dtype)
        return replace(result, preset=budget(p, [resolve_spec(m, p.size) for m in p.models]))
    check_num_classes(num_classes)
    if not models and not variants:
        raise UsageError("name at least one --model or --variant", hint="e.g. vitcli cost --variant B/16 --size 224")
    if act_dtype not in DTYPE_BYTES:
        raise UsageError(f"--dtype {act_dtype!r} is not one of {', '.join(DTYPE_BYTES)}")
    size_pairs = [parse_pair(s, "--size") for s in sizes] or [None]
    rows = []
    for kind, name in [("model", m) for m in models] + [("variant", v) for v in variants]:
        for size in size_pairs:
            spec = (resolve_spec if kind == "model" else resolve_variant)(name, size, num_classes)
            layout = spec.layout()
            if layout.non_divisible:
                raise UsageError(
                    f"--size {fmt_pair(spec.img_size)} is not a multiple of {name}'s patch {fmt_pair(spec.patch_size)}",
                    hint=f"`vitcli tokens --size {fmt_pair(spec.img_size)} --patch {fmt_pair(spec.patch_size)}` "
                         "shows what padding or dropping the remainder gives")
            report = cost_report(spec, act_dtype, model=name if kind == "model" else None)
            if measure:
                from vitcli.backend.arch import measure_flops  # imports torch

                measured = measure_flops(spec.pretrained_name if kind == "variant" else name, spec.img_size,
                                         num_classes)
                measured["diff"] = measured["flops"] / report.flops - 1
                report = replace(report, measured=measured)
            rows.append(report)
    return CostResult(tuple(rows))
