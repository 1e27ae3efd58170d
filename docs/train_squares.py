"""Train a tiny ViT to name the colour of a square, offline, and measure what each `vitcli explain` method sees.

    python docs/train_squares.py OUT_DIR [--steps N] [--seed S]

Why: no trained ImageNet weights exist offline, and an attribution map is only worth checking where the right
answer is known. Here it is: the only thing that decides the class is one coloured square on one patch.

What it does, seeded and deterministic (one CPU thread, `torch.use_deterministic_algorithms`), mirroring the
toy model of tests/test_explain.py in pixel space (PNG pictures, normalised by the model's own config):
- data: 48x32 RGB pictures (h 32, w 48: a non-square 4x6 grid of 8x8 patches) of grey noise (128 + 32 N(0, 1)
  per pixel and channel, clipped to 0..255); classes 0-3 (`LABELS`): one patch-aligned 8x8 square of that
  colour at a random patch; class 4 (`none`): no square. Fresh pictures every step, so nothing repeats.
- model: timm's `vit_tiny_patch16_224` architecture at img_size (32, 48), patch 8, width 32, 2 blocks of 2
  heads, CLS pooling, 5 classes (27k parameters); Adam, lr 3e-3, `STEPS` steps of 64 pictures.
- output (OUT_DIR): timm's local-dir format (`save_for_hf`: config.json + model.safetensors, a pretrained_cfg
  of its own: tag `squares`, input_size (3, 32, 48), mean 0.5 / std 0.25, crop_pct 1.0, bilinear, label_names),
  so every vitcli command loads it as `local-dir:OUT_DIR`; `samples/COLOUR.png`: one 48x32 picture per class
  with a square (square at patch `SAMPLE_PATCH`); `samples/wide.png`: a 128x64 picture at twice the scale with
  a red square the model sees and a green one in the margin its centre crop cuts away (what `explain` shades);
  `samples/features.npy`: (4, 32) float32, the pooled output of samples/COLOUR.png in `LABELS` order (what
  `vitcli features --mode cls` writes for them: a `--target-embedding` for the docs);
  `metrics.json`: held-out accuracy, and for 16 held-out pictures with a square, per method of
  `vitcli.backend.explain.METHODS`: how often its top patch is the square (chance: 1 in 24) and the mean area
  of its deletion curve, beside the square-first and random orders' areas; for the methods the LN-rule changes,
  the same with the plain gradient (`plain_gradient`, `--no-ln-rule`).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

H, W, P = 32, 48, 8
GRID = (H // P, W // P)  # (4, 6)
LABELS = ["red", "green", "blue", "yellow", "none"]
COLOURS = [(230, 30, 30), (30, 200, 30), (30, 30, 230), (230, 220, 30)]  # RGB of classes 0-3
MEAN, STD = 0.5, 0.25
MODEL = dict(img_size=(H, W), patch_size=P, embed_dim=32, depth=2, num_heads=2, num_classes=5)
ARCH = "vit_tiny_patch16_224"
STEPS, BATCH, LR, SEED = 300, 64, 3e-3, 0
SAMPLE_PATCH = (1, 4)  # (row, col) of the square in samples/COLOUR.png
EVAL_IMAGES = 16


def pictures(n: int, rng):
    """n pictures (n, 32, 48, 3) uint8, their classes (n,), the square's patch index (n,) (row-major)."""
    import numpy as np

    x = np.clip(np.rint(128 + 32 * rng.standard_normal((n, H, W, 3))), 0, 255).astype(np.uint8)
    y = rng.integers(0, 5, n)
    pos = rng.integers(0, GRID[0] * GRID[1], n)
    for i in range(n):
        if y[i] < 4:
            r, c = divmod(int(pos[i]), GRID[1])
            x[i, r * P:(r + 1) * P, c * P:(c + 1) * P] = COLOURS[y[i]]
    return x, y, pos


def normalise(u8):
    """(n, h, w, 3) uint8 -> (n, 3, h, w) float32 tensor, as the model's config normalises (x / 255 - mean) / std."""
    import torch

    return (torch.from_numpy(u8).permute(0, 3, 1, 2).float() / 255 - MEAN) / STD


def wide_sample(rng):
    """(64, 128, 3) uint8: noise drawn at 32x64 and doubled; a red square the model sees at input patch (1, 2),
    a green one in the left margin that the centre crop (to 32x48 after halving) cuts away."""
    import numpy as np

    small = np.clip(np.rint(128 + 32 * rng.standard_normal((32, 64, 3))), 0, 255).astype(np.uint8)
    small[8:16, 24:32] = COLOURS[0]  # resized 32x64 -> crop x 8..56: input x 16..24 = patch column 2, row 1
    small[16:24, 0:8] = COLOURS[1]  # x 0..8 of the resized picture: cropped away
    return small.repeat(2, axis=0).repeat(2, axis=1)


def measure(model, x, y, pos) -> dict:
    """Per method: top-patch hits on the square, mean deletion area; and the square-first / random areas."""
    import numpy as np

    from vitcli.backend import explain as E

    out = {}
    truth_areas, random_areas = [], []
    rng = np.random.default_rng(0)
    for i in range(len(y)):
        xi, t = x[i:i + 1], int(y[i])
        truth = np.zeros(GRID)
        truth.flat[int(pos[i])] = 1
        truth_areas.append(E.deletion_curve(model, xi, truth, target=t).area)
        random_areas.append(np.mean([E.deletion_curve(model, xi, rng.random(GRID), target=t).area
                                     for _ in range(3)]))
    def run(method, **kw):
        hits, areas, start = 0, [], time.perf_counter()
        for i in range(len(y)):
            xi, t = x[i:i + 1], int(y[i])
            a = E.explain(model, xi, method, target=t, **kw)
            hits += int(np.argmax(a.map) == int(pos[i]))
            areas.append(E.deletion_curve(model, xi, a.map, target=t).area)
        return hits, round(float(np.mean(areas)), 4), round(time.perf_counter() - start, 2)

    for method in E.METHODS:
        hits, area, seconds = run(method)
        out[method] = {"top_patch_is_square": hits, "of": len(y), "deletion_area": area, "seconds": seconds}
        if method in E.LN_RULE_METHODS:  # the default holds LayerNorm's scale constant; the libraries' gradient:
            hits, area, _ = run(method, ln_rule=False)
            out[method]["plain_gradient"] = {"top_patch_is_square": hits, "deletion_area": area}
    return {"methods": out, "deletion_area_square_first": round(float(np.mean(truth_areas)), 4),
            "deletion_area_random": round(float(np.mean(random_areas)), 4)}


def sample_features(out: Path):
    """(4, 32) float32: the pooled output (CLS token after the final norm) of samples/COLOUR.png in `LABELS`
    order, read back through vitcli from the saved folder: what `vitcli features --mode cls` writes for them."""
    import numpy as np
    import torch

    from vitcli.backend.internals import model_input
    from vitcli.backend.models import load_model
    from vitcli.imaging import open_image
    from vitcli.requests import ModelRequest

    model = load_model(ModelRequest(name=f"local-dir:{out}", device="cpu"))
    rows = []
    with torch.no_grad():
        for label in LABELS[:4]:
            x = model_input(model, open_image(out / "samples" / f"{label}.png").image)
            rows.append(model.module.forward_head(model.module.forward_features(x), pre_logits=True)[0])
    return torch.stack(rows).numpy().astype(np.float32)


def train(out_dir, steps: int = STEPS, seed: int = SEED) -> dict:
    """Train, save to `out_dir` (timm local-dir + samples/ + metrics.json) and return the metrics dict."""
    import numpy as np
    import timm
    import torch
    from PIL import Image
    from timm.models import save_for_hf

    if steps < 1:
        raise ValueError(f"steps must be at least 1, got {steps}")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    threads, deterministic = torch.get_num_threads(), torch.are_deterministic_algorithms_enabled()
    torch.set_num_threads(1)
    torch.use_deterministic_algorithms(True)
    try:
        torch.manual_seed(seed)
        model = timm.create_model(ARCH, pretrained=False, **MODEL)
        model.pretrained_cfg = {
            "architecture": ARCH, "tag": "squares", "num_classes": 5, "input_size": (3, H, W),
            "fixed_input_size": True, "interpolation": "bilinear", "crop_pct": 1.0, "crop_mode": "center",
            "mean": (MEAN,) * 3, "std": (STD,) * 3, "first_conv": "patch_embed.proj", "classifier": "head"}
        optimizer = torch.optim.Adam(model.parameters(), lr=LR)
        rng = np.random.default_rng(seed)
        start = time.perf_counter()
        for _ in range(steps):
            u8, y, _ = pictures(BATCH, rng)
            loss = torch.nn.functional.cross_entropy(model(normalise(u8)), torch.from_numpy(y))
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
        train_seconds = time.perf_counter() - start
        model.eval().requires_grad_(False)

        test = np.random.default_rng(seed + 1)
        u8, y, pos = pictures(256, test)
        with torch.no_grad():
            accuracy = float((model(normalise(u8)).argmax(-1).numpy() == y).mean())
        keep = np.flatnonzero(y < 4)[:EVAL_IMAGES]
        measured = measure(model, normalise(u8[keep]), y[keep], pos[keep])

        save_for_hf(model, out, model_config={"label_names": LABELS}, safe_serialization=True)
        (out / "samples").mkdir(exist_ok=True)
        sample_rng = np.random.default_rng(seed + 2)
        for k, colour in enumerate(COLOURS):
            pic = np.clip(np.rint(128 + 32 * sample_rng.standard_normal((H, W, 3))), 0, 255).astype(np.uint8)
            r, c = SAMPLE_PATCH
            pic[r * P:(r + 1) * P, c * P:(c + 1) * P] = colour
            Image.fromarray(pic).save(out / "samples" / f"{LABELS[k]}.png")
        Image.fromarray(wide_sample(sample_rng)).save(out / "samples" / "wide.png")
        np.save(out / "samples" / "features.npy", sample_features(out))
        metrics = {
            "accuracy": accuracy, "test_pictures": 256, "steps": steps, "batch": BATCH, "lr": LR, "seed": seed,
            "train_seconds": round(train_seconds, 1), "threads": 1, "model": {"arch": ARCH, **MODEL},
            "chance_hit_rate": f"1/{GRID[0] * GRID[1]}", **measured,
            "versions": {"torch": torch.__version__, "timm": timm.__version__},
        }
        (out / "metrics.json").write_text(json.dumps(metrics, indent=2) + "\n")
        return metrics
    finally:
        torch.set_num_threads(threads)
        torch.use_deterministic_algorithms(deterministic)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out_dir", help="folder to write (timm local-dir format + samples/ + metrics.json)")
    parser.add_argument("--steps", type=int, default=STEPS, help=f"training steps of {BATCH} pictures ({STEPS})")
    parser.add_argument("--seed", type=int, default=SEED, help=f"seed for weights and pictures ({SEED})")
    args = parser.parse_args(argv)
    metrics = train(args.out_dir, steps=args.steps, seed=args.seed)
    print(json.dumps({k: metrics[k] for k in ("accuracy", "methods", "deletion_area_square_first",
                                              "deletion_area_random", "train_seconds")}, indent=2))


if __name__ == "__main__":
    main()
