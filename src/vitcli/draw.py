"""Pictures with PIL (no torch): the patch grid with token labels, and the exploded patch mosaic."""

from __future__ import annotations

import math

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
