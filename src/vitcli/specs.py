"""Turn what the user named (a timm model, a variant) into a ViTSpec, importing torch only when needed."""

from __future__ import annotations

from vitcli.core.spec import ViTSpec, known_spec, variant_spec
from vitcli.core.tokens import Pair


def resolve_spec(model: str, img_size: Pair | None = None, num_classes: int | None = None) -> ViTSpec:
    """The spec of timm model `model` built at `img_size`.

    Names in vitcli's table (with no tag or a tag it knows) answer without torch; any other timm name, tag,
    or `local-dir:` source is read from timm itself on the meta device.
    """
    spec = known_spec(model)
    if spec is None:
        from vitcli.backend.arch import spec_from_timm  # imports torch

        spec = spec_from_timm(model, img_size, num_classes)
    return spec.at_size(img_size).with_classes(num_classes)


def resolve_variant(variant: str, img_size: Pair | None = None, num_classes: int | None = None) -> ViTSpec:
    return variant_spec(variant).at_size(img_size).with_classes(num_classes)
