"""Everything `vitcli explore` shows, from ONE forward pass of a timm ViT over one image.

The forward records, with timm's own machinery and nothing recomputed outside it:
- every block's attention probabilities (heads, T, T): `internals.recording_attention` switches fused attention
  off and hooks timm's unfused path (softmax(q·scale @ kᵀ) through `attn_drop`);
- every block's output tokens (T, D), as the block emits them (no final norm): a forward hook per block, the
  same tensors `forward_intermediates(norm=False)` returns and `vitcli features --layer K` saves;
- the logits, when the model has a classifier (`num_classes > 0`): the forward is then `model(x)`, else
  `model.forward_features(x)`.

Then, in numpy (float64): the attention rollout up to each block (`internals.rollout` of blocks 0..l, chained
one block at a time: the same products), the cosine similarity of every pair of patch tokens per block, and the
PCA colours of the patch tokens per block (`vitcli.pca.pca_maps`, 3 components, one fit per block).

Token order everywhere: prefix tokens first (CLS at 0 when present, then the registers), then the patches row by
row. T = prefix + N, N = gh * gw.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from vitcli.backend import internals
from vitcli.backend.models import LoadedModel, label_names
from vitcli.errors import ModelError

TOP_K = 5


@dataclass(frozen=True, eq=False)
class ExploreArrays:
    """What the page embeds, before quantisation (`vitcli.explore_page.page_data` takes these).

    attention (L, H, T, T) float32; rollout (L, T, T) float64, rollout[l] chains blocks 0..l; similarity
    (L, N, N) float64 cosine in [-1, 1]; pca (L, gh, gw, 3) float32 in [0, 1], or None when there are fewer
    than 3 patches; top5: [{index, label, prob}] most probable first, or None without a classifier.
    """

    attention: np.ndarray
    rollout: np.ndarray
    similarity: np.ndarray
    pca: np.ndarray | None
    top5: list | None
    layout: internals.TokenGrid
    pca_variance: list | None = None  # per block: explained variance ratio of the 3 components


def rollouts(attention: np.ndarray) -> np.ndarray:
    """(L, H, T, T) attention -> (L, T, T) float64: rollout[l] = `internals.rollout(attention[:l + 1])`.

    Chained one block at a time (rollout of one block is its heads' mean plus the identity, rows renormalised;
    the product of those in block order is the rollout of several), so L blocks cost L matrix products."""
    out = np.empty((attention.shape[0], *attention.shape[-2:]))
    for layer, a in enumerate(attention):
        step = internals.rollout([a])  # (T, T)
        out[layer] = step if layer == 0 else step @ out[layer - 1]
    return out


def similarities(patches: np.ndarray) -> np.ndarray:
    """(L, N, D) patch tokens -> (L, N, N) float64 cosine similarity per block, clipped to [-1, 1]."""
    return np.stack([np.clip(internals.cosine_matrix(p), -1.0, 1.0) for p in patches])


def pca_colours(patches: np.ndarray, grid: tuple[int, int]) -> tuple[np.ndarray | None, list | None]:
    """(L, N, D) patch tokens -> ((L, gh, gw, 3) float32 in [0, 1], explained variance ratios per block), one
    `vitcli.pca.pca_maps` fit per block (joint over its patches, 1st-99th percentile scaling, svd_flip signs);
    (None, None) when fewer than 3 patches or channels make 3 components meaningless."""
    from vitcli import pca

    n_blocks, n, d = patches.shape
    if n < 3 or d < 3:
        return None, None
    maps, ratios = [], []
    for p in patches:
        result = pca.pca_maps(p.reshape(1, *grid, d), components=3)
        maps.append(result.maps[0])
        ratios.append([float(v) for v in result.fits[0].explained_variance_ratio])
    return np.stack(maps).astype(np.float32), ratios


def top_classes(model: LoadedModel, logits: np.ndarray | None, k: int = TOP_K) -> list | None:
    """The k most probable classes, softmax of the logits in float64: [{index, label, prob}], or None."""
    if logits is None:
        return None
    z = logits.astype(np.float64)
    p = np.exp(z - z.max())
    p /= p.sum()
    names = label_names(model)
    order = np.lexsort((np.arange(p.size), -p))[:k]  # most probable first, ties by class index
    return [{"index": int(i), "label": names[i], "prob": float(p[i])} for i in order]


def explore_arrays(model: LoadedModel, x: torch.Tensor) -> ExploreArrays:
    """Everything the page shows for the (1, 3, H, W) input x (`internals.model_input`), from one forward."""
    rec = internals.record(model, x)
    p, (gh, gw) = rec.layout.prefix, rec.layout.grid
    patches = rec.tokens[:, p:]  # (L, N, D)
    if patches.shape[1] != gh * gw:
        raise ModelError(f"{model.info.name}: {patches.shape[1]} patch tokens for a {gh}x{gw} grid",
                         hint="use a timm ViT whose tokens are the prefix then one per patch")
    pca, ratios = pca_colours(patches, (gh, gw))
    return ExploreArrays(attention=rec.attention, rollout=rollouts(rec.attention), similarity=similarities(patches),
                         pca=pca, top5=top_classes(model, rec.logits), layout=rec.layout, pca_variance=ratios)
