"""Look inside a timm ViT: attention probabilities, attention rollout, position-embedding similarity, and
per-block token statistics.

Attention: timm's fused attention (`F.scaled_dot_product_attention`) never materialises the probabilities, so
vitcli switches it off for the blocks it reads; timm's own unfused path then computes
softmax(q·scale @ kᵀ) (after any q/k norm the model has) and passes it through `attn_drop` (identity in eval),
where a forward hook records it. Nothing is recomputed outside timm.
"""

from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass

import numpy as np
import torch

from vitcli.backend.data import eval_transform
from vitcli.backend.models import LoadedModel
from vitcli.errors import ModelError, UsageError


def model_input(model: LoadedModel, image) -> torch.Tensor:
    """A PIL image through the model's own timm eval transform: (1, 3, H, W) on the model's device."""
    return eval_transform(model.info.data_config)(image).unsqueeze(0).to(model.info.device)


@dataclass(frozen=True)
class TokenGrid:
    """Where the patch tokens sit in the sequence: `prefix` tokens (CLS first, then registers), then the grid."""

    grid: tuple[int, int]
    prefix: int
    has_cls: bool

    @property
    def registers(self) -> int:
        return self.prefix - int(self.has_cls)


def token_grid(module: torch.nn.Module, size) -> TokenGrid:
    """The token layout of a timm ViT for inputs of `size` (H, W) px: timm's `num_prefix_tokens` and the patch
    grid its patch embedding gives that size (`dynamic_feat_size`; whole patches where it has none)."""
    pe = module.patch_embed
    if hasattr(pe, "dynamic_feat_size"):
        grid = tuple(int(g) for g in pe.dynamic_feat_size(tuple(size)))
    else:
        grid = (int(size[0]) // pe.patch_size[0], int(size[1]) // pe.patch_size[1])
    return TokenGrid(grid, int(module.num_prefix_tokens), getattr(module, "cls_token", None) is not None)


@dataclass(frozen=True)
class Attention:
    """Attention probabilities of one image: (heads, T, T) of one block, or (1, T, T) for the rollout."""

    probs: np.ndarray
    layout: TokenGrid
    block: int | None  # None: rollout over all blocks


@contextmanager
def recording_attention(module: torch.nn.Module, blocks: list[int], in_graph: bool = False):
    """Yield a dict block -> list of (B, heads, T, T) probabilities recorded during forwards inside.

    timm's fused attention is switched off for those blocks (and back afterwards, even on failure) so its own
    unfused path computes the probabilities, recorded where they leave `attn_drop`. `in_graph`: keep them in
    the autograd graph with their `.grad` retained (gradient methods), instead of detached float copies."""
    seen: dict[int, list] = {b: [] for b in blocks}
    hooks, fused = [], {}

    def record(b):
        def hook(mod, inputs, out):
            if in_graph and out.requires_grad:
                out.retain_grad()
            seen[b].append(out if in_graph else out.detach().float())
        return hook

    for b in blocks:
        attn = module.blocks[b].attn
        if not (hasattr(attn, "fused_attn") and hasattr(attn, "attn_drop")):
            raise ModelError(f"block {b} uses {type(attn).__name__}, whose attention vitcli cannot read",
                             hint="use a timm ViT with standard attention (ViT, DeiT, DINOv2, SigLIP, CLIP)")
        fused[b] = attn.fused_attn
        attn.fused_attn = False
        hooks.append(attn.attn_drop.register_forward_hook(record(b)))
    try:
        yield seen
    finally:
        for h in hooks:
            h.remove()
        for b, f in fused.items():
            module.blocks[b].attn.fused_attn = f


def attention(model: LoadedModel, x: torch.Tensor, blocks: list[int]) -> dict[int, np.ndarray]:
    """Attention probabilities of `blocks` for the batch x: block -> (B, heads, T, T), rows sum to 1."""
    with torch.inference_mode(), recording_attention(model.module, blocks) as seen:
        model.module.forward_features(x)
    return {b: seen[b][0].cpu().numpy() for b in blocks}


def rollout(attns: list[np.ndarray], discard_ratio: float = 0.0) -> np.ndarray:
    """Attention rollout (Abnar & Zuidema, 2020) over blocks in order, for one image.

    Each block: heads averaged; with `discard_ratio`, that fraction of the lowest entries set to 0 (never the
    CLS-to-CLS entry, as in Gildenblat's reference); identity added for the residual connection; rows
    renormalised. The result is the product A_L ... A_1: (T, T), rows sum to 1.
    """
    if not 0 <= discard_ratio < 1:
        raise UsageError(f"--discard-ratio {discard_ratio} must be in [0, 1)")
    t = attns[0].shape[-1]
    result = np.eye(t)
    for a in attns:  # a: (heads, T, T)
        fused = a.mean(axis=0).astype(np.float64)
        if discard_ratio:
            flat = fused.reshape(-1)
            drop = np.argsort(flat, kind="stable")[: int(flat.size * discard_ratio)]
            flat[drop[drop != 0]] = 0
        fused = fused + np.eye(t)
        fused /= fused.sum(axis=-1, keepdims=True)
        result = fused @ result
    return result


def position_embedding(model: LoadedModel, size: tuple[int, int] | None = None) -> tuple[np.ndarray, tuple[int, int]]:
    """The patch position embeddings (N, D) and their grid; resampled by timm to `size` when given."""
    from timm.layers import resample_abs_pos_embed

    m = model.module
    pos = getattr(m, "pos_embed", None)
    if not isinstance(pos, torch.nn.Parameter) or pos.ndim != 3:
        raise ModelError(f"{model.info.name} has no learned absolute position embedding",
                         hint="models with rotary (RoPE) or relative position encodings carry position inside "
                              "attention; posembed needs a ViT with a pos_embed table (ViT, DeiT, DINOv2, SigLIP, "
                              "CLIP)")
    prefix = 0 if getattr(m, "no_embed_class", False) else m.num_prefix_tokens
    grid = tuple(m.patch_embed.grid_size)
    table = pos.detach().float()
    if size is not None:
        ph, pw = m.patch_embed.patch_size
        new = (size[0] // ph, size[1] // pw)
        if new[0] < 1 or new[1] < 1:
            raise UsageError(f"--size {size[0]}x{size[1]} is smaller than one patch ({ph}x{pw})")
        table = resample_abs_pos_embed(table, new_size=list(new), old_size=list(grid), num_prefix_tokens=prefix)
        grid = new
    return table[0, prefix:].cpu().numpy(), grid


def cosine_matrix(v: np.ndarray) -> np.ndarray:
    """(N, D) -> (N, N) cosine similarities."""
    v = v.astype(np.float64)
    v = v / np.linalg.norm(v, axis=-1, keepdims=True).clip(min=1e-12)
    return v @ v.T


def attention_of(model: LoadedModel, image, block: int | None, discard_ratio: float = 0.0) -> Attention:
    """The attention of `image` in block `block` (0-based), or the rollout over every block when None."""
    x = model_input(model, image)
    if block is None:
        blocks = list(range(len(model.module.blocks)))
        attns = attention(model, x, blocks)
        probs = rollout([attns[b][0] for b in blocks], discard_ratio)[None]  # (1, T, T)
    else:
        probs = attention(model, x, [block])[block][0]  # (heads, T, T)
    return Attention(probs, token_grid(model.module, x.shape[-2:]), block)


@dataclass(frozen=True, eq=False)
class Recording:
    """One image through the model, everything in numpy.

    attention (L, H, T, T) float32, rows sum to 1; tokens (L, T, D) float32 block outputs; logits (C,) float32
    or None without a classifier; layout: the grid (gh, gw) and the prefix tokens.
    """

    attention: np.ndarray
    tokens: np.ndarray
    logits: np.ndarray | None
    layout: TokenGrid


def record(model: LoadedModel, x: torch.Tensor) -> Recording:
    """One forward pass of the (1, 3, H, W) input x recording every block's attention and output tokens."""
    m = model.module
    blocks = getattr(m, "blocks", None)
    if blocks is None or len(blocks) == 0:
        raise ModelError(f"{model.info.name} has no transformer blocks",
                         hint="use a timm ViT (ViT, DeiT, DINOv2, SigLIP, CLIP)")
    if x.shape[0] != 1:
        raise ValueError(f"record takes one image, got a batch of {x.shape[0]}")
    idx = list(range(len(blocks)))
    outs: dict[int, torch.Tensor] = {}
    hooks = [blocks[b].register_forward_hook(lambda mod, i, o, b=b: outs.__setitem__(b, o.detach().float()))
             for b in idx]
    head = model.info.num_classes > 0
    try:
        with torch.inference_mode(), recording_attention(m, idx) as seen:
            y = m(x) if head else m.forward_features(x)
    finally:
        for h in hooks:
            h.remove()
    if any(len(seen[b]) != 1 for b in idx) or len(outs) != len(idx):
        raise ModelError(f"{model.info.name}: its blocks did not run once each in the forward pass",
                         hint="use a timm ViT whose forward runs every block once")
    attention = np.stack([seen[b][0][0].cpu().numpy() for b in idx])  # (L, H, T, T)
    tokens = np.stack([outs[b][0].cpu().numpy() for b in idx])  # (L, T, D)
    logits = y[0].detach().float().cpu().numpy() if head else None
    return Recording(attention.astype(np.float32), tokens.astype(np.float32), logits,
                     token_grid(model.module, x.shape[-2:]))


def block_stats(model: LoadedModel, image) -> list[dict]:
    """Per block, for one image: patch-token norms (mean, median, max, max/median: high-norm outliers are the
    register artifact), entropy of the CLS token's attention (nats, heads averaged), and the cosine similarity
    of the CLS output to the mean patch output. CLS fields are None for a model without CLS."""
    rec = record(model, model_input(model, image)[:1])
    p, has_cls = rec.layout.prefix, rec.layout.has_cls
    rows = []
    for b in range(len(rec.tokens)):
        tokens = torch.from_numpy(rec.tokens[b])  # (T, D)
        norms = tokens[p:].norm(dim=-1)
        row = {"block": b, "norm_mean": float(norms.mean()), "norm_median": float(norms.median()),
               "norm_max": float(norms.max()), "max_over_median": float(norms.max() / norms.median()),
               "cls_attention_entropy": None, "cls_cos_mean_patch": None}
        if has_cls:
            a = torch.from_numpy(rec.attention[b, :, 0, :])  # (heads, T): the CLS query's attention
            row["cls_attention_entropy"] = float(-(a * a.clamp(min=1e-12).log()).sum(-1).mean())
            cos = torch.nn.functional.cosine_similarity(tokens[0], tokens[p:].mean(0), dim=0)
            row["cls_cos_mean_patch"] = float(cos)
        rows.append(row)
    return rows
