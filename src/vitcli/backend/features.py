"""Token features exactly as timm computes them: `forward_features` or `forward_intermediates`, per mode.

Shapes, per image (D: embed dim, T: tokens, N = gh·gw patch tokens, L: number of --layer values):
    cls   (D,)            the CLS token; for a model without one (SigLIP), its own pooled output
    patch (N, D)          patch tokens only, prefix removed; with grid: (gh, gw, D)
    mean  (D,)            mean of the patch tokens
    all   (T, D)          every token, prefix first
With several layers, a layer axis comes first: (L, D), (L, N, D), (L, gh, gw, D), (L, T, D), layers
ascending; one --layer gives the shapes above.
Several models (fused features) are concatenated along the last (channel) axis, in the order given.
"""

from __future__ import annotations

import torch

from vitcli.backend.internals import token_grid
from vitcli.backend.models import LoadedModel, autocast
from vitcli.errors import ModelError, UsageError
from vitcli.requests import FeatureRequest
from vitcli.results import Skipped
from vitcli.progress import Progress

class Extractor:
    """One model's features for a batch: (B, 3, H, W) -> (B, *row_shape), float32."""

    def __init__(self, model: LoadedModel, req: FeatureRequest):
        self.model, self.req = model, req
        m = model.module
        if not hasattr(m, "forward_intermediates") or not hasattr(m, "blocks"):
            raise ModelError(f"{model.info.name}: {type(m).__name__} has no transformer blocks to read tokens from",
                             hint="use a ViT-family timm model")
        depth = len(m.blocks)
        self.layers = None
        if req.layers is not None:
            self.layers = tuple(sorted({model.info.block_index(k) for k in req.layers}))
        self.depth = depth
        self.layer_axis = self.layers is not None and len(self.layers) > 1
        h, w = model.info.data_config["input_size"][1:]
        lay = token_grid(m, (h, w))
        self.prefix, self.has_cls, self.grid = lay.prefix, lay.has_cls, lay.grid
        if req.mode == "cls" and not self.has_cls and self.layers is not None:
            raise UsageError(f"{model.info.name} has no CLS token, and its pooled output exists only after the last "
                             "block", hint="use --mode mean or patch with --layer")
        self.dim = m.embed_dim
        n = self.grid[0] * self.grid[1]
        token_shape = {"cls": (self.dim,), "mean": (self.dim,), "all": (self.prefix + n, self.dim),
                       "patch": (*self.grid, self.dim) if req.grid else (n, self.dim)}[req.mode]
        self.row_shape = ((len(self.layers),) if self.layer_axis else ()) + token_shape

    @property
    def cls_source(self) -> str | None:
        if self.req.mode != "cls":
            return None
        return "cls token" if self.has_cls else f"pooled output ({self.model.module.global_pool} pooling)"

    def _select(self, t: torch.Tensor) -> torch.Tensor:
        """(B, T, D) tokens -> (B, *token_shape) for the mode."""
        p, mode = self.prefix, self.req.mode
        if mode == "all":
            return t
        if mode == "cls":
            return t[:, 0]
        patches = t[:, p:]
        if mode == "mean":
            return patches.mean(dim=1)
        return patches.reshape(t.shape[0], *self.grid, t.shape[-1]) if self.req.grid else patches

    def compile(self) -> None:
        """Run through torch.compile from now on (compiled on the first batch of each shape)."""
        self._compiled = torch.compile(self._tokens, dynamic=False)

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        return (getattr(self, "_compiled", None) or self._tokens)(x)

    def _tokens(self, x: torch.Tensor) -> torch.Tensor:
        m = self.model.module
        if self.layers is None:
            tokens = m.forward_features(x)  # (B, T, D), after the final norm
            if self.req.mode == "cls" and not self.has_cls:
                return m.forward_head(tokens, pre_logits=True).float()  # the model's own pooled output
            return self._select(tokens).float()
        outs = m.forward_intermediates(x, indices=list(self.layers), norm=self.req.norm, stop_early=self.req.stop_early,
                                       output_fmt="NLC", intermediates_only=True, return_prefix_tokens=True)
        per_layer = []
        for out in outs:  # block order = ascending layers
            tokens = torch.cat([out[1], out[0]], dim=1) if isinstance(out, tuple) else out  # (B, T, D)
            per_layer.append(self._select(tokens))
        if not self.layer_axis:
            return per_layer[0].float()
        return torch.stack(per_layer, dim=1).float()  # (B, L, ...)


def fused_row_shape(extractors: list[Extractor]) -> tuple[int, ...]:
    """Rows of several models concatenate along the channel axis; everything before it must match."""
    first = extractors[0]
    for e in extractors[1:]:
        if e.row_shape[:-1] != first.row_shape[:-1]:
            raise UsageError(
                f"cannot fuse {first.model.info.name} and {e.model.info.name}: their features are "
                f"{first.row_shape} and {e.row_shape} per image (patch grids {first.grid[0]}x{first.grid[1]} and "
                f"{e.grid[0]}x{e.grid[1]})", hint="choose sizes that give both models the same patch grid (--size)")
    return (*first.row_shape[:-1], sum(e.row_shape[-1] for e in extractors))


def return_freed_buffers() -> None:
    """Make glibc give large freed buffers back to the system at once. By default, once a block of up to 32 MiB
    has been freed, glibc raises its mmap threshold and serves later ones from the heap, which a long run's
    batches fragment: `benchmarks/memory.py` measured +110 to +240 MiB of resident memory over import + model +
    one batch, growing and shrinking from run to run. With a fixed 64 KiB threshold each large buffer is mapped
    and unmapped on its own (a few page faults per batch): +18 MiB. No-op off glibc."""
    import ctypes
    import platform

    if platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
        return
    try:
        ctypes.CDLL("libc.so.6").mallopt(-3, 64 * 1024)  # M_MMAP_THRESHOLD
    except (OSError, AttributeError):
        pass


def extract(extractors: list[Extractor], pool, recipe, items, write, start: int = 0, stop: int | None = None,
            batch_size: int = 32, progress: Progress | None = None, group: int = 1,
            ranges: list[tuple[int, int]] | None = None, timing: dict | None = None) -> None:
    """Run rows of `items` (decoded by `pool`, a started `vitcli.decode.DecodePool` primed with exactly these
    rows) through every extractor, in batches at fixed positions (multiples of `batch_size` from row 0).

    Rows: [start, stop), or several `ranges` in order. `group`: items per row (fused cameras): each row's
    `group` pictures go through the models and are concatenated along channels, camera-major (camera 0's
    channels of every model, then camera 1's...). After each batch:
    `write(rows (k, *row_shape) numpy float32 or None, next_row, skipped dicts with their "position")`.
    `timing`: filled with the seconds the first batch took in the models (`first_batch_s`: with torch.compile,
    the compilation).
    """
    import time

    from vitcli.backend.pipeline import batches

    return_freed_buffers()
    progress = progress or Progress()
    ranges = [(start, len(items) // group if stop is None else stop)] if ranges is None else ranges
    device = torch.device(extractors[0].model.info.device)
    dtype = extractors[0].model.info.dtype
    progress.start(sum(b - a for a, b in ranges), "features")
    with torch.inference_mode():
        for batch in batches(pool, recipe, batch_size, device, ranges, group):
            skipped = [{**Skipped(items[pos].origin, out.error, items[pos].frame).to_dict(), "position": pos // group}
                       for pos, out in batch.failures]
            rows = None
            if batch.tensors is not None:
                t = time.perf_counter()
                with autocast(device, dtype):
                    parts = [e(x) for e, x in zip(extractors, batch.tensors)]
                if timing is not None and "first_batch_s" not in timing:
                    if device.type == "cuda":  # the kernels run asynchronously: wait for them
                        torch.cuda.synchronize(device)
                    timing["first_batch_s"] = time.perf_counter() - t
                out = torch.cat(parts, dim=-1)  # (B * group, *row_shape)
                if group > 1:  # cameras of a row side by side along channels
                    out = out.reshape(-1, group, *out.shape[1:]).movedim(1, -2).flatten(-2)
                rows = out.float().cpu().numpy()
            write(rows, batch.end, skipped)
            progress.advance(len(batch.positions) + len(batch.failures))
    progress.close()
