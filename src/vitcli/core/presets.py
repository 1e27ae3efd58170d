"""Presets: named recipes of models and settings, as data (no torch)."""

from __future__ import annotations

from dataclasses import dataclass

from vitcli.core.tokens import Pair
from vitcli.errors import UsageError


@dataclass(frozen=True)
class Preset:
    name: str
    models: tuple[str, ...]  # timm names, in channel order
    size: Pair  # every model is built at this size
    layer: int  # block index per model (negative from the end)
    mode: str
    squash: bool  # resize to `size` without cropping
    norm: bool  # final norm on the layer output
    about: str

    def to_dict(self) -> dict:
        return {"name": self.name, "models": list(self.models), "size": list(self.size), "layer": self.layer,
                "mode": self.mode, "squash": self.squash, "norm": self.norm, "about": self.about}


PRESETS = {
    "openvla": Preset(
        name="openvla",
        models=("vit_large_patch14_reg4_dinov2.lvd142m", "vit_so400m_patch14_siglip_224.webli"),
        size=(224, 224),
        layer=-2,
        mode="patch",
        squash=True,
        norm=False,
        about="OpenVLA's fused vision encoder (prismatic 'dinosiglip-vit-so-224px'): DINOv2 ViT-L/14 with 4 "
              "registers and SigLIP So400m/14, both at 224 px, patch tokens of each model's second-to-last "
              "block without the final norm, CLS and registers dropped, images squashed to 224x224 (no crop), "
              "each model's own mean and std; channels concatenated DINOv2 first",
    ),
}


def get_preset(name: str) -> Preset:
    try:
        return PRESETS[name.lower()]
    except KeyError:
        raise UsageError(f"--preset {name!r} is not known", hint=f"presets: {', '.join(PRESETS)}") from None


def budget(preset: Preset, specs: list) -> dict:
    """Per-frame cost of a preset from its models' specs (each at the preset's size), analytic.

    `macs_stop_early`: what the preset's model runs — each encoder up to the layer it reads, no head (timm
    `forward_intermediates(stop_early=True)`, as OpenVLA's `get_intermediate_layers` does); `macs_all_blocks`:
    every block, no head (`forward_features`, or `features` without --stop-early); `macs_heads`: the pooling
    heads and classifiers apart, which the preset never runs (a plain forward adds them). The language model
    receives the patch tokens of the layer, channels concatenated.
    """
    from vitcli.core.cost import macs_breakdown

    all_blocks = early = heads = 0
    grids = set()
    for spec in specs:
        layout = spec.layout()
        grids.add(layout.grid)
        parts = macs_breakdown(spec, layout)
        heads += parts.pop("head")
        all_blocks += sum(parts.values())
        used = preset.layer % spec.depth + 1  # blocks run to reach the layer
        early += sum(macs_breakdown(spec, layout, blocks=used, head=False).values())
    if len(grids) != 1:
        raise UsageError(f"--preset {preset.name}: its models' patch grids differ ({sorted(grids)})")
    (gh, gw), channels = grids.pop(), sum(s.embed_dim for s in specs)
    tokens = gh * gw
    return {
        **preset.to_dict(),
        "layers": [preset.layer % s.depth for s in specs],
        "depths": [s.depth for s in specs],
        "macs_stop_early": early,
        "macs_all_blocks": all_blocks,
        "macs_heads": heads,
        "flops_stop_early": 2 * early,
        "flops_all_blocks": 2 * all_blocks,
        "flops_heads": 2 * heads,
        "lm_tokens": tokens,
        "grid": [gh, gw],
        "channels": channels,
        "channels_per_model": [s.embed_dim for s in specs],
        "bytes_per_frame": {"float32": tokens * channels * 4, "bfloat16": tokens * channels * 2},
    }
