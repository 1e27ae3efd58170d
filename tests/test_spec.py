"""The variants table against timm's real models (built on the meta device: no weights, no memory)."""

from __future__ import annotations

import pytest
import timm
import torch

from conftest import check_golden
from vitcli.backend.arch import spec_from_model
from vitcli.core.spec import VARIANTS, known_spec, variant_spec

FIELDS = ("img_size", "patch_size", "embed_dim", "depth", "num_heads", "mlp_dim", "in_chans", "class_token",
          "reg_tokens", "no_embed_class", "patch_bias", "qkv_bias", "qk_norm", "layer_scale", "pre_norm",
          "mlp_gated", "global_pool", "num_classes", "default_tag")


def _meta(name, **kw):
    with torch.device("meta"):
        return timm.create_model(name, pretrained=False, **kw)


@pytest.mark.parametrize("spec", VARIANTS, ids=[v.name for v in VARIANTS])
def test_every_variant_equals_timm(spec):
    model = _meta(spec.timm_name)
    assert spec.params == sum(p.numel() for p in model.parameters())
    assert spec.params_no_head == sum(p.numel() for p in _meta(spec.timm_name, num_classes=0).parameters())
    read = spec_from_model(model, spec.timm_name)  # every field as timm built it
    assert {f: getattr(spec, f) for f in FIELDS} == {f: getattr(read, f) for f in FIELDS}
    assert model.pretrained_cfg["tag"] == spec.default_tag  # timm's default tag for the arch
    for tag in spec.other_tags:  # tags the table answers for without timm must build the same model
        other = _meta(f"{spec.timm_name}.{tag}")
        assert sum(p.numel() for p in other.parameters()) == spec.params
        assert known_spec(f"{spec.timm_name}.{tag}") is spec
    assert spec.layout().seq_len == model.patch_embed.num_patches + model.num_prefix_tokens


def test_issue_numbers():
    assert variant_spec("B/16").params == 86_567_656
    assert variant_spec("L/16").params == 304_326_632
    h14 = variant_spec("H/14")
    assert h14.params == 630_764_800 and h14.num_classes == 0
    assert h14.with_classes(1000).params == 632_045_800


def test_params_at_other_size_match_timm():
    # the position embedding grows with the grid: ViT-B/16 at 384 has 576 + 1 position rows
    spec = known_spec("vit_base_patch16_224").at_size((384, 384))
    assert spec.params == sum(p.numel() for p in _meta("vit_base_patch16_224", img_size=384).parameters())
    assert spec.params == 86_567_656 + (577 - 197) * 768


@pytest.mark.parametrize("name,timm_name", [
    ("B/16", "vit_base_patch16_224"), ("vit-b/16", "vit_base_patch16_224"), ("ViT-L/14", "vit_large_patch14_224"),
    ("DINOv2-L/14-reg4", "vit_large_patch14_reg4_dinov2"), ("siglip-so400m/14", "vit_so400m_patch14_siglip_224"),
    ("DeiT-B/16", "deit_base_patch16_224"), ("CLIP-B/16", "vit_base_patch16_clip_224")])
def test_variant_lookup(name, timm_name):
    assert variant_spec(name).timm_name == timm_name  # "B/16" is ViT-B/16: the first of several B/16s wins


def test_variants_cli_json(cli):
    rows = cli("variants", "--json").json()
    assert len(rows) == len(VARIANTS)
    b16 = next(r for r in rows if r["name"] == "ViT-B/16")
    assert {k: b16[k] for k in ("timm_name", "patch_size", "embed_dim", "depth", "num_heads", "mlp_dim", "params")} == {
        "timm_name": "vit_base_patch16_224", "patch_size": [16, 16], "embed_dim": 768, "depth": 12,
        "num_heads": 12, "mlp_dim": 3072, "params": 86_567_656}
    assert [r["name"] for r in cli("variants", "--family", "siglip", "--json").json()] == [
        "SigLIP-B/16", "SigLIP-So400m/14"]


def test_variants_bad_family(cli):
    r = cli("variants", "--family", "resnet")
    assert r.exit_code == 2 and "--family" in r.stderr


def test_variants_golden(cli):
    r = cli("variants")
    assert r.exit_code == 0
    check_golden("variants.txt", r.stdout)
