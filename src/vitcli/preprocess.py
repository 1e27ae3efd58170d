"""timm's eval preprocessing as an explicit plan, without torch: PIL + numpy only.

`Plan.from_config(cfg)` reads the data config vitcli's `backend.data.data_config` returns (timm's
`resolve_data_config`) and replays, stage for stage, the PIL part of
`timm.data.create_transform(**cfg, is_training=False)` (timm 1.0.31 `transforms_imagenet_eval`, torchvision
0.29 `Resize` / `CenterCrop`, timm `ResizeKeepRatio` / `CenterCropOrPad` / `TrimBorder`):

    crop_pct   = cfg crop_pct or 0.875;  (sh, sw) = floor(H / crop_pct), floor(W / crop_pct)
    [TrimBorder(crop_border_pixels)]                        when crop_border_pixels
    squash:  Resize((sh, sw))                 -> CenterCrop((H, W))              (pads with 0)
    border:  ResizeKeepRatio((sh, sw), longest=1) -> CenterCropOrPad((H, W), fill=round(255 * mean))
    center:  Resize(sh) if sh == sw else ResizeKeepRatio((sh, sw), longest=0) -> CenterCrop((H, W))

Every resize is PIL's `Image.resize(size, resample)` with no `reducing_gap` (torchvision always antialiases a
PIL image). The result is pixel-identical to timm's PIL stages (tests/test_preprocess.py). A config this
module cannot reproduce exactly (interpolation 'random', an unknown key that changes the transform, a mean of
other than 3 channels) raises `NotExact`; the caller then uses timm's own transform.

Worker processes import this module to decode and resize before torch is loaded; the main process turns the
uint8 arrays into timm's normalised tensors bit for bit with `backend.tensor_preprocess.normalize_u8_batch`.
Here nothing imports torch, torchvision or timm, not even lazily (a test checks `sys.modules`).

Coordinates: an image of w x h pixels spans the continuous box [0, w] x [0, h]; pixel (x, y) covers
[x, x + 1) x [y, y + 1), its centre is (x + 0.5, y + 0.5). PIL's resize maps continuous coordinates linearly
(`x_out = x_in * out / in`), so every stage of a plan is an affine map per axis (`Geometry`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from vitcli.core.tokens import Pair
from vitcli.imaging import open_image

__all__ = ["NotExact", "Plan", "Geometry", "Prepared", "draft_scale", "open_for_plan", "load_for_plan"]

DEFAULT_CROP_PCT = 0.875  # timm.data.constants.DEFAULT_CROP_PCT (a test checks it)

# timm.data.transforms.str_to_interp_mode -> torchvision pil_modes_mapping -> PIL resample filter
_PIL_FILTERS = {
    "nearest": Image.Resampling.NEAREST,
    "bilinear": Image.Resampling.BILINEAR,
    "bicubic": Image.Resampling.BICUBIC,
    "box": Image.Resampling.BOX,
    "hamming": Image.Resampling.HAMMING,
    "lanczos": Image.Resampling.LANCZOS,
}
# Keys of timm's data config that the eval transform reads; anything else passed to create_transform could
# change it (e.g. use_prefetcher, normalize=False, naflex), so it is refused rather than ignored.
_KNOWN_KEYS = {"input_size", "interpolation", "crop_pct", "crop_mode", "mean", "std", "crop_border_pixels"}
_TRANSPOSED = (5, 6, 7, 8)  # EXIF orientations that swap width and height


class NotExact(ValueError):
    """The data config asks for something this plan cannot reproduce bit for bit; use timm's transform."""


Box = tuple[float, float, float, float]  # (left, top, right, bottom), continuous pixel coordinates


@dataclass(frozen=True)
class Geometry:
    """Where the model input comes from in one original image (after EXIF orientation), stage by stage.

    original: (h, w) of the image given to the plan.
    trim: (left, top, right, bottom) of timm's TrimBorder box in original pixels (the whole image without one).
    resized: (h, w) of the trimmed image after the resize.
    crop: (left, top) of the model input in resized pixels; negative where the input is padded.
    size: (H, W) of the model input.
    """

    original: Pair
    trim: tuple[int, int, int, int]
    resized: Pair
    crop: Pair
    size: Pair

    @property
    def scale(self) -> tuple[float, float]:
        """(sx, sy): resized pixels per original pixel along x and y."""
        left, top, right, bottom = self.trim
        return self.resized[1] / (right - left), self.resized[0] / (bottom - top)

    def to_input(self, x: float, y: float) -> tuple[float, float]:
        """Continuous original coordinates -> continuous model-input coordinates (may fall outside it)."""
        sx, sy = self.scale
        return (x - self.trim[0]) * sx - self.crop[0], (y - self.trim[1]) * sy - self.crop[1]

    def to_original(self, x: float, y: float) -> tuple[float, float]:
        """Continuous model-input coordinates -> continuous original coordinates (inverse of `to_input`)."""
        sx, sy = self.scale
        return (x + self.crop[0]) / sx + self.trim[0], (y + self.crop[1]) / sy + self.trim[1]

    def source_box(self) -> Box:
        """The part of the original image the model input shows (cropped parts and padding excluded)."""
        (h, w), (H, W) = self.original, self.size
        left, top = self.to_original(0, 0)
        right, bottom = self.to_original(W, H)
        tl, tt, tr, tb = self.trim
        return (max(left, tl, 0), max(top, tt, 0), min(right, tr, w), min(bottom, tb, h))

    def input_box(self) -> Box:
        """The whole model input in original coordinates, padding included (may extend past the image):
        to draw an (H, W) map over the original image, resize it to this box."""
        (H, W) = self.size
        return (*self.to_original(0, 0), *self.to_original(W, H))

    def input_pixel(self, x: int, y: int) -> tuple[int, int] | None:
        """Original pixel (x, y) -> the model-input pixel (x, y) its centre lands in; None if cropped away."""
        (H, W) = self.size
        x0, y0, x1, y1 = self.source_box()
        if not (x0 <= x + 0.5 < x1 and y0 <= y + 0.5 < y1):
            return None
        u, v = self.to_input(x + 0.5, y + 0.5)
        return (min(int(math.floor(u)), W - 1), min(int(math.floor(v)), H - 1))

    def original_pixel(self, x: int, y: int) -> tuple[int, int] | None:
        """Model-input pixel (x, y) -> the original pixel under its centre; None in padding."""
        u, v = self.to_original(x + 0.5, y + 0.5)
        x0, y0, x1, y1 = self.source_box()
        if not (x0 <= u < x1 and y0 <= v < y1):
            return None
        return (int(math.floor(u)), int(math.floor(v)))

    def patch_box(self, row: int, col: int, patch: int | Pair) -> Box | None:
        """The original-image box (left, top, right, bottom) that model-input patch (row, col) came from,
        clipped to what the model saw; None for a patch made only of padding."""
        ph, pw = (patch, patch) if isinstance(patch, int) else patch
        left, top = self.to_original(col * pw, row * ph)
        right, bottom = self.to_original((col + 1) * pw, (row + 1) * ph)
        x0, y0, x1, y1 = self.source_box()
        box = (max(left, x0), max(top, y0), min(right, x1), min(bottom, y1))
        return box if box[0] < box[2] and box[1] < box[3] else None

    def point_to_patch(self, x: float, y: float, patch: int | Pair) -> tuple[int, int] | None:
        """Original pixel (x, y) -> (row, col) of the patch holding it; None if the pixel was cropped away."""
        ph, pw = (patch, patch) if isinstance(patch, int) else patch
        px = self.input_pixel(math.floor(x), math.floor(y))
        if px is None or px[1] >= (self.size[0] // ph) * ph or px[0] >= (self.size[1] // pw) * pw:
            return None
        return (px[1] // ph, px[0] // pw)

    def to_dict(self) -> dict:
        return {"original": list(self.original), "trim": list(self.trim), "resized": list(self.resized),
                "crop": list(self.crop), "size": list(self.size)}


@dataclass(frozen=True)
class Plan:
    """timm's eval preprocessing for one data config, replayed with PIL and numpy.

    size: (H, W) model input; scale_size: (h, w) timm resizes towards before the crop; mode: 'center' |
    'squash' | 'border'; fill: RGB of the padding (0 except in 'border' mode); trim: crop_border_pixels.
    """

    size: Pair
    interpolation: str
    crop_pct: float
    mode: str
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    trim: int = 0

    @classmethod
    def from_config(cls, cfg: dict) -> Plan:
        """Plan for a timm data config (`backend.data.data_config`); NotExact when it cannot be replayed."""
        unknown = set(cfg) - _KNOWN_KEYS
        if unknown:
            raise NotExact(f"data config keys {sorted(unknown)} are not replayed by vitcli.preprocess")
        interp = cfg.get("interpolation", "bilinear")  # create_transform's default
        if interp not in _PIL_FILTERS:
            raise NotExact(f"interpolation {interp!r} is not a fixed PIL filter")
        mean, std = tuple(cfg.get("mean", ())), tuple(cfg.get("std", ()))
        if len(mean) != 3 or len(std) != 3:
            raise NotExact(f"mean {mean} / std {std}: only 3-channel normalisation is replayed")
        input_size = cfg.get("input_size", 224)
        size = tuple(input_size[-2:]) if isinstance(input_size, (tuple, list)) else (input_size, input_size)
        if len(size) != 2 or not all(isinstance(v, int) and v > 0 for v in size):
            raise NotExact(f"input_size {input_size!r} is not (C, H, W) of positive ints")
        mode = cfg.get("crop_mode")
        mode = mode if mode in ("squash", "border") else "center"  # timm: anything else is the centre crop
        trim = cfg.get("crop_border_pixels") or 0
        if not isinstance(trim, int) or trim < 0:
            raise NotExact(f"crop_border_pixels {trim!r} is not a non-negative int")
        return cls(size=size, interpolation=interp, crop_pct=cfg.get("crop_pct") or DEFAULT_CROP_PCT,
                   mode=mode, mean=tuple(float(v) for v in mean), std=tuple(float(v) for v in std), trim=trim)

    # ---- sizes, exactly as timm / torchvision compute them --------------------------------------------------

    @property
    def scale_size(self) -> Pair:
        """transforms_imagenet_eval: `tuple(math.floor(x / crop_pct) for x in img_size)`."""
        return tuple(math.floor(x / self.crop_pct) for x in self.size)

    @property
    def fill(self) -> tuple[int, int, int]:
        """Padding colour: CenterCropOrPad's `round(255 * v) for v in mean` in 'border' mode, else 0."""
        return tuple(round(255 * v) for v in self.mean) if self.mode == "border" else (0, 0, 0)

    @property
    def resample(self) -> Image.Resampling:
        return _PIL_FILTERS[self.interpolation]

    def trim_box(self, hw: Pair) -> tuple[int, int, int, int]:
        """timm TrimBorder's crop box (left, top, right, bottom), its `left = min(border, h)` included."""
        h, w = hw
        if not self.trim:
            return (0, 0, w, h)
        top, left = min(self.trim, h), min(self.trim, h)
        height, width = max(0, h - 2 * self.trim), max(0, w - 2 * self.trim)
        return (left, top, left + width, top + height)

    def resize_size(self, hw: Pair) -> Pair:
        """(h, w) after the resize stage, for an (h, w) image entering it (after TrimBorder)."""
        h, w = hw
        sh, sw = self.scale_size
        if self.mode == "squash":  # torchvision Resize((sh, sw)) (of an empty image too: PIL makes it black)
            return (sh, sw)
        if h <= 0 or w <= 0:  # timm fails too (ZeroDivisionError or PIL's "height and width must be > 0")
            raise ValueError(f"nothing to resize: {h}x{w} pixels after crop_border_pixels={self.trim}")
        if self.mode == "center" and sh == sw:  # torchvision Resize(int): _compute_resized_output_size
            short, long = (w, h) if w <= h else (h, w)
            new_short, new_long = sh, int(sh * long / short)
            new_w, new_h = (new_short, new_long) if w <= h else (new_long, new_short)
            return (new_h, new_w)
        longest = 1.0 if self.mode == "border" else 0.0  # timm ResizeKeepRatio.get_params, no randomness
        ratio_h, ratio_w = h / sh, w / sw
        ratio = max(ratio_h, ratio_w) * longest + min(ratio_h, ratio_w) * (1.0 - longest)
        return tuple(round(x * 1.0 / ratio) for x in (h, w))

    def crop_offset(self, resized: Pair) -> Pair:
        """(left, top) of the (H, W) crop in resized coordinates: torchvision center_crop / timm
        center_crop_or_pad (pad (d // 2, (d + 1) // 2) where the crop is larger, then round((h - H) / 2))."""
        rh, rw = resized
        ch, cw = self.size
        pl = pt = 0
        if cw > rw or ch > rh:
            pl = (cw - rw) // 2 if cw > rw else 0
            pt = (ch - rh) // 2 if ch > rh else 0
            rw += pl + ((cw - rw + 1) // 2 if cw > rw else 0)
            rh += pt + ((ch - rh + 1) // 2 if ch > rh else 0)
        return (int(round((rw - cw) / 2.0)) - pl, int(round((rh - ch) / 2.0)) - pt)

    def geometry(self, orig_hw: Pair) -> Geometry:
        """Every stage's box for an (h, w) image (after EXIF orientation)."""
        trim = self.trim_box(orig_hw)
        resized = self.resize_size((trim[3] - trim[1], trim[2] - trim[0]))
        return Geometry(original=tuple(orig_hw), trim=trim, resized=resized, crop=self.crop_offset(resized),
                        size=self.size)

    # ---- the PIL stages --------------------------------------------------------------------------------------

    def resize_crop(self, img: Image.Image) -> Image.Image:
        """timm's eval PIL stages on an RGB image: pixel-identical to them. Returns RGB (W, H) = size."""
        if self.trim:
            img = img.crop(self.trim_box((img.height, img.width)))  # F.crop: PIL crop, zeros outside
        rh, rw = self.resize_size((img.height, img.width))
        if (rh, rw) != (img.height, img.width):  # torchvision returns the image untouched at equal size
            img = img.resize((rw, rh), self.resample)
        return self._crop(img)

    def _crop(self, img: Image.Image) -> Image.Image:
        (ch, cw), (left, top) = self.size, self.crop_offset((img.height, img.width))
        if left >= 0 and top >= 0 and left + cw <= img.width and top + ch <= img.height:
            return img.crop((left, top, left + cw, top + ch))
        out = Image.new("RGB", (cw, ch), self.fill)  # ImageOps.expand's pad, then the crop, in one paste
        out.paste(img, (-left, -top))
        return out

    def to_array(self, img: Image.Image) -> np.ndarray:
        """Resize, crop and return uint8 (H, W, 3): the input of `normalize_u8_batch`."""
        return np.array(self.resize_crop(img), dtype=np.uint8)  # writable: torch.from_numpy takes it

    def normalize_numpy(self, u8: np.ndarray) -> np.ndarray:
        """uint8 (H, W, 3) -> float32 (3, H, W), bit-identical to torchvision ToTensor + Normalize on CPU:
        `x / 255`, then `- mean`, then `/ std`, each rounded to float32 (IEEE, as torch's CPU kernels)."""
        x = u8.astype(np.float32).transpose(2, 0, 1) / np.float32(255)
        mean = np.asarray(self.mean, dtype=np.float32).reshape(3, 1, 1)
        std = np.asarray(self.std, dtype=np.float32).reshape(3, 1, 1)
        return np.ascontiguousarray((x - mean) / std, dtype=np.float32)

    def describe(self) -> str:
        sh, sw = self.scale_size
        h, w = self.size
        trim = f"trim {self.trim} px, " if self.trim else ""
        resize = {"squash": f"resize to {sh}x{sw}",
                  "border": f"resize longest side to fit {sh}x{sw}",
                  "center": f"resize shorter side to {sh}" if sh == sw else f"resize to cover {sh}x{sw}"}[self.mode]
        crop = "centre crop/pad" if self.mode == "border" else "centre crop"
        return f"{trim}{resize} ({self.interpolation}), {crop} {h}x{w} (crop_pct {self.crop_pct:g}, {self.mode})"

    def to_dict(self) -> dict:
        return {"size": list(self.size), "interpolation": self.interpolation, "crop_pct": self.crop_pct,
                "crop_mode": self.mode, "scale_size": list(self.scale_size), "mean": list(self.mean),
                "std": list(self.std), "crop_border_pixels": self.trim}


# ---- reduced-size JPEG decoding (DCT scaling) ---------------------------------------------------------------

def draft_scale(orig_hw: Pair, plan: Plan) -> int:
    """1, 2, 4 or 8: the largest JPEG DCT scale that keeps the decoded image at least the plan's resize
    target on both sides (PIL `draft`'s own rule); 1 when the image is under twice the target."""
    left, top, right, bottom = plan.trim_box(orig_hw)
    h, w = bottom - top, right - left
    if h <= 0 or w <= 0 or (plan.trim and 2 * plan.trim >= min(orig_hw)):
        return 1
    rh, rw = plan.resize_size((h, w))
    fit = min(h // rh, w // rw)
    return next((s for s in (8, 4, 2) if fit >= s), 1)


def _orientation_offset(orientation: int, stored: Pair, drafted: Pair, s: int) -> tuple[float, float]:
    """Where the image content starts in the drafted, EXIF-oriented image, in drafted pixels.

    A drafted JPEG of stored size (W, H) is (ceil(W/s), ceil(H/s)) pixels, but its content spans only
    (W/s, H/s) from the top-left: the last column/row is partial. A flip moves that partial edge to the
    start, so content starts at (ceil(W/s) - W/s) on a flipped axis."""
    (W, H), (dW, dH) = stored, drafted
    ex, ey = dW - W / s, dH - H / s  # unused fraction of the last stored column / row
    flip_x = orientation in (2, 3, 7, 8)  # stored x runs right-to-left in the oriented image
    flip_y = orientation in (3, 4, 7, 6)  # stored y runs bottom-to-top
    ox, oy = (ex if flip_x else 0.0), (ey if flip_y else 0.0)
    return (oy, ox) if orientation in _TRANSPOSED else (ox, oy)


@dataclass(frozen=True)
class Prepared:
    """A model-input picture and where it came from."""

    image: Image.Image  # RGB, the plan's (H, W)
    original_size: Pair  # (h, w) after EXIF orientation: what `plan.geometry` takes
    draft_scale: int  # 1: decoded at full size (exact timm preprocessing); 2/4/8: JPEG DCT scaling
    conversions: tuple[str, ...]


def prepare(loaded, plan: Plan) -> Image.Image:
    """The plan's PIL stages applied to an opened image (`imaging.LoadedImage`). A JPEG decoded at 1/s scale
    (`loaded.draft_scale`) is resized over exactly the source box the full-size image would use, so
    `plan.geometry` holds for both paths."""
    img, s = loaded.image, loaded.draft_scale
    if s == 1:
        return plan.resize_crop(img)
    (H, W), transposed = loaded.original_size, loaded.orientation in _TRANSPOSED
    hw = (W, H) if transposed else (H, W)
    drafted = (img.height, img.width) if transposed else (img.width, img.height)  # stored (w, h), drafted
    ox, oy = _orientation_offset(loaded.orientation, (W, H), drafted, s)
    left, top, right, bottom = plan.trim_box(hw)
    box = (ox + left / s, oy + top / s, ox + right / s, oy + bottom / s)
    rh, rw = plan.resize_size((bottom - top, right - left))
    return plan._crop(img.resize((rw, rh), plan.resample, box=box))


def load_for_plan(path: str | Path, plan: Plan, fast: bool = False) -> Prepared:
    """Open `path` (imaging.open_image's checks, EXIF orientation, RGB) and apply the plan's PIL stages.

    `fast`: a JPEG at least twice the resize target on both sides is decoded at 1/2, 1/4 or 1/8 scale
    (`draft_scale`) and resized from there over exactly the same source box, so `plan.geometry` holds for
    both paths; pixels then differ slightly from timm's (measured in tests/test_preprocess.py)."""
    loaded = open_image(path, draft=(lambda hw: draft_scale(hw, plan)) if fast else None)
    (H, W) = loaded.original_size
    hw = (W, H) if loaded.orientation in _TRANSPOSED else (H, W)
    return Prepared(prepare(loaded, plan), hw, loaded.draft_scale, loaded.conversions)


def open_for_plan(path: str | Path, plan: Plan, fast: bool = False) -> Image.Image:
    """`load_for_plan(...).image`: the RGB (H, W) model-input picture."""
    return load_for_plan(path, plan, fast).image
