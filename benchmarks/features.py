"""Feature-extraction throughput: vitcli beside the alternatives, interleaved in one run.

    pip install -e ".[bench]"            # transformers, for the pipeline comparison
    python benchmarks/features.py [--model vit_small_patch16_224] [--images 64] [--batch-size 16] [--rounds 3]

Every method reads the same image files (real JPEG/PNG decoding each time) and runs the same architecture
at the same input size, and produces the final-layer patch tokens. Each is timed end to end from saved
weights — load the model, then extract — as a script would run it; only the limit is pure compute:

  forward alone      the loaded model's forward_features on pre-decoded, pre-normalised tensors: the limit
  vitcli features    `run_features` (DataLoader workers decode while the model computes, inference_mode,
                     incremental .npy, sidecar)
  vitcli --workers N the same with N decoding processes (0: in the main process)
  vitcli, workers at normal priority
                     the same with the decoding workers left at the model's priority instead of the lowest
  naive timm loop    load with timm, then for each image: open, transform, forward one image
  transformers       build pipeline("image-feature-extraction") over ViTModel with the same shapes, run it batched

timm-based methods share one seeded model saved in timm's local-dir format. transformers gets the same
architecture with its own random weights: same compute, not the same numbers (throughput is what is measured).
Methods run interleaved, round after round, so machine noise hits them alike; the table reports the median
images/s, and the median over rounds of each method's ratio to forward alone in the same round (this machine's
speed drifts by ±15% over minutes, so ratios within a round are what can be trusted).
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

import timm
import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "src"))

from vitcli.imaging import open_image  # noqa: E402


def make_images(folder: Path, n: int) -> list[str]:
    sources = sorted((ROOT / "tests" / "data").glob("*.*g"))
    paths = []
    for i in range(n):
        src = sources[i % len(sources)]
        dst = folder / f"{i:05d}{src.suffix}"
        shutil.copy(src, dst)
        paths.append(str(dst))
    return paths


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default="vit_small_patch16_224")
    ap.add_argument("--images", type=int, default=256)
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--skip", nargs="*", default=[], help="methods to leave out")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()

    work = Path(tempfile.mkdtemp(prefix="vitcli-bench-"))
    (work / "imgs").mkdir()
    paths = make_images(work / "imgs", args.images)
    torch.manual_seed(0)
    model = timm.create_model(args.model, pretrained=False, num_classes=0).eval()
    timm.models.save_for_hf(model, work / "model", safe_serialization=True)
    cfg = timm.data.resolve_data_config({}, model=model)
    transform = timm.data.create_transform(**cfg)
    bs = args.batch_size

    local = f"local-dir:{work / 'model'}"

    def forward_alone(paths):
        x = torch.stack([transform(open_image(p).image) for p in paths])  # decoded before the clock
        t = time.perf_counter()
        with torch.inference_mode():
            for i in range(0, len(x), bs):
                model.forward_features(x[i:i + bs])
        return time.perf_counter() - t

    def vitcli(paths, workers):
        from vitcli.commands.features import FeaturesRequest, run_features
        from vitcli.requests import ModelRequest, RunOptions

        out = work / f"feats-{workers}.npy"
        t = time.perf_counter()
        model = ModelRequest(name=local, device="cpu")
        run_features(FeaturesRequest(inputs=tuple(paths), out=str(out), models=(model,),
                                     run=RunOptions(batch_size=bs, workers=workers), force=True))
        return time.perf_counter() - t

    def normal_priority(paths):
        from vitcli.backend import loader

        saved, loader.CPU_WORKER_NICENESS = loader.CPU_WORKER_NICENESS, 0
        try:
            return vitcli(paths, None)
        finally:
            loader.CPU_WORKER_NICENESS = saved

    def naive(paths):
        t = time.perf_counter()
        m = timm.create_model(local, pretrained=True).eval()
        tf = timm.data.create_transform(**timm.data.resolve_data_config({}, model=m))
        with torch.inference_mode():
            for p in paths:
                m.forward_features(tf(open_image(p).image).unsqueeze(0))
        return time.perf_counter() - t

    def hf_pipeline(paths):
        from transformers import ViTConfig, ViTImageProcessor, ViTModel, pipeline

        t = time.perf_counter()
        hcfg = ViTConfig(hidden_size=model.embed_dim, num_hidden_layers=len(model.blocks),
                         num_attention_heads=model.blocks[0].attn.num_heads,
                         intermediate_size=model.blocks[0].mlp.fc1.out_features, image_size=cfg["input_size"][1],
                         patch_size=model.patch_embed.patch_size[0], qkv_bias=True, layer_norm_eps=1e-6,
                         attn_implementation="sdpa")
        proc = ViTImageProcessor(size={"height": cfg["input_size"][1], "width": cfg["input_size"][2]},
                                 image_mean=list(cfg["mean"]), image_std=list(cfg["std"]))
        pipe = pipeline("image-feature-extraction", model=ViTModel(hcfg, add_pooling_layer=False).eval(),
                        image_processor=proc, device="cpu")
        with torch.inference_mode():
            pipe(paths, batch_size=bs)
        return time.perf_counter() - t

    methods = {"forward alone": forward_alone, "vitcli features": lambda p: vitcli(p, None),
               "vitcli --workers 0": lambda p: vitcli(p, 0), "vitcli --workers 1": lambda p: vitcli(p, 1),
               "vitcli, workers at normal priority": normal_priority,
               "naive timm loop": naive,
               "transformers pipeline": hf_pipeline}
    methods = {k: v for k, v in methods.items() if k not in args.skip}
    times = {k: [] for k in methods}
    for name, fn in methods.items():  # warm-up on two batches: imports, allocator, first-call costs
        fn(paths[:2 * bs])
    for _ in range(args.rounds):
        for name, fn in methods.items():
            times[name].append(fn(paths))
    rate = {k: args.images / statistics.median(v) for k, v in times.items()}
    # the machine drifts between rounds: compare each method with forward alone of the same round
    ratio = ({k: statistics.median(a / b for a, b in zip(times["forward alone"], v)) for k, v in times.items()}
             if "forward alone" in times else None)
    result = {"model": args.model, "images": args.images, "batch_size": bs, "rounds": args.rounds,
              "threads": torch.get_num_threads(), "img_per_s": rate, "ratio_to_forward_alone": ratio,
              "ratio_to_forward_alone_per_round": {k: [a / b for a, b in zip(times["forward alone"], v)]
                                                   for k, v in times.items()} if ratio else None}
    shutil.rmtree(work, ignore_errors=True)
    if args.json:
        print(json.dumps(result, indent=2))
        return
    print(f"{args.model}, {args.images} images, batch {bs}, {args.rounds} rounds, {torch.get_num_threads()} threads")
    print("| method | images/s (median) | vs forward alone (median of per-round ratios) |\n| --- | --- | --- |")
    for k, v in rate.items():
        print(f"| {k} | {v:.1f} | {ratio[k]:.2f} |" if ratio else f"| {k} | {v:.1f} | |")

if __name__ == "__main__":
    main()
