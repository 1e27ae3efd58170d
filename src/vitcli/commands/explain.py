"""`vitcli explain`: which patches made a ViT choose its target, by one or several attribution methods, drawn
over the model input and over the original image, with an optional faithfulness check (deletion curve).

The maps come from `vitcli.backend.explain` (pytorch-grad-cam, Captum, and gradient-weighted rollout): one
(gh, gw) map per method on the model's patch grid. This module resolves the target (class index, label name,
top1, or a feature vector from a file), places the maps over the original image with
`vitcli.preprocess.Plan(...).geometry(...)` (the crop undone, what the model never saw left out), and writes
the outputs:

- `-o PICTURE`: the sheet (`vitcli.draw_explain.explain_sheet`): the model input and one overlay per method,
  then the original image with the same overlays, cropped-away parts hatched.
- `--npy MAP.npy`: the raw maps, float32, (gh, gw) for one method or (M, gh, gw) for M methods in the order
  given; beside it `MAP.full.npy`: the same maps over the original image (after EXIF orientation), (h, w) or
  (M, h, w), bilinear from patch centres (`vitcli.draw_explain.on_original`), NaN where the model never saw
  the pixel (cropped away, padding, or the remainder the patch embedding drops).
- `--check`: each map's deletion curve (`deletion_curve`: patches set to the mean colour, most important
  first) and its area, beside the mean area of random orders: lower than random = the map ranks patches
  that matter first.
"""

from __future__ import annotations

import difflib
import re
from dataclasses import dataclass, field
from pathlib import Path

from vitcli.choices import Method
from vitcli.core.tokens import Pair, parse_pair
from vitcli.errors import InputError, ModelError, UsageError
from vitcli.outputs import check_targets, save_picture
from vitcli.progress import SILENT, Reporter
from vitcli.requests import RANDOM_PICTURES, ModelRequest, at_least, needs_forward

METHODS = tuple(m.value for m in Method)  # vitcli.backend.explain.METHODS, the most faithful first
DEFAULT_METHOD = "occlusion"  # measured on a trained model: docs/explain.md
CAM_METHODS = ("gradcam", "gradcam++", "layercam", "eigencam")  # the ones that read --layer
LN_RULE_METHODS = ("gradcam", "gradcam++", "layercam", "grad-rollout")  # the ones --no-ln-rule changes
RANDOM_ORDERS = 3  # random deletion orders averaged for --check's reference area
_ROW = re.compile(r"^(?P<path>.+):(?P<row>\d+)$")
_INDEX = re.compile(r"^-?\d+$")


def full_npy_path(npy: str) -> str:
    """map.npy -> map.full.npy (the maps over the original image); any other name gets `.full.npy` added."""
    return npy[: -len(".npy")] + ".full.npy" if npy.endswith(".npy") else npy + ".full.npy"


@dataclass(frozen=True, kw_only=True)
class ExplainRequest:
    image: str
    model: ModelRequest
    methods: tuple[str, ...] = (DEFAULT_METHOD,)
    target: str | None = None  # class index, label name, or top1 (None: top1)
    target_embedding: str | None = None  # FILE.npy, or FILE.npy:ROW
    row: int | None = None  # the row of a 2-D --target-embedding file
    labels: str | None = None  # label file, one name per line (for --target NAME and the picture)
    layer: int | None = None  # block the CAM methods read (0-based; negative from the end)
    size: str | Pair | None = None  # rebuild the model for this input size
    check: bool = False  # deletion curves
    ig_steps: int = 50  # integrated gradients: points on the path
    ln_rule: bool = True  # gradient methods on tokens/attention: LayerNorm's scale held constant (backend.ln_rule)
    batch_size: int = 16  # images per forward (occlusion windows, IG points, deletion steps)
    out: str | None = None
    npy: str | None = None
    force: bool = False

    def __post_init__(self):
        if not self.methods:
            raise UsageError("give at least one --method", hint=f"one of {', '.join(METHODS)}")
        for m in self.methods:
            if m not in METHODS:
                raise UsageError(f"--method {m!r} is not one of {', '.join(METHODS)}")
        if len(set(self.methods)) != len(self.methods):
            raise UsageError("a --method is given twice", hint="give each method once")
        needs_forward(self.model, "vitcli explain")
        at_least("--ig-steps", self.ig_steps, 1)
        at_least("--batch-size", self.batch_size, 1)
        if self.layer is not None and not any(m in CAM_METHODS for m in self.methods):
            raise UsageError("--layer picks the block the CAM methods read",
                             hint=f"add --method {' or '.join(CAM_METHODS)}, or drop --layer")
        if not self.ln_rule and not any(m in LN_RULE_METHODS for m in self.methods):
            raise UsageError("--no-ln-rule changes the gradients of the methods that read tokens or attention",
                             hint=f"add --method {' or '.join(LN_RULE_METHODS)}, or drop --no-ln-rule")
        target = None if self.target is None else self.target.strip()
        if self.target_embedding is not None:
            if target not in (None, "top1"):
                raise UsageError(f"--target {self.target} and --target-embedding: give one of them")
            path, row = self.target_embedding, self.row
            m = _ROW.match(path)
            if m and not Path(path).exists():
                if row is not None:
                    raise UsageError(f"--target-embedding {path} and --row {row}: give the row once")
                path, row = m["path"], int(m["row"])
            at_least("--row", row, 0)
            object.__setattr__(self, "target_embedding", path)
            object.__setattr__(self, "row", row)
        elif self.row is not None:
            raise UsageError("--row picks a row of the --target-embedding file", hint="give --target-embedding")
        if target == "":
            raise UsageError("--target is empty", hint="give a class index, a label name, or top1")
        object.__setattr__(self, "target", target or "top1")
        if self.size is not None:
            object.__setattr__(self, "size", parse_pair(self.size, "--size"))


@dataclass(frozen=True)
class MethodMap:
    """One method's map: `values` (gh, gw) float64 raw (sign convention: vitcli.backend.explain), the block it
    read (CAMs), its top patch (row, col), its settings, and with --check its deletion curve."""

    method: str
    values: object  # np.ndarray (gh, gw)
    signed: bool
    layer: int | None
    layer_name: str | None
    top_patch: tuple[int, int]
    extras: dict
    deletion: dict | None = None  # {"area", "fractions", "scores"}

    def to_dict(self) -> dict:
        return {"method": self.method, "layer": self.layer, "layer_name": self.layer_name, "signed": self.signed,
                "top_patch": list(self.top_patch), "map": self.values.tolist(), "extras": self.extras,
                "deletion": self.deletion}


@dataclass(frozen=True)
class ExplainResult:
    model: object  # ModelInfo
    image: str
    original_size: Pair  # (h, w) after EXIF orientation
    input_size: Pair  # (H, W) the model input
    grid: Pair
    patch: Pair
    target: dict  # kind ("class" | "embedding"), index, label, score, score_kind, embedding file and row
    maps: tuple  # MethodMap, in the order asked
    geometry: dict | None  # input_box, source_box in original pixels (None: not replayable exactly)
    random_deletion_area: float | None = None  # --check: mean area of `random_orders` random orders
    random_orders: int | None = None
    outputs: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        return {"model": self.model.to_dict(), "image": self.image, "original_size": list(self.original_size),
                "input_size": list(self.input_size), "grid": list(self.grid), "patch": list(self.patch),
                "target": self.target, "methods": [m.to_dict() for m in self.maps], "geometry": self.geometry,
                "random_deletion_area": self.random_deletion_area, "random_deletion_orders": self.random_orders,
                "outputs": self.outputs}


# ---- targets ---------------------------------------------------------------------------------------------------

def class_index(name: str, labels: list[str]) -> int:
    """A label name -> its class index: the whole label or one of its comma-separated synonyms (ImageNet's
    'tabby, tabby cat'), case-insensitive. Several classes or none: a UsageError naming close matches."""
    key = name.strip().lower()
    whole = [i for i, lab in enumerate(labels) if lab.strip().lower() == key]
    found = whole or [i for i, lab in enumerate(labels) if key in (s.strip().lower() for s in lab.split(","))]
    if len(found) == 1:
        return found[0]
    if found:
        raise UsageError(f"--target {name!r} names {len(found)} classes: "
                         + ", ".join(f"{i} ({labels[i]})" for i in found), hint="give the class index")
    words = {s.strip().lower(): i for i, lab in enumerate(labels) for s in [lab, *lab.split(",")] if s.strip()}
    close = difflib.get_close_matches(key, list(words), n=5, cutoff=0.6)
    seen, shown = set(), []
    for c in close:
        if words[c] not in seen:
            seen.add(words[c])
            shown.append(f"{labels[words[c]]} ({words[c]})")
    hint = (f"close: {'; '.join(shown)}" if shown else "")
    n = len(labels)
    hint += ("; " if hint else "") + f"or give a class index 0..{n - 1}, or top1"
    raise UsageError(f"--target {name!r} is not one of the model's {n} labels", hint=hint)


def read_embedding(path: str, row: int | None):
    """One vector (D,) float64 from a .npy file: a 1-D file as it is; row `row` of an (N, D) file (an (1, D)
    file needs no row). Read memory-mapped, so a large `vitcli features` output costs one row."""
    import numpy as np

    p = Path(path)
    if not p.is_file():
        raise InputError(f"--target-embedding {path}: no such file", hint="give a .npy file, e.g. from "
                                                                          "`vitcli features --mode cls`")
    try:
        a = np.load(p, mmap_mode="r", allow_pickle=False)
    except (ValueError, OSError, EOFError) as e:
        raise InputError(f"--target-embedding {path}: not a .npy array ({str(e).splitlines()[0]})") from e
    if not isinstance(a, np.ndarray) or a.dtype.kind not in "fiu":
        raise InputError(f"--target-embedding {path}: not one numeric array")
    if a.ndim == 1:
        if row is not None:
            raise UsageError(f"--target-embedding {path} is one vector ({a.shape[0]},): it has no rows",
                             hint="drop the row")
        return np.asarray(a, dtype=np.float64)
    if a.ndim != 2:
        raise UsageError(f"--target-embedding {path} has shape {tuple(a.shape)}, not (D,) or (N, D)",
                         hint="use pooled features: `vitcli features --mode cls` gives (N, D)")
    n = a.shape[0]
    if row is None:
        if n != 1:
            raise UsageError(f"--target-embedding {path} holds {n} vectors {tuple(a.shape)}: which one?",
                             hint=f"add :ROW to the file name or --row ROW (0..{n - 1})")
        row = 0
    if row >= n:
        raise UsageError(f"--row {row} is out of range: {path} has {n} rows", hint=f"use 0..{n - 1}")
    return np.asarray(a[row], dtype=np.float64)


# ---- the command ---------------------------------------------------------------------------------------------

def _top(values) -> tuple[int, int]:
    import numpy as np

    r, c = np.unravel_index(int(np.argmax(values)), values.shape)
    return int(r), int(c)


def run_explain(req: ExplainRequest, ui: Reporter = SILENT) -> ExplainResult:
    """Attribution maps of one image for each method asked, over the model input and the original image."""
    import numpy as np

    from vitcli.backend import explain as E
    from vitcli.backend.data import pil_stages
    from vitcli.backend.internals import model_input
    from vitcli.backend.models import label_names, load_model
    from vitcli.draw_explain import Panel, explain_sheet, on_original, score_text
    from vitcli.export import save_npy
    from vitcli.inputs import open_single, read_labels
    from vitcli.preprocess import NotExact, Plan

    full = full_npy_path(req.npy) if req.npy else None
    check_targets([req.out, req.npy, full], req.force)
    embedding = read_embedding(req.target_embedding, req.row) if req.target_embedding else None
    given_labels = read_labels(req.labels) if req.labels else None  # the count is checked once the model is loaded
    loaded = open_single(req.image)  # a bad image (or video frame) fails here, before the model loads
    if not req.model.pretrained:
        ui.warn(RANDOM_PICTURES)
    model = load_model(req.model, img_size=req.size)
    info, module = model.info, model.module
    if req.layer is not None:
        E.block_index(module, req.layer)  # out of range: a UsageError now, before any method runs
    if embedding is None and not info.num_classes:
        raise UsageError(f"{info.name} has no classifier head, so there is no class to explain",
                         hint="give --target-embedding FILE.npy (e.g. a row of `vitcli features --mode cls` output) "
                              "to explain the similarity to that vector")
    labels = label_names(model, req.labels, given_labels) if info.num_classes else []
    if embedding is not None or req.target == "top1":
        target: int | str = "top1"
    elif _INDEX.match(req.target):
        target = int(req.target)
    else:
        target = class_index(req.target, labels)

    img = loaded.image
    orig_hw = (img.height, img.width)
    try:
        geometry = Plan.from_config(info.data_config).geometry(orig_hw)
    except NotExact as e:
        if req.npy:
            raise ModelError(f"{info.name}: its preprocessing cannot be replayed exactly ({e}), so the maps "
                             "cannot be placed over the original image", hint="drop --npy, or use -o alone") from e
        ui.warn(f"{info.name}: preprocessing not replayable exactly ({e}); the picture shows the model input only")
        geometry = None
    x = model_input(model, img)  # (1, 3, H, W), the model's own timm transform
    lay = E.layout(module, tuple(x.shape[-2:]))
    opts = dict(ig_steps=req.ig_steps, batch_size=req.batch_size, ln_rule=req.ln_rule)

    maps, attributions = [], []
    bar = ui.progress()
    bar.start(len(req.methods) + (RANDOM_ORDERS if req.check else 0), "explain")
    try:
        for method in req.methods:
            a = E.explain(module, x, method, target=target, layer=req.layer, embedding=embedding, **opts)
            deletion = None
            if req.check:
                deletion = E.deletion_curve(module, x, a.map, target=target, embedding=embedding,
                                            batch_size=max(req.batch_size, 1)).to_dict()
            if not np.any(a.map):
                ui.warn(f"{method}: the map is zero everywhere" + (
                    f" (the CAM's ReLU dropped every patch: no patch's weighted activation at {a.layer_name} is "
                    "positive); try another --layer, or occlusion" if method in CAM_METHODS else ""))
            attributions.append(a)
            maps.append(MethodMap(method, a.map, a.signed, a.layer, a.layer_name, _top(a.map), a.extras, deletion))
            bar.advance()
        random_area = None
        if req.check:
            rng = np.random.default_rng(0)
            areas = []
            for _ in range(RANDOM_ORDERS):
                areas.append(E.deletion_curve(module, x, rng.random(lay.grid), target=target, embedding=embedding,
                                              batch_size=req.batch_size).area)
                bar.advance()
            random_area = float(np.mean(areas))
    finally:
        bar.close()

    first = attributions[0]
    if embedding is not None:
        source = req.target_embedding + (f" row {req.row}" if req.row is not None else "")
        tgt = {"kind": "embedding", "index": None, "label": f"similarity to {source}", "score": first.score,
               "score_kind": first.score_kind, "embedding": req.target_embedding, "row": req.row,
               "requested": None}
    else:
        tgt = {"kind": "class", "index": first.target, "label": labels[first.target], "score": first.score,
               "score_kind": first.score_kind, "embedding": None, "row": None, "requested": req.target}

    outputs = {}
    if req.out:
        picture = pil_stages(info.data_config)(img)
        panels = [Panel(m.method, a.display, a.layer, m.deletion["area"] if m.deletion else None)
                  for m, a in zip(maps, attributions)]
        what = tgt["label"] + (f" ({tgt['index']})" if tgt["index"] is not None else "")
        lines = [f"{info.name}: " + score_text(what, tgt["score"], tgt["score_kind"]) + ("" if req.target == "top1"
                 or embedding is not None else " (asked)") + f"; {lay.grid[0]}x{lay.grid[1]} patches.",
                 "Each map is scaled to its own maximum; signed maps (occlusion, integrated-gradients) show their "
                 "positive part."]
        if req.check:
            lines.append(f"Deletion area: lower = the map's top patches matter more (random order: "
                         f"{random_area:.3f}).")
        if not info.pretrained:
            lines.append("Random weights (--no-pretrained): these maps show the pipeline, not a trained model.")
        sheet = explain_sheet(picture, panels, lines, original=img if geometry else None, geometry=geometry,
                              patch=lay.patch)
        save_picture(sheet, req.out)
        outputs["picture"] = req.out
    if req.npy:
        stack = np.stack([m.values for m in maps])  # (M, gh, gw)
        over = np.stack([on_original(m.values, geometry, lay.patch) for m in maps])  # (M, h, w)
        if len(maps) == 1:
            stack, over = stack[0], over[0]
        save_npy(stack.astype(np.float32), req.npy)
        save_npy(over.astype(np.float32), full)
        outputs["npy"] = req.npy
        outputs["npy_full"] = full
    geo = None if geometry is None else {"input_box": list(geometry.input_box()),
                                         "source_box": list(geometry.source_box())}
    return ExplainResult(info, req.image, orig_hw, tuple(x.shape[-2:]), lay.grid, lay.patch, tgt, tuple(maps), geo,
                         random_area, RANDOM_ORDERS if req.check else None, outputs)
