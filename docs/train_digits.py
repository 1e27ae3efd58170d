"""Train a tiny ViT on scikit-learn's handwritten digits, offline, and save it where vitcli can load it.

    python docs/train_digits.py OUT_DIR [--epochs N] [--seed S]

Why: this machine cannot download weights, so the tutorial's attention and position-embedding pictures need a
model that has learned something. `sklearn.datasets.load_digits` ships with scikit-learn (1,797 scans of
handwritten digits, 8x8 pixels, 17 grey levels): no download.

What it does, all seeded and deterministic (one CPU thread, `torch.use_deterministic_algorithms`):
- data: each 8x8 scan becomes dark ink on white paper, upsampled x4 (PIL bilinear) to a 32x32 RGB picture,
  so a 4x4 patch covers one pixel of the scan and the patch grid is the scan's own 8x8 grid (64 patch tokens
  + CLS). Bilinear, not nearest: a nearest-upsampled patch is one flat grey level, a token with a single
  number in it, and the model learns slowly (held-back accuracy after 15 epochs in our trials, nearest vs
  bilinear with the same settings: 26 % vs 37 %, 18 % vs 58 %); a bilinear patch also carries the slope of
  the stroke through it. Where a patch sits comes only from the position embedding, which the model must
  learn. A fixed stratified 20 % of the digits (random_state 0, the same for every seed) is held back.
- model: timm's `vit_tiny_patch16_224` architecture at img_size 32, patch 4, width 32, 3 blocks of 2 heads,
  10 classes (42k parameters); learned position embeddings, as in ViT, initialised by timm (truncated
  normal, std 0.02).
- training: AdamW (timm `create_optimizer_v2`, no weight decay on position embedding / CLS / norms / biases),
  cosine schedule with warm-up (timm `CosineLRScheduler`), batch 16, random translations of up to half a
  patch (2 px, white fill) as augmentation — shifts teach a learned position table that neighbouring
  positions play alike (without them neighbour similarity stays near 0.23 after 15 epochs, with them 0.34,
  far similarity about 0 either way).
- output (OUT_DIR): timm's local-dir format (`save_for_hf`, config.json + model.safetensors, a pretrained_cfg
  of its own: tag sklearn_digits, input_size (3, 32, 32), the training mean/std, crop_pct 1.0, label_names
  "0".."9"), so `vitcli classify IMG --model local-dir:OUT_DIR`, `vitcli attention`, `vitcli posembed` work
  on it; `samples/digit-K.png`: the first held-back scan of each digit K, exactly as the model saw it in
  testing (32x32 RGB); `metrics.json`: held-back accuracy and confusion matrix, the accuracy with the
  position embedding zeroed, the position embedding's neighbour / far cosine similarity (the figures
  `vitcli posembed` prints) beside the sine-cosine reference's, seed, epochs, training time, the samples'
  predictions, and a check that the saved folder reloads through `timm.create_model("local-dir:...")` with
  the same outputs.
"""

from __future__ import annotations

import argparse
import json
import re
import time
from pathlib import Path

IMG, PATCH = 32, 4  # 8x8 scan -> 32x32 picture (bilinear, x4) -> 8x8 grid of 4x4 patches
MODEL = dict(img_size=IMG, patch_size=PATCH, embed_dim=32, depth=3, num_heads=2, num_classes=10)
ARCH = "vit_tiny_patch16_224"
TAG = "sklearn_digits"  # pretrained_cfg tag: what these weights were trained on
LABELS = [str(k) for k in range(10)]
BATCH, LR, WEIGHT_DECAY, WARMUP_EPOCHS, SHIFT = 16, 2e-3, 0.05, 2, 2
EPOCHS, SEED = 60, 0


def digit_pictures():
    """All 1,797 digits as 32x32 RGB uint8 pictures (dark ink on white), their labels, and the fixed split.

    Returns (pictures (1797, 32, 32, 3) uint8, labels (1797,) int64, train indices, test indices)."""
    import numpy as np
    from PIL import Image
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    digits = load_digits()
    ink = np.rint(digits.images * (255 / 16)).astype(np.uint8)  # (1797, 8, 8), 0..16 -> 0..255
    paper = 255 - ink  # dark ink on white paper
    big = np.stack([np.asarray(Image.fromarray(scan).resize((IMG, IMG), Image.Resampling.BILINEAR))
                    for scan in paper])  # (1797, 32, 32)
    pictures = np.repeat(big[..., None], 3, axis=-1)  # RGB
    index = np.arange(len(pictures))
    train_idx, test_idx = train_test_split(index, test_size=0.2, stratify=digits.target, random_state=0)
    return pictures, digits.target.astype(np.int64), np.sort(train_idx), np.sort(test_idx)


def _shift(x, generator, shift: int, fill: float):
    """Random translation of each picture by up to `shift` px in x and y, uncovered pixels set to `fill`.

    x: (B, 3, H, W); the shifts come from `generator`, so the run is reproducible."""
    import torch

    b, _, h, w = x.shape
    padded = torch.nn.functional.pad(x, (shift,) * 4, value=fill)
    dy, dx = torch.randint(0, 2 * shift + 1, (2, b), generator=generator)
    return torch.stack([padded[i, :, dy[i]:dy[i] + h, dx[i]:dx[i] + w] for i in range(b)])


def _accuracy(model, x, y, batch: int = 256) -> tuple[float, "object"]:
    """(accuracy, logits (N, 10)) of `model` in eval mode."""
    import torch

    model.eval()
    with torch.no_grad():
        logits = torch.cat([model(x[i:i + batch]) for i in range(0, len(x), batch)])
    return float((logits.argmax(-1) == y).float().mean()), logits


def _dumps(metrics: dict) -> str:
    """JSON, indented, with every list of plain numbers on one line (the confusion matrix reads as a table)."""
    def one_line(match) -> str:
        return "[" + ", ".join(v.strip() for v in match.group(1).split(",")) + "]"

    return re.sub(r"\[\s+([-+\d.eE,\s]+?)\s+\]", one_line, json.dumps(metrics, indent=2))


def train(out_dir, epochs: int = EPOCHS, seed: int = SEED) -> dict:
    """Train, save to `out_dir` (timm local-dir + samples/ + metrics.json) and return the metrics dict."""
    import numpy as np
    import timm
    import torch
    from PIL import Image
    from timm.models import save_for_hf
    from timm.optim import create_optimizer_v2
    from timm.scheduler import CosineLRScheduler

    from vitcli.backend.positions import similarity_figures, sincos_table

    if epochs < 1:
        raise ValueError(f"epochs must be at least 1, got {epochs}")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    threads, deterministic = torch.get_num_threads(), torch.are_deterministic_algorithms_enabled()
    torch.set_num_threads(1)  # the same reduction order on every machine
    torch.use_deterministic_algorithms(True)
    try:
        pictures, labels, train_idx, test_idx = digit_pictures()
        raw = torch.from_numpy(pictures).permute(0, 3, 1, 2).float() / 255  # (N, 3, 32, 32) in [0, 1]
        mean = round(float(raw[train_idx].mean()), 4)  # one grey: the same for R, G, B
        std = round(float(raw[train_idx].std()), 4)
        x = (raw - mean) / std
        y = torch.from_numpy(labels)
        x_train, y_train, x_test, y_test = x[train_idx], y[train_idx], x[test_idx], y[test_idx]
        white = (1.0 - mean) / std

        torch.manual_seed(seed)
        model = timm.create_model(ARCH, pretrained=False, **MODEL)
        # A config of its own: not the ImageNet checkpoint's tag, url, licence or preprocessing.
        model.pretrained_cfg = {
            "architecture": ARCH, "tag": TAG, "num_classes": 10, "input_size": (3, IMG, IMG),
            "fixed_input_size": True, "interpolation": "bilinear", "crop_pct": 1.0, "crop_mode": "center",
            "mean": (mean,) * 3, "std": (std,) * 3, "first_conv": "patch_embed.proj", "classifier": "head"}
        steps = -(-len(x_train) // BATCH)
        optimizer = create_optimizer_v2(model, "adamw", lr=LR, weight_decay=WEIGHT_DECAY)
        schedule = CosineLRScheduler(optimizer, t_initial=epochs * steps, warmup_t=WARMUP_EPOCHS * steps,
                                     warmup_lr_init=LR / 100, lr_min=LR / 100, t_in_epochs=False)
        g = torch.Generator().manual_seed(seed)
        loss_fn = torch.nn.CrossEntropyLoss()
        start, update = time.perf_counter(), 0
        for _ in range(epochs):
            model.train()
            order = torch.randperm(len(x_train), generator=g)
            for i in range(0, len(order), BATCH):
                batch = order[i:i + BATCH]
                loss = loss_fn(model(_shift(x_train[batch], g, SHIFT, white)), y_train[batch])
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                update += 1
                schedule.step_update(update)
        train_seconds = time.perf_counter() - start

        accuracy, logits = _accuracy(model, x_test, y_test)
        confusion = np.zeros((10, 10), dtype=int)
        np.add.at(confusion, (y_test.numpy(), logits.argmax(-1).numpy()), 1)
        saved = model.pos_embed.detach().clone()
        with torch.no_grad():  # the whole pos_embed (CLS row included) set to zero, then put back
            model.pos_embed.zero_()
            accuracy_no_pos, _ = _accuracy(model, x_test, y_test)
            model.pos_embed.copy_(saved)

        save_for_hf(model, out, model_config={"label_names": LABELS}, safe_serialization=True)
        (out / "model.safetensors").chmod(0o644)  # safetensors writes 0600; the folder is meant to be shared
        reloaded = timm.create_model(f"local-dir:{out}", pretrained=True)
        _, logits_reloaded = _accuracy(reloaded, x_test, y_test)

        samples, probs = [], logits.softmax(-1)
        (out / "samples").mkdir(exist_ok=True)
        for k in range(10):
            j = int(np.flatnonzero(labels[test_idx] == k)[0])  # the first held-back scan of digit k
            name = f"samples/digit-{k}.png"
            Image.fromarray(pictures[test_idx[j]]).save(out / name)
            samples.append({"file": name, "label": k, "dataset_index": int(test_idx[j]),
                            "predicted": int(probs[j].argmax()), "probability": round(float(probs[j].max()), 4)})

        prefix = 0 if model.no_embed_class else model.num_prefix_tokens
        grid = tuple(model.patch_embed.grid_size)
        near, far = similarity_figures(saved[0, prefix:].numpy(), grid)
        ref_near, ref_far = similarity_figures(sincos_table(grid, MODEL["embed_dim"]), grid)
        metrics = {
            "accuracy": round(accuracy, 4), "test_digits": len(test_idx), "train_digits": len(train_idx),
            "correct": int(np.trace(confusion)),
            "accuracy_pos_embed_zeroed": round(accuracy_no_pos, 4),
            "confusion": confusion.tolist(),  # rows: true digit, columns: predicted digit
            "posembed": {"grid": list(grid), "neighbour_similarity": round(near, 4),
                         "far_similarity": round(far, 4)},
            "sincos_reference": {"neighbour_similarity": round(ref_near, 4), "far_similarity": round(ref_far, 4)},
            "seed": seed, "epochs": epochs, "train_seconds": round(train_seconds, 1), "threads": 1,
            "reloaded_max_logit_diff": float((logits - logits_reloaded).abs().max()),
            "model": {"arch": ARCH, **MODEL}, "mean": mean, "std": std,
            "data": "sklearn.datasets.load_digits: 8x8 scans, dark ink on white, bilinear x4 to 32x32 RGB; "
                    "stratified 20% held back (random_state 0)",
            "training": {"batch": BATCH, "lr": LR, "weight_decay": WEIGHT_DECAY, "warmup_epochs": WARMUP_EPOCHS,
                         "max_shift_px": SHIFT, "optimizer": "adamw", "schedule": "cosine"},
            "versions": {"torch": torch.__version__, "timm": timm.__version__},
            "samples": samples,
        }
        (out / "metrics.json").write_text(_dumps(metrics) + "\n")
        return metrics
    finally:
        torch.set_num_threads(threads)
        torch.use_deterministic_algorithms(deterministic)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out_dir", help="folder to write (timm local-dir format + samples/ + metrics.json)")
    parser.add_argument("--epochs", type=int, default=EPOCHS, help=f"passes over the training digits ({EPOCHS})")
    parser.add_argument("--seed", type=int, default=SEED, help=f"seed for weights, order and shifts ({SEED})")
    args = parser.parse_args(argv)
    metrics = train(args.out_dir, epochs=args.epochs, seed=args.seed)
    print(json.dumps({k: metrics[k] for k in ("accuracy", "accuracy_pos_embed_zeroed", "posembed",
                                              "sincos_reference", "train_seconds")}, indent=2))


if __name__ == "__main__":
    main()
