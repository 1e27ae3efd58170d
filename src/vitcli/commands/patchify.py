"""`vitcli patchify`: preprocess an image as the model would, cut it into patches, draw and export them."""

from __future__ import annotations

from dataclasses import dataclass, field

from vitcli.core.tokens import Pair, TokenLayout, fmt_pair, parse_pair, token_layout
from vitcli.imaging import LoadedImage
from vitcli.outputs import check_targets, save_picture


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


def run_patchify(image: str, size: str | None, patch: str | None, model: str | None, out: str | None,
                 mosaic: str | None, npy: str | None, force: bool = False) -> PatchifyResult:
    """Preprocess `image`, cut it into patches and write the requested pictures and patch array.

    Without `model`: shorter side to `size` (bicubic) and centre crop (HxW: resize to exactly that); patch
    from `patch` (default 16); CLS and no registers. With `model`: that model's own timm data config, patch,
    CLS and registers (`size` rebuilds the model at that size).
    """
    from vitcli import draw, imaging
    from vitcli.export import save_npy

    targets = check_targets([out, mosaic, npy], force)  # refuse before any work
    size_pair = parse_pair(size, "--size") if size else None
    patch_pair = parse_pair(patch, "--patch") if patch else None
    loaded = imaging.open_image(image)
    if model:
        from vitcli.backend import data
        from vitcli.backend.arch import build_meta, spec_from_model

        m = build_meta(model, size_pair)
        spec = spec_from_model(m, model)
        cfg = data.data_config(m, size_pair)
        pre = data.pil_stages(cfg)(loaded.image)
        transform, cfg_json = data.describe(cfg), data.config_to_json(cfg)
        patch_pair = patch_pair or spec.patch_size
        cls_token, registers = spec.class_token, spec.reg_tokens
    else:
        pre, transform = imaging.standard_eval(loaded.image, size_pair or (224, 224))
        cfg_json = None
        patch_pair = patch_pair or (16, 16)
        cls_token, registers = True, 0
    input_size = (pre.height, pre.width)
    layout = token_layout(input_size, patch_pair, cls_token, registers, model=model)
    result = PatchifyResult(loaded, transform, input_size, layout, model, cfg_json)

    written = {}
    if out:
        save_picture(draw.grid_picture(pre, patch_pair, cls_token, registers), targets[0])
        written["grid"] = out
    if mosaic:
        save_picture(draw.mosaic_picture(pre, patch_pair, cls_token, registers), mosaic)
        written["mosaic"] = mosaic
    if npy:
        save_npy(imaging.patchify(imaging.image_to_array(pre), patch_pair), npy)  # (N, P·P·3) in [0, 1]
        written["npy"] = npy
    result.outputs.update(written)
    return result


def describe_remainder(result: PatchifyResult) -> str | None:
    r = result.layout.non_divisible
    if r is None:
        return None
    return (f"{fmt_pair(result.input_size)} is not a multiple of the patch {fmt_pair(result.layout.patch_size)}: "
            f"the last {r.remainder[0]} rows and {r.remainder[1]} columns ({r.drop_pixels:,} pixels) are dropped, "
            f"as timm's patch embedding does with strict_img_size=False; a standard ViT rejects this size")
