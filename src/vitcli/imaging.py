"""Images without torch: open any file PIL reads safely, convert to RGB, resize/crop, cut into patches.

Everything that can go wrong with an input file becomes an `InputError` naming the file and the reason:
missing, empty, truncated, not an image, a format PIL cannot read, or larger than PIL's decompression-bomb
limit (`PIL.Image.MAX_IMAGE_PIXELS`; vitcli refuses at the limit, where PIL itself only warns).
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from vitcli.core.tokens import Pair
from vitcli.errors import InputError


@dataclass(frozen=True)
class LoadedImage:
    """An RGB image ready for preprocessing, and what was done to get it."""

    path: str
    image: Image.Image  # RGB, EXIF orientation applied
    original_size: Pair  # (h, w) as stored in the file
    original_mode: str
    format: str | None
    conversions: tuple[str, ...]  # human notes: "EXIF orientation 6 applied", "RGBA -> RGB (alpha dropped)"
    orientation: int = 1  # the EXIF orientation applied (1: none)
    draft_scale: int = 1  # 2, 4 or 8: a JPEG decoded at that fraction of its size (PIL draft, DCT scaling)

    def to_dict(self) -> dict:
        return {"path": self.path, "original_size": list(self.original_size), "original_mode": self.original_mode,
                "format": self.format, "conversions": list(self.conversions)}


def _to_rgb(img: Image.Image) -> tuple[Image.Image, list[str]]:
    """Convert any PIL mode to 8-bit RGB, scaling high-bit-depth modes instead of clipping them."""
    mode = img.mode
    if mode == "RGB":
        return img, []
    if mode.startswith("I;16") or mode in ("I", "F"):
        a = np.asarray(img, dtype=np.float64)
        if mode == "F":
            top = 1.0 if a.max(initial=0) <= 1.0 else 255.0
            note = f"{mode} -> RGB (float values 0..{top:g} scaled to 0..255)"
        else:
            top = 65535.0 if (mode.startswith("I;16") or a.max(initial=0) > 255) else 255.0
            note = f"{mode} -> RGB ({'16-bit' if top > 255 else '8-bit'} values scaled to 0..255)"
        gray = np.clip(np.round(a / top * 255.0), 0, 255).astype(np.uint8)
        return Image.fromarray(gray, "L").convert("RGB"), [note]
    has_alpha = mode in ("RGBA", "LA", "PA", "RGBa", "La") or (mode == "P" and "transparency" in img.info)
    note = f"{mode} -> RGB" + (" (alpha dropped, as timm's loader does)" if has_alpha else "")
    return img.convert("RGB"), [note]


class _NotDrafted(Exception):
    """PIL's draft gave another size than the DCT scale asked for: open the file again, exactly."""


def open_image(path: str | Path, draft: Callable[[Pair], int] | None = None, data: bytes | None = None
               ) -> LoadedImage:
    """Open `path` as RGB with EXIF orientation applied; raise InputError with the reason otherwise.

    Multi-frame files (GIF, TIFF, WebP) give their first frame. `draft`: for a JPEG, called before decoding
    with its (h, w) after EXIF orientation; a return of 2, 4 or 8 decodes it at that fraction of its size
    (DCT scaling; `vitcli.preprocess.draft_scale`). `data`: the file's bytes (a member of a tar archive), then
    `path` only names it.
    """
    import io

    p = Path(path)
    name = str(path)
    if data is None:
        if not p.exists():
            raise InputError(f"{name}: no such file", hint="check the path")
        if p.is_dir():
            raise InputError(f"{name}: is a directory",
                             hint="give image files, or a directory where inputs are expected")
        if p.stat().st_size == 0:
            raise InputError(f"{name}: empty file", hint="the file has no bytes; re-export or re-download it")
    elif not data:
        raise InputError(f"{name}: empty file", hint="the archive member has no bytes")
    source = p if data is None else io.BytesIO(data)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(source) as img:
                fmt, mode, (w, h) = img.format, img.mode, img.size
                frames = getattr(img, "n_frames", 1)
                img.seek(0)
                notes = [f"first of {frames} frames"] if frames > 1 else []
                scale = 1
                if draft is not None and fmt in ("JPEG", "MPO"):  # MPO: a phone's JPEG with previews
                    turned = img.getexif().get(0x0112, 1) in (5, 6, 7, 8)  # a JPEG's EXIF comes with its header
                    s = draft((w, h) if turned else (h, w))
                    if s > 1 and img.draft(img.mode, (w // s, h // s)) is not None:
                        if img.size != (-(-w // s), -(-h // s)):  # not the DCT scale asked for: decode exactly
                            raise _NotDrafted
                        scale = s
                        notes.append(f"JPEG decoded at 1/{s} scale (DCT scaling)")
                img.load()
                orientation = img.getexif().get(0x0112, 1)
                oriented = ImageOps.exif_transpose(img)
                if orientation not in (1, None):
                    notes.append(f"EXIF orientation {orientation} applied")
                rgb, conv = _to_rgb(oriented)
                rgb.load()
    except _NotDrafted:
        return open_image(path, data=data)
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as e:
        raise InputError(f"{name}: too many pixels ({e})".replace("\n", " "),
                         hint="PIL's decompression-bomb limit protects memory; raise PIL.Image.MAX_IMAGE_PIXELS "
                              "only for files you trust") from e
    except UnidentifiedImageError as e:
        raise InputError(f"{name}: not an image PIL can read",
                         hint="use JPEG, PNG, WebP, TIFF, BMP or GIF") from e
    except (OSError, SyntaxError, ValueError) as e:
        reason = str(e) or type(e).__name__
        if "truncated" in reason or "broken" in reason or isinstance(e, SyntaxError):
            raise InputError(f"{name}: truncated or corrupt image ({reason})",
                             hint="re-export or re-download it") from e
        raise InputError(f"{name}: cannot read ({reason})") from e
    return LoadedImage(name, rgb, (h, w), mode, fmt, tuple(notes + conv), orientation or 1, scale)


# ---- resize and crop, as timm's eval transform does for a PIL image -----------------------------------------

def resize_shorter(img: Image.Image, size: int, resample=Image.Resampling.BICUBIC) -> Image.Image:
    """Resize so the shorter side is `size` (torchvision `Resize(int)`: the longer side is truncated)."""
    w, h = img.size
    if w <= h:
        new = (size, int(size * h / w))
    else:
        new = (int(size * w / h), size)
    return img if new == (w, h) else img.resize(new, resample)


def center_crop(img: Image.Image, size: Pair) -> Image.Image:
    """Crop the centre (h, w) (torchvision `CenterCrop`'s rounding)."""
    th, tw = size
    w, h = img.size
    top, left = int(round((h - th) / 2.0)), int(round((w - tw) / 2.0))
    return img.crop((left, top, left + tw, top + th))


def standard_eval(img: Image.Image, size: Pair) -> tuple[Image.Image, str]:
    """Without a model: a square size resizes the shorter side (bicubic) and centre-crops; HxW resizes to it."""
    h, w = size
    if h == w:
        out = center_crop(resize_shorter(img, h), size)
        return out, f"resize shorter side to {h} (bicubic), centre-crop {h}x{w}"
    return img.resize((w, h), Image.Resampling.BICUBIC), f"resize to {h}x{w} (bicubic, aspect ratio not kept)"


# ---- patches ------------------------------------------------------------------------------------------------

def image_to_array(img: Image.Image) -> np.ndarray:
    """RGB image -> float32 (H, W, 3) in [0, 1], exactly as torchvision's ToTensor scales (x / 255)."""
    return np.asarray(img, dtype=np.float32) / np.float32(255.0)


def patchify(x: np.ndarray, patch: Pair) -> np.ndarray:
    """(H, W, C) -> (N, ph·pw·C): rows in row-major grid order (token order), each patch flattened as
    (row in patch, column in patch, channel) — MAE's `patchify`. Remainder rows/columns are dropped."""
    (ph, pw), c = patch, x.shape[2]
    gh, gw = x.shape[0] // ph, x.shape[1] // pw
    x = x[: gh * ph, : gw * pw]
    return x.reshape(gh, ph, gw, pw, c).transpose(0, 2, 1, 3, 4).reshape(gh * gw, ph * pw * c)


def unpatchify(rows: np.ndarray, grid: Pair, patch: Pair, channels: int = 3) -> np.ndarray:
    """Inverse of `patchify`: (N, ph·pw·C) -> (gh·ph, gw·pw, C)."""
    (gh, gw), (ph, pw) = grid, patch
    return rows.reshape(gh, gw, ph, pw, channels).transpose(0, 2, 1, 3, 4).reshape(gh * ph, gw * pw, channels)


def upscale_factor(patch: Pair, grid: Pair, min_patch_px: int = 32, max_side: int = 2400) -> int:
    """How much to enlarge a picture so patches are at least `min_patch_px` wide, within `max_side` pixels."""
    want = math.ceil(min_patch_px / min(patch))
    cap = max(1, max_side // max(grid[0] * patch[0], grid[1] * patch[1]))
    return max(1, min(want, cap))
