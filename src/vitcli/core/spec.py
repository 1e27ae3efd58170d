"""ViT architecture specs as data, and their exact parameter counts.

Each spec mirrors one timm `VisionTransformer` architecture field by field (tests build every row on the
`meta` device and compare both the fields and the parameter count with timm's). No torch here: `tokens`,
`variants` and `cost` answer instantly from this table.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from vitcli.core.tokens import Pair, TokenLayout, token_layout
from vitcli.errors import UsageError


@dataclass(frozen=True)
class ViTSpec:
    """One ViT architecture, as timm builds it.

    Shapes: an image (C, H, W) becomes N = (H/ph)·(W/pw) patch tokens of width D (`embed_dim`), plus
    `num_prefix_tokens` (CLS and registers) in front; each of `depth` blocks runs attention with `num_heads`
    heads and an MLP D -> mlp_dim -> D (gated MLPs such as DINOv2-g's SwiGLU project to 2·mlp_dim first).
    """

    timm_name: str  # timm architecture, without a pretrained tag
    name: str  # the name people use: "ViT-B/16"
    family: str
    img_size: Pair  # native (h, w)
    patch_size: Pair
    embed_dim: int
    depth: int
    num_heads: int
    mlp_dim: int
    in_chans: int = 3
    class_token: bool = True
    reg_tokens: int = 0
    no_embed_class: bool = False  # position embedding covers patches only (DINOv2-reg4)
    patch_bias: bool = True  # False for CLIP (pre-norm)
    qkv_bias: bool = True
    qk_norm: bool = False
    layer_scale: bool = False  # DINOv2's LayerScale (elementwise, no matmul)
    pre_norm: bool = False  # CLIP's LayerNorm before the blocks
    mlp_gated: bool = False  # SwiGLU packed: fc1 is D -> 2·mlp_dim
    global_pool: str = "token"  # token | avg | map ('map': attention-pool head, SigLIP)
    num_classes: int = 1000  # timm's default for the architecture's default tag; 0 = no head
    default_tag: str = ""
    other_tags: tuple[str, ...] = ()  # further pretrained tags with the same architecture and head

    # ---- derived -------------------------------------------------------------------------------------------
    @property
    def head_dim(self) -> int:
        return self.embed_dim // self.num_heads

    @property
    def num_prefix_tokens(self) -> int:
        return int(self.class_token) + self.reg_tokens

    @property
    def fc1_dim(self) -> int:
        return 2 * self.mlp_dim if self.mlp_gated else self.mlp_dim

    @property
    def pretrained_name(self) -> str:
        return f"{self.timm_name}.{self.default_tag}" if self.default_tag else self.timm_name

    def layout(self, img_size: Pair | None = None) -> TokenLayout:
        return token_layout(img_size or self.img_size, self.patch_size, self.class_token, self.reg_tokens,
                            model=self.timm_name)

    def at_size(self, img_size: Pair | None) -> ViTSpec:
        """The same architecture built for another input size (timm `create_model(..., img_size=...)`)."""
        return self if img_size is None or tuple(img_size) == self.img_size else replace(self, img_size=tuple(img_size))

    def with_classes(self, num_classes: int | None) -> ViTSpec:
        return self if num_classes is None else replace(self, num_classes=num_classes)

    # ---- parameters, exactly as timm allocates them -------------------------------------------------------
    def param_breakdown(self) -> dict[str, int]:
        """Parameter count per part. Sums to timm's `sum(p.numel() for p in model.parameters())`."""
        d, c = self.embed_dim, self.in_chans
        (ph, pw) = self.patch_size
        n = self.layout().num_patches
        pos_tokens = n + (0 if self.no_embed_class else self.num_prefix_tokens)
        ln = 2 * d  # LayerNorm weight + bias
        embed = (d * c * ph * pw + (d if self.patch_bias else 0)  # patch_embed.proj (Conv2d)
                 + self.num_prefix_tokens * d  # cls_token, reg_token
                 + pos_tokens * d  # pos_embed
                 + (ln if self.pre_norm else 0))  # norm_pre
        attn = (d * 3 * d + (3 * d if self.qkv_bias else 0)  # qkv
                + d * d + d  # proj
                + (2 * 2 * self.head_dim if self.qk_norm else 0))  # q_norm, k_norm
        mlp = d * self.fc1_dim + self.fc1_dim + self.mlp_dim * d + d  # fc1, fc2
        block_other = 2 * ln + (2 * d if self.layer_scale else 0)  # norm1, norm2, ls1, ls2
        head = ln  # final norm (or fc_norm)
        if self.global_pool == "map":  # AttentionPoolLatent: latent, q, kv, proj, norm, mlp
            head += d + (d * d + d) + (d * 2 * d + 2 * d) + (d * d + d) + ln + (2 * d * self.mlp_dim + self.mlp_dim + d)
        if self.num_classes:
            head += d * self.num_classes + self.num_classes
        return {
            "embeddings": embed,
            "attention": self.depth * attn,
            "mlp": self.depth * mlp,
            "norms_and_scales": self.depth * block_other,
            "head": head,
        }

    @property
    def params(self) -> int:
        return sum(self.param_breakdown().values())

    @property
    def params_no_head(self) -> int:
        """Parameters without the classifier (timm `num_classes=0`)."""
        return self.with_classes(0).params

    def to_dict(self) -> dict:
        layout = self.layout()
        return {
            "name": self.name,
            "family": self.family,
            "timm_name": self.timm_name,
            "pretrained_name": self.pretrained_name,
            "image_size": list(self.img_size),
            "patch_size": list(self.patch_size),
            "embed_dim": self.embed_dim,
            "depth": self.depth,
            "num_heads": self.num_heads,
            "mlp_dim": self.mlp_dim,
            "mlp_gated": self.mlp_gated,
            "class_token": self.class_token,
            "registers": self.reg_tokens,
            "global_pool": self.global_pool,
            "num_classes": self.num_classes,
            "params": self.params,
            "params_no_head": self.params_no_head,
            "num_patches": layout.num_patches,
            "seq_len": layout.seq_len,
        }


_SIZE_WORD = {"Ti": "tiny", "S": "small", "B": "base", "L": "large", "H": "huge", "g": "giant"}


def _vit(size: str, d: int, depth: int, heads: int, p: int, img: int = 224, tag: str = "", family: str = "ViT",
         arch: str | None = None, **kw) -> ViTSpec:
    timm_name = arch or f"vit_{_SIZE_WORD[size]}_patch{p}_{img}"
    return ViTSpec(timm_name=timm_name, name=f"{family}-{size}/{p}", family=family,
                   img_size=(img, img), patch_size=(p, p), embed_dim=d, depth=depth, num_heads=heads,
                   mlp_dim=kw.pop("mlp_dim", 4 * d), default_tag=tag, **kw)


def _dinov2(size: str, d: int, depth: int, heads: int, reg: bool) -> ViTSpec:
    word = _SIZE_WORD[size]
    giant = size == "g"
    return ViTSpec(
        timm_name=f"vit_{word}_patch14_{'reg4_' if reg else ''}dinov2",
        name=f"DINOv2-{size}/14{'-reg4' if reg else ''}",
        family="DINOv2", img_size=(518, 518), patch_size=(14, 14), embed_dim=d, depth=depth, num_heads=heads,
        mlp_dim=4096 if giant else 4 * d, mlp_gated=giant, layer_scale=True, reg_tokens=4 if reg else 0,
        no_embed_class=reg, num_classes=0, default_tag="lvd142m")


_AUG = "augreg_in21k_ft_in1k"
_CLIP = dict(family="CLIP", patch_bias=False, pre_norm=True, tag="laion2b_ft_in12k_in1k")

VARIANTS: tuple[ViTSpec, ...] = (
    _vit("Ti", 192, 12, 3, 16, tag=_AUG),
    _vit("S", 384, 12, 6, 8, tag="dino", num_classes=0),
    _vit("S", 384, 12, 6, 16, tag=_AUG),
    _vit("S", 384, 12, 6, 32, tag=_AUG),
    _vit("B", 768, 12, 12, 8, tag="augreg2_in21k_ft_in1k"),
    _vit("B", 768, 12, 12, 16, tag="augreg2_in21k_ft_in1k"),
    _vit("B", 768, 12, 12, 32, tag=_AUG),
    _vit("L", 1024, 24, 16, 14, tag="untrained"),
    _vit("L", 1024, 24, 16, 16, tag=_AUG),
    _vit("L", 1024, 24, 16, 32, tag="orig_in21k", num_classes=0),
    _vit("H", 1280, 32, 16, 14, tag="orig_in21k", num_classes=0),
    _vit("Ti", 192, 12, 3, 16, family="DeiT", arch="deit_tiny_patch16_224", tag="fb_in1k"),
    _vit("S", 384, 12, 6, 16, family="DeiT", arch="deit_small_patch16_224", tag="fb_in1k"),
    _vit("B", 768, 12, 12, 16, family="DeiT", arch="deit_base_patch16_224", tag="fb_in1k"),
    *(_dinov2(s, d, depth, h, reg) for reg in (False, True)
      for s, d, depth, h in (("S", 384, 12, 6), ("B", 768, 12, 12), ("L", 1024, 24, 16), ("g", 1536, 40, 24))),
    _vit("B", 768, 12, 12, 16, family="SigLIP", arch="vit_base_patch16_siglip_224", tag="v2_webli",
         class_token=False, global_pool="map", num_classes=0),
    _vit("So400m", 1152, 27, 16, 14, family="SigLIP", arch="vit_so400m_patch14_siglip_224", tag="v2_webli",
         other_tags=("webli",), mlp_dim=4304, class_token=False, global_pool="map", num_classes=0),
    _vit("B", 768, 12, 12, 16, arch="vit_base_patch16_clip_224", **_CLIP),
    _vit("B", 768, 12, 12, 32, arch="vit_base_patch32_clip_224", **_CLIP),
    _vit("L", 1024, 24, 16, 14, arch="vit_large_patch14_clip_224", **_CLIP),
    _vit("H", 1280, 32, 16, 14, arch="vit_huge_patch14_clip_224", **_CLIP),
)

_BY_TIMM = {v.timm_name: v for v in VARIANTS}
_BY_NAME = {}
for _v in VARIANTS:  # first entry wins: "B/16" is ViT-B/16, not DeiT-B/16
    _BY_NAME.setdefault(_v.name.lower(), _v)
    if _v.family == "ViT":
        _BY_NAME.setdefault(_v.name.lower().removeprefix("vit-"), _v)


def split_model_name(name: str) -> tuple[str, str | None]:
    """'vit_base_patch16_224.augreg_in21k' -> ('vit_base_patch16_224', 'augreg_in21k'); sources kept whole."""
    if ":" in name:  # hf-hub:org/name, local-dir:PATH
        return name, None
    arch, _, tag = name.partition(".")
    return arch, tag or None


def known_spec(model: str) -> ViTSpec | None:
    """The table's spec for a timm name with no tag or a tag the table knows; None otherwise (read timm)."""
    arch, tag = split_model_name(model)
    spec = _BY_TIMM.get(arch)
    if spec is None or tag not in (None, spec.default_tag, *spec.other_tags):
        return None
    return spec


def variant_spec(variant: str) -> ViTSpec:
    """Look a variant up by the name people use ('B/16', 'ViT-L/14', 'DINOv2-L/14-reg4', 'SigLIP-So400m/14')."""
    spec = _BY_NAME.get(variant.strip().lower())
    if spec is None:
        raise UsageError(f"--variant {variant!r} is not a known variant",
                         hint="`vitcli variants` lists them, e.g. --variant B/16 or --variant DINOv2-L/14")
    return spec
