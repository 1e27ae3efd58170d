"""Load timm models from every source timm knows, safely, and describe them without leaking torch.

Sources: a timm name (`arch` or `arch.tag`, weights from the Hugging Face hub through timm, cached),
`hf-hub:org/name`, `local-dir:PATH` (timm's folder format: config.json + model.safetensors), or a timm
architecture plus `--checkpoint FILE` (.safetensors, or .pth/.bin through `torch.load(weights_only=True)`,
state dicts nested under `state_dict` / `model` handled by timm's `load_state_dict`). Nothing here executes
code from a checkpoint: a pickle that would is refused.
"""

from __future__ import annotations

import pickle
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path

import timm
import torch

from vitcli.backend.arch import known_timm_errors
from vitcli.backend.data import data_config
from vitcli.core.spec import split_model_name
from vitcli.core.tokens import Pair
from vitcli.errors import ModelError, UsageError
from vitcli.requests import ModelRequest
from vitcli.results import ModelInfo

DEFAULT_MODEL = "vit_base_patch16_224.augreg2_in21k_ft_in1k"
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


@dataclass
class LoadedModel:
    module: torch.nn.Module
    info: ModelInfo


def autocast(device: torch.device, dtype: str):
    """Mixed precision for bfloat16/float16 (weights stay float32); nothing for float32."""
    if dtype == "float32":
        return nullcontext()
    return torch.autocast(device_type=device.type, dtype=DTYPES[dtype])


def source_of(name: str) -> str:
    if name.startswith("hf-hub:"):
        return "hf-hub"
    if name.startswith("local-dir:"):
        return "local-dir"
    return "timm"


def resolve_device(device: str) -> torch.device:
    """auto -> cuda, then mps, then cpu; an unavailable device is a usage error."""
    if device == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if getattr(torch.backends, "mps", None) and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise UsageError(f"--device {device}: CUDA is not available here", hint="use --device cpu or auto")
    if device == "mps" and not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
        raise UsageError("--device mps: MPS is not available here", hint="use --device cpu or auto")
    return torch.device(device)


def _blocked_pickle(e: BaseException) -> str | None:
    """When torch.load(weights_only=True) refused a pickle somewhere in the chain: what it named, else None."""
    while e is not None:
        if isinstance(e, pickle.UnpicklingError) or "weights_only=True blocked" in str(e):
            text = str(e).replace("\n", " ")
            if "Unsupported globals:" in text:
                return "Unsupported globals:" + text.split("Unsupported globals:", 1)[1].split(". ")[0].rstrip(".")
            return "torch.load(weights_only=True) refused it"
        e = e.__cause__ or e.__context__
    return None


def _refused(what: str, why: str) -> ModelError:
    return ModelError(f"{what}: refused, the file is a pickle that would run code or build objects other than "
                      f"tensors ({why})", hint="only plain state dicts load; convert checkpoints you trust to "
                                               ".safetensors")


def read_checkpoint(path: str) -> dict:
    """A checkpoint's state dict, through timm's `load_state_dict(weights_only=True)`: safetensors, or a
    .pth/.bin whose pickle may hold only tensors and plain containers (nested `state_dict`/`model`/EMA keys and
    a `module.` prefix handled by timm). A pickle that would run code is refused."""
    p = Path(path)
    if not p.is_file():
        raise ModelError(f"--checkpoint {path}: no such file")
    try:
        return timm.models.load_state_dict(str(p), weights_only=True)
    except RuntimeError as e:
        if (why := _blocked_pickle(e)) is not None:
            raise _refused(f"--checkpoint {path}", why) from e
        raise ModelError(f"--checkpoint {path}: cannot load ({str(e).splitlines()[0]})") from e
    except (OSError, ValueError, EOFError, pickle.UnpicklingError) as e:
        raise ModelError(f"--checkpoint {path}: cannot read ({type(e).__name__}: {e})".splitlines()[0]) from e


def head_size(state_dict: dict) -> int:
    """The classifier size stored in a state dict: rows of head.weight, 0 without a head."""
    w = state_dict.get("head.weight")
    return int(w.shape[0]) if w is not None and w.ndim == 2 else 0


def apply_checkpoint(model: torch.nn.Module, state_dict: dict, path: str) -> None:
    try:
        model.load_state_dict(state_dict, strict=True)
    except RuntimeError as e:
        arch = model.pretrained_cfg.get("architecture", "the model")
        raise ModelError(f"--checkpoint {path} does not fit {arch}: {str(e).splitlines()[0]}",
                         hint="name the matching architecture with --model, and --num-classes when the head "
                              "differs") from e


def load_model(request: ModelRequest, img_size: Pair | None = None, **model_kwargs) -> LoadedModel:
    """Build and load the requested timm model in eval mode on its device.

    `img_size` rebuilds the model for another input size (timm resamples the position embedding of the
    pretrained weights); the data config follows it. `request.squash` resizes without cropping.
    `device="meta"` builds shapes only (no weights, no memory), for inspecting layouts.
    """
    name, checkpoint, num_classes = request.name or DEFAULT_MODEL, request.checkpoint, request.num_classes
    pretrained, dtype = request.pretrained, request.dtype
    dev = resolve_device(request.device)
    source = source_of(name)
    arch, tag = split_model_name(name)
    kwargs = dict(model_kwargs)
    if img_size is not None:
        kwargs["img_size"] = tuple(img_size)
    state_dict = read_checkpoint(checkpoint) if checkpoint else None  # read once: it may be gigabytes
    if state_dict is not None and num_classes is None:
        num_classes = head_size(state_dict)
    if num_classes is not None:
        kwargs["num_classes"] = num_classes
    use_hub = pretrained and not checkpoint and dev.type != "meta"
    if not pretrained:
        torch.manual_seed(0)  # random weights, but the same ones every run: results are reproducible
    try:
        with known_timm_errors(name, "weights" if use_hub else "configuration"), \
                torch.device(dev) if dev.type == "meta" else nullcontext():
            model = timm.create_model(name, pretrained=use_hub, **kwargs)
    except ModelError:
        raise
    except Exception as e:
        if (why := _blocked_pickle(e)) is not None:
            raise _refused(f"{name} weights", why) from e
        raise ModelError(f"{name}: cannot build the model ({type(e).__name__}: {e})".splitlines()[0]) from e
    if state_dict is not None:
        apply_checkpoint(model, state_dict, checkpoint)
        del state_dict
        weights = f"checkpoint {checkpoint}"
    elif dev.type == "meta":
        weights = "none (meta device: shapes only)"
    elif use_hub:
        cfg = model.pretrained_cfg
        weights = (f"{source} {name.split(':', 1)[1]}" if source != "timm"
                   else f"hf-hub {cfg.get('hf_hub_id') or cfg.get('url') or name}")
    else:
        weights = "random, seed 0 (--no-pretrained)"
    model = model.eval().requires_grad_(False).to(dev)
    cfg = data_config(model, img_size, request.squash)
    pe, blocks = getattr(model, "patch_embed", None), getattr(model, "blocks", None)
    info = ModelInfo(
        name=name, source=source, arch=model.pretrained_cfg.get("architecture", arch), tag=tag or
        model.pretrained_cfg.get("tag"), weights=weights, pretrained=use_hub or bool(checkpoint),
        num_classes=getattr(model, "num_classes", 0), data_config=cfg, device=str(dev), dtype=dtype,
        num_prefix_tokens=getattr(model, "num_prefix_tokens", 0),
        patch_size=tuple(pe.patch_size) if pe is not None else None,
        img_size=tuple(pe.img_size) if pe is not None and pe.img_size is not None else None,
        depth=len(blocks) if blocks is not None else None,
        num_heads=getattr(getattr(blocks[0], "attn", None), "num_heads", None) if blocks else None,
        embed_dim=getattr(model, "embed_dim", None),
    )
    return LoadedModel(model, info)


def label_names(model: LoadedModel, labels_file: str | None = None, names: list[str] | None = None) -> list[str]:
    """Class names: --labels FILE (`names`, as `inputs.read_labels` read it before the model loaded), the model's
    own label names/descriptions, ImageNet names by class count, or 'class i'."""
    n = model.info.num_classes
    if labels_file:
        if names is None:
            from vitcli.inputs import read_labels

            names = read_labels(labels_file)
        if len(names) != n:
            raise UsageError(f"--labels {labels_file} has {len(names)} labels but the model has {n} classes",
                             hint="give one label per line, in class-index order")
        return names
    cfg = model.module.pretrained_cfg
    for key in ("label_descriptions", "label_names"):
        own = cfg.get(key)
        if isinstance(own, dict):
            own = [own[k] for k in sorted(own, key=lambda k: int(k) if str(k).isdigit() else k)]
        if own and len(own) == n and not _looks_like_synsets(own):
            return [str(x) for x in own]
    subset = timm.data.infer_imagenet_subset(model.module)
    if subset:
        info = timm.data.ImageNetInfo(subset)
        return [info.index_to_description(i) for i in range(n)]
    return [f"class {i}" for i in range(n)]


def _looks_like_synsets(names) -> bool:
    return all(isinstance(x, str) and len(x) == 9 and x[0] == "n" and x[1:].isdigit() for x in list(names)[:5])

