"""`vitcli explore IMAGE -o page.html` end to end, on real tiny timm models (conftest's local-dir fixtures).

What the page holds is read back from the written file (`explore_page.read_page`) and checked against the
other commands run on the same model and image, within the page's 8-bit steps:
- attention of every block == `vitcli attention --layer L --npy` (heads, T, T);
- rollout == `vitcli attention --rollout --npy` (last block) and `internals.rollout` of blocks 0..l;
- similarity == scikit-learn's `cosine_similarity` of `vitcli features --layer ...` patch tokens;
- PCA colours == scikit-learn's `PCA` of the same tokens, scaled between the 1st and 99th percentiles;
- top-5 == `vitcli classify --json`; params and FLOPs == `vitcli cost --measure` (torch's FlopCounterMode).
The browser tests open the real pages in Debian's headless chromium (the helpers of test_explore_page.py):
no console errors, no requests, the pointer and the block/head controls change the picture, and the values
the page shows equal `vitcli attention --npy` within the quantisation step.
"""

from __future__ import annotations

import json
import shlex

import numpy as np
import pytest
from conftest import DATA, LABELS
from test_explore_page import Tab, browser  # noqa: F401  (browser: the module's chromium fixture)

from vitcli import __version__
from vitcli import explore_page as ep

IMG = str(DATA / "chelsea.jpg")  # 451 x 300
MODELS = {"cls": "tiny_dir", "reg": "tiny_reg_dir", "nocls": "tiny_nocls_dir"}
LAYOUT = {"cls": (True, 0, 1), "reg": (True, 4, 5), "nocls": (False, 0, 0)}  # CLS, registers, prefix


def within_rows(got: np.ndarray, want: np.ndarray) -> bool:
    """Every value within its row's 8-bit step (row max / 255) of the reference (float32 rounding allowed)."""
    step = want.max(-1, keepdims=True) / 255
    return bool((np.abs(got - want) <= step * (1 + 1e-5) + 1e-7).all())


@pytest.fixture(scope="module")
def made(request, tmp_path_factory, cli):
    """Per model: the page (run once, --json) and the reference outputs of attention, features, classify."""
    folder = tmp_path_factory.mktemp("explore-cli")
    out = {}
    for key, fixture in MODELS.items():
        model = f"local-dir:{request.getfixturevalue(fixture)}"
        page = folder / f"{key}.html"
        r = cli("explore", IMG, "--model", model, "-o", page, "--json")
        assert r.exit_code == 0, r.stderr
        refs = {}
        for layer in (0, 1):
            npy = folder / f"{key}-attn{layer}.npy"
            a = cli("attention", IMG, "--model", model, "--layer", str(layer), "--npy", npy)
            assert a.exit_code == 0, a.stderr
            refs[layer] = np.load(npy)  # (heads, T, T)
        npy = folder / f"{key}-rollout.npy"
        assert cli("attention", IMG, "--model", model, "--rollout", "--npy", npy).exit_code == 0
        roll = np.load(npy)[0]  # (T, T)
        feats = folder / f"{key}-feats.npy"
        f = cli("features", IMG, "--model", model, "--mode", "patch", "--layer", "0", "--layer", "1", "-o", feats)
        assert f.exit_code == 0, f.stderr
        out[key] = {"model": model, "page": page, "json": r.json(), "stdout": r.stdout,
                    "data": ep.read_page(page.read_text(encoding="utf-8")), "attention": refs, "rollout": roll,
                    "features": np.load(feats)[0]}  # (layers, N, D)
    return out


@pytest.fixture(scope="module")
def cli():
    from conftest import run_cli

    return run_cli


# ---- the data inside the page ----------------------------------------------------------------------------------

@pytest.mark.parametrize("key", MODELS)
def test_attention_in_the_page_equals_attention_npy_within_the_step(made, key):
    m = made[key]
    data = m["data"]
    att = ep.dequantize_attention(data)  # (L, H, T, T)
    cls, regs, prefix = LAYOUT[key]
    assert att.shape == (2, 2, prefix + 16, prefix + 16)
    for layer in (0, 1):
        ref = m["attention"][layer].astype(np.float64)
        assert within_rows(att[layer], ref)
        # the row scale is the row's maximum, stored in float32
        np.testing.assert_allclose(data["arrays"]["attention_scale"][layer], ref.max(-1), rtol=1e-6)
        assert np.abs(att[layer] - ref).max() > 0  # 8 bits: not the float32 values themselves


@pytest.mark.parametrize("key", MODELS)
def test_rollout_up_to_each_block(made, key):
    from vitcli.backend import internals

    m = made[key]
    roll = ep.dequantize_rollout(m["data"])  # (L, T, T)
    a0, a1 = (m["attention"][b].astype(np.float64) for b in (0, 1))
    assert within_rows(roll[0], internals.rollout([a0]))
    assert within_rows(roll[1], internals.rollout([a0, a1]))
    assert within_rows(roll[1], m["rollout"])  # `vitcli attention --rollout` chains every block: the last one
    np.testing.assert_allclose(roll.sum(-1), 1, atol=0.05)  # rows of a rollout sum to 1 (before the 8 bits)


def test_rollouts_chain_one_block_at_a_time_like_internals_rollout():
    from vitcli.backend import internals
    from vitcli.backend.explore import rollouts

    rng = np.random.default_rng(0)
    a = rng.uniform(size=(4, 3, 7, 7))
    a /= a.sum(-1, keepdims=True)
    got = rollouts(a)
    for layer in range(4):
        np.testing.assert_allclose(got[layer], internals.rollout(list(a[: layer + 1])), rtol=1e-12, atol=1e-15)


@pytest.mark.parametrize("key", MODELS)
def test_similarity_and_pca_equal_scikit_learn_on_the_features_tokens(made, key):
    from sklearn.decomposition import PCA
    from sklearn.metrics.pairwise import cosine_similarity

    m = made[key]
    feats = m["features"].astype(np.float64)  # (L, N, D) block outputs, `vitcli features --layer`
    sim = ep.dequantize_similarity(m["data"])
    pca = ep.dequantize_pca(m["data"])  # (L, gh, gw, 3)
    for layer in (0, 1):
        ref = cosine_similarity(feats[layer])
        assert np.abs(sim[layer] - ref).max() <= 1 / 255 + 1e-6
        proj = PCA(n_components=3, svd_solver="full").fit_transform(feats[layer])  # (N, 3), svd_flip signs
        lo, hi = np.percentile(proj, (1, 99), axis=0)
        want = np.clip((proj - lo) / (hi - lo), 0, 1).reshape(4, 4, 3)
        assert np.abs(pca[layer] - want).max() <= 0.5 / 255 + 1e-5
    if key != "reg":  # (its LayerScale of 1e-5 leaves block 1's tokens as block 0 made them)
        assert np.abs(sim[0] - sim[1]).max() > 2 / 255  # one map per block


def test_prediction_equals_classify(made, cli):
    m = made["cls"]
    ref = cli("classify", IMG, "--model", m["model"], "--top-k", "5", "--json").json()
    top = ref["results"][0]["top"]
    page = m["data"]["meta"]["top5"]
    assert [p["label"] for p in page] == [p["label"] for p in top] and {p["label"] for p in page} == set(LABELS)
    assert [p["index"] for p in page] == [p["index"] for p in top]
    np.testing.assert_allclose([p["prob"] for p in page], [p["prob"] for p in top], atol=1e-6)
    assert m["json"]["top5"] == page
    assert made["reg"]["data"]["meta"]["top5"] is None and made["nocls"]["data"]["meta"]["top5"] is None


def test_tokens_and_cost_summary_equal_cost_measure(made, cli):
    measured = cli("cost", "--model", made["cls"]["model"], "--measure", "--json").json()[0]["measured"]
    s = made["cls"]["data"]["meta"]["summary"]
    assert s["params"] == measured["params"] == 32389
    assert s["FLOPs per image"] == 2 * s["MACs per image"] == measured["flops"]
    assert list(s)[:8] == ["input size", "patch size", "grid", "patch tokens", "prefix tokens", "sequence length",
                           "blocks × heads", "width"]  # the order the page shows them in
    assert (s["input size"], s["grid"], s["patch tokens"], s["width"]) == ([32, 32], [4, 4], 16, 32)
    for key, (_cls, _regs, prefix) in LAYOUT.items():
        s = made[key]["data"]["meta"]["summary"]
        assert s["sequence length"] == 16 + prefix and s["blocks × heads"] == [2, 2]
    assert made["reg"]["data"]["meta"]["summary"]["prefix tokens"] == "CLS + 4 registers"
    assert made["nocls"]["data"]["meta"]["summary"]["prefix tokens"] == "none"


@pytest.mark.parametrize("key", MODELS)
def test_meta_layout_and_provenance(made, key):
    m = made[key]
    meta = m["data"]["meta"]
    cls, regs, prefix = LAYOUT[key]
    assert (meta["cls_token"], meta["registers"], meta["prefix"], meta["num_tokens"]) == (cls, regs, prefix,
                                                                                          16 + prefix)
    assert (meta["grid"], meta["patch_size"], meta["image_size"]) == ([4, 4], [8, 8], [32, 32])
    assert meta["original_size"] == [300, 451] and (meta["num_blocks"], meta["num_heads"]) == (2, 2)
    prov = meta["provenance"]
    assert prov == {"model": m["model"], "weights": f"local-dir {m['model'].split(':', 1)[1]}", "pretrained": True,
                    "vitcli_version": __version__, "command": shlex.join(
                        ["vitcli", "explore", IMG, "--model", m["model"], "-o", str(m["page"])]), "image": IMG}
    assert shlex.split(prov["command"])[1:] == ["explore", IMG, "--model", m["model"], "-o", str(m["page"])]


def test_patch_boxes_in_the_original_image(made):
    # tiny_dir: crop_pct 0.875 at 32 -> the shorter side resized to floor(32 / 0.875) = 36, so 451 x 300 becomes
    # 54 x 36 (torchvision: int(36 * 451 / 300) = 54); the centre 32 x 32 is cropped at left 11, top 2
    boxes = np.array(made["cls"]["data"]["meta"]["boxes"])
    assert boxes.shape == (16, 4)
    for r in range(4):
        for c in range(4):
            want = [(11 + 8 * c) * 451 / 54, (2 + 8 * r) * 300 / 36, (19 + 8 * c) * 451 / 54, (10 + 8 * r) * 300 / 36]
            np.testing.assert_allclose(boxes[4 * r + c], want, atol=0.006)


def test_json_says_what_was_written(made):
    for key, m in made.items():
        d = m["json"]
        size = m["page"].stat().st_size
        assert d["path"] == str(m["page"]) and d["bytes"]["total"] == size
        assert sum(v for k, v in d["bytes"].items() if k != "total") == size
        assert size <= d["estimate_bytes"] < d["limit_bytes"] == ep.LIMIT_BYTES
        assert d["model"]["name"] == m["model"] and (d["blocks"], d["heads"], d["grid"]) == (2, 2, [4, 4])
        assert d["tokens"] == 16 + LAYOUT[key][2] and d["command"] == m["data"]["meta"]["provenance"]["command"]
        assert d["notes"] == []


# ---- refusals, before any work ----------------------------------------------------------------------------------

def test_page_too_large_is_refused_before_the_model_loads(cli, tmp_path):
    from vitcli.commands.explore import known_shape

    page = tmp_path / "big.html"
    r = cli("explore", IMG, "--model", "vit_large_patch16_224", "--no-pretrained", "-o", page)
    assert r.exit_code == 2 and not page.exists()
    assert "vit_large_patch16_224 at 224 would make a page of up to 23." in r.stderr
    assert "over the 15 MB limit; use a smaller input, e.g. --size 192" in r.stderr
    assert "Warning" not in r.stderr  # refused before the model (and its random-weights warning)
    assert known_shape("vit_large_patch16_224", (192, 192)).estimate() <= ep.LIMIT_BYTES
    assert known_shape("vit_large_patch16_224", (208, 208)).estimate() > ep.LIMIT_BYTES
    # ViT-B/16 at 224, the budget: fits; at 384 (T = 577) it does not
    assert known_shape("vit_base_patch16_224", None).estimate() < ep.LIMIT_BYTES
    r = cli("explore", IMG, "--model", "vit_base_patch16_224", "--size", "384", "-o", page)
    assert r.exit_code == 2 and "at 384 would make a page of up to 75.8 MB" in r.stderr and "--size 240" in r.stderr
    assert known_shape("vit_base_patch16_224", (240, 240)).estimate() <= ep.LIMIT_BYTES
    assert known_shape("vit_base_patch16_224", (256, 256)).estimate() > ep.LIMIT_BYTES


def test_page_too_large_for_a_model_read_from_disk_is_refused_before_the_forward(cli, tmp_path, tiny_dir):
    page = tmp_path / "big.html"
    r = cli("explore", IMG, "--model", f"local-dir:{tiny_dir}", "--size", "320", "-o", page)  # T = 1601
    assert r.exit_code == 2 and not page.exists()
    assert "at 320 would make a page of up to" in r.stderr and "2 blocks x 2 heads x 1601² attention" in r.stderr
    assert "--size 272" in r.stderr
    from vitcli.commands.explore import Shape

    assert Shape(2, 2, (272, 272), (8, 8), 1).estimate() <= ep.LIMIT_BYTES < Shape(2, 2, (280, 280), (8, 8), 1).estimate()


def test_output_rules(cli, tmp_path, tiny_dir):
    page = tmp_path / "p.html"
    page.write_text("keep")
    r = cli("explore", IMG, "--model", f"local-dir:{tiny_dir}", "-o", page)
    assert r.exit_code == 1 and "already exists" in r.stderr and page.read_text() == "keep"
    r = cli("explore", IMG, "--model", f"local-dir:{tiny_dir}", "--device", "meta", "-o", tmp_path / "m.html")
    assert r.exit_code == 2 and "--device meta" in r.stderr
    r = cli("explore", IMG, "--model", f"local-dir:{tiny_dir}")
    assert r.exit_code == 2 and "--out" in r.stderr
    r = cli("explore", tmp_path / "missing.jpg", "--model", f"local-dir:{tiny_dir}", "-o", tmp_path / "n.html")
    assert r.exit_code == 1 and "no such file" in r.stderr and not (tmp_path / "n.html").exists()
    assert [p.name for p in tmp_path.iterdir()] == ["p.html"]  # no temporary file left behind


def test_a_video_frame_as_the_image(cli, tmp_path, tiny_nocls_dir):
    import io

    from PIL import Image
    from videos import make_video, pattern

    from vitcli.preprocess import Plan

    video = make_video(tmp_path / "v.mkv", 10)  # lossless FFV1: frame k decodes to pattern(k) exactly
    page = tmp_path / "frame.html"
    r = cli("explore", f"{video}@frame=7", "--model", f"local-dir:{tiny_nocls_dir}", "-o", page, "--json")
    assert r.exit_code == 0, r.stderr
    data = ep.read_page(page.read_text(encoding="utf-8"))
    meta = data["meta"]
    assert meta["provenance"]["image"] == f"{video}@frame=7" and meta["original_size"] == [48, 64]
    assert meta["provenance"]["command"] == shlex.join(["vitcli", "explore", f"{video}@frame=7", "--model",
                                                        f"local-dir:{tiny_nocls_dir}", "-o", str(page)])
    # the picture in the page is the frame through the model's own resize and crop
    want = Plan.from_config(r.json()["model"]["data_config"]).resize_crop(Image.fromarray(pattern(7)))
    with Image.open(io.BytesIO(data["image_png"])) as shown:
        assert np.array_equal(np.asarray(shown.convert("RGB")), np.asarray(want))


def test_help_names_the_command_and_an_example(cli):
    r = cli("explore", "--help")
    assert r.exit_code == 0 and "Example: vitcli explore photo.jpg" in r.stdout and "--out" in r.stdout


def test_command_line_is_quoted_and_fixed_in_order():
    from vitcli.commands.explore import ExploreRequest
    from vitcli.requests import ModelRequest

    req = ExploreRequest(image="my photo.jpg", out="out dir/p.html", size="224x320", force=True,
                         model=ModelRequest(name="vit_small_patch16_224", pretrained=False, device="cpu"))
    assert req.command_line() == ("vitcli explore 'my photo.jpg' --model vit_small_patch16_224 --no-pretrained "
                                  "--size 224x320 --device cpu -o 'out dir/p.html'")
    assert ExploreRequest(image="a.jpg", out="p.html").command_line() == "vitcli explore a.jpg -o p.html"


# ---- the real pages in a real browser ----------------------------------------------------------------------------

@pytest.fixture(scope="module")
def tab(browser):  # noqa: F811
    t = Tab(browser)
    yield t
    t.page.close()


def move(tab: Tab, row: int, col: int, canvas: str = "#patch-canvas") -> None:
    """The real pointer to the centre of patch (row, col) of the 4 x 4 grid."""
    tab.page.locator(canvas).scroll_into_view_if_needed()
    box = tab.page.locator(canvas).bounding_box()
    tab.page.mouse.move(box["x"] + (col + 0.5) * box["width"] / 4, box["y"] + (row + 0.5) * box["height"] / 4)


@pytest.mark.parametrize("key", ["cls", "reg"])
def test_real_page_in_the_browser_shows_attention_npy(tab, made, key):
    m = made[key]
    p = LAYOUT[key][2]
    tab.open(m["page"])
    assert tab.errors == [] and [c for c in tab.console if c[0] in ("error", "warning")] == []
    assert tab.requests == [tab.url]  # the file itself, nothing else
    assert tab.state["query"] == 0 and tab.state["block"] == 1  # CLS, the last block
    # the pointer over patch (1, 2) changes the attention picture
    cls_picture = tab.colors("attn-canvas")
    move(tab, 1, 2)
    q = p + 1 * 4 + 2
    assert tab.state["query"] == q and tab.colors("attn-canvas") != cls_picture
    hovered = tab.colors("attn-canvas")
    # block and head controls change it
    tab.page.focus("#block")
    tab.page.keyboard.press("ArrowLeft")
    assert tab.state["block"] == 0
    block0 = tab.colors("attn-canvas")
    tab.page.focus("#head")
    tab.page.keyboard.press("ArrowRight")
    assert tab.state["head"] == 1
    head1 = tab.colors("attn-canvas")
    assert len({json.dumps(x) for x in (cls_picture, hovered, block0, head1)}) == 4
    # every value the page holds for (block, head, query) equals `vitcli attention --npy` within the step
    for block in (0, 1):
        for head in (0, 1):
            for query in (0, q, p + 15):
                ref = m["attention"][block][head, query].astype(np.float64)  # (T,)
                shown = tab.js("""o => Array.from({length: o.t}, (_, k) =>
                    window.vitcliExplore.valueShown('attention', {block: o.b, head: o.h, query: o.q, key: k}))""",
                               {"b": block, "h": head, "q": query, "t": ref.size})
                assert within_rows(np.array(shown), ref), (block, head, query)
    # and the table of the largest values shows them (block 0, head 1, query patch (1, 2))
    ref = m["attention"][0][1, q].astype(np.float64)
    rows = tab.page.locator("#top-table tbody tr")
    for i in range(5):
        t, v = int(rows.nth(i).get_attribute("data-token")), float(rows.nth(i).get_attribute("data-value"))
        assert abs(v - ref[t]) <= ref.max() / 255 * (1 + 1e-5)
    assert int(rows.nth(0).get_attribute("data-token")) == int(np.argmax(ref))
    assert tab.page.inner_text("#command") == m["data"]["meta"]["provenance"]["command"]
    assert tab.page.is_hidden("#random-banner")  # local-dir weights: not random as far as vitcli knows


def test_random_weights_page_and_a_model_without_cls(tab, made, cli, tmp_path, tiny_dir):
    page = tmp_path / "random.html"
    r = cli("explore", IMG, "--model", f"local-dir:{tiny_dir}", "--no-pretrained", "-o", page)
    assert r.exit_code == 0 and "Warning: --no-pretrained: random weights" in r.stderr
    size = page.stat().st_size
    assert r.stdout.splitlines()[2:7] == [
        "tokens     17 = CLS + 4x4 patches of the 32x32 input",
        "attention  2 blocks x 2 heads x 17x17",
        f"top class  {r.stdout.split('top class  ')[1].splitlines()[0]}",
        f"wrote      {page}: {size / 1e3:.1f} kB (limit 15 MB)",
        r.stdout.splitlines()[6]]
    assert r.stdout.splitlines()[6].startswith("parts      attention ") and "image 3.3 kB" in r.stdout
    tab.open(page)
    assert tab.page.is_visible("#random-banner") and "RANDOM WEIGHTS" in tab.page.inner_text("#random-banner")
    assert tab.page.inner_text("#weights") == "random, seed 0 (not pretrained)"
    assert "--no-pretrained" in tab.page.inner_text("#command")
    tab.open(made["nocls"]["page"])
    assert tab.state["query"] == 2 * 4 + 2 and tab.page.is_hidden("#attn-prefix")  # no CLS: a centre patch
    assert tab.page.is_visible("#top5-none")
    assert tab.errors == [] and tab.requests == [tab.url]


# ---- the docs: the screenshot made by the docs generator --------------------------------------------------------

def test_docs_generator_takes_the_screenshot_of_a_page_a_run_block_wrote(browser, made, tmp_path):  # noqa: F811
    import importlib.util
    import shutil

    from PIL import Image

    root = DATA.parent.parent
    spec = importlib.util.spec_from_file_location("docs_gen", root / "docs" / "gen.py")
    gen = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(gen)
    # docs/explore.md: each shot names a page its run blocks write, and the picture it makes is in docs/img
    text = (root / "docs" / "explore.md").read_text()
    shots = list(gen.SHOT.finditer(text))
    assert shots and all(f"-o {m['page']}" in "".join(b["cmd"] for b in gen.BLOCK.finditer(text)) for m in shots)
    assert all((root / m["png"]).is_file() for m in shots)
    # the hook itself, in a scratch folder as gen.py runs it
    (tmp_path / "docs" / "img").mkdir(parents=True)
    shutil.copyfile(made["cls"]["page"], tmp_path / "docs" / "img" / "p.html")
    made_pngs = gen.shoot("<!-- shot: docs/img/p.html -> docs/img/p.png hover=1,2 block=0 head=1 -->", tmp_path,
                          browser=browser)
    assert made_pngs == [tmp_path / "docs" / "img" / "p.png"]
    with Image.open(made_pngs[0]) as shot:
        assert shot.format == "PNG" and shot.width == 1400 and shot.height > 1000
        assert np.asarray(shot.convert("L")).std() > 20  # a picture, not a blank page
