"""Feature-extraction throughput: vitcli beside the alternatives, per image size, interleaved in one run.

    pip install -e ".[bench]"       # transformers, for the pipeline comparison
    python benchmarks/features.py [--sizes 500x375,1920x1080,4032x3024] [--images 256] [--rounds 3] [--json]
    python benchmarks/features.py --folder ~/photos [--images 256]        # your own pictures, any size
    python benchmarks/features.py --make 1920x1080 --device cuda --dtype bfloat16 --model vit_base_patch16_224 \
        --batch-size 256 --images 2048 --methods forward,vitcli,fast,gpu --json      # the GPU check

Inputs: `--folder DIR` (every image under it, sorted, the first `--images`), or `--make SIZE` / `--sizes
W1xH1,W2xH2,...` (the default: 500x375, 1920x1080 and 4032x3024, a phone photo): `--images` JPEGs (quality
90, 4:2:0) per size, made by cropping a random window of the target's aspect ratio out of one of the CC0
photos in tests/data, flipping it at random, resizing it with PIL bicubic and adding uniform luminance noise
of +-`--grain` levels (default 6; an upscaled photo alone is far smoother than a camera's, and its JPEG
smaller and quicker to decode): every file different, camera-like in size, not camera output. `--workdir
DIR` keeps them for the next run. One table per size.

Every method reads the same files (real decoding every time), runs the same architecture at the same input
size and produces the final-layer patch tokens. Each is timed end to end from saved weights (load the model,
then extract), as a script would run it; only the limit is pure compute:

  forward    forward alone: the loaded model's forward_features on pre-decoded, pre-normalised tensors on
             the device (the first 64 pictures, cycled: the compute does not depend on the pixels): the limit
  vitcli     vitcli features (`run_features`): torch-free worker processes decode and resize while the model
             loads and computes; normalisation on the device
  fast       vitcli --fast-decode (JPEGs at least twice the model's resize target decoded at a DCT scale)
  gpu        vitcli --gpu-decode (JPEGs decoded, resized and cropped on the CUDA device: nvJPEG)
  compile    vitcli --compile (torch.compile of the extractor; every run compiles again, so its first batch,
             reported under start-up, carries the compile; inductor's on-disk cache shortens later runs)
  nice0      vitcli with its CPU decoding workers at the model's priority instead of the lowest
             (`vitcli.decode.CPU_WORKER_NICENESS = 0` around the call)
  workers0   vitcli --workers 0 (decoding in the main process)
  naive      a naive timm loop: create_model, then per file Image.open().convert("RGB"), timm's eval transform,
             forward one image (features discarded: less work than vitcli, which writes them)
  hf         transformers pipeline("image-feature-extraction") over ViTModel with the same shapes, batched,
             return_tensors=True (its own random weights: same compute, not the same numbers)
Default methods: forward,vitcli,fast,nice0,naive,hf on CPU; forward,vitcli,fast,gpu on CUDA.

Methods run interleaved, round after round (the order rotates each round), so machine noise hits them alike.
Reported per method: the median images/s end to end, and the median over rounds of its throughput over
forward alone's in the same round, end to end and after the model is loaded (vitcli: its own measured time
from the model being ready to the last row written; naive/hf: from the model built to the end). A shared
machine's speed drifts by ±15% over minutes: ratios within a round are what can be trusted.

Also, per size: vitcli's start-up (from the call: workers started, model ready, pictures the workers had
decoded by then, first batch through the model, of which model time, and `load_model` alone in the same
process: whether the first batch waited for decoding), and agreement: the cosine similarity per image
(features flattened) between vitcli default and --fast-decode / --gpu-decode from the same round, beside the
cosine between different images (the scale: what unrelated pictures give with these weights), and vitcli
default against timm's own transform + forward_features on the first pictures (max |difference|).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import random
import shutil
import statistics
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import timm
import torch
from PIL import Image

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "src"))

from vitcli.imaging import open_image  # noqa: E402
from vitcli.progress import Progress, Reporter  # noqa: E402

DEFAULT_SIZES = "500x375,1920x1080,4032x3024"
LABELS = {"forward": "forward alone (the limit)", "vitcli": "vitcli features", "fast": "vitcli --fast-decode",
          "gpu": "vitcli --gpu-decode", "compile": "vitcli --compile", "nice0": "vitcli, workers at normal priority",
          "workers0": "vitcli --workers 0", "naive": "naive timm loop, one image at a time",
          "hf": "transformers pipeline, batched"}
CPU_METHODS, CUDA_METHODS = "forward,vitcli,fast,nice0,naive,hf", "forward,vitcli,fast,gpu"
IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".webp", ".bmp", ".tif", ".tiff", ".gif"}
FORWARD_PICTURES = 64  # distinct pre-decoded pictures behind forward alone, cycled
REFERENCE_PICTURES = 8  # pictures checked against timm's own transform + forward_features


def log(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


# ---- inputs ----------------------------------------------------------------------------------------------------

def parse_size(text: str) -> tuple[int, int]:
    w, h = (int(v) for v in text.lower().split("x"))
    return w, h


def _make_one(job) -> None:
    src, dst, (w, h), seed, grain = job
    rng = random.Random(seed)
    with Image.open(src) as im:
        img = im.convert("RGB")
    sw, sh = img.size
    cw = min(sw, sh * w / h)  # the largest window of the target's aspect ratio, then 60-100% of it
    scale = rng.uniform(0.6, 1.0)
    cw, ch = cw * scale, cw * scale * h / w
    x0, y0 = rng.uniform(0, sw - cw), rng.uniform(0, sh - ch)
    img = img.resize((w, h), Image.Resampling.BICUBIC, box=(x0, y0, x0 + cw, y0 + ch))
    if rng.random() < 0.5:
        img = img.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
    if grain:  # sensor-like luminance noise: an upscaled photo alone is far smoother (and smaller) than a camera's
        a = np.asarray(img, np.int16)
        a = a + np.random.default_rng(seed).integers(-grain, grain + 1, (h, w, 1), dtype=np.int16)
        img = Image.fromarray(np.clip(a, 0, 255).astype(np.uint8))
    img.save(dst, "JPEG", quality=90)


def make_images(folder: Path, n: int, size: tuple[int, int], grain: int = 6) -> list[str]:
    """n JPEGs (q90) of `size` (w, h) in `folder`, upscaled from the CC0 photos in tests/data, with uniform
    luminance noise of +-`grain` levels; reused when the folder already holds them."""
    folder = folder / f"grain{grain}"
    folder.mkdir(parents=True, exist_ok=True)
    sources = sorted((ROOT / "tests" / "data").glob("*.*g"))
    paths = [folder / f"{i:05d}.jpg" for i in range(n)]
    todo = [(str(sources[i % len(sources)]), str(p), size, i, grain) for i, p in enumerate(paths) if not p.exists()]
    if todo:
        t = time.perf_counter()
        import multiprocessing as mp

        with ProcessPoolExecutor(os.cpu_count() or 1, mp_context=mp.get_context("fork")) as ex:
            list(ex.map(_make_one, todo, chunksize=4))
        log(f"made {len(todo)} {size[0]}x{size[1]} JPEGs in {time.perf_counter() - t:.1f} s ({folder})")
    return [str(p) for p in paths]


def folder_images(folder: Path, n: int | None) -> list[str]:
    paths = sorted(str(p) for p in folder.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())
    if not paths:
        raise SystemExit(f"{folder}: no images")
    return paths[:n] if n else paths


def describe_files(paths: list[str]) -> dict:
    sizes = []
    for p in paths:
        with Image.open(p) as im:
            sizes.append(im.size)
    by_area = sorted(sizes, key=lambda s: s[0] * s[1])
    return {"files": len(paths), "distinct_sizes": len(set(sizes)),
            "median_megapixels": math.prod(by_area[len(by_area) // 2]) / 1e6,
            "largest": list(by_area[-1]), "smallest": list(by_area[0]),
            "megabytes": sum(os.path.getsize(p) for p in paths) / 2**20,
            "bits_per_pixel": 8 * sum(os.path.getsize(p) for p in paths) / sum(w * h for w, h in sizes)}


# ---- measurement -----------------------------------------------------------------------------------------------

@dataclass
class Timed:
    """One method's run: end-to-end seconds, seconds after the model was loaded, rows computed."""

    total_s: float
    after_load_s: float
    rows: int
    startup: dict = field(default_factory=dict)
    out: str | None = None


class Probe(Reporter):
    """A Reporter that notes when the first batch has gone through the model (the first progress advance)."""

    def __init__(self):
        self.first: float | None = None
        self.notes: list[str] = []

    def note(self, text: str) -> None:
        self.notes.append(text)

    def warn(self, text: str) -> None:
        self.notes.append(f"warning: {text}")

    def progress(self) -> Progress:
        probe = self

        class FirstBatch(Progress):
            def advance(self, n: int = 1) -> None:
                if probe.first is None:
                    probe.first = time.monotonic()

        return FirstBatch()


def instrument_pool() -> None:
    """Record, on every decode pool, how many pictures its workers had decoded when the recipe came (the models
    were ready). Observation only: the pool works as before."""
    from vitcli import decode

    if getattr(decode.DecodePool.set_recipe, "benchmarked", False):
        return
    original = decode.DecodePool.set_recipe

    def set_recipe(self, recipe):
        self.opened_at_recipe = self.opened.value
        return original(self, recipe)

    set_recipe.benchmarked = True
    decode.DecodePool.set_recipe = set_recipe


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def autocast(device: torch.device, dtype: str):
    from contextlib import nullcontext

    return nullcontext() if dtype == "float32" else torch.autocast(device.type, dtype=getattr(torch, dtype))


def vitcli_run(inputs: list[str], out: Path, model_req, batch_size: int, *, workers: int | None = None,
               fast: bool = False, gpu: bool = False, sampling=None, niceness: int | None = None,
               mode: str = "patch", compile: bool = False) -> Timed:
    """run_features as a script calls it, timed from the call; the start-up from the pool's events."""
    from vitcli import decode
    from vitcli.commands.features import FeaturesRequest, Sampling, run_features
    from vitcli.requests import RunOptions

    probe = Probe()
    saved = decode.CPU_WORKER_NICENESS
    if niceness is not None:
        decode.CPU_WORKER_NICENESS = niceness
    try:
        t0 = time.monotonic()
        req = FeaturesRequest(inputs=tuple(inputs), out=str(out), models=(model_req,), force=True, mode=mode,
                              run=RunOptions(batch_size=batch_size, workers=workers, compile=compile), fast_decode=fast,
                              gpu_decode=gpu, sampling=sampling or Sampling())
        result = run_features(req, probe)
        total = time.monotonic() - t0
    finally:
        decode.CPU_WORKER_NICENESS = saved
    if result.sidecar_data["skipped"] or result.rows_done != result.sidecar_data["rows_in"]:
        raise SystemExit(f"vitcli skipped rows: {result.sidecar_data['skipped'][:3]}")
    pool = decode.last_pool
    events = {name: t - t0 for name, t in pool.events}
    ready = events.get("recipe")
    startup = {"workers": pool.workers, "pool_started_s": events.get("started"), "model_ready_s": ready,
               "decoded_when_ready": getattr(pool, "opened_at_recipe", None),
               "first_item_s": events.get("first item"),
               "first_batch_s": probe.first - t0 if probe.first else None,
               "first_batch_in_model_s": result.first_batch_s}
    if None not in (startup["first_batch_s"], ready, result.first_batch_s):
        # time between the model being ready and its first batch done not spent in the model: decoding the
        # first batch (if it was not ready), stacking, copying, writing the rows
        startup["first_batch_waited_s"] = startup["first_batch_s"] - ready - result.first_batch_s
    return Timed(total, result.seconds, result.rows_done, startup, str(out))


def forward_batches(tensors: list[torch.Tensor], n: int, batch_size: int, device: torch.device) -> list[torch.Tensor]:
    """n pre-normalised pictures in batches on the device, cycling the given ones (made before the clock)."""
    base = torch.stack(tensors)
    idx = torch.arange(n) % len(tensors)
    return [base[idx[i:i + batch_size]].contiguous().to(device) for i in range(0, n, batch_size)]


def forward_alone(module, batches: list[torch.Tensor], device: torch.device, dtype: str) -> Timed:
    sync(device)
    t = time.perf_counter()
    with torch.inference_mode(), autocast(device, dtype):
        for x in batches:
            module.forward_features(x)
    sync(device)
    s = time.perf_counter() - t
    return Timed(s, s, sum(len(x) for x in batches))


def load_model_alone(model_req) -> float:
    """vitcli's own load_model for the same request, alone (what the first batch cannot start before)."""
    from vitcli.backend.models import load_model

    t = time.monotonic()
    loaded = load_model(model_req)
    sync(torch.device(loaded.info.device))
    s = time.monotonic() - t
    del loaded
    return s


def ratios(times: dict[str, list[Timed]]) -> dict:
    """Per round, each method's throughput (rows/s) over forward alone's in the same round; end to end and after
    the model load. Medians over rounds, and the per-round lists."""
    if "forward" not in times:
        return {}
    fw = times["forward"]
    per = {k: {"end_to_end": [(t.rows / t.total_s) / (f.rows / f.total_s) for t, f in zip(v, fw)],
               "after_load": [(t.rows / t.after_load_s) / (f.rows / f.after_load_s) for t, f in zip(v, fw)]}
           for k, v in times.items()}
    return {k: {"end_to_end": statistics.median(v["end_to_end"]), "after_load": statistics.median(v["after_load"]),
                "per_round": v} for k, v in per.items()}


def rows_per_s(times: dict[str, list[Timed]]) -> dict:
    return {k: {"end_to_end": statistics.median(t.rows / t.total_s for t in v),
                "after_load": statistics.median(t.rows / t.after_load_s for t in v),
                "load_s": statistics.median(t.total_s - t.after_load_s for t in v)} for k, v in times.items()}


def median_startup(times: dict[str, list[Timed]], load_s: list[float]) -> dict:
    out = {}
    for k, v in times.items():
        if not v or not v[0].startup:
            continue
        keys = v[0].startup.keys()
        out[k] = {key: (statistics.median_low(vals) if (vals := [t.startup[key] for t in v if t.startup.get(key)
                                                                 is not None]) else None) for key in keys}
        out[k]["load_model_alone_s"] = statistics.median(load_s) if load_s else None
    return out


def cosines(a: np.ndarray, b: np.ndarray, chunk: int = 64) -> np.ndarray:
    """Cosine similarity of matching rows of a and b (each row flattened), float64."""
    out = []
    for i in range(0, len(a), chunk):
        x = np.asarray(a[i:i + chunk], np.float64).reshape(min(chunk, len(a) - i), -1)
        y = np.asarray(b[i:i + chunk], np.float64).reshape(len(x), -1)
        out.append((x * y).sum(1) / (np.linalg.norm(x, axis=1) * np.linalg.norm(y, axis=1)))
    return np.concatenate(out)


def rotate(keys: list[str], r: int) -> list[str]:
    return keys[r % len(keys):] + keys[:r % len(keys)]


def run_rounds(methods: dict, rounds: int, warm, after_round=lambda r, times: None, unit: str = "img/s"
               ) -> dict[str, list[Timed]]:
    """Warm every method once (`warm(name)`), then `rounds` rounds of every method (zero-argument callables
    returning Timed), the order rotated each round; `after_round(r, times)` after each."""
    for name in methods:
        log(f"  warm-up: {name}")
        warm(name)
    times: dict[str, list[Timed]] = {k: [] for k in methods}
    keys = list(methods)
    for r in range(rounds):
        for name in rotate(keys, r):
            t = methods[name]()
            times[name].append(t)
            log(f"  round {r + 1}/{rounds} {name:9s} {t.rows / t.total_s:8.1f} {unit} end to end, "
                f"{t.rows / t.after_load_s:8.1f} after load ({t.total_s:.1f} s)")
        after_round(r, times)
    return times


# ---- one set of pictures ---------------------------------------------------------------------------------------

def measure_set(paths: list[str], args, env: dict) -> dict:
    model, cfg, local, device = env["model"], env["cfg"], env["local"], env["device"]
    from vitcli.requests import ModelRequest

    bs, dtype = args.batch_size, args.dtype
    work = Path(tempfile.mkdtemp(prefix="vitcli-bench-out-", dir=env["work"]))
    transform = timm.data.create_transform(**cfg)

    def decoded(p):  # vitcli's opener: EXIF orientation applied, as vitcli sees the picture (for the check)
        return transform(open_image(p).image)

    pre = [decoded(p) for p in paths[:FORWARD_PICTURES]]  # before any clock
    batches = forward_batches(pre, len(paths), bs, device)
    model_req = ModelRequest(name=local, device=args.device, dtype=dtype)
    load_s: list[float] = []

    def vitcli(name, sel, **kw):
        def fn(sel=sel):
            kw.setdefault("workers", args.workers)
            kw.setdefault("mode", args.mode)
            t = vitcli_run(sel, work / f"{name}.npy", model_req, bs, **kw)
            if name == "vitcli" and sel is paths:
                load_s.append(load_model_alone(model_req))
            return t
        return fn

    def naive(sel):
        t = time.perf_counter()
        m = timm.create_model(local, pretrained=True).eval().to(device)
        tf = timm.data.create_transform(**timm.data.resolve_data_config({}, model=m))
        sync(device)
        loaded = time.perf_counter()
        with torch.inference_mode(), autocast(device, dtype):
            for p in sel:
                with Image.open(p) as im:
                    x = tf(im.convert("RGB")).unsqueeze(0).to(device)
                m.forward_features(x)
        sync(device)
        end = time.perf_counter()
        return Timed(end - t, end - loaded, len(sel))

    def hf(sel):
        from transformers import ViTConfig, ViTImageProcessor, ViTModel, pipeline

        t = time.perf_counter()
        size = cfg["input_size"][1:]
        hcfg = ViTConfig(hidden_size=model.embed_dim, num_hidden_layers=len(model.blocks),
                         num_attention_heads=model.blocks[0].attn.num_heads,
                         intermediate_size=model.blocks[0].mlp.fc1.out_features, image_size=size[0],
                         patch_size=model.patch_embed.patch_size[0], qkv_bias=True, layer_norm_eps=1e-6,
                         attn_implementation="sdpa")
        proc = ViTImageProcessor(size={"height": size[0], "width": size[1]}, image_mean=list(cfg["mean"]),
                                 image_std=list(cfg["std"]))
        hmodel = ViTModel(hcfg, add_pooling_layer=False).eval()
        if dtype != "float32":
            hmodel = hmodel.to(getattr(torch, dtype))
        pipe = pipeline("image-feature-extraction", model=hmodel, image_processor=proc, device=device)
        loaded = time.perf_counter()
        with torch.inference_mode():
            pipe(sel, batch_size=bs, return_tensors=True)
        sync(device)
        end = time.perf_counter()
        return Timed(end - t, end - loaded, len(sel))

    makers = {
        "forward": lambda sel: lambda: forward_alone(model, batches if sel is paths else batches[:2], device, dtype),
        "vitcli": lambda sel: vitcli("vitcli", sel),
        "fast": lambda sel: vitcli("fast", sel, fast=True),
        "gpu": lambda sel: vitcli("gpu", sel, gpu=True),
        "compile": lambda sel: vitcli("compile", sel, compile=True),
        "nice0": lambda sel: vitcli("nice0", sel, niceness=0),
        "workers0": lambda sel: vitcli("workers0", sel, workers=0),
        "naive": lambda sel: lambda: naive(sel),
        "hf": lambda sel: lambda: hf(sel),
    }
    unknown = [m for m in args.methods if m not in makers]
    if unknown:
        raise SystemExit(f"unknown methods {unknown}; choose from {', '.join(makers)}")
    methods = {m: makers[m](paths) for m in args.methods}
    agreement: dict = {}
    reference: dict = {}

    def after_round(r, times):
        nonlocal reference
        if r or "vitcli" not in times:  # the first round's outputs (every round computes the same)
            return
        base = np.load(times["vitcli"][-1].out, mmap_mode="r")
        for other in ("fast", "gpu", "compile"):
            if other in times:
                agreement[other] = cosines(base, np.load(times[other][-1].out, mmap_mode="r"))
        scale = cosines(base[:-1], base[1:]) if len(base) > 1 else np.array([math.nan])
        reference = {"cosine_between_different_images_mean": float(scale.mean()),
                     **against_timm(model, pre[:REFERENCE_PICTURES], base, device, dtype, args.mode)}

    times = run_rounds(methods, args.rounds, lambda name: makers[name](paths[:args.warmup])(), after_round)
    shutil.rmtree(work, ignore_errors=True)
    return {"images": len(paths), "files": describe_files(paths), "img_per_s": rows_per_s(times),
            "ratio_to_forward_alone": ratios(times), "startup": median_startup(
                {k: v for k, v in times.items() if k not in ("forward", "naive", "hf")}, load_s),
            "agreement_with_default": {k: {"cosine_mean": float(np.mean(v)), "cosine_min": float(np.min(v)),
                                           "images": len(v)} for k, v in agreement.items()},
            "default_vs_timm": reference}


def against_timm(module, tensors: list[torch.Tensor], rows: np.ndarray, device: torch.device, dtype: str,
                 mode: str = "patch") -> dict:
    """vitcli default's rows against timm's own eval transform + forward_features (the mode's tokens) on the same
    pictures, one batch."""
    with torch.inference_mode(), autocast(device, dtype):
        tokens = module.forward_features(torch.stack(tensors).to(device)).float().cpu()  # (B, T, D)
    p = module.num_prefix_tokens
    ref = {"patch": tokens[:, p:], "cls": tokens[:, 0], "mean": tokens[:, p:].mean(1), "all": tokens}[mode]
    got = torch.from_numpy(np.array(rows[:len(tensors)]))
    cos = cosines(got.numpy(), ref.numpy())
    return {"pictures": len(tensors), "max_abs_diff": float((got - ref).abs().max()),
            "max_abs_value": float(ref.abs().max()), "cosine_min": float(cos.min())}


# ---- report ----------------------------------------------------------------------------------------------------

def goals(res: dict, device: str) -> list[str]:
    r = res["ratio_to_forward_alone"]
    lines = []
    if device == "cpu" and "fast" in r:
        v = r["fast"]["end_to_end"]
        lines.append(f"goal (CPU): --fast-decode >= 0.9 of forward alone: {v:.2f} ({'met' if v >= 0.9 else 'NOT met'})")
    if "vitcli" in r and "hf" in r:
        v = r["vitcli"]["end_to_end"] / r["hf"]["end_to_end"]
        lines.append(f"goal: vitcli default ahead of the transformers pipeline: {v:.2f}x "
                     f"({'met' if v > 1 else 'NOT met'})")
    if device.startswith("cuda"):
        for k in ("vitcli", "fast", "gpu"):
            if k in r:
                lines.append(f"goal (GPU, 1080p JPEGs): {LABELS[k]} >= 0.8 of forward alone: end to end "
                             f"{r[k]['end_to_end']:.2f}, after load {r[k]['after_load']:.2f}")
    return lines


def print_set(label: str, res: dict, head: str, device: str) -> None:
    print(f"\n### {label}\n\n{head}\n")
    print("| method | images/s (median, end to end) | vs forward alone, end to end | after the model load |")
    print("| --- | --- | --- | --- |")
    r = res["ratio_to_forward_alone"]
    for k, v in res["img_per_s"].items():
        cells = (f"{r[k]['end_to_end']:.2f} | {r[k]['after_load']:.2f}" if r else " | ")
        print(f"| {LABELS[k]} | {v['end_to_end']:.1f} | {cells} |")
    if res["startup"]:
        print("\nstart-up, seconds from the call (median over rounds): workers started; model ready (recipe); "
              "pictures decoded by then; first batch through the model; of which in the model; waited "
              "(first batch - ready - in model); load_model alone")
        for k, s in res["startup"].items():
            f = lambda key: "-" if s.get(key) is None else f"{s[key]:.2f}"  # noqa: E731
            decoded = "-" if s["decoded_when_ready"] is None else f"{s['decoded_when_ready']:.0f}"
            print(f"  {LABELS[k]:38s} workers {s['workers']}: started {f('pool_started_s')}, ready "
                  f"{f('model_ready_s')}, decoded {decoded}, "
                  f"first batch {f('first_batch_s')} (model {f('first_batch_in_model_s')}, waited "
                  f"{f('first_batch_waited_s')}), load_model alone {f('load_model_alone_s')}")
    for k, a in res["agreement_with_default"].items():
        print(f"agreement, {LABELS[k]} vs default: cosine per image mean {a['cosine_mean']:.5f}, min "
              f"{a['cosine_min']:.5f} ({a['images']} images)")
    ref = res["default_vs_timm"]
    if ref:
        print(f"scale: cosine between different images (default, consecutive files) mean "
              f"{ref['cosine_between_different_images_mean']:.5f}; vitcli default vs timm transform + "
              f"forward_features on {ref['pictures']} pictures: max |diff| {ref['max_abs_diff']:.2e} (values up to "
              f"{ref['max_abs_value']:.1f}), cosine min {ref['cosine_min']:.6f}")
    for line in goals(res, device):
        print(line)


def run_all(args, tmp: Path, device: torch.device):
    """Every set of pictures measured: results by label, the table heading, GPU name, torch threads, where the
    pictures came from."""
    workdir = args.workdir or tmp / "images"
    if args.folder:
        sets = {f"{args.folder} ({'all' if not args.images else args.images} images)": folder_images(args.folder,
                                                                                                    args.images)}
        origin = "your images"
    else:
        sizes = [parse_size(s) for s in (args.make or args.sizes or DEFAULT_SIZES).split(",")]
        n = args.images or 256
        sets = {f"{w}x{h}": make_images(workdir / f"{w}x{h}", n, (w, h), args.grain) for w, h in sizes}
        origin = (f"JPEG q90, upscaled from CC0 photos (tests/data) with PIL bicubic, luminance grain +-{args.grain}"
                  if args.grain else "JPEG q90, upscaled from CC0 photos (tests/data) with PIL bicubic")

    torch.manual_seed(0)
    model = timm.create_model(args.model, pretrained=False, num_classes=0).eval()
    timm.models.save_for_hf(model, tmp / "model", safe_serialization=True)
    model = model.to(device)
    cfg = timm.data.resolve_data_config({}, model=model)
    env = {"model": model, "cfg": cfg, "local": f"local-dir:{tmp / 'model'}", "device": device, "work": tmp}
    threads = torch.get_num_threads()
    gpu_name = torch.cuda.get_device_name(device) if device.type == "cuda" else None
    head = (f"{args.model} (random weights) {args.dtype} on {gpu_name or args.device}, --mode {args.mode}, batch "
            f"{args.batch_size}, {args.rounds} interleaved rounds, {threads} torch threads, {os.cpu_count()} CPUs; "
            f"{origin}")
    results = {}
    for label, paths in sets.items():
        log(f"{label}: {len(paths)} images")
        results[label] = measure_set(paths, args, env)
        if not args.json:
            f = results[label]["files"]
            print_set(f"{label}: {len(paths)} images ({f['megabytes']:.1f} MB, {f['bits_per_pixel']:.2f} bits "
                      f"per pixel)", results[label], head, args.device)
    return results, head, gpu_name, threads, origin


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default="vit_small_patch16_224")
    src = ap.add_mutually_exclusive_group()
    src.add_argument("--folder", type=Path, help="measure on the images under this folder")
    src.add_argument("--sizes", help=f"make JPEGs of these sizes, one table each (default {DEFAULT_SIZES})")
    src.add_argument("--make", help="make JPEGs of this size (WxH), e.g. 1920x1080")
    ap.add_argument("--images", type=int, default=None, help="pictures per size (default 256; --folder: all)")
    ap.add_argument("--grain", type=int, default=6, help="made images: +- this much uniform luminance noise "
                                                         "(camera-like file sizes; 0: none)")
    ap.add_argument("--workdir", type=Path, help="keep made images here and reuse them (default: a temp folder)")
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--warmup", type=int, default=None,
                    help="pictures per method before the rounds (default: 2 batches)")
    ap.add_argument("--methods", default=None, help=f"comma list (CPU default {CPU_METHODS}; CUDA {CUDA_METHODS})")
    ap.add_argument("--mode", default="patch", choices=("patch", "cls", "mean", "all"),
                    help="vitcli's --mode (the others compute forward_features alike and keep it all)")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--dtype", default="float32", choices=("float32", "bfloat16", "float16"))
    ap.add_argument("--workers", type=int, default=None, help="vitcli's decoding workers (default: automatic)")
    ap.add_argument("--json", action="store_true", help="one JSON document on stdout")
    args = ap.parse_args()
    args.methods = (args.methods or (CUDA_METHODS if args.device.startswith("cuda") else CPU_METHODS)).split(",")
    args.warmup = args.warmup or 2 * args.batch_size
    if "gpu" in args.methods and not args.device.startswith("cuda"):
        raise SystemExit("method gpu (--gpu-decode) needs --device cuda")
    device = torch.device(args.device)
    instrument_pool()

    tmp = Path(tempfile.mkdtemp(prefix="vitcli-bench-"))
    try:
        results, head, gpu_name, threads, origin = run_all(args, tmp, device)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    if args.json:
        print(json.dumps({"model": args.model, "mode": args.mode, "dtype": args.dtype, "device": args.device,
                          "gpu": gpu_name, "batch_size": args.batch_size, "rounds": args.rounds, "threads": threads,
                          "cpus": os.cpu_count(), "methods": {m: LABELS[m] for m in args.methods},
                          "images_from": origin, "versions": {"torch": torch.__version__, "timm": timm.__version__},
                          "goals": {k: goals(v, args.device) for k, v in results.items()},
                          "sets": results}, indent=2))


if __name__ == "__main__":
    main()
