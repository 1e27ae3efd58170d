"""Pictures for `vitcli explain` (PIL + numpy, no torch): patch-grid maps to pixels (at the model input's size,
and placed back over the original image, the crop undone), and the sheet that puts several attribution
methods side by side, over the preprocessed image and over the original."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageDraw

from vitcli.draw import colorbar, font, overlay, with_legend


def upsample(values, size: tuple[int, int]) -> np.ndarray:
    """(gh, gw) map -> (H, W) float64, bilinear (PIL, float32 'F' image): each patch's value sits at its centre,
    pixel centres at half-pixel offsets. `size` is (H, W), e.g. the preprocessed input's."""
    v = np.asarray(values, dtype=np.float32)
    if v.ndim != 2:
        raise ValueError(f"upsample takes a (gh, gw) map, got shape {v.shape}")
    h, w = size
    big = Image.fromarray(v, mode="F").resize((int(w), int(h)), Image.Resampling.BILINEAR)
    return np.asarray(big, dtype=np.float64)


def _bilinear(values: np.ndarray, gy: np.ndarray, gx: np.ndarray) -> np.ndarray:
    """Sample (gh, gw) `values` at fractional grid coordinates (cell centres at integers), edges clamped: the
    same rule as `upsample` (PIL's triangle filter drops and renormalises taps beyond the edge)."""
    gh, gw = values.shape
    gy, gx = np.clip(gy, 0, gh - 1), np.clip(gx, 0, gw - 1)
    y0, x0 = np.minimum(np.floor(gy).astype(int), max(gh - 2, 0)), np.minimum(np.floor(gx).astype(int), max(gw - 2, 0))
    y1, x1 = np.minimum(y0 + 1, gh - 1), np.minimum(x0 + 1, gw - 1)
    fy, fx = gy - y0, gx - x0
    top = values[y0, x0] * (1 - fx) + values[y0, x1] * fx
    bottom = values[y1, x0] * (1 - fx) + values[y1, x1] * fx
    return top * (1 - fy) + bottom * fy


def on_original(values, geometry, patch: tuple[int, int], size: tuple[int, int] | None = None) -> np.ndarray:
    """(gh, gw) map -> (h, w) float64 over the ORIGINAL image (after EXIF orientation), the crop undone.

    geometry: `vitcli.preprocess.Geometry` of this image (`Plan.from_config(cfg).geometry((h, w))`); patch:
    (ph, pw) px of the model input. Each pixel centre is mapped into the model input (`geometry.to_input`) and
    the map is read there bilinearly, patch values at patch centres, exactly as `upsample` reads it at the
    input's size. NaN where the model never saw the pixel: outside `geometry.source_box()` (cropped away) or
    in the remainder rows/columns the patch embedding drops. `size` (h', w'): sample on a smaller or larger
    raster covering the same original image (pixel centres scaled), e.g. a picture's tile."""
    v = np.asarray(values, dtype=np.float64)
    if v.ndim != 2:
        raise ValueError(f"on_original takes a (gh, gw) map, got shape {v.shape}")
    (gh, gw), (ph, pw) = v.shape, patch
    h, w = geometry.original
    oh, ow = size or (h, w)
    u = (np.arange(ow) + 0.5) * (w / ow)  # original x of each output column's centre
    t = (np.arange(oh) + 0.5) * (h / oh)
    uu, tt = np.meshgrid(u, t)
    x_in, y_in = geometry.to_input(uu, tt)
    x0, y0, x1, y1 = geometry.source_box()
    seen = ((uu >= x0) & (uu < x1) & (tt >= y0) & (tt < y1) & (x_in >= 0) & (x_in < gw * pw)
            & (y_in >= 0) & (y_in < gh * ph))
    out = _bilinear(v, y_in / ph - 0.5, x_in / pw - 0.5)
    out[~seen] = np.nan
    return out


def unseen_shade(img: Image.Image, seen: np.ndarray) -> Image.Image:
    """`img` darkened and hatched where `seen` (h, w) bool is False: what the model never saw."""
    rgb = np.asarray(img.convert("RGB"), dtype=np.float64)
    h, w = seen.shape
    yy, xx = np.mgrid[0:h, 0:w]
    hatch = ((xx + yy) % 8) < 2
    dark = rgb * 0.3 + np.where(hatch[..., None], 70.0, 0.0)
    return Image.fromarray(np.where(seen[..., None], rgb, dark).clip(0, 255).astype("uint8"), "RGB")


def original_overlay(img: Image.Image, display, geometry, patch: tuple[int, int], alpha: float = 0.6) -> Image.Image:
    """A display map (gh, gw) in [0, 1] blended over `img`, a picture of the whole original image at any scale
    (`img.size` sets the raster), the crop undone; what the model never saw shaded (`unseen_shade`)."""
    from vitcli.draw import colorize

    heat = on_original(display, geometry, patch, size=(img.height, img.width))
    seen = np.isfinite(heat)
    blended = Image.blend(img.convert("RGB"), colorize(np.nan_to_num(heat), 0, 1), alpha)
    return unseen_shade(Image.composite(blended, img.convert("RGB"), Image.fromarray(seen.astype("uint8") * 255)),
                        seen)


@dataclass(frozen=True)
class Panel:
    """One tile of the sheet: a method's display map (gh, gw) in [0, 1], the block it read (None: pixels or all
    blocks), and optionally its deletion area (lower = more faithful)."""

    method: str
    display: np.ndarray
    layer: int | None = None
    deletion_area: float | None = None

    def caption(self) -> list[str]:
        first = self.method + (f" (block {self.layer})" if self.layer is not None else "")
        return [first] + ([f"deletion area {self.deletion_area:.3f}"] if self.deletion_area is not None else [])


def score_text(label: str, score: float, kind: str = "probability") -> str:
    """'tabby cat, p = 0.912' or 'target embedding, cosine = 0.734'."""
    return f"{label}, " + (f"p = {score:.3f}" if kind == "probability" else f"cosine = {score:.3f}")


def _fit(img: Image.Image, tile: int) -> Image.Image:
    scale = tile / max(img.size)
    return img.convert("RGB").resize((max(1, round(img.width * scale)), max(1, round(img.height * scale))),
                                     Image.Resampling.BICUBIC)


def _grid(tiles: list[tuple[list[str], Image.Image]], columns: int, gap: int = 6) -> Image.Image:
    """Equal-size tiles in rows of `columns`, each with its caption lines underneath."""
    f, line_h = font(12), 15
    cap_h = max(len(c) for c, _ in tiles) * line_h + 4
    w, h = tiles[0][1].size
    rows = -(-len(tiles) // columns)
    pic = Image.new("RGB", (columns * (w + gap) + gap, rows * (h + cap_h + gap) + gap), (24, 24, 24))
    d = ImageDraw.Draw(pic)
    for i, (caption, t) in enumerate(tiles):
        x, y = gap + (i % columns) * (w + gap), gap + (i // columns) * (h + cap_h + gap)
        pic.paste(t, (x, y))
        for j, text in enumerate(caption):
            d.text((x, y + h + 2 + j * line_h), text, fill=(235, 235, 235), font=f)
    return pic


def explain_sheet(img: Image.Image, panels: list[Panel], lines: list[str], tile: int = 224,
                  columns: int | None = None, original: Image.Image | None = None, geometry=None,
                  patch: tuple[int, int] | None = None) -> Image.Image:
    """The preprocessed image, then one overlay per method (each map scaled to its own maximum, smoothly
    upsampled), captions under each tile; with `original` (the whole original image), `geometry` (its
    `vitcli.preprocess.Geometry`) and `patch`, a second block of tiles over the original image, the crop undone
    and what the model never saw shaded; then a colour bar and the legend `lines` (target, score, model...)."""
    if not panels:
        raise ValueError("explain_sheet needs at least one panel")
    base = _fit(img, tile)
    tiles = [([f"model input {img.height}x{img.width}"], base)] + [(p.caption(), overlay(base, p.display))
                                                                  for p in panels]
    columns = columns or min(len(tiles), 5)
    blocks = [_grid(tiles, columns)]
    if original is not None:
        if geometry is None or patch is None:
            raise ValueError("explain_sheet: an original image needs its geometry and the patch size")
        small = _fit(original, tile)
        seen = np.isfinite(on_original(np.zeros(panels[0].display.shape), geometry, patch,
                                       size=(small.height, small.width)))
        first = ([f"original {original.height}x{original.width}", "hatched: not seen"], unseen_shade(small, seen))
        blocks.append(_grid([first] + [([p.method], original_overlay(small, p.display, geometry, patch))
                                      for p in panels], columns))
    width = max(b.width for b in blocks)
    bar = colorbar(width, "0", "map max")
    stacked = Image.new("RGB", (width, sum(b.height for b in blocks) + bar.height), (24, 24, 24))
    y = 0
    for b in blocks + [bar]:
        stacked.paste(b, (0, y))
        y += b.height
    return with_legend(stacked, lines)
