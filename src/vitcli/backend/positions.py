"""Position embeddings as experiments: what a ViT does without them, and what a structured one looks like.

- `shuffle_experiment`: shuffle the patches of an image and run timm's own `forward_features` twice, with the
  model's position embeddings and with them set to zero. Without positions a ViT is permutation-equivariant:
  the shuffled image's patch outputs are the original outputs shuffled the same way, and CLS / registers /
  pooled output do not change at all (up to float rounding). With positions they do. Random weights are
  enough to show it, so the figures are exact on any machine.
- `sincos_table`: the fixed 2-D sine-cosine embedding (MAE, MoCo v3, Beyer et al.'s simple ViT) from timm's own
  `build_sincos2d_pos_embed` — a reference whose neighbour > far structure is known without any download.
- `neighbour_far` / `similarity_figures`: the two numbers `vitcli posembed` prints, from one definition.
"""

from __future__ import annotations

import numpy as np
import torch

from vitcli.backend.internals import cosine_matrix
from vitcli.errors import ModelError, UsageError

# ---- the neighbour / far figures ----------------------------------------------------------------------------


def grid_distance(grid: tuple[int, int]) -> np.ndarray:
    """(N, N) Manhattan distance, in patches, between the positions of a row-major (gh, gw) grid; N = gh * gw."""
    gh, gw = grid
    r, c = np.divmod(np.arange(gh * gw), gw)
    return np.abs(r[:, None] - r[None]) + np.abs(c[:, None] - c[None])


def neighbour_far(sim: np.ndarray, grid: tuple[int, int]) -> tuple[float, float]:
    """(neighbour, far) mean cosine similarity from an (N, N) similarity matrix over a row-major grid.

    neighbour: mean over ordered pairs of 4-neighbours (Manhattan distance 1); far: mean over ordered pairs at
    Manhattan distance >= max(1, (gh + gw) // 2), "half the grid apart or more". NaN where no pair qualifies
    (a 1x1 grid). These are the figures of `vitcli posembed`.
    """
    gh, gw = grid
    if sim.shape != (gh * gw, gh * gw):
        raise ValueError(f"similarity matrix {sim.shape} does not match grid {gh}x{gw}")
    dist = grid_distance(grid)
    near_mask = dist == 1
    far_mask = dist >= max(1, (gh + gw) // 2)
    near = float(sim[near_mask].mean()) if near_mask.any() else float("nan")
    far = float(sim[far_mask].mean()) if far_mask.any() else float("nan")
    return near, far


def similarity_figures(table: np.ndarray, grid: tuple[int, int]) -> tuple[float, float]:
    """(neighbour, far) mean cosine similarity of an (N, D) position table laid out on a row-major grid."""
    return neighbour_far(cosine_matrix(table), grid)


# ---- a reference embedding -----------------------------------------------------------------------------------


def sincos_table(grid: tuple[int, int], dim: int) -> np.ndarray:
    """The fixed 2-D sine-cosine position embedding, (N, D) float32, N = gh * gw in row-major order.

    Made by timm's own `timm.layers.build_sincos2d_pos_embed` (temperature 10000). Each coordinate gets D/4
    frequencies 1 / 10000^(k / (D/4)), k = 0..D/4-1, as in MAE's `get_2d_sincos_pos_embed`; timm lays the
    channels out [sin(row) | sin(col) | cos(row) | cos(col)], MAE's released code [sin(col) | cos(col) |
    sin(row) | cos(row)]. The two differ only by a fixed permutation of the D channels, so every cosine
    similarity between positions is the same (tests/test_positions.py checks it against transformers'
    ViTMAE). D must be a multiple of 4.
    """
    from timm.layers import build_sincos2d_pos_embed

    gh, gw = grid
    if gh < 1 or gw < 1:
        raise UsageError(f"grid {gh}x{gw} must be at least 1x1")
    if dim < 4 or dim % 4:
        raise UsageError(f"dimension {dim} must be a positive multiple of 4 for a 2-D sine-cosine embedding")
    return build_sincos2d_pos_embed([gh, gw], dim=dim).numpy()


# ---- the shuffle experiment -----------------------------------------------------------------------------------


def shuffle_patches(images, perm, patch: tuple[int, int]):
    """Move the patches of images in pixel space: output patch i is input patch perm[i] (row-major).

    `images`: (B, C, H, W) torch tensor or numpy array, or (H, W) / (H, W, C) numpy array (a picture);
    H and W must be multiples of the patch (ph, pw). Returns the same type and shape. Pixels are only moved,
    never changed, so the shuffled picture can be drawn beside the model's input.
    """
    ph, pw = patch
    chw = images.ndim == 4
    h, w = (images.shape[-2], images.shape[-1]) if chw else (images.shape[0], images.shape[1])
    if h % ph or w % pw:
        raise UsageError(f"a {h}x{w} image does not split into whole {ph}x{pw} patches",
                         hint="use an image size that is a multiple of the patch size")
    gh, gw = h // ph, w // pw
    perm = np.asarray(perm)
    if sorted(perm.tolist()) != list(range(gh * gw)):
        raise ValueError(f"not a permutation of the {gh * gw} patches")
    if chw:
        b, c = images.shape[:2]
        p = images.reshape(b, c, gh, ph, gw, pw).permute(0, 2, 4, 1, 3, 5) if torch.is_tensor(images) else \
            images.reshape(b, c, gh, ph, gw, pw).transpose(0, 2, 4, 1, 3, 5)
        p = p.reshape(b, gh * gw, c, ph, pw)[:, torch.as_tensor(perm) if torch.is_tensor(images) else perm]
        p = p.reshape(b, gh, gw, c, ph, pw)
        p = p.permute(0, 3, 1, 4, 2, 5) if torch.is_tensor(images) else p.transpose(0, 3, 1, 4, 2, 5)
        return p.reshape(b, c, h, w)
    tail = images.shape[2:]
    p = images.reshape(gh, ph, gw, pw, *tail).swapaxes(1, 2).reshape(gh * gw, ph, pw, *tail)[perm]
    return p.reshape(gh, gw, ph, pw, *tail).swapaxes(1, 2).reshape(images.shape)


def _module(model) -> torch.nn.Module:
    """A LoadedModel's timm module, or the module itself."""
    return model if isinstance(model, torch.nn.Module) else model.module


def _check_patch_embed(m: torch.nn.Module) -> tuple[int, int]:
    """The patch size, after checking that the patch embedding sees each patch alone (so moving patches in
    pixel space moves the patch tokens, and nothing else)."""
    pe = getattr(m, "patch_embed", None)
    proj = getattr(pe, "proj", None)
    if not hasattr(m, "forward_features") or not isinstance(proj, torch.nn.Conv2d):
        raise ModelError(f"{type(m).__name__} has no timm patch embedding (patch_embed.proj convolution)",
                         hint="use a timm ViT (ViT, DeiT, DINOv2, SigLIP, CLIP)")
    patch = tuple(pe.patch_size)
    if tuple(proj.kernel_size) != patch or tuple(proj.stride) != patch or tuple(proj.padding) != (0, 0):
        raise ModelError(f"{type(m).__name__}'s patch embedding overlaps patches (kernel {tuple(proj.kernel_size)}, "
                         f"stride {tuple(proj.stride)})", hint="use a ViT with a plain patch embedding")
    return patch


def _diffs(base: torch.Tensor, shuf: torch.Tensor, perm: torch.Tensor, p: int, pooled: tuple) -> dict:
    """How far the shuffled run is from the original run permuted the same way, (B, T, D) forward_features each."""
    want, got = base[:, p:][:, perm], shuf[:, p:]  # (B, N, D): original outputs moved like the patches
    cos = torch.nn.functional.cosine_similarity(want, got, dim=-1)  # (B, N)
    out = {"patch_max_diff": float((want - got).abs().max()),
           "patch_min_cosine": float(cos.min()),
           "patch_mean_cosine": float(cos.mean()),
           "patch_max_diff_unpermuted": float((base[:, p:] - got).abs().max()),
           "prefix_max_diff": float((base[:, :p] - shuf[:, :p]).abs().max()) if p else None,
           "pooled_max_diff": float((pooled[0] - pooled[1]).abs().max()) if pooled else None,
           "output_scale": float(base[:, p:].pow(2).mean().sqrt())}
    return out


def shuffle_experiment(model, x: torch.Tensor, seed: int = 0) -> dict:
    """Shuffle the patches of `x` and measure what the position embeddings change.

    `model`: a timm VisionTransformer (or a LoadedModel); `x`: its normalised input (B, 3, H, W), H and W
    multiples of the patch size. The patches are moved in pixel space by a permutation drawn from
    torch.Generator seeded with `seed` (never the identity); since the patch embedding sees each patch alone,
    this permutes the patch tokens exactly (measured: `patch_embed_max_diff`). Then timm's own
    `forward_features` runs on the original and the shuffled image, once with the model's position embeddings
    and once with them set to zero (all of `pos_embed`, prefix rows included); `forward_head(pre_logits=True)`
    gives the pooled output.

    Compared (max absolute differences, in the units of the outputs after the final norm):
    - patch tokens: shuffled run vs the original run's patch tokens permuted the same way. Without positions ~0
      (attention cannot tell where a patch came from); with positions large.
    - prefix tokens (CLS, registers) and the pooled output: shuffled vs original, unpermuted. Without
      positions ~0: the image is the same bag of patches.

    Returns a dict, JSON-ready but for `shuffled`: seed, permutation (output patch i holds input patch
    permutation[i]), grid, patch, prefix_tokens, cls_token, registers, pool, compared (what is compared),
    max_diff_with_pos / max_diff_without_pos (patch tokens), output_scale (RMS of the original patch outputs
    with positions), rel_diff_with_pos / rel_diff_without_pos (max diff / output scale), with_pos /
    without_pos (every figure: patch_max_diff, patch_min_cosine, patch_mean_cosine,
    patch_max_diff_unpermuted, prefix_max_diff, pooled_max_diff (None without pooling), output_scale),
    patch_embed_max_diff, and `shuffled`: the shuffled input, (B, 3, H, W) float32 numpy (pop it before
    dumping; `shuffle_patches` moves the preprocessed picture the same way for drawing). The model is left
    exactly as it was (pos_embed restored, train/eval mode restored).
    """
    m = _module(model)
    patch = _check_patch_embed(m)
    pos = getattr(m, "pos_embed", None)
    if not isinstance(pos, torch.nn.Parameter):
        raise ModelError(f"{type(m).__name__} has no learned absolute position embedding (pos_embed)",
                         hint="models with rotary (RoPE) or relative positions carry position inside attention; "
                              "the shuffle experiment needs a ViT with a pos_embed table")
    if x.ndim != 4:
        raise UsageError(f"input of shape {tuple(x.shape)}: expected (B, 3, H, W)")
    h, w = x.shape[-2:]
    if h % patch[0] or w % patch[1]:
        raise UsageError(f"a {h}x{w} input does not split into whole {patch[0]}x{patch[1]} patches",
                         hint="use an image size that is a multiple of the patch size")
    grid = (h // patch[0], w // patch[1])
    n = grid[0] * grid[1]
    if n < 2:
        raise UsageError(f"a {h}x{w} input is one patch: nothing to shuffle")
    g = torch.Generator().manual_seed(seed)
    perm = torch.randperm(n, generator=g)
    while torch.equal(perm, torch.arange(n)):  # the identity shows nothing; redraw (deterministic)
        perm = torch.randperm(n, generator=g)
    x = x.detach()
    shuffled = shuffle_patches(x, perm, patch)
    p = m.num_prefix_tokens
    has_head = hasattr(m, "forward_head")

    def run(inp):
        feats = m.forward_features(inp)  # (B, T, D)
        pooled = m.forward_head(feats, pre_logits=True) if has_head else None  # (B, D'); no pooling: (B, T, D)
        return feats.float(), pooled.float() if pooled is not None and pooled.ndim == 2 else None

    was_training = m.training
    saved = pos.detach().clone()
    try:
        m.eval()
        with torch.no_grad():
            tokens = m.patch_embed(x).reshape(x.shape[0], n, -1)  # (B, N, D): before positions
            tokens_shuf = m.patch_embed(shuffled).reshape(x.shape[0], n, -1)
            embed_diff = float((tokens[:, perm] - tokens_shuf).abs().max())
            figures = {}
            for key in ("with_pos", "without_pos"):
                if key == "without_pos":
                    pos.zero_()
                (f0, p0), (f1, p1) = run(x), run(shuffled)
                figures[key] = _diffs(f0, f1, perm, p, (p0, p1) if p0 is not None else ())
    finally:
        with torch.no_grad():
            pos.copy_(saved)
        m.train(was_training)
    has_cls = getattr(m, "cls_token", None) is not None
    scale = figures["with_pos"]["output_scale"]
    return {
        "seed": seed, "permutation": perm.tolist(), "grid": list(grid), "patch": list(patch),
        "prefix_tokens": p, "cls_token": has_cls, "registers": p - int(has_cls),
        "pool": getattr(m, "global_pool", None),
        "compared": "forward_features outputs after the final norm: patch tokens against the original run's "
                    "patch tokens permuted the same way; prefix tokens (CLS, registers) and the pooled output "
                    "(forward_head pre_logits) against the original run's, unpermuted",
        "max_diff_with_pos": figures["with_pos"]["patch_max_diff"],
        "max_diff_without_pos": figures["without_pos"]["patch_max_diff"],
        "output_scale": scale,
        "rel_diff_with_pos": figures["with_pos"]["patch_max_diff"] / scale,
        "rel_diff_without_pos": figures["without_pos"]["patch_max_diff"] / figures["without_pos"]["output_scale"],
        "with_pos": figures["with_pos"], "without_pos": figures["without_pos"],
        "patch_embed_max_diff": embed_diff,
        "shuffled": shuffled.float().cpu().numpy(),
    }
