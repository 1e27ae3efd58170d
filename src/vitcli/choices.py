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


class Family(Choice):
    vit = "vit"
    deit = "deit"
    dinov2 = "dinov2"
    siglip = "siglip"
    clip = "clip"


class Preset(Choice):
    """Named encoder recipes of `features` and `cost` (the VLM token presets of `tokens` are a superset)."""

    openvla = "openvla"


def value(choice) -> str | None:
    """The plain value of an Enum member (or None)."""
    return None if choice is None else getattr(choice, "value", choice)
