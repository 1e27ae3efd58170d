"""vitcli.preprocess (timm's eval preprocessing without torch) and backend.tensor_preprocess (its tensor twin).

References: timm's own eval transform (`create_transform(**cfg, is_training=False)`), split at the to-tensor
stage as `backend.data.split_transform` does; the configs of real timm models built on the meta device.
"""

from __future__ import annotations

import functools
import io
import itertools
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import timm
import torch
from PIL import Image

from conftest import DATA
from vitcli.backend.data import data_config, eval_transform, pil_stages
from vitcli.backend.tensor_preprocess import (decode_jpeg_batch, normalize_lut, normalize_u8_batch, normalize_u8_chw, orient,
                                              resize_crop_tensor)
from vitcli.errors import InputError
from vitcli.imaging import open_image
from vitcli.preprocess import NotExact, Plan, draft_scale, load_for_plan, open_for_plan

IMAGENET = dict(mean=(0.485, 0.456, 0.406), std=(0.229, 0.224, 0.225))
CLIP = dict(mean=(0.48145466, 0.4578275, 0.40821073), std=(0.26862954, 0.26130258, 0.27577711))


def cfg_of(input_size=(3, 224, 224), interpolation="bicubic", crop_pct=0.9, crop_mode="center", norm=IMAGENET,
           **extra) -> dict:
    return dict(input_size=input_size, interpolation=interpolation, crop_pct=crop_pct, crop_mode=crop_mode,
                **norm, **extra)


@functools.cache
def photo(name: str) -> Image.Image:
    return open_image(DATA / name).image


@functools.cache
def image(kind: str, w: int, h: int) -> Image.Image:
    """A test photo resized to w x h, or random pixels ('random')."""
    if kind == "random":
        rng = np.random.default_rng(w * 10007 + h)
        return Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8), "RGB")
    return photo(kind).resize((w, h), Image.Resampling.BICUBIC)


# tiny, non-multiples, portrait, landscape, square, and the photos at their own size
SMALL = [("random", 17, 9), ("chelsea.jpg", 9, 17), ("coffee.jpg", 451, 300), ("random", 300, 451),
         ("camera-gray.png", 225, 223), ("horse-rgba.png", 257, 256), ("random", 1, 1), ("chelsea.jpg", 61, 7)]


def assert_same_as_timm(cfg: dict, images) -> None:
    ref, plan = pil_stages(cfg), Plan.from_config(cfg)
    for img in images:
        want, got = np.asarray(ref(img)), np.asarray(plan.resize_crop(img))
        assert got.shape == want.shape == (*plan.size, 3), (cfg, img.size)
        assert np.array_equal(got, want), (cfg, img.size, int(np.abs(got.astype(int) - want).max()))


# ---- the PIL stages are timm's, pixel for pixel ---------------------------------------------------------------

@pytest.mark.parametrize("crop_mode", ["center", "squash", "border"])
@pytest.mark.parametrize("input_size", [(3, 224, 224), (3, 256, 320), (3, 518, 518), (3, 384, 384), (3, 64, 48)])
def test_resize_crop_equals_timm(crop_mode, input_size):
    images = [image(*k) for k in SMALL]
    combos = [(pct, "bicubic") for pct in (0.875, 0.9, 0.95, 1.0, 1.15)]
    combos += [(pct, interp) for pct in (0.9, 1.0) for interp in ("bilinear", "nearest")]
    for pct, interp in combos:
        assert_same_as_timm(cfg_of(input_size, interp, pct, crop_mode), images)


@pytest.mark.parametrize("interp", ["box", "hamming", "lanczos"])
def test_every_pil_filter_timm_accepts(interp):
    images = [image(*k) for k in SMALL[:5]]
    for crop_mode, pct in itertools.product(["center", "squash", "border"], [0.875, 1.0]):
        assert_same_as_timm(cfg_of((3, 256, 320), interp, pct, crop_mode), images)


@pytest.mark.parametrize("crop_mode", ["center", "squash", "border"])
def test_large_photos_equal_timm(crop_mode):
    images = [image("coffee.jpg", 1920, 1080), image("chelsea.jpg", 1080, 1920), image("random", 1001, 777)]
    for input_size, pct in [((3, 224, 224), 0.875), ((3, 256, 320), 0.95), ((3, 384, 384), 1.0)]:
        assert_same_as_timm(cfg_of(input_size, "bicubic", pct, crop_mode), images)


@pytest.mark.parametrize("border", [1, 5, 20])
def test_crop_border_pixels_equal_timm(border):
    images = [image(*k) for k in SMALL if min(k[1:]) > 2 * border]
    for crop_mode in ("center", "squash", "border"):
        cfg = cfg_of((3, 64, 48), "bilinear", 0.875, crop_mode, crop_border_pixels=border)
        assert_same_as_timm(cfg, images)
        empty = image("random", 2 * border, 50)  # nothing left after TrimBorder
        if crop_mode == "squash":  # timm resizes the empty image to black
            assert_same_as_timm(cfg, [empty])
            continue
        with pytest.raises((ValueError, ZeroDivisionError)):  # timm fails
            pil_stages(cfg)(empty)
        with pytest.raises(ValueError, match="nothing to resize"):
            Plan.from_config(cfg).resize_crop(empty)


def test_config_defaults_are_timms():
    from timm.data.constants import DEFAULT_CROP_PCT

    plan = Plan.from_config(cfg_of(crop_pct=None, crop_mode=None))
    assert plan.crop_pct == DEFAULT_CROP_PCT and plan.mode == "center"
    assert_same_as_timm(cfg_of(crop_pct=None, crop_mode=None), [image(*k) for k in SMALL[:4]])


MODELS = {  # name -> what its config adds to the sweep
    "vit_base_patch16_224.augreg2_in21k_ft_in1k": "0.9 bicubic, mean 0.5",
    "vit_large_patch14_reg4_dinov2.lvd142m": "518, crop_pct 1.0",
    "vit_so400m_patch14_siglip_224.webli": "SigLIP",
    "vit_base_patch16_clip_224.openai": "CLIP mean/std",
    "deit_base_patch16_224.fb_in1k": "ImageNet mean/std",
    "eva02_base_patch14_448.mim_in22k_ft_in22k_in1k": "squash 448",
    "vit_base_patch16_224_miil.in21k_ft_in1k": "bilinear, 0.875",
    "vit_base_patch16_sapiens2.fb": "1024x768 squash bilinear",
    "volo_d4_448.sail_in1k": "crop_pct 1.15",
    "deepseek_vit_412m.deepseek_v4_1_flash": "border mode, 546",
}


@functools.cache
def meta_model(name: str):
    with torch.device("meta"):
        return timm.create_model(name, pretrained=False)


@pytest.mark.parametrize("name", list(MODELS))
def test_real_model_configs_equal_timm(name):
    model = meta_model(name)
    images = [photo("chelsea.jpg"), photo("camera-gray.png"), image("coffee.jpg", 1920, 1080),
              image("chelsea.jpg", 300, 451), image("random", 17, 9)]
    cfgs = [data_config(model), data_config(model, squash=True), data_config(model, img_size=(224, 224))]
    for cfg in cfgs:
        assert_same_as_timm(cfg, images)
        assert torch.equal(normalize_u8_batch(torch.from_numpy(Plan.from_config(cfg).to_array(images[0]))[None],
                                              Plan.from_config(cfg))[0], eval_transform(cfg)(images[0]))


def test_openvla_squash():
    cfg = data_config(meta_model("vit_large_patch14_reg4_dinov2.lvd142m"), img_size=(224, 224), squash=True)
    plan = Plan.from_config(cfg)
    assert (plan.mode, plan.crop_pct, plan.size) == ("squash", 1.0, (224, 224))
    g = plan.geometry((300, 451))
    assert (g.resized, g.crop) == ((224, 224), (0, 0))
    assert_same_as_timm(cfg, [photo("chelsea.jpg"), image("random", 17, 9)])


@pytest.mark.parametrize("cfg,why", [
    (cfg_of(interpolation="random"), "interpolation"),
    (cfg_of(use_prefetcher=True), "use_prefetcher"),
    (cfg_of(norm=dict(mean=(0.5,), std=(0.5,))), "3-channel"),
])
def test_not_exact_is_refused(cfg, why):
    with pytest.raises(NotExact, match=why):
        Plan.from_config(cfg)


# ---- normalisation, bit for bit ------------------------------------------------------------------------------

@pytest.mark.parametrize("norm", [IMAGENET, CLIP, dict(mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5))])
def test_normalize_is_bit_identical_to_timm(norm):
    cfg = cfg_of((3, 64, 48), "bicubic", 0.875, "border", norm=norm)
    plan, tf = Plan.from_config(cfg), eval_transform(cfg)
    images = [photo("chelsea.jpg"), photo("horse-rgba.png"), image("random", 70, 90), image("coffee.jpg", 17, 9)]
    want = torch.stack([tf(img) for img in images])  # timm's whole transform, (B, 3, H, W) float32
    u8 = np.stack([plan.to_array(img) for img in images])  # (B, H, W, 3)
    got = normalize_u8_batch(torch.from_numpy(u8), plan)
    assert got.dtype == torch.float32 and got.shape == want.shape and torch.equal(got, want)
    assert torch.equal(normalize_u8_chw(torch.from_numpy(u8).permute(0, 3, 1, 2), plan), want)
    assert all(np.array_equal(plan.normalize_numpy(a), w.numpy()) for a, w in zip(u8, want))
    # the lookup table other devices use (CPU computes): the same values, bit for bit
    lut = normalize_lut(plan, "cpu")
    chw = torch.from_numpy(u8).permute(0, 3, 1, 2).long()
    assert torch.equal(torch.stack([lut[c][chw[:, c]] for c in range(3)], dim=1), want)


def test_which_op_order_is_torchvisions():
    """Every byte value in every channel: divide by 255, then subtract the mean, then divide by the std (each a
    float32 op) is ToTensor + Normalize on CPU; a reciprocal or a folded mean/std is not."""
    plan = Plan.from_config(cfg_of(norm=CLIP))
    x = torch.arange(256, dtype=torch.uint8).view(1, 1, 256, 1).expand(1, 1, 256, 3)  # (B, H, W, 3)
    want = normalize_u8_batch(x, plan)
    mean, std = torch.tensor(plan.mean).view(3, 1, 1), torch.tensor(plan.std).view(3, 1, 1)
    f = x.permute(0, 3, 1, 2).float()
    assert torch.equal(f.div(255).sub(mean).div(std), want)
    assert not torch.equal(f.mul(1 / 255).sub(mean).div(std), want)  # what CUDA does for .div(255)
    assert not torch.equal(f.sub(mean * 255).div(std * 255), want)


# ---- geometry ---------------------------------------------------------------------------------------------------

def coordinate_image(h: int, w: int) -> Image.Image:
    """Each pixel stores its own (x, y): R = x % 256, B = y % 256, G = 1 + x // 256 + 16 * (y // 256)."""
    y, x = np.mgrid[0:h, 0:w]
    return Image.fromarray(np.stack([x % 256, 1 + x // 256 + 16 * (y // 256), y % 256], -1).astype(np.uint8))


@pytest.mark.parametrize("crop_mode", ["center", "squash", "border"])
def test_geometry_follows_the_pixels(crop_mode):
    """With nearest resampling each model-input pixel holds the original pixel it came from: the geometry's
    inverse must land in that pixel (ties at exact pixel edges either way) and padding must be padding."""
    for (h, w), pct, size, border in [((300, 451), 0.875, (224, 224), 0), ((451, 300), 1.15, (64, 48), 3),
                                      ((1000, 37), 1.0, (256, 320), 0), ((17, 29), 0.9, (224, 224), 2)]:
        cfg = cfg_of((3, *size), "nearest", pct, crop_mode, crop_border_pixels=border)
        plan = Plan.from_config(cfg)
        out = np.asarray(plan.resize_crop(coordinate_image(h, w))).astype(int)
        assert np.array_equal(out, np.asarray(pil_stages(cfg)(coordinate_image(h, w))))
        g = plan.geometry((h, w))
        for j, i in itertools.product(range(0, size[0], 7), range(0, size[1], 5)):
            src = g.original_pixel(i, j)
            if src is None:
                assert tuple(out[j, i]) == plan.fill
                continue
            r, gr, b = out[j, i]
            x, y = r + 256 * ((gr - 1) % 16), b + 256 * ((gr - 1) // 16)
            u, v = g.to_original(i + 0.5, j + 0.5)
            assert x - 1e-9 <= u <= x + 1 + 1e-9 and y - 1e-9 <= v <= y + 1 + 1e-9
            assert abs(src[0] - x) <= 1 and abs(src[1] - y) <= 1
            back = g.input_pixel(*src)
            assert back is None or g.original_pixel(*back) == src


def test_geometry_by_hand():
    # chelsea 451x300, 224 centre crop at crop_pct 0.875: shorter side to 256 -> 384x256, crop at (80, 16)
    plan = Plan.from_config(cfg_of(crop_pct=0.875))
    g = plan.geometry((300, 451))
    assert (g.resized, g.crop, g.trim) == ((256, 384), (80, 16), (0, 0, 451, 300))
    sx, sy = 384 / 451, 256 / 300
    assert g.to_input(100, 50) == pytest.approx((100 * sx - 80, 50 * sy - 16))
    assert g.to_original(*g.to_input(123.25, 77.5)) == pytest.approx((123.25, 77.5))
    assert g.patch_box(0, 0, 16) == pytest.approx((80 / sx, 16 / sy, 96 / sx, 32 / sy))
    assert g.patch_box(13, 13, 16) == pytest.approx((288 / sx, 224 / sy, 304 / sx, 240 / sy))
    assert g.source_box() == pytest.approx((80 / sx, 16 / sy, 304 / sx, 240 / sy))
    assert g.point_to_patch(225, 150, 16) == (int((225.5 * sx - 80) // 16), int((150.5 * sy - 16) // 16))
    assert g.point_to_patch(5, 150, 16) is None  # cropped away on the left
    box = g.patch_box(*g.point_to_patch(225, 150, 16), 16)
    assert box[0] <= 225.5 <= box[2] and box[1] <= 150.5 <= box[3]


def test_geometry_of_padding():
    # border mode: 451x300 fits 256 wide -> 256x170, padded to 224x224: input rows above 27 are padding
    plan = Plan.from_config(cfg_of(crop_pct=0.875, crop_mode="border"))
    g = plan.geometry((300, 451))
    assert (g.resized, g.crop) == ((170, 256), (16, -27))
    assert g.original_pixel(100, 0) is None and g.original_pixel(100, 26) is None
    assert g.original_pixel(100, 27) is not None
    assert g.patch_box(0, 5, 16) is None  # a patch of padding only
    left, top, right, bottom = g.input_box()
    assert top < 0 and bottom > 300 and 0 < left < right < 451  # the model input extends past the image
    assert g.source_box() == pytest.approx((16 * 451 / 256, 0, 240 * 451 / 256, 300))


# ---- reduced-size JPEG decoding ---------------------------------------------------------------------------------

def test_draft_scale():
    plan = Plan.from_config(cfg_of(crop_pct=0.9))  # shorter side to 248
    assert draft_scale((1080, 1920), plan) == 4  # 248x440 fits 4 times
    assert draft_scale((3024, 4032), plan) == 8
    assert draft_scale((4032, 3024), plan) == 8
    assert draft_scale((496, 800), plan) == 2 and draft_scale((495, 800), plan) == 1  # under twice the target
    assert draft_scale((300, 451), plan) == 1 and draft_scale((17, 9), plan) == 1
    squash = Plan.from_config(cfg_of(crop_pct=1.0, crop_mode="squash"))  # 224x224 whatever the aspect
    assert draft_scale((448, 448), squash) == 2 and draft_scale((447, 2000), squash) == 1
    assert draft_scale((1800, 900), squash) == 4 and draft_scale((1792, 1792), squash) == 8


def save_jpeg(path: Path, img: Image.Image, orientation: int = 1) -> Path:
    exif = Image.Exif()
    if orientation != 1:
        exif[0x0112] = orientation
    img.save(path, quality=95, exif=exif)
    return path


def cosine(a, b) -> float:
    a, b = torch.as_tensor(a).flatten().double(), torch.as_tensor(b).flatten().double()
    return float(a @ b / (a.norm() * b.norm()))


@functools.cache
def tiny_vit():
    torch.manual_seed(0)
    return timm.create_model("vit_tiny_patch16_224", pretrained=False, embed_dim=32, depth=2, num_heads=2).eval()


def features(x: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return tiny_vit().forward_features(x)  # (B, 197, 32)


def test_fast_path_agrees_with_exact_path(tmp_path):
    cfg = data_config(tiny_vit())
    plan = Plan.from_config(cfg)
    paths = [save_jpeg(tmp_path / f"{n}{w}.jpg", photo(n).resize((w, w * photo(n).height // photo(n).width),
                                                                 Image.Resampling.BICUBIC))
             for n, w in [("chelsea.jpg", 2000), ("coffee.jpg", 2000), ("coffee.jpg", 1000)]]
    exact = [load_for_plan(p, plan) for p in paths]
    fast = [load_for_plan(p, plan, fast=True) for p in paths]
    assert [f.draft_scale for f in fast] == [4, 4, 2] and all(e.draft_scale == 1 for e in exact)
    assert all(f.original_size == e.original_size for f, e in zip(fast, exact))
    # the exact path is timm's transform
    ref = torch.stack([eval_transform(cfg)(Image.open(p).convert("RGB")) for p in paths])
    x_exact = normalize_u8_batch(torch.from_numpy(np.stack([np.asarray(e.image) for e in exact])), plan)
    x_fast = normalize_u8_batch(torch.from_numpy(np.stack([np.asarray(f.image) for f in fast])), plan)
    assert torch.equal(x_exact, ref)
    f_exact, f_fast = features(x_exact), features(x_fast)
    for i in range(len(paths)):  # measured: pixels >= 0.99985, tokens >= 0.99971
        assert cosine(x_fast[i], x_exact[i]) > 0.9995
        assert cosine(f_fast[i], f_exact[i]) > 0.999
    assert not torch.equal(x_fast, x_exact)  # the fast path did run


def test_fast_path_keeps_small_images_exact(tmp_path):
    plan = Plan.from_config(cfg_of())
    small = save_jpeg(tmp_path / "small.jpg", photo("coffee.jpg").resize((495, 800)))  # under twice 248
    png = tmp_path / "big.png"
    image("coffee.jpg", 1200, 900).save(png)
    for p in (small, png, DATA / "chelsea.jpg"):
        got = load_for_plan(p, plan, fast=True)
        assert got.draft_scale == 1
        assert np.array_equal(np.asarray(got.image), np.asarray(pil_stages(cfg_of())(open_image(p).image)))
    assert open_for_plan(png, plan, fast=True).size == (224, 224)


def test_fast_path_honours_exif_orientation(tmp_path):
    """Stored rotated/flipped with the tag that undoes it: every orientation gives the upright picture. The
    image is 2003x1331, not a multiple of the DCT scale: a flip moves the partial last block to the start, and
    forgetting that shifts the picture (mean abs difference 1.4 to 1.9 levels instead of 0.58)."""
    plan = Plan.from_config(cfg_of())
    upright = image("coffee.jpg", 2003, 1331)
    undo = {2: Image.Transpose.FLIP_LEFT_RIGHT, 3: Image.Transpose.ROTATE_180, 4: Image.Transpose.FLIP_TOP_BOTTOM,
            5: Image.Transpose.TRANSPOSE, 6: Image.Transpose.ROTATE_90, 7: Image.Transpose.TRANSVERSE,
            8: Image.Transpose.ROTATE_270}
    for o in range(1, 9):
        path = save_jpeg(tmp_path / f"o{o}.jpg", upright.transpose(undo[o]) if o > 1 else upright, o)
        exact, fast = load_for_plan(path, plan), load_for_plan(path, plan, fast=True)
        assert fast.draft_scale == 4 and fast.original_size == exact.original_size == (1331, 2003)
        assert (f"EXIF orientation {o} applied" in fast.conversions) == (o > 1)
        diff = np.abs(np.asarray(fast.image, dtype=float) - np.asarray(exact.image, dtype=float)).mean()
        assert diff < 0.9, (o, diff)


def test_fast_path_reads_mpo_first_frame(tmp_path):
    """Phones write MPO (a JPEG followed by previews): its first frame is drafted like a JPEG."""
    plan = Plan.from_config(cfg_of())
    path = tmp_path / "phone.mpo"
    big = image("coffee.jpg", 2000, 1336)
    big.save(path, format="MPO", save_all=True, append_images=[image("random", 200, 133)])
    exact, fast = load_for_plan(path, plan), load_for_plan(path, plan, fast=True)
    assert exact.conversions == ("first of 2 frames",) and fast.draft_scale == 4
    assert fast.conversions == ("first of 2 frames", "JPEG decoded at 1/4 scale (DCT scaling)")
    assert np.abs(np.asarray(fast.image, dtype=float) - np.asarray(exact.image, dtype=float)).mean() < 0.9


def test_fast_path_reports_bad_files_like_open_image(tmp_path, monkeypatch):
    plan = Plan.from_config(cfg_of())
    big = save_jpeg(tmp_path / "big.jpg", image("coffee.jpg", 2000, 1500))
    truncated = tmp_path / "truncated.jpg"
    truncated.write_bytes(big.read_bytes()[:20000])
    with pytest.raises(InputError, match="truncated"):
        load_for_plan(truncated, plan, fast=True)
    with pytest.raises(InputError, match="no such file"):
        load_for_plan(tmp_path / "nope.jpg", plan, fast=True)
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 2_000_000)  # 2000x1500 = 3.0 MP: refused, not drafted
    with pytest.raises(InputError, match="too many pixels"):
        load_for_plan(big, plan, fast=True)


# ---- the tensor path -----------------------------------------------------------------------------------------------

def to_chw(img: Image.Image) -> torch.Tensor:
    return torch.from_numpy(np.asarray(img).copy()).permute(2, 0, 1)


@pytest.mark.parametrize("interp", ["bicubic", "bilinear"])
def test_tensor_path_is_close_to_pil(interp):
    """Measured over these configs and images (CPU): at most 2 levels of 255 apart (0.035 in normalised units
    for std 0.224), mean <= 0.13 levels, cosine of normalised pixels >= 0.99994."""
    images = [photo("chelsea.jpg"), photo("camera-gray.png"), image("chelsea.jpg", 97, 131),
              image("coffee.jpg", 40, 30)]
    worst_u8, worst_mean, worst_cos = 0, 0.0, 1.0
    for crop_mode, (size, pct) in itertools.product(["center", "squash", "border"],
                                                    [((3, 224, 224), 1.0), ((3, 64, 48), 0.875)]):
        plan = Plan.from_config(cfg_of(size, interp, pct, crop_mode))
        for img in images + ([image("coffee.jpg", 1920, 1080)] if size[1] == 224 else []):
            a = to_chw(plan.resize_crop(img))
            b = resize_crop_tensor(to_chw(img), plan)
            assert b.dtype == torch.uint8 and b.shape == a.shape
            d = (a.int() - b.int()).abs()
            worst_u8, worst_mean = max(worst_u8, int(d.max())), max(worst_mean, float(d.float().mean()))
            worst_cos = min(worst_cos, cosine(normalize_u8_chw(a, plan), normalize_u8_chw(b, plan)))
    assert worst_u8 <= 3 and worst_mean <= 0.2 and worst_cos >= 0.9998, (worst_u8, worst_mean, worst_cos)


def test_tensor_path_features_match():
    plan = Plan.from_config(data_config(tiny_vit()))
    images = [photo("chelsea.jpg"), photo("coffee.jpg"), photo("horse-rgba.png"), image("coffee.jpg", 1920, 1080)]
    a = normalize_u8_batch(torch.from_numpy(np.stack([plan.to_array(i) for i in images])), plan)
    b = torch.stack([normalize_u8_chw(resize_crop_tensor(to_chw(i), plan), plan) for i in images])
    assert (a - b).abs().max() <= 4 / 255 / 0.5 + 1e-6  # measured 2 levels
    fa, fb = features(a), features(b)
    assert min(cosine(fa[i], fb[i]) for i in range(len(images))) > 0.99999  # measured 0.9999999


def test_tensor_path_batch_and_refusals():
    plan = Plan.from_config(cfg_of((3, 64, 48), "bicubic", 0.875, "border"))
    imgs = [image("coffee.jpg", 120, 90), image("random", 120, 90)]
    batch = resize_crop_tensor(torch.stack([to_chw(i) for i in imgs]), plan)
    assert batch.shape == (2, 3, 64, 48)
    assert all(torch.equal(batch[k], resize_crop_tensor(to_chw(i), plan)) for k, i in enumerate(imgs))
    assert tuple(batch[0, :, 0, 0].tolist()) == plan.fill  # border padding colour
    with pytest.raises(NotExact, match="lanczos"):
        resize_crop_tensor(to_chw(imgs[0]), Plan.from_config(cfg_of(interpolation="lanczos")))


def test_orient_is_pils_exif_transpose():
    img = image("random", 7, 5)
    methods = {2: Image.Transpose.FLIP_LEFT_RIGHT, 3: Image.Transpose.ROTATE_180, 4: Image.Transpose.FLIP_TOP_BOTTOM,
               5: Image.Transpose.TRANSPOSE, 6: Image.Transpose.ROTATE_270, 7: Image.Transpose.TRANSVERSE,
               8: Image.Transpose.ROTATE_90}
    assert torch.equal(orient(to_chw(img), 1), to_chw(img))
    for o, m in methods.items():
        assert torch.equal(orient(to_chw(img), o), to_chw(img.transpose(m))), o


def test_decode_jpeg_batch_on_cpu(tmp_path):
    """The CUDA path is the same code with device='cuda' (nvJPEG); here torchvision decodes with libjpeg."""
    upright = image("coffee.jpg", 64, 40)
    rotated = io.BytesIO()
    exif = Image.Exif()
    exif[0x0112] = 6
    upright.transpose(Image.Transpose.ROTATE_90).save(rotated, "JPEG", quality=95, exif=exif)
    png = io.BytesIO()
    upright.save(png, "PNG")
    cmyk = io.BytesIO()
    upright.convert("CMYK").save(cmyk, "JPEG", quality=95)
    datas = [(DATA / "chelsea.jpg").read_bytes(), rotated.getvalue(), png.getvalue(), cmyk.getvalue()]
    out = decode_jpeg_batch(datas, "cpu")
    assert [tuple(t.shape) for t in out] == [(3, 300, 451), (3, 40, 64), (3, 40, 64), (3, 40, 64)]
    assert all(t.dtype == torch.uint8 for t in out)
    assert torch.equal(out[2], to_chw(upright))  # PNG: PIL, exact
    for t, data in zip(out, datas):  # libjpeg via torchvision vs PIL's libjpeg-turbo: measured <= 0.3 levels
        assert (t.int() - to_chw(open_image_bytes(data)).int()).abs().float().mean() < 1
    calls = []
    out = decode_jpeg_batch(datas[2:3], "cpu", fallback=lambda i: calls.append(i) or upright)
    assert calls == [0] and torch.equal(out[0], to_chw(upright))
    # a picture neither decoder reads comes back as its error, in its place, worded as imaging.open_image words it
    cut = datas[0][:2000]
    out = decode_jpeg_batch([datas[0], b"not an image", cut], "cpu", names=["a.jpg", "broken.jpg", "cut.jpg"])
    assert torch.equal(out[0], decode_jpeg_batch(datas[:1], "cpu")[0])
    assert [type(e) for e in out[1:]] == [InputError, InputError]
    for e, name, data in zip(out[1:], ["broken.jpg", "cut.jpg"], [b"not an image", cut]):
        with pytest.raises(InputError) as want:
            open_image(name, data=data)
        assert (e.message, e.hint) == (want.value.message, want.value.hint)
    assert out[2].message.startswith("cut.jpg: truncated or corrupt image")


def open_image_bytes(data: bytes) -> Image.Image:
    from PIL import ImageOps

    return ImageOps.exif_transpose(Image.open(io.BytesIO(data))).convert("RGB")


# ---- no torch in the worker path ---------------------------------------------------------------------------------

def test_preprocess_imports_no_torch():
    code = ("import sys, vitcli.preprocess as p; p.Plan.from_config({'input_size': (3, 224, 224), "
            "'interpolation': 'bicubic', 'crop_pct': 0.9, 'crop_mode': 'center', 'mean': (0.5,) * 3, "
            "'std': (0.5,) * 3}).geometry((300, 451)); "
            "print(sorted(m for m in ('torch', 'torchvision', 'timm') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
