"""`vitcli similar`: cosine similarity between one query patch and every patch of the query and target images;
or, with `--mutual`, the mutual nearest neighbours between the patches of two images.

The query is one picture (`vitcli.inputs.open_single`: an image, `VIDEO@t=SECONDS`, `VIDEO@frame=N`, or a video's
first frame); the targets are what `features` takes (`vitcli.inputs.collect`): images, videos (every frame, or
the sampling flags), folders, globs; every target frame gets its own map.

The tokens are those of `vitcli features --mode patch --grid [--layer K]`, read through the same one call as
`vitcli pca` (`commands.pca.patch_tokens`); the math is `vitcli.pca` (`similar`, `mutual_nearest_neighbours`),
the pictures `vitcli.draw_features`. `--point X,Y` is a pixel of the original image (after EXIF orientation),
mapped through the model's own resize and crop (`vitcli.preprocess.Plan.geometry(...).point_to_patch`).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

from vitcli.video import Sampling
from vitcli.commands.pca import (
    RANDOM_COLOURS,
    SHEET_MAX,
    TokenSource,
    collect_items,
    label,
    load_tokens_model,
    model_pictures,
    patch_tokens,
    scratch_folder,
    titles,
)
from vitcli.core.tokens import Pair, parse_pair
from vitcli.errors import InputError, UsageError
from vitcli.outputs import check_targets, save_picture
from vitcli.progress import SILENT, Reporter
from vitcli.requests import RANDOM_PICTURES, ModelRequest, RunOptions, at_least, needs_forward
from vitcli.results import ModelInfo, Outcome, Skipped

_INTS = re.compile(r"^\s*(-?\d+)\s*,\s*(-?\d+)\s*$")
_NUMBERS = re.compile(r"^\s*(-?\d+(?:\.\d*)?)\s*,\s*(-?\d+(?:\.\d*)?)\s*$")


def parse_row_col(text: str, option: str = "--patch") -> tuple[int, int]:
    m = _INTS.match(text)
    if not m:
        raise UsageError(f"{option} {text!r} is not ROW,COL", hint=f"e.g. {option} 3,5 (0-based, row first)")
    return int(m[1]), int(m[2])


def parse_xy(text: str, option: str = "--point") -> tuple[float, float]:
    m = _NUMBERS.match(text)
    if not m:
        raise UsageError(f"{option} {text!r} is not X,Y", hint=f"e.g. {option} 120,80 (pixels of the original "
                                                                "image, x to the right, y down)")
    return float(m[1]), float(m[2])


def _num(v: float) -> str:
    return f"{v:g}"


@dataclass(frozen=True, kw_only=True)
class SimilarRequest:
    query: str
    targets: tuple[str, ...] = ()
    patch: str | None = None  # "ROW,COL" on the query image's patch grid
    point: str | None = None  # "X,Y" in original query-image pixels
    mutual: bool = False
    top_k: int | None = None  # --mutual: keep the K most similar pairs
    model: ModelRequest = ModelRequest()
    layer: int | None = None
    size: Pair | None = None
    run: RunOptions = RunOptions()
    sampling: Sampling = Sampling()  # which frames of the target videos
    out: str | None = None
    npy: str | None = None
    force: bool = False
    patch_rc: tuple[int, int] | None = field(init=False, default=None)
    point_xy: tuple[float, float] | None = field(init=False, default=None)

    def __post_init__(self):
        if self.size is not None:
            object.__setattr__(self, "size", parse_pair(self.size, "--size"))
        needs_forward(self.model, "vitcli similar")
        given = [flag for flag, v in (("--patch", self.patch), ("--point", self.point)) if v is not None]
        if self.mutual:
            if given:
                raise UsageError(f"--mutual matches every patch; {given[0]} picks one", hint=f"drop {given[0]}")
            if len(self.targets) != 1:
                raise UsageError(f"--mutual compares two images; {1 + len(self.targets)} given",
                                 hint="give QUERY_IMAGE and one TARGET")
        else:
            if len(given) != 1:
                raise UsageError("give the query patch: --patch ROW,COL or --point X,Y" if not given
                                 else "--patch and --point both pick the query patch", hint="give one of them")
            if self.top_k is not None:
                raise UsageError("--top-k goes with --mutual")
        at_least("--top-k", self.top_k, 1)
        if self.patch is not None:
            object.__setattr__(self, "patch_rc", parse_row_col(self.patch))
        if self.point is not None:
            object.__setattr__(self, "point_xy", parse_xy(self.point))
        if self.npy and Path(self.npy).suffix != ".npy":
            raise UsageError(f"--npy {self.npy} must end in .npy")
        if self.sampling.given() and not self.targets:
            raise UsageError("--fps, --every, --start, --end and --max-frames sample the target videos; the query "
                             "is one picture", hint="name a query frame as VIDEO@t=SECONDS or VIDEO@frame=N")


@dataclass(frozen=True)
class SimilarResult(Outcome):
    model: ModelInfo
    tokens: dict  # TokenSource.to_dict()
    images: tuple[str, ...]  # image 0 the query; rows of --npy (maps): path, path@frame=N, archive.tar::member
    query: dict  # {"row", "col"} and, with --point, {"point", "patch_box"}; {} with --mutual
    best: tuple  # vitcli.pca.Match per image (image 0: the best other than the query patch); () with --mutual
    pairs: tuple  # vitcli.pca.Correspondence, most similar first; () without --mutual
    mutual: bool
    skipped: tuple[Skipped, ...]
    total: int
    outputs: dict = field(default_factory=dict)
    rows: tuple[dict, ...] = ()  # per image: source, frame, time (Item.row())

    def to_dict(self) -> dict:
        d = {"model": self.model.to_dict(), "tokens": self.tokens, "images": list(self.images),
             "rows": list(self.rows), "similarity": "cosine, patch tokens", "mutual": self.mutual}
        if self.mutual:
            d["pairs"] = [p.to_dict() for p in self.pairs]
        else:
            d["query"] = self.query
            d["best"] = [{"image": img, **b.to_dict()} for img, b in zip(self.images, self.best)]
        return {**d, "skipped": [s.to_dict() for s in self.skipped], "outputs": self.outputs}


def point_patch(info: ModelInfo, hw: Pair, x: float, y: float, image: str) -> tuple[tuple[int, int], tuple]:
    """Original pixel (x, y) of an (h, w) image -> (row, col) of the model-input patch holding it, and the
    original-image box that patch came from; a UsageError naming the visible area when it was cropped away."""
    from vitcli.preprocess import NotExact, Plan

    try:
        geo = Plan.from_config(info.data_config).geometry(hw)
    except NotExact as e:
        raise UsageError(f"--point cannot be mapped through {info.name}'s preprocessing ({e})",
                         hint="give the patch with --patch ROW,COL") from e
    rc = geo.point_to_patch(x, y, info.patch_size)
    if rc is None:
        x0, y0, x1, y1 = geo.source_box()
        raise UsageError(f"--point {_num(x)},{_num(y)} is not in what {info.name} sees of {image}: its "
                         f"preprocessing keeps x {_num(round(x0, 1))} to {_num(round(x1, 1))} and y "
                         f"{_num(round(y0, 1))} to {_num(round(y1, 1))} of the {hw[1]}x{hw[0]} (w x h) image",
                         hint="pick a point inside that area, or give --patch ROW,COL")
    return rc, geo.patch_box(rc[0], rc[1], info.patch_size)


def query_item(ref: str):
    """The query: one picture (`open_single`, so a bad one fails before the model loads) and its Item, with the
    probe of its video ({} for an image)."""
    from vitcli.inputs import Item, collect, open_single

    loaded = open_single(ref)
    if loaded.format != "video frame":
        return loaded, Item(ref), {}
    one = collect([loaded.path])  # VIDEO@frame=N: the frame open_single decoded, with its time and the probe
    return loaded, one.items[0], one.videos


def run_similar(req: SimilarRequest, ui: Reporter = SILENT) -> SimilarResult:
    """Cosine maps of one query patch over the query and target images, or the mutual nearest neighbours."""
    import numpy as np

    from vitcli import draw_features as draw
    from vitcli import pca as pcamath
    from vitcli.export import save_npy

    check_targets([req.out, req.npy], req.force)
    loaded, qitem, videos = query_item(req.query)  # a bad query fails here, before the model loads
    given = collect_items(req.targets, req.run, req.sampling) if req.targets else None
    targets = list(given.items) if given else []
    unopened = list(given.skipped) if given else []
    if req.mutual:
        if len(targets) != 1 or unopened:
            raise UsageError(f"--mutual compares two images; {req.targets[0]} gives {len(targets)}"
                             + (f" ({unopened[0].line()})" if unopened else ""),
                             hint="give one TARGET image or one frame: VIDEO@t=SECONDS or VIDEO@frame=N")
        from vitcli.commands.pca import open_item

        open_item(targets[0])  # both pictures are needed: fail before the model loads
    if not req.model.pretrained:
        ui.warn(RANDOM_PICTURES)
    src = load_tokens_model(req.model, req.layer, req.size)
    query: dict = {}
    if not req.mutual:
        if req.point_xy is not None:
            (row, col), box = point_patch(src.info, (loaded.image.height, loaded.image.width), *req.point_xy,
                                          req.query)
            query = {"point": list(req.point_xy), "patch_box": [float(v) for v in box]}
        else:
            row, col = req.patch_rc
        pcamath.check_patch(src.grid, row, col)
        query = {"row": row, "col": col, **query}
    items = [qitem, *targets]
    videos = {**(given.videos if given else {}), **videos}
    keep = 0 if not req.out else 2 if req.mutual else SHEET_MAX
    outputs = {}
    with scratch_folder() as folder:
        tok = patch_tokens(src, items, videos, req.run, folder, "tokens.npy", ui, keep_pictures=keep,
                           unopened=unopened)
        if tok.positions[0] != 0:
            reason = next((s.reason for s in tok.skipped if s.source == qitem.origin), "not read")
            raise InputError(f"{label(qitem)}: {reason}")
        if req.mutual and len(tok.items) < 2:
            raise InputError(tok.skipped[0].line())
        if req.mutual:
            pairs = tuple(pcamath.mutual_nearest_neighbours(np.asarray(tok.rows[0]), np.asarray(tok.rows[1]),
                                                            req.top_k))
            sim = None
        else:
            sim = pcamath.similar(tok.rows, row, col)
            pairs = ()
        images, skipped = [label(i) for i in tok.items], [*unopened, *tok.skipped]
        if req.npy:
            if req.mutual:  # (K, 5): a_row, a_col, b_row, b_col, cosine
                table = np.array([[*p.a, *p.b, p.similarity] for p in pairs], dtype=np.float64).reshape(-1, 5)
                save_npy(table, req.npy)
            else:
                save_npy(sim.maps.astype(np.float32), req.npy)
            outputs["npy"] = req.npy
        if req.out:
            lines = [f"{src.info.name}: {src.description}."]
            if not src.info.pretrained:
                lines.append(RANDOM_COLOURS.replace("colours", "similarities"))
            if req.mutual:
                a, b = model_pictures(src.info, tok, 2)
                pic = draw.correspondence_picture(a, b, pairs, src.grid, src.grid, lines)
            else:
                shown = min(len(images), SHEET_MAX)
                if shown < len(images):
                    ui.note(f"the picture shows the query and the first {shown - 1} of {len(images) - 1} targets; "
                            "--npy holds them all")
                if "point" in query:
                    lines.insert(1, f"Query point ({_num(req.point_xy[0])}, {_num(req.point_xy[1])}) of the "
                                    f"original image is in patch (row {row}, column {col}).")
                pics = model_pictures(src.info, tok, shown)
                names = titles(tok.items[:shown], time=False)  # room for the best match in the title
                names = [f"query {names[0]}", *names[1:]]
                pic = draw.similarity_sheet(pics[0], (row, col), pics[1:], sim.maps[:shown], sim.best[:shown],
                                            names, lines)
            save_picture(pic, req.out)
            outputs["picture"] = req.out
        rows = tuple(i.row() for i in tok.items)
        tok = None  # release the memory maps before their folder is removed
    return SimilarResult(src.info, src.to_dict(), tuple(images), query, () if sim is None else sim.best, pairs,
                         req.mutual, tuple(skipped), len(items) + len(unopened), outputs, rows)


__all__ = ["SimilarRequest", "SimilarResult", "run_similar", "point_patch", "parse_row_col", "parse_xy",
           "TokenSource"]
