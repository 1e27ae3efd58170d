"""Fused multi-encoder features and the OpenVLA preset."""

from __future__ import annotations

import json

import numpy as np
import pytest
import timm
import torch

from conftest import DATA, make_local_dir
from vitcli.imaging import open_image

IMAGES = [DATA / "chelsea.jpg", DATA / "camera-gray.png", DATA / "horse-rgba.png"]


@pytest.fixture(scope="module")
def other_dir(tmp_path_factory):
    """A second encoder with its own preprocessing (mean, std, interpolation, crop) and no CLS."""
    return make_local_dir(tmp_path_factory.mktemp("other"), seed=5, num_classes=0, class_token=False,
                          global_pool="avg", embed_dim=48, num_heads=3, depth=3,
                          cfg={"mean": (0.3, 0.4, 0.5), "std": (0.2, 0.25, 0.3), "interpolation": "bilinear",
                               "crop_pct": 0.8})


def timm_layer_patches(model_dir, layer, paths, squash=False):
    model = timm.create_model(f"local-dir:{model_dir}", pretrained=True).eval()
    args = {"crop_mode": "squash", "crop_pct": 1.0} if squash else {}
    t = timm.data.create_transform(**timm.data.resolve_data_config(args, model=model))
    x = torch.stack([t(open_image(p).image) for p in paths])
    with torch.no_grad():
        (out,) = model.forward_intermediates(x, indices=[layer % len(model.blocks)], output_fmt="NLC",
                                             intermediates_only=True)
    return out.numpy()  # (B, N, D): prefix tokens removed by timm


@pytest.mark.parametrize("squash", [False, True])
def test_fused_channels_each_model_its_own_preprocessing(cli, tmp_path, tiny_reg_dir, other_dir, squash):
    out = tmp_path / "fused.npy"
    r = cli("features", *IMAGES, "--model", f"local-dir:{tiny_reg_dir}", "--model", f"local-dir:{other_dir}",
            "--mode", "patch", "--layer", "-2", "-o", out, "--device", "cpu", *(["--squash"] if squash else []))
    assert r.exit_code == 0, r.stderr
    got = np.load(out)
    assert got.shape == (3, 16, 32 + 48)
    a = timm_layer_patches(tiny_reg_dir, -2, IMAGES, squash)  # CLS + 4 registers dropped
    b = timm_layer_patches(other_dir, -2, IMAGES, squash)  # no prefix
    assert np.allclose(got[..., :32], a, atol=1e-5) and np.allclose(got[..., 32:], b, atol=1e-5)
    side = json.loads(out.with_suffix(".json").read_text())
    assert [m["channels"] for m in side["models"]] == [[0, 32], [32, 80]]
    assert [m["layers"] for m in side["models"]] == [[0], [1]]  # -2 of 2 blocks, -2 of 3 blocks
    assert [m["prefix_tokens"] for m in side["models"]] == [{"cls": 1, "registers": 4}, {"cls": 0, "registers": 0}]
    cfgs = [m["data_config"] for m in side["models"]]
    assert cfgs[0]["mean"] == pytest.approx([0.5, 0.5, 0.5]) and cfgs[1]["mean"] == pytest.approx([0.3, 0.4, 0.5])
    assert cfgs[1]["interpolation"] == "bilinear"
    if squash:
        assert {c["crop_mode"] for c in cfgs} == {"squash"} and {c["crop_pct"] for c in cfgs} == {1.0}
    else:
        assert cfgs[1]["crop_pct"] == 0.8


def test_grid_mismatch_is_a_clean_error(cli, tmp_path, tiny_dir):
    coarse = make_local_dir(tmp_path / "coarse", seed=6, num_classes=0, patch_size=16)  # 2x2 grid at 32 px
    r = cli("features", IMAGES[0], "--model", f"local-dir:{tiny_dir}", "--model", f"local-dir:{coarse}", "-o",
            tmp_path / "f.npy")
    assert r.exit_code == 2 and len(r.stderr.strip().splitlines()) == 1
    assert "4x4" in r.stderr and "2x2" in r.stderr and "--size" in r.stderr
    assert not (tmp_path / "f.npy").exists()


def test_preset_real_architectures_on_meta():
    """The two real OpenVLA encoders, built on the meta device (no weights): layout, preprocessing, cost."""
    from torch.utils.flop_counter import FlopCounterMode

    from vitcli.backend.arch import unfuse_attention
    from vitcli.backend.features import Extractor, fused_row_shape
    from vitcli.backend.models import load_model
    from vitcli.core.presets import budget, get_preset
    from vitcli.requests import FeatureRequest, ModelRequest
    from vitcli.specs import resolve_spec

    p = get_preset("openvla")
    models = [load_model(ModelRequest(name=m, pretrained=False, device="meta", squash=True), img_size=p.size)
              for m in p.models]
    extractors = [Extractor(m, FeatureRequest(mode=p.mode, layers=(p.layer,), stop_early=True)) for m in models]
    assert [e.layers for e in extractors] == [(22,), (25,)]  # second-to-last of 24 and 27 blocks
    assert fused_row_shape(extractors) == (256, 2176)
    for e, dim in zip(extractors, (1024, 1152)):
        assert tuple(e(torch.empty(1, 3, 224, 224, device="meta")).shape) == (1, 256, dim)
    dino, siglip = (m.info.data_config for m in models)
    assert dino["input_size"] == siglip["input_size"] == (3, 224, 224)  # not DINOv2's pretrained 518
    assert dino["crop_mode"] == siglip["crop_mode"] == "squash" and dino["crop_pct"] == siglip["crop_pct"] == 1.0
    assert dino["mean"] == pytest.approx((0.485, 0.456, 0.406)) and siglip["mean"] == pytest.approx((0.5, 0.5, 0.5))

    b = budget(p, [resolve_spec(m, p.size) for m in p.models])
    assert (b["lm_tokens"], b["channels"]) == (256, 2176)
    assert b["bytes_per_frame"] == {"float32": 256 * 2176 * 4, "bfloat16": 256 * 2176 * 2}
    # the analytic budget equals torch's count of the real calls: forward, and forward_intermediates(stop_early)
    full = blocks = early = 0
    for m, e in zip(models, extractors):
        module = m.module.requires_grad_(False)
        unfuse_attention(module)
        x = torch.empty(1, 3, 224, 224, device="meta")
        with FlopCounterMode(display=False) as fc, torch.no_grad():
            module(x)
        full += fc.get_total_flops()
        with FlopCounterMode(display=False) as fc, torch.no_grad():
            module.forward_features(x)
        blocks += fc.get_total_flops()
        with FlopCounterMode(display=False) as fc, torch.no_grad():
            e(x)
        early += fc.get_total_flops()
    assert (b["flops_stop_early"], b["flops_all_blocks"], b["flops_heads"]) == (early, blocks, full - blocks)
    assert round(b["macs_stop_early"] / 1e7) == 18433 and round(b["macs_all_blocks"] / 1e7) == 19181
    assert round(b["macs_heads"] / 1e7) == 69  # SigLIP's attention pooling, which OpenVLA never runs


def test_preset_cli_json(cli):
    """`tokens --preset openvla`: the VLM row (any frame squashed to 224: 256 visual tokens), and OpenVLA's two
    encoders (261 and 256 tokens, prefix dropped) with the fused per-frame budget."""
    d = cli("tokens", "--preset", "openvla", "--json").json()
    fused = d["fused"]
    assert [e["seq_len"] for e in fused["encoders"]] == [261, 256] and fused["budget"]["lm_tokens"] == 256
    assert [e["model"] for e in fused["encoders"]] == ["vit_large_patch14_reg4_dinov2.lvd142m",
                                                        "vit_so400m_patch14_siglip_224.webli"]
    assert fused["budget"]["channels"] == 2176 and fused["budget"]["bytes_per_frame"]["bfloat16"] == 256 * 2176 * 2
    (row,) = d["rows"]
    assert (row["image"], row["resized"], row["visual_tokens"], row["special_tokens"]) == ([224, 224], [224, 224],
                                                                                          256, 0)
    assert row["encoder_macs"] == fused["budget"]["macs_stop_early"]
    frame = cli("tokens", "--preset", "openvla", "--size", "480x640", "--json").json()["rows"][0]
    assert (frame["image"], frame["resized"], frame["visual_tokens"]) == ([480, 640], [224, 224], 256)
    text = cli("tokens", "--preset", "openvla").stdout
    assert "1024 + 1152 = 2,176 channels: 2.1 MiB per frame in float32" in text and "= 261 tokens" in text
    c = cli("cost", "--preset", "openvla", "--json").json()
    assert [r["model"] for r in c["rows"]] == ["vit_large_patch14_reg4_dinov2.lvd142m",
                                                "vit_so400m_patch14_siglip_224.webli"]
    assert sum(r["macs"] for r in c["rows"]) == c["preset"]["macs_all_blocks"] + c["preset"]["macs_heads"]


@pytest.mark.parametrize("args", [["tokens", "--preset", "openvla", "--patch", "14"],
                                  ["tokens", "--preset", "openvla", "--model", "vit_base_patch16_224"],
                                  ["cost", "--preset", "openvla", "--variant", "B/16"],
                                  ["features", "x.jpg", "-o", "f.npy", "--preset", "openvla", "--layer", "-1"],
                                  ["tokens", "--preset", "openvlaa"]])
def test_preset_conflicts(cli, args):
    r = cli(*args)
    assert r.exit_code == 2 and "--preset" in r.stderr
