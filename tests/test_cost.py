"""Analytic cost against torch's FlopCounterMode on timm's real models, and the `cost` command."""

from __future__ import annotations

import pytest
import timm
import torch
from torch.utils.flop_counter import FlopCounterMode

from conftest import check_golden
from vitcli.backend.arch import measure_flops, spec_from_model
from vitcli.specs import resolve_spec
from vitcli.core.cost import cost_report, macs_breakdown

PAIRS = [
    ("vit_tiny_patch16_224", (224, 224)),
    ("vit_base_patch16_224", (224, 224)),
    ("vit_base_patch16_224", (384, 384)),  # position embedding resampled by timm
    ("vit_small_patch16_224", (224, 320)),  # rectangular
    ("vit_base_patch8_224", (224, 224)),
    ("vit_small_patch14_dinov2", (224, 224)),  # DINOv2 at 224 instead of its native 518
    ("vit_large_patch14_reg4_dinov2", (224, 224)),  # registers
    ("vit_giant_patch14_dinov2", (518, 518)),  # gated (SwiGLU) MLP
    ("vit_base_patch16_siglip_224", (224, 224)),  # no CLS, attention-pool head
    ("vit_so400m_patch14_siglip_224", (224, 224)),
    ("vit_base_patch16_clip_224", (224, 224)),  # pre-norm, no patch bias
    ("deit_small_patch16_224", (384, 384)),
]


@pytest.mark.parametrize("name,size", PAIRS, ids=[f"{n}@{s[0]}x{s[1]}" for n, s in PAIRS])
def test_analytic_equals_flop_counter(name, size):
    report = cost_report(resolve_spec(name, size))
    measured = measure_flops(name, size)
    assert abs(measured["flops"] / report.flops - 1) < 1e-3  # the bar: 0.1%
    assert measured["flops"] == report.flops  # in fact exact
    assert measured["params"] == report.params
    ops = measured["flops_by_op"]
    assert ops["convolution"] == 2 * report.breakdown["patch_embed"]
    assert ops["bmm"] == 2 * report.breakdown["attn_matmul"] + (  # SigLIP's pool adds its own QKᵀ, AV
        2 * 2 * report.layout.seq_len * report.embed_dim if "siglip" in name else 0)


def test_meta_count_equals_cpu_count():
    """The meta-device count `--measure` uses equals a real CPU forward of a tiny model with random weights."""
    kw = dict(img_size=32, patch_size=8, embed_dim=32, depth=2, num_heads=2, num_classes=10)
    torch.manual_seed(0)
    model = timm.create_model("vit_tiny_patch16_224", pretrained=False, **kw).eval()
    for m in model.modules():
        if hasattr(m, "fused_attn"):
            m.fused_attn = False
    with FlopCounterMode(display=False) as fc, torch.no_grad():
        model(torch.randn(1, 3, 32, 32))
    on_meta = measure_flops("vit_tiny_patch16_224", (32, 32), num_classes=10, patch_size=8, embed_dim=32, depth=2,
                            num_heads=2)
    assert on_meta["flops"] == fc.get_total_flops() > 0
    assert on_meta["flops_by_op"] == {str(k).removeprefix("aten."): v for k, v in fc.get_flop_counts()["Global"].items()}
    spec = spec_from_model(model, "vit_tiny_patch16_224")
    assert fc.get_total_flops() == cost_report(spec).flops


def test_vit_b16_formula_written_out():
    """ViT-B/16 at 224: N=196, T=197, D=768, M=3072, 12 blocks, 1000 classes."""
    N, T, D, M, L, C = 196, 197, 768, 3072, 12, 1000
    expected = {
        "patch_embed": N * D * 3 * 16 * 16,
        "attn_proj": L * (T * D * 3 * D + T * D * D),
        "attn_matmul": L * 2 * T * T * D,
        "mlp": L * 2 * T * D * M,
        "head": D * C,
    }
    spec = resolve_spec("vit_base_patch16_224")
    assert macs_breakdown(spec, spec.layout()) == expected
    assert sum(expected.values()) == 17_563_828_224  # 17.56 GMACs; 35.13 GFLOPs


def test_patch_16_to_8_multiplies_tokens_by_4_and_attention_by_16():
    p16 = cost_report(resolve_spec("vit_base_patch16_224"))
    p8 = cost_report(resolve_spec("vit_base_patch8_224"))
    assert p8.layout.num_patches == 4 * p16.layout.num_patches
    assert p8.breakdown["attn_matmul"] / p16.breakdown["attn_matmul"] == pytest.approx((785 / 197) ** 2)
    assert 15.8 < p8.breakdown["attn_matmul"] / p16.breakdown["attn_matmul"] < 16
    assert p8.breakdown["mlp"] / p16.breakdown["mlp"] == pytest.approx(785 / 197)


def test_cost_cli_json(cli):
    r = cli("cost", "--variant", "B/16", "--size", "224", "--size", "384", "--json")
    assert r.exit_code == 0, r.stderr
    rows = r.json()
    assert [row["image_size"] for row in rows] == [[224, 224], [384, 384]]
    first = rows[0]
    for key in ("model", "image_size", "seq_len", "params", "macs", "flops", "breakdown"):
        assert key in first
    assert (first["model"], first["seq_len"], first["params"]) == ("vit_base_patch16_224", 197, 86_567_656)
    assert first["flops"] == 2 * first["macs"] == 35_127_656_448
    assert sum(first["breakdown"].values()) == first["macs"]
    assert first["weight_bytes"]["bfloat16"] == 2 * 86_567_656
    assert first["activation_bytes"]["attention_matrix"] == 12 * 197 * 197 * 4


def test_cost_measure_cli(cli):
    rows = cli("cost", "--model", "vit_small_patch14_dinov2.lvd142m", "--size", "224", "--measure", "--json").json()
    assert rows[0]["measured"]["flops"] == rows[0]["flops"]
    assert rows[0]["measured"]["diff"] == 0


def test_cost_errors(cli):
    r = cli("cost")
    assert r.exit_code == 2 and "--model" in r.stderr
    r = cli("cost", "--variant", "B/15")
    assert r.exit_code == 2 and "--variant" in r.stderr
    r = cli("cost", "--variant", "B/16", "--size", "230")
    assert r.exit_code == 2 and "multiple" in r.stderr and len(r.stderr.splitlines()) == 1
    r = cli("cost", "--model", "vit_bsae_patch16_224")
    assert r.exit_code == 1 and "vit_base_patch16_224" in r.stderr  # suggestion


def test_cost_golden(cli):
    r = cli("cost", "--variant", "B/16", "--variant", "B/8", "--measure")
    assert r.exit_code == 0, r.stderr
    check_golden("cost.txt", r.stdout)
