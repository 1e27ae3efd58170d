"""`vitcli inspect`: follow the tokens through the blocks — norms, CLS attention entropy, CLS versus patches —
or, with `--shuffle-patches`, what the position embeddings change when the patches are shuffled."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from vitcli.errors import UsageError
from vitcli.outputs import check_targets, save_picture
from vitcli.progress import SILENT, Reporter
from vitcli.requests import RANDOM_PICTURES, ModelRequest, at_least
from vitcli.results import ModelInfo

# The side-by-side picture: each tile at least this many pixels on its longer side (integer nearest upscaling,
# so every pixel of the model's input stays a sharp block), titled, `GAP` px apart (vitcli.draw.montage).
TILE_MIN, GAP, TITLE = 224, 6, 16
ROUNDING = 1e-5  # differences below this times the output RMS are float rounding (their digits vary by CPU)


@dataclass(frozen=True, kw_only=True)
class InspectRequest:
    image: str
    model: ModelRequest
    shuffle_patches: bool = False  # run the shuffle experiment instead of the per-block table
    seed: int | None = None  # the permutation's seed (default 0); only with shuffle_patches
    out: str | None = None  # the original and shuffled input side by side (PNG); only with shuffle_patches
    force: bool = False

    def __post_init__(self):
        if not self.shuffle_patches:
            if self.seed is not None:
                raise UsageError("--seed goes with --shuffle-patches", hint="add --shuffle-patches")
            if self.out is not None:
                raise UsageError("--out goes with --shuffle-patches (the per-block table has no picture)",
                                 hint="add --shuffle-patches, or use `vitcli attention -o`")
        at_least("--seed", self.seed, 0)


@dataclass(frozen=True)
class InspectResult:
    model: ModelInfo
    image: str
    rows: tuple

    def to_dict(self) -> dict:
        return {"model": self.model.to_dict(), "image": self.image, "blocks": list(self.rows)}


@dataclass(frozen=True)
class ShuffleResult:
    """The shuffle experiment (`vitcli.backend.positions.shuffle_experiment`) on one image.

    `figures`: its JSON-ready dict — seed, permutation, grid, patch, prefix_tokens, cls_token, registers, pool,
    compared, max_diff_with_pos, max_diff_without_pos (patch tokens, max absolute difference in the units of
    the outputs after the final norm), output_scale (their RMS), rel_diff_with_pos / rel_diff_without_pos,
    with_pos / without_pos (every figure), patch_embed_max_diff."""

    model: ModelInfo
    image: str
    figures: dict
    outputs: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        return {"model": self.model.to_dict(), "image": self.image, **self.figures, "outputs": self.outputs}


def run_inspect(req: InspectRequest, ui: Reporter = SILENT) -> InspectResult | ShuffleResult:
    from vitcli.backend import internals
    from vitcli.backend.models import load_model
    from vitcli.inputs import open_single

    check_targets([req.out], req.force)
    loaded = open_single(req.image)  # a bad image (or video frame) fails here, before the model loads
    if req.shuffle_patches:
        if not req.model.pretrained:
            ui.note("Random weights (--no-pretrained): the shuffle experiment holds for any weights.")
        return _shuffle(req, load_model(req.model), loaded.image)
    if not req.model.pretrained:
        ui.warn(RANDOM_PICTURES)
    model = load_model(req.model)
    return InspectResult(model.info, str(Path(req.image)), tuple(internals.block_stats(model, loaded.image)))


def _shuffle(req: InspectRequest, model, image) -> ShuffleResult:
    """Shuffle the patches of the model's input, run it with and without its position embeddings."""
    import numpy as np

    from vitcli.backend import internals
    from vitcli.backend.data import pil_stages
    from vitcli.backend.positions import shuffle_experiment, shuffle_patches

    seed = 0 if req.seed is None else req.seed
    figures = shuffle_experiment(model, internals.model_input(model, image), seed=seed)
    figures.pop("shuffled")  # (1, 3, H, W) normalised: the picture below moves the unnormalised pixels instead
    outputs = {}
    if req.out:
        seen = np.asarray(pil_stages(model.info.data_config)(image).convert("RGB"))  # (H, W, 3) uint8
        moved = shuffle_patches(seen, figures["permutation"], tuple(figures["patch"]))
        save_picture(shuffle_picture(seen, moved, figures), req.out)
        outputs["picture"] = req.out
    return ShuffleResult(model.info, str(Path(req.image)), figures, outputs)


def shuffle_picture(seen, moved, figures: dict):
    """The model's input (H, W, 3) uint8 and its shuffled patches side by side, each upscaled by the same whole
    factor (nearest: pixels stay blocks), titled, with the experiment's figures in a legend underneath."""
    from PIL import Image

    from vitcli import draw

    h, w = seen.shape[:2]
    k = max(1, -(-TILE_MIN // max(h, w)))
    tiles = [(title, Image.fromarray(a).resize((w * k, h * k), Image.Resampling.NEAREST))
             for title, a in ((f"model input {h}x{w}", seen), (f"patches shuffled, seed {figures['seed']}", moved))]
    gh, gw = figures["grid"]
    lines = [f"Right: the {gh * gw} patches ({gh}x{gw} grid of {figures['patch'][0]}x{figures['patch'][1]} px) of "
             f"the left moved by a seeded permutation; the same patches, in other places.",
             f"Shuffled run vs the original run's patch outputs moved the same way: max difference "
             f"{figures['max_diff_with_pos']:.3g} with position embeddings, "
             + (f"{figures['max_diff_without_pos']:.3g}" if figures["rel_diff_without_pos"] >= ROUNDING else
                "~0 (float rounding)") + f" without (output RMS {figures['output_scale']:.3g}).",
             "Without positions a ViT sees a bag of patches: shuffling them only shuffles its outputs."]
    return draw.with_legend(draw.montage(tiles, columns=2, gap=GAP), lines)
