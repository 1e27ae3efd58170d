"""Visual-token budgets of the VLMs and VLAs people use: exact, torch-free, per image and per control step.

"How many tokens does my image cost the language model?" Each preset below is a data record that follows one
model's reference preprocessing code line by line (the same integer and float arithmetic, in the same order),
so the counts equal the reference's exactly; tests/test_vlm_tokens.py checks every preset against Hugging Face
transformers' own processors (or, where transformers has no implementation, against the published rule).

Vocabulary, per image (`size` = (h, w) of the input image or camera frame, height first):

    visual_tokens   image placeholder tokens the language model receives: the positions replaced by vision
                    features (LLaVA-NeXT's learned newline features included, as its processor counts them)
    special_tokens  text tokens the processor (or, for Qwen, the chat template) adds around or inside the image:
                    start/end markers, row/column tags, newlines; `special` maps each token's text to its count
    encoder_tokens  patch tokens the vision encoder makes before merging/pooling, summed over tiles (CLS and
                    registers not counted)
    tiles           encoder runs for the image (1 where untiled): base/global/thumbnail images included
    encoder_macs    multiply-accumulates of the vision encoder up to the layer the model reads, summed over
                    tiles, in vitcli's cost convention (core/cost.py); None where the encoder is not one vitcli's
                    cost model knows

Encoder MACs assume, per tile (every tile, base/global/thumbnail images and pan-and-scan crops included, is one
encoder run; the projector/connector and the language model are not counted):

    llava-1.5, llava-next   CLIP ViT-L/14 at 336, 23 of 24 blocks (hidden_states[-2]); transformers itself runs all
                            24 and discards the last, one block more than counted here
    llava-onevision         SigLIP So400m/14 at 384 (27x27 patches), 26 blocks (the converted tower drops the 27th)
    internvl                InternViT-300M at 448, all 24 blocks (ViT-L/14's matmul shapes)
    idefics3                SigLIP So400m/14 at 364, all 27 blocks
    smolvlm, smolvla        SigLIP B/16 at 512, all 12 blocks
    gemma3, paligemma-*     SigLIP So400m/14 at 896 / 224 / 448 / 896, all 27 blocks, no attention-pool head
    pi0                     SigLIP So400m/14 at 224, all 27 blocks (openpi pool_type 'none')
    openvla                 DINOv2-L/14-reg4 + SigLIP So400m/14 at 224, each to its second-to-last block
                            (core/presets.py budget, macs_stop_early)
    qwen2-vl, qwen2.5-vl,   None: their ViTs (3D patch convolution over 2 duplicated frames, window attention,
    qwen3-vl                deepstack) are not in vitcli's cost model

No numpy, torch or transformers here: `vitcli tokens` answers instantly.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from vitcli.core.cost import macs_breakdown
from vitcli.core.spec import known_spec
from vitcli.core.tokens import Pair
from vitcli.errors import UsageError

# ---- small helpers ---------------------------------------------------------------------------------------------


def _n(x: int) -> str:
    return f"{x:,}"


def _hw(p: Pair) -> str:
    return f"{p[0]}x{p[1]}"


@dataclass(frozen=True)
class VLMOption:
    """A preprocessing parameter the model's processor exposes; the CLI offers it as `--name-with-dashes`."""

    name: str
    default: int | float | bool
    about: str

    @property
    def flag(self) -> str:
        return "--" + self.name.replace("_", "-")

    @property
    def kind(self) -> type:
        return type(self.default)

    def to_dict(self) -> dict:
        return {"name": self.name, "flag": self.flag, "default": self.default, "type": self.kind.__name__,
                "about": self.about}


@dataclass(frozen=True)
class Encoder:
    """The vision encoder, as vitcli's cost model knows it, and the layer the model reads.

    `timm_name` keys `core.spec.known_spec`; `blocks` is how many transformer blocks run to reach the layer the
    language model reads (no pooling head). The stride-p patch convolution drops a remainder (SigLIP at 384/14
    sees 27x27 patches), so MACs are computed at grid x patch pixels.
    """

    timm_name: str
    label: str
    blocks: int
    layer: str  # what is read, in the reference's words

    def tile_macs(self, tile: Pair) -> int:
        """MACs of one encoder run on a `tile` (h, w) input, up to `blocks`, no head."""
        spec = known_spec(self.timm_name)
        ph, pw = spec.patch_size
        spec = spec.at_size(((tile[0] // ph) * ph, (tile[1] // pw) * pw))
        return sum(macs_breakdown(spec, spec.layout(), blocks=self.blocks, head=False).values())

    def to_dict(self) -> dict:
        spec = known_spec(self.timm_name)
        return {"model": self.label, "spec": spec.name, "timm_name": self.timm_name, "blocks_run": self.blocks,
                "depth": spec.depth, "layer": self.layer}


CLIP_L14_336 = Encoder("vit_large_patch14_clip_224", "CLIP ViT-L/14-336 (openai/clip-vit-large-patch14-336)", 23,
                       "hidden_states[-2]: output of block 23 of 24 (vision_feature_layer -2), no post-norm or head")


def _siglip_so400m(blocks: int, layer: str) -> Encoder:
    return Encoder("vit_so400m_patch14_siglip_224", "SigLIP So400m/14", blocks, layer)


_SIGLIP_LAST = "last_hidden_state: all 27 blocks (+ post-layernorm, not a matmul), no attention-pool head"
SIGLIP_B16 = Encoder("vit_base_patch16_siglip_224", "SigLIP B/16-512 (google/siglip-base-patch16-512)", 12,
                     "last_hidden_state: all 12 blocks, no head")
INTERNVIT_300M = Encoder("vit_large_patch14_224", "InternViT-300M-448px-V2_5 (ViT-L/14 matmul shapes)", 24,
                         "vision_feature_layer -1: all 24 blocks; InternViT-300M has ViT-L/14's matmuls (width "
                         "1024, 24 blocks, 16 heads, MLP 4096, CLS token), so vitcli's ViT-L/14 spec stands in")


# ---- the preset record -----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class VLMPreset:
    """One model's visual-token recipe, as data.

    `params` are the model's fixed values (patch, merge, tile size...); `options` the processor parameters a user
    may change, with the released defaults. `reference` names the code followed; `config` the released values
    used and where each came from. `native` (h, w) is the size `vitcli tokens` assumes when no size is given: the
    encoder's own input (one tile, one crop); Qwen, which has none, gets 448x448 (512x512 for Qwen3-VL's 16-px
    patches), sizes its resize keeps unchanged. Idefics3 and SmolVLM still tile their native size: their processors
    first resize the longest edge to 1456 / 2048, enlarging small images.
    """

    name: str
    model: str  # Hugging Face repo id (or the original repo) it describes
    kind: str  # which rule: fixed, pad, llava, anyres, qwen, internvl, idefics3, gemma3, openvla
    reference: str
    config: str
    native: Pair
    params: dict = field(default_factory=dict)
    options: tuple[VLMOption, ...] = ()
    cameras: int = 1
    encoder: Encoder | None = None
    about: str = ""

    def option(self, name: str) -> VLMOption:
        for o in self.options:
            if o.name == name:
                return o
        raise KeyError(name)

    def to_dict(self) -> dict:
        return {"name": self.name, "model": self.model, "kind": self.kind, "about": self.about,
                "reference": self.reference, "config": self.config, "native": list(self.native),
                "params": dict(self.params),
                "options": [o.to_dict() for o in self.options], "cameras": self.cameras,
                "encoder": self.encoder.to_dict() if self.encoder else None}


@dataclass(frozen=True)
class ImageTokens:
    """What one image (or camera frame) of `image` (h, w) pixels costs one model. Sizes are (h, w).

    `resized`: the size the image content is resized to (before any crop, padding or tiling); `tile_size`: one
    encoder input; `tile_grid`: (rows, cols) of the tiles cut from the resized image (None where untiled);
    `grid`: the patch grid of one encoder input (Qwen: of the whole resized image).
    """

    preset: str
    model: str
    image: Pair
    resized: Pair
    tile_size: Pair
    tiles: int
    tile_grid: Pair | None
    grid: Pair
    encoder_tokens: int
    visual_tokens: int
    special_tokens: int
    special: dict
    rule: str
    options: dict = field(default_factory=dict)
    encoder_macs: int | None = None
    detail: dict = field(default_factory=dict)

    @property
    def total_tokens(self) -> int:
        return self.visual_tokens + self.special_tokens

    def to_dict(self) -> dict:
        return {
            "preset": self.preset,
            "model": self.model,
            "image": list(self.image),
            "resized": list(self.resized),
            "tile_size": list(self.tile_size),
            "tiles": self.tiles,
            "tile_grid": list(self.tile_grid) if self.tile_grid else None,
            "grid": list(self.grid),
            "encoder_tokens": self.encoder_tokens,
            "visual_tokens": self.visual_tokens,
            "special_tokens": self.special_tokens,
            "special": dict(self.special),
            "total_tokens": self.total_tokens,
            "encoder_macs": self.encoder_macs,
            "encoder_flops": None if self.encoder_macs is None else 2 * self.encoder_macs,
            "options": dict(self.options),
            "detail": dict(self.detail),
            "rule": self.rule,
            "units": {"tokens": "tokens per image", "encoder_macs": "multiply-accumulates per image",
                      "encoder_flops": "2 x MACs per image", "sizes": "[height, width] in pixels"},
        }


# ---- the rules, one per kind -----------------------------------------------------------------------------------
# Each takes (preset, h, w, options) and returns the fields of ImageTokens that vary. Float expressions are
# written exactly as the reference writes them so that int()/round()/ceil() land on the same integers.


def _fixed(p: VLMPreset, h: int, w: int, o: dict) -> dict:
    """Squash to a fixed square (SiglipImageProcessor: size {height, width}, do_resize, no crop)."""
    s, patch = p.params["image_size"], p.params["patch"]
    g = s // patch
    n = g * g
    return dict(resized=(s, s), tile_size=(s, s), tiles=1, tile_grid=None, grid=(g, g), encoder_tokens=n,
                visual_tokens=n, special={},
                rule=f"{_hw((h, w))} -> squash {_hw((s, s))} -> {g}x{g} patches of {patch} -> {_n(n)} tokens")


def _openvla(p: VLMPreset, h: int, w: int, o: dict) -> dict:
    """OpenVLA: prismatic 'dinosiglip-vit-so-224px', the squash preset of core/presets.py."""
    from vitcli.core.presets import PRESETS

    enc = PRESETS["openvla"]
    s = enc.size[0]
    g = s // p.params["patch"]
    n = g * g
    return dict(resized=enc.size, tile_size=enc.size, tiles=1, tile_grid=None, grid=(g, g), encoder_tokens=n,
                visual_tokens=n, special={},
                rule=f"{_hw((h, w))} -> squash {_hw(enc.size)} (no crop) -> {g}x{g} patches of 14 in DINOv2-L/14 "
                     f"and SigLIP-So400m/14, channels concatenated -> {n} tokens")


def _resize_with_pad(p: VLMPreset, h: int, w: int, o: dict) -> dict:
    """openpi / lerobot `resize_with_pad`: keep the aspect ratio, fit inside the square, pad the rest."""
    s, patch, shuffle = p.params["image_size"], p.params["patch"], p.params.get("pixel_shuffle", 1)
    ratio = max(w / s, h / s)
    rh, rw = int(h / ratio), int(w / ratio)
    if rh < 1 or rw < 1:
        raise UsageError(
            f"--size {_hw((h, w))}: {p.name}'s resize_with_pad to {s}x{s} leaves a {rh}x{rw} image "
            f"(torch.nn.functional.interpolate refuses an empty output)",
            hint=f"{p.name} needs each side at least 1/{s} of the other (an aspect ratio within {s}:1)")
    g = s // patch
    n = g * g // (shuffle * shuffle)
    pad = p.params["pad"]
    shuffle_txt = f" -> pixel shuffle {shuffle} -> {n} tokens" if shuffle > 1 else f" -> {n} tokens"
    return dict(resized=(rh, rw), tile_size=(s, s), tiles=1, tile_grid=None, grid=(g, g), encoder_tokens=g * g,
                visual_tokens=n, special={},
                rule=f"{_hw((h, w))} -> resize_with_pad {_hw((s, s))}: content {_hw((rh, rw))}, {pad} -> "
                     f"{g}x{g} patches of {patch}{shuffle_txt}")


def _llava(p: VLMPreset, h: int, w: int, o: dict) -> dict:
    """LLaVA-1.5: CLIPImageProcessor resizes the shortest edge to 336 (image_transforms.get_resize_output_image_size,
    default_to_square=False), then center-crops 336x336; LlavaProcessor counts (336//14)**2 + 1 CLS - 1 ('default'
    strategy drops the CLS)."""
    s, patch = p.params["image_size"], p.params["patch"]
    short, long = (w, h) if w <= h else (h, w)
    new_short, new_long = s, int(s * long / short)
    rh, rw = (new_long, new_short) if w <= h else (new_short, new_long)
    g = s // patch
    n = g * g + p.params["cls"] - 1  # num_additional_image_tokens, 'default' strategy removes one
    crop = "" if (rh, rw) == (s, s) else f" -> center crop {_hw((s, s))}"
    return dict(resized=(rh, rw), tile_size=(s, s), tiles=1, tile_grid=None, grid=(g, g), encoder_tokens=g * g,
                visual_tokens=n, special={},
                rule=f"{_hw((h, w))} -> shortest edge {s}: {_hw((rh, rw))}{crop} -> {g}x{g} patches of {patch} "
                     f"-> {_n(n)} tokens (CLS dropped)")


def select_best_resolution(original_size: Pair, possible_resolutions: Sequence[Pair]) -> Pair:
    """transformers image_processing_utils.select_best_resolution: the pinpoint (h, w) that keeps the most image
    pixels, then wastes the fewest."""
    original_height, original_width = original_size
    best_fit = None
    max_effective_resolution = 0
    min_wasted_resolution = float("inf")
    for height, width in possible_resolutions:
        scale = min(width / original_width, height / original_height)
        downscaled_width, downscaled_height = int(original_width * scale), int(original_height * scale)
        effective_resolution = min(downscaled_width * downscaled_height, original_width * original_height)
        wasted_resolution = (width * height) - effective_resolution
        if effective_resolution > max_effective_resolution or (
            effective_resolution == max_effective_resolution and wasted_resolution < min_wasted_resolution
        ):
            max_effective_resolution = effective_resolution
            min_wasted_resolution = wasted_resolution
            best_fit = (height, width)
    return best_fit


def _patch_output_size(h: int, w: int, target: Pair) -> Pair:
    """transformers image_processing_utils.get_patch_output_size: the image resized to fit inside `target`."""
    target_height, target_width = target
    scale_w = target_width / w
    scale_h = target_height / h
    if scale_w < scale_h:
        return min(math.ceil(h * scale_w), target_height), target_width
    return target_height, min(math.ceil(w * scale_h), target_width)


def _anyres(p: VLMPreset, h: int, w: int, o: dict) -> dict:
    """LLaVA-NeXT / LLaVA-OneVision 'anyres': processing_llava_next.LlavaNextProcessor._get_number_of_features and
    _get_unpadded_features (LlavaOnevisionProcessor adds the anyres_max bilinear reduction)."""
    s, patch = p.params["image_size"], p.params["patch"]
    if o.get("multi_image"):
        return _anyres_multi_image(p, h, w)
    pinpoints = p.params["pinpoints"]
    best_h, best_w = select_best_resolution((h, w), pinpoints)
    scale_height, scale_width = best_h // s, best_w // s
    patches = s // patch  # 24 (CLIP-336/14) or 27 (SigLIP-384/14: the conv drops 6 px)
    current_height, current_width = patches * scale_height, patches * scale_width
    full = (current_height, current_width)
    original_aspect_ratio = w / h
    current_aspect_ratio = current_width / current_height
    if original_aspect_ratio > current_aspect_ratio:
        new_height = int(round(h * (current_width / w), 7))
        padding = (current_height - new_height) // 2
        current_height -= padding * 2
    else:
        new_width = int(round(w * (current_height / h), 7))
        padding = (current_width - new_width) // 2
        current_width -= padding * 2
    unpadded = (current_height, current_width)
    unpadded_features, newline_features = current_height * current_width, current_height
    pooled = None
    if "anyres_max" in o:  # LlavaOnevisionProcessor._get_unpadded_features
        max_num_patches = o["anyres_max"]
        ratio = math.sqrt(current_height * current_width / (max_num_patches * patches**2))
        if ratio > 1.1:
            pooled = (int(current_height // ratio), int(current_width // ratio))
            unpadded_features = pooled[0] * pooled[1]
            newline_features = pooled[0]
    base = patches * patches + p.params["cls"]
    if p.params["strategy"] == "default":
        base -= 1  # the CLS feature is dropped
    n = unpadded_features + newline_features + base
    tiles = 1 + scale_height * scale_width
    resized = _patch_output_size(h, w, (best_h, best_w))
    feat = f"{_hw(unpadded)} features after padding removed"
    if pooled:
        feat += f" -> bilinear {_hw(pooled)} (anyres_max_{o['anyres_max']})"
    rule = (f"{_hw((h, w))} -> pinpoint {_hw((best_h, best_w))} ({scale_height}x{scale_width} tiles of {s}, image "
            f"{_hw(resized)} + padding) + base image squashed to {_hw((s, s))} -> {tiles} x {patches}x{patches} "
            f"patches of {patch} -> {feat} + {newline_features} newlines + {base} base = {_n(n)} tokens")
    return dict(resized=resized, tile_size=(s, s), tiles=tiles, tile_grid=(scale_height, scale_width),
                grid=(patches, patches), encoder_tokens=tiles * patches * patches, visual_tokens=n, special={},
                rule=rule, detail={"pinpoint": [best_h, best_w], "feature_grid": list(full),
                                   "unpadded_grid": list(unpadded), "pooled_grid": list(pooled) if pooled else None,
                                   "newline_tokens": newline_features, "base_tokens": base})


def _anyres_multi_image(p: VLMPreset, h: int, w: int) -> dict:
    """LLaVA-OneVision with several images in one prompt: LlavaOnevisionImageProcessor pads each to a square (no
    tiles, need_patching False) and LlavaOnevisionProcessor.replace_image_token counts num_image_tokens + 1."""
    s, patch = p.params["image_size"], p.params["patch"]
    g = s // patch
    n = g * g + 1
    m = max(h, w)
    return dict(resized=(s, s), tile_size=(s, s), tiles=1, tile_grid=None, grid=(g, g), encoder_tokens=g * g,
                visual_tokens=n, special={},
                rule=f"{_hw((h, w))} -> one of several images: padded to {_hw((m, m))} -> squash {_hw((s, s))} -> "
                     f"{g}x{g} patches of {patch} -> {g * g} + 1 newline = {n} tokens")


def smart_resize(height: int, width: int, factor: int, min_pixels: int, max_pixels: int) -> Pair:
    """transformers models/qwen2_vl/image_processing_qwen2_vl.smart_resize: sides multiples of `factor`, pixels
    within [min_pixels, max_pixels], aspect ratio kept as closely as possible. Raises UsageError where it raises."""
    if max(height, width) / min(height, width) > 200:
        raise UsageError(
            f"--size {_hw((height, width))}: aspect ratio {max(height, width) / min(height, width):.1f} is above "
            f"200, which Qwen's smart_resize rejects",
            hint="give an image whose long side is at most 200 x its short side")
    h_bar = round(height / factor) * factor
    w_bar = round(width / factor) * factor
    if h_bar * w_bar > max_pixels:
        beta = math.sqrt((height * width) / max_pixels)
        h_bar = max(factor, math.floor(height / beta / factor) * factor)
        w_bar = max(factor, math.floor(width / beta / factor) * factor)
    elif h_bar * w_bar < min_pixels:
        beta = math.sqrt(min_pixels / (height * width))
        h_bar = math.ceil(height * beta / factor) * factor
        w_bar = math.ceil(width * beta / factor) * factor
    return h_bar, w_bar


def _qwen(p: VLMPreset, h: int, w: int, o: dict) -> dict:
    """Qwen2-VL / Qwen2.5-VL / Qwen3-VL: Qwen2VLImageProcessor.get_number_of_image_patches, then
    Qwen2VLProcessor._get_num_multimodal_tokens (patches // merge**2)."""
    patch, merge = p.params["patch"], p.params["merge"]
    factor = patch * merge
    mn, mx = o["min_pixels"], o["max_pixels"]
    rh, rw = smart_resize(h, w, factor, mn, mx)
    gh, gw = rh // patch, rw // patch
    n = gh * gw // (merge * merge)
    return dict(resized=(rh, rw), tile_size=(rh, rw), tiles=1, tile_grid=None, grid=(gh, gw),
                encoder_tokens=gh * gw, visual_tokens=n,
                special={"<|vision_start|>": 1, "<|vision_end|>": 1},
                rule=f"{_hw((h, w))} -> {_hw((rh, rw))} (multiples of {factor}, {_n(rh * rw)} px within "
                     f"[{_n(mn)}, {_n(mx)}]) -> {gh}x{gw} patches of {patch} -> {merge}x{merge} merge -> "
                     f"{_n(n)} tokens")


def get_optimal_tiled_canvas(original_size: Pair, tile: Pair, min_tiles: int, max_tiles: int) -> Pair:
    """transformers models/got_ocr2/image_processing_got_ocr2.get_optimal_tiled_canvas: (columns, rows) whose
    aspect ratio is closest to the image's; ties go to more tiles while they cover under twice the image area."""
    ratios = sorted(((cw, ch) for cw in range(1, max_tiles + 1) for ch in range(1, max_tiles + 1)
                     if min_tiles <= cw * ch <= max_tiles), key=lambda x: x[0] * x[1])
    original_height, original_width = original_size
    target_tile_height, target_tile_width = tile
    aspect_ratio = original_width / original_height
    area = original_width * original_height
    best_ratio_diff = float("inf")
    best_grid = (1, 1)
    for grid in ratios:
        ratio_diff = abs(aspect_ratio - grid[0] / grid[1])
        if ratio_diff < best_ratio_diff:
            best_ratio_diff = ratio_diff
            best_grid = grid
        elif ratio_diff == best_ratio_diff and area > 0.5 * target_tile_height * target_tile_width * grid[0] * grid[1]:
            best_grid = grid
    return best_grid


def _internvl(p: VLMPreset, h: int, w: int, o: dict) -> dict:
    """InternVL (hf): GotOcr2ImageProcessor.get_number_of_image_patches / crop_image_to_patches with the
    processor's crop_to_patches=True, then InternVLProcessor.replace_image_token: <img> + 256 x tiles + </img>."""
    s, patch, seq = p.params["image_size"], p.params["patch"], p.params["image_seq_length"]
    mn, mx = o["min_tiles"], o["max_tiles"]
    cols, rows = (1, 1)
    if mx > 1:
        cols, rows = get_optimal_tiled_canvas((h, w), (s, s), mn, mx)
    tiled = cols * rows > 1
    tiles = 1 + cols * rows if tiled else 1
    g = s // patch
    n = seq * tiles
    resized = (rows * s, cols * s)
    how = (f"{rows}x{cols} tiles of {s} (grid closest to aspect {w / h:.3f}, {mn}..{mx} tiles) + thumbnail "
           f"{_hw((s, s))}" if tiled else f"one {s}x{s} tile (best grid 1x1)")
    return dict(resized=resized, tile_size=(s, s), tiles=tiles, tile_grid=(rows, cols) if tiled else None,
                grid=(g, g), encoder_tokens=tiles * g * g, visual_tokens=n, special={"<img>": 1, "</img>": 1},
                rule=f"{_hw((h, w))} -> squash {_hw(resized)} -> {how} -> {tiles} x {g}x{g} patches of {patch} -> "
                     f"pixel shuffle 0.5 -> {tiles} x {seq} = {_n(n)} tokens + <img></img>")


def _rescale_to_max_len(height: int, width: int, max_len: int, min_len: int = 1) -> Pair:
    """transformers idefics3 _resize_output_size_rescale_to_max_len (longest edge to max_len, other side even)."""
    aspect_ratio = width / height
    if width >= height:
        width = max_len
        height = int(width / aspect_ratio)
        if height % 2 != 0:
            height += 1
    elif height > width:
        height = max_len
        width = int(height * aspect_ratio)
        if width % 2 != 0:
            width += 1
    return max(height, min_len), max(width, min_len)


def _scale_below_upper_bound(height: int, width: int, max_len: int) -> Pair:
    """transformers idefics3 _resize_output_size_scale_below_upper_bound (MAX_IMAGE_SIZE = 4096)."""
    aspect_ratio = width / height
    if width >= height and width > max_len:
        width = max_len
        height = int(width / aspect_ratio)
    elif height > width and height > max_len:
        height = max_len
        width = int(height * aspect_ratio)
    return max(height, 1), max(width, 1)


def _idefics3(p: VLMPreset, h: int, w: int, o: dict) -> dict:
    """Idefics3 / SmolVLM: the image processor's pixel path (resize -> resize_for_vision_encoder -> split_images),
    which get_number_of_image_patches mirrors, then Idefics3Processor.replace_image_token."""
    t, patch, seq, shuffle = p.params["tile"], p.params["patch"], p.params["image_seq_len"], p.params["scale_factor"]
    g = t // patch
    h1, w1 = _rescale_to_max_len(h, w, o["longest_edge"])
    h1, w1 = _scale_below_upper_bound(h1, w1, 4096)
    rows = cols = 0
    if o["image_splitting"]:
        aspect_ratio = w1 / h1
        if w1 >= h1:
            rw = math.ceil(w1 / t) * t
            rh = math.ceil(int(rw / aspect_ratio) / t) * t
        else:
            rh = math.ceil(h1 / t) * t
            rw = math.ceil(int(rh * aspect_ratio) / t) * t
        resized = (rh, rw)
        if rh > t or rw > t:
            rows, cols = math.ceil(rh / t), math.ceil(rw / t)
    else:
        resized = (t, t)
    tiles = rows * cols + 1 if rows else 1
    n = seq * tiles
    if rows:
        # each row ends in "\n"; the last one and the "\n" before the global image make one "\n\n" token
        special = {"<fake_token_around_image>": rows * cols + 2, "<row_i_col_j>": rows * cols, "<global-img>": 1,
                   "\n": rows - 1, "\n\n": 1}
        special = {k: v for k, v in special.items() if v}
        how = f"{rows}x{cols} tiles of {t} + global {_hw((t, t))}"
    else:
        special = {"<fake_token_around_image>": 2, "<global-img>": 1}
        how = f"one {t}x{t} image"
    m = sum(special.values())
    first = f"longest edge {o['longest_edge']}: {_hw((h1, w1))}"
    step = f" -> multiples of {t}: {_hw(resized)}" if o["image_splitting"] else f" -> squash {_hw((t, t))}"
    return dict(resized=resized, tile_size=(t, t), tiles=tiles, tile_grid=(rows, cols) if rows else None,
                grid=(g, g), encoder_tokens=tiles * g * g, visual_tokens=n, special=special,
                rule=f"{_hw((h, w))} -> {first}{step} -> {how} -> {tiles} x {g}x{g} patches of {patch} -> pixel "
                     f"shuffle {shuffle} -> {tiles} x {seq} = {_n(n)} tokens + {m} special",
                detail={"longest_edge_resize": [h1, w1]})


def _pan_and_scan_crops(h: int, w: int, min_crop: int, max_crops: int, min_ratio: float) -> tuple[Pair, Pair]:
    """transformers models/gemma3/image_processing_gemma3.Gemma3ImageProcessor.pan_and_scan_batched: the crop
    grid (rows, cols) and crop size, or ((0, 0), (0, 0)) where it does not apply."""
    none = ((0, 0), (0, 0))
    if w >= h:
        if w / h < min_ratio:
            return none
        num_crops_w = int(math.floor(w / h + 0.5))
        num_crops_w = min(int(math.floor(w / min_crop)), num_crops_w)
        num_crops_w = max(2, num_crops_w)
        num_crops_w = min(max_crops, num_crops_w)
        num_crops_h = 1
    else:
        if h / w < min_ratio:
            return none
        num_crops_h = int(math.floor(h / w + 0.5))
        num_crops_h = min(int(math.floor(h / min_crop)), num_crops_h)
        num_crops_h = max(2, num_crops_h)
        num_crops_h = min(max_crops, num_crops_h)
        num_crops_w = 1
    crop_size_w = int(math.ceil(w / num_crops_w))
    crop_size_h = int(math.ceil(h / num_crops_h))
    if min(crop_size_w, crop_size_h) < min_crop:
        return none
    return (num_crops_h, num_crops_w), (crop_size_h, crop_size_w)


def _gemma3(p: VLMPreset, h: int, w: int, o: dict) -> dict:
    """Gemma 3: Gemma3ImageProcessor squashes to 896x896 (and, with pan-and-scan, adds crops of the original, each
    squashed to 896); Gemma3Processor.replace_image_token writes "\\n\\n<start_of_image>" + 256 x
    <image_soft_token> + "<end_of_image>\\n\\n" per image and per crop."""
    s, patch, seq = p.params["image_size"], p.params["patch"], p.params["image_seq_length"]
    g = s // patch
    pool = int(math.isqrt(g * g // seq))
    crops, crop = (0, 0), (0, 0)
    if o["pan_and_scan"]:
        crops, crop = _pan_and_scan_crops(h, w, o["pan_and_scan_min_crop_size"], o["pan_and_scan_max_crops"],
                                          o["pan_and_scan_min_ratio"])
    ncrops = crops[0] * crops[1]
    tiles = 1 + ncrops
    n = seq * tiles
    special = {"<start_of_image>": tiles, "<end_of_image>": tiles, "\n\n": 2 * tiles}
    rule = (f"{_hw((h, w))} -> squash {_hw((s, s))} -> {g}x{g} patches of {patch} -> {pool}x{pool} average pool "
            f"-> {seq} tokens")
    detail = {}
    if o["pan_and_scan"]:
        if ncrops:
            rule += (f"; pan-and-scan: + {ncrops} crops of {_hw(crop)} ({crops[0]}x{crops[1]}), each squashed to "
                     f"{_hw((s, s))} -> {tiles} x {seq} = {_n(n)} tokens")
            detail = {"pan_and_scan_crop": list(crop),
                      "extra_text": "'Here is the original image ' before and ' and here are some crops to help "
                                    "you see better ' after the first image, crops joined by ' ' (plain text, not "
                                    "counted)"}
        else:
            rule += " (pan-and-scan does not apply: aspect ratio or crop size too small)"
    return dict(resized=(s, s), tile_size=(s, s), tiles=tiles, tile_grid=crops if ncrops else None, grid=(g, g),
                encoder_tokens=tiles * g * g, visual_tokens=n, special=special, rule=rule + f" + {4 * tiles} special",
                detail=detail)


_RULES: dict[str, Callable[[VLMPreset, int, int, dict], dict]] = {
    "fixed": _fixed, "pad": _resize_with_pad, "llava": _llava, "anyres": _anyres, "qwen": _qwen,
    "internvl": _internvl, "idefics3": _idefics3, "gemma3": _gemma3, "openvla": _openvla,
}


# ---- the presets -----------------------------------------------------------------------------------------------

_QWEN_PIXELS = (
    VLMOption("min_pixels", 3136, "smallest resized area in pixels (size['shortest_edge'] of the processor)"),
    VLMOption("max_pixels", 12845056, "largest resized area in pixels (size['longest_edge'] of the processor)"),
)
_SIGLIP_PAD = "SigLIP So400m/14 at 224"
_PINPOINTS_336 = ((336, 672), (672, 336), (672, 672), (1008, 336), (336, 1008))
_PINPOINTS_384 = tuple((384 * i, 384 * j) for i in range(1, 7) for j in range(1, 7))


def _paligemma(size: int) -> VLMPreset:
    g = size // 14
    return VLMPreset(
        name=f"paligemma-{size}", model=f"google/paligemma-3b-pt-{size}", kind="fixed",
        native=(size, size),
        about=f"PaliGemma at {size} px: SigLIP So400m/14, {g * g} image tokens, no pooling",
        reference="transformers models/paligemma/processing_paligemma.PaliGemmaProcessor.replace_image_token "
                  "(image_seq_length x <image>) and _get_num_multimodal_tokens; SiglipImageProcessor squash resize",
        config=f"released preprocessor_config.json: SiglipImageProcessor size {size}x{size}, image_seq_length "
               f"{g * g} = ({size}/14)^2; config.json vision_config So400m/14 (27 layers), features = "
               "last_hidden_state. The processor's BOS after the image tokens belongs to the prompt, not the image.",
        params={"image_size": size, "patch": 14},
        encoder=_siglip_so400m(27, _SIGLIP_LAST))


PRESETS: dict[str, VLMPreset] = {p.name: p for p in (
    VLMPreset(
        name="llava-1.5", model="llava-hf/llava-1.5-7b-hf", kind="llava",
        native=(336, 336),
        about="LLaVA-1.5: CLIP ViT-L/14 at 336 px, 576 tokens per image whatever its size",
        reference="transformers models/llava/processing_llava.LlavaProcessor._get_num_multimodal_tokens and "
                  "replace_image_token; CLIPImageProcessor (image_transforms.get_resize_output_image_size, "
                  "center_crop)",
        config="llava-hf/llava-1.5-7b-hf: preprocessor_config.json size {shortest_edge: 336}, crop_size 336x336; "
               "processor_config.json patch_size 14, vision_feature_select_strategy 'default', "
               "num_additional_image_tokens 1 (576 + 1 - 1); config.json vision_feature_layer -2 (LlavaConfig "
               "defaults). The original repo pads to a square (image_aspect_ratio 'pad') instead of cropping: "
               "576 tokens either way.",
        params={"image_size": 336, "patch": 14, "cls": 1},
        encoder=CLIP_L14_336),
    VLMPreset(
        name="llava-next", model="llava-hf/llava-v1.6-mistral-7b-hf", kind="anyres",
        native=(336, 336),
        about="LLaVA-NeXT (v1.6) anyres: base image + 336-px tiles of the best grid pinpoint, padding removed, one "
              "newline feature per row",
        reference="transformers models/llava_next/processing_llava_next.LlavaNextProcessor._get_number_of_features "
                  "and _get_unpadded_features; image_processing_utils.select_best_resolution and "
                  "get_patch_output_size; LlavaNextImageProcessor._get_image_patches (tiles)",
        config="llava-v1.6 image_grid_pinpoints [[336,672],[672,336],[672,672],[1008,336],[336,1008]] "
               "(LlavaNextConfig / LlavaNextImageProcessor defaults, carried by convert_llava_next_weights_to_hf.py); "
               "CLIP-336: size {shortest_edge: 336}, crop 336; processor patch_size 14, strategy 'default', "
               "num_additional_image_tokens 1; vision_feature_layer -2",
        params={"image_size": 336, "patch": 14, "cls": 1, "strategy": "default", "pinpoints": _PINPOINTS_336},
        encoder=CLIP_L14_336),
    VLMPreset(
        name="llava-onevision", model="llava-hf/llava-onevision-qwen2-7b-ov-hf", kind="anyres",
        native=(384, 384),
        about="LLaVA-OneVision single image: SigLIP 384 base + anyres tiles up to 6x6, features reduced by bilinear "
              "interpolation to at most ~9 tiles' worth (anyres_max_9); newline per row",
        reference="transformers models/llava_onevision/processing_llava_onevision.LlavaOnevisionProcessor."
                  "_get_number_of_features and _get_unpadded_features (the model's pack_image_features does the "
                  "same unpad and nn.functional.interpolate(mode='bilinear')); the 2x2 bilinear pooling of "
                  "replace_video_token applies to video frames, not to images",
        config="convert_llava_onevision_weights_to_hf.py: num_image_tokens 729, vision_feature_select_strategy "
               "'full', vision_aspect_ratio 'anyres_max_9', SigLIP So400m/14-384 with num_hidden_layers 26 (last "
               "layer dropped), vision_feature_layer -1; image_grid_pinpoints 384 x (1..6) by 384 x (1..6) "
               "(LlavaOnevisionImageProcessor default)",
        params={"image_size": 384, "patch": 14, "cls": 0, "strategy": "full", "pinpoints": _PINPOINTS_384},
        options=(VLMOption("anyres_max", 9, "anyres_max_N: features are bilinearly reduced to about N tiles' worth"),
                 VLMOption("multi_image", False, "the image is one of several in the prompt: padded to a square, "
                                                 "no tiles, 729 + 1 newline")),
        encoder=_siglip_so400m(26, "hidden_states[-1] of the converted 26-layer tower (So400m's 27th block "
                                   "dropped), no head")),
    VLMPreset(
        name="qwen2-vl", model="Qwen/Qwen2-VL-7B-Instruct", kind="qwen",
        native=(448, 448),
        about="Qwen2-VL native resolution: smart_resize to multiples of 28, 14-px patches, 2x2 merge",
        reference="transformers models/qwen2_vl/image_processing_qwen2_vl.smart_resize and "
                  "Qwen2VLImageProcessor.get_number_of_image_patches; processing_qwen2_vl.Qwen2VLProcessor."
                  "_get_num_multimodal_tokens",
        config="released Qwen/Qwen2-VL-7B-Instruct preprocessor_config.json: min_pixels 3136, max_pixels 12845056, "
               "patch_size 14, merge_size 2, temporal_patch_size 2 (transformers' class default max_pixels is "
               "28*28*1280 = 1,003,520; the released config wins, --max-pixels overrides); <|vision_start|> and "
               "<|vision_end|> come from the released chat template",
        params={"patch": 14, "merge": 2}, options=_QWEN_PIXELS),
    VLMPreset(
        name="qwen2.5-vl", model="Qwen/Qwen2.5-VL-7B-Instruct", kind="qwen",
        native=(448, 448),
        about="Qwen2.5-VL: same resize and token rule as Qwen2-VL (its ViT adds window attention)",
        reference="Qwen2.5-VL uses Qwen2VLImageProcessor (transformers models/auto/image_processing_auto.py) and "
                  "processing_qwen2_5_vl.Qwen2_5_VLProcessor._get_num_multimodal_tokens",
        config="released Qwen/Qwen2.5-VL-7B-Instruct preprocessor_config.json: min_pixels 3136, max_pixels "
               "12845056, patch_size 14, merge_size 2 (copies quoted in public code, found with the search tool)",
        params={"patch": 14, "merge": 2}, options=_QWEN_PIXELS),
    VLMPreset(
        name="qwen3-vl", model="Qwen/Qwen3-VL-8B-Instruct", kind="qwen",
        native=(512, 512),
        about="Qwen3-VL: smart_resize to multiples of 32, 16-px patches, 2x2 merge",
        reference="Qwen3-VL uses Qwen2VLImageProcessor (models/auto/image_processing_auto.py) with patch_size 16; "
                  "processing_qwen3_vl.Qwen3VLProcessor._get_num_multimodal_tokens",
        config="released Qwen/Qwen3-VL-8B-Instruct preprocessor_config.json: size {shortest_edge: 65536, "
               "longest_edge: 16777216}, patch_size 16, merge_size 2 (factor 32), temporal_patch_size 2 (copies "
               "quoted in public code, found with the search tool)",
        params={"patch": 16, "merge": 2},
        options=(VLMOption("min_pixels", 65536, "smallest resized area in pixels (size['shortest_edge'])"),
                 VLMOption("max_pixels", 16777216, "largest resized area in pixels (size['longest_edge'])"))),
    VLMPreset(
        name="internvl", model="OpenGVLab/InternVL3-8B-hf", kind="internvl",
        native=(448, 448),
        about="InternVL 2.5/3 dynamic tiling: 1..12 tiles of 448 + a thumbnail, pixel shuffle 0.5 -> 256 per tile",
        reference="transformers models/got_ocr2/image_processing_got_ocr2.get_optimal_tiled_canvas and "
                  "GotOcr2ImageProcessor.get_number_of_image_patches / crop_image_to_patches; "
                  "models/internvl/processing_internvl.InternVLProcessor.replace_image_token and "
                  "_get_num_multimodal_tokens",
        config="InternVL*-hf: GotOcr2ImageProcessor size 448x448, min_patches 1, max_patches 12, thumbnail on; "
               "InternVLProcessor images_kwargs crop_to_patches True, image_seq_length 256 = (448/14)^2 x 0.5^2; "
               "vision_feature_layer -1. The original repo's find_closest_aspect_ratio orders equal-area grids "
               "by set order; transformers' order is followed here.",
        params={"image_size": 448, "patch": 14, "image_seq_length": 256},
        options=(VLMOption("max_tiles", 12, "most tiles (max_patches / max_dynamic_patch), thumbnail not counted"),
                 VLMOption("min_tiles", 1, "fewest tiles (min_patches)")),
        encoder=INTERNVIT_300M),
    VLMPreset(
        name="idefics3", model="HuggingFaceM4/Idefics3-8B-Llama3", kind="idefics3",
        native=(364, 364),
        about="Idefics3: longest edge to 1456, 364-px tiles + a global image, pixel shuffle 2 -> 169 per tile, "
              "row/column tags",
        reference="transformers models/idefics3/image_processing_idefics3 (Idefics3ImageProcessor.resize, "
                  "resize_for_vision_encoder, split_images, get_number_of_image_patches) and "
                  "processing_idefics3.Idefics3Processor.replace_image_token / _get_num_multimodal_tokens",
        config="released preprocessor_config.json: size {longest_edge: 1456}, max_image_size {longest_edge: 364}, "
               "do_image_splitting true; processor_config.json image_seq_len 169 (scale_factor 2); SigLIP "
               "So400m/14 at 364. Special tokens assume '\\n\\n' is one token (the Llama-3 tokenizer's merge).",
        params={"tile": 364, "patch": 14, "image_seq_len": 169, "scale_factor": 2},
        options=(VLMOption("longest_edge", 1456, "the image's longest edge is resized to this first (size)"),
                 VLMOption("image_splitting", True, "cut tiles (do_image_splitting); off: one squashed 364 image")),
        encoder=_siglip_so400m(27, _SIGLIP_LAST)),
    VLMPreset(
        name="smolvlm", model="HuggingFaceTB/SmolVLM2-500M-Video-Instruct", kind="idefics3",
        native=(512, 512),
        about="SmolVLM (256M/500M, SmolVLM2-500M): longest edge to 2048, 512-px tiles + a global image, pixel "
              "shuffle 4 -> 64 per tile",
        reference="transformers models/smolvlm/image_processing_smolvlm (same resize/split code as Idefics3) and "
                  "processing_smolvlm / Idefics3Processor-style replace_image_token",
        config="released preprocessor_config.json: size {longest_edge: 2048}, max_image_size {longest_edge: 512}; "
               "processor_config.json image_seq_len 64 (scale_factor 4); SigLIP B/16-512 (copies quoted in public "
               "code, found with the search tool). '\\n\\n' assumed one token, as the processor's formula does for "
               "merging tokenizers.",
        params={"tile": 512, "patch": 16, "image_seq_len": 64, "scale_factor": 4},
        options=(VLMOption("longest_edge", 2048, "the image's longest edge is resized to this first (size)"),
                 VLMOption("image_splitting", True, "cut tiles (do_image_splitting); off: one squashed 512 image")),
        encoder=SIGLIP_B16),
    VLMPreset(
        name="gemma3", model="google/gemma-3-4b-it", kind="gemma3",
        native=(896, 896),
        about="Gemma 3: 896-px squash, SigLIP So400m/14 (64x64 patches), 4x4 average pool -> 256 tokens; "
              "optional pan-and-scan crops",
        reference="transformers models/gemma3/image_processing_gemma3.Gemma3ImageProcessor.pan_and_scan_batched "
                  "and _preprocess; processing_gemma3.Gemma3Processor.replace_image_token (full_image_sequence); "
                  "modeling_gemma3.Gemma3MultiModalProjector (avg pool 64 -> 16 per side)",
        config="released preprocessor_config.json: size 896x896, image_seq_length 256, do_pan_and_scan null -> the "
               "processor's defaults do_pan_and_scan False, pan_and_scan_min_crop_size 256, "
               "pan_and_scan_max_num_crops 4, pan_and_scan_min_ratio_to_activate 1.2 (Gemma3Processor). '\\n\\n' "
               "counted as one token each (Gemma's tokenizer has it).",
        params={"image_size": 896, "patch": 14, "image_seq_length": 256},
        options=(VLMOption("pan_and_scan", False, "add crops of elongated images (do_pan_and_scan)"),
                 VLMOption("pan_and_scan_min_crop_size", 256, "smallest crop side in pixels"),
                 VLMOption("pan_and_scan_max_crops", 4, "most crops (pan_and_scan_max_num_crops)"),
                 VLMOption("pan_and_scan_min_ratio", 1.2,
                           "long/short side ratio from which crops are made (pan_and_scan_min_ratio_to_activate)")),
        encoder=_siglip_so400m(27, _SIGLIP_LAST)),
    _paligemma(224),
    _paligemma(448),
    _paligemma(896),
    VLMPreset(
        name="pi0", model="lerobot/pi0", kind="pad", cameras=3,
        native=(224, 224),
        about="pi0 / pi0-FAST / pi0.5 (openpi; lerobot/pi0 is its port): PaliGemma's SigLIP at 224, 256 tokens per "
              "camera, three cameras",
        reference="Physical-Intelligence/openpi src/openpi/models/model.py (IMAGE_KEYS base_0_rgb, "
                  "left_wrist_0_rgb, right_wrist_0_rgb; IMAGE_RESOLUTION (224, 224); preprocess_observation) and "
                  "src/openpi/shared/image_tools.resize_with_pad (centered black padding); pi0.py embeds each "
                  "camera with _siglip.Module(variant='So400m/14', pool_type='none'): 256 tokens, no separators",
        config="openpi constants: IMAGE_RESOLUTION (224, 224), three cameras; transformers has no implementation, "
               "so tests check the published rule. lerobot's port pads top/left instead of centered: same content "
               "size and tokens",
        params={"image_size": 224, "patch": 14, "pad": "black padding centered"},
        encoder=_siglip_so400m(27, "all 27 blocks and the encoder norm (pool_type 'none'); the Dense to the LM "
                                   "width is the projector, not counted")),
    VLMPreset(
        name="smolvla", model="lerobot/smolvla_base", kind="pad",
        native=(512, 512),
        about="SmolVLA (lerobot): SmolVLM2-500M's SigLIP B/16 at 512, pixel shuffle 4 -> 64 tokens per frame",
        reference="huggingface/lerobot src/lerobot/policies/smolvla/modeling_smolvla.resize_with_pad (pad top and "
                  "left) and SmolVLMWithExpertModel.embed_image (vision_model last_hidden_state + connector)",
        config="SmolVLAConfig: resize_imgs_with_padding (512, 512), vlm_model_name "
               "HuggingFaceTB/SmolVLM2-500M-Video-Instruct, add_image_special_tokens False; transformers has no "
               "implementation, so tests check the published rule",
        params={"image_size": 512, "patch": 16, "pixel_shuffle": 4, "pad": "zero padding top/left"},
        encoder=SIGLIP_B16),
    VLMPreset(
        name="openvla", model="openvla/openvla-7b", kind="openvla",
        native=(224, 224),
        about="OpenVLA: fused DINOv2-L/14 + SigLIP So400m/14 at 224, images squashed, 256 patch tokens",
        reference="openvla/openvla prismatic 'dinosiglip-vit-so-224px' (resize_naive squash, patch tokens of each "
                  "encoder's second-to-last block, channels concatenated); vitcli src/vitcli/core/presets.py "
                  "PRESETS['openvla'] and budget()",
        config="vitcli core/presets.py 'openvla' (size 224, layer -2, squash); transformers has no implementation, "
               "so tests check the published rule",
        params={"patch": 14}),
)}


def list_presets() -> list[VLMPreset]:
    """Every VLM/VLA preset, in table order (each has .name, .model, .reference, .to_dict())."""
    return list(PRESETS.values())


def get_vlm_preset(name: str) -> VLMPreset:
    """The preset called `name` (case-insensitive); UsageError listing the valid names otherwise."""
    try:
        return PRESETS[name.strip().lower()]
    except KeyError:
        raise UsageError(f"--preset {name!r} is not a known VLM/VLA preset",
                         hint=f"presets: {', '.join(PRESETS)}") from None


def presets_accepting(option: str) -> list[str]:
    """Names of the presets whose processor exposes `option` (by name, e.g. 'max_tiles'), in table order."""
    return [p.name for p in PRESETS.values() if any(o.name == option for o in p.options)]


def option_flags() -> dict[str, VLMOption]:
    """Every option of every preset by name (the first preset's record: flags and types agree across presets)."""
    out: dict[str, VLMOption] = {}
    for p in PRESETS.values():
        for o in p.options:
            out.setdefault(o.name, o)
    return out


def resolve_options(preset: str | VLMPreset, options: dict) -> dict:
    """The preset's options with `options` applied (None or absent: the released default), every option named.

    An option the preset does not accept is a UsageError naming the presets that do; so is a bad value.
    """
    p = preset if isinstance(preset, VLMPreset) else get_vlm_preset(preset)
    return _resolve_options(p, options)


def _resolve_options(p: VLMPreset, options: dict) -> dict:
    """The preset's options with `options` applied; unknown names and bad values are UsageErrors."""
    known = {o.name: o for o in p.options}
    unknown = [k for k, v in options.items() if k not in known and v is not None]  # None: "not given"
    if unknown:
        flags = ", ".join(o.flag for o in p.options) or "none"
        if len(unknown) == 1:
            verb, where = "is not an option", f"presets that take it: {', '.join(presets_accepting(unknown[0]))}"
        else:
            verb = "are not options"
            where = "presets that take them: " + "; ".join(
                f"--{k.replace('_', '-')}: {', '.join(presets_accepting(k))}" for k in unknown)
        raise UsageError(f"{', '.join('--' + k.replace('_', '-') for k in unknown)} {verb} of --preset {p.name} "
                         f"({where})", hint=f"{p.name} accepts: {flags}")
    out = {}
    for name, o in known.items():
        v = options.get(name)
        if v is None:
            v = o.default
        if o.kind is bool:
            if not isinstance(v, bool):
                raise UsageError(f"{o.flag} {v!r} must be true or false")
        elif o.kind is int:
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise UsageError(f"{o.flag} {v!r} must be a whole number of at least 1",
                                 hint=f"the released value is {o.default}")
        elif isinstance(v, bool) or not isinstance(v, (int, float)) or not v > 0:
            raise UsageError(f"{o.flag} {v!r} must be a number above 0", hint=f"the released value is {o.default}")
        out[name] = v
    for lo, hi in (("min_pixels", "max_pixels"), ("min_tiles", "max_tiles")):
        if lo in out and out[lo] > out[hi]:
            raise UsageError(f"--{lo.replace('_', '-')} {out[lo]} is above --{hi.replace('_', '-')} {out[hi]}",
                             hint=f"released values: {known[lo].default} and {known[hi].default}")
    return out


def image_tokens(preset: str | VLMPreset, size: Pair, **options) -> ImageTokens:
    """The visual-token budget of one image of `size` (h, w) pixels for `preset`.

    `options` are the preset's processor options by name (e.g. max_pixels=1003520, pan_and_scan=True); None or
    absent means the released default. Raises UsageError for a zero size, an unknown option, a bad value, or a
    size the reference processor rejects or cannot process (named in the message).
    """
    p = preset if isinstance(preset, VLMPreset) else get_vlm_preset(preset)
    try:
        h, w = (int(size[0]), int(size[1]))
    except (TypeError, ValueError, IndexError):
        raise UsageError(f"--size {size!r} is not a size",
                         hint="give HxW in pixels, height first: --size 1080x1920") from None
    if h < 1 or w < 1:
        raise UsageError(f"--size {h}x{w}: an image needs at least 1x1 pixels", hint="e.g. --size 1080x1920")
    opts = _resolve_options(p, options)
    r = _RULES[p.kind](p, h, w, opts)
    special = r.pop("special")
    macs = None
    if p.kind == "openvla":
        macs = openvla_budget()["macs_stop_early"]
    elif p.encoder is not None:
        macs = r["tiles"] * p.encoder.tile_macs(r["tile_size"])
    return ImageTokens(preset=p.name, model=p.model, image=(h, w), special_tokens=sum(special.values()),
                       special=special, options=opts, encoder_macs=macs, **r)


def openvla_budget() -> dict:
    """core/presets.budget of the 'openvla' encoder preset, from vitcli's own specs (no timm): per frame."""
    from vitcli.core.presets import PRESETS as ENCODER_PRESETS
    from vitcli.core.presets import budget

    enc = ENCODER_PRESETS["openvla"]
    return budget(enc, [known_spec(m).at_size(enc.size) for m in enc.models])


# ---- robot control arithmetic ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class ControlBudget:
    """Tokens and encoder compute per control step and per second for a policy that sees `cameras` cameras and
    `frames` history frames per camera each step, at `hz` steps per second.

    Assumes every frame is encoded and sent to the language model each step (no feature cache); Qwen's video
    path, which merges pairs of frames (temporal patch 2), is not modelled: frames count as separate images. For
    LLaVA-OneVision with several images in one prompt, build the rows with multi_image=True (what its processor
    does then).
    """

    preset: str
    cameras: int
    frames: int
    hz: float | None
    rows: tuple[ImageTokens, ...]  # one per camera
    visual_tokens_per_step: int
    special_tokens_per_step: int
    encoder_macs_per_step: int | None
    encoder: dict | None

    @property
    def tokens_per_step(self) -> int:
        return self.visual_tokens_per_step + self.special_tokens_per_step

    @property
    def tokens_per_second(self) -> float | None:
        return None if self.hz is None else self.tokens_per_step * self.hz

    @property
    def encoder_macs_per_second(self) -> float | None:
        if self.hz is None or self.encoder_macs_per_step is None:
            return None
        return self.encoder_macs_per_step * self.hz

    def to_dict(self) -> dict:
        macs = self.encoder_macs_per_step
        return {
            "preset": self.preset,
            "cameras": self.cameras,
            "frames": self.frames,
            "hz": self.hz,
            "per_camera": [r.to_dict() for r in self.rows],
            "visual_tokens_per_step": self.visual_tokens_per_step,
            "special_tokens_per_step": self.special_tokens_per_step,
            "tokens_per_step": self.tokens_per_step,
            "tokens_per_second": self.tokens_per_second,
            "encoder_macs_per_step": macs,
            "encoder_flops_per_step": None if macs is None else 2 * macs,
            "encoder_macs_per_second": self.encoder_macs_per_second,
            "encoder_flops_per_second": None if self.encoder_macs_per_second is None
            else 2 * self.encoder_macs_per_second,
            "encoder": self.encoder,
            "units": {"tokens_per_step": "tokens (visual + special) per control step",
                      "tokens_per_second": "tokens per second at hz",
                      "encoder_macs_per_step": "multiply-accumulates per control step",
                      "encoder_flops_per_step": "2 x MACs per control step",
                      "encoder_macs_per_second": "multiply-accumulates per second at hz",
                      "encoder_flops_per_second": "2 x MACs per second at hz"},
        }


def check_control(cameras: int | None, frames: int | None, hz: float | None) -> None:
    """--cameras and --frames: whole numbers of at least 1; --hz: a finite rate above 0. None: not given."""
    for flag, n in (("--cameras", cameras), ("--frames", frames)):
        if n is not None and (isinstance(n, bool) or not isinstance(n, int) or n < 1):
            raise UsageError(f"{flag} {n!r} must be a whole number of at least 1")
    if hz is not None and (isinstance(hz, bool) or not isinstance(hz, (int, float)) or not math.isfinite(hz)
                           or hz <= 0):
        raise UsageError(f"--hz {hz!r} must be a finite rate above 0 (control steps per second)", hint="e.g. --hz 50")


def control_budget(rows: Sequence[ImageTokens], cameras: int | None = None, frames: int = 1,
                   hz: float | None = None) -> ControlBudget:
    """Per-step and per-second budget from per-image `rows` (all of one preset).

    One row is one camera's frame size, repeated for `cameras` cameras (default: the preset's, pi0 3, others 1);
    several rows are one camera each (`cameras`, if given, must equal their number). Per step:
    tokens = frames x sum over cameras of (visual + special); encoder MACs = frames x sum of each row's
    encoder_macs (None where the encoder is unknown to vitcli's cost model).
    """
    rows = tuple(rows)
    if not rows:
        raise UsageError("no image size given", hint="give --size HxW")
    names = {r.preset for r in rows}
    if len(names) != 1:
        raise UsageError(f"rows of several presets ({', '.join(sorted(names))}) cannot share one budget")
    p = get_vlm_preset(rows[0].preset)
    check_control(cameras, frames, hz)
    if len(rows) > 1:
        if cameras is not None and cameras != len(rows):
            raise UsageError(f"--cameras {cameras} does not match the {len(rows)} sizes given",
                             hint="give one --size per camera, or one --size and --cameras N")
        per_camera = rows
    else:
        per_camera = rows * (p.cameras if cameras is None else cameras)
    macs = None
    if all(r.encoder_macs is not None for r in per_camera):
        macs = frames * sum(r.encoder_macs for r in per_camera)
    if p.kind == "openvla":
        enc = {"model": "DINOv2-L/14-reg4 + SigLIP So400m/14 at 224", "layer": "second-to-last block of each, "
               "stop early, no head (core/presets.py budget macs_stop_early)"}
    else:
        enc = p.encoder.to_dict() if p.encoder else None
    return ControlBudget(
        preset=p.name, cameras=len(per_camera), frames=frames, hz=None if hz is None else float(hz),
        rows=per_camera,
        visual_tokens_per_step=frames * sum(r.visual_tokens for r in per_camera),
        special_tokens_per_step=frames * sum(r.special_tokens for r in per_camera),
        encoder_macs_per_step=macs, encoder=enc)
