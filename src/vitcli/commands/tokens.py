"""`vitcli tokens`: the token layout for image sizes x patch sizes, or for a timm model."""

from __future__ import annotations

from dataclasses import dataclass, replace

from vitcli.commands.specs import resolve_spec
from vitcli.core.tokens import TokenLayout, parse_pair, token_layout
from vitcli.errors import UsageError


@dataclass(frozen=True)
class TokensResult:
    layouts: tuple[TokenLayout, ...]
    preset: dict | None = None  # core.presets.budget, with --preset

    def to_dict(self) -> dict | list[dict]:
        """One layout -> one object; several -> a list, in the order size x patch; a preset ->
        {"preset": budget, "encoders": [...]}."""
        rows = [layout.to_dict() for layout in self.layouts]
        if self.preset:
            return {"preset": self.preset, "encoders": rows}
        return rows[0] if len(rows) == 1 else rows


def run_tokens(sizes: list[str], patches: list[str], cls_token: bool | None = None, registers: int | None = None,
               model: str | None = None, preset: str | None = None) -> TokensResult:
    """Token layouts for every size x patch. With `model`, unset values come from that timm model; with
    `preset`, one layout per model of the preset at its size, and the budget the language model sees."""
    if preset:
        from vitcli.core.presets import budget, get_preset

        p = get_preset(preset)
        if sizes or patches or model or cls_token is not None or registers is not None:
            raise UsageError(f"--preset {p.name} sets the models and size itself",
                             hint="drop --size/--patch/--model/--cls/--registers")
        specs = [resolve_spec(m, p.size) for m in p.models]
        return TokensResult(tuple(replace(s.layout(), model=m) for s, m in zip(specs, p.models)), budget(p, specs))
    size_pairs = [parse_pair(s, "--size") for s in sizes]
    patch_pairs = [parse_pair(p, "--patch") for p in patches]
    if model is not None:
        spec = resolve_spec(model)
        size_pairs = size_pairs or [spec.img_size]
        patch_pairs = patch_pairs or [spec.patch_size]
        cls_token = spec.class_token if cls_token is None else cls_token
        registers = spec.reg_tokens if registers is None else registers
    if not size_pairs or not patch_pairs:
        missing = "--size" if not size_pairs else "--patch"
        raise UsageError(f"{missing} is needed without --model", hint="e.g. vitcli tokens --size 384 --patch 16")
    layouts = tuple(
        token_layout(s, p, True if cls_token is None else cls_token, registers or 0, model=model)
        for s in size_pairs for p in patch_pairs
    )
    return TokensResult(layouts)
