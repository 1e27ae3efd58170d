"""Pictures of patch features with PIL + numpy (no torch): PCA maps, foreground masks, similarity heat maps,
mutual-nearest-neighbour correspondences, and animated GIF/WebP from a list of frames.

Geometry: an image of (w, h) pixels with a (gh, gw) patch grid has patches of ph = h // gh by pw = w // gw
pixels; patch (r, c) covers x in [c·pw, (c+1)·pw), y in [r·ph, (r+1)·ph) (times the display scale `s`), as the
patch embedding cuts it. Maps are upsampled with nearest neighbour, so every patch is one flat square exactly
over the pixels it came from. Pixels beyond the last whole patch (dropped by the patch embedding) are grey.

Sheets lay cells out row by row: cell i sits in column i % columns, row i // columns; a cell is a title strip
(TITLE_H px) over its tiles side by side (GAP px apart); `tile_origin` gives each tile's top-left corner.
"""

from __future__ import annotations

import colorsys
import math
from collections.abc import Sequence

import numpy as np
from PIL import Image, ImageDraw

from vitcli.draw import colorbar, colorize, font, with_legend
from vitcli.errors import OutputError, UsageError
from vitcli.pca import SCALE_PERCENTILES

GAP = 6
TITLE_H = 16
BACKDROP = (24, 24, 24)
DROPPED = (64, 64, 64)  # remainder pixels the patch embedding drops
QUERY = (255, 255, 255)  # query patch outline
BEST = (0, 230, 255)  # best-match outline
ALPHA = 0.6  # heat-map opacity over the image


# ---- geometry ------------------------------------------------------------------------------------------------

def display_scale(size: tuple[int, int], min_side: int = 160, max_side: int = 1024) -> int:
    """Integer enlargement (nearest neighbour keeps patches square and aligned) so a (w, h) picture's longer side
    is at least `min_side` px, without passing `max_side`."""
    longest = max(size)
    s = max(1, math.ceil(min_side / max(1, longest)))
    return max(1, min(s, max_side // max(1, longest)))


def patch_box(grid: tuple[int, int], size: tuple[int, int], row: int, col: int,
              s: int = 1) -> tuple[int, int, int, int]:
    """Pixel box (x0, y0, x1, y1), x1/y1 exclusive, of patch (row, col) in a (w, h) image shown at scale s."""
    (gh, gw), (w, h) = grid, size
    ph, pw = h // gh, w // gw
    return col * pw * s, row * ph * s, (col + 1) * pw * s, (row + 1) * ph * s


def patch_centre(grid: tuple[int, int], size: tuple[int, int], row: int, col: int, s: int = 1) -> tuple[float, float]:
    x0, y0, x1, y1 = patch_box(grid, size, row, col, s)
    return (x0 + x1) / 2, (y0 + y1) / 2


def tile_origin(i: int, j: int, tile: tuple[int, int], tiles_per_cell: int, columns: int) -> tuple[int, int]:
    """Top-left (x, y) of tile j of cell i on a sheet of `columns` cells per row, every tile (w, h)."""
    tw, th = tile
    cell_w = tiles_per_cell * tw + (tiles_per_cell - 1) * GAP
    x = GAP + (i % columns) * (cell_w + GAP) + j * (tw + GAP)
    y = GAP + (i // columns) * (th + TITLE_H + GAP) + TITLE_H
    return x, y


def _sheet(cells: list[tuple[str, list[Image.Image]]], columns: int) -> Image.Image:
    """Titled cells of equal-size tiles, laid out by `tile_origin`."""
    tile = cells[0][1][0].size
    k = len(cells[0][1])
    columns = max(1, min(columns, len(cells)))
    rows = -(-len(cells) // columns)
    cell_w = k * tile[0] + (k - 1) * GAP
    out = Image.new("RGB", (GAP + columns * (cell_w + GAP), GAP + rows * (tile[1] + TITLE_H + GAP)), BACKDROP)
    d = ImageDraw.Draw(out)
    f = font(12)
    for i, (title, tiles) in enumerate(cells):
        x, y = tile_origin(i, 0, tile, k, columns)
        d.text((x, y - TITLE_H + 1), _fit_text(title, f, cell_w), fill=(235, 235, 235), font=f)
        for j, t in enumerate(tiles):
            out.paste(t, tile_origin(i, j, tile, k, columns))
    return out


def _fit_text(text: str, f, width: int) -> str:
    if f.getlength(text) <= width:
        return text
    while text and f.getlength(text + "…") > width:
        text = text[:-1]
    return text + "…"


def _ordinal(x: float) -> str:
    n = f"{x:g}"
    if not n.isdigit():
        return n + "th"
    k = int(n)
    return n + ("th" if 10 <= k % 100 <= 20 else {1: "st", 2: "nd", 3: "rd"}.get(k % 10, "th"))


def _default_columns(n: int, per_cell: int) -> int:
    """Roughly square sheets of cells holding `per_cell` tiles: about sqrt(n / per_cell) cells across."""
    return max(1, min(n, round(math.sqrt(n / per_cell)) or 1))


def _pad(img: Image.Image, size: tuple[int, int]) -> Image.Image:
    if img.size == size:
        return img
    out = Image.new("RGB", size, BACKDROP)
    out.paste(img, (0, 0))
    return out


# ---- PCA -----------------------------------------------------------------------------------------------------

def map_colours(values: np.ndarray) -> np.ndarray:
    """(gh, gw, C) in [0, 1] -> (gh, gw, 3) uint8: C >= 3 -> components 1-3 as R, G, B; C == 2 -> R, G (B = 0);
    C == 1 -> the inferno colour map."""
    v = np.clip(np.asarray(values, dtype=np.float64), 0.0, 1.0)
    if v.shape[-1] == 1:
        return np.asarray(colorize(v[..., 0], 0.0, 1.0))
    rgb = np.zeros((*v.shape[:2], 3))
    rgb[..., : min(3, v.shape[-1])] = v[..., :3]
    return np.round(rgb * 255).astype(np.uint8)


def map_picture(values, size: tuple[int, int], s: int = 1, mask=None) -> Image.Image:
    """A (gh, gw, C) map in [0, 1] as a (w·s, h·s) picture, one flat square per patch, patch-aligned with an
    image of `size` (w, h); `mask` (gh, gw) bool: False patches black."""
    values = np.asarray(values)
    gh, gw = values.shape[:2]
    w, h = size
    ph, pw = h // gh, w // gw
    if ph < 1 or pw < 1:
        raise UsageError(f"a {gh}x{gw} patch grid does not fit a {w}x{h} image")
    rgb = map_colours(values)
    if mask is not None:
        rgb = np.where(np.asarray(mask, dtype=bool)[..., None], rgb, 0).astype(np.uint8)
    out = Image.new("RGB", (w * s, h * s), DROPPED)
    small = Image.fromarray(rgb, "RGB")
    out.paste(small.resize((gw * pw * s, gh * ph * s), Image.Resampling.NEAREST), (0, 0))
    return out


def _enlarge(img: Image.Image, s: int) -> Image.Image:
    img = img.convert("RGB")
    return img if s == 1 else img.resize((img.width * s, img.height * s), Image.Resampling.NEAREST)


def _tile_of(images: Sequence[Image.Image]) -> tuple[int, tuple[int, int]]:
    """The enlargement and the (w, h) tile that fit the largest of `images`, for a sheet of them."""
    size = (max(i.width for i in images), max(i.height for i in images))
    s = display_scale(size)
    return s, (size[0] * s, size[1] * s)


def pca_sheet(images: Sequence[Image.Image], maps, titles: Sequence[str] | None = None, mask=None,
              lines: Sequence[str] = (), columns: int | None = None) -> Image.Image:
    """Each input beside its PCA map, many on one sheet, with a legend.

    images: N PIL images at the model's input (preprocessed) size; maps: (N, gh, gw, C) in [0, 1] (see
    `map_colours`); mask: (N, gh, gw) bool, True = foreground (background drawn black); `lines`: extra legend
    lines (model, layer, explained variance...). Tiles are enlarged by `display_scale` of the largest image.
    """
    maps = np.asarray(maps)
    if len(images) != maps.shape[0] or len(images) == 0:
        raise UsageError(f"{len(images)} images for {maps.shape[0]} PCA maps")
    s, tile = _tile_of(images)
    titles = list(titles) if titles is not None else [f"image {i}" for i in range(len(images))]
    cells = []
    for i, img in enumerate(images):
        m = None if mask is None else mask[i]
        cells.append((titles[i], [_pad(_enlarge(img, s), tile), _pad(map_picture(maps[i], img.size, s, m), tile)]))
    pic = _sheet(cells, columns or _default_columns(len(cells), 2))
    c = maps.shape[-1]
    shown = {1: "the first principal component through the inferno colour map",
             2: "principal components 1 and 2 as red and green"}.get(c, "principal components 1-3 as red, green, blue")
    legend = [f"Left: the input at the model's input size; right: {shown} of the patch tokens, one square per patch.",
              (f"Each component is scaled to [0, 1] between its {_ordinal(SCALE_PERCENTILES[0])} and "
               f"{_ordinal(SCALE_PERCENTILES[1])} percentile over the fitted patches (clipped).")]
    if mask is not None:
        legend.append("Black: background patches (first principal component over the threshold), left out of "
                      "the fit.")
    return with_legend(pic, legend + list(lines))


def mask_picture(images: Sequence[Image.Image], masks, titles: Sequence[str] | None = None,
                 lines: Sequence[str] = (), columns: int | None = None) -> Image.Image:
    """Each image with its background patches darkened: masks (N, gh, gw) bool, True = foreground."""
    masks = np.asarray(masks, dtype=bool)
    if len(images) != masks.shape[0] or len(images) == 0:
        raise UsageError(f"{len(images)} images for {masks.shape[0]} masks")
    s, tile = _tile_of(images)
    titles = list(titles) if titles is not None else [f"image {i}" for i in range(len(images))]
    cells = []
    for i, img in enumerate(images):
        big = np.asarray(_enlarge(img, s), dtype=np.float64)
        keep = np.asarray(map_picture(masks[i][..., None].astype(np.float64), img.size, s))[..., 0] > 127
        dim = np.where(keep[..., None], big, big * 0.25)
        n_fg = int(masks[i].sum())
        title = f"{titles[i]}: {n_fg}/{masks[i].size} foreground"
        cells.append((title, [_pad(Image.fromarray(np.round(dim).astype(np.uint8), "RGB"), tile)]))
    pic = _sheet(cells, columns or min(len(cells), 4))
    return with_legend(pic, [("Bright: foreground patches; dark: background (first principal component over the "
                              "threshold).")] + list(lines))


# ---- similarity ----------------------------------------------------------------------------------------------

def heat_picture(img: Image.Image, sim_map, s: int = 1, lo: float = 0.0, hi: float = 1.0) -> Image.Image:
    """The image (enlarged by s) under a (gh, gw) map coloured from `lo` to `hi`, one flat square per patch."""
    m = np.asarray(sim_map, dtype=np.float64)
    colours = np.asarray(colorize(m, lo, hi)).astype(np.float64) / 255.0
    heat = map_picture(colours, img.size, s)
    base = _enlarge(img, s)
    out = Image.blend(base, heat, ALPHA)
    gh, gw = m.shape
    x1, y1 = gw * (img.width // gw) * s, gh * (img.height // gh) * s
    if x1 < base.width or y1 < base.height:  # leave the dropped remainder as the plain image, dimmed
        dim = Image.blend(base, Image.new("RGB", base.size, DROPPED), ALPHA)
        if x1 < base.width:
            out.paste(dim.crop((x1, 0, base.width, base.height)), (x1, 0))
        if y1 < base.height:
            out.paste(dim.crop((0, y1, base.width, base.height)), (0, y1))
    return out


def outline(pic: Image.Image, box: tuple[int, int, int, int], colour, width: int = 2) -> None:
    """Draw a rectangle just inside box (x0, y0, x1, y1 exclusive) with a dark edge inside it, in place."""
    d = ImageDraw.Draw(pic)
    x0, y0, x1, y1 = box
    d.rectangle((x0, y0, x1 - 1, y1 - 1), outline=colour, width=width)
    if x1 - x0 > 2 * width + 2 and y1 - y0 > 2 * width + 2:
        d.rectangle((x0 + width, y0 + width, x1 - 1 - width, y1 - 1 - width), outline=(0, 0, 0), width=1)


def similarity_sheet(query_img: Image.Image, query_patch: tuple[int, int], target_imgs: Sequence[Image.Image],
                     maps, best: Sequence | None = None, titles: Sequence[str] | None = None,
                     lines: Sequence[str] = (), columns: int | None = None) -> Image.Image:
    """The query image and each target under its cosine-similarity heat map (0 dark .. 1 bright, negatives as 0).

    maps: (1 + T, gh, gw), image 0 the query; best: per image a `Match` (row, col, similarity) or None — image 0's
    the best patch other than the query. The query patch is outlined white, best matches cyan.
    """
    images = [query_img, *target_imgs]
    maps = np.asarray(maps)
    if maps.shape[0] != len(images):
        raise UsageError(f"{len(images)} images for {maps.shape[0]} similarity maps")
    s, tile = _tile_of(images)
    best = list(best) if best is not None else [None] * len(images)
    names = list(titles) if titles is not None else ["query"] + [f"target {i + 1}" for i in range(len(target_imgs))]
    cells = []
    for i, img in enumerate(images):
        pic = heat_picture(img, maps[i], s)
        grid = maps[i].shape
        title = names[i]
        if best[i] is not None:
            b = best[i]
            outline(pic, patch_box(grid, img.size, b.row, b.col, s), BEST)
            title += f": best ({b.row}, {b.col}) {b.similarity:.3f}"
        if i == 0:
            outline(pic, patch_box(grid, img.size, *query_patch, s), QUERY)
        cells.append((title, [_pad(pic, tile)]))
    pic = _sheet(cells, columns or min(len(cells), 3))
    bar = colorbar(max(pic.width, 240), "0", "1")
    stacked = Image.new("RGB", (max(pic.width, bar.width), pic.height + bar.height), BACKDROP)
    stacked.paste(pic, (0, 0))
    stacked.paste(bar, (0, pic.height))
    r, c = query_patch
    legend = [(f"Cosine similarity of every patch token with the query patch (row {r}, column {c}, outlined "
               "white), one square per patch: 0 or less dark, 1 bright. Cyan: each image's most similar patch "
               "(on the query image, other than the query itself).")]
    return with_legend(stacked, legend + list(lines))


def distinct_colours(n: int) -> list[tuple[int, int, int]]:
    """n bright colours with hues spread by the golden ratio (neighbours in the list far apart on the wheel)."""
    out = []
    for i in range(n):
        r, g, b = colorsys.hsv_to_rgb((i * 0.6180339887) % 1.0, 0.85, 1.0)
        out.append((round(r * 255), round(g * 255), round(b * 255)))
    return out


def correspondence_picture(img_a: Image.Image, img_b: Image.Image, matches: Sequence, grid_a: tuple[int, int],
                           grid_b: tuple[int, int], lines: Sequence[str] = (), gap: int = 16) -> Image.Image:
    """The two images side by side (tops aligned), a line of its own colour between the centres of each matched
    patch pair. matches: (a=(row, col), b=(row, col), similarity) as from `pca.mutual_nearest_neighbours`."""
    s = display_scale((max(img_a.width, img_b.width), max(img_a.height, img_b.height)))
    a, b = _enlarge(img_a, s), _enlarge(img_b, s)
    pic = Image.new("RGB", (a.width + gap + b.width, max(a.height, b.height)), BACKDROP)
    pic.paste(a, (0, 0))
    pic.paste(b, (a.width + gap, 0))
    d = ImageDraw.Draw(pic)
    radius = max(2, min(6, min(img_a.width // grid_a[1], img_a.height // grid_a[0]) * s // 4))
    for (pa, pb, _), colour in zip(matches, distinct_colours(len(matches))):
        xa, ya = patch_centre(grid_a, img_a.size, *pa, s)
        xb, yb = patch_centre(grid_b, img_b.size, *pb, s)
        xb += a.width + gap
        d.line((xa, ya, xb, yb), fill=colour, width=2)
        for x, y in ((xa, ya), (xb, yb)):
            d.ellipse((x - radius, y - radius, x + radius, y + radius), fill=colour, outline=(0, 0, 0))
    sims = [m[2] for m in matches]
    span = f", cosine similarity {min(sims):.3f} to {max(sims):.3f}" if sims else ""
    legend = [(f"{len(matches)} mutual nearest neighbours between the patch tokens of the two images{span}: "
               "each line joins the centres of two patches that are each other's most similar patch.")]
    return with_legend(pic, legend + list(lines))


# ---- animation -----------------------------------------------------------------------------------------------

def animated(frames: Sequence[Image.Image], target, format: str = "GIF", fps: float = 10.0, loop: int = 0) -> None:
    """Write `frames` (PIL images, all one size) as an animated GIF or (lossless) WebP to a path or a binary file
    object, `fps` frames per second, looping forever (`loop=0`). The caller makes a path write atomic
    (`vitcli.outputs.atomic_output`). GIF: 256 colours per frame (PIL's adaptive palette), and PIL merges
    identical consecutive frames into one longer frame."""
    fmt = format.upper()
    if fmt not in ("GIF", "WEBP"):
        raise UsageError(f"animation format {format!r} is not one of GIF, WEBP")
    if not frames:
        raise OutputError("no frames to animate", hint="give at least one input frame")
    if not fps > 0:
        raise UsageError(f"--fps {fps} must be more than 0")
    size = frames[0].size
    odd = [i for i, f in enumerate(frames) if f.size != size]
    if odd:
        raise UsageError(f"animation frames differ in size: frame {odd[0]} is {frames[odd[0]].size[0]}x"
                         f"{frames[odd[0]].size[1]}, frame 0 is {size[0]}x{size[1]}")
    rgb = [f.convert("RGB") for f in frames]
    duration = max(1, round(1000 / fps))  # ms per frame
    extra = {"lossless": True} if fmt == "WEBP" else {}
    rgb[0].save(target, format=fmt, save_all=True, append_images=rgb[1:], duration=duration, loop=loop, **extra)
