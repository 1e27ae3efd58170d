"""The closed sets of values flags take, as Enums: Typer checks them while parsing, before any model loads,
and its error lists the valid values. Standard library only."""

from __future__ import annotations

from enum import Enum


class Choice(str, Enum):
    """A str-valued Enum that prints as its value."""

    def __str__(self) -> str:
        return self.value


class Mode(Choice):
    cls = "cls"
    patch = "patch"
    mean = "mean"
    all = "all"


class Dtype(Choice):
    """Compute dtype: float32, or bfloat16/float16 autocast."""

    float32 = "float32"
    bfloat16 = "bfloat16"
    float16 = "float16"


class ActDtype(Choice):
    """Activation dtype of `cost`'s memory table."""

    float32 = "float32"
    bfloat16 = "bfloat16"
    float16 = "float16"
    int8 = "int8"


class OutDtype(Choice):
    float32 = "float32"
    float16 = "float16"


class Engine(Choice):
    """Where `features -o FOLDER/` computes its shards: this process (torchrun ranks, --task job arrays), or a
    Ray cluster (commands/features.py ENGINES)."""

    local = "local"
    ray = "ray"


class Family(Choice):
    vit = "vit"
    deit = "deit"
    dinov2 = "dinov2"
    siglip = "siglip"
    clip = "clip"


class Method(Choice):
    """Attribution methods of `explain`: the set vitcli.backend.explain.METHODS holds (a test checks), the
    most faithful first (docs/explain.md)."""

    occlusion = "occlusion"
    integrated_gradients = "integrated-gradients"
    gradcam = "gradcam"
    gradcam_pp = "gradcam++"
    layercam = "layercam"
    eigencam = "eigencam"
    grad_rollout = "grad-rollout"
    attention_rollout = "attention-rollout"


class Preset(Choice):
    """Named encoder recipes of `features` and `cost` (the VLM token presets of `tokens` are a superset)."""

    openvla = "openvla"


class TokensPreset(Choice):
    """The VLM/VLA presets of `tokens`: core/vlm.py PRESETS, in its order. Written out so that every command's
    start-up stays free of core/vlm's preset tables; tests/test_tokens.py checks the two are equal."""

    llava_1_5 = "llava-1.5"
    llava_next = "llava-next"
    llava_onevision = "llava-onevision"
    qwen2_vl = "qwen2-vl"
    qwen2_5_vl = "qwen2.5-vl"
    qwen3_vl = "qwen3-vl"
    internvl = "internvl"
    idefics3 = "idefics3"
    smolvlm = "smolvlm"
    gemma3 = "gemma3"
    paligemma_224 = "paligemma-224"
    paligemma_448 = "paligemma-448"
    paligemma_896 = "paligemma-896"
    pi0 = "pi0"
    smolvla = "smolvla"
    openvla = "openvla"


class PosReference(Choice):
    """Reference position embeddings `posembed --reference` draws (no weights needed)."""

    sincos = "sincos"


def value(choice) -> str | None:
    """The plain value of an Enum member (or None)."""
    return None if choice is None else getattr(choice, "value", choice)
