"""`vitcli explore`'s page: the packer (numpy, no torch) and the page itself in a real headless browser.

The arrays are synthetic but shaped like a ViT's: attention rows are softmaxes that favour nearby patches (rows
sum to 1), similarities are cosines of unit vectors, PCA colours are in [0, 1]. The image is the repository's
chelsea.jpg resized and centre-cropped, so the patch boxes in the original image can be checked by hand.

The browser tests drive Debian's chromium through Playwright: real pointer moves, clicks and key presses, pixels
read back from the canvases. Without chromium or Playwright they skip and say what to install.
"""

from __future__ import annotations

import io
import re
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from vitcli import explore_page as ep

DATA = Path(__file__).parent / "data"

# chelsea.jpg is 451 x 300; the shorter side resized to 32 gives 48 x 32 (w x h); the centre 40 x 32 is cropped
ORIGINAL = (300, 451)
RESIZED = (32, 48)
CROP = (4, 0, 44, 32)  # left, top, right, bottom in the resized image
GRID, PATCH = (4, 5), (8, 8)


def image_png() -> bytes:
    img = Image.open(DATA / "chelsea.jpg").convert("RGB")
    assert img.size == (ORIGINAL[1], ORIGINAL[0])
    out = io.BytesIO()
    img.resize((RESIZED[1], RESIZED[0]), Image.Resampling.BICUBIC).crop(CROP).save(out, "PNG")
    return out.getvalue()


def softmax(x: np.ndarray) -> np.ndarray:
    e = np.exp(x - x.max(-1, keepdims=True))
    return e / e.sum(-1, keepdims=True)


def arrays(n_blocks: int, n_heads: int, grid, prefix: int, seed: int = 0) -> dict:
    """Attention (L, H, T, T) that favours nearby patches, rollout (L, T, T), similarity (L, N, N), PCA."""
    rng = np.random.default_rng(seed)
    gh, gw = grid
    n = gh * gw
    t = prefix + n
    r, c = np.divmod(np.arange(n), gw)
    dist = np.hypot(r[:, None] - r[None], c[:, None] - c[None])  # (N, N) patch distances
    logits = rng.normal(0, 1.5, size=(n_blocks, n_heads, t, t))
    reach = rng.uniform(0.5, 3, size=(n_blocks, n_heads, 1, 1))
    logits[..., prefix:, prefix:] -= dist / reach
    attention = softmax(logits)
    eye = np.eye(t)
    hop = 0.5 * attention.mean(1) + 0.5 * eye
    rollout = np.stack([np.linalg.multi_dot([eye, *hop[: i + 1][::-1]]) if i else hop[0] for i in range(n_blocks)])
    rollout /= rollout.sum(-1, keepdims=True)
    feats = rng.normal(size=(n_blocks, n, 16)) + np.stack([np.cos(r), np.sin(c), r / gh], 1)[None].repeat(
        n_blocks, 0).repeat(6, 2)[..., :16]
    feats /= np.linalg.norm(feats, axis=-1, keepdims=True)
    similarity = np.clip(feats @ feats.transpose(0, 2, 1), -1, 1)
    pca = rng.uniform(size=(n_blocks, gh, gw, 3))
    return {"attention": attention, "rollout": rollout, "similarity": similarity, "pca": pca}


def page_kwargs(*, pretrained: bool = False, cls_token: bool = True, registers: int = 2, n_blocks: int = 3,
                n_heads: int = 4, top5: bool = True, pca: bool = True, seed: int = 0) -> dict:
    a = arrays(n_blocks, n_heads, GRID, int(cls_token) + registers, seed)
    labels = ["tabby </script><img src=x>", "tiger cat", "Egyptian cat", "lynx", "remote"]
    probs = (0.5, 0.2, 0.1, 0.05, 0.01)
    return {
        "image_png": image_png(), "original_size": ORIGINAL, "geometry": {"resized": RESIZED, "crop": CROP},
        "grid": GRID, "patch_size": PATCH, "cls_token": cls_token, "registers": registers,
        "attention": a["attention"], "rollout": a["rollout"], "similarity": a["similarity"],
        "pca": a["pca"] if pca else None,
        "top5": [{"index": 281 + i, "label": s, "prob": p} for i, (s, p) in enumerate(zip(labels, probs, strict=True))]
        if top5 else None,
        "summary": {"grid": [4, 5], "tokens": 20 + int(cls_token) + registers, "params": 5_717_416, "GMACs": 0.0123},
        "provenance": {"model": "vit_tiny_test", "weights": "vit_tiny_test.augreg_in21k" if pretrained else "random",
                       "pretrained": pretrained, "vitcli_version": "0.1.0",
                       "command": "vitcli explore chelsea.jpg --size 32x40 -o page.html"},
    }


# ---- the packer ------------------------------------------------------------------------------------------------

def test_dequantised_data_equals_the_inputs_within_the_8bit_step():
    kw = page_kwargs()
    data = ep.page_data(**kw)
    att, roll = kw["attention"], kw["rollout"]

    a = ep.dequantize_attention(data)
    step = att.max(-1, keepdims=True) / 255  # scale / 255 of each (block, head, query) row
    assert a.shape == att.shape
    assert (np.abs(a - att) <= step * (1 + 1e-6)).all()
    # square-root coding: values at most a hundredth of their row's maximum are kept ~10x finer than the step
    small = att <= step * 255 / 100
    assert small.sum() > 100
    assert (np.abs(a - att)[small] <= np.broadcast_to(step * 255 / 2000, att.shape)[small]).all()
    assert np.abs(a - att)[small].max() < step.min()

    r = ep.dequantize_rollout(data)
    assert (np.abs(r - roll) <= roll.max(-1, keepdims=True) / 255 * (1 + 1e-6)).all()
    assert np.abs(ep.dequantize_similarity(data) - kw["similarity"]).max() <= 1 / 255 + 1e-12
    assert np.abs(ep.dequantize_pca(data) - kw["pca"]).max() <= 0.5 / 255 + 1e-12

    arr = data["arrays"]
    assert arr["attention"].dtype == np.uint8 and arr["attention"].shape == (3, 4, 23, 23)
    assert arr["attention_scale"].dtype == np.float32 and arr["attention_scale"].shape == (3, 4, 23)
    np.testing.assert_allclose(arr["attention_scale"], att.max(-1), rtol=1e-7)
    assert arr["rollout"].shape == (3, 23, 23) and arr["similarity"].shape == (3, 20, 20)
    assert arr["pca"].shape == (3, 4, 5, 3)


def test_quantize_rows_codes_and_zero_rows():
    x = np.array([[0.0, 0.25, 1.0, 0.01], [0, 0, 0, 0]])
    codes, scale = ep.quantize_rows(x)
    assert codes.tolist() == [[0, 128, 255, 26], [0, 0, 0, 0]]  # round(255 * sqrt(v / max))
    assert scale.tolist() == [1.0, 0.0]
    np.testing.assert_allclose(ep.dequantize_rows(codes, scale)[0], [0, (128 / 255) ** 2, 1, (26 / 255) ** 2])


def test_meta_describes_the_tokens_and_the_patch_boxes_in_the_original_image():
    kw = page_kwargs(registers=2)
    meta = ep.page_data(**kw)["meta"]
    assert (meta["prefix"], meta["num_patches"], meta["num_tokens"]) == (3, 20, 23)
    assert (meta["num_blocks"], meta["num_heads"]) == (3, 4)
    assert meta["image_size"] == [32, 40] and meta["original_size"] == [300, 451]
    assert meta["provenance"] == kw["provenance"]
    assert meta["top5"][0] == {"index": 281, "label": "tabby </script><img src=x>", "prob": 0.5}
    # patch (r, c) covers input x in [4 + 8c, 12 + 8c) of the 48-wide resize -> times 451/48 in the original
    boxes = np.array(meta["boxes"])
    assert boxes.shape == (20, 4)
    for r in range(4):
        for c in range(5):
            want = [(4 + 8 * c) * 451 / 48, 8 * r * 300 / 32, (12 + 8 * c) * 451 / 48, (8 * r + 8) * 300 / 32]
            np.testing.assert_allclose(boxes[r * 5 + c], want, atol=0.005)
    assert boxes[:, [0, 2]].min() > 37 and boxes[:, 2].max() < 414  # the crop left 4 resized px on each side


def test_patch_boxes_clip_to_the_image_and_take_boxes_as_given():
    # a crop larger than the resize (the transform padded): boxes stop at the image's edges
    b = ep.patch_boxes({"resized": (16, 16), "crop": (-8, -8, 24, 24)}, (100, 100), (2, 2), (16, 16))
    np.testing.assert_allclose(b, [[0, 0, 50, 50], [50, 0, 100, 50], [0, 50, 50, 100], [50, 50, 100, 100]])
    given = np.arange(80, dtype=float).reshape(20, 4)
    kw = page_kwargs()
    kw["geometry"] = {"boxes": given}
    assert ep.page_data(**kw)["meta"]["boxes"] == given.tolist()
    with pytest.raises(ValueError, match=r"geometry\['boxes'\] must have shape \(20, 4\)"):
        ep.patch_boxes({"boxes": given[:3]}, ORIGINAL, GRID, PATCH)


@pytest.mark.parametrize("name, bad, match", [
    ("attention", np.ones((3, 4, 22, 22)), r"attention must have shape \(3, 4, 23, 23\)"),
    ("attention", -np.ones((3, 4, 23, 23)), "attention has values below 0"),
    ("rollout", np.full((3, 23, 23), np.nan), "rollout has NaN"),
    ("similarity", 2 * np.ones((3, 20, 20)), "similarity has values above 1"),
    ("pca", np.ones((3, 5, 4, 3)), r"pca must have shape \(3, 4, 5, 3\)"),
    ("image_png", b"GIF89a", "image_png must be the bytes of a PNG"),
])
def test_bad_inputs_are_refused_by_name(name, bad, match):
    kw = page_kwargs()
    kw[name] = bad
    with pytest.raises(ValueError, match=match):
        ep.page_data(**kw)


def test_sizes_add_up_and_name_every_part():
    packed = ep.pack_page(**page_kwargs())
    html, sizes = packed.html, packed.sizes
    assert sizes["total"] == len(html.encode("utf-8"))
    assert sum(v for k, v in sizes.items() if k != "total") == sizes["total"]
    for name in ("attention", "attention_scale", "rollout", "rollout_scale", "similarity", "pca"):
        m = re.search(rf'<script type="application/octet-stream" id="vitcli-array-{name}"[^>]*>([^<]*)</script>', html)
        assert m and len(m.group(1)) == sizes[name], name
    m = re.search(r'<img id="source-image"[^>]* src="(data:image/png;base64,[^"]*)"', html)
    assert m and len(m.group(1)) == sizes["image"]
    m = re.search(r'<script type="application/json" id="vitcli-meta">([^<]*)</script>', html)
    assert m and len(m.group(1)) == sizes["meta"]
    assert 0 < sizes["page"] < 60_000  # the HTML, CSS and JavaScript themselves
    assert packed.to_dict()["bytes"] == sizes


def test_same_inputs_same_bytes():
    one, two = ep.build_page(**page_kwargs()), ep.build_page(**page_kwargs())
    assert one == two
    kw = page_kwargs()
    kw["attention"] = kw["attention"].copy()
    kw["attention"][1, 2, 3] = np.roll(kw["attention"][1, 2, 3], 1)
    assert ep.build_page(**kw) != one


def test_page_is_self_contained_text():
    html = ep.build_page(**page_kwargs())
    for bad in ("http:", "https:", "<link", "@import", "url(", "//cdn", "fetch("):
        assert bad not in html, bad
    assert re.findall(r'\ssrc="([^"]{0,22})', html) == ["data:image/png;base64,"]
    assert "default-src 'none'" in html  # the browser itself forbids any load
    # text from the inputs cannot end the data block: the label's "</script>" is escaped inside the JSON
    assert "tabby </script>" not in html and "tabby \\u003c/script\\u003e" in html


@pytest.fixture(scope="module")
def vitb(tmp_path_factory):
    """A ViT-B/16-shaped page at 224 (L=12, H=12, T=197, N=196) from random arrays: (path, sizes, attention)."""
    rng = np.random.default_rng(0)
    n_blocks, n_heads, t, n = 12, 12, 197, 196
    att = softmax(rng.normal(0, 2, (n_blocks, n_heads, t, t)).astype(np.float32))
    roll = softmax(rng.normal(0, 2, (n_blocks, t, t)).astype(np.float32))
    png = io.BytesIO()
    Image.fromarray(rng.integers(0, 256, (224, 224, 3), dtype=np.uint8)).save(png, "PNG")  # noise: worst case
    start = time.perf_counter()
    packed = ep.pack_page(
        image_png=png.getvalue(), original_size=(300, 451), geometry={"resized": (224, 336), "crop": (56, 0, 280, 224)},
        grid=(14, 14), patch_size=16, cls_token=True, registers=0, attention=att, rollout=roll,
        similarity=rng.uniform(-1, 1, (n_blocks, n, n)), pca=rng.uniform(size=(n_blocks, 14, 14, 3)), top5=None,
        summary={"tokens": 197},
        provenance={"model": "vit_base_patch16_224", "weights": "random", "pretrained": False,
                    "vitcli_version": "0.1.0", "command": "vitcli explore x.jpg -o page.html"})
    seconds = time.perf_counter() - start
    print(f"\nViT-B/16 page at 224, random arrays: {packed.sizes['total'] / 1e6:.2f} MB, packed in {seconds:.2f} s; "
          f"{packed.sizes}")
    path = tmp_path_factory.mktemp("vitb") / "vitb.html"
    path.write_text(packed.html, encoding="utf-8")
    return path, packed.sizes, att


def test_vit_b16_sized_page_stays_under_15_mb(vitb):
    path, sizes, _ = vitb
    assert sizes["total"] == path.stat().st_size < ep.LIMIT_BYTES
    # at most 1 byte per value in base64; softmax rows of random logits deflate to ~80 % of that
    assert sizes["attention"] <= 4 * -(-12 * 12 * 197 * 197 // 3)
    bound = ep.estimate_bytes(blocks=12, heads=12, tokens=197, patches=196, image_size=(224, 224))
    assert sizes["total"] <= bound < 1.3 * sizes["total"] and bound < ep.LIMIT_BYTES
    html = path.read_text(encoding="utf-8")
    assert 'id="vitcli-array-attention" data-dtype="uint8" data-shape="12,12,197,197" data-encoding="' in html
    # uniform random codes do not deflate: stored raw (the page reads both)
    assert 'id="vitcli-array-similarity" data-dtype="uint8" data-shape="12,196,196" data-encoding="raw"' in html


def test_structured_arrays_are_deflated():
    html = ep.build_page(**page_kwargs())
    assert re.search(r'id="vitcli-array-attention" [^>]*data-encoding="deflate"', html)


# ---- the page in a real browser ----------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def browser():
    reason = ep.browser_missing()
    if reason:
        pytest.skip(f"browser tests need Playwright and Debian's chromium: {reason}")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        b = ep.launch(p)
        yield b
        b.close()


class Tab:
    """One browser tab for the module, recording every request, console message and page error."""

    def __init__(self, browser):
        self.page = browser.new_page(viewport={"width": 1400, "height": 1000})
        self.requests, self.console, self.errors = [], [], []
        self.page.on("request", lambda r: self.requests.append(r.url))
        self.page.on("console", lambda m: self.console.append((m.type, m.text)))
        self.page.on("pageerror", lambda e: self.errors.append(str(e)))

    def open(self, path: Path) -> Tab:
        """Load the page from its file:// URL (the records start afresh) and wait until its data is decoded."""
        for record in (self.requests, self.console, self.errors):
            record.clear()
        self.url = path.resolve().as_uri()
        self.page.goto(self.url)
        self.page.wait_for_function("() => document.body.dataset.ready !== '0'", polling=50)
        assert self.page.evaluate("document.body.dataset.ready") == "1", self.page.inner_text("#error")
        return self

    def js(self, expr: str, arg=None):
        return self.page.evaluate(expr, arg)

    @property
    def state(self) -> dict:
        return self.js("() => window.vitcliExplore.state")

    def colors(self, canvas: str = "attn-canvas") -> list:
        """The colour at the centre of every patch of a map, read back with getImageData."""
        return self.js("id => window.vitcliExplore.patchColors(id)", canvas)

    def move(self, row: int, col: int, canvas: str = "#patch-canvas") -> None:
        """The real pointer to the centre of patch (row, col) of a map."""
        self.page.locator(canvas).scroll_into_view_if_needed()
        box = self.page.locator(canvas).bounding_box()
        self.page.mouse.move(box["x"] + (col + 0.5) * box["width"] / GRID[1],
                             box["y"] + (row + 0.5) * box["height"] / GRID[0])

    def click(self) -> None:
        self.page.mouse.down()
        self.page.mouse.up()


@pytest.fixture(scope="module")
def tab(browser):
    t = Tab(browser)
    yield t
    t.page.close()


@pytest.fixture(scope="module")
def pages(tmp_path_factory):
    """Write each page once per module: make(name, **page_kwargs) -> (path, the keyword arguments)."""
    folder = tmp_path_factory.mktemp("explore")
    made = {}

    def make(name: str, **over):
        if name not in made:
            kw = page_kwargs(**over)
            path = folder / f"{name}.html"
            path.write_text(ep.build_page(**kw), encoding="utf-8")
            made[name] = (path, kw)
        return made[name]

    return make


def token(row: int, col: int, prefix: int = 3) -> int:
    return prefix + row * GRID[1] + col


def test_loads_from_file_offline_without_errors(tab, pages):
    path, kw = pages("main")
    tab.open(path)
    assert tab.state == {"block": 2, "head": 0, "query": 0, "pinned": False, "probe": None, "opacity": 0.75}
    tab.move(1, 2)
    tab.click()
    tab.page.keyboard.press("Escape")
    # the only request is the file itself (the image and the arrays are inside it)
    assert tab.requests == [tab.url]
    assert tab.errors == []
    assert [m for m in tab.console if m[0] in ("error", "warning")] == []
    # and the page's Content-Security-Policy would block any load (loopback's discard port: nothing listens)
    blocked = tab.js("""() => new Promise(ok => {
        document.addEventListener('securitypolicyviolation', e => ok(e.effectiveDirective), {once: true});
        fetch('http://127.0.0.1:9/').catch(() => {}); })""")
    assert blocked == "connect-src"
    assert tab.page.title() == "vit_tiny_test — vitcli explore"
    assert tab.page.inner_text("#model-name") == "vit_tiny_test"
    assert tab.page.inner_text("#command") == kw["provenance"]["command"]
    assert tab.page.inner_text("#version") == "0.1.0"
    # text from the inputs shows as text: the label's markup is neither markup nor a request
    assert tab.page.inner_text("#top5 tr:first-child td:first-child") == "tabby </script><img src=x>"
    assert tab.page.locator("#top5 tr").count() == 5
    assert tab.page.inner_text("#summary tr[data-key=params] td:last-child") == "5,717,416"


def test_pointer_over_a_patch_changes_the_attention_picture_and_names_the_patch(tab, pages):
    path, _kw = pages("main")
    tab.open(path)
    cls_attn, cls_roll, cls_sim = tab.colors("attn-canvas"), tab.colors("roll-canvas"), tab.colors("sim-canvas")
    tab.move(1, 2)
    assert tab.state["query"] == token(1, 2) and tab.state["probe"] == token(1, 2)
    assert tab.colors("attn-canvas") != cls_attn
    assert tab.colors("roll-canvas") != cls_roll
    assert tab.colors("sim-canvas") != cls_sim  # CLS has no similarity map; patch (1, 2) has one
    info = tab.page.inner_text("#hover-info")
    assert "token 10" in info and "patch (1, 2)" in info and "row 1, column 2" in info
    # patch (1, 2): input x 16..24, y 8..16 -> resized x 20..28 -> original x 187.9..263.1, y 75..150
    assert "x 187.9–263.1, y 75–150" in info and "451 × 300" in info
    tab.move(3, 4, "#pca-canvas")  # every map takes the pointer
    assert tab.state["query"] == token(3, 4)
    tab.page.mouse.move(2, 2)  # off the maps: back to CLS
    assert tab.state["query"] == 0 and tab.state["probe"] is None
    assert tab.colors("attn-canvas") == cls_attn


def test_block_and_head_controls_change_the_picture(tab, pages):
    path, _ = pages("main")
    tab.open(path)
    seen = [tab.colors()]
    tab.page.focus("#block")
    tab.page.keyboard.press("ArrowLeft")
    assert tab.state["block"] == 1 and tab.page.inner_text("#block-out") == "1 / 2"
    seen.append(tab.colors())
    tab.page.focus("#head")
    tab.page.keyboard.press("ArrowRight")
    assert tab.state["head"] == 1
    seen.append(tab.colors())
    tab.page.click("#mean")
    assert tab.state["head"] == "mean" and tab.page.is_disabled("#head")
    seen.append(tab.colors())
    # a click on a thumbnail of the block x head grid (block 0, head 3) shows that one
    lay = tab.js("() => window.vitcliExplore.headsLayout()")
    tab.page.locator("#heads-canvas").scroll_into_view_if_needed()
    box = tab.page.locator("#heads-canvas").bounding_box()
    s = box["width"] / tab.js("() => document.getElementById('heads-canvas').width")
    tab.page.mouse.click(box["x"] + (lay["left"] + (3 * lay["cellW"] + 2) * lay["k"]) * s,
                         box["y"] + (lay["top"] + 2 * lay["k"]) * s)
    assert (tab.state["block"], tab.state["head"]) == (0, 3)
    assert not tab.page.is_disabled("#head")
    seen.append(tab.colors())
    assert all(seen[i] != seen[j] for i in range(len(seen)) for j in range(i))
    assert tab.page.inner_text("#attn-title") == "block 0, head 3, from CLS"


def test_values_shown_equal_the_input_arrays_within_the_step(tab, pages):
    path, kw = pages("main")
    att, roll, sim = kw["attention"], kw["rollout"], kw["similarity"]
    tab.open(path)
    tab.js("() => { window.vitcliExplore.setBlock(1); window.vitcliExplore.setHead(2); }")
    q, k = token(2, 3), token(0, 1)
    tab.move(2, 3)
    tab.click()  # pin the query
    tab.move(0, 1, "#attn-canvas")  # and point at another patch
    step = att[1, 2, q].max() / 255
    rows = tab.page.locator("#top-table tbody tr")
    assert rows.count() == 10
    shown = [(int(rows.nth(i).get_attribute("data-token")), float(rows.nth(i).get_attribute("data-value")),
              float(rows.nth(i).locator("td.v").inner_text())) for i in range(10)]
    # the ten largest values of the row the page holds, largest first (ties by token index)
    held = ep.dequantize_attention(ep.page_data(**kw))[1, 2, q]
    assert [t for t, _, _ in shown] == np.lexsort((np.arange(23), -held))[:10].tolist()
    for t, value, text in shown:
        assert abs(value - att[1, 2, q, t]) <= step * (1 + 1e-6)
        assert abs(text - att[1, 2, q, t]) <= step + 5e-4 * value  # shown with 4 significant digits
    assert abs(float(tab.page.get_attribute("#probe-attn", "data-value")) - att[1, 2, q, k]) <= step
    assert abs(float(tab.page.get_attribute("#probe-roll", "data-value")) - roll[1, q, k]) <= roll[1, q].max() / 255
    assert abs(float(tab.page.get_attribute("#probe-sim", "data-value")) - sim[1, q - 3, k - 3]) <= 1 / 255 + 1e-9
    # the prefix strip: the query's attention to CLS and the two registers
    for t in range(3):
        v = float(tab.page.get_attribute(f"#attn-prefix .tok[data-token='{t}']", "data-value"))
        assert abs(v - att[1, 2, q, t]) <= step
    # mean of heads: within the mean of the heads' steps
    tab.page.click("#mean")
    mean_step = (att[1, :, q].max(-1) / 255).mean()
    for i in range(10):
        t, value = int(rows.nth(i).get_attribute("data-token")), float(rows.nth(i).get_attribute("data-value"))
        assert abs(value - att[1, :, q, t].mean()) <= mean_step * (1 + 1e-6)
    # the JS API agrees for any (block, head, query, key)
    for (b, h, qq, kk) in [(0, 0, 0, 5), (2, 3, 7, 0), (1, 1, 22, 22)]:
        where = {"block": b, "head": h, "query": qq, "key": kk}
        v = tab.js("a => window.vitcliExplore.valueShown('attention', a)", where)
        assert abs(v - att[b, h, qq, kk]) <= att[b, h, qq].max() / 255


def test_heat_map_colours_are_the_values_through_the_colour_map(tab, pages):
    path, kw = pages("main")
    tab.open(path)
    tab.js("() => { const e = window.vitcliExplore; e.setOpacity(1); e.setBlock(0); e.setHead(1); e.hover(12); }")
    colors = tab.colors("attn-canvas")
    shown = [tab.js("k => window.vitcliExplore.valueShown('attention', {key: k})", 3 + i) for i in range(20)]
    top = max(shown)
    want = tab.js("a => a.map(t => window.vitcliExplore.colormap('inferno', t))", [v / top for v in shown])
    assert colors == want
    # and the brightest patch is the one the query attends to most, in the input array
    lum = np.array(colors) @ [0.2126, 0.7152, 0.0722]
    assert int(np.argmax(lum)) == int(np.argmax(kw["attention"][0, 1, 12, 3:]))


def test_click_pins_and_unpins_the_query(tab, pages):
    path, _ = pages("main")
    tab.open(path)
    tab.move(1, 1)
    tab.click()
    assert tab.state["pinned"] and tab.state["query"] == token(1, 1)
    before = tab.colors()
    tab.move(3, 0, "#roll-canvas")
    assert tab.state["query"] == token(1, 1) and tab.state["probe"] == token(3, 0)
    assert tab.colors() == before  # pinned: the picture stays
    assert "(pinned)" in tab.page.inner_text("#query-badge") and tab.page.is_visible("#unpin")
    tab.click()  # a click elsewhere pins there
    assert tab.state["query"] == token(3, 0) and tab.state["pinned"]
    tab.click()  # a second click on the pinned patch unpins
    assert not tab.state["pinned"] and tab.state["query"] == token(3, 0)
    tab.page.click("#attn-prefix .tok[data-token='2']")  # a register pinned from the strip
    assert tab.state["pinned"] and tab.state["query"] == 2
    assert "register 1" in tab.page.inner_text("#query-info")
    tab.page.keyboard.press("Escape")
    assert not tab.state["pinned"] and tab.state["query"] == 0


def test_random_weights_banner_only_when_not_pretrained(tab, pages):
    tab.open(pages("main")[0])  # pretrained=False
    assert tab.page.is_visible("#random-banner")
    assert "RANDOM WEIGHTS" in tab.page.inner_text("#random-banner")
    assert tab.page.inner_text("#weights") == "random (not pretrained)"
    tab.open(pages("pretrained", pretrained=True)[0])
    assert not tab.page.is_visible("#random-banner")
    assert tab.page.inner_text("#weights") == "vit_tiny_test.augreg_in21k"


def test_model_without_cls_registers_head_or_pca(tab, pages):
    path, kw = pages("bare", cls_token=False, registers=0, top5=False, pca=False)
    tab.open(path)
    assert tab.state["query"] == 2 * 5 + 2  # no CLS: the centre patch (2, 2) is the first query
    assert tab.page.is_hidden("#attn-prefix") and tab.page.is_hidden("#roll-prefix")
    assert tab.page.is_visible("#top5-none") and tab.page.is_hidden("#top5")
    assert tab.page.is_visible("#pca-none") and tab.page.is_hidden("#pca-canvas")
    tab.move(0, 0)
    assert tab.state["query"] == 0 and "token 0 · patch (0, 0)" in tab.page.inner_text("#hover-info")
    v = float(tab.page.get_attribute("#top-table tbody tr:first-child", "data-value"))
    att = kw["attention"][2, 0, 0]
    assert abs(v - att.max()) <= att.max() / 255
    assert tab.errors == [] and [m for m in tab.console if m[0] == "error"] == []


def test_vit_b16_sized_page_loads_and_answers(tab, vitb):
    path, _, att = vitb
    start = time.perf_counter()
    tab.open(path)
    loaded = time.perf_counter() - start
    ms = tab.js("""() => { const e = window.vitcliExplore, t0 = performance.now();
                 for (let i = 1; i <= 20; i++) e.hover(i); return (performance.now() - t0) / 20; }""")
    print(f"\nViT-B/16 page: {path.stat().st_size / 1e6:.2f} MB, loaded in {loaded:.2f} s, {ms:.1f} ms per hover")
    v = tab.js("() => window.vitcliExplore.valueShown('attention', {block: 11, head: 11, query: 196, key: 0})")
    assert abs(v - att[11, 11, 196, 0]) <= att[11, 11, 196].max() / 255
    assert tab.errors == [] and tab.requests == [tab.url]
    assert ms < 500


def test_screenshot_writes_the_page_as_a_png(browser, pages, tmp_path):
    # the docs generator calls it without `browser` (it then launches the same `ep.launch` chromium itself)
    path, _ = pages("main")
    out = ep.screenshot(path, tmp_path / "page.png", hover=(1, 2), block=1, head="mean", width=1200, height=900,
                        browser=browser)
    with Image.open(out) as shot:
        assert shot.format == "PNG" and shot.width == 1200 and shot.height > 900  # the full page
        px = np.asarray(shot.convert("RGB"))
    assert px.std() > 20  # a picture, not a blank page
    # the random-weights banner's red band across the top
    assert (np.abs(px[20:40, 100:300].astype(int) - [179, 18, 31]).sum(-1) < 40).mean() > 0.5
