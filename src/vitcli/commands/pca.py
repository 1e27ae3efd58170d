"""`vitcli pca`: principal components of the patch tokens as colours, fitted jointly over all inputs.

The tokens are exactly `vitcli features --mode patch --grid` (prefix removed; `--layer K` as there): the model
is loaded with `backend.models.load_model`, the tokens come from `backend.features.Extractor` run over the
inputs in batches by `backend.features.extract` — called in ONE place, `patch_tokens` below, which `similar`
shares. The math is `vitcli.pca` (streaming exact PCA, percentile scaling, foreground rule), the pictures
`vitcli.draw_features`.

Memory: the patch tokens of every input go to a temporary `.npy` (memory-mapped, in the system's temporary
folder, deleted at the end) as the batches come out of the model; the PCA reads it back one chunk at a time
(`vitcli.pca`: O(D²) moments + a seeded sample of at most 20,000 patches). Resident memory is therefore one
batch + one chunk + the (N, gh, gw, C) maps, whatever N; the disk holds N·gh·gw·D float32 for the run.

Inputs: files, folders and globs through `vitcli.inputs.collect_inputs` (`input_paths`). Video frames, when
the input seam yields them, are just more inputs here: `--fit-first K` fits on the first K (the first frames)
and applies that fit, colours included, to all of them.
"""

from __future__ import annotations

import tempfile
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path

from vitcli.core.tokens import Pair, parse_pair
from vitcli.errors import InputError, UsageError
from vitcli.inputs import collect_inputs
from vitcli.outputs import check_targets, ensure_room, save_picture
from vitcli.progress import SILENT, Reporter
from vitcli.requests import RANDOM_PICTURES, FeatureRequest, ModelRequest, RunOptions, at_least
from vitcli.results import ModelInfo, Outcome, Skipped

SHEET_MAX = 64  # images drawn on one sheet; --npy and --json hold every image
MAX_COMPONENTS = 3  # colours: R, G, B
RANDOM_COLOURS = ("Random weights (--no-pretrained): the colours show the pipeline, not what a trained ViT has "
                  "learned.")


def mask_path(npy: str | Path) -> Path:
    """pca.npy -> pca.mask.npy: where `--foreground` puts the (N, gh, gw) bool mask beside the maps."""
    p = Path(npy)
    return p.with_name(p.stem + ".mask.npy")


# ---- shared with `similar`: the model, the tokens, the pictures --------------------------------------------

@dataclass(frozen=True)
class TokenSource:
    """Which tokens a command reads: the same ones `features --mode patch --grid [--layer K]` writes."""

    extractor: object  # backend.features.Extractor (typed loosely: no torch here)
    info: ModelInfo
    block: int | None  # 0-based block index, None for the final output
    grid: Pair
    dim: int

    @property
    def description(self) -> str:
        where = ("the final output (forward_features, after the final norm)" if self.block is None
                 else f"the output of block {self.block} of {self.info.depth} (forward_intermediates, no final "
                      "norm)")
        prefix = self.info.num_prefix_tokens
        return (f"patch tokens of {where}, {self.grid[0]}x{self.grid[1]} per image, width {self.dim}, "
                f"{prefix} prefix token{'s' if prefix != 1 else ''} removed")

    def to_dict(self) -> dict:
        return {"block": self.block, "grid": list(self.grid), "embed_dim": self.dim,
                "prefix_tokens_removed": self.info.num_prefix_tokens, "description": self.description}


def load_tokens_model(model: ModelRequest, layer: int | None, size: Pair | None) -> TokenSource:
    """Load the model as `features` does and set up its patch-token extractor (grid, prefix removed)."""
    from vitcli.backend.features import Extractor
    from vitcli.backend.models import load_model

    loaded = load_model(model, img_size=size)
    ex = Extractor(loaded, FeatureRequest(mode="patch", grid=True, layers=None if layer is None else (layer,)))
    return TokenSource(ex, loaded.info, None if ex.layers is None else ex.layers[0], tuple(ex.grid), int(ex.dim))


def input_paths(items: tuple[str, ...], run: RunOptions) -> list[str]:
    """The input seam of `pca` and `similar`: files, folders and globs (`vitcli.inputs.collect_inputs`). Video
    frames, when these commands take them, join here as more inputs (`vitcli.inputs.collect` gives Items)."""
    return collect_inputs(list(items), run.recursive)


@dataclass
class Tokens:
    """Patch tokens of the inputs that could be read, in input order."""

    rows: object  # (n, gh, gw, D) float32 numpy memmap (a view of the temporary file)
    paths: list[str]  # the n inputs the rows belong to
    skipped: list[Skipped]


@dataclass(frozen=True)
class _Skip:
    skipped: Skipped
    position: int  # in the list of inputs


def patch_tokens(src: TokenSource, paths: list[str], run: RunOptions, folder: Path, name: str,
                 ui: Reporter = SILENT) -> Tokens:
    """THE one call into the batch pipeline (`backend.features.extract`) for `pca` and `similar`.

    Runs `paths` through the extractor in batches (decoded by the worker pool, as in `features`), writing each
    batch's (k, gh, gw, D) float32 rows into `folder/name` (a memory-mapped .npy): resident memory is one
    batch. Inputs that cannot be read are skipped and listed. Raises InputError when none could be read.
    """
    import numpy as np

    from vitcli import decode
    from vitcli.backend.features import extract
    from vitcli.backend.pipeline import recipe_for
    from vitcli.inputs import Item

    items = [Item(p) for p in paths]
    shape = (len(items), *src.extractor.row_shape)
    target = folder / name
    ensure_room(target, int(np.prod(shape, dtype=np.int64)) * 4)
    rows = np.lib.format.open_memmap(target, mode="w+", dtype=np.float32, shape=shape)
    n, skipped = 0, []

    def write(batch, next_row, skip):
        nonlocal n
        if batch is not None:
            rows[n:n + len(batch)] = batch
            n += len(batch)
        skipped.extend(_Skip(Skipped(s["source"], s["reason"], s.get("frame")), s["position"]) for s in skip)

    recipe = recipe_for([src.info.data_config])
    with decode.start(items, {}, [(0, len(items))], run.batch_size, run.workers,
                      on_cpu=src.info.device == "cpu") as pool:
        pool.set_recipe(recipe)
        extract([src.extractor], pool, recipe, items, write, batch_size=run.batch_size, progress=ui.progress())
    bad = {s.position for s in skipped}
    good = [p for i, p in enumerate(paths) if i not in bad]
    if not good:
        first = skipped[0].skipped.line() if skipped else "no inputs"
        raise InputError(first if len(paths) == 1 else f"none of the {len(paths)} inputs could be read (first: "
                         f"{first})", hint="check the paths and formats")
    rows.flush()
    return Tokens(rows[:n], good, [s.skipped for s in skipped])


@contextmanager
def scratch_folder():
    """A temporary folder for the token files, deleted afterwards (TMPDIR chooses where)."""
    with tempfile.TemporaryDirectory(prefix="vitcli-tokens-") as d:
        yield Path(d)


def model_pictures(info: ModelInfo, paths: list[str]) -> list:
    """Each input as the model sees it (the PIL stages of timm's eval transform), at the input size."""
    from vitcli.backend.data import pil_stages
    from vitcli.imaging import open_image

    stages = pil_stages(info.data_config)
    return [stages(open_image(p).image) for p in paths]


def titles(paths: list[str]) -> list[str]:
    return [Path(p).name for p in paths]


# ---- the pca command -----------------------------------------------------------------------------------------

@dataclass(frozen=True, kw_only=True)
class PcaRequest:
    inputs: tuple[str, ...]
    model: ModelRequest = ModelRequest()
    layer: int | None = None  # block output (0-based; negative from the end); None: the final output
    size: Pair | None = None  # rebuild the model for this input size
    run: RunOptions = RunOptions()
    components: int = 3
    per_image: bool = False
    fit_on: tuple[str, ...] = ()  # fit on these inputs, apply to `inputs`
    fit_first: int | None = None  # fit on the first K inputs read, apply to all (video: the first frames)
    foreground: bool = False
    threshold: float | None = None  # background = first component's min-max score > threshold (default 0.35)
    out: str | None = None  # the PCA sheet (PNG)
    mask: str | None = None  # the foreground mask picture (PNG)
    npy: str | None = None  # (N, gh, gw, C) float32 in [0, 1]; + mask_path(npy) with --foreground
    force: bool = False

    def __post_init__(self):
        if self.size is not None:
            object.__setattr__(self, "size", parse_pair(self.size, "--size"))
        if not self.inputs:
            raise UsageError("give at least one image, directory or glob pattern", hint="e.g. vitcli pca photo.jpg")
        if not 1 <= self.components <= MAX_COMPONENTS:
            raise UsageError(f"--components {self.components} must be 1, 2 or 3 (colours: R, G, B)")
        ways = [flag for flag, on in (("--per-image", self.per_image), ("--fit-on", bool(self.fit_on)),
                                      ("--fit-first", self.fit_first is not None)) if on]
        if len(ways) > 1:
            raise UsageError(f"{' and '.join(ways)} contradict each other", hint="choose one way to fit")
        at_least("--fit-first", self.fit_first, 1)
        if self.threshold is not None:
            if not self.foreground:
                raise UsageError("--threshold applies to --foreground only", hint="add --foreground")
            if not 0.0 <= self.threshold <= 1.0:
                raise UsageError(f"--threshold {self.threshold} must be between 0 and 1 (a min-max scaled score)")
        if self.mask and not self.foreground:
            raise UsageError("--mask draws the foreground mask", hint="add --foreground")
        if self.npy and Path(self.npy).suffix != ".npy":
            raise UsageError(f"--npy {self.npy} must end in .npy")


@dataclass(frozen=True)
class PcaResult(Outcome):
    model: ModelInfo
    tokens: dict  # TokenSource.to_dict()
    images: tuple[str, ...]  # rows of --npy, in order
    fit_images: tuple[str, ...]  # the inputs the PCA was fitted on (all of `images` unless --fit-on/--fit-first)
    result: object  # vitcli.pca.PcaMaps
    skipped: tuple[Skipped, ...]
    total: int
    outputs: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        d = {"model": self.model.to_dict(), "tokens": self.tokens, "images": list(self.images),
             "fit_images": list(self.fit_images), **self.result.to_dict(),
             "skipped": [s.to_dict() for s in self.skipped], "outputs": self.outputs}
        if self.result.mask is not None:
            d["foreground"]["masks"] = self.result.mask.astype(int).tolist()  # (N, gh, gw), 1 = foreground
        return d


def run_pca(req: PcaRequest, ui: Reporter = SILENT) -> PcaResult:
    """PCA of the patch tokens of every input: (N, gh, gw, C) colours in [0, 1], pictures, masks."""
    import numpy as np

    from vitcli import draw_features as draw
    from vitcli import pca as pcamath
    from vitcli.export import save_npy

    targets = [req.out, req.mask, req.npy, mask_path(req.npy) if req.npy and req.foreground else None]
    check_targets(targets, req.force)
    paths = input_paths(req.inputs, req.run)
    fit_paths = input_paths(req.fit_on, req.run) if req.fit_on else []
    if req.fit_first is not None and req.fit_first > len(paths):
        raise UsageError(f"--fit-first {req.fit_first} is more than the {len(paths)} inputs given")
    if not req.model.pretrained:
        ui.warn(RANDOM_PICTURES)
    src = load_tokens_model(req.model, req.layer, req.size)
    with scratch_folder() as folder:
        tok = patch_tokens(src, paths, req.run, folder, "tokens.npy", ui)
        images, skipped = list(tok.paths), list(tok.skipped)
        fit_tokens, fit_images = None, images
        if fit_paths:
            fit = patch_tokens(src, fit_paths, req.run, folder, "fit.npy", ui)
            skipped += fit.skipped
            fit_tokens, fit_images = fit.rows, fit.paths
            del fit
        elif req.fit_first is not None:
            k = min(req.fit_first, len(images))
            if k < req.fit_first:
                ui.warn(f"--fit-first {req.fit_first}: only {k} inputs could be read; fitting on them")
            fit_tokens, fit_images = tok.rows[:k], images[:k]
        maps = pcamath.pca_maps(tok.rows, components=req.components, per_image=req.per_image,
                                foreground=req.foreground, threshold=req.threshold, fit_tokens=fit_tokens)
        tok = fit_tokens = None  # release the memory maps before their folder is removed
    if req.fit_first is not None:
        maps = replace(maps, mode="fit-first")

    outputs = {}
    if req.npy:
        save_npy(maps.maps.astype(np.float32), req.npy)
        outputs["npy"] = req.npy
        if maps.mask is not None:
            save_npy(maps.mask.astype(bool), mask_path(req.npy))
            outputs["mask_npy"] = str(mask_path(req.npy))
    if req.out or req.mask:
        shown = min(len(images), SHEET_MAX)
        if shown < len(images):
            ui.note(f"the pictures show the first {shown} of {len(images)} images; --npy holds them all")
        pictures, names = model_pictures(src.info, images[:shown]), titles(images[:shown])
        mask = None if maps.mask is None else maps.mask[:shown]
        if req.out:
            save_picture(draw.pca_sheet(pictures, maps.maps[:shown], names, mask, _legend(src, maps, fit_images)),
                         req.out)
            outputs["picture"] = req.out
        if req.mask:
            save_picture(draw.mask_picture(pictures, mask, names, _mask_legend(src, maps)), req.mask)
            outputs["mask_picture"] = req.mask
    return PcaResult(src.info, src.to_dict(), tuple(images), tuple(fit_images), maps, tuple(skipped),
                     len(paths) + len(fit_paths), outputs)


def _variance(fit) -> str:
    return ", ".join(f"{100 * v:.1f}%" for v in fit.explained_variance_ratio)


def _legend(src: TokenSource, maps, fit_images: list[str]) -> list[str]:
    """The lines under the PCA sheet: model, tokens, how the PCA was fitted, what the components explain."""
    how = {"joint": f"one PCA fitted on all {len(fit_images)} images (colours comparable across images)",
           "per-image": "one PCA per image (colours not comparable across images)",
           "fit-on": f"fitted on {len(fit_images)} other image{'s' if len(fit_images) != 1 else ''} (--fit-on)",
           "fit-first": f"fitted on the first {len(fit_images)} image{'s' if len(fit_images) != 1 else ''} "
                        "(--fit-first)"}[maps.mode]
    lines = [f"{src.info.name}: {src.description}.", f"{how[0].upper()}{how[1:]}"
             + (f"; explained variance {_variance(maps.fits[0])}." if len(maps.fits) == 1 else ".")]
    if maps.rules:
        rule = maps.rules[0]
        lines.append(f"Threshold {rule.threshold:g}; the first component's sign is chosen so that the larger part "
                     "of the fitted patches is background.")
    if not src.info.pretrained:
        lines.append(RANDOM_COLOURS)
    return lines


def _mask_legend(src: TokenSource, maps) -> list[str]:
    rule = maps.rules[0]
    lines = [f"{src.info.name}: {src.description}.",
             f"The first principal component is min-max scaled to [0, 1]; background above {rule.threshold:g}; "
             "its sign is chosen so that the larger part of the fitted patches is background."]
    if not src.info.pretrained:
        lines.append(RANDOM_COLOURS)
    return lines
