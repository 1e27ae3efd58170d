"""`vitcli variants`: the ViT family as people know it, with timm's names and exact parameter counts."""

from __future__ import annotations

from dataclasses import dataclass

from vitcli.core.spec import VARIANTS, ViTSpec


@dataclass(frozen=True)
class VariantsResult:
    variants: tuple[ViTSpec, ...]

    def to_dict(self) -> list[dict]:
        return [v.to_dict() for v in self.variants]


def run_variants(family: str | None = None) -> VariantsResult:
    """All variants, or those of one family (vit, deit, dinov2, siglip, clip; checked by the CLI's choice)."""
    return VariantsResult(tuple(v for v in VARIANTS if family is None or v.family.lower() == family.lower()))
