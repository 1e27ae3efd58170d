"""Pictures with PIL (no torch): the patch grid with token labels, and the exploded patch mosaic."""

from __future__ import annotations

import math

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from vitcli.core.tokens import Pair
from vitcli.imaging import upscale_factor

LINE = (255, 255, 255, 200)
SHADOW = (0, 0, 0, 160)
DROPPED = (220, 40, 40, 110)


def font(size: int) -> ImageFont.ImageFont:
    return ImageFont.load_default(size=max(6, size))


def prefix_legend(cls_token: bool, registers: int) -> str:
    parts, i = [], 0
    if cls_token:
        parts.append("token 0 = CLS")
        i = 1
    if registers:
        parts.append(f"tokens {i}-{i + registers - 1} = registers" if registers > 1 else f"token {i} = register")
    return " | ".join(parts) if parts else "no prefix tokens"


def _wrap(text: str, f, width: int) -> list[str]:
    lines, line = [], ""
    for word in text.split(" "):
        trial = f"{line} {word}".strip()
        if line and f.getlength(trial) > width:
            lines.append(line)
            line = word
        else:
            line = trial
    return lines + [line]


def with_legend(pic: Image.Image, lines: list[str]) -> Image.Image:
    """`pic` with a dark strip of text underneath, lines wrapped to the picture's width."""
    size = max(11, min(16, pic.width // 40))
    f = font(size)
    pad = size // 2
    wrapped = [w for text in lines for w in _wrap(text, f, pic.width - 2 * pad)]
    out = Image.new("RGB", (pic.width, pic.height + len(wrapped) * (size + pad) + pad), (24, 24, 24))
    out.paste(pic, (0, 0))
    d = ImageDraw.Draw(out)
    for i, text in enumerate(wrapped):
        d.text((pad, pic.height + pad + i * (size + pad)), text, fill=(235, 235, 235), font=f)
    return out


def label_layout(cell: int, digits: int, min_size: int = 8) -> tuple[int, int]:
    """Font size and label step for cells of `cell` px holding `digits`-digit labels (glyphs ~0.6 em wide)."""
    size = int(min(cell * 0.45, (cell - 4) / (0.6 * digits)))
    if size >= min_size:
        return size, 1
    return min_size, math.ceil((min_size * 0.6 * digits + 4) / cell)


def grid_picture(img: Image.Image, patch: Pair, cls_token: bool, registers: int) -> Image.Image:
    """The image with its patch grid, each patch labelled with its position in the encoder's sequence.

    Labels shrink with the patch and thin out to every k-th row/column when patches are tiny; the picture is
    enlarged (nearest neighbour, pixels stay sharp) so patches are at least ~28 px. Pixels beyond the last
    whole patch (dropped by the patch embedding) are shaded red.
    """
    (ph, pw) = patch
    w, h = img.size
    gh, gw = h // ph, w // pw
    s = upscale_factor(patch, (gh, gw))
    big = img.resize((w * s, h * s), Image.Resampling.NEAREST).convert("RGBA")
    over = Image.new("RGBA", big.size, (0, 0, 0, 0))
    d = ImageDraw.Draw(over)
    if gh * ph < h:
        d.rectangle((0, gh * ph * s, w * s, h * s), fill=DROPPED)
    if gw * pw < w:
        d.rectangle((gw * pw * s, 0, w * s, gh * ph * s), fill=DROPPED)
    for r in range(gh + 1):  # two tones, so lines show on light and dark images alike
        y = r * ph * s
        d.line((0, y, gw * pw * s, y), fill=LINE, width=1)
        d.line((0, y + 1, gw * pw * s, y + 1), fill=SHADOW, width=1)
    for c in range(gw + 1):
        x = c * pw * s
        d.line((x, 0, x, gh * ph * s), fill=LINE, width=1)
        d.line((x + 1, 0, x + 1, gh * ph * s), fill=SHADOW, width=1)
    cell = min(ph, pw) * s
    n_prefix = int(cls_token) + registers
    size, step = label_layout(cell, len(str(n_prefix + gh * gw - 1)))
    f = font(size)
    for r in range(0, gh, step):
        for c in range(0, gw, step):
            x, y = c * pw * s + 2, r * ph * s + 1
            label = str(n_prefix + r * gw + c)
            d.text((x + 1, y + 1), label, fill=SHADOW, font=f)
            d.text((x, y), label, fill=(255, 255, 255, 255), font=f)
    pic = Image.alpha_composite(big, over).convert("RGB")
    lines = [f"{gh}x{gw} patches of {ph}x{pw} px = {gh * gw} patch tokens. Labels: position in the sequence"
             + (f" (every {step} rows and columns)" if step > 1 else "") + ".",
             prefix_legend(cls_token, registers) + f" | patch tokens {n_prefix}-{n_prefix + gh * gw - 1}, row by row"]
    if gh * ph < h or gw * pw < w:
        lines.append("red: remainder pixels the patch embedding drops")
    return with_legend(pic, lines)


def mosaic_picture(img: Image.Image, patch: Pair, cls_token: bool, registers: int) -> Image.Image:
    """The exploded view (ViT paper, figure 1): every patch apart, gaps between them, in token order.

    Patches are laid out row by row like the grid, with gaps; each carries its sequence position.
    """
    (ph, pw) = patch
    w, h = img.size
    gh, gw = h // ph, w // pw
    s = upscale_factor(patch, (gh, gw), min_patch_px=24, max_side=2000)
    gap = max(2, min(ph, pw) * s // 6)
    cw, chh = pw * s, ph * s
    pic = Image.new("RGB", (gw * (cw + gap) + gap, gh * (chh + gap) + gap), (245, 245, 245))
    n_prefix = int(cls_token) + registers
    size = max(7, min(cw, chh) // 3)
    f = font(size)
    d = ImageDraw.Draw(pic)
    label_every = 1 if min(cw, chh) >= 3 * size else 0
    for r in range(gh):
        for c in range(gw):
            tile = img.crop((c * pw, r * ph, (c + 1) * pw, (r + 1) * ph)).resize((cw, chh), Image.Resampling.NEAREST)
            x, y = gap + c * (cw + gap), gap + r * (chh + gap)
            pic.paste(tile, (x, y))
            if label_every:
                label = str(n_prefix + r * gw + c)
                d.text((x + 2, y + 1), label, fill=(0, 0, 0), font=f)
                d.text((x + 1, y), label, fill=(255, 255, 255), font=f)
    return with_legend(pic, [f"{gh * gw} patches in token order (row by row) | " + prefix_legend(cls_token, registers)])


# ---- heat maps ---------------------------------------------------------------------------------------------

# anchors of matplotlib's "inferno" (perceptually uniform, readable in greyscale), interpolated to 256 entries
_INFERNO = [(0.0, (0, 0, 4)), (0.13, (31, 12, 72)), (0.25, (85, 15, 109)), (0.38, (136, 34, 106)),
            (0.5, (186, 54, 85)), (0.63, (227, 89, 51)), (0.75, (249, 140, 10)), (0.88, (249, 201, 50)),
            (1.0, (252, 255, 164))]


def _inferno_lut() -> np.ndarray:
    xs = np.linspace(0, 1, 256)
    at = [a for a, _ in _INFERNO]
    return np.stack([np.interp(xs, at, [c[i] for _, c in _INFERNO]) for i in range(3)], axis=-1).astype("uint8")


_LUT = _inferno_lut()  # (256, 3) uint8, built once


def colorize(values, lo: float, hi: float) -> Image.Image:
    """(h, w) numbers -> RGB image through the colour map, `lo`..`hi` spanning it."""
    v = np.clip((np.asarray(values, dtype=np.float64) - lo) / max(hi - lo, 1e-12), 0, 1)
    return Image.fromarray(_LUT[np.round(v * 255).astype(int)], "RGB")


def overlay(img: Image.Image, heat, alpha: float = 0.6) -> Image.Image:
    """A (gh, gw) map, scaled to its own maximum, blended over the image (smoothly upsampled)."""
    heat = np.asarray(heat, dtype=np.float64)
    top = heat.max() if heat.max() > 0 else 1.0
    small = Image.fromarray(np.round(heat / top * 255).astype("uint8"), "L")
    big = np.asarray(small.resize(img.size, Image.Resampling.BILINEAR), dtype=np.float64) / 255
    return Image.blend(img.convert("RGB"), colorize(big, 0, 1), alpha)


def colorbar(width: int, lo_text: str, hi_text: str, height: int = 12) -> Image.Image:
    bar = colorize(np.tile(np.linspace(0, 1, width - 120), (height, 1)), 0, 1)
    out = Image.new("RGB", (width, height + 4), (24, 24, 24))
    out.paste(bar, (60, 2))
    d = ImageDraw.Draw(out)
    f = font(11)
    d.text((4, 1), lo_text, fill=(235, 235, 235), font=f)
    d.text((width - 56, 1), hi_text, fill=(235, 235, 235), font=f)
    return out


def montage(tiles: list[tuple[str, Image.Image]], columns: int, gap: int = 6) -> Image.Image:
    """Titled tiles of equal size in a grid."""
    w, h = tiles[0][1].size
    rows = -(-len(tiles) // columns)
    title_h = 16
    out = Image.new("RGB", (columns * (w + gap) + gap, rows * (h + title_h + gap) + gap), (24, 24, 24))
    d = ImageDraw.Draw(out)
    f = font(12)
    for i, (title, tile) in enumerate(tiles):
        x, y = gap + (i % columns) * (w + gap), gap + (i // columns) * (h + title_h + gap)
        d.text((x, y), title, fill=(235, 235, 235), font=f)
        out.paste(tile, (x, y + title_h))
    return out


def attention_picture(img: Image.Image, maps: list[tuple[str, object]], lines: list[str],
                      tile: int = 192) -> Image.Image:
    """The image, then one overlay per map (the mean of the heads first), a colour bar and the legend."""
    scale = tile / max(img.size)
    size = (max(1, round(img.width * scale)), max(1, round(img.height * scale)))
    base = img.resize(size, Image.Resampling.BICUBIC)
    tiles = [("input", base)] + [(title, overlay(base, heat)) for title, heat in maps]
    pic = montage(tiles, columns=min(len(tiles), 5))
    bar = colorbar(pic.width, "0", "map max")
    stacked = Image.new("RGB", (pic.width, pic.height + bar.height), (24, 24, 24))
    stacked.paste(pic, (0, 0))
    stacked.paste(bar, (0, pic.height))
    return with_legend(stacked, lines)


def similarity_picture(sim, grid: tuple[int, int], max_side: int = 16) -> Image.Image:
    """The ViT paper's figure 7: for each patch position (every k-th when the grid is large), a small map of its
    position embedding's cosine similarity with every other position's, colours from -1 to 1."""
    gh, gw = grid
    step = max(1, -(-max(gh, gw) // max_side))
    cell = max(2, 48 // max(gh, gw))
    rows, cols = list(range(0, gh, step)), list(range(0, gw, step))
    gap, tile = 2, (gw * cell, gh * cell)
    out = Image.new("RGB", (len(cols) * (tile[0] + gap) + gap, len(rows) * (tile[1] + gap) + gap), (24, 24, 24))
    for i, r in enumerate(rows):
        for j, c in enumerate(cols):
            m = np.asarray(sim)[r * gw + c].reshape(gh, gw)
            out.paste(colorize(m, -1, 1).resize(tile, Image.Resampling.NEAREST), (gap + j * (tile[0] + gap),
                                                                                 gap + i * (tile[1] + gap)))
    bar = colorbar(max(out.width, 240), "-1", "+1")
    stacked = Image.new("RGB", (max(out.width, bar.width), out.height + bar.height), (24, 24, 24))
    stacked.paste(out, (0, 0))
    stacked.paste(bar, (0, out.height))
    lines = [f"Position-embedding similarity, {gh}x{gw} patch grid: tile (row r, column c) shows the cosine "
             f"similarity of patch (r, c)'s position embedding with every patch's"
             + (f" (every {step} rows and columns)" if step > 1 else "") + "."]
    return with_legend(stacked, lines)
