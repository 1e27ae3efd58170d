"""`vitcli tokens`: the token layout for image sizes x patch sizes, or for a timm model."""

from __future__ import annotations

from dataclasses import dataclass, field, replace

from vitcli.core.tokens import Pair, TokenLayout, parse_pairs, token_layout
from vitcli.errors import UsageError


@dataclass(frozen=True, kw_only=True)
class TokensRequest:
    sizes: tuple[Pair, ...] = ()  # N or HxW text, parsed here
    patches: tuple[Pair, ...] = ()
    cls_token: bool | None = None  # None: yes, or the model's own
    registers: int | None = None
    model: str | None = None
    preset: str | None = None

    def __post_init__(self):
        object.__setattr__(self, "sizes", parse_pairs(self.sizes, "--size"))
        object.__setattr__(self, "patches", parse_pairs(self.patches, "--patch"))
        if self.registers is not None and self.registers < 0:
            raise UsageError(f"--registers {self.registers} must be 0 or more")
        if self.preset and (self.sizes or self.patches or self.model or self.cls_token is not None
                            or self.registers is not None):
            raise UsageError(f"--preset {self.preset} sets the models and size itself",
                             hint="drop --size/--patch/--model/--cls/--registers")
        if not self.preset and self.model is None and not (self.sizes and self.patches):
            missing = "--size" if not self.sizes else "--patch"
            raise UsageError(f"{missing} is needed without --model", hint="e.g. vitcli tokens --size 384 --patch 16")


@dataclass(frozen=True)
class TokensResult:
    layouts: tuple[TokenLayout, ...]
    preset: dict | None = field(default=None)  # core.presets.budget, with --preset

    def to_dict(self) -> dict | list[dict]:
        """One layout -> one object; several -> a list, in the order size x patch; a preset ->
        {"preset": budget, "encoders": [...]}."""
        rows = [layout.to_dict() for layout in self.layouts]
        if self.preset:
            return {"preset": self.preset, "encoders": rows}
        return rows[0] if len(rows) == 1 else rows


def run_tokens(req: TokensRequest) -> TokensResult:
    """Token layouts for every size x patch. With a model, unset values come from that timm model; with a
    preset, one layout per model of the preset at its size, and the budget the language model sees."""
    from vitcli.specs import resolve_spec  # the spec table: only with a model or preset

    if req.preset:
        from vitcli.core.presets import budget, get_preset

        p = get_preset(req.preset)
        specs = [resolve_spec(m, p.size) for m in p.models]
        return TokensResult(tuple(replace(s.layout(), model=m) for s, m in zip(specs, p.models)), budget(p, specs))
    sizes, patches, cls_token, registers = req.sizes, req.patches, req.cls_token, req.registers
    if req.model is not None:
        spec = resolve_spec(req.model)
        sizes = sizes or (spec.img_size,)
        patches = patches or (spec.patch_size,)
        cls_token = spec.class_token if cls_token is None else cls_token
        registers = spec.reg_tokens if registers is None else registers
    return TokensResult(tuple(token_layout(s, p, True if cls_token is None else cls_token, registers or 0,
                                           model=req.model) for s in sizes for p in patches))
