"""Token math: square, rectangular, registers, no CLS, non-divisible sizes; the `tokens` command."""

from __future__ import annotations

import math

import pytest

from conftest import check_golden
from vitcli.core.tokens import parse_pair, token_layout
from vitcli.errors import UsageError


@pytest.mark.parametrize(
    "size,patch,cls,reg,grid,seq",
    [
        ((384, 384), (16, 16), True, 0, (24, 24), 24 * 24 + 1),  # the study note's exercise 1: 577
        ((224, 224), (16, 16), True, 0, (14, 14), 197),
        ((224, 320), (16, 16), True, 0, (14, 20), 14 * 20 + 1),  # rectangular image
        ((224, 224), (16, 8), True, 0, (14, 28), 14 * 28 + 1),  # rectangular patch
        ((518, 518), (14, 14), True, 4, (37, 37), 37 * 37 + 5),  # DINOv2-reg4: 1374
        ((224, 224), (14, 14), False, 0, (16, 16), 256),  # SigLIP: no CLS
        ((224, 224), (8, 8), False, 4, (28, 28), 788),  # registers without CLS
    ],
)
def test_divisible_layouts(size, patch, cls, reg, grid, seq):
    lay = token_layout(size, patch, cls, reg)
    assert lay.grid == grid
    assert lay.num_patches == grid[0] * grid[1]
    assert lay.num_prefix_tokens == int(cls) + reg
    assert lay.seq_len == seq
    assert lay.non_divisible is None


@pytest.mark.parametrize("size,patch", [((230, 230), (16, 16)), ((225, 301), (16, 14)), ((100, 64), (32, 32))])
def test_non_divisible_pad_and_drop(size, patch):
    (h, w), (ph, pw) = size, patch
    lay = token_layout(size, patch)
    r = lay.non_divisible
    assert r is not None
    assert r.remainder == (h % ph, w % pw)
    pad = (math.ceil(h / ph), math.ceil(w / pw))
    drop = (h // ph, w // pw)
    assert r.pad_grid == pad and lay.grid == pad  # the headline numbers use padding: every pixel is seen
    assert r.pad_pixels == pad[0] * ph * pad[1] * pw - h * w
    assert r.drop_grid == drop
    assert r.drop_pixels == h * w - drop[0] * ph * drop[1] * pw
    assert lay.seq_len == pad[0] * pad[1] + 1


def test_230_over_16_pixel_counts():
    r = token_layout((230, 230), (16, 16)).non_divisible
    assert (r.pad_grid, r.pad_pixels) == ((15, 15), 240 * 240 - 230 * 230)  # 4,700
    assert (r.drop_grid, r.drop_pixels) == ((14, 14), 230 * 230 - 224 * 224)  # 2,724


@pytest.mark.parametrize("text,pair", [("224", (224, 224)), ("224x320", (224, 320)), (" 16X8 ", (16, 8)),
                                       (32, (32, 32)), ("518,518", (518, 518))])
def test_parse_pair(text, pair):
    assert parse_pair(text, "--size") == pair


@pytest.mark.parametrize("text", ["0", "-3", "abc", "12x", "1.5", "0x16", ""])
def test_parse_pair_rejects(text):
    with pytest.raises(UsageError) as e:
        parse_pair(text, "--size")
    assert "--size" in e.value.message and e.value.exit_code == 2


def test_cli_json_keys(cli):
    r = cli("tokens", "--size", "384", "--patch", "16", "--json")
    assert r.exit_code == 0, r.stderr
    d = r.json()
    assert (d["image_size"], d["patch_size"], d["grid"]) == ([384, 384], [16, 16], [24, 24])
    assert (d["num_patches"], d["num_prefix_tokens"], d["seq_len"]) == (576, 1, 577)


def test_cli_several_patches_one_table(cli):
    r = cli("tokens", "--size", "224", "--patch", "8", "--patch", "16", "--patch", "32", "--json")
    assert [row["seq_len"] for row in r.json()] == [785, 197, 50]


def test_cli_model_dinov2_reg4(cli):
    r = cli("tokens", "--model", "vit_large_patch14_reg4_dinov2.lvd142m", "--json")
    d = r.json()
    assert (d["image_size"], d["grid"], d["num_prefix_tokens"], d["seq_len"]) == ([518, 518], [37, 37], 5, 1374)
    r = cli("tokens", "--model", "vit_large_patch14_reg4_dinov2", "--size", "224", "--json")
    assert (r.json()["grid"], r.json()["seq_len"]) == ([16, 16], 256 + 5)


def test_cli_model_outside_table_reads_timm(cli):
    import timm
    import torch

    # a timm ViT that is not in vitcli's table: read from timm itself, compared with timm's own attributes
    name = "vit_medium_patch16_reg4_gap_256"
    with torch.device("meta"):
        model = timm.create_model(name)
    r = cli("tokens", "--model", name, "--json")
    assert r.exit_code == 0, r.stderr
    d = r.json()
    assert d["image_size"] == list(model.patch_embed.img_size)
    assert d["grid"] == list(model.patch_embed.grid_size)
    assert d["num_prefix_tokens"] == model.num_prefix_tokens == 4  # 4 registers, no CLS
    assert d["seq_len"] == model.patch_embed.num_patches + model.num_prefix_tokens
    # a different timm class is refused in one clear line
    r = cli("tokens", "--model", "vit_base_patch16_rope_reg1_gap_256", "--json")
    assert r.exit_code == 1 and "not a timm VisionTransformer" in r.stderr and "Traceback" not in r.stderr


def test_cli_non_divisible_json(cli):
    d = cli("tokens", "--size", "230", "--patch", "16", "--json").json()
    assert d["divisible"] is False
    assert d["non_divisible"]["pad"] == {"grid": [15, 15], "num_patches": 225, "padded_pixels": 4700}
    assert d["non_divisible"]["drop"] == {"grid": [14, 14], "num_patches": 196, "dropped_pixels": 2724}


@pytest.mark.parametrize(
    "args,option",
    [
        (["--size", "0", "--patch", "16"], "--size"),
        (["--size", "-224", "--patch", "16"], "--size"),
        (["--size", "big", "--patch", "16"], "--size"),
        (["--size", "224", "--patch", "0"], "--patch"),
        (["--size", "16", "--patch", "32"], "--patch"),
        (["--size", "224", "--patch", "16", "--registers", "-1"], "--registers"),
        (["--size", "224", "--patch", "16", "--registers", "two"], "--registers"),
        (["--size", "224"], "--patch"),
        (["--size", "224", "--pach", "16"], "--pach"),
    ],
)
def test_usage_errors_exit_2_one_line(cli, args, option):
    r = cli("tokens", *args)
    assert r.exit_code == 2
    assert r.stdout == ""
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: ") and option in lines[0]
    assert "Traceback" not in r.stderr


def test_golden_table(cli):
    r = cli("tokens", "--size", "384", "--size", "230", "--patch", "16", "--registers", "4")
    assert r.exit_code == 0
    check_golden("tokens.txt", r.stdout)
