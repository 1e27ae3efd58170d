"""How often each gradient method finds the decisive patch, with and without the LN-rule, over several trained models.

    python docs/ln_rule_study.py [--seeds 4] [--steps 150]

Why: one trained model is one draw. docs/explain.md quotes this table to show that what the LN-rule changes holds
across training runs and across two tasks, not only on the model the tests train.

What it does (one CPU thread, seeded; about two minutes): for each task and seed, trains the tiny ViT of
tests/test_explain.py (timm `vit_tiny_patch16_224` at 32x48, patch 8, width 32, 2 blocks, CLS pooling; Adam,
lr 3e-3, `--steps` batches of 64 fresh pictures in normalised space), checks its accuracy on 256 held-out
pictures, and counts over 16 held-out pictures with a square how often each method's top patch is the square
(chance: 1 in 24), once with `vitcli explain`'s default (the LN-rule) and once with `--no-ln-rule`.
- `colour`: noise with one patch-aligned square of one of 4 colours at a random patch, or none: 5 classes
  (the task of tests/test_explain.py and docs/train_squares.py).
- `bright`: noise with one bright square at a random patch, or none: 2 classes.
Models below 95 % accuracy are reported and left out of the totals (they did not learn the task).
"""

from __future__ import annotations

import argparse

H, W, P = 32, 48, 8
COLOURS = [[2.0, -1, -1], [-1, 2, -1], [-1, -1, 2], [2, 2, -1]]  # normalised RGB of the colour task's classes
TINY = dict(patch_size=P, embed_dim=32, depth=2, num_heads=2, img_size=(H, W))


def pictures(task: str, n: int, g):
    """(n, 3, H, W) normalised pictures, classes (n,), the square's patch index (n,); the last class: no square."""
    import torch

    x = torch.randn(n, 3, H, W, generator=g) * 0.5
    classes = 5 if task == "colour" else 2
    y = torch.randint(0, classes, (n,), generator=g)
    pos = torch.randint(0, (H // P) * (W // P), (n,), generator=g)
    for i in range(n):
        if y[i] < classes - 1:
            r, c = divmod(int(pos[i]), W // P)
            colour = torch.tensor(COLOURS[int(y[i])]) if task == "colour" else torch.full((3,), 2.0)
            x[i, :, r * P:(r + 1) * P, c * P:(c + 1) * P] = colour[:, None, None]
    return x, y, pos


def measure(task: str, seed: int, steps: int) -> dict:
    import numpy as np
    import timm
    import torch

    from vitcli.backend import explain as E

    torch.manual_seed(seed)
    classes = 5 if task == "colour" else 2
    model = timm.create_model("vit_tiny_patch16_224", pretrained=False, num_classes=classes, **TINY)
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    g = torch.Generator().manual_seed(seed)
    for _ in range(steps):
        x, y, _ = pictures(task, 64, g)
        loss = torch.nn.functional.cross_entropy(model(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
    model.eval()
    x, y, _ = pictures(task, 256, torch.Generator().manual_seed(1000 + seed))
    with torch.no_grad():
        accuracy = float((model(x).argmax(-1) == y).float().mean())
    x, y, pos = pictures(task, 64, torch.Generator().manual_seed(2000 + seed))
    keep = (y < classes - 1).nonzero()[:16, 0].tolist()
    hits = {}
    for rule in (True, False):
        for method in E.LN_RULE_METHODS:
            hits[method, rule] = sum(
                int(np.argmax(E.explain(model, x[i:i + 1], method, target=int(y[i]), ln_rule=rule).map)) == int(pos[i])
                for i in keep)
    return {"task": task, "seed": seed, "accuracy": accuracy, "of": len(keep), "hits": hits}


def main(argv: list[str] | None = None) -> None:
    import torch

    from vitcli.backend.explain import LN_RULE_METHODS

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=4, help="training runs per task (4)")
    parser.add_argument("--steps", type=int, default=150, help="training steps of 64 pictures (150)")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    runs = [measure(task, seed, args.steps) for task in ("colour", "bright") for seed in range(args.seeds)]
    print("| task | seed | accuracy | " + " | ".join(f"{m} LN-rule / plain" for m in LN_RULE_METHODS) + " |")
    print("| --- | ---: | ---: | " + " | ".join("---:" for _ in LN_RULE_METHODS) + " |")
    total = {key: 0 for key in runs[0]["hits"]}
    counted = 0
    for r in runs:
        learned = r["accuracy"] >= 0.95
        cells = " | ".join(f"{r['hits'][m, True]} / {r['hits'][m, False]}" for m in LN_RULE_METHODS)
        print(f"| {r['task']} | {r['seed']} | {r['accuracy']:.0%}{'' if learned else ' (left out)'} | {cells} |")
        if learned:
            counted += r["of"]
            for key in total:
                total[key] += r["hits"][key]
    cells = " | ".join(f"**{total[m, True]} / {total[m, False]}**" for m in LN_RULE_METHODS)
    print(f"| all that learned | | | {cells} |")
    print(f"\nof {counted} pictures")


if __name__ == "__main__":
    main()
