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


# ---- `tokens --preset`: VLM/VLA visual-token budgets through the CLI (core/vlm.py is proven against transformers
# in tests/test_vlm_tokens.py; here the CLI must carry its numbers unchanged) ------------------------------------

CLI_SIZES = [(224, 224), (1080, 1920), (3024, 4032), (333, 1001)]


def _sizes(sizes):
    return [a for s in sizes for a in ("--size", f"{s[0]}x{s[1]}")]


def test_preset_choices_are_core_vlm_presets():
    from vitcli.choices import TokensPreset
    from vitcli.core.vlm import PRESETS

    assert [c.value for c in TokensPreset] == list(PRESETS)


@pytest.mark.parametrize("name", ["llava-1.5", "llava-next", "llava-onevision", "qwen2-vl", "qwen2.5-vl", "qwen3-vl",
                                  "internvl", "idefics3", "smolvlm", "gemma3", "paligemma-224", "paligemma-448",
                                  "paligemma-896", "pi0", "smolvla", "openvla"])
def test_every_preset_cli_equals_core(cli, name):
    """One row per --size, each equal (every field) to core.vlm.image_tokens; no --size: the native size."""
    from vitcli.core.vlm import PRESETS, image_tokens

    d = cli("tokens", "--preset", name, *_sizes(CLI_SIZES), "--json").json()
    assert d["rows"] == [image_tokens(name, s).to_dict() for s in CLI_SIZES]
    assert d["preset"]["name"] == name and d["preset"]["model"] == PRESETS[name].model
    assert d["size_source"] == "--size" and d["control"] is None
    assert all(k not in d["rows"][0] for k in ("tokens_per_step", "cameras"))
    native = cli("tokens", "--preset", name.upper(), "--json").json()  # case-insensitive
    assert native["rows"] == [image_tokens(name, PRESETS[name].native).to_dict()]
    assert native["size_source"] == "native" and native["preset"]["native"] == list(PRESETS[name].native)
    assert native["fused"] is None if name != "openvla" else native["fused"]["budget"]["channels"] == 2176


@pytest.mark.parametrize("args,options", [
    (["--preset", "qwen2-vl", "--max-pixels", "1003520", "--min-pixels", "6272"],
     {"max_pixels": 1003520, "min_pixels": 6272}),
    (["--preset", "qwen3-vl", "--max-pixels", "262144"], {"max_pixels": 262144}),
    (["--preset", "internvl", "--max-tiles", "6", "--min-tiles", "2"], {"max_tiles": 6, "min_tiles": 2}),
    (["--preset", "idefics3", "--longest-edge", "1000"], {"longest_edge": 1000}),
    (["--preset", "smolvlm", "--no-image-splitting"], {"image_splitting": False}),
    (["--preset", "gemma3", "--pan-and-scan"], {"pan_and_scan": True}),
    (["--preset", "gemma3", "--pan-and-scan", "--pan-and-scan-min-crop-size", "300", "--pan-and-scan-max-crops", "3",
      "--pan-and-scan-min-ratio", "1.5"],
     {"pan_and_scan": True, "pan_and_scan_min_crop_size": 300, "pan_and_scan_max_crops": 3,
      "pan_and_scan_min_ratio": 1.5}),
    (["--preset", "llava-onevision", "--anyres-max", "4"], {"anyres_max": 4}),
    (["--preset", "llava-onevision", "--multi-image"], {"multi_image": True}),
])
def test_preset_options_reach_core(cli, args, options):
    from vitcli.core.vlm import image_tokens

    sizes = [(1080, 1920), (3024, 4032), (500, 2000)]
    d = cli("tokens", *args, *_sizes(sizes), "--json").json()
    want = [image_tokens(args[1], s, **options).to_dict() for s in sizes]
    assert d["rows"] == want and all(r["options"][k] == v for r in d["rows"] for k, v in options.items())
    assert want != [image_tokens(args[1], s).to_dict() for s in sizes]  # the option changes something


def test_control_arithmetic_pi0_json_and_cost(cli):
    """pi0 sees 3 cameras by default; per step = cameras x frames x (visual + special) tokens, per second x hz; the
    encoder MACs per image equal `vitcli cost`'s SigLIP So400m/14 at 224 without its attention-pool head."""
    d = cli("tokens", "--preset", "pi0", "--size", "480x640", "--size", "224", "--hz", "50", "--json").json()
    c = cli("cost", "--variant", "SigLIP-So400m/14", "--size", "224", "--json").json()[0]
    per_image = c["macs"] - c["breakdown"]["head"]
    assert d["control"]["cameras"] == 3 and d["control"]["frames"] == 1 and d["control"]["hz"] == 50.0
    assert d["control"]["encoder"]["blocks_run"] == 27
    for r in d["rows"]:
        assert r["encoder_macs"] == per_image == 109_484_310_528
        assert (r["cameras"], r["frames"], r["hz"]) == (3, 1, 50.0)
        assert r["tokens_per_step"] == 3 * 256 == 768 and r["tokens_per_second"] == 768 * 50
        assert r["encoder_macs_per_step"] == 3 * per_image and r["encoder_flops_per_step"] == 6 * per_image
        assert r["encoder_macs_per_second"] == 150 * per_image and r["encoder_flops_per_second"] == 300 * per_image


def test_control_arithmetic_frames_cameras_special_tokens(cli):
    from vitcli.core.vlm import image_tokens

    d = cli("tokens", "--preset", "internvl", "--size", "1080x1920", "--cameras", "2", "--frames", "3", "--hz", "10",
            "--json").json()
    r, one = d["rows"][0], image_tokens("internvl", (1080, 1920))
    assert (one.visual_tokens, one.special_tokens) == (2304, 2)
    assert r["visual_tokens_per_step"] == 2 * 3 * 2304 and r["special_tokens_per_step"] == 2 * 3 * 2
    assert r["tokens_per_step"] == 6 * 2306 and r["tokens_per_second"] == 6 * 2306 * 10
    assert r["encoder_macs_per_step"] == 6 * one.encoder_macs
    # no --hz: the per-second numbers are null, the fields are there
    r = cli("tokens", "--preset", "smolvla", "--frames", "2", "--json").json()["rows"][0]
    assert (r["cameras"], r["frames"], r["hz"], r["tokens_per_step"], r["tokens_per_second"]) == (1, 2, None, 128, None)
    # an encoder vitcli's cost model lacks: null, not 0
    r = cli("tokens", "--preset", "qwen2-vl", "--size", "1080x1920", "--hz", "5", "--json").json()["rows"][0]
    assert r["encoder_macs_per_step"] is None and r["tokens_per_second"] == (2691 + 2) * 5


def test_control_openvla_macs_equal_cost_preset(cli):
    d = cli("tokens", "--preset", "openvla", "--size", "480x640", "--hz", "5", "--cameras", "2", "--json").json()
    budget = cli("cost", "--preset", "openvla", "--json").json()["preset"]
    r = d["rows"][0]
    assert r["encoder_macs"] == budget["macs_stop_early"] and r["encoder_macs_per_step"] == 2 * budget["macs_stop_early"]
    assert (r["resized"], r["visual_tokens"], r["tokens_per_step"], r["tokens_per_second"]) == ([224, 224], 256, 512,
                                                                                               2560.0)


def test_control_llava_onevision_several_images_are_multi_image(cli):
    """Several images in one prompt: LlavaOnevisionProcessor pads each to a square, 729 + 1 tokens, no tiles."""
    d = cli("tokens", "--preset", "llava-onevision", "--size", "1080x1920", "--cameras", "2", "--json").json()
    assert d["rows"][0]["visual_tokens"] == 730 and d["rows"][0]["options"]["multi_image"] is True
    assert d["rows"][0]["tokens_per_step"] == 1460 and any("one of several" in n for n in d["notes"])
    d = cli("tokens", "--preset", "llava-onevision", "--size", "1080x1920", "--cameras", "2", "--no-multi-image",
            "--json").json()
    assert d["rows"][0]["visual_tokens"] == 7269 and d["rows"][0]["tokens_per_step"] == 2 * 7269


def test_list_presets(cli):
    from vitcli.core.vlm import PRESETS, image_tokens

    d = cli("tokens", "--list-presets", "--json").json()
    assert [p["name"] for p in d["presets"]] == list(PRESETS)
    for p in d["presets"]:
        pre = PRESETS[p["name"]]
        assert (p["model"], p["reference"], p["native"]) == (pre.model, pre.reference, list(pre.native))
        n = image_tokens(pre, pre.native)
        assert p["native_tokens"] == {"visual_tokens": n.visual_tokens, "special_tokens": n.special_tokens,
                                      "total_tokens": n.total_tokens}
    text = cli("tokens", "--list-presets").stdout
    for p in PRESETS.values():
        assert f"  {p.name}: {p.reference}" in text and p.model in text
    assert "  qwen2-vl: --min-pixels 3136 --max-pixels 12845056" in text
    assert "  gemma3: --no-pan-and-scan --pan-and-scan-min-crop-size 256" in text


def test_list_presets_at_sizes(cli):
    from vitcli.core.vlm import PRESETS, image_tokens

    d = cli("tokens", "--list-presets", "--size", "1080x1920", "--size", "16x7680", "--json").json()
    assert d["sizes"] == [[1080, 1920], [16, 7680]]
    for p in d["presets"]:
        r = image_tokens(p["name"], (1080, 1920))
        assert p["at_sizes"][0]["visual_tokens"] == r.visual_tokens and p["at_sizes"][0]["tiles"] == r.tiles
    refused = {p["name"] for p in d["presets"] if "error" in p["at_sizes"][1]}
    assert refused == {"qwen2-vl", "qwen2.5-vl", "qwen3-vl", "pi0"}  # aspect 480: smart_resize, resize_with_pad
    r = cli("tokens", "--list-presets", "--size", "1080x1920", "--size", "16x7680")
    assert r.exit_code == 0
    cells = {line.split("│")[1].strip(): [c.strip() for c in line.split("│")[2:-1]]
             for line in r.stdout.splitlines() if line.startswith("│")}
    assert set(cells) == set(PRESETS)
    assert cells["qwen2-vl"] == ["448x448", "2,691 + 2", "refused"] and cells["llava-1.5"] == ["336x336", "576", "576"]
    assert cells["idefics3"][1] == "2,197 + 30"
    assert "pi0 at 16x7680: --size 16x7680: pi0's resize_with_pad" in r.stdout


def _cells(stdout: str, first: str) -> list[str]:
    (line,) = [x for x in stdout.splitlines() if x.startswith(f"│ {first} ")]
    return [c.strip() for c in line.split("│")[1:-1]]


def test_preset_human_key_lines(cli):
    r = cli("tokens", "--preset", "qwen2-vl", "--size", "1080x1920")
    assert r.exit_code == 0 and r.stderr == ""
    assert _cells(r.stdout, "1080x1920") == ["1080x1920", "1092x1932", "1", "78x138", "10,764", "2,691", "2", "n/a"]
    lines = r.stdout.splitlines()
    assert lines[0] == "qwen2-vl (Qwen/Qwen2-VL-7B-Instruct): per image"
    assert ("1080x1920 -> 1092x1932 (multiples of 28, 2,109,744 px within [3,136, 12,845,056]) -> 78x138 patches of "
            "14 -> 2x2 merge -> 2,691 tokens") in lines
    assert "special tokens per image: <|vision_start|> x1, <|vision_end|> x1" in lines
    assert "processor options: --min-pixels 3136 --max-pixels 12845056" in lines

    r = cli("tokens", "--preset", "llava-next", "--size", "1080x1920")
    # pinpoint 672x672: 2x2 tiles + the base image, 5 x 24x24 patches; 28x48 unpadded features + 28 newlines + 576
    assert 28 * 48 + 28 + 576 == 1948
    assert _cells(r.stdout, "1080x1920") == ["1080x1920", "378x672", "2x2 + 1", "24x24", "2,880", "1,948", "0",
                                             "915.08"]

    r = cli("tokens", "--preset", "pi0", "--size", "480x640", "--cameras", "3", "--hz", "50")
    assert "Per control step: 3 cameras x 1 frame at 50 Hz" in r.stdout
    assert _cells(r.stdout.split("Per control step")[1], "480x640") == [
        "480x640", "3", "768", "0", "768", "38,400", "328.45", "32.85"]
    assert ("480x640: 3 cameras x 1 frame x 256 tokens = 768 tokens per step, x 50 Hz = 38,400 tokens per second; "
            "encoder 3 x 109.48 = 328.45 GMACs per step") in r.stdout

    r = cli("tokens", "--preset", "pi0")  # no control flags: the preset's cameras said in a note
    assert "no --size: pi0's native size 224x224" in r.stdout
    assert "pi0 sees 3 cameras per control step: 3 x 256 = 768 tokens per step" in r.stdout


def test_help_names_every_option_and_released_value(cli):
    from vitcli.core.vlm import PRESETS, option_flags

    text = cli("tokens", "--help").stdout
    chunks = {}
    for flag in option_flags().values():
        name = flag.flag
        start = text.index(f"  {name} ")
        nxt = text.find("\n  -", start + 1)
        chunks[name] = " ".join(text[start:nxt].split())
    for p in PRESETS.values():
        for o in p.options:
            v = o.default
            shown = ("on" if v else "off") if isinstance(v, bool) else f"{v:,}" if isinstance(v, int) else str(v)
            assert shown in chunks[o.flag], (p.name, o.flag, chunks[o.flag])
    assert all(n in " ".join(text.split()) for n in PRESETS)


@pytest.mark.parametrize("args,words", [
    (["--preset", "qwen2-vl", "--max-tiles", "4"], ["--max-tiles", "qwen2-vl", "internvl", "--min-pixels"]),
    (["--preset", "llava-1.5", "--pan-and-scan"], ["--pan-and-scan", "gemma3", "accepts: none"]),
    (["--preset", "pi0", "--no-image-splitting"], ["--image-splitting", "idefics3, smolvlm"]),
    (["--preset", "internvl", "--min-tiles", "5", "--max-tiles", "2"], ["--min-tiles 5 is above --max-tiles 2"]),
    (["--preset", "internvl", "--max-tiles", "0"], ["--max-tiles 0", "at least 1", "12"]),
    (["--preset", "gemma3", "--pan-and-scan-min-ratio", "0"], ["--pan-and-scan-min-ratio 0", "above 0"]),
    (["--size", "224", "--patch", "16", "--max-pixels", "100"], ["--max-pixels needs --preset"]),
    (["--size", "224", "--patch", "16", "--hz", "5", "--cameras", "2"], ["--cameras, --hz need --preset"]),
    (["--preset", "qwen2-vl", "--size", "0"], ["--size '0'", "at least 1 pixel"]),
    (["--preset", "qwen2-vl", "--size", "1080x0"], ["--size '1080x0'"]),
    (["--preset", "qwen2-vl", "--size", "10x2500"], ["aspect ratio 250.0 is above 200", "smart_resize"]),
    (["--preset", "pi0", "--size", "16x7680"], ["resize_with_pad", "0x224", "224:1"]),
    (["--preset", "smolvla", "--size", "8x7680"], ["resize_with_pad", "0x512"]),
    (["--preset", "llava-2"], ["--preset", "'llava-2' is not one of", *(f"'{n}'" for n in
                                                                         ("llava-1.5", "qwen2.5-vl", "openvla"))]),
    (["--preset", "pi0", "--cameras", "0"], ["--cameras 0"]),
    (["--preset", "pi0", "--frames", "0"], ["--frames 0"]),
    (["--preset", "pi0", "--hz", "0"], ["--hz 0.0", "above 0"]),
    (["--preset", "pi0", "--hz", "-5"], ["--hz -5.0"]),
    (["--preset", "pi0", "--hz", "nan"], ["--hz nan"]),
    (["--preset", "pi0", "--hz", "inf"], ["--hz inf", "finite rate above 0"]),
    (["--preset", "pi0", "--registers", "4"], ["--preset pi0", "--registers"]),
    (["--preset", "qwen2-vl", "--model", "vit_base_patch16_224"], ["--preset qwen2-vl", "--model"]),
    (["--list-presets", "--preset", "pi0"], ["--list-presets", "--preset"]),
    (["--list-presets", "--max-tiles", "3"], ["--list-presets", "--max-tiles"]),
])
def test_preset_usage_errors_exit_2_one_line(cli, args, words):
    r = cli("tokens", *args)
    assert r.exit_code == 2 and r.stdout == ""
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: ") and "Traceback" not in r.stderr
    assert all(w in lines[0] for w in words), lines[0]
