"""`vitcli explain` end to end: the command passes everything through to `vitcli.backend.explain` (its --npy
equals the backend called directly, for every method and token layout), places the maps over the original image
with the crop undone, finds the square on the model trained by docs/train_squares.py (committed under
docs/models/squares), and fails with one line that names the way out."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from conftest import DATA, LABELS, run_cli
from vitcli.backend import explain as E
from vitcli.backend.internals import model_input
from vitcli.backend.models import load_model
from vitcli.choices import Method
from vitcli.commands.explain import DEFAULT_METHOD, class_index, full_npy_path
from vitcli.errors import UsageError
from vitcli.imaging import open_image
from vitcli.preprocess import Plan
from vitcli.requests import ModelRequest

ROOT = Path(__file__).resolve().parent.parent
SQUARES = ROOT / "docs" / "models" / "squares"
IMAGE = DATA / "chelsea.jpg"  # 451x300: the tiny models' centre crop cuts its sides


def backend_maps(name: str, image: Path, methods, size=None, **kw) -> tuple[np.ndarray, tuple]:
    """The maps computed by calling the backend directly on the model input the CLI builds."""
    model = load_model(ModelRequest(name=name), img_size=size)
    x = model_input(model, open_image(image).image)
    maps = [E.explain(model.module, x, m, **kw).map for m in methods]
    return np.stack(maps), tuple(x.shape[-2:])


def test_method_choices_are_the_backends():
    assert {m.value for m in Method} == set(E.METHODS) and len(Method) == len(E.METHODS)
    from vitcli.commands import explain as C  # the command's copies, kept free of torch

    assert set(C.CAM_METHODS) == set(E.CAM_METHODS) and C.LN_RULE_METHODS == E.LN_RULE_METHODS
    assert DEFAULT_METHOD == "occlusion"
    assert full_npy_path("out/map.npy") == "out/map.full.npy" and full_npy_path("maps") == "maps.full.npy"


# ---- the command passes everything through: --npy equals the backend, every method, every token layout ----------

@pytest.mark.parametrize("layout", ["cls", "registers", "map-no-cls", "non-square"])
def test_npy_equals_the_backend(layout, tiny_dir, tiny_reg_dir, tiny_nocls_dir, tmp_path):
    folder, grid, size, target = {
        "cls": (tiny_dir, (4, 4), None, "cat"),
        "registers": (tiny_reg_dir, (4, 4), None, None),  # no head: a target embedding
        "map-no-cls": (tiny_nocls_dir, (4, 4), None, None),
        "non-square": (tiny_dir, (4, 6), "32x48", "3"),
    }[layout]
    name = f"local-dir:{folder}"
    # every method once through the CLI; for the other layouts, one per family (pixels, CAM at a block, rollout)
    methods = E.METHODS if layout == "cls" else ("occlusion", "gradcam", "grad-rollout")
    args = ["explain", IMAGE, "--model", name, "--npy", tmp_path / "m.npy", "--ig-steps", "8", "--json",
            *[a for m in methods for a in ("--method", m)]]
    kw = {}
    if target is None:  # the cosine similarity to another picture's pooled features (`features --mode cls`)
        feats = tmp_path / "f.npy"
        r = run_cli("features", IMAGE, DATA / "coffee.jpg", "--model", name, "--mode", "cls", "-o", feats)
        assert r.exit_code == 0, r.stderr
        args += ["--target-embedding", f"{feats}:1"]
        kw["embedding"] = np.load(feats)[1]
        both = np.load(feats).astype(np.float64)
        cosine = both[0] @ both[1] / np.linalg.norm(both[0]) / np.linalg.norm(both[1])
    else:
        args += ["--target", target] + (["--size", size] if size else [])
        kw["target"] = 2 if target == "cat" else int(target)
    r = run_cli(*args)
    assert r.exit_code == 0, r.stderr
    out = r.json()
    saved = np.load(tmp_path / "m.npy")
    want, hw = backend_maps(name, IMAGE, methods, size=tuple(map(int, size.split("x"))) if size else None,
                            ig_steps=8, **kw)
    assert saved.shape == (len(methods), *grid) and saved.dtype == np.float32
    assert np.allclose(saved, want.astype(np.float32), rtol=1e-4, atol=1e-6)
    assert out["grid"] == list(grid) and out["input_size"] == list(hw)
    assert [m["method"] for m in out["methods"]] == list(methods)
    for m, w in zip(out["methods"], want):
        assert np.allclose(m["map"], w, rtol=1e-4, atol=1e-7)
        if not np.ptp(w):  # Grad-CAM's ReLU can drop every patch (the random MAP model's embedding target): said
            assert m["method"] == "gradcam" and "gradcam: the map is zero everywhere" in r.stderr
        assert m["top_patch"] == list(np.unravel_index(int(np.argmax(w)), grid))
        assert m["layer"] == (1 if m["method"] in ("gradcam", "gradcam++", "layercam", "eigencam") else None)
    t = out["target"]
    if target is None:
        assert t["kind"] == "embedding" and t["score_kind"] == "cosine" and t["row"] == 1
        assert t["score"] == pytest.approx(cosine, abs=1e-5)  # chelsea's pooled output against coffee's
    else:
        assert t["kind"] == "class" and t["index"] == kw["target"] and t["label"] == LABELS[kw["target"]]
        assert t["score_kind"] == "probability" and 0 < t["score"] < 1
    full = np.load(tmp_path / "m.full.npy")
    assert full.shape == (len(methods), 300, 451)  # the original image, h x w


def test_no_ln_rule_gives_the_plain_gradient(tiny_dir, tmp_path):
    name, methods = f"local-dir:{tiny_dir}", ("gradcam", "layercam", "grad-rollout", "occlusion")
    maps = {}
    for flag in ("--ln-rule", "--no-ln-rule"):
        r = run_cli("explain", IMAGE, "--model", name, *[a for m in methods for a in ("--method", m)], flag,
                    "--target", "1", "--npy", tmp_path / f"{flag}.npy", "--json")
        assert r.exit_code == 0, r.stderr
        rule = flag == "--ln-rule"
        assert [m["extras"].get("ln_rule") for m in r.json()["methods"]] == [rule, rule, rule, None]
        want, _ = backend_maps(name, IMAGE, methods, target=1, ln_rule=rule)
        maps[flag] = np.load(tmp_path / f"{flag}.npy")
        assert np.allclose(maps[flag], want.astype(np.float32), rtol=1e-4, atol=1e-7)
        human = run_cli("explain", IMAGE, "--model", name, *[a for m in methods for a in ("--method", m)], flag)
        assert human.exit_code == 0 and ("LN-rule for gradcam, layercam, grad-rollout" if rule else
                                         "plain for gradcam, layercam, grad-rollout") in human.stdout
    assert not np.allclose(maps["--ln-rule"][:3], maps["--no-ln-rule"][:3], rtol=1e-3, atol=0)
    assert np.array_equal(maps["--ln-rule"][3], maps["--no-ln-rule"][3])  # occlusion has no gradient


def test_full_map_undoes_the_crop(tiny_dir, tmp_path):
    """map.full.npy: each patch's value sits at that patch's centre in the original image; NaN outside the crop."""
    r = run_cli("explain", IMAGE, "--model", f"local-dir:{tiny_dir}", "--method", "grad-rollout", "--npy",
                tmp_path / "m.npy", "--json")
    assert r.exit_code == 0, r.stderr
    grid_map, full = np.load(tmp_path / "m.npy"), np.load(tmp_path / "m.full.npy")
    assert grid_map.shape == (4, 4) and full.shape == (300, 451)  # one method: no method axis
    model = load_model(ModelRequest(name=f"local-dir:{tiny_dir}"))
    geo = Plan.from_config(model.info.data_config).geometry((300, 451))
    x0, y0, x1, y1 = geo.source_box()
    assert r.json()["geometry"]["source_box"] == pytest.approx([x0, y0, x1, y1])
    assert x0 > 50 and x1 < 400  # crop_pct 0.875 on a landscape picture: both sides cut
    cols = (np.arange(451) + 0.5 >= x0) & (np.arange(451) + 0.5 < x1)
    rows = (np.arange(300) + 0.5 >= y0) & (np.arange(300) + 0.5 < y1)
    assert np.isnan(full[:, ~cols]).all() and np.isnan(full[~rows]).all()
    assert np.isfinite(full[np.ix_(rows, cols)]).all()
    for r_, c_ in [(0, 0), (1, 2), (3, 3), (2, 1)]:
        u, v = geo.to_original(c_ * 8 + 4, r_ * 8 + 4)  # the patch centre in the original image
        # the original pixel whose centre is nearest: within half a pixel of the patch centre, so bilinear
        # interpolation there is within the map's gradient over half a pixel of the patch value
        px, py = int(np.floor(u)), int(np.floor(v))
        near = full[py - 1:py + 2, px - 1:px + 2]
        assert near.min() - 1e-3 <= grid_map[r_, c_] <= near.max() + 1e-3


# ---- a trained model (docs/train_squares.py): the square is found, the crop is shaded ---------------------------

def test_trained_squares_model(tmp_path):
    """docs/models/squares/samples/wide.png: a red square the model sees at input patch (1, 2), a green one in
    the margin its centre crop cuts away. Occlusion (the default), integrated gradients and grad-rollout put
    their top patch on the red square; --check: their deletion areas are far below random order's."""
    sheet = tmp_path / "sheet.png"
    r = run_cli("explain", SQUARES / "samples" / "wide.png", "--model", f"local-dir:{SQUARES}", "--method",
                "occlusion", "--method", "integrated-gradients", "--method", "grad-rollout", "--check", "--json",
                "-o", sheet, "--npy", tmp_path / "m.npy")
    assert r.exit_code == 0, r.stderr
    out = r.json()
    assert out["target"]["label"] == "red" and out["target"]["index"] == 0 and out["target"]["score"] > 0.9
    assert out["original_size"] == [64, 128] and out["input_size"] == [32, 48] and out["grid"] == [4, 6]
    assert out["geometry"]["source_box"] == pytest.approx([16, 0, 112, 64])  # 16 px cut on each side
    random_area = out["random_deletion_area"]
    for m in out["methods"]:
        assert m["top_patch"] == [1, 2], m["method"]
        d = m["deletion"]
        assert d["fractions"][0] == 0 and d["fractions"][-1] == 1 and len(d["scores"]) == 25
        assert d["scores"][0] == pytest.approx(out["target"]["score"], abs=1e-5)
        assert d["area"] < 0.25 * random_area, (m["method"], d["area"], random_area)
    full = np.load(tmp_path / "m.full.npy")  # (3, 64, 128)
    assert np.isnan(full[:, :, :16]).all() and np.isnan(full[:, :, 112:]).all()  # the green square: never seen
    top = np.unravel_index(np.nanargmax(full[0]), full[0].shape)
    assert 16 <= top[0] < 32 and 48 <= top[1] < 64  # inside the red square, in original pixels
    from PIL import Image

    with Image.open(sheet) as pic:
        assert pic.width > 4 * 224 and pic.height > 2 * 150  # two rows of tiles: model input, original
    human = run_cli("explain", SQUARES / "samples" / "wide.png", "--model", f"local-dir:{SQUARES}", "--check")
    assert human.exit_code == 0, human.stderr
    assert "red (0), p = 0.99" in human.stdout and "occlusion" in human.stdout  # the default method
    assert "random order (mean of 3)" in human.stdout and "(1, 2)" in human.stdout


def test_target_by_label_and_index_agree(tmp_path):
    args = ["explain", SQUARES / "samples" / "blue.png", "--model", f"local-dir:{SQUARES}", "--json"]
    by_name, by_index = run_cli(*args, "--target", "Yellow"), run_cli(*args, "--target", "3")
    assert by_name.exit_code == by_index.exit_code == 0, by_name.stderr + by_index.stderr
    a, b = by_name.json(), by_index.json()
    assert a["target"]["index"] == b["target"]["index"] == 3 and a["target"]["requested"] == "Yellow"
    assert a["methods"][0]["map"] == b["methods"][0]["map"]
    top = run_cli(*args)
    assert top.json()["target"]["label"] == "blue" and top.json()["methods"][0]["top_patch"] == [1, 4]


# ---- one-line errors that name the way out ----------------------------------------------------------------------

def one_line(r, code: int, *words: str) -> None:
    assert r.exit_code == code, (r.exit_code, r.stdout, r.stderr)
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: "), r.stderr
    for w in words:
        assert w in lines[0], (w, lines[0])


def test_errors(tiny_dir, tiny_reg_dir, tmp_path, monkeypatch):
    model = ["--model", f"local-dir:{tiny_dir}"]
    one_line(run_cli("explain", IMAGE, *model, "--method", "saliency"), 2, "saliency", "occlusion", "gradcam++")
    one_line(run_cli("explain", IMAGE, *model, "--target", "kat"), 2, "'kat'", "5 labels", "cat (2)", "top1")
    one_line(run_cli("explain", IMAGE, *model, "--target", "7"), 2, "out of range", "0..4")
    one_line(run_cli("explain", IMAGE, "--model", f"local-dir:{tiny_reg_dir}"), 2, "no classifier head",
             "--target-embedding")
    one_line(run_cli("explain", IMAGE, *model, "--layer", "0"), 2, "--layer", "--method gradcam")
    one_line(run_cli("explain", IMAGE, *model, "--method", "gradcam", "--layer", "5"), 2, "out of range", "2 blocks")
    one_line(run_cli("explain", IMAGE, *model, "--method", "occlusion", "--method", "eigencam", "--no-ln-rule"), 2,
             "--no-ln-rule", "--method gradcam or gradcam++ or layercam or grad-rollout")
    np.save(tmp_path / "two.npy", np.ones((2, 32), dtype=np.float32))
    np.save(tmp_path / "short.npy", np.ones(31, dtype=np.float32))
    reg = ["--model", f"local-dir:{tiny_reg_dir}"]
    one_line(run_cli("explain", IMAGE, *reg, "--target-embedding", tmp_path / "two.npy"), 2, "holds 2 vectors",
             ":ROW")
    one_line(run_cli("explain", IMAGE, *reg, "--target-embedding", f"{tmp_path / 'two.npy'}:2"), 2, "--row 2",
             "0..1")
    one_line(run_cli("explain", IMAGE, *reg, "--target-embedding", tmp_path / "short.npy"), 2, "31 dimensions",
             "32")
    one_line(run_cli("explain", IMAGE, *model, "--target", "cat", "--target-embedding", tmp_path / "short.npy"), 2,
             "give one of them")
    (tmp_path / "taken.png").write_bytes(b"x")
    one_line(run_cli("explain", IMAGE, *model, "-o", tmp_path / "taken.png"), 1, "already exists", "--force")
    monkeypatch.setitem(sys.modules, "pytorch_grad_cam", None)  # as if the extra were not installed
    one_line(run_cli("explain", IMAGE, *model, "--method", "gradcam"), 1, "pytorch-grad-cam",
             'pip install "vitcli[explain]"')


def test_labels_file_and_layer_are_checked_before_any_work(tiny_dir, tmp_path, monkeypatch):
    """An unreadable --labels fails before the model loads; an out-of-range --layer right after it, before any
    method runs (here occlusion, asked first)."""
    from vitcli.backend import models

    model = ["--model", f"local-dir:{tiny_dir}"]
    loads, runs = [], []
    real_load, real_explain = models.load_model, E.explain
    monkeypatch.setattr(models, "load_model", lambda *a, **kw: loads.append(a) or real_load(*a, **kw))
    monkeypatch.setattr(E, "explain", lambda *a, **kw: runs.append(a[2]) or real_explain(*a, **kw))
    missing = tmp_path / "labels.txt"
    one_line(run_cli("explain", IMAGE, *model, "--labels", missing), 2, f"--labels {missing}", "cannot read",
             "No such file")
    one_line(run_cli("explain", IMAGE, *model, "--labels", tmp_path), 2, f"--labels {tmp_path}", "cannot read")
    (tmp_path / "binary.txt").write_bytes(b"\xff\xfe\x00bad")
    one_line(run_cli("explain", IMAGE, *model, "--labels", tmp_path / "binary.txt"), 2, "cannot read")
    assert loads == [] and runs == []
    one_line(run_cli("explain", IMAGE, *model, "--method", "occlusion", "--method", "gradcam", "--layer", "-3"), 2,
             "--layer -3 is out of range", "2 blocks")
    assert len(loads) == 1 and runs == []  # the model loaded, no method ran
    (tmp_path / "three.txt").write_text("a\nb\nc\n")  # readable: its count is checked once the model is known
    one_line(run_cli("explain", IMAGE, *model, "--labels", tmp_path / "three.txt"), 2, "3 labels", "5 classes")
    assert len(loads) == 2 and runs == []
    (tmp_path / "five.txt").write_text("\n".join(LABELS[::-1]) + "\n")
    r = run_cli("explain", IMAGE, *model, "--labels", tmp_path / "five.txt", "--target", "ant", "--json")
    assert r.exit_code == 0, r.stderr
    assert r.json()["target"]["index"] == 4 and r.json()["target"]["label"] == "ant" and runs == [DEFAULT_METHOD]


def test_class_index():
    labels = ["tabby, tabby cat", "tiger cat", "crane", "crane", "Persian cat"]
    assert class_index("tabby", labels) == 0 and class_index("TABBY CAT", labels) == 0
    assert class_index("persian cat", labels) == 4
    with pytest.raises(UsageError, match="names 2 classes: 2 \\(crane\\), 3 \\(crane\\)"):
        class_index("crane", labels)
    with pytest.raises(UsageError) as e:
        class_index("tigger cat", labels)
    assert "tiger cat (1)" in e.value.hint and "0..4" in e.value.hint


def test_usage_errors_come_before_torch():
    """Flag checks run while the request is built: no torch imported, no model loaded."""
    code = ("import sys; sys.argv = ['vitcli', 'explain', 'x.png', '--layer', '1']\n"
            "from vitcli.cli import main\n"
            "try:\n    main()\nexcept SystemExit as e:\n"
            "    print('torch' in sys.modules, e.code, file=sys.stderr)\n")
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert p.stderr.strip().splitlines()[-1] == "False 2", p.stderr
    assert torch  # the test module itself needs torch; the probe above does not


def test_a_video_frame_is_an_image(tiny_dir, tmp_path):
    """IMAGE may name a video frame (VIDEO@frame=N), through the same input seam as every single-image command."""
    from videos import make_video

    video = make_video(tmp_path / "v.mp4", frames=6)
    r = run_cli("explain", f"{video}@frame=3", "--model", f"local-dir:{tiny_dir}", "--json")
    assert r.exit_code == 0, r.stderr
    out = r.json()
    assert out["image"] == f"{video}@frame=3" and out["grid"] == [4, 4] and len(out["methods"]) == 1
