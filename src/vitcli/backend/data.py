"""Preprocessing exactly as timm does it: `resolve_data_config` + `create_transform` from the model's config.

Never a hard-coded 224 or ImageNet mean: sizes, interpolation, crop_pct, crop_mode, mean and std all come
from the model's pretrained config. When the model is built at another size, the config's `input_size` is
overridden to match (timm itself keeps reporting the pretrained size, e.g. 518 for DINOv2 built at 224).
"""

from __future__ import annotations

from timm.data import create_transform, resolve_data_config
from torchvision import transforms as T

from vitcli.core.tokens import Pair
from vitcli.results import config_to_json


def data_config(model, img_size: Pair | None = None, squash: bool = False) -> dict:
    """timm's eval data config for a built model, at `img_size` when given.

    `squash`: resize straight to the input size, no crop (timm `crop_mode="squash"`, `crop_pct=1.0`; OpenVLA's
    resize-naive)."""
    args = {"input_size": (3, *img_size)} if img_size else {}
    if squash:
        args.update(crop_mode="squash", crop_pct=1.0)
    cfg = resolve_data_config(args, model=model)
    cfg["input_size"] = tuple(cfg["input_size"])
    cfg["mean"], cfg["std"] = tuple(float(v) for v in cfg["mean"]), tuple(float(v) for v in cfg["std"])
    return cfg


def eval_transform(cfg: dict):
    """timm's eval transform for `cfg`: PIL image -> normalised (3, H, W) float tensor."""
    return create_transform(**cfg, is_training=False)


def split_transform(transform) -> tuple[list, list]:
    """Split timm's Compose into the PIL stages (resize, crop) and the tensor stages (to tensor, normalise)."""
    stages = list(transform.transforms)
    for i, t in enumerate(stages):
        if isinstance(t, T.ToTensor) or type(t).__name__ in ("MaybeToTensor", "ToNumpy", "MaybePILToTensor"):
            return stages[:i], stages[i:]
    return stages, []


def pil_stages(cfg: dict):
    """A function applying only the PIL stages of timm's eval transform (what the model 'sees', as a picture)."""
    pil, _ = split_transform(eval_transform(cfg))

    def apply(img):
        for t in pil:
            img = t(img)
        return img

    return apply


def describe(cfg: dict) -> str:
    """One line: 'resize 248 (bicubic), centre-crop 224x224 (crop_pct 0.9, center); mean (...), std (...)'."""
    pil, _ = split_transform(eval_transform(cfg))
    parts = [repr(t).replace("\n", " ") for t in pil]
    mean = ", ".join(f"{v:.3f}" for v in cfg["mean"])
    std = ", ".join(f"{v:.3f}" for v in cfg["std"])
    return f"{' -> '.join(parts)}; normalise mean ({mean}) std ({std})"


def preprocessing_for(name: str, img_size: Pair | None = None):
    """How timm model `name` preprocesses, read on the meta device (no weights, no memory):
    (its ViTSpec, a function applying the PIL stages of its eval transform, a one-line description, the data
    config as JSON)."""
    from vitcli.backend.arch import build_meta, spec_from_model

    m = build_meta(name, img_size)
    cfg = data_config(m, img_size)
    return spec_from_model(m, name), pil_stages(cfg), describe(cfg), config_to_json(cfg)
