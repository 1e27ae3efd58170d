"""`vitcli inspect`: follow the tokens through the blocks — norms, CLS attention entropy, CLS versus patches."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from vitcli.progress import SILENT, Reporter
from vitcli.requests import RANDOM_PICTURES, ModelRequest
from vitcli.results import ModelInfo


@dataclass(frozen=True, kw_only=True)
class InspectRequest:
    image: str
    model: ModelRequest


@dataclass(frozen=True)
class InspectResult:
    model: ModelInfo
    image: str
    rows: tuple

    def to_dict(self) -> dict:
        return {"model": self.model.to_dict(), "image": self.image, "blocks": list(self.rows)}


def run_inspect(req: InspectRequest, ui: Reporter = SILENT) -> InspectResult:
    from vitcli.backend import internals
    from vitcli.backend.models import load_model
    from vitcli.imaging import open_image

    loaded = open_image(req.image)  # a bad image fails here, before the model loads
    if not req.model.pretrained:
        ui.warn(RANDOM_PICTURES)
    model = load_model(req.model)
    return InspectResult(model.info, str(Path(req.image)), tuple(internals.block_stats(model, loaded.image)))
