"""Token layout: how an image of H x W pixels becomes a sequence of tokens.

A ViT cuts the image into a grid of `gh x gw` patches of `ph x pw` pixels (224 / 16 -> 14 x 14 = 196),
projects each patch to one token, and puts the prefix tokens in front: the CLS token and, for models such as
DINOv2-reg4, register tokens. The encoder sees `seq_len = num_prefix_tokens + gh * gw` tokens.

When a side is not a multiple of the patch, a standard ViT rejects the image. timm offers two ways out, and
this module computes both:

* pad (`dynamic_img_pad=True`): zero-pad up to the next multiple; every pixel is seen, `ceil(h / ph)` rows;
* drop (the stride-`p` convolution with `strict_img_size=False`): the last `h % ph` pixel rows and `w % pw`
  columns are never seen; `floor(h / ph)` rows.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

from vitcli.errors import UsageError

Pair = tuple[int, int]

_PAIR_RE = re.compile(r"^\s*(\d+)\s*(?:[xX×,]\s*(\d+))?\s*$")


def parse_pair(text: str | int | Pair, option: str) -> Pair:
    """Parse `N` or `HxW` into (h, w); raise a UsageError naming `option` for anything else or a value < 1.
    An (h, w) pair is checked and returned."""
    if isinstance(text, tuple):
        text = f"{text[0]}x{text[1]}"
    if isinstance(text, int):
        text = str(text)
    m = _PAIR_RE.match(text)
    if not m:
        raise UsageError(
            f"{option} {text!r} is not a size",
            hint=f"give a whole number such as 224, or HxW such as 224x320 ({option} 224)",
        )
    h = int(m.group(1))
    w = int(m.group(2)) if m.group(2) is not None else h
    if h < 1 or w < 1:
        raise UsageError(f"{option} {text!r} must be at least 1 pixel", hint=f"for example {option} 224")
    return (h, w)


def parse_pairs(texts, option: str) -> tuple[Pair, ...]:
    return tuple(parse_pair(t, option) for t in texts or ())


def fmt_pair(p: Pair) -> str:
    """(224, 224) -> '224', (224, 320) -> '224x320'."""
    return str(p[0]) if p[0] == p[1] else f"{p[0]}x{p[1]}"


@dataclass(frozen=True)
class Remainder:
    """What a size that is not a multiple of the patch does under each policy (pixel counts are per channel)."""

    remainder: Pair  # (h % ph, w % pw)
    pad_grid: Pair  # ceil grid, timm dynamic_img_pad=True
    pad_pixels: int  # zero pixels added by padding
    drop_grid: Pair  # floor grid, stride-p conv without padding
    drop_pixels: int  # image pixels never seen when dropping

    def to_dict(self) -> dict:
        return {
            "remainder": list(self.remainder),
            "strict": "rejected: a standard ViT requires each side to be a multiple of the patch",
            "pad": {"grid": list(self.pad_grid), "num_patches": self.pad_grid[0] * self.pad_grid[1],
                    "padded_pixels": self.pad_pixels},
            "drop": {"grid": list(self.drop_grid), "num_patches": self.drop_grid[0] * self.drop_grid[1],
                     "dropped_pixels": self.drop_pixels},
        }


@dataclass(frozen=True)
class TokenLayout:
    """The token sequence a ViT builds from one image.

    `grid`, `num_patches` and `seq_len` use padding when the size is not a multiple of the patch (every pixel
    is seen); `non_divisible` then gives the pad and drop alternatives with pixel counts.
    """

    image_size: Pair
    patch_size: Pair
    grid: Pair
    cls_token: bool
    registers: int
    non_divisible: Remainder | None = None
    model: str | None = None

    @property
    def num_patches(self) -> int:
        return self.grid[0] * self.grid[1]

    @property
    def num_prefix_tokens(self) -> int:
        return int(self.cls_token) + self.registers

    @property
    def seq_len(self) -> int:
        return self.num_prefix_tokens + self.num_patches

    def explain(self) -> str:
        """One line: '384/16 -> 24 x 24 = 576 patch tokens + 1 CLS = 577 tokens'."""
        (h, w), (ph, pw), (gh, gw) = self.image_size, self.patch_size, self.grid
        size = f"{h}/{ph}" if (h, ph) == (w, pw) else f"{h}x{w} / {ph}x{pw}"
        parts = [f"{gh} x {gw} = {self.num_patches} patch tokens"]
        if self.cls_token:
            parts.append("1 CLS")
        if self.registers:
            parts.append(f"{self.registers} register{'s' if self.registers > 1 else ''}")
        pad = " (padded)" if self.non_divisible else ""
        return f"{size} -> {' + '.join(parts)} = {self.seq_len} tokens{pad}"

    def to_dict(self) -> dict:
        d = {
            "image_size": list(self.image_size),
            "patch_size": list(self.patch_size),
            "grid": list(self.grid),
            "num_patches": self.num_patches,
            "cls_token": self.cls_token,
            "registers": self.registers,
            "num_prefix_tokens": self.num_prefix_tokens,
            "seq_len": self.seq_len,
            "divisible": self.non_divisible is None,
            "explanation": self.explain(),
        }
        if self.model:
            d["model"] = self.model
        if self.non_divisible:
            d["non_divisible"] = self.non_divisible.to_dict()
        return d


def token_layout(image_size: Pair, patch_size: Pair, cls_token: bool = True, registers: int = 0,
                 model: str | None = None) -> TokenLayout:
    """Lay out the tokens for one image size and patch size.

    Raises UsageError when the patch is larger than the image or `registers` is negative.
    """
    (h, w), (ph, pw) = image_size, patch_size
    if ph > h or pw > w:
        raise UsageError(
            f"--patch {fmt_pair(patch_size)} is larger than the image ({fmt_pair(image_size)})",
            hint="choose a patch no larger than --size",
        )
    if registers < 0:
        raise UsageError(f"--registers {registers} must be 0 or more")
    rh, rw = h % ph, w % pw
    remainder = None
    if rh or rw:
        pad_grid = (math.ceil(h / ph), math.ceil(w / pw))
        drop_grid = (h // ph, w // pw)
        remainder = Remainder(
            remainder=(rh, rw),
            pad_grid=pad_grid,
            pad_pixels=pad_grid[0] * ph * pad_grid[1] * pw - h * w,
            drop_grid=drop_grid,
            drop_pixels=h * w - drop_grid[0] * ph * drop_grid[1] * pw,
        )
        grid = pad_grid
    else:
        grid = (h // ph, w // pw)
    return TokenLayout(image_size, patch_size, grid, cls_token, registers, remainder, model)

