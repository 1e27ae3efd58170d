"""Peak resident memory of `vitcli features` as the number of images grows, beside its floor: importing torch and
timm, loading the same model and running one batch through the same extractor.

    python benchmarks/memory.py --images 2000,20000            # ViT-S/16 patch tokens, batch 32
    python benchmarks/memory.py --images 2000 --full           # every block (slower; the default stops at block 0)

Each vitcli run is a whole process under `/usr/bin/time -v` ("Maximum resident set size": the largest single
process, here the main one; the decoding workers are separate processes and far smaller). The images are
500x375 JPEGs made once from the CC0 photos in tests/data (see features.py), 256 distinct ones hard-linked
under N names and listed with --from-list, so the output grows with N (ViT-S patch tokens: 196 x 384 float32 =
294 KiB a row) while the work per batch does not.
By default the extractor reads block 0 with --stop-early, so a 20,000-image run takes minutes, not an hour;
--full runs every block. The floor uses the same --layer/--stop-early as the runs. Goal (#19): every run at most
150 MiB above the floor, for every N."""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "benchmarks"))

FLOOR = """
import re, sys, torch
from vitcli.backend.features import Extractor
from vitcli.backend.models import load_model
from vitcli.requests import FeatureRequest, ModelRequest
layers = None if sys.argv[3] == "full" else (0,)
model = load_model(ModelRequest(name=sys.argv[1], device="cpu"))
ex = Extractor(model, FeatureRequest(mode="patch", layers=layers, stop_early=layers is not None))
h, w = model.info.data_config["input_size"][1:]
with torch.inference_mode():
    ex(torch.randn(int(sys.argv[2]), 3, h, w))
print(int(re.search(r"VmHWM:\\s+(\\d+)", open("/proc/self/status").read()).group(1)) * 1024)
"""


def peak_of_time_v(stderr: str) -> int:
    return int(re.search(r"Maximum resident set size \(kbytes\): (\d+)", stderr).group(1)) * 1024


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--images", default="2000,20000", help="comma list of image counts")
    ap.add_argument("--model", default="vit_small_patch16_224")
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--full", action="store_true", help="run every block (default: block 0 with --stop-early)")
    ap.add_argument("--workdir", type=Path, help="keep the made images and model here (default: a temp folder)")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    counts = [int(n) for n in args.images.split(",")]

    import timm
    import torch

    from features import log, make_images

    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        work = args.workdir or tmp
        work.mkdir(parents=True, exist_ok=True)
        distinct = make_images(work / "images" / "500x375", 256, (500, 375))
        model_dir = work / "model"
        if not (model_dir / "config.json").exists():
            torch.manual_seed(0)
            timm.models.save_for_hf(timm.create_model(args.model, pretrained=False, num_classes=0), model_dir,
                                    safe_serialization=True)
        local = f"local-dir:{model_dir}"
        depth = "full" if args.full else "layer0"
        env = {**os.environ, "HF_HUB_OFFLINE": "1"}
        floor = int(subprocess.run([sys.executable, "-c", FLOOR, local, str(args.batch_size), depth], env=env,
                                   check=True, capture_output=True, text=True).stdout)
        log(f"floor (import + model + one batch of {args.batch_size}): {floor / 2**20:.0f} MiB")
        runs = []
        for n in counts:
            links = work / "links"  # N distinct paths (vitcli reads a path given twice once): hard links
            links.mkdir(exist_ok=True)
            names = [links / f"{i:06d}.jpg" for i in range(n)]
            for i, name in enumerate(names):
                if not name.exists():
                    os.link(distinct[i % len(distinct)], name)
            listing = tmp / f"list{n}.txt"
            listing.write_text("".join(f"{name}\n" for name in names))
            out = tmp / f"out{n}.npy"
            cmd = ["/usr/bin/time", "-v", sys.executable, "-m", "vitcli", "features", "--from-list", str(listing),
                   "--model", local, "--mode", "patch", "--device", "cpu", "-b", str(args.batch_size), "-o",
                   str(out), "--json", *([] if args.full else ["--layer", "0", "--stop-early"])]
            t = time.perf_counter()
            p = subprocess.run(cmd, env=env, capture_output=True, text=True)
            if p.returncode:
                raise SystemExit(p.stderr[-2000:])
            seconds = time.perf_counter() - t
            peak = peak_of_time_v(p.stderr)
            rows = json.loads(p.stdout)["shape"]
            if rows[0] != n:
                raise SystemExit(f"{n} images gave {rows[0]} rows")
            out_bytes = out.stat().st_size
            runs.append({"images": n, "shape": rows, "output_bytes": out_bytes, "peak_bytes": peak,
                         "above_floor_bytes": peak - floor, "seconds": round(seconds, 1)})
            log(f"{n} images: peak {peak / 2**20:.0f} MiB ({(peak - floor) / 2**20:+.0f} MiB over the floor), "
                f"output {out_bytes / 2**20:.0f} MiB, {seconds:.0f} s")
            out.unlink()
    blocks = "all" if args.full else "block 0, --stop-early"
    res = {"model": args.model, "batch_size": args.batch_size, "blocks": blocks, "floor_bytes": floor, "runs": runs,
           "goal_mib_over_floor": 150,
           "goal_met": all(r["above_floor_bytes"] <= 150 * 2**20 for r in runs),
           "torch": torch.__version__, "timm": timm.__version__, "cpus": os.cpu_count()}
    if args.json:
        print(json.dumps(res, indent=1))
        return
    print(f"{args.model}, patch tokens, batch {args.batch_size}, {res['blocks']}; floor {floor / 2**20:.0f} MiB")
    print("| images | output | peak RSS | over the floor | time |")
    print("| --- | --- | --- | --- | --- |")
    for r in runs:
        print(f"| {r['images']:,} | {r['output_bytes'] / 2**20:,.0f} MiB | {r['peak_bytes'] / 2**20:,.0f} MiB | "
              f"{r['above_floor_bytes'] / 2**20:+,.0f} MiB | {r['seconds']:.0f} s |")
    print(f"goal (at most +150 MiB for every N): {'met' if res['goal_met'] else 'NOT met'}")


if __name__ == "__main__":
    main()
