"""`vitcli explore`: one self-contained HTML page to explore how a ViT sees one image.

Patches (the model's input and its grid, each patch's box in the original image), attention of every block and
head for any query token, rollout up to each block, PCA colours and cosine similarity of the patch tokens per
block, the top-5 classes when the model has a classifier, and the token and cost summary: all from one forward
pass (`vitcli.backend.explore`), quantised and packed by `vitcli.explore_page` into one file that loads nothing.

Before the model runs, the page's size is bounded from the architecture (`explore_page.estimate_bytes`: every
array stored raw, which deflating only shrinks) and a page over `explore_page.LIMIT_BYTES` is refused with the
largest `--size` that fits: attention grows with the square of the token count.
"""

from __future__ import annotations

import shlex
from dataclasses import dataclass, field

from vitcli import __version__
from vitcli.core.tokens import Pair, fmt_pair, parse_pair
from vitcli.errors import ModelError, UsageError
from vitcli.outputs import check_targets
from vitcli.progress import SILENT, Reporter
from vitcli.requests import ModelRequest, needs_forward
from vitcli.results import ModelInfo

RANDOM_PAGE = ("--no-pretrained: random weights, the page shows the machinery, not what a trained ViT does "
               "(a red banner on the page says so)")


@dataclass(frozen=True, kw_only=True)
class ExploreRequest:
    image: str
    out: str  # the HTML page
    model: ModelRequest = ModelRequest()
    size: Pair | None = None  # rebuild the model for this input size (N or HxW)
    force: bool = False
    command: str | None = None  # the command line the page names; default: `command_line()` of this request

    def __post_init__(self):
        if not self.out:
            raise UsageError("-o/--out: give the path of the HTML page to write", hint="e.g. -o page.html")
        needs_forward(self.model, "the page")
        if self.size is not None:
            object.__setattr__(self, "size", parse_pair(self.size, "--size"))

    def command_line(self) -> str:
        """The `vitcli explore ...` command that makes this page, options in a fixed order (--force left out)."""
        m = self.model
        words = ["vitcli", "explore", self.image]
        words += ["--model", m.name] if m.name else []
        words += ["--checkpoint", m.checkpoint] if m.checkpoint else []
        words += [] if m.pretrained else ["--no-pretrained"]
        words += ["--size", fmt_pair(self.size)] if self.size else []
        words += ["--device", m.device] if m.device != "auto" else []
        return shlex.join([*words, "-o", self.out])


@dataclass(frozen=True)
class ExploreResult:
    model: ModelInfo
    image: str
    out: str
    bytes: dict  # bytes of each part of the page (base64 text, UTF-8), "total" = the file
    estimate_bytes: int  # the bound checked before the forward pass
    limit_bytes: int
    input_size: tuple  # (H, W) the model's input
    grid: tuple  # (gh, gw)
    blocks: int
    heads: int
    tokens: int  # T = prefix + gh * gw
    cls_token: bool
    registers: int
    top5: list | None  # [{index, label, prob}], None without a classifier
    summary: dict  # the page's "Tokens and cost" table
    command: str
    notes: tuple = field(default_factory=tuple)

    def to_dict(self) -> dict:
        return {"path": self.out, "bytes": dict(self.bytes), "estimate_bytes": self.estimate_bytes,
                "limit_bytes": self.limit_bytes, "units": {"bytes": "bytes of the page's text (UTF-8)"},
                "model": self.model.to_dict(), "image": self.image, "input_size": list(self.input_size),
                "grid": list(self.grid), "blocks": self.blocks, "heads": self.heads, "tokens": self.tokens,
                "cls_token": self.cls_token, "registers": self.registers, "top5": self.top5,
                "summary": self.summary, "command": self.command, "notes": list(self.notes)}


# ---- the size budget, before any model runs --------------------------------------------------------------------

@dataclass(frozen=True)
class Shape:
    """What the page's size depends on: blocks, heads, input (H, W), patch (ph, pw), prefix tokens."""

    blocks: int
    heads: int
    size: Pair
    patch: Pair
    prefix: int

    @property
    def grid(self) -> Pair:
        return (self.size[0] // self.patch[0], self.size[1] // self.patch[1])

    def estimate(self) -> int:
        from vitcli.explore_page import estimate_bytes

        gh, gw = self.grid
        return estimate_bytes(blocks=self.blocks, heads=self.heads, tokens=self.prefix + gh * gw,
                              patches=gh * gw, image_size=self.size)

    def largest_fitting(self, limit: int) -> Pair | None:
        """The largest input size with the same aspect, a whole number of patches, whose page fits `limit`."""
        (ph, pw), (gh, gw) = self.patch, self.grid
        for rows in range(gh, 0, -1):
            cols = max(1, round(gw * rows / gh))
            size = (rows * ph, cols * pw)
            if Shape(self.blocks, self.heads, size, self.patch, self.prefix).estimate() <= limit:
                return size
        return None


def check_budget(shape: Shape, name: str) -> int:
    """The page's size bound in bytes; a UsageError naming the largest --size that fits when it is too big."""
    from vitcli.explore_page import LIMIT_BYTES

    bound = shape.estimate()
    if bound <= LIMIT_BYTES:
        return bound
    gh, gw = shape.grid
    fit = shape.largest_fitting(LIMIT_BYTES)
    raise UsageError(
        f"{name} at {fmt_pair(shape.size)} would make a page of up to {bound / 1e6:.1f} MB ({shape.blocks} blocks x "
        f"{shape.heads} heads x {shape.prefix + gh * gw}² attention values), over the {LIMIT_BYTES / 1e6:.0f} MB "
        "limit", hint=(f"use a smaller input, e.g. --size {fmt_pair(fit)}" if fit else "use a smaller model"))


def known_shape(name: str, size: Pair | None) -> Shape | None:
    """The page's shape from vitcli's table of ViTs (no torch, no download), or None for other models."""
    from vitcli.core.spec import known_spec

    spec = known_spec(name)
    if spec is None:
        return None
    spec = spec.at_size(size)
    return Shape(spec.depth, spec.num_heads, tuple(spec.img_size), tuple(spec.patch_size),
                 int(spec.class_token) + spec.reg_tokens)


# ---- the page ---------------------------------------------------------------------------------------------------

def patch_boxes(cfg: dict, original: Pair, grid: Pair, patch: Pair):
    """Each patch's box (x0, y0, x1, y1) in the ORIGINAL image: (N, 4) float64, row-major, clipped to it.

    From `vitcli.preprocess.Plan.geometry` (trim, resize, crop or pad, exactly as timm's eval transform). The
    boxes depend only on sizes, so a config whose interpolation vitcli cannot replay uses bilinear's geometry."""
    import numpy as np

    from vitcli.preprocess import NotExact, Plan

    try:
        plan = Plan.from_config(cfg)
    except NotExact:
        try:
            plan = Plan.from_config({**cfg, "interpolation": "bilinear"})
        except NotExact as e:
            raise ModelError(f"cannot map the patches back to the image: {e}",
                             hint="use a model whose data config timm's standard eval transform covers") from e
    g = plan.geometry(original)
    (gh, gw), (ph, pw), (h0, w0) = grid, patch, original
    r, c = np.divmod(np.arange(gh * gw), gw)
    x0, y0 = g.to_original(c * pw, r * ph)
    x1, y1 = g.to_original((c + 1) * pw, (r + 1) * ph)
    return np.clip(np.stack([x0, y0, x1, y1], axis=1).astype(np.float64), 0.0, [w0, h0, w0, h0])


def summary_of(module, name: str, info: ModelInfo, shape: Shape, layout) -> tuple[dict, str | None]:
    """The page's "Tokens and cost" table, and why the cost is not available (None when it is).

    Cost: vitcli's analytic count (`vitcli cost`) of the model as built, when it is in the ViT family whose
    parameters the formula matches exactly (`backend.arch.spec_from_model` checks); otherwise "not available"."""
    from vitcli.backend.arch import spec_from_model
    from vitcli.core.cost import cost_report

    (gh, gw), regs = layout.grid, layout.registers
    prefix = " + ".join(x for x in (("CLS" if layout.has_cls else ""),
                                     (f"{regs} register{'s' if regs != 1 else ''}" if regs else "")) if x) or "none"
    summary = {"input size": list(shape.size), "patch size": list(shape.patch), "grid": [gh, gw],
               "patch tokens": gh * gw, "prefix tokens": prefix, "sequence length": layout.prefix + gh * gw,
               "blocks × heads": [shape.blocks, shape.heads], "width": info.embed_dim}
    try:
        report = cost_report(spec_from_model(module, name))
    except ModelError as e:
        summary["cost"] = f"not available: {e.message}"
        return summary, e.message
    summary.update({"params": report.params, "MACs per image": report.macs, "FLOPs per image": report.flops,
                    "attention matmuls": f"{100 * report.attention_share:.1f}% of MACs (QKᵀ and AV)"})
    return summary, None


def run_explore(req: ExploreRequest, ui: Reporter = SILENT) -> ExploreResult:
    """Write the page: one forward pass, the arrays quantised to 8 bits, everything in one HTML file."""
    import io

    from vitcli.backend import internals
    from vitcli.backend.data import pil_stages
    from vitcli.backend.explore import explore_arrays
    from vitcli.backend.models import DEFAULT_MODEL, load_model
    from vitcli.explore_page import LIMIT_BYTES, pack_page
    from vitcli.inputs import open_single
    from vitcli.outputs import atomic_output, ensure_room

    (target,) = check_targets([req.out], req.force)
    loaded = open_single(req.image)  # a bad image (or video frame) fails here, before the model loads
    name = req.model.name or DEFAULT_MODEL
    early = known_shape(name, req.size)
    if early is not None:
        check_budget(early, name)  # a page too big is refused before any weights load
    if not req.model.pretrained:
        ui.warn(RANDOM_PAGE)
    model = load_model(req.model, img_size=req.size)
    info = model.info
    if info.depth is None or info.num_heads is None or info.patch_size is None:
        raise ModelError(f"{info.name} has no transformer blocks with attention heads",
                         hint="use a timm ViT (ViT, DeiT, DINOv2, SigLIP, CLIP)")
    x = internals.model_input(model, loaded.image)  # (1, 3, H, W)
    lay = internals.token_grid(model.module, x.shape[-2:])
    size = tuple(x.shape[-2:])
    shape = Shape(info.depth, info.num_heads, size, tuple(info.patch_size), lay.prefix)
    bound = check_budget(shape, info.name)

    arrays = explore_arrays(model, x)
    gh, gw = lay.grid
    tokens = lay.prefix + gh * gw
    picture = pil_stages(info.data_config)(loaded.image)
    png = io.BytesIO()
    picture.save(png, format="PNG")
    summary, no_cost = summary_of(model.module, name, info, shape, lay)
    notes = []
    if no_cost:
        notes.append(f"cost not available: {no_cost}")
    if arrays.pca is None:
        notes.append(f"no PCA: {gh}x{gw} patches are too few for 3 components")
    command = req.command or req.command_line()
    weights = info.weights if info.pretrained else info.weights.removesuffix(" (--no-pretrained)")
    provenance = {"model": info.name, "weights": weights, "pretrained": info.pretrained,
                  "vitcli_version": __version__, "command": command, "image": str(loaded.path)}
    packed = pack_page(
        image_png=png.getvalue(), original_size=(loaded.image.height, loaded.image.width),
        geometry={"boxes": patch_boxes(info.data_config, (loaded.image.height, loaded.image.width), lay.grid,
                                       tuple(info.patch_size))},
        grid=lay.grid, patch_size=tuple(info.patch_size), cls_token=lay.has_cls, registers=lay.registers,
        attention=arrays.attention, rollout=arrays.rollout, similarity=arrays.similarity, pca=arrays.pca,
        top5=arrays.top5, summary=summary, provenance=provenance)
    data = packed.html.encode("utf-8")
    ensure_room(target, len(data))
    with atomic_output(target) as tmp:
        tmp.write_bytes(data)
    if packed.sizes["total"] > LIMIT_BYTES:  # the bound above makes this impossible; say so if it ever happens
        notes.append(f"the page is {packed.sizes['total']:,} bytes, over the {LIMIT_BYTES:,} byte budget")
    return ExploreResult(info, req.image, req.out, dict(packed.sizes), bound, LIMIT_BYTES, size, lay.grid,
                         info.depth, info.num_heads, tokens, lay.has_cls, lay.registers, arrays.top5, summary,
                         command, tuple(notes))
