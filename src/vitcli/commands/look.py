"""`vitcli attention`, `vitcli posembed`, `vitcli inspect`: what the transformer does with the tokens."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from vitcli.commands.common import ModelRequest, load
from vitcli.core.tokens import parse_pair
from vitcli.errors import UsageError
from vitcli.outputs import check_targets, save_picture


def _prepare(image: str, request: ModelRequest):
    """(model, normalised batch (1, 3, H, W), the preprocessed picture) — the model's own timm preprocessing."""
    from vitcli.backend.data import eval_transform, pil_stages
    from vitcli.imaging import open_image

    loaded = open_image(image)  # a bad image fails here, before the model loads
    model = load(request)
    cfg = model.info.data_config
    x = eval_transform(cfg)(loaded.image).unsqueeze(0).to(model.info.device)
    return model, x, pil_stages(cfg)(loaded.image)


@dataclass(frozen=True)
class AttentionResult:
    model: object  # ModelInfo
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


def run_attention(image: str, request: ModelRequest, layer: int = -1, head: str = "mean", use_rollout: bool = False,
                  discard_ratio: float = 0.0, out: str | None = None, npy: str | None = None,
                  force: bool = False) -> AttentionResult:
    """Attention of one block (heads, T, T), or the rollout over all blocks (T, T), drawn over the image."""
    import numpy as np

    from vitcli import draw
    from vitcli.backend import inspect
    from vitcli.backend.models import block_index
    from vitcli.export import save_npy

    check_targets([out, npy], force)
    if not use_rollout and discard_ratio:
        raise UsageError("--discard-ratio goes with --rollout")
    if head != "mean" and (use_rollout or not head.isdigit()):
        raise UsageError(f"--head {head!r}: give mean" + ("" if use_rollout else " or a head index"))
    model, x, picture = _prepare(image, request)
    m = model.module
    grid = tuple(m.patch_embed.dynamic_feat_size(x.shape[-2:]))
    p, has_cls = m.num_prefix_tokens, getattr(m, "cls_token", None) is not None
    regs = p - int(has_cls)
    if use_rollout:
        blocks = list(range(len(m.blocks)))
        attns = inspect.attention(model, x, blocks)
        a = inspect.rollout([attns[b][0] for b in blocks], discard_ratio)[None]  # (1, T, T)
        k = None
    else:
        k = block_index(model, layer)
        heads = m.blocks[k].attn.num_heads
        if head != "mean" and int(head) >= heads:
            raise UsageError(f"--head {head!r}: give mean or 0..{heads - 1}")
        a = inspect.attention(model, x, [k])[k][0]  # (heads, T, T)
    heads = a.shape[0]
    if has_cls:
        per_head = a[:, 0, p:]  # (heads, N): what the CLS query attends to
        source = "CLS token's attention to each patch"
        prefix_att = {"cls": float(a[:, 0, 0].mean()),
                      "registers": [float(a[:, 0, 1 + r].mean()) for r in range(regs)]}
    else:
        per_head = a[:, :, p:].mean(axis=1)  # (heads, N): attention each patch receives, averaged over queries
        source = "attention each patch receives, averaged over all queries (no CLS token)"
        prefix_att = {}
    maps = [("rollout" if use_rollout else "mean of heads", per_head.mean(axis=0).reshape(grid))]
    if not use_rollout:
        chosen = range(heads) if head == "mean" else [int(head)]
        maps = ([maps[0]] if head == "mean" else []) + [(f"head {h}", per_head[h].reshape(grid)) for h in chosen]
    what = "attention rollout over all blocks" + (f", discard ratio {discard_ratio}" if discard_ratio else "") \
        if use_rollout else f"block {k} of {len(m.blocks)}"
    lines = [f"{model.info.name}: {what}; {source}."]
    if prefix_att:
        lines.append(f"CLS attends to itself {prefix_att['cls']:.3f}" + (
            "; to registers " + ", ".join(f"{v:.3f}" for v in prefix_att["registers"]) if regs else "")
            + " (heads averaged; patches share the rest).")
    if not model.info.pretrained:
        lines.append("Random weights (--no-pretrained): these maps show the pipeline, not what a trained ViT attends to.")
    outputs = {}
    if out:
        save_picture(draw.attention_picture(picture, maps, lines), out)
        outputs["picture"] = out
    if npy:
        save_npy(a.astype(np.float32), npy)
        outputs["npy"] = npy
    return AttentionResult(model.info, image, k, use_rollout, heads, a.shape[-1], grid, has_cls, regs, source,
                           prefix_att, outputs)


@dataclass(frozen=True)
class PosembedResult:
    model: object
    grid: tuple
    resampled: bool
    neighbour_similarity: float  # mean cosine of 4-neighbour positions
    far_similarity: float  # mean cosine of positions at least half the grid apart
    outputs: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        return {"model": self.model.to_dict(), "grid": list(self.grid), "positions": self.grid[0] * self.grid[1],
                "resampled": self.resampled, "neighbour_similarity": self.neighbour_similarity,
                "far_similarity": self.far_similarity, "outputs": self.outputs}


def run_posembed(request: ModelRequest, size: str | None = None, out: str | None = None, npy: str | None = None,
                 force: bool = False) -> PosembedResult:
    """Cosine similarity between every pair of patch position embeddings, (N, N), drawn as ViT's figure 7."""
    import numpy as np

    from vitcli import draw
    from vitcli.backend import inspect
    from vitcli.export import save_npy

    check_targets([out, npy], force)
    model = load(request)
    size_pair = parse_pair(size, "--size") if size else None
    table, grid = inspect.position_embedding(model, size_pair)
    sim = inspect.cosine_matrix(table)
    gh, gw = grid
    r, c = np.divmod(np.arange(gh * gw), gw)
    dist = np.abs(r[:, None] - r[None]) + np.abs(c[:, None] - c[None])
    near = float(sim[dist == 1].mean()) if (dist == 1).any() else float("nan")
    far_mask = dist >= max(1, (gh + gw) // 2)
    far = float(sim[far_mask].mean()) if far_mask.any() else float("nan")
    outputs = {}
    if out:
        save_picture(draw.similarity_picture(sim, grid), out)
        outputs["picture"] = out
    if npy:
        save_npy(sim.astype(np.float32), npy)
        outputs["npy"] = npy
    return PosembedResult(model.info, grid, size_pair is not None, near, far, outputs)


@dataclass(frozen=True)
class InspectResult:
    model: object
    image: str
    rows: tuple

    def to_dict(self) -> dict:
        return {"model": self.model.to_dict(), "image": self.image, "blocks": list(self.rows)}


def run_inspect(image: str, request: ModelRequest) -> InspectResult:
    from vitcli.backend import inspect

    model, x, _ = _prepare(image, request)
    return InspectResult(model.info, str(Path(image)), tuple(inspect.block_stats(model, x)))
