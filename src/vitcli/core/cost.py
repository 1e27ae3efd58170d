"""Analytic compute and memory of one ViT forward pass, per image.

Convention, stated once: a MAC is one multiply-accumulate of a matmul or convolution; FLOPs = 2 x MACs.
Counted: the patch-embedding convolution, every Linear (qkv, proj, fc1, fc2, head, attention-pool), and
attention's two matmuls QKᵀ and AV. Not counted: biases, norms, softmax, GELU, residual adds, position-embedding
resampling. This is the convention of torch's `FlopCounterMode` (its conv/mm/addmm/bmm formulas), so the
totals equal it exactly when timm's fused attention is switched off (tests check this).

Per image, with N patch tokens, T = N + prefix tokens, width D, MLP width M (fc1 width F = M, or 2M gated),
and depth L (after nanoGPT's `estimate_mfu` and the ViT paper's appendix):

    patch_embed     N · D · (C · ph · pw)
    attn_proj       L · (T·D·3D + T·D·D)              qkv and output projection
    attn_matmul     L · (T·T·D + T·T·D)                QKᵀ and AV, summed over heads (heads · head_dim = D)
    mlp             L · (T·D·F + T·M·D)
    head            classifier D·classes on one pooled token; SigLIP's attention pool adds
                    q D·D + kv T·D·2D + QKᵀ/AV 2·T·D + proj D·D + mlp 2·D·M

Tokens scale as 1/p², so halving the patch multiplies T by ~4, the linear layers by ~4 and the attention
matmuls (T²) by ~16.
"""

from __future__ import annotations

from dataclasses import dataclass

from vitcli.core.spec import ViTSpec
from vitcli.core.tokens import TokenLayout

DTYPE_BYTES = {"float32": 4, "bfloat16": 2, "float16": 2, "int8": 1}
BREAKDOWN_KEYS = ("patch_embed", "attn_proj", "attn_matmul", "mlp", "head")


def macs_breakdown(spec: ViTSpec, layout: TokenLayout, blocks: int | None = None, head: bool = True) -> dict[str, int]:
    """MACs per part for one image at `layout` (which must be `spec`'s layout at some size).

    `blocks` < depth counts only the first blocks and `head=False` leaves out pooling and classifier: the cost
    of reading block `blocks - 1`'s output with `forward_intermediates(stop_early=True)`."""
    d, m, f = spec.embed_dim, spec.mlp_dim, spec.fc1_dim
    L = spec.depth if blocks is None else blocks
    n, t = layout.num_patches, layout.seq_len
    ph, pw = spec.patch_size
    head_macs = d * spec.num_classes
    if spec.global_pool == "map":  # timm AttentionPoolLatent, one latent query over all T tokens
        head_macs += d * d + t * d * 2 * d + 2 * t * d + d * d + 2 * d * m
    return {
        "patch_embed": n * d * spec.in_chans * ph * pw,
        "attn_proj": L * (t * d * 3 * d + t * d * d),
        "attn_matmul": L * 2 * t * t * d,
        "mlp": L * (t * d * f + t * m * d),
        "head": head_macs if head else 0,
    }


@dataclass(frozen=True)
class CostReport:
    """Parameters, MACs/FLOPs and memory of one model at one input size, per image (batch 1)."""

    model: str
    name: str
    layout: TokenLayout
    params: int
    breakdown: dict[str, int]  # MACs per part
    num_heads: int
    embed_dim: int
    fc1_dim: int
    depth: int
    act_dtype: str = "float32"
    measured: dict | None = None  # filled by `--measure`: torch FlopCounterMode's counts

    @property
    def macs(self) -> int:
        return sum(self.breakdown.values())

    @property
    def flops(self) -> int:
        return 2 * self.macs

    @property
    def attention_share(self) -> float:
        """Fraction of MACs in attention's QKᵀ and AV matmuls: the part that grows with T²."""
        return self.breakdown["attn_matmul"] / self.macs

    def weight_bytes(self) -> dict[str, int]:
        return {dt: self.params * b for dt, b in DTYPE_BYTES.items()}

    def activation_bytes(self) -> dict[str, int]:
        """Sizes of the largest tensors one block makes for one image, in `act_dtype`.

        `tokens`: one layer's output (T, D), what a feature export stores per layer; `attention_matrix`:
        the (heads, T, T) attention probabilities that unfused attention materialises; `mlp_hidden`: (T, F).
        """
        b, t = DTYPE_BYTES[self.act_dtype], self.layout.seq_len
        return {
            "tokens": t * self.embed_dim * b,
            "attention_matrix": self.num_heads * t * t * b,
            "mlp_hidden": t * self.fc1_dim * b,
        }

    def to_dict(self) -> dict:
        d = {
            "model": self.model,
            "name": self.name,
            "image_size": list(self.layout.image_size),
            "patch_size": list(self.layout.patch_size),
            "grid": list(self.layout.grid),
            "num_patches": self.layout.num_patches,
            "seq_len": self.layout.seq_len,
            "params": self.params,
            "macs": self.macs,
            "flops": self.flops,
            "units": {"macs": "multiply-accumulates per image", "flops": "2 x MACs per image",
                      "bytes": "bytes", "breakdown": "MACs per image"},
            "breakdown": dict(self.breakdown),
            "attention_share": self.attention_share,
            "weight_bytes": self.weight_bytes(),
            "activation_dtype": self.act_dtype,
            "activation_bytes": self.activation_bytes(),
        }
        if self.measured is not None:
            d["measured"] = self.measured
        return d


def cost_report(spec: ViTSpec, act_dtype: str = "float32", model: str | None = None) -> CostReport:
    """Analytic cost of `spec` at its own `img_size` (use `spec.at_size(...)` for another size).

    `model` labels the row (default: the timm architecture name)."""
    layout = spec.layout()
    return CostReport(
        model=model or spec.timm_name, name=spec.name, layout=layout, params=spec.params,
        breakdown=macs_breakdown(spec, layout), num_heads=spec.num_heads, embed_dim=spec.embed_dim,
        fc1_dim=spec.fc1_dim, depth=spec.depth, act_dtype=act_dtype,
    )
