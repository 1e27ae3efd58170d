"""Visual-token budgets of VLMs and VLAs (core/vlm.py) against the reference implementations.

The reference is Hugging Face transformers' own image processors and processors, built offline from the
released configuration values (no hub): each image runs through the processor's real pixel path on a `meta`
tensor (exact shapes, no pixels, so 8K images cost nothing), and the processor's own `_process_images` ->
`replace_image_token` writes the expanded prompt whose placeholder and special tokens are counted. Where a
processor offers a token-count method (`_get_num_multimodal_tokens`, `get_number_of_image_patches`,
`smart_resize`, `select_best_resolution`, `get_optimal_tiled_canvas`...), it is checked too.

pi0 (openpi), SmolVLA (lerobot) and OpenVLA (prismatic) have no transformers implementation: their published
resize rules are written out below with their sources and run on meta tensors.
"""

from __future__ import annotations

import random
import re
import subprocess
import sys
import zlib

import pytest
import torch
import torch.nn.functional as F  # noqa: N812
import transformers
from tokenizers import AddedToken, Tokenizer, models, pre_tokenizers
from transformers import PreTrainedTokenizerFast
from transformers.image_processing_utils import get_patch_output_size, select_best_resolution
from transformers.image_utils import ChannelDimension, SizeDict

from vitcli.core.cost import macs_breakdown
from vitcli.core.presets import PRESETS as ENCODER_PRESETS
from vitcli.core.presets import budget
from vitcli.core.spec import known_spec, variant_spec
from vitcli.core.vlm import (PRESETS, control_budget, get_vlm_preset, image_tokens, list_presets, presets_accepting,
                             resolve_options)
from vitcli.errors import UsageError

transformers.logging.set_verbosity_error()  # LANCZOS-on-meta falls back to bicubic: sizes are unchanged


# ---- sizes ------------------------------------------------------------------------------------------------------

FIXED_SIZES = [(1080, 1920), (1920, 1080), (3024, 4032), (4032, 3024), (4320, 7680), (7680, 7680), (16, 16),
               (16, 7680), (7680, 16), (17, 5000), (5000, 23), (333, 1001)]


# Sizes on the references' boundaries, found by searching random sizes: LLaVA-NeXT where the scaled side lands a
# hair below an integer so that round(x, 7) and int(x) give different feature grids (both branches),
# LLaVA-OneVision where the anyres_max ratio falls in (1.1, 1.2], InternVL where grids of equal aspect tie and the
# image area decides (square 650 and 1000, 2:1), Idefics3 where, with a longest edge that is not a multiple of 364,
# the row count comes from the rounded-up width (350x1000 and its transpose).
EDGE_SIZES = {"llava-next": [(3572, 1504), (1265, 6072), (352, 924), (6072, 1265), (1454, 1454)],
              "llava-onevision": [(782, 1709), (2864, 970)],
              "internvl": [(650, 650), (1000, 1000), (1000, 2000), (600, 1200)],
              "idefics3": [(350, 1000), (1000, 350)]}


def sizes_for(name: str, native: tuple[int, int]) -> list[tuple[int, int]]:
    """At least 30 sizes: the native size, fixed landmarks, boundary cases, and seeded random ones from 16 px to 8K
    (7680) in both orientations, small ones, and extreme aspect ratios. Random sides are almost never multiples of
    a patch."""
    rng = random.Random(zlib.crc32(name.encode()))
    out = [native, *FIXED_SIZES, *EDGE_SIZES.get(name, [])]
    for _ in range(8):
        h, w = rng.randint(16, 7680), rng.randint(16, 7680)
        out += [(h, w), (w, h)]
    out += [(rng.randint(16, 600), rng.randint(16, 600)) for _ in range(6)]
    for _ in range(6):
        a, b = rng.randint(16, 120), rng.randint(2000, 7680)
        out.append((a, b) if rng.random() < 0.5 else (b, a))
    assert len(out) >= 30
    return out


def meta_image(h, w):
    return torch.empty(3, h, w, device="meta")


# ---- a minimal local tokenizer: processors only need their special tokens to exist ------------------------------


def mini_tokenizer(specials=(), extra=None) -> PreTrainedTokenizerFast:
    """WordLevel tokenizer built in memory. Special tokens are added tokens (split wherever they occur); "\\n\\n" and
    "\\n" are added tokens too, longest match first, as the released tokenizers merge "\\n\\n" into one token."""
    extra = extra or {}
    words = ["<unk>", "<s>", "</s>", *specials, *extra.values()]
    vocab = {w: i for i, w in enumerate(dict.fromkeys(words))}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="<unk>", bos_token="<s>", eos_token="</s>",
                                   extra_special_tokens=extra)
    fast.add_tokens([AddedToken(t, special=True, normalized=False) for t in specials], special_tokens=True)
    fast.add_tokens([AddedToken("\n\n", normalized=False), AddedToken("\n", normalized=False)])
    return fast


def n_tokens(tokenizer, text: str) -> int:
    return len(tokenizer(text, add_special_tokens=False)["input_ids"])


def expand(proc, h, w, nested=False, **kwargs):
    """The processor's own path for one image: merged kwargs -> _process_images -> replace_image_token."""
    merged = proc._merge_kwargs(tokenizer_init_kwargs=proc.tokenizer.init_kwargs, **kwargs)
    img = meta_image(h, w)
    processed, texts = proc._process_images([[img]] if nested else [img], **merged["images_kwargs"])
    return processed, texts[0]


def check_all(name, check, sizes=None, **options):
    """Run `check(size, ours)` over every size; where the reference raised, ours must be a UsageError."""
    p = PRESETS[name]
    bad = []
    for size in sizes or sizes_for(name, NATIVE[name]):
        try:
            ours = image_tokens(p, size, **options)
        except UsageError as e:
            ours = e
        try:
            msg = check(size, ours)
        except AssertionError as e:
            msg = f"{e}"
        if msg:
            bad.append((size, msg))
    assert not bad, f"{name}: {len(bad)} sizes differ from the reference, e.g. {bad[:4]}"


NATIVE = {"llava-1.5": (336, 336), "llava-next": (336, 336), "llava-onevision": (384, 384), "qwen2-vl": (448, 448),
          "qwen2.5-vl": (448, 448), "qwen3-vl": (512, 512), "internvl": (448, 448), "idefics3": (364, 364),
          "smolvlm": (512, 512), "gemma3": (896, 896), "paligemma-224": (224, 224), "paligemma-448": (448, 448),
          "paligemma-896": (896, 896), "pi0": (224, 224), "smolvla": (512, 512), "openvla": (224, 224)}


def test_every_preset_has_a_native_size_and_a_reference():
    assert set(NATIVE) == set(PRESETS) == {p.name for p in list_presets()}
    for p in list_presets():
        assert p.model and p.reference and p.config, p.name
        d = p.to_dict()
        assert d["options"] == [o.to_dict() for o in p.options]
    assert PRESETS["pi0"].cameras == 3 and {p.cameras for p in list_presets() if p.name != "pi0"} == {1}
    assert {p.name: p.native for p in list_presets()} == NATIVE  # what `vitcli tokens` uses without --size


def test_option_lookup():
    assert presets_accepting("max_pixels") == ["qwen2-vl", "qwen2.5-vl", "qwen3-vl"]
    assert presets_accepting("pan_and_scan") == ["gemma3"] and presets_accepting("nothing") == []
    assert resolve_options("internvl", {"max_tiles": 6, "min_tiles": None}) == {"max_tiles": 6, "min_tiles": 1}
    with pytest.raises(UsageError) as e:
        resolve_options("qwen2-vl", {"max_tiles": 6, "longest_edge": 9})
    assert "--max-tiles: internvl; --longest-edge: idefics3, smolvlm" in e.value.message


# ---- LLaVA ------------------------------------------------------------------------------------------------------


def test_llava_15_against_clip_processor_and_llava_processor():
    """llava-hf/llava-1.5-7b-hf: CLIPImageProcessor shortest_edge 336 + center crop 336, LlavaProcessor patch 14,
    'default' strategy, one additional (CLS) token."""
    from transformers import CLIPImageProcessor, LlavaProcessor

    ip = CLIPImageProcessor(size={"shortest_edge": 336}, crop_size={"height": 336, "width": 336})
    proc = LlavaProcessor(ip, mini_tokenizer(["<image>"]), patch_size=14, vision_feature_select_strategy="default",
                          num_additional_image_tokens=1)

    def check(size, r):
        resized = ip(meta_image(*size), do_center_crop=False, return_tensors="pt")["pixel_values"].shape[-2:]
        out = ip(meta_image(*size), return_tensors="pt")
        out["pixel_values"] = torch.zeros(out["pixel_values"].shape)  # replace_image_token reads it through numpy
        text = proc.replace_image_token(out, 0)
        assert tuple(resized) == r.resized and tuple(out["pixel_values"].shape[-2:]) == r.tile_size
        assert text == "<image>" * r.visual_tokens and r.special_tokens == 0
        assert proc._get_num_multimodal_tokens([list(size)]).num_image_tokens == [r.visual_tokens] == [576]

    check_all("llava-1.5", check)


def test_llava_next_against_processor_and_model_unpad():
    """llava-hf/llava-v1.6-mistral-7b-hf: pinpoints of v1.6, CLIP-336 tiles + base image, padding removed, one newline
    per row. The model's own unpad_image gives the same feature grid as the processor's count."""
    from transformers import LlavaNextImageProcessor, LlavaNextProcessor
    from transformers.models.llava_next.modeling_llava_next import unpad_image

    pins = [[336, 672], [672, 336], [672, 672], [1008, 336], [336, 1008]]
    ip = LlavaNextImageProcessor(size={"shortest_edge": 336}, crop_size={"height": 336, "width": 336})
    assert ip.image_grid_pinpoints == pins  # the released v1.6 list is the class default
    proc = LlavaNextProcessor(ip, mini_tokenizer(["<image>"]), patch_size=14, vision_feature_select_strategy="default",
                              num_additional_image_tokens=1)

    def check(size, r):
        out, text = expand(proc, *size)
        pin = select_best_resolution(size, pins)
        rows, cols = pin[0] // 336, pin[1] // 336
        assert text == "<image>" * r.visual_tokens and r.special_tokens == 0
        assert proc._get_num_multimodal_tokens([list(size)]).num_image_tokens == [r.visual_tokens]
        assert len(out["pixel_values"][0]) == r.tiles == 1 + rows * cols and r.tile_grid == (rows, cols)
        assert tuple(r.detail["pinpoint"]) == tuple(pin)
        assert get_patch_output_size(meta_image(*size), pin, ChannelDimension.FIRST) == r.resized
        feats = unpad_image(torch.empty(1, 24 * rows, 24 * cols, device="meta"), list(size))
        assert tuple(feats.shape[1:]) == tuple(r.detail["unpadded_grid"])
        assert r.visual_tokens == feats.shape[1] * (feats.shape[2] + 1) + 576  # features + newlines + base

    check_all("llava-next", check)


def test_llava_onevision_against_processor():
    """llava-hf/llava-onevision-qwen2-7b-ov-hf: num_image_tokens 729, 'full', anyres_max_9 (converter values)."""
    from transformers import LlavaOnevisionImageProcessor, LlavaOnevisionProcessor, LlavaOnevisionVideoProcessor

    ip = LlavaOnevisionImageProcessor()
    proc = LlavaOnevisionProcessor(ip, mini_tokenizer(["<image>", "<video>"]), LlavaOnevisionVideoProcessor(),
                                   num_image_tokens=729, vision_feature_select_strategy="full",
                                   vision_aspect_ratio="anyres_max_9")

    def check(size, r):
        out, text = expand(proc, *size)
        pin = select_best_resolution(size, ip.image_grid_pinpoints)
        assert text == "<image>" * r.visual_tokens and r.special_tokens == 0
        assert proc._get_num_multimodal_tokens([list(size)]).num_image_tokens == [r.visual_tokens]
        assert len(out["pixel_values"][0]) == r.tiles and tuple(r.detail["pinpoint"]) == tuple(pin)
        assert get_patch_output_size(meta_image(*size), pin, ChannelDimension.FIRST) == r.resized

    check_all("llava-onevision", check)

    def check_multi(size, r):  # two images in one prompt: each padded to a square, base features + 1 newline
        merged = proc._merge_kwargs(tokenizer_init_kwargs=proc.tokenizer.init_kwargs)
        out, texts = proc._process_images([[meta_image(*size), meta_image(*size)]], **merged["images_kwargs"])
        assert texts[0] == texts[1] == "<image>" * r.visual_tokens and r.visual_tokens == 730
        assert len(out["pixel_values"][0]) == r.tiles == 1

    check_all("llava-onevision", check_multi, sizes=sizes_for("llava-onevision", (384, 384))[:12], multi_image=True)
    # the processor's bilinear reduction kicks in for large images: at most ~9 tiles' worth of 27x27 features
    big = image_tokens("llava-onevision", (3024, 4032))
    assert big.detail["pooled_grid"] and big.visual_tokens < 729 + 9 * 729 * 1.1 + 100


# ---- Qwen -------------------------------------------------------------------------------------------------------

QWEN = {
    # released preprocessor_config.json values (see core/vlm.py for where each came from)
    "qwen2-vl": ("Qwen2VLProcessor", "Qwen2VLVideoProcessor", dict(min_pixels=3136, max_pixels=12845056), 14),
    "qwen2.5-vl": ("Qwen2_5_VLProcessor", "Qwen2VLVideoProcessor", dict(min_pixels=3136, max_pixels=12845056), 14),
    "qwen3-vl": ("Qwen3VLProcessor", "Qwen3VLVideoProcessor",
                 dict(size={"shortest_edge": 65536, "longest_edge": 16777216}), 16),
}


@pytest.mark.parametrize("name", list(QWEN))
def test_qwen_against_processor(name):
    from transformers import Qwen2VLImageProcessor
    from transformers.models.qwen2_vl.image_processing_qwen2_vl import smart_resize

    proc_cls, video_cls, pixels, patch = QWEN[name]
    ip = Qwen2VLImageProcessor(patch_size=patch, merge_size=2, **pixels)
    proc = getattr(transformers, proc_cls)(ip, mini_tokenizer(["<|image_pad|>", "<|video_pad|>"]),
                                           getattr(transformers, video_cls)())
    mn, mx = ip.size["shortest_edge"], ip.size["longest_edge"]
    p = PRESETS[name]
    assert (p.option("min_pixels").default, p.option("max_pixels").default) == (mn, mx)

    def check(size, r):
        try:
            resized = smart_resize(*size, factor=2 * patch, min_pixels=mn, max_pixels=mx)
        except ValueError:  # aspect ratio above 200: the reference refuses
            assert isinstance(r, UsageError) and "200" in r.message
            return None
        out, text = expand(proc, *size)
        assert tuple(out["image_grid_thw"][0].tolist()) == (1, *r.grid)
        assert resized == r.resized and text == "<|image_pad|>" * r.visual_tokens
        mm = proc._get_num_multimodal_tokens([list(size)])
        assert mm.num_image_tokens == [r.visual_tokens] and mm.num_image_patches == [r.encoder_tokens]
        assert r.special == {"<|vision_start|>": 1, "<|vision_end|>": 1}  # from the released chat template
        return None

    check_all(name, check)


def test_qwen2_vl_max_pixels_option_and_class_default():
    """transformers' class default max_pixels (28*28*1280) differs from the released config; the option reaches it."""
    from transformers import Qwen2VLImageProcessor

    ip = Qwen2VLImageProcessor()
    assert ip.size["longest_edge"] == 28 * 28 * 1280 == 1_003_520 != PRESETS["qwen2-vl"].option("max_pixels").default
    for size in [(1080, 1920), (3024, 4032), (7680, 4320), (300, 5000)]:
        r = image_tokens("qwen2-vl", size, max_pixels=1_003_520)
        assert r.visual_tokens == ip.get_number_of_image_patches(*size) // 4
    assert image_tokens("qwen2-vl", (1080, 1920)).rule == (
        "1080x1920 -> 1092x1932 (multiples of 28, 2,109,744 px within [3,136, 12,845,056]) -> 78x138 patches of 14 "
        "-> 2x2 merge -> 2,691 tokens")


# ---- InternVL ---------------------------------------------------------------------------------------------------


def _internvl_processor():
    from transformers import GotOcr2ImageProcessor, InternVLProcessor, InternVLVideoProcessor

    tk = mini_tokenizer(extra={"start_image_token": "<img>", "end_image_token": "</img>",
                               "context_image_token": "<IMG_CONTEXT>", "video_token": "<video>"})
    return InternVLProcessor(GotOcr2ImageProcessor(size={"height": 448, "width": 448}), tk, InternVLVideoProcessor(),
                             image_seq_length=256)


@pytest.mark.parametrize("options", [{}, {"max_tiles": 6}, {"max_tiles": 1}, {"min_tiles": 2, "max_tiles": 9}],
                         ids=["released", "max6", "max1", "min2max9"])
def test_internvl_against_processor(options):
    from transformers.models.got_ocr2.image_processing_got_ocr2 import get_optimal_tiled_canvas

    proc = _internvl_processor()
    kw = {"max_patches": options.get("max_tiles", 12), "min_patches": options.get("min_tiles", 1)}

    def check(size, r):
        out, text = expand(proc, *size, **kw)
        assert text == "<img>" + "<IMG_CONTEXT>" * r.visual_tokens + "</img>"
        assert n_tokens(proc.tokenizer, text) == r.total_tokens and r.special_tokens == 2
        assert out["num_patches"] == [r.tiles] and len(out["pixel_values"]) == r.tiles
        mm = proc._get_num_multimodal_tokens([list(size)], **kw)
        assert mm.num_image_tokens == [r.total_tokens] and mm.num_image_patches == [r.tiles]
        if kw["max_patches"] > 1:
            cols, rows = get_optimal_tiled_canvas(size, (448, 448), kw["min_patches"], kw["max_patches"])
            assert r.resized == (rows * 448, cols * 448)

    sizes = None if not options else sizes_for("internvl", (448, 448))[:20]
    check_all("internvl", check, sizes=sizes, **options)


# ---- Idefics3 / SmolVLM -----------------------------------------------------------------------------------------

ROW_COL = [f"<row_{i}_col_{j}>" for i in range(1, 7) for j in range(1, 7)]
IDEFICS_SPECIALS = ["<image>", "<fake_token_around_image>", "<global-img>", "<end_of_utterance>", *ROW_COL]


def _check_idefics_text(text, r, tokenizer):
    assert text.count("<image>") == r.visual_tokens
    assert text.count("<fake_token_around_image>") == r.special["<fake_token_around_image>"]
    assert text.count("<global-img>") == r.special["<global-img>"] == 1
    assert len(re.findall(r"<row_\d+_col_\d+>", text)) == r.special.get("<row_i_col_j>", 0)
    assert text.count("\n\n") == r.special.get("\n\n", 0)
    assert text.count("\n") - 2 * text.count("\n\n") == r.special.get("\n", 0)
    assert n_tokens(tokenizer, text) == r.total_tokens  # "\n\n" one token, as the released tokenizers merge it


@pytest.mark.parametrize("options", [{}, {"image_splitting": False}, {"longest_edge": 1000}],
                         ids=["released", "no-split", "edge1000"])
def test_idefics3_against_processor(options):
    """HuggingFaceM4/Idefics3-8B-Llama3: longest_edge 1456, max_image_size 364, image_seq_len 169."""
    from transformers import Idefics3ImageProcessor, Idefics3Processor

    edge = options.get("longest_edge", 1456)
    ip = Idefics3ImageProcessor(size={"longest_edge": 1456}, max_image_size={"longest_edge": 364})
    proc = Idefics3Processor(ip, mini_tokenizer(IDEFICS_SPECIALS), image_seq_len=169)
    kw = {"size": {"longest_edge": edge}, "do_image_splitting": options.get("image_splitting", True)}

    def check(size, r):
        out, text = expand(proc, *size, nested=True, **kw)
        rows, cols = out["rows"][0][0], out["cols"][0][0]
        assert (r.tile_grid or (0, 0)) == (rows, cols) and out["pixel_values"].shape[1] == r.tiles
        _check_idefics_text(text, r, proc.tokenizer)
        if edge % 364 == 0:
            # transformers' count functions take the rows from the height before resize_for_vision_encoder rounds
            # the width up; they agree with the pixel path (the prompt the model gets) only when the longest edge
            # is a multiple of the tile, as released (1456 = 4 x 364): e.g. 350x1000 at edge 1000 -> 2x3 tiles in
            # the pixel path, 1x3 in get_number_of_image_patches. vitcli follows the pixel path.
            n, pr, pc = ip.get_number_of_image_patches(*size, kw)
            assert (pr, pc) == (rows, cols) and n == (r.tiles if rows else 0)
            assert proc._get_num_multimodal_tokens([list(size)], **kw).num_image_tokens == [r.total_tokens]
        if kw["do_image_splitting"]:  # the processor's own resize steps, on the meta image
            x = ip.resize(meta_image(*size), SizeDict(longest_edge=edge))
            assert tuple(x.shape[-2:]) == tuple(r.detail["longest_edge_resize"])
            assert tuple(ip.resize_for_vision_encoder(x, 364).shape[-2:]) == r.resized

    sizes = None if not options else sizes_for("idefics3", (364, 364))[:16]
    check_all("idefics3", check, sizes=sizes, **options)


def test_smolvlm_against_image_processor_and_prompt_builder():
    """HuggingFaceTB/SmolVLM2-500M-Video-Instruct: longest_edge 2048, max_image_size 512, image_seq_len 64.
    SmolVLMProcessor itself needs num2words (not installed), so its module-level get_image_prompt_string, which its
    replace_image_token calls, writes the prompt from the image processor's rows and cols."""
    from transformers import SmolVLMImageProcessor
    from transformers.models.smolvlm.processing_smolvlm import get_image_prompt_string

    ip = SmolVLMImageProcessor(size={"longest_edge": 2048}, max_image_size={"longest_edge": 512})
    tk = mini_tokenizer(IDEFICS_SPECIALS)

    def check(size, r):
        out = ip([[meta_image(*size)]], return_row_col_info=True, return_tensors="pt")
        rows, cols = out["rows"][0][0], out["cols"][0][0]
        assert (r.tile_grid or (0, 0)) == (rows, cols) and out["pixel_values"].shape[1] == r.tiles
        assert ip.get_number_of_image_patches(*size) == ((r.tiles if rows else 0), rows, cols)
        text = get_image_prompt_string(rows, cols, 64, "<fake_token_around_image>", "<image>", "<global-img>")
        _check_idefics_text(text, r, tk)

    check_all("smolvlm", check)


# ---- Gemma 3, PaliGemma -----------------------------------------------------------------------------------------


@pytest.mark.parametrize("pan_and_scan", [False, True], ids=["released", "pan-and-scan"])
def test_gemma3_against_processor(pan_and_scan):
    """google/gemma-3-4b-it: 896x896, image_seq_length 256; pan-and-scan with the processor's defaults (min crop
    256, at most 4 crops, from aspect 1.2)."""
    from transformers import Gemma3ImageProcessor, Gemma3Processor

    tk = mini_tokenizer(extra={"image_token": "<image_soft_token>", "boi_token": "<start_of_image>",
                               "eoi_token": "<end_of_image>"})
    proc = Gemma3Processor(Gemma3ImageProcessor(size={"height": 896, "width": 896}), tk, image_seq_length=256)
    seq = "\n\n<start_of_image>" + "<image_soft_token>" * 256 + "<end_of_image>\n\n"

    def check(size, r):
        out, text = expand(proc, *size, do_pan_and_scan=pan_and_scan)
        crops = int(out["num_crops"][0])
        assert r.tiles == 1 + crops and len(out["pixel_values"]) == r.tiles
        assert all(tuple(x.shape[-2:]) == r.tile_size == (896, 896) for x in out["pixel_values"])
        assert text.count("<image_soft_token>") == r.visual_tokens == 256 * r.tiles
        assert text.count("<start_of_image>") == r.special["<start_of_image>"] == r.tiles
        assert text.count("<end_of_image>") == r.special["<end_of_image>"] == r.tiles
        assert text.count("\n\n") == r.special["\n\n"] == 2 * r.tiles
        if not crops:
            assert text == seq and n_tokens(tk, text) == r.total_tokens
            assert proc._get_num_multimodal_tokens([list(size)]).num_image_tokens == [r.visual_tokens]

    check_all("gemma3", check, pan_and_scan=pan_and_scan)
    if pan_and_scan:
        assert image_tokens("gemma3", (1080, 1920), pan_and_scan=True).tiles == 3  # 2 crops + the image


@pytest.mark.parametrize("side", [224, 448, 896])
def test_paligemma_against_processor(side):
    from transformers import PaliGemmaProcessor, SiglipImageProcessor

    ip = SiglipImageProcessor(size={"height": side, "width": side}, image_seq_length=(side // 14) ** 2)
    proc = PaliGemmaProcessor(ip, mini_tokenizer())

    def check(size, r):
        out, text = expand(proc, *size)
        assert tuple(out["pixel_values"][0].shape[-2:]) == r.resized == (side, side)
        assert text == "<image>" * r.visual_tokens and r.special_tokens == 0
        assert proc._get_num_multimodal_tokens([list(size)]).num_image_tokens == [r.visual_tokens]

    check_all(f"paligemma-{side}", check)


# ---- VLAs without a transformers implementation: the published rules, written out ------------------------------


def openpi_resize_with_pad_torch(images, height, width):
    """Physical-Intelligence/openpi src/openpi/shared/image_tools.py resize_with_pad_torch (channels-first branch):
    ratio = max(w / W, h / H); resized = int(h / ratio), int(w / ratio); F.interpolate; pad centered."""
    cur_height, cur_width = images.shape[-2:]
    ratio = max(cur_width / width, cur_height / height)
    resized_height, resized_width = int(cur_height / ratio), int(cur_width / ratio)
    resized = F.interpolate(images, size=(resized_height, resized_width), mode="bilinear", align_corners=False)
    pad_h0, remainder_h = divmod(height - resized_height, 2)
    pad_w0, remainder_w = divmod(width - resized_width, 2)
    padded = F.pad(resized, (pad_w0, pad_w0 + remainder_w, pad_h0, pad_h0 + remainder_h), value=-1.0)
    return resized, padded


def lerobot_resize_with_pad(img, width, height, pad_value=0):
    """huggingface/lerobot src/lerobot/policies/smolvla/modeling_smolvla.py resize_with_pad: pad on left and top."""
    cur_height, cur_width = img.shape[2:]
    ratio = max(cur_width / width, cur_height / height)
    resized_height, resized_width = int(cur_height / ratio), int(cur_width / ratio)
    resized = F.interpolate(img, size=(resized_height, resized_width), mode="bilinear", align_corners=False)
    pad_height, pad_width = max(0, int(height - resized_height)), max(0, int(width - resized_width))
    return resized, F.pad(resized, (pad_width, 0, pad_height, 0), value=pad_value)


@pytest.mark.parametrize("name", ["pi0", "smolvla"])
def test_vla_resize_with_pad_published_rule(name):
    """pi0: openpi IMAGE_RESOLUTION (224, 224), SigLIP So400m/14 with pool_type 'none' -> (224/14)^2 = 256 tokens per
    camera. SmolVLA: SmolVLAConfig.resize_imgs_with_padding (512, 512), SmolVLM2-500M SigLIP B/16 -> 32x32
    patches, pixel shuffle 4 (image_seq_len 64). Sizes the torch path cannot process (an empty resize) must be
    UsageErrors."""
    side, patch, shuffle = (224, 14, 1) if name == "pi0" else (512, 16, 4)

    def check(size, r):
        rule = openpi_resize_with_pad_torch if name == "pi0" else lerobot_resize_with_pad
        try:
            resized, padded = rule(torch.empty(1, 3, *size, device="meta"), side, side)
        except Exception:  # an empty resize: on CPU F.interpolate refuses it ("output sizes should be greater than 0")
            with pytest.raises(RuntimeError, match="greater than 0"):
                rule(torch.zeros(1, 3, *size), side, side)
            assert isinstance(r, UsageError) and "resize_with_pad" in r.message
            return
        assert tuple(resized.shape[-2:]) == r.resized and tuple(padded.shape[-2:]) == r.tile_size == (side, side)
        assert r.visual_tokens == (side // patch) ** 2 // shuffle**2 and r.special_tokens == 0
        assert r.encoder_tokens == (side // patch) ** 2

    check_all(name, check)


def test_openvla_published_rule():
    """OpenVLA squashes every frame to 224x224: 16x16 patch tokens of both encoders, channels concatenated; the same
    budget as core/presets.py computes."""
    enc = ENCODER_PRESETS["openvla"]
    b = budget(enc, [known_spec(m).at_size(enc.size) for m in enc.models])

    def check(size, r):
        assert r.resized == r.tile_size == enc.size == (224, 224) and enc.squash
        assert r.visual_tokens == (224 // 14) ** 2 == b["lm_tokens"] and r.special_tokens == 0
        assert r.encoder_macs == b["macs_stop_early"]

    check_all("openvla", check)


# ---- encoder MACs -----------------------------------------------------------------------------------------------


def test_llava_encoder_macs_written_out():
    """CLIP ViT-L/14 at 336 read at hidden_states[-2]: 23 of 24 blocks, no head. N=576, T=577, D=1024, M=4096."""
    N, T, D, M, L = 576, 577, 1024, 4096, 23
    by_hand = N * D * 3 * 14 * 14 + L * (T * D * 3 * D + T * D * D) + L * 2 * T * T * D + L * 2 * T * D * M
    assert image_tokens("llava-1.5", (1080, 1920)).encoder_macs == by_hand
    nxt = image_tokens("llava-next", (1080, 1920))  # every tile (base included) runs the encoder
    assert nxt.encoder_macs == nxt.tiles * by_hand


def test_smolvla_encoder_macs_written_out():
    """SigLIP B/16 at 512, all 12 blocks, no CLS, no head: N=T=1024, D=768, M=3072."""
    N, D, M, L = 1024, 768, 3072, 12
    by_hand = N * D * 3 * 16 * 16 + L * (N * D * 3 * D + N * D * D) + L * 2 * N * N * D + L * 2 * N * D * M
    assert image_tokens("smolvla", (480, 640)).encoder_macs == by_hand


ENCODERS = {  # preset -> (vitcli variant, blocks run), per the config values cited in core/vlm.py
    "llava-1.5": ("CLIP-L/14", 23), "llava-next": ("CLIP-L/14", 23), "llava-onevision": ("SigLIP-So400m/14", 26),
    "internvl": ("ViT-L/14", 24), "idefics3": ("SigLIP-So400m/14", 27), "smolvlm": ("SigLIP-B/16", 12),
    "gemma3": ("SigLIP-So400m/14", 27), "paligemma-224": ("SigLIP-So400m/14", 27),
    "paligemma-448": ("SigLIP-So400m/14", 27), "paligemma-896": ("SigLIP-So400m/14", 27),
    "pi0": ("SigLIP-So400m/14", 27), "smolvla": ("SigLIP-B/16", 12),
}


@pytest.mark.parametrize("name", list(PRESETS))
def test_encoder_macs_from_the_spec(name):
    """tiles x MACs of one encoder run up to the read layer (no head), from vitcli's spec at the tile's patch grid."""
    for size in [(1080, 1920), (3024, 4032), (480, 640)]:
        r = image_tokens(name, size, **({"pan_and_scan": True} if name == "gemma3" else {}))
        if name.startswith("qwen"):
            assert r.encoder_macs is None  # Qwen's ViT (3D patch conv, window attention) is not in the cost model
            continue
        if name == "openvla":
            continue  # test_openvla_published_rule
        variant, blocks = ENCODERS[name]
        spec = variant_spec(variant)
        gh, gw = r.grid
        spec = spec.at_size((gh * spec.patch_size[0], gw * spec.patch_size[1]))
        one = sum(macs_breakdown(spec, spec.layout(), blocks=blocks, head=False).values())
        assert r.encoder_macs == r.tiles * one and r.encoder_tokens == r.tiles * gh * gw


def _hf_tower_flops(model, size):
    from torch.utils.flop_counter import FlopCounterMode

    with FlopCounterMode(display=False) as fc, torch.no_grad():
        model(pixel_values=torch.empty(1, 3, *size, device="meta"))
    return fc.get_total_flops()


def test_encoder_macs_equal_transformers_vision_towers():
    """The real transformers towers, built on the meta device with the released widths and the number of layers the
    model reads (eager attention so QK^T and AV are counted): torch's FLOP count = 2 x vitcli's MACs per tile."""
    from transformers import (CLIPVisionConfig, CLIPVisionModel, InternVLVisionConfig, InternVLVisionModel,
                              SiglipVisionConfig, SiglipVisionModel)

    towers = {
        "llava-1.5": (CLIPVisionModel, CLIPVisionConfig(hidden_size=1024, intermediate_size=4096, num_hidden_layers=23,
                                                        num_attention_heads=16, image_size=336, patch_size=14)),
        "llava-onevision": (SiglipVisionModel, SiglipVisionConfig(  # 384 px: the stride-14 conv drops 6 px
            hidden_size=1152, intermediate_size=4304, num_hidden_layers=26, num_attention_heads=16, image_size=384,
            patch_size=14, vision_use_head=False)),
        "internvl": (InternVLVisionModel, InternVLVisionConfig(hidden_size=1024, intermediate_size=4096,
                                                               num_hidden_layers=24, num_attention_heads=16,
                                                               image_size=448, patch_size=14)),
    }
    for name, (cls, cfg) in towers.items():
        cfg._attn_implementation = "eager"
        with torch.device("meta"):
            model = cls(cfg).eval()
        r = image_tokens(name, (480, 640))
        assert _hf_tower_flops(model, r.tile_size) == 2 * r.encoder_macs // r.tiles, name


# ---- control arithmetic -----------------------------------------------------------------------------------------


def test_control_budget_pi0_three_cameras_by_default():
    row = image_tokens("pi0", (480, 640))
    b = control_budget([row], hz=50)
    spec = variant_spec("SigLIP-So400m/14")  # at 224: 16x16 patches, 27 blocks, no head
    one = sum(macs_breakdown(spec, spec.layout(), blocks=27, head=False).values())
    assert (b.cameras, b.frames, b.hz) == (3, 1, 50.0)
    assert b.tokens_per_step == 3 * 256 == 768 and b.tokens_per_second == 768 * 50
    assert b.encoder_macs_per_step == 3 * one and b.encoder_macs_per_second == 3 * one * 50
    d = b.to_dict()
    assert d["encoder_flops_per_step"] == 2 * 3 * one and len(d["per_camera"]) == 3
    assert d["encoder"]["blocks_run"] == 27


def test_control_budget_frames_cameras_hz():
    row = image_tokens("smolvla", (480, 640))
    b = control_budget([row], cameras=2, frames=3, hz=30)
    assert b.tokens_per_step == 64 * 2 * 3 == 384 and b.tokens_per_second == 384 * 30
    assert b.encoder_macs_per_step == 2 * 3 * row.encoder_macs
    no_hz = control_budget([row])
    assert (no_hz.cameras, no_hz.tokens_per_step, no_hz.tokens_per_second, no_hz.encoder_macs_per_second) == (
        1, 64, None, None)


def test_control_budget_one_row_per_camera_with_special_tokens():
    rows = [image_tokens("internvl", s) for s in [(1080, 1920), (480, 640)]]
    b = control_budget(rows, frames=2, hz=10)
    assert b.cameras == 2
    assert b.visual_tokens_per_step == 2 * (rows[0].visual_tokens + rows[1].visual_tokens)
    assert b.tokens_per_step == 2 * (rows[0].total_tokens + rows[1].total_tokens)
    assert b.special_tokens_per_step == 2 * 2 * 2  # <img></img> per image, 2 cameras, 2 frames
    assert b.encoder_macs_per_step == 2 * (rows[0].encoder_macs + rows[1].encoder_macs)
    q = control_budget([image_tokens("qwen2-vl", (1080, 1920))], hz=5)
    assert q.encoder_macs_per_step is None and q.tokens_per_second == (2691 + 2) * 5
    ov = control_budget([image_tokens("openvla", (480, 640))], hz=5)
    assert ov.encoder_macs_per_step == image_tokens("openvla", (1, 1)).encoder_macs and ov.tokens_per_step == 256


@pytest.mark.parametrize("call,words", [
    (lambda r: control_budget([r, r], cameras=3), ["--cameras 3", "2 sizes"]),
    (lambda r: control_budget([r], frames=0), ["--frames"]),
    (lambda r: control_budget([r], hz=0), ["--hz"]),
    (lambda r: control_budget([r], hz=float("inf")), ["--hz inf", "finite rate above 0"]),
    (lambda r: control_budget([r], hz=float("nan")), ["--hz nan", "finite rate above 0"]),
    (lambda r: control_budget([r], frames=1.5), ["--frames 1.5", "whole number"]),
    (lambda r: control_budget([r], cameras=True), ["--cameras True", "whole number"]),
    (lambda r: control_budget([r], cameras=0), ["--cameras"]),
    (lambda r: control_budget([r, image_tokens("pi0", (224, 224))]), ["several presets"]),
    (lambda r: control_budget([]), ["no image size"]),
])
def test_control_budget_usage_errors(call, words):
    with pytest.raises(UsageError) as e:
        call(image_tokens("smolvla", (480, 640)))
    assert all(w in e.value.message for w in words) and e.value.exit_code == 2


# ---- errors, options, records -----------------------------------------------------------------------------------


def test_unknown_preset_lists_the_valid_names():
    with pytest.raises(UsageError) as e:
        get_vlm_preset("llava-2")
    assert "llava-2" in e.value.message and all(n in e.value.hint for n in PRESETS)
    assert get_vlm_preset("Qwen2-VL") is PRESETS["qwen2-vl"]


@pytest.mark.parametrize("size", [(0, 224), (224, 0), (0, 0)])
def test_zero_size_is_a_usage_error(size):
    with pytest.raises(UsageError) as e:
        image_tokens("qwen2-vl", size)
    assert "1x1" in e.value.message


@pytest.mark.parametrize("preset,options,words", [
    ("llava-1.5", {"max_pixels": 1000}, ["--max-pixels", "llava-1.5", "none"]),
    ("qwen2-vl", {"max_tiles": 4}, ["--max-tiles", "--min-pixels, --max-pixels"]),
    ("qwen2-vl", {"min_pixels": 10_000, "max_pixels": 5_000}, ["--min-pixels 10000 is above --max-pixels 5000"]),
    ("qwen2-vl", {"max_pixels": 0}, ["--max-pixels 0", "at least 1"]),
    ("internvl", {"max_tiles": 2.5}, ["--max-tiles 2.5"]),
    ("gemma3", {"pan_and_scan": "yes"}, ["--pan-and-scan 'yes'", "true or false"]),
    ("gemma3", {"pan_and_scan_min_ratio": -1.0}, ["--pan-and-scan-min-ratio -1.0", "above 0"]),
])
def test_bad_options_are_usage_errors(preset, options, words):
    with pytest.raises(UsageError) as e:
        image_tokens(preset, (480, 640), **options)
    text = e.value.message + " " + (e.value.hint or "")
    assert all(w in text for w in words), text


def test_options_are_named_with_released_defaults_and_flags():
    assert [o.flag for o in PRESETS["qwen2-vl"].options] == ["--min-pixels", "--max-pixels"]
    assert [o.flag for o in PRESETS["internvl"].options] == ["--max-tiles", "--min-tiles"]
    assert PRESETS["gemma3"].option("pan_and_scan").default is False
    assert PRESETS["gemma3"].option("pan_and_scan_min_crop_size").default == 256
    r = image_tokens("gemma3", (1080, 1920))
    assert r.options == {"pan_and_scan": False, "pan_and_scan_min_crop_size": 256, "pan_and_scan_max_crops": 4,
                         "pan_and_scan_min_ratio": 1.2}
    assert image_tokens("qwen2-vl", (1080, 1920), max_pixels=None).options["max_pixels"] == 12_845_056
    # a CLI passes every flag; the ones not given (None) are ignored even where the preset has no such option
    assert image_tokens("llava-1.5", (1080, 1920), max_pixels=None, pan_and_scan=None).options == {}


def test_to_dict_fields():
    d = image_tokens("llava-next", (1080, 1920)).to_dict()
    for key in ("preset", "image", "resized", "tiles", "encoder_tokens", "visual_tokens", "special_tokens", "grid",
                "tile_grid", "rule", "total_tokens", "encoder_macs"):
        assert key in d
    assert d["image"] == [1080, 1920] and d["tiles"] == 5 and d["visual_tokens"] == 1948


def test_importing_vlm_pulls_in_no_torch_numpy_or_transformers():
    code = ("import sys, vitcli.core.vlm as v\n"
            "[v.control_budget([v.image_tokens(p.name, (1080, 1920))], hz=10) for p in v.list_presets()]\n"
            "print(sorted(m for m in ('torch', 'numpy', 'transformers', 'PIL', 'timm') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
