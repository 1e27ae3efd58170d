"""`vitcli attention`: where a ViT attends — one block's heads, or the rollout over all blocks — over the image."""

from __future__ import annotations

from dataclasses import dataclass, field

from vitcli.errors import UsageError
from vitcli.outputs import check_targets, save_picture
from vitcli.progress import SILENT, Reporter
from vitcli.requests import RANDOM_PICTURES, ModelRequest
from vitcli.results import ModelInfo


@dataclass(frozen=True, kw_only=True)
class AttentionRequest:
    image: str
    model: ModelRequest
    layer: int = -1  # block (0-based; negative from the end)
    head: str = "mean"  # mean, or a head index
    rollout: bool = False
    discard_ratio: float = 0.0
    out: str | None = None
    npy: str | None = None
    force: bool = False

    def __post_init__(self):
        if not self.rollout and self.discard_ratio:
            raise UsageError("--discard-ratio goes with --rollout")
        if not 0 <= self.discard_ratio < 1:
            raise UsageError(f"--discard-ratio {self.discard_ratio} must be in [0, 1)")
        if self.head != "mean" and (self.rollout or not self.head.isdigit()):
            raise UsageError(f"--head {self.head!r}: give mean" + ("" if self.rollout else " or a head index"))


@dataclass(frozen=True)
class AttentionResult:
    model: ModelInfo
    image: str
    layer: int | None  # None with rollout
    rollout: bool
    heads: int
    tokens: int
    grid: tuple
    cls_token: bool
    registers: int
    map_source: str
    prefix_attention: dict  # CLS -> CLS and -> each register (heads averaged), when the model has CLS
    outputs: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        return {"model": self.model.to_dict(), "image": self.image, "layer": self.layer, "rollout": self.rollout,
                "heads": self.heads, "tokens": self.tokens, "grid": list(self.grid), "cls_token": self.cls_token,
                "registers": self.registers, "map_source": self.map_source,
                "prefix_attention": self.prefix_attention, "outputs": self.outputs}


def run_attention(req: AttentionRequest, ui: Reporter = SILENT) -> AttentionResult:
    """Attention of one block (heads, T, T), or the rollout over all blocks (T, T), drawn over the image."""
    import numpy as np

    from vitcli import draw
    from vitcli.backend import internals
    from vitcli.backend.data import pil_stages
    from vitcli.backend.models import load_model
    from vitcli.export import save_npy
    from vitcli.inputs import open_single

    check_targets([req.out, req.npy], req.force)
    loaded = open_single(req.image)  # a bad image (or video frame) fails here, before the model loads
    if not req.model.pretrained:
        ui.warn(RANDOM_PICTURES)
    model = load_model(req.model)
    info = model.info
    block = None if req.rollout else info.block_index(req.layer)
    if req.head != "mean" and int(req.head) >= info.num_heads:
        raise UsageError(f"--head {req.head!r}: give mean or 0..{info.num_heads - 1}")
    att = internals.attention_of(model, loaded.image, block, req.discard_ratio)
    a, lay = att.probs, att.layout
    p, grid, heads = lay.prefix, lay.grid, att.probs.shape[0]
    if lay.has_cls:
        per_head = a[:, 0, p:]  # (heads, N): what the CLS query attends to
        source = "CLS token's attention to each patch"
        prefix_att = {"cls": float(a[:, 0, 0].mean()),
                      "registers": [float(a[:, 0, 1 + r].mean()) for r in range(lay.registers)]}
    else:
        per_head = a[:, :, p:].mean(axis=1)  # (heads, N): attention each patch receives, averaged over queries
        source = "attention each patch receives, averaged over all queries (no CLS token)"
        prefix_att = {}
    maps = [("rollout" if req.rollout else "mean of heads", per_head.mean(axis=0).reshape(grid))]
    if not req.rollout:
        chosen = range(heads) if req.head == "mean" else [int(req.head)]
        maps = ([maps[0]] if req.head == "mean" else []) + [(f"head {h}", per_head[h].reshape(grid)) for h in chosen]
    what = ("attention rollout over all blocks" + (f", discard ratio {req.discard_ratio}" if req.discard_ratio else "")
            if req.rollout else f"block {block} of {info.depth}")
    lines = [f"{info.name}: {what}; {source}."]
    if prefix_att:
        lines.append(f"CLS attends to itself {prefix_att['cls']:.3f}" + (
            "; to registers " + ", ".join(f"{v:.3f}" for v in prefix_att["registers"]) if lay.registers else "")
            + " (heads averaged; patches share the rest).")
    if not info.pretrained:
        lines.append("Random weights (--no-pretrained): these maps show the pipeline, not what a trained ViT "
                     "attends to.")
    outputs = {}
    if req.out:
        picture = pil_stages(info.data_config)(loaded.image)
        save_picture(draw.attention_picture(picture, maps, lines), req.out)
        outputs["picture"] = req.out
    if req.npy:
        save_npy(a.astype(np.float32), req.npy)
        outputs["npy"] = req.npy
    return AttentionResult(info, req.image, block, req.rollout, heads, a.shape[-1], grid, lay.has_cls, lay.registers,
                           source, prefix_att, outputs)
