"""`vitcli posembed`: cosine similarity between every pair of patch position embeddings (ViT's figure 7), of a
model's learned table or of the fixed 2-D sine-cosine reference."""

from __future__ import annotations

from dataclasses import dataclass, field, replace

from vitcli.core.tokens import Pair, parse_pair
from vitcli.errors import UsageError
from vitcli.outputs import check_targets, save_picture
from vitcli.progress import SILENT, Reporter
from vitcli.requests import RANDOM_PICTURES, ModelRequest, one_of
from vitcli.results import ModelInfo

REFERENCES = ("sincos",)
SINCOS = "fixed 2-D sine-cosine embedding (timm build_sincos2d_pos_embed, temperature 10000)"


@dataclass(frozen=True, kw_only=True)
class PosembedRequest:
    model: ModelRequest
    size: Pair | None = None  # resample the embedding to this input size (a reference is built at its grid)
    reference: str | None = None  # "sincos": the fixed 2-D sine-cosine table at --model's grid and width
    out: str | None = None
    npy: str | None = None
    force: bool = False

    def __post_init__(self):
        if self.size is not None:
            object.__setattr__(self, "size", parse_pair(self.size, "--size"))
        if self.reference is not None:
            one_of("--reference", self.reference, REFERENCES)
            if self.model.checkpoint:
                raise UsageError("--reference sincos needs no weights, so --checkpoint has nothing to do",
                                 hint="drop --checkpoint (--model gives the grid and width), or drop --reference")


@dataclass(frozen=True)
class PosembedResult:
    model: ModelInfo
    grid: tuple
    resampled: bool
    neighbour_similarity: float  # mean cosine of 4-neighbour positions
    far_similarity: float  # mean cosine of positions at least half the grid apart
    outputs: dict = field(default_factory=dict)
    embed_dim: int | None = None  # D, channels of each position's embedding
    reference: dict | None = None  # what the reference table is and whose shape it takes; None: the model's own

    def to_dict(self) -> dict:
        return {"model": self.model.to_dict(), "grid": list(self.grid), "positions": self.grid[0] * self.grid[1],
                "embed_dim": self.embed_dim, "resampled": self.resampled, "reference": self.reference,
                "neighbour_similarity": self.neighbour_similarity, "far_similarity": self.far_similarity,
                "outputs": self.outputs}


def _reference_table(req: PosembedRequest):
    """The sine-cosine table (N, D) at the grid and width of --model's architecture, built on the meta device
    (no weights read, nothing downloaded); --size sets the grid. Returns (model info, table, grid, details)."""
    from vitcli.backend.models import load_model
    from vitcli.backend.positions import sincos_table

    model = load_model(replace(req.model, device="meta", pretrained=False))  # shapes only
    info = model.info
    if info.patch_size is None or info.img_size is None or not info.embed_dim:
        raise UsageError(f"{info.name} has no patch grid to lay a reference embedding on",
                         hint="use a ViT-family timm model for --model")
    ph, pw = info.patch_size
    h, w = req.size or info.img_size
    grid = (h // ph, w // pw)
    if grid[0] < 1 or grid[1] < 1:
        raise UsageError(f"--size {h}x{w} is smaller than one patch ({ph}x{pw})")
    table = sincos_table(grid, info.embed_dim)
    details = {"name": "sincos", "description": SINCOS, "shape_from": info.name,
               "default_model": req.model.name is None, "patch_size": [ph, pw]}
    return info, table, grid, details


def run_posembed(req: PosembedRequest, ui: Reporter = SILENT) -> PosembedResult:
    """Cosine similarity between every pair of patch position embeddings, (N, N), drawn as ViT's figure 7.

    The model's learned table (resampled by timm to --size), or with `reference="sincos"` the fixed 2-D
    sine-cosine table at the model's grid (or --size's) and width, no weights needed. Neighbour / far figures:
    `vitcli.backend.positions.neighbour_far`."""
    import numpy as np

    from vitcli import draw
    from vitcli.backend import internals
    from vitcli.backend.positions import neighbour_far
    from vitcli.export import save_npy

    check_targets([req.out, req.npy], req.force)
    reference = None
    if req.reference:
        info, table, grid, reference = _reference_table(req)
        what = (f"{SINCOS}: {grid[0]}x{grid[1]} positions x {table.shape[1]} channels, the shape of {info.name}"
                + (" (the default model)" if reference["default_model"] else "") + "; no weights")
    else:
        from vitcli.backend.models import load_model

        if not req.model.pretrained:
            ui.warn(RANDOM_PICTURES)
        model = load_model(req.model)
        info = model.info
        table, grid = internals.position_embedding(model, req.size)
        what = (f"Learned position embedding of {info.name} ({info.weights})"
                + (f", resampled by timm to {grid[0]}x{grid[1]}" if req.size is not None else "") + ".")
    sim = internals.cosine_matrix(table)  # (N, N)
    near, far = neighbour_far(sim, grid)
    outputs = {}
    if req.out:
        save_picture(draw.with_legend(draw.similarity_picture(sim, grid), [what]), req.out)
        outputs["picture"] = req.out
    if req.npy:
        save_npy(sim.astype(np.float32), req.npy)
        outputs["npy"] = req.npy
    return PosembedResult(info, grid, req.size is not None and reference is None, near, far, outputs,
                          embed_dim=int(table.shape[1]), reference=reference)
