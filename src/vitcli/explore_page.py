"""The one self-contained HTML page of `vitcli explore`: quantise a ViT's numbers and pack them with the page.

numpy and the standard library only (no torch, no PIL). The page's HTML, CSS and JavaScript are package files
(`vitcli/web/explore.{html,css,js}`); `build_page` inlines them with the data into one file that opens from
disk in any current browser and loads nothing from anywhere (its Content-Security-Policy forbids it).

Indices are 0-based everywhere: blocks, heads, tokens (prefix tokens first: CLS at 0 when present, then the
registers, then the patches row by row), grid rows and columns. Sizes are (h, w) pairs; pixel boxes are
(x0, y0, x1, y1), x1 and y1 exclusive, in pixels of the ORIGINAL image.

How the arrays are stored (each base64 text in a `<script type="application/octet-stream">` block, deflated
when that makes it smaller; the page inflates it with the browser's own `DecompressionStream`):

| part | dtype, shape | value |
| --- | --- | --- |
| `attention` | uint8 (L, H, T, T) | `scale[l, h, q] * (code / 255) ** 2` |
| `attention_scale` | float32 (L, H, T) | the row's maximum |
| `rollout` | uint8 (L, T, T) | `scale[l, q] * (code / 255) ** 2` |
| `rollout_scale` | float32 (L, T) | the row's maximum |
| `similarity` | uint8 (L, N, N) | `code / 255 * 2 - 1` (cosine) |
| `pca` | uint8 (L, gh, gw, 3) | `code / 255` (RGB) |

Rows of attention and rollout are square-root coded per row: code = round(255 * sqrt(value / row max)). The
error of every value is at most `scale / 255` (the 8-bit step of a linear code), and small values (most of an
attention row) are far finer than a linear code would keep: at a hundredth of the row's maximum the step is
about scale / 1300 instead of scale / 255. Similarity is coded linearly: error at most 1 / 255.
"""

from __future__ import annotations

import base64
import html as _html
import json
import re
import struct
import zlib
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path

import numpy as np

FORMAT = "vitcli-explore/1"
LIMIT_BYTES = 15_000_000  # what a ViT-B/16 page at 224 must stay under
_PNG_SIG = b"\x89PNG\r\n\x1a\n"
_MARK = re.compile(r"/\*@VITCLI_(\w+)@\*/|@VITCLI_(\w+)@")

# The browser and its flags for screenshots and tests: Debian's chromium, headless, nothing in the background.
CHROMIUM = "/usr/bin/chromium"
BROWSER_ARGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                "--disable-component-update", "--disable-sync", "--no-first-run", "--disable-quic")


# ---- quantisation ---------------------------------------------------------------------------------------------

def quantize_rows(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Non-negative rows (..., T) -> (codes uint8 (..., T), scale float32 (...)), square-root coded per row.

    value ~ scale * (code / 255) ** 2 with scale = the row's maximum; |error| <= scale / 255 for every value.
    A row of zeros gets scale 0 and codes 0.
    """
    x = np.asarray(x, dtype=np.float64)
    scale = x.max(axis=-1).astype(np.float32)
    s = scale.astype(np.float64)[..., None]
    u = np.divide(x, s, out=np.zeros_like(x), where=s > 0)  # in place from here on: (L, H, T, T) is large
    np.clip(u, 0.0, 1.0, out=u)
    np.sqrt(u, out=u)
    u *= 255.0
    return np.rint(u, out=u).astype(np.uint8), scale


def dequantize_rows(codes: np.ndarray, scale: np.ndarray) -> np.ndarray:
    """Inverse of `quantize_rows`: float64 (..., T) = scale[..., None] * (codes / 255) ** 2."""
    return scale.astype(np.float64)[..., None] * (codes.astype(np.float64) / 255.0) ** 2


def quantize_unit(x: np.ndarray, lo: float = 0.0, hi: float = 1.0) -> np.ndarray:
    """Values in [lo, hi] -> uint8 codes, linear: code = round(255 * (x - lo) / (hi - lo)); error <= step / 2."""
    x = np.clip(np.asarray(x, dtype=np.float64), lo, hi)
    return np.rint((x - lo) / (hi - lo) * 255.0).astype(np.uint8)


def dequantize_unit(codes: np.ndarray, lo: float = 0.0, hi: float = 1.0) -> np.ndarray:
    return lo + codes.astype(np.float64) / 255.0 * (hi - lo)


def dequantize_attention(data: dict) -> np.ndarray:
    """`page_data(...)` -> attention (L, H, T, T) float64 as the page shows it."""
    a = data["arrays"]
    return dequantize_rows(a["attention"], a["attention_scale"])


def dequantize_rollout(data: dict) -> np.ndarray:
    """`page_data(...)` -> rollout (L, T, T) float64 as the page shows it."""
    a = data["arrays"]
    return dequantize_rows(a["rollout"], a["rollout_scale"])


def dequantize_similarity(data: dict) -> np.ndarray:
    """`page_data(...)` -> cosine similarity (L, N, N) float64 in [-1, 1] as the page shows it."""
    return dequantize_unit(data["arrays"]["similarity"], -1.0, 1.0)


def dequantize_pca(data: dict) -> np.ndarray | None:
    """`page_data(...)` -> PCA colours (L, gh, gw, 3) float64 in [0, 1], or None when the page has none."""
    codes = data["arrays"].get("pca")
    return None if codes is None else dequantize_unit(codes)


# ---- geometry -------------------------------------------------------------------------------------------------

def _pair(v, name: str) -> tuple[int, int]:
    if isinstance(v, (int, np.integer)):
        return (int(v), int(v))
    try:
        a, b = v
        return (int(a), int(b))
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be an int or an (h, w) pair, got {v!r}") from None


def patch_boxes(geometry: dict, original_size, grid, patch_size) -> np.ndarray:
    """Pixel box of every patch in the ORIGINAL image: float64 (N, 4) of (x0, y0, x1, y1), row-major patches.

    `geometry` is either `{"boxes": (N, 4)}` (given per patch, in original pixels) or
    `{"resized": (h, w), "crop": (left, top, right, bottom)}`: the original image was resized to `resized`
    and the model's input is `resized.crop(crop)` (PIL's box; it may reach outside when the crop pads).
    Patch (r, c) covers input pixels x in [c*pw, (c+1)*pw), y in [r*ph, (r+1)*ph); a resized pixel x maps to
    original x * W0 / Wr (pixel edges). Boxes are clipped to the original image.
    """
    (h0, w0), (gh, gw), (ph, pw) = original_size, grid, patch_size
    if "boxes" in geometry:
        boxes = np.asarray(geometry["boxes"], dtype=np.float64)
        if boxes.shape != (gh * gw, 4):
            raise ValueError(f"geometry['boxes'] must have shape ({gh * gw}, 4), got {boxes.shape}")
        return boxes
    try:
        hr, wr = _pair(geometry["resized"], "geometry['resized']")
        left, top, _right, _bottom = (float(v) for v in geometry["crop"])
    except (KeyError, TypeError, ValueError):
        raise ValueError("geometry must be {'boxes': (N, 4)} or {'resized': (h, w), 'crop': (left, top, right, "
                         f"bottom)}}, got {geometry!r}") from None
    r, c = np.divmod(np.arange(gh * gw), gw)
    sx, sy = w0 / wr, h0 / hr
    x0, x1 = (left + c * pw) * sx, (left + (c + 1) * pw) * sx
    y0, y1 = (top + r * ph) * sy, (top + (r + 1) * ph) * sy
    boxes = np.stack([x0, y0, x1, y1], axis=1)
    return np.clip(boxes, 0.0, [w0, h0, w0, h0])


# ---- the data the page embeds ---------------------------------------------------------------------------------

def _png_size(png: bytes) -> tuple[int, int]:
    """(h, w) from a PNG's IHDR chunk."""
    if not isinstance(png, (bytes, bytearray)) or png[:8] != _PNG_SIG or png[12:16] != b"IHDR":
        raise ValueError("image_png must be the bytes of a PNG file")
    w, h = struct.unpack(">II", png[16:24])
    return (h, w)


def _check(name: str, x, shape: tuple, lo: float | None = None, hi: float | None = None) -> np.ndarray:
    x = np.asarray(x)
    if x.shape != shape:
        raise ValueError(f"{name} must have shape {shape}, got {x.shape}")
    x = x.astype(np.float64)
    if not np.isfinite(x).all():
        raise ValueError(f"{name} has NaN or infinite values")
    tol = 1e-6
    if lo is not None and x.min() < lo - tol:
        raise ValueError(f"{name} has values below {lo} (min {x.min():.6g})")
    if hi is not None and x.max() > hi + tol:
        raise ValueError(f"{name} has values above {hi} (max {x.max():.6g})")
    return x


def _plain(v):
    """JSON-able copy of v: numpy scalars and arrays to Python, tuples to lists, NaN to None, anything else str."""
    if isinstance(v, dict):
        return {str(k): _plain(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [_plain(x) for x in v]
    if isinstance(v, np.ndarray):
        return _plain(v.tolist())
    if isinstance(v, np.generic):
        v = v.item()
    if isinstance(v, float) and not np.isfinite(v):
        return None
    if v is None or isinstance(v, (str, bool, int, float)):
        return v
    return str(v)


def page_data(*, image_png: bytes, original_size, geometry: dict, grid, patch_size, cls_token: bool,
              registers: int, attention, rollout, similarity, pca=None, top5=None, summary: dict,
              provenance: dict) -> dict:
    """Everything the page embeds: `{"meta": JSON-able dict, "arrays": {name: uint8/float32 ndarray},
    "image_png": bytes}`.

    attention (L, H, T, T) >= 0 (softmax rows); rollout (L, T, T) >= 0, rollout[l] = up to and including
    block l; similarity (L, N, N) cosine in [-1, 1] between patch tokens; pca (L, gh, gw, 3) in [0, 1] or
    None; top5 a list of {index, label, prob} or None (no head); summary a small dict shown as a table;
    provenance {model, weights, pretrained, vitcli_version, command} (extra keys are shown too).
    T = (1 if cls_token else 0) + registers + gh * gw.
    """
    original_size = _pair(original_size, "original_size")
    grid, patch_size = _pair(grid, "grid"), _pair(patch_size, "patch_size")
    gh, gw = grid
    n = gh * gw
    prefix = int(bool(cls_token)) + int(registers)
    t = prefix + n
    attention = np.asarray(attention)
    if attention.ndim != 4:
        raise ValueError(f"attention must have shape (L, H, T, T), got {attention.shape}")
    n_blocks, n_heads = attention.shape[:2]
    att = _check("attention", attention, (n_blocks, n_heads, t, t), lo=0.0)
    roll = _check("rollout", rollout, (n_blocks, t, t), lo=0.0)
    sim = _check("similarity", similarity, (n_blocks, n, n), lo=-1.0, hi=1.0)
    missing = [k for k in ("model", "weights", "pretrained", "vitcli_version", "command") if k not in provenance]
    if missing:
        raise ValueError(f"provenance lacks {', '.join(missing)}")

    a_codes, a_scale = quantize_rows(att)
    r_codes, r_scale = quantize_rows(roll)
    arrays = {"attention": a_codes, "attention_scale": a_scale, "rollout": r_codes, "rollout_scale": r_scale,
              "similarity": quantize_unit(sim, -1.0, 1.0)}
    if pca is not None:
        arrays["pca"] = quantize_unit(_check("pca", pca, (n_blocks, gh, gw, 3), lo=0.0, hi=1.0))

    if top5 is not None:
        top5 = [{"index": int(p["index"]), "label": str(p["label"]), "prob": float(p["prob"])} for p in top5]
    prov = _plain(dict(provenance))
    prov["pretrained"] = bool(prov["pretrained"])
    meta = {
        "format": FORMAT,
        "provenance": prov,
        "original_size": list(original_size),
        "image_size": list(_png_size(image_png)),
        "grid": list(grid),
        "patch_size": list(patch_size),
        "cls_token": bool(cls_token),
        "registers": int(registers),
        "prefix": prefix,
        "num_patches": n,
        "num_tokens": t,
        "num_blocks": int(n_blocks),
        "num_heads": int(n_heads),
        "boxes": np.round(patch_boxes(geometry, original_size, grid, patch_size), 2).tolist(),
        "top5": top5,
        "summary": _plain(dict(summary)),
        "coding": {
            "attention": "scale * (code / 255) ** 2, scale per (block, head, query) row = its maximum",
            "rollout": "scale * (code / 255) ** 2, scale per (block, query) row = its maximum",
            "similarity": "code / 255 * 2 - 1",
            "pca": "code / 255",
        },
    }
    return {"meta": meta, "arrays": arrays, "image_png": bytes(image_png)}


# ---- the page -------------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class PackedPage:
    """The HTML text and the bytes (UTF-8) each part of it takes; `sizes["total"]` is the whole file."""

    html: str
    sizes: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        return {"bytes": dict(self.sizes), "limit_bytes": LIMIT_BYTES}


def _web(name: str) -> str:
    return (resources.files("vitcli") / "web" / name).read_text(encoding="utf-8")


def _json_for_script(obj) -> str:
    """JSON safe inside <script>: no '<', '>' or '&' can end the element or open a comment. Keys keep their
    order (the summary and provenance tables are shown in it); dicts built in a fixed order give fixed text."""
    text = json.dumps(obj, separators=(",", ":"), ensure_ascii=True, allow_nan=False)
    return text.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")


def _encode(arr: np.ndarray) -> tuple[str, str]:
    """(encoding, base64 text) of an array's little-endian bytes, deflated when that is smaller."""
    raw = np.ascontiguousarray(arr, dtype=arr.dtype.newbyteorder("<")).tobytes()
    sample = raw[: 1 << 18]  # a quarter MB says whether deflating the rest is worth the time
    if len(zlib.compress(sample, 6)) < 0.95 * len(sample):
        packed = zlib.compress(raw, 6)
        if len(packed) < 0.95 * len(raw):
            return "deflate", base64.b64encode(packed).decode("ascii")
    return "raw", base64.b64encode(raw).decode("ascii")


def pack_page(**kwargs) -> PackedPage:
    """`build_page`'s HTML with the size of each part in bytes (same keyword arguments as `page_data`)."""
    data = page_data(**kwargs)
    meta = data["meta"]
    blocks, sizes = [], {}
    for name, arr in data["arrays"].items():
        encoding, text = _encode(arr)
        shape = ",".join(str(d) for d in arr.shape)
        blocks.append(f'<script type="application/octet-stream" id="vitcli-array-{name}" data-dtype="{arr.dtype.name}"'
                      f' data-shape="{shape}" data-encoding="{encoding}">{text}</script>')
        sizes[name] = len(text)
    image = "data:image/png;base64," + base64.b64encode(data["image_png"]).decode("ascii")
    sizes["image"] = len(image)
    meta = {**meta, "part_bytes": dict(sizes)}
    meta_text = _json_for_script(meta)
    sizes["meta"] = len(meta_text.encode("utf-8"))

    prov = meta["provenance"]
    css, js = _web("explore.css"), _web("explore.js")
    for name, text, end in (("explore.css", css, "</style"), ("explore.js", js, "</script")):
        if end in text.lower():
            raise ValueError(f"{name} must not contain {end}>")
    fill = {
        "TITLE": _html.escape(f"{prov['model']} — vitcli explore"),
        "VERSION": _html.escape(str(prov["vitcli_version"])),
        "CSS": css,
        "JS": js,
        "META": meta_text,
        "IMAGE": image,
        "ARRAYS": "\n".join(blocks),
    }
    page = _MARK.sub(lambda m: fill[m.group(1) or m.group(2)], _web("explore.html"))
    sizes["total"] = len(page.encode("utf-8"))
    sizes["page"] = sizes["total"] - sum(v for k, v in sizes.items() if k != "total")
    return PackedPage(page, sizes)


def estimate_bytes(*, blocks: int, heads: int, tokens: int, patches: int, image_size=(224, 224),
                   pca: bool = True) -> int:
    """An upper bound on the page's size in bytes before any model runs (every array stored raw, the PNG no
    smaller than raw RGB), so a command can refuse a page too large to open before it runs the model.
    ViT-B/16 at 224 (12 blocks, 12 heads, T = 197): 9.2 MB; ViT-L/16 at 224 (24, 16): 23 MB;
    ViT-S/14 at 518 (12, 6, T = 1370): 242 MB: attention grows with T squared."""
    h, w = _pair(image_size, "image_size")
    b64 = lambda n: 4 * -(-n // 3)  # noqa: E731
    n = (blocks * heads * tokens * tokens + 4 * blocks * heads * tokens + blocks * tokens * tokens
         + 4 * blocks * tokens + blocks * patches * patches + (3 * blocks * patches if pca else 0))
    return b64(n) + b64(3 * h * w + h + 1024) + 60 * patches + 100_000


def build_page(**kwargs) -> str:
    """The whole self-contained HTML page (same keyword arguments as `page_data`); same inputs, same text."""
    return pack_page(**kwargs).html


_ARRAY_BLOCK = re.compile(r'<script type="application/octet-stream" id="vitcli-array-(\w+)" data-dtype="(\w+)"'
                          r' data-shape="([\d,]*)" data-encoding="(raw|deflate)">([^<]*)</script>')
_META_BLOCK = re.compile(r'<script type="application/json" id="vitcli-meta">([^<]*)</script>')
_IMAGE = re.compile(r'<img id="source-image"[^>]* src="data:image/png;base64,([^"]*)"')


def read_page(html: str) -> dict:
    """The data inside a page `build_page` wrote: `{"meta", "arrays", "image_png"}` as `page_data` returns them
    (meta also has `part_bytes`), so `dequantize_*` read a page from disk; ValueError for other HTML."""
    found, image = _META_BLOCK.search(html), _IMAGE.search(html)
    if found is None or image is None:
        raise ValueError("not a vitcli explore page (no vitcli-meta block or source image)")
    meta = json.loads(found.group(1))
    if meta.get("format") != FORMAT:
        raise ValueError(f"page format {meta.get('format')!r}, this vitcli reads {FORMAT!r}")
    arrays = {}
    for name, dtype, shape, encoding, text in _ARRAY_BLOCK.findall(html):
        raw = base64.b64decode(text)
        if encoding == "deflate":
            raw = zlib.decompress(raw)
        dims = tuple(int(d) for d in shape.split(",")) if shape else ()
        arrays[name] = np.frombuffer(raw, dtype=np.dtype(dtype).newbyteorder("<")).reshape(dims)
    return {"meta": meta, "arrays": arrays, "image_png": base64.b64decode(image.group(1))}


# ---- a real browser: screenshots (docs) and tests -------------------------------------------------------------

def browser_missing() -> str | None:
    """Why the headless browser cannot run here, or None when Playwright and Debian's chromium are present."""
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        return "Playwright is not installed: pip install playwright (its Python package only)"
    if not Path(CHROMIUM).exists():
        return f"{CHROMIUM} is missing: install Debian's chromium (apt-get install chromium)"
    return None


def launch(playwright):
    """Debian's headless chromium with vitcli's flags, from a started `sync_playwright()`."""
    return playwright.chromium.launch(executable_path=CHROMIUM, args=list(BROWSER_ARGS))


def open_page(browser, html_path: str | Path, *, width: int = 1400, height: int = 1000):
    """A new tab showing the page from its file:// URL, once its data is decoded (its API is ready)."""
    page = browser.new_page(viewport={"width": width, "height": height})
    page.goto(Path(html_path).resolve().as_uri())
    page.wait_for_function("() => document.body.dataset.ready === '1' || document.body.dataset.ready === 'error'")
    if page.evaluate("document.body.dataset.ready") != "1":
        raise RuntimeError(f"{html_path}: the page failed: {page.inner_text('#error')}")
    return page


def hover_patch(page, row: int, col: int, canvas: str = "#patch-canvas") -> None:
    """Move the real mouse pointer to the centre of patch (row, col) on one of the page's maps."""
    box = page.locator(canvas).bounding_box()
    gh, gw = page.evaluate("() => window.vitcliExplore.meta.grid")
    page.mouse.move(box["x"] + (col + 0.5) * box["width"] / gw, box["y"] + (row + 0.5) * box["height"] / gh)


def screenshot(html_path: str | Path, png_path: str | Path, *, hover: tuple[int, int] | None = None,
               block: int | None = None, head: int | str | None = None, pin: bool = False,
               width: int = 1400, height: int = 1000, full_page: bool = True, browser=None) -> Path:
    """Write a PNG of the page as a person sees it, with the pointer over patch `hover` = (row, col).

    `block`/`head` choose the view (head "mean" for the mean of heads); `pin` clicks the hovered patch.
    Uses Debian's headless chromium through Playwright (imported here, not at module level); pass a launched
    `browser` to reuse one. Raises RuntimeError saying what to install when the browser is missing.
    """
    if browser is None:
        reason = browser_missing()
        if reason:
            raise RuntimeError(f"cannot take a screenshot: {reason}")
        from playwright.sync_api import sync_playwright

        with sync_playwright() as p:
            b = launch(p)
            try:
                return screenshot(html_path, png_path, hover=hover, block=block, head=head, pin=pin, width=width,
                                  height=height, full_page=full_page, browser=b)
            finally:
                b.close()
    page = open_page(browser, html_path, width=width, height=height)
    try:
        if block is not None:
            page.evaluate("b => window.vitcliExplore.setBlock(b)", block)
        if head is not None:
            page.evaluate("h => window.vitcliExplore.setHead(h)", head)
        if hover is not None:
            hover_patch(page, *hover)
            if pin:
                page.mouse.down()
                page.mouse.up()
        png_path = Path(png_path)
        page.screenshot(path=str(png_path), full_page=full_page)
        return png_path
    finally:
        page.close()
