"""Read timm architectures without weights: build on the `meta` device, read the spec, count FLOPs.

Building on `meta` allocates no memory and downloads nothing (`pretrained=False`), so even ViT-g at 518 px
is read in well under a second.
"""

from __future__ import annotations

import difflib
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import timm
import torch
from timm.models.vision_transformer import VisionTransformer

from vitcli.core.spec import ViTSpec, split_model_name
from vitcli.core.tokens import Pair
from vitcli.errors import ModelError


def suggest_models(name: str, n: int = 3) -> list[str]:
    """The closest timm names (architectures and architecture.tag) to `name`."""
    arch, _ = split_model_name(name)
    pool = set(timm.list_models()) | set(timm.list_models(pretrained=True))
    return (difflib.get_close_matches(name, pool, n=n, cutoff=0.6)
            or difflib.get_close_matches(arch, pool, n=n, cutoff=0.6))


def unknown_model_error(name: str) -> ModelError:
    close = suggest_models(name)
    listing = "`python -c \"import timm; print(timm.list_models('vit_*'))\"` lists timm's ViTs"
    hint = f"did you mean {', '.join(close)}?" if close else listing
    return ModelError(f"unknown model {name!r}", hint=hint)


def hub_repo(name: str) -> str | None:
    """The Hugging Face repository a model's files come from: hf-hub:ORG/NAME, or timm's hf_hub_id for a name."""
    if name.startswith("hf-hub:"):
        return name.split(":", 1)[1]
    try:
        cfg = timm.models.get_pretrained_cfg(name)
    except Exception:  # an unknown name: reported by the caller's own error
        return None
    return getattr(cfg, "hf_hub_id", None) if cfg else None


def is_fetch_error(e: BaseException | None) -> bool:
    """A huggingface_hub or network failure anywhere in the exception chain."""
    while e is not None:
        mod = type(e).__module__ or ""
        if mod.startswith(("huggingface_hub", "httpx", "httpcore", "requests", "urllib3", "socket")) or isinstance(
                e, (ConnectionError, TimeoutError)):
            return True
        e = e.__cause__ or e.__context__
    return False


HUB_PROBE_SECONDS = 3.0
_hub_unreachable: str | None = None  # why the hub could not be reached, once probed in this process
_hub_probed = False


def probe_hub(timeout: float = HUB_PROBE_SECONDS) -> str | None:
    """Detect an unreachable Hugging Face hub once per process, in seconds: one request to the hub's endpoint
    through huggingface_hub's own HTTP session (its proxies and certificates), without retries. When it fails,
    huggingface_hub is switched to offline mode, so the local cache still answers and a file that is not in
    it fails at once instead of after a minute of retries. Returns the reason, or None when reachable (or
    already offline by HF_HUB_OFFLINE)."""
    global _hub_probed, _hub_unreachable
    from huggingface_hub import constants, get_session

    if _hub_probed or constants.HF_HUB_OFFLINE:
        return _hub_unreachable
    _hub_probed = True
    try:
        get_session().head(constants.ENDPOINT, timeout=timeout)
    except Exception as e:  # noqa: BLE001 — any failure to get an answer means: unreachable
        _hub_unreachable = type(e).__name__
        constants.HF_HUB_OFFLINE = True
        os.environ["HF_HUB_OFFLINE"] = "1"  # and for worker processes
    return _hub_unreachable


@contextmanager
def known_timm_errors(name: str, fetching: str = "configuration") -> Iterator[None]:
    """Turn timm's failures for `name` into one clean ModelError each: a missing local-dir folder, an unknown
    name or tag (with suggestions), and files that cannot be fetched from the hub (`fetching` says which).

    Before anything is fetched from the hub (an hf-hub: source, or pretrained weights), an unreachable hub is
    detected in seconds (`probe_hub`)."""
    if name.startswith("local-dir:") and not Path(name.split(":", 1)[1]).is_dir():
        raise ModelError(f"{name}: no such folder", hint="local-dir:PATH needs a folder with config.json and "
                                                         "model.safetensors (timm's save_for_hf format)")
    if name.startswith("hf-hub:") or fetching == "weights":
        probe_hub()
    try:
        yield
    except ModelError:
        raise
    except Exception as e:
        if isinstance(e, RuntimeError) and ("Unknown model" in str(e) or "Invalid pretrained tag" in str(e)):
            raise unknown_model_error(name) from e
        if is_fetch_error(e):
            repo = hub_repo(name)
            where = f" (Hugging Face hub: {repo})" if repo else ""
            ways = ("a Hugging Face cache that has them (HF_HOME), local-dir:PATH with config.json + model.safetensors"
                    + (", --checkpoint FILE, or --no-pretrained for random weights" if fetching == "weights" else ""))
            why = (f"the hub cannot be reached ({_hub_unreachable}) and they are not in the local cache"
                   if _hub_unreachable else type(e).__name__)
            raise ModelError(f"cannot fetch the {fetching} of {name}{where}: {why}", hint=f"ways out: {ways}") from e
        if isinstance(e, FileNotFoundError) and name.startswith("local-dir:"):
            raise ModelError(f"{name}: {e}", hint="local-dir:PATH needs config.json and model.safetensors "
                                                  "(timm's save_for_hf format)") from e
        raise


def build_meta(name: str, img_size: Pair | None = None, num_classes: int | None = None, **kwargs) -> torch.nn.Module:
    """Build timm model `name` on the meta device (shapes only), optionally at another input size."""
    if img_size is not None:
        kwargs["img_size"] = tuple(img_size)
    if num_classes is not None:
        kwargs["num_classes"] = num_classes
    with known_timm_errors(name), torch.device("meta"):
        return timm.create_model(name, pretrained=False, **kwargs)


def _not_supported(name: str, why: str) -> ModelError:
    return ModelError(f"{name}: {why}", hint="vitcli's analytic cost covers timm's VisionTransformer family "
                                             "(ViT, DeiT, DINOv2, SigLIP, CLIP); `vitcli variants` lists them")


def spec_from_model(model: torch.nn.Module, name: str) -> ViTSpec:
    """The ViTSpec of a built timm VisionTransformer; its parameter count is checked against the model's."""
    if not isinstance(model, VisionTransformer):
        raise _not_supported(name, f"is a {type(model).__name__}, not a timm VisionTransformer")
    block = model.blocks[0]
    attn, mlp = block.attn, block.mlp
    if not all(hasattr(x, a) for x, a in ((attn, "qkv"), (attn, "proj"), (mlp, "fc1"), (mlp, "fc2"))):
        raise _not_supported(name, "has blocks without qkv/proj and fc1/fc2 layers")
    identity = torch.nn.Identity
    arch, tag = split_model_name(name)
    spec = ViTSpec(
        timm_name=arch,
        name=arch,
        family="timm",
        img_size=tuple(model.patch_embed.img_size),
        patch_size=tuple(model.patch_embed.patch_size),
        embed_dim=model.embed_dim,
        depth=len(model.blocks),
        num_heads=attn.num_heads,
        mlp_dim=mlp.fc2.in_features,
        in_chans=model.patch_embed.proj.in_channels,
        class_token=model.cls_token is not None,
        reg_tokens=model.num_reg_tokens,
        no_embed_class=model.no_embed_class,
        patch_bias=model.patch_embed.proj.bias is not None,
        qkv_bias=attn.qkv.bias is not None,
        qk_norm=not isinstance(attn.q_norm, identity),
        layer_scale=not isinstance(block.ls1, identity),
        pre_norm=not isinstance(model.norm_pre, identity),
        mlp_gated=mlp.fc1.out_features == 2 * mlp.fc2.in_features,
        global_pool=model.global_pool,
        num_classes=model.num_classes,
        default_tag=tag or model.pretrained_cfg.get("tag") or "",
    )
    actual = sum(p.numel() for p in model.parameters())
    if spec.params != actual:
        raise _not_supported(name, f"has parts vitcli's formula does not cover ({spec.params:,} parameters "
                                   f"computed, timm has {actual:,})")
    return spec


def spec_from_timm(name: str, img_size: Pair | None = None, num_classes: int | None = None) -> ViTSpec:
    """Read the spec of any timm ViT name (`arch`, `arch.tag`, `local-dir:PATH`) without weights."""
    return spec_from_model(build_meta(name, img_size, num_classes), name)


def unfuse_attention(model: torch.nn.Module) -> int:
    """Switch timm's fused attention off everywhere, so QKᵀ and AV run as countable matmuls."""
    n = 0
    for module in model.modules():
        if hasattr(module, "fused_attn"):
            module.fused_attn = False
            n += 1
    return n


def measure_flops(name: str, img_size: Pair | None = None, num_classes: int | None = None, **model_kwargs) -> dict:
    """Count one forward pass (batch 1) with torch's FlopCounterMode, fused attention off, on `meta`.

    FlopCounterMode reads only shapes, so the meta device gives the same count as CPU (a test checks it)
    without allocating or computing anything. Returns FLOPs per aten op and the real parameter count.
    """
    from torch.utils.flop_counter import FlopCounterMode

    model = build_meta(name, img_size, num_classes, **model_kwargs).eval().requires_grad_(False)
    unfuse_attention(model)
    h, w = model.patch_embed.img_size
    x = torch.empty(1, model.patch_embed.proj.in_channels, h, w, device="meta")
    with FlopCounterMode(display=False) as counter, torch.no_grad():
        model(x)
    by_op = {str(op).removeprefix("aten."): int(v) for op, v in counter.get_flop_counts()["Global"].items()}
    return {
        "counter": "torch.utils.flop_counter.FlopCounterMode",
        "fused_attention": False,
        "flops": int(counter.get_total_flops()),
        "flops_by_op": by_op,
        "params": sum(p.numel() for p in model.parameters()),
    }
