"""timm's eval preprocessing on uint8 tensors, on any device: the GPU path of `vitcli.preprocess.Plan`.

- `normalize_u8_batch` / `normalize_u8_chw`: uint8 pixels -> timm's normalised float32 input, bit-identical
  to timm's `MaybeToTensor` + `Normalize` on CPU, on every device. CPU tensors are normalised with
  torchvision's own arithmetic, `x.float().div(255).sub(mean).div(std)` (bit-identical there, and faster than a
  lookup). Tensors on other devices look values up in a (3, 256) table that timm's own tensor stages computed
  on CPU, so no float arithmetic happens on the device. (Computing on the device is not safe: CUDA turns a
  division by a Python scalar into a multiplication by its float32 reciprocal (ATen `div_true_kernel_cuda`,
  "may lose one bit of precision"): that is `x * (1/255)`, which differs from `x / 255` for 126 of the 256
  byte values.)
- `resize_crop_tensor`: the plan's resize + crop/pad with `torch.nn.functional.interpolate(antialias=True)`
  (the antialiased kernels are PIL's filters, bicubic with a = -0.5) - close to PIL, not identical: PIL rounds
  to uint8 between its horizontal and vertical passes and uses fixed-point weights. The difference is measured
  in tests/test_preprocess.py.
- `decode_jpeg_batch`: JPEG bytes -> uint8 (3, H, W) tensors on `device`, nvJPEG on CUDA through
  `torchvision.io.decode_jpeg`, EXIF orientation applied, per-image PIL fallback for everything else; a
  picture neither can read comes back as its InputError, in its place.
"""

from __future__ import annotations

import functools
import io
import warnings
from collections.abc import Callable, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from vitcli.errors import InputError
from vitcli.imaging import open_image
from vitcli.preprocess import NotExact, Plan

__all__ = ["normalize_lut", "normalize_u8_batch", "normalize_u8_chw", "resize_crop_tensor", "orient",
           "decode_jpeg_batch", "TENSOR_MODES"]


# ---- normalisation ------------------------------------------------------------------------------------------

@functools.lru_cache(maxsize=16)
def _cpu_lut(mean: tuple[float, ...], std: tuple[float, ...]) -> torch.Tensor:
    from timm.data.transforms import MaybeToTensor
    from torchvision import transforms

    ramp = np.repeat(np.arange(256, dtype=np.uint8)[None, :, None], 3, axis=2)  # (1, 256, 3): every byte value
    # timm's tensor stages, built as transforms_imagenet_eval builds them, applied to that picture
    x = MaybeToTensor()(Image.fromarray(ramp, "RGB"))  # (3, 1, 256)
    x = transforms.Normalize(mean=torch.tensor(mean), std=torch.tensor(std))(x)
    return x[:, 0, :].contiguous()  # (3, 256) float32


@functools.lru_cache(maxsize=16)
def _device_lut(mean: tuple[float, ...], std: tuple[float, ...], device: torch.device) -> torch.Tensor:
    return _cpu_lut(mean, std).to(device)


def normalize_lut(plan: Plan, device: str | torch.device = "cpu") -> torch.Tensor:
    """(3, 256) float32 on `device` (cached): `lut[c, v]` is timm's normalised value of byte `v` in channel `c`,
    computed by timm's own tensor stages on CPU."""
    return _device_lut(plan.mean, plan.std, torch.device(device))


def normalize_u8_chw(u8: torch.Tensor, plan: Plan) -> torch.Tensor:
    """uint8 (B, 3, H, W) or (3, H, W) -> float32 of the same shape on the same device, equal bit for bit to
    timm's ToTensor + Normalize of the same pixels on CPU."""
    if u8.dtype != torch.uint8 or u8.dim() not in (3, 4) or u8.shape[-3] != 3:
        raise ValueError(f"expected uint8 (B, 3, H, W) or (3, H, W), got {u8.dtype} {tuple(u8.shape)}")
    if u8.device.type == "cpu":  # torchvision's own arithmetic, bit-identical on CPU and faster than the lookup
        shape = (3, 1, 1)
        mean = torch.tensor(plan.mean, dtype=torch.float32).view(shape)
        std = torch.tensor(plan.std, dtype=torch.float32).view(shape)
        return u8.float().div(255).sub(mean).div(std)
    lut = normalize_lut(plan, u8.device).reshape(-1)  # (768,)
    offset = torch.arange(0, 768, 256, dtype=torch.int32, device=u8.device).view(3, 1, 1)
    idx = (u8.to(torch.int32) + offset).reshape(-1)
    return lut.index_select(0, idx).view(u8.shape)


def normalize_u8_batch(u8: torch.Tensor, plan: Plan) -> torch.Tensor:
    """uint8 (B, H, W, 3) (stacked `plan.to_array` outputs) -> float32 (B, 3, H, W), bit-identical to timm's
    full eval transform of the same images on CPU, on any device."""
    if u8.dim() != 4 or u8.shape[-1] != 3:
        raise ValueError(f"expected uint8 (B, H, W, 3), got {u8.dtype} {tuple(u8.shape)}")
    return normalize_u8_chw(u8.permute(0, 3, 1, 2), plan).contiguous()


# ---- resize and crop on tensors -----------------------------------------------------------------------------

TENSOR_MODES = ("bilinear", "bicubic")  # the plan interpolations `resize_crop_tensor` reproduces


def _pass(x: torch.Tensor, size: tuple[int, int], mode: str) -> torch.Tensor:
    y = F.interpolate(x.float(), size=size, mode=mode, align_corners=False, antialias=True)
    return y.round_().clamp_(0, 255).to(torch.uint8)


def _resize(x: torch.Tensor, size: tuple[int, int], mode: str) -> torch.Tensor:
    """uint8 (B, 3, h, w) -> uint8 (B, 3, *size), as PIL resamples: the width first, then the height, each
    pass rounded and clipped to uint8."""
    h, w = x.shape[-2:]
    if w != size[1]:
        x = _pass(x, (h, size[1]), mode)
    if h != size[0]:
        x = _pass(x, size, mode)
    return x


def resize_crop_tensor(u8: torch.Tensor, plan: Plan) -> torch.Tensor:
    """The plan's PIL stages on uint8 (3, h, w) or (B, 3, h, w) (one size for the batch), on its device.

    Returns uint8 (3, H, W) or (B, 3, H, W). Bilinear and bicubic only (every timm pretrained config uses
    one of them): `interpolate(..., antialias=True)` on float32 - PIL's filters, bicubic a = -0.5 - one axis at
    a time, width first, rounded to uint8 after each pass as PIL does. Other filters raise NotExact: use the PIL
    path for them."""
    if u8.dtype != torch.uint8 or u8.dim() not in (3, 4) or u8.shape[-3] != 3:
        raise ValueError(f"expected uint8 (B, 3, H, W) or (3, H, W), got {u8.dtype} {tuple(u8.shape)}")
    if plan.interpolation not in TENSOR_MODES:
        raise NotExact(f"interpolation {plan.interpolation!r} has no torch equivalent")
    single = u8.dim() == 3
    x = u8.unsqueeze(0) if single else u8
    h, w = x.shape[-2:]
    g = plan.geometry((h, w))
    left, top, right, bottom = g.trim
    if right > w or bottom > h or right <= left or bottom <= top:
        raise NotExact(f"crop_border_pixels {plan.trim} leaves nothing of a {h}x{w} image")
    x = x[..., top:bottom, left:right]
    rh, rw = g.resized
    if (rh, rw) != tuple(x.shape[-2:]):
        x = _resize(x, (rh, rw), plan.interpolation)
    (H, W), (cl, ct) = plan.size, g.crop
    if cl >= 0 and ct >= 0 and cl + W <= rw and ct + H <= rh:
        out = x[..., ct:ct + H, cl:cl + W]
    else:  # pad with the plan's fill where the crop is larger than the resized image
        out = torch.tensor(plan.fill, dtype=torch.uint8, device=x.device).view(1, 3, 1, 1)
        out = out.expand(x.shape[0], 3, H, W).clone()
        x0, y0, x1, y1 = max(cl, 0), max(ct, 0), min(cl + W, rw), min(ct + H, rh)
        out[..., y0 - ct:y1 - ct, x0 - cl:x1 - cl] = x[..., y0:y1, x0:x1]
    out = out.contiguous()
    return out[0] if single else out


# ---- JPEG decoding on the device ----------------------------------------------------------------------------

def orient(x: torch.Tensor, orientation: int) -> torch.Tensor:
    """Apply EXIF orientation 1..8 to (..., H, W), as PIL's `ImageOps.exif_transpose` does."""
    if orientation == 2:
        return x.flip(-1)
    if orientation == 3:
        return x.flip((-2, -1))
    if orientation == 4:
        return x.flip(-2)
    if orientation == 5:
        return x.transpose(-2, -1)
    if orientation == 6:
        return torch.rot90(x, -1, (-2, -1))
    if orientation == 7:
        return x.flip((-2, -1)).transpose(-2, -1)
    if orientation == 8:
        return torch.rot90(x, 1, (-2, -1))
    return x


def _device_jpeg(data: bytes) -> int | None:
    """EXIF orientation of a JPEG nvJPEG can take (RGB/gray, within PIL's pixel limit); None otherwise."""
    try:
        with Image.open(io.BytesIO(data)) as img:
            limit = Image.MAX_IMAGE_PIXELS
            if img.format != "JPEG" or img.mode not in ("RGB", "L") or (limit and img.width * img.height > limit):
                return None
            return img.getexif().get(0x0112, 1)
    except Exception:  # noqa: BLE001 - the fallback reports it
        return None


def _decode(tensors: list[torch.Tensor], device) -> list[torch.Tensor]:
    from torchvision.io import ImageReadMode, decode_jpeg

    with warnings.catch_warnings():  # torchvision 0.29 deprecates its decoders in favour of torchcodec
        warnings.simplefilter("ignore", DeprecationWarning)
        return decode_jpeg(tensors, mode=ImageReadMode.RGB, device=device)


def decode_jpeg_batch(datas: Sequence[bytes], device: str | torch.device,
                      fallback: Callable[[int], Image.Image] | None = None,
                      names: Sequence[str] | None = None) -> list[torch.Tensor | InputError]:
    """Encoded images -> uint8 (3, H, W) tensors on `device`, EXIF orientation applied, in input order.

    JPEGs go through one batched `torchvision.io.decode_jpeg(..., device=device)` (nvJPEG on CUDA); if the
    batch fails, each is retried alone. Anything else (PNG, CMYK JPEG, over PIL's pixel limit, a JPEG the
    device decoder rejects) goes to `fallback(i)` -> RGB PIL image, by default `imaging.open_image` on the
    bytes. A picture that neither can read is, in its place, the InputError that says why (naming `names[i]`,
    by default "image i"): one bad file does not stop the others."""
    out: list[torch.Tensor | InputError | None] = [None] * len(datas)
    orientations = [_device_jpeg(d) for d in datas]
    todo = [i for i, o in enumerate(orientations) if o is not None]
    if todo:
        encoded = [torch.from_numpy(np.frombuffer(datas[i], dtype=np.uint8).copy()) for i in todo]
        try:
            decoded = _decode(encoded, device)
        except RuntimeError:
            decoded = []
            for t in encoded:
                try:
                    decoded.append(_decode([t], device)[0])
                except RuntimeError:
                    decoded.append(None)
        for i, t in zip(todo, decoded):
            if t is not None:
                out[i] = orient(t, orientations[i]).contiguous()
    for i, t in enumerate(out):
        if t is None:
            try:
                img = fallback(i) if fallback else open_image(names[i] if names else f"image {i}", data=datas[i]).image
            except InputError as e:
                out[i] = e
                continue
            arr = np.asarray(img.convert("RGB"), dtype=np.uint8)
            out[i] = torch.from_numpy(arr.copy()).permute(2, 0, 1).contiguous().to(device)
    return out
