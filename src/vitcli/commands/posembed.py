"""`vitcli posembed`: cosine similarity between every pair of patch position embeddings (ViT's figure 7)."""

from __future__ import annotations

from dataclasses import dataclass, field

from vitcli.core.tokens import Pair, parse_pair
from vitcli.outputs import check_targets, save_picture
from vitcli.progress import SILENT, Reporter
from vitcli.requests import RANDOM_PICTURES, ModelRequest
from vitcli.results import ModelInfo


@dataclass(frozen=True, kw_only=True)
class PosembedRequest:
    model: ModelRequest
    size: Pair | None = None  # resample the embedding to this input size
    out: str | None = None
    npy: str | None = None
    force: bool = False

    def __post_init__(self):
        if self.size is not None:
            object.__setattr__(self, "size", parse_pair(self.size, "--size"))


@dataclass(frozen=True)
class PosembedResult:
    model: ModelInfo
    grid: tuple
    resampled: bool
    neighbour_similarity: float  # mean cosine of 4-neighbour positions
    far_similarity: float  # mean cosine of positions at least half the grid apart
    outputs: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        return {"model": self.model.to_dict(), "grid": list(self.grid), "positions": self.grid[0] * self.grid[1],
                "resampled": self.resampled, "neighbour_similarity": self.neighbour_similarity,
                "far_similarity": self.far_similarity, "outputs": self.outputs}


def run_posembed(req: PosembedRequest, ui: Reporter = SILENT) -> PosembedResult:
    """Cosine similarity between every pair of patch position embeddings, (N, N), drawn as ViT's figure 7."""
    import numpy as np

    from vitcli import draw
    from vitcli.backend import internals
    from vitcli.backend.models import load_model
    from vitcli.export import save_npy

    check_targets([req.out, req.npy], req.force)
    if not req.model.pretrained:
        ui.warn(RANDOM_PICTURES)
    model = load_model(req.model)
    table, grid = internals.position_embedding(model, req.size)
    sim = internals.cosine_matrix(table)
    gh, gw = grid
    r, c = np.divmod(np.arange(gh * gw), gw)
    dist = np.abs(r[:, None] - r[None]) + np.abs(c[:, None] - c[None])
    near = float(sim[dist == 1].mean()) if (dist == 1).any() else float("nan")
    far_mask = dist >= max(1, (gh + gw) // 2)
    far = float(sim[far_mask].mean()) if far_mask.any() else float("nan")
    outputs = {}
    if req.out:
        save_picture(draw.similarity_picture(sim, grid), req.out)
        outputs["picture"] = req.out
    if req.npy:
        save_npy(sim.astype(np.float32), req.npy)
        outputs["npy"] = req.npy
    return PosembedResult(model.info, grid, req.size is not None, near, far, outputs)
