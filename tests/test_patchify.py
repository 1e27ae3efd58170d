"""`vitcli patchify`: preprocessing, pictures, the patch tensor and its order, bad inputs."""

from __future__ import annotations

import numpy as np
import pytest
import timm
import torch
from PIL import Image

from conftest import DATA
from test_imaging import bad_inputs, make_mode
from vitcli.imaging import open_image, standard_eval, unpatchify


def test_story_json_and_outputs(cli, tmp_path):
    grid, mosaic, npy = tmp_path / "grid.png", tmp_path / "mosaic.png", tmp_path / "p.npy"
    r = cli("patchify", DATA / "chelsea.jpg", "-o", grid, "--mosaic", mosaic, "--npy", npy, "--json")
    assert r.exit_code == 0, r.stderr
    d = r.json()
    assert d["image"]["original_size"] == [300, 451] and d["image"]["original_mode"] == "RGB"
    assert (d["input_size"], d["grid"], d["num_patches"], d["seq_len"]) == ([224, 224], [14, 14], 196, 197)
    assert d["npy_shape"] == [196, 768] and d["remainder"] is None
    rows = np.load(npy)
    assert rows.shape == (196, 768) and rows.dtype == np.float32 and 0 <= rows.min() and rows.max() <= 1
    # the round trip patches -> image is exact
    expected, _ = standard_eval(open_image(DATA / "chelsea.jpg").image, (224, 224))
    assert np.array_equal(unpatchify(rows, (14, 14), (16, 16)), np.asarray(expected, np.float32) / 255)
    for path in (grid, mosaic):
        with Image.open(path) as im:
            im.load()
            assert im.format == "PNG" and im.width >= 224
    assert sorted(p.name for p in tmp_path.iterdir()) == ["grid.png", "mosaic.png", "p.npy"]  # no temp files


def test_story_human(cli, tmp_path):
    r = cli("patchify", DATA / "horse-rgba.png", "--size", "64", "--patch", "16")
    assert r.exit_code == 0
    assert "RGBA -> RGB" in r.stdout and "4x4 grid of 16x16 px = 16 patch tokens" in r.stdout
    assert "1 CLS + 16 patches = 17 tokens" in r.stdout


def test_remainder_is_told_and_dropped(cli, tmp_path):
    npy = tmp_path / "p.npy"
    d = cli("patchify", DATA / "coffee.jpg", "--size", "230", "--patch", "16", "--npy", npy, "--json").json()
    assert d["grid"] == [14, 14] and d["remainder"] == {"rows": 6, "columns": 6, "dropped_pixels": 230 * 230 - 224 * 224}
    assert np.load(npy).shape == (196, 768)
    r = cli("patchify", DATA / "coffee.jpg", "--size", "230", "--patch", "16")
    assert "2,724 pixels) are dropped" in r.stdout


def test_rectangular_size(cli):
    d = cli("patchify", DATA / "chelsea.jpg", "--size", "64x96", "--patch", "16", "--json").json()
    assert d["input_size"] == [64, 96] and d["grid"] == [4, 6]


@pytest.mark.parametrize("mode", ["L", "LA", "P", "RGBA", "CMYK", "I;16", "F", "1"])
def test_every_mode_works(cli, tmp_path, mode):
    path, note = make_mode(tmp_path, mode)
    out = tmp_path / "out"
    out.mkdir()
    r = cli("patchify", path, "--size", "32", "--patch", "8", "-o", out / "g.png", "--npy", out / "p.npy", "--json")
    assert r.exit_code == 0, r.stderr
    assert any(note in c for c in r.json()["image"]["conversions"])
    assert np.load(out / "p.npy").shape == (16, 192)


def test_model_preprocessing_is_timms_and_patch_order_is_the_models(cli, tmp_path, tiny_dir):
    """The --npy rows, normalised with the model's mean/std, times the reshaped conv weight, plus bias, equal
    timm's own patch embedding of timm's own preprocessing of the image."""
    npy = tmp_path / "p.npy"
    name = f"local-dir:{tiny_dir}"
    r = cli("patchify", DATA / "chelsea.jpg", "--model", name, "--npy", npy, "--json")
    assert r.exit_code == 0, r.stderr
    d = r.json()
    assert d["data_config"]["mean"] == pytest.approx([0.4, 0.5, 0.6]) and d["data_config"]["crop_pct"] == 0.875
    assert (d["input_size"], d["patch_size"], d["num_patches"]) == ([32, 32], [8, 8], 16)

    model = timm.create_model(name, pretrained=True).eval()
    cfg = timm.data.resolve_data_config({}, model=model)
    x = timm.data.create_transform(**cfg)(open_image(DATA / "chelsea.jpg").image).unsqueeze(0)  # (1, 3, 32, 32)
    with torch.no_grad():
        expected = model.patch_embed(x)[0]  # (N, D), token order

    rows = torch.from_numpy(np.load(npy))  # (N, P·P·C) in [0, 1]
    mean, std = torch.tensor(cfg["mean"]), torch.tensor(cfg["std"])
    rows = ((rows.view(16, 8 * 8, 3) - mean) / std).view(16, -1)
    w = model.patch_embed.proj.weight  # (D, C, P, P)
    got = rows @ w.permute(0, 2, 3, 1).reshape(w.shape[0], -1).T + model.patch_embed.proj.bias
    assert torch.allclose(got, expected, atol=1e-5)
    # and the rows are exactly timm's ToTensor output (before normalisation), re-ordered
    img01 = x[0] * std.view(3, 1, 1) + mean.view(3, 1, 1)
    assert np.allclose(unpatchify(np.load(npy), (4, 4), (8, 8)), img01.permute(1, 2, 0).numpy(), atol=1e-6)


def test_model_with_registers_labels(cli, tmp_path, tiny_reg_dir):
    d = cli("patchify", DATA / "coffee.jpg", "--model", f"local-dir:{tiny_reg_dir}", "--json").json()
    assert (d["num_prefix_tokens"], d["registers"], d["seq_len"]) == (5, 4, 21)


def test_existing_output_needs_force(cli, tmp_path):
    target = tmp_path / "grid.png"
    target.write_bytes(b"precious")
    r = cli("patchify", DATA / "chelsea.jpg", "-o", target)
    assert r.exit_code == 1 and "already exists" in r.stderr and "--force" in r.stderr
    assert target.read_bytes() == b"precious"
    r = cli("patchify", DATA / "chelsea.jpg", "-o", target, "--force")
    assert r.exit_code == 0 and target.read_bytes()[:4] == b"\x89PNG"


@pytest.mark.parametrize("kind", ["missing", "empty", "truncated", "not an image", "unreadable format", "bomb"])
def test_bad_input_clean_error_and_no_files(cli, tmp_path, kind):
    path, words = bad_inputs(tmp_path)[kind]
    out = tmp_path / "out"
    out.mkdir()
    r = cli("patchify", path, "-o", out / "g.png", "--mosaic", out / "m.png", "--npy", out / "p.npy")
    assert r.exit_code == 1
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and str(path) in lines[0] and words in lines[0] and "Traceback" not in r.stderr
    assert list(out.iterdir()) == []
