"""`vitcli pca`: principal components of the patch tokens as colours, fitted jointly over all inputs.

The tokens are exactly `vitcli features --mode patch --grid` (prefix removed; `--layer K` as there): the model
is loaded with `backend.models.load_model`, the tokens come from `backend.features.Extractor` run over the
inputs in batches by `backend.features.extract` — called in ONE place, `patch_tokens` below, which `similar`
shares. The math is `vitcli.pca` (streaming exact PCA, percentile scaling, foreground rule), the pictures
`vitcli.draw_features`.

Inputs: what `features` takes, through the same seam (`vitcli.inputs.collect`): images, videos (every frame,
or `--fps/--every/--start/--end/--max-frames`), `VIDEO@frame=N` / `VIDEO@t=S`, tar shards, folders, globs. Every
image and every sampled frame is one row. Frames are decoded by the same worker pool as `features`, from the
probe `collect` made; an input that cannot be opened at all is listed as skipped (exit 1), like a lost row.

Video: one fit either way, so a colour means the same in every frame of a run. By default the fit is joint
(every row); `--fit-first K` fits on the first K rows (the first frames) and applies that fit, colour scale
included, to all: a frame's colours then depend only on it and the first K frames, never on later ones.

Pictures (`-o`): NAME.png a sheet of the first SHEET_MAX rows; NAME.gif / NAME.webp an animation, one frame per
row (the input beside its map, with the sheet's legend) at the sampling's rate (`--fps`, or the video's own rate
divided by `--every`); FOLDER/ one such PNG per row, 0000.png, 0001.png... The input is drawn as the model saw
it: the decode pool's preprocessed pixels of that row (timm's resize and crop, exact), kept as they go by.

Memory: the patch tokens of every input go to a temporary `.npy` (memory-mapped, in the system's temporary
folder, deleted at the end) as the batches come out of the model; the PCA reads it back one chunk at a time
(`vitcli.pca`: O(D²) moments + a seeded sample of at most 20,000 patches). The pictures to draw go to a second
memory-mapped file (uint8 (n, H, W, 3)). Resident memory is therefore one batch + one chunk + the (N, gh, gw, C)
maps, whatever N; the disk holds N·gh·gw·D float32 (+ N·H·W·3 bytes with an animation or a folder) for the run.
An animation holds its drawn frames in memory while the GIF/WebP is encoded: sample long videos (`--fps`).
"""

from __future__ import annotations

import tempfile
from collections.abc import Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path

from vitcli.video import Sampling
from vitcli.core.tokens import Pair, parse_pair
from vitcli.errors import InputError, OutputError, UsageError
from vitcli.inputs import Collected, Item, check_sampled
from vitcli.outputs import atomic_output, check_targets, ensure_room, save_picture
from vitcli.progress import SILENT, Reporter
from vitcli.requests import RANDOM_PICTURES, FeatureRequest, ModelRequest, RunOptions, at_least, needs_forward
from vitcli.results import ModelInfo, Outcome, Skipped, collapse

SHEET_MAX = 64  # images drawn on one sheet; --npy and --json hold every image
MAX_COMPONENTS = 3  # colours: R, G, B
SLIDESHOW_FPS = 2.0  # an animation of images only (no video rate to follow)
ANIMATIONS = {".gif": "GIF", ".webp": "WEBP"}
RANDOM_COLOURS = ("Random weights (--no-pretrained): the colours show the pipeline, not what a trained ViT has "
                  "learned.")


def mask_path(npy: str | Path) -> Path:
    """pca.npy -> pca.mask.npy: where `--foreground` puts the (N, gh, gw) bool mask beside the maps."""
    p = Path(npy)
    return p.with_name(p.stem + ".mask.npy")


def picture_kind(out: str) -> str:
    """What `-o` asks for: "folder" (ends in / or is a directory: one PNG per row), "animation" (.gif, .webp),
    or "sheet" (anything else: one PNG)."""
    if out.endswith(("/", "\\")) or Path(out).is_dir():
        return "folder"
    return "animation" if Path(out).suffix.lower() in ANIMATIONS else "sheet"


def row_files(folder: str | Path, n: int) -> list[Path]:
    """FOLDER/0000.png ... one per row, numbered from 0 (at least 4 digits, so they sort)."""
    width = max(4, len(str(max(0, n - 1))))
    return [Path(folder) / f"{i:0{width}d}.png" for i in range(n)]


# ---- shared with `similar`: the inputs, the model, the tokens, the pictures ----------------------------------

def collect_items(inputs: Sequence[str], run: RunOptions, sampling: Sampling = Sampling(),
                  alone: bool = True) -> Collected:
    """The input seam of `pca` and `similar`, the same as `features`': `vitcli.inputs.collect` (images, sampled
    video frames, VIDEO@frame=N, tar members, folders, globs). The sampling flags need a video somewhere among
    `inputs` (`alone`), or among these and another set the caller checks with them (`inputs.check_sampled`)."""
    from vitcli.inputs import collect

    return collect(list(inputs), run.recursive, sampling.video(), alone)


def label(item: Item) -> str:
    """How an output names a row: the path, path@frame=N, or archive.tar::member (`Item.label`)."""
    return item.label()


def title(item: Item, time: bool = True) -> str:
    """A picture's title for a row: the file's name, and for a frame its index (and `time`, in seconds)."""
    if item.member is not None:
        return Path(item.member[0]).name
    name = Path(item.source).name
    if item.frame is None:
        return name
    return f"{name} frame {item.frame}" + ("" if item.time is None or not time else f" ({item.time:.2f} s)")


def titles(items: Sequence[Item], time: bool = True) -> list[str]:
    return [title(i, time) for i in items]


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


@dataclass
class Tokens:
    """Patch tokens of the items that could be read, in input order, and the pictures kept to draw them."""

    rows: object  # (n, gh, gw, D) float32 numpy memmap (a view of the temporary file)
    items: list[Item]  # the n items the rows belong to
    positions: list[int]  # their positions in the items given
    skipped: list[Skipped]  # the items that could not be read (a video's lost frames collapsed into one entry)
    pictures: object = None  # (k, H, W, 3) uint8: rows 0..k-1 as the model saw them; None: open them again

    @property
    def paths(self) -> list[str]:
        return [label(i) for i in self.items]


class _Keep:
    """The decode pool as `extract` sees it (`run()`), keeping the first `keep` rows' preprocessed pictures
    (the uint8 (H, W, 3) pixels the model's exact plan made, before normalisation) in a memory-mapped file as
    they go by: what the model saw, drawn without decoding anything twice."""

    def __init__(self, pool, keep: int, target: Path):
        self.pool, self.keep, self.target = pool, keep, target
        self.store = None
        self.kept = 0
        self.usable = keep > 0

    def run(self):
        import numpy as np

        for position, got in self.pool.run():
            if self.usable and self.kept < self.keep and got.error is None:
                a = got.arrays[0] if got.arrays else None
                if a is None or a.dtype != np.uint8 or a.ndim != 3:  # timm's transform ran (no exact plan)
                    self.usable, self.store = False, None
                else:
                    if self.store is None:
                        shape = (self.keep, *a.shape)
                        ensure_room(self.target, int(np.prod(shape, dtype=np.int64)))
                        self.store = np.lib.format.open_memmap(self.target, mode="w+", dtype=np.uint8, shape=shape)
                    self.store[self.kept] = a
                    self.kept += 1
            yield position, got


def patch_tokens(src: TokenSource, items: Sequence[Item], videos: dict, run: RunOptions, folder: Path, name: str,
                 ui: Reporter = SILENT, keep_pictures: int = 0, unopened: Sequence[Skipped] = ()) -> Tokens:
    """THE one call into the batch pipeline (`backend.features.extract`) for `pca` and `similar`.

    Runs `items` through the extractor in batches, decoded by the worker pool as in `features` (`videos`: the
    probes `collect` made, so no video is probed twice), writing each batch's (k, gh, gw, D) float32 rows into
    `folder/name` (a memory-mapped .npy): resident memory is one batch. The first `keep_pictures` rows'
    preprocessed pictures are kept too (`Tokens.pictures`). Items that cannot be read are skipped and listed.
    Raises InputError when none could be read (`unopened`: inputs `collect` could not open, for the message).
    """
    import numpy as np

    from vitcli import decode
    from vitcli.backend.features import extract
    from vitcli.backend.pipeline import recipe_for

    items = list(items)
    if not items:
        first = unopened[0].line() if unopened else "no inputs"
        raise InputError(first if len(unopened) <= 1 else f"none of the {len(unopened)} inputs could be read "
                         f"(first: {first})", hint="check the paths and formats")
    shape = (len(items), *src.extractor.row_shape)
    target = folder / name
    ensure_room(target, int(np.prod(shape, dtype=np.int64)) * 4)
    rows = np.lib.format.open_memmap(target, mode="w+", dtype=np.float32, shape=shape)
    n, lost = 0, []

    def write(batch, next_row, skip):
        nonlocal n
        if batch is not None:
            rows[n:n + len(batch)] = batch
            n += len(batch)
        lost.extend(skip)

    recipe = recipe_for([src.info.data_config])
    with decode.start(items, videos, [(0, len(items))], run.batch_size, run.workers,
                      on_cpu=src.info.device == "cpu") as pool:
        pool.set_recipe(recipe)
        kept = _Keep(pool, min(keep_pictures, len(items)), folder / f"pictures-{name}")
        extract([src.extractor], kept, recipe, items, write, batch_size=run.batch_size, progress=ui.progress())
    bad = {s["position"] for s in lost}
    positions = [i for i in range(len(items)) if i not in bad]
    skipped = list(collapse(Skipped(s["source"], s["reason"], s.get("frame")) for s in lost))
    if not positions:
        every = [*unopened, *skipped]
        first = every[0].line() if every else "no inputs"
        total = len(items) + len(unopened)
        raise InputError(first if total == 1 else f"none of the {total} inputs could be read (first: {first})",
                         hint="check the paths and formats")
    rows.flush()
    pictures = kept.store[:kept.kept] if kept.usable and kept.store is not None else None
    return Tokens(rows[:n], [items[i] for i in positions], positions, skipped, pictures)


@contextmanager
def scratch_folder():
    """A temporary folder for the token files, deleted afterwards (TMPDIR chooses where)."""
    with tempfile.TemporaryDirectory(prefix="vitcli-tokens-") as d:
        yield Path(d)


def open_item(item: Item):
    """An item's picture as a `vitcli.imaging.LoadedImage`: an image file, a tar member, or a video frame
    (`vitcli.inputs.open_single(item.label())`)."""
    from vitcli.imaging import open_image
    from vitcli.inputs import open_single

    if item.member is not None:
        _, offset, size = item.member
        with open(item.source, "rb") as f:
            f.seek(offset)
            data = f.read(size)
        return open_image(item.label(), data=data)
    return open_single(item.label()) if item.is_video else open_image(item.source)


def model_pictures(info: ModelInfo, tok: Tokens, count: int | None = None, start: int = 0) -> list:
    """Rows start..start+count-1 as the model sees them (PIL, at the input size): the decode pool's pixels kept
    by `patch_tokens`, else each item opened again through the PIL stages of timm's eval transform."""
    from PIL import Image

    stop = len(tok.items) if count is None else min(len(tok.items), start + count)
    if tok.pictures is not None and stop <= len(tok.pictures):
        import numpy as np

        return [Image.fromarray(np.array(tok.pictures[i]), "RGB") for i in range(start, stop)]
    from vitcli.backend.data import pil_stages

    stages = pil_stages(info.data_config)
    return [stages(open_item(item).image) for item in tok.items[start:stop]]


# ---- the pca command -----------------------------------------------------------------------------------------

@dataclass(frozen=True, kw_only=True)
class PcaRequest:
    inputs: tuple[str, ...]
    model: ModelRequest = ModelRequest()
    layer: int | None = None  # block output (0-based; negative from the end); None: the final output
    size: Pair | None = None  # rebuild the model for this input size
    run: RunOptions = RunOptions()
    sampling: Sampling = Sampling()  # which frames of the videos (every frame by default)
    components: int = 3
    per_image: bool = False
    fit_on: tuple[str, ...] = ()  # fit on these inputs, apply to `inputs`
    fit_first: int | None = None  # fit on the first K rows read, apply to all (video: the first frames)
    foreground: bool = False
    threshold: float | None = None  # background = first component's min-max score > threshold (default 0.35)
    out: str | None = None  # NAME.png the sheet; NAME.gif / NAME.webp an animation; FOLDER/ one PNG per row
    mask: str | None = None  # the foreground mask picture (PNG)
    npy: str | None = None  # (N, gh, gw, C) float32 in [0, 1]; + mask_path(npy) with --foreground
    force: bool = False

    def __post_init__(self):
        if self.size is not None:
            object.__setattr__(self, "size", parse_pair(self.size, "--size"))
        if not self.inputs:
            raise UsageError("give at least one image, video, directory or glob pattern",
                             hint="e.g. vitcli pca photo.jpg, or vitcli pca clip.mp4 --fps 2 -o pca.gif")
        needs_forward(self.model, "vitcli pca")
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
        if self.mask and picture_kind(self.mask) != "sheet":
            raise UsageError(f"--mask {self.mask} is one PNG picture", hint="e.g. --mask mask.png")
        if self.npy and Path(self.npy).suffix != ".npy":
            raise UsageError(f"--npy {self.npy} must end in .npy")

    @property
    def kind(self) -> str | None:
        """What -o writes: "sheet", "animation", "folder"; None without -o."""
        return None if self.out is None else picture_kind(self.out)


@dataclass(frozen=True)
class PcaResult(Outcome):
    model: ModelInfo
    tokens: dict  # TokenSource.to_dict()
    images: tuple[str, ...]  # rows of --npy, in order: path, path@frame=N or archive.tar::member
    fit_images: tuple[str, ...]  # the inputs the PCA was fitted on (all of `images` unless --fit-on/--fit-first)
    result: object  # vitcli.pca.PcaMaps
    skipped: tuple[Skipped, ...]
    total: int
    outputs: dict = field(default_factory=dict)
    rows: tuple[dict, ...] = ()  # per row of --npy: source, frame, time (Item.row())
    row_pictures: dict | None = None  # -o NAME.gif/.webp: {"kind": "animation", "frames", "fps", "frame_ms"};
    # -o FOLDER/: {"kind": "folder", "files": [...]}, one per row

    @property
    def noun(self) -> str:
        return noun_for([r.get("frame") is not None for r in self.rows])

    def to_dict(self) -> dict:
        d = {"model": self.model.to_dict(), "tokens": self.tokens, "images": list(self.images),
             "rows": list(self.rows), "fit_images": list(self.fit_images), **self.result.to_dict(),
             "skipped": [s.to_dict() for s in self.skipped], "outputs": self.outputs, "row_pictures": self.row_pictures}
        if self.result.mask is not None:
            d["foreground"]["masks"] = self.result.mask.astype(int).tolist()  # (N, gh, gw), 1 = foreground
        return d


def animation_fps(items: Sequence[Item], videos: dict, sampling: Sampling) -> float:
    """Frames per second of an animation: the sampling's rate (`--fps`), else the first video's own rate
    (frame count / duration) divided by `--every`; SLIDESHOW_FPS for images only."""
    if sampling.fps is not None:
        return float(sampling.fps)
    first = next((videos.get(i.source) for i in items if i.is_video), None)
    if first is None or not first.fps > 0:
        return SLIDESHOW_FPS
    return float(first.fps) / (sampling.every or 1)


def run_pca(req: PcaRequest, ui: Reporter = SILENT) -> PcaResult:
    """PCA of the patch tokens of every input: (N, gh, gw, C) colours in [0, 1], pictures, masks."""
    import numpy as np

    from vitcli import pca as pcamath
    from vitcli.export import save_npy

    kind = req.kind
    targets = [req.out if kind != "folder" else None, req.mask, req.npy,
               mask_path(req.npy) if req.npy and req.foreground else None]
    check_targets(targets, req.force)
    if kind == "folder":
        _check_folder(req.out)
    given = collect_items(req.inputs, req.run, req.sampling, alone=not req.fit_on)
    fit_given = Collected(())
    if req.fit_on:  # the sampling flags apply to the videos of both sets, and need one in either
        fit_given = collect_items(req.fit_on, req.run, req.sampling, alone=False)
        check_sampled(req.sampling.video(), given, fit_given)
    if req.fit_first is not None and req.fit_first > len(given.items):
        raise UsageError(f"--fit-first {req.fit_first} is more than the {len(given.items)} inputs given"
                         + (" (frames included)" if given.videos else ""),
                         hint=f"give --fit-first {max(1, len(given.items))} or less")
    if kind == "folder" and Path(req.out).is_dir():
        check_targets(row_files(req.out, len(given.items)), req.force)
    if not req.model.pretrained:
        ui.warn(RANDOM_PICTURES)
    src = load_tokens_model(req.model, req.layer, req.size)
    keep = 0 if kind is None and not req.mask else len(given.items) if kind in ("animation", "folder") else SHEET_MAX
    outputs: dict = {}
    row_pictures = None
    with scratch_folder() as folder:
        tok = patch_tokens(src, given.items, given.videos, req.run, folder, "tokens.npy", ui, keep_pictures=keep,
                           unopened=given.skipped)
        images, skipped = list(tok.items), [*given.skipped, *tok.skipped]
        fit_tokens, fit_images = None, images
        if req.fit_on:
            fit = patch_tokens(src, fit_given.items, fit_given.videos, req.run, folder, "fit.npy", ui,
                               unopened=fit_given.skipped)
            skipped += [*fit_given.skipped, *fit.skipped]
            fit_tokens, fit_images = fit.rows, fit.items
            del fit
        elif req.fit_first is not None:
            k = min(req.fit_first, len(images))
            if k < req.fit_first:
                ui.warn(f"--fit-first {req.fit_first}: only {k} inputs could be read; fitting on them")
            fit_tokens, fit_images = tok.rows[:k], images[:k]
        maps = pcamath.pca_maps(tok.rows, components=req.components, per_image=req.per_image,
                                foreground=req.foreground, threshold=req.threshold, fit_tokens=fit_tokens)
        if req.fit_first is not None:
            maps = replace(maps, mode="fit-first")
        fit_tokens = None
        if req.npy:
            save_npy(maps.maps.astype(np.float32), req.npy)
            outputs["npy"] = req.npy
            if maps.mask is not None:
                save_npy(maps.mask.astype(bool), mask_path(req.npy))
                outputs["mask_npy"] = str(mask_path(req.npy))
        if req.out or req.mask:
            what = noun_for([i.is_video for i in images])
            lines = _legend(src, maps, len(fit_images), what)
            if req.out and kind == "sheet" or req.mask:
                shown = min(len(images), SHEET_MAX)
                if shown < len(images):
                    ui.note(f"the pictures show the first {shown} of {len(images)} {what}; --npy holds them all"
                            + ("; -o NAME.gif or -o FOLDER/ draws every one" if kind == "sheet" else ""))
                pictures, names = model_pictures(src.info, tok, shown), titles(images[:shown])
                mask = None if maps.mask is None else maps.mask[:shown]
                if req.out and kind == "sheet":
                    save_picture(_draw().pca_sheet(pictures, maps.maps[:shown], names, mask, lines), req.out)
                    outputs["picture"] = req.out
                if req.mask:
                    save_picture(_draw().mask_picture(pictures, mask, names, _mask_legend(src, maps)), req.mask)
                    outputs["mask_picture"] = req.mask
            if kind == "animation":
                fps = animation_fps(images, given.videos, req.sampling)
                frames = [_row_picture(tok, src, maps, i, lines) for i in range(len(images))]
                with atomic_output(req.out) as tmp:
                    _draw().animated(frames, tmp, ANIMATIONS[Path(req.out).suffix.lower()], fps)
                outputs["animation"] = req.out
                row_pictures = {"kind": "animation", "frames": len(frames), "fps": fps,
                                "frame_ms": max(1, round(1000 / fps))}
            elif kind == "folder":
                Path(req.out).mkdir(exist_ok=True)
                files = row_files(req.out, len(given.items))[:len(images)]  # the names checked before
                for i, f in enumerate(files):
                    save_picture(_row_picture(tok, src, maps, i, lines), f)
                outputs["pictures"] = req.out
                row_pictures = {"kind": "folder", "files": [str(f) for f in files]}
        tok = None  # release the memory maps before their folder is removed
    return PcaResult(src.info, src.to_dict(), tuple(label(i) for i in images), tuple(label(i) for i in fit_images),
                     maps, tuple(skipped), len(given.items) + len(given.skipped) + len(fit_given.items)
                     + len(fit_given.skipped), outputs, tuple(i.row() for i in images), row_pictures)


def _draw():
    from vitcli import draw_features

    return draw_features


def _check_folder(out: str) -> None:
    """-o FOLDER/: a folder, or a new one in an existing folder (made when the pictures are written)."""
    p = Path(out)
    if p.exists() and not p.is_dir():
        raise OutputError(f"{p}: exists and is not a folder", hint="choose another -o FOLDER/")
    if not p.exists() and not p.absolute().parent.exists():
        raise OutputError(f"{p.absolute().parent}: no such directory", hint="create it first")


def noun_for(frames: Sequence[bool]) -> str:
    """What the rows are, for people, from whether each is a video frame: frames (all), images (none), else
    inputs."""
    return "frames" if frames and all(frames) else "images" if not any(frames) else "inputs"


def fit_description(mode: str, n_fit: int, noun: str) -> str:
    """How the PCA was fitted (`PcaMaps.mode`), in words: the `fitted` line of the table and the pictures' legend.
    `n_fit`: the rows (or --fit-on inputs) fitted on; `noun`: what the rows are (`noun_for`)."""
    one, s = noun[:-1], "" if n_fit == 1 else "s"
    return {"joint": f"jointly on all {n_fit} {noun}",
            "per-image": f"one PCA per {one}",
            "fit-on": f"on {n_fit} other input{s} (--fit-on)",
            "fit-first": f"on the first {n_fit} {one}{s} (--fit-first), applied to all"}[mode]


def _row_picture(tok: Tokens, src: TokenSource, maps, i: int, lines: list[str]):
    """Row i alone, as the sheet shows it: the input beside its map, its title, the legend."""
    picture = model_pictures(src.info, tok, 1, start=i)
    mask = None if maps.mask is None else maps.mask[i:i + 1]
    return _draw().pca_sheet(picture, maps.maps[i:i + 1], [title(tok.items[i])], mask, lines, columns=1)


def _variance(fit) -> str:
    return ", ".join(f"{100 * v:.1f}%" for v in fit.explained_variance_ratio)


def _legend(src: TokenSource, maps, n_fit: int, what: str = "images") -> list[str]:
    """The lines under the PCA pictures: model, tokens, how the PCA was fitted, what the components explain."""
    comparable = "not comparable" if maps.mode == "per-image" else "comparable"
    lines = [f"{src.info.name}: {src.description}.",
             f"Fitted {fit_description(maps.mode, n_fit, what)} (colours {comparable} across {what})"
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
