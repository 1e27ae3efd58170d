"""`vitcli patchify`: preprocess an image as the model would, cut it into patches, draw and export them."""

from __future__ import annotations

from dataclasses import dataclass, field

from vitcli.core.tokens import Pair, TokenLayout, fmt_pair, parse_pair, token_layout
from vitcli.imaging import LoadedImage
from vitcli.outputs import check_targets, save_picture


@dataclass(frozen=True, kw_only=True)
class PatchifyRequest:
    image: str
    size: Pair | None = None  # N or HxW text, parsed here
    patch: Pair | None = None
    model: str | None = None
    out: str | None = None  # the labelled grid picture
    mosaic: str | None = None
    npy: str | None = None
    force: bool = False

    def __post_init__(self):
        if self.size is not None:
            object.__setattr__(self, "size", parse_pair(self.size, "--size"))
        if self.patch is not None:
            object.__setattr__(self, "patch", parse_pair(self.patch, "--patch"))


@dataclass(frozen=True)
class PatchifyResult:
    image: LoadedImage
    transform: str
    input_size: Pair  # (h, w) after preprocessing
    layout: TokenLayout  # at input_size; the remainder (if any) is dropped
    model: str | None = None
    data_config: dict | None = None
    outputs: dict = field(default_factory=dict)  # kind -> path

    @property
    def grid(self) -> Pair:
        r = self.layout.non_divisible
        return r.drop_grid if r else self.layout.grid

    @property
    def num_patches(self) -> int:
        return self.grid[0] * self.grid[1]

    @property
    def seq_len(self) -> int:
        return self.layout.num_prefix_tokens + self.num_patches

    @property
    def patch_dim(self) -> int:
        return self.layout.patch_size[0] * self.layout.patch_size[1] * 3

    def describe_remainder(self) -> str | None:
        r = self.layout.non_divisible
        if r is None:
            return None
        return (f"{fmt_pair(self.input_size)} is not a multiple of the patch {fmt_pair(self.layout.patch_size)}: the "
                f"last {r.remainder[0]} rows and {r.remainder[1]} columns ({r.drop_pixels:,} pixels) are dropped, as "
                f"timm's patch embedding does with strict_img_size=False; a standard ViT rejects this size")

    def to_dict(self) -> dict:
        r = self.layout.non_divisible
        return {
            "image": self.image.to_dict(),
            "model": self.model,
            "transform": self.transform,
            "data_config": self.data_config,
            "input_size": list(self.input_size),
            "patch_size": list(self.layout.patch_size),
            "grid": list(self.grid),
            "num_patches": self.num_patches,
            "num_prefix_tokens": self.layout.num_prefix_tokens,
            "cls_token": self.layout.cls_token,
            "registers": self.layout.registers,
            "seq_len": self.seq_len,
            "remainder": None if r is None else {"rows": r.remainder[0], "columns": r.remainder[1],
                                                 "dropped_pixels": r.drop_pixels},
            "npy_shape": [self.num_patches, self.patch_dim],
            "npy_layout": "rows in token order (row-major grid); each row (row in patch, column in patch, channel), "
                          "float32 in [0, 1]",
            "outputs": self.outputs,
        }


def run_patchify(req: PatchifyRequest) -> PatchifyResult:
    """Preprocess the image, cut it into patches and write the requested pictures and patch array.

    Without a model: shorter side to `size` (bicubic) and centre crop (HxW: resize to exactly that); patch
    from `patch` (default 16); CLS and no registers. With a model: that model's own timm data config, patch,
    CLS and registers (`size` rebuilds the model at that size).
    """
    from vitcli import draw, imaging
    from vitcli.export import save_npy

    out, mosaic, npy = check_targets([req.out, req.mosaic, req.npy], req.force, keep_none=True)  # before any work
    from vitcli.inputs import open_single

    loaded = open_single(req.image)
    if req.model:
        from vitcli.backend.data import preprocessing_for

        spec, stages, transform, cfg_json = preprocessing_for(req.model, req.size)
        pre = stages(loaded.image)
        patch = req.patch or spec.patch_size
        cls_token, registers = spec.class_token, spec.reg_tokens
    else:
        pre, transform = imaging.standard_eval(loaded.image, req.size or (224, 224))
        cfg_json, patch = None, req.patch or (16, 16)
        cls_token, registers = True, 0
    input_size = (pre.height, pre.width)
    layout = token_layout(input_size, patch, cls_token, registers, model=req.model)
    written = {}
    if out:
        save_picture(draw.grid_picture(pre, patch, cls_token, registers), out)
        written["grid"] = req.out
    if mosaic:
        save_picture(draw.mosaic_picture(pre, patch, cls_token, registers), mosaic)
        written["mosaic"] = req.mosaic
    if npy:
        save_npy(imaging.patchify(imaging.image_to_array(pre), patch), npy)  # (N, P·P·3) in [0, 1]
        written["npy"] = req.npy
    return PatchifyResult(loaded, transform, input_size, layout, req.model, cfg_json, written)
