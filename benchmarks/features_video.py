"""Features of every frame of an MP4: vitcli beside the loop a user would write, interleaved in one run.

    python benchmarks/features_video.py [--seconds 60] [--rounds 3] [--model vit_small_patch16_224]
                                        [--batch-size 16] [--methods ...] [--clip PATH] [--json]

Makes (PyAV, libx264 with its ordinary settings: yuv420p, crf 23, preset medium, the default keyframe
interval) a 640x480 30 fps H.264 MP4 of `--seconds` seconds: slow pans and zooms over the CC0 photos in
tests/data, a new shot every 5 s, with a little sensor-like noise so it compresses like camera footage, not
like a flat drawing. `--clip PATH` keeps it there (and reuses it if it exists).

Methods, each producing the final-layer patch tokens of ViT (random weights saved in timm's local-dir
format, loaded from disk by every method but the limit), timed end to end like a script (load, then extract):

  forward   forward alone: forward_features on pre-decoded, pre-normalised frames (the first 64 frames
            decoded with PyAV and timm's eval transform before the clock, cycled to the clip's frame count:
            the compute does not depend on the pixels): the limit
  vitcli    vitcli features CLIP (every frame): worker processes decode runs of frames between keyframes and
            resize them while the model computes; features written to .npy
  every2    vitcli features CLIP --every 2 (half the rows; every frame still has to be decoded)
  naive     the loop a user writes: timm.create_model, then for frame in av.open(clip).decode(video=0):
            frame.to_image() -> timm's eval transform -> forward_features, one frame at a time
  naive16   the same, frames stacked into batches of --batch-size before the forward
Both naive loops discard the features (less work than vitcli, which writes them).

Methods run interleaved, round after round (the order rotated each round). Reported: the median frames/s
(rows/s), and the median over rounds of each method's rows/s over forward alone's in the same round (end to
end; and after the model load: vitcli's own time from the model ready to the last row, the naive loops' time
after create_model). Goal (issue 13): vitcli >= 0.85 of forward alone on this CPU, ahead of the naive loop.
Also: vitcli's start-up, and vitcli's rows against timm's transform + forward_features on the first frames.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import random
import shutil
import sys
import tempfile
import time
from fractions import Fraction
from pathlib import Path

import numpy as np
import timm
import torch
from PIL import Image

HERE = Path(__file__).resolve().parent
_spec = importlib.util.spec_from_file_location("vitcli_bench_features", HERE / "features.py")
fb = sys.modules[_spec.name] = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(fb)  # the image benchmark's measurement helpers (it puts src/ on sys.path)

W, H, FPS, SHOT_S = 640, 480, 30, 5
METHODS = "forward,vitcli,every2,naive,naive16"


def make_clip(path: Path, seconds: float, seed: int = 0) -> dict:
    """The test clip (see the module docstring); returns what it is."""
    import av

    rng = random.Random(seed)
    noise = np.random.default_rng(seed)
    photos = [Image.open(p).convert("RGB") for p in sorted((fb.ROOT / "tests" / "data").glob("*.*g"))]
    frames = round(seconds * FPS)
    t = time.perf_counter()
    with av.open(str(path), "w") as out:
        s = out.add_stream("libx264", rate=FPS, options={"crf": "23"})
        s.width, s.height, s.pix_fmt = W, H, "yuv420p"
        boxes = None
        for i in range(frames):
            shot, k = divmod(i, SHOT_S * FPS)
            if k == 0:  # a new shot: a photo, a start and an end window of the frame's aspect ratio
                photo = photos[shot % len(photos)]
                pw, ph = photo.size
                full = min(pw, ph * W / H)

                def window(scale, full=full, pw=pw, ph=ph):
                    cw, ch = full * scale, full * scale * H / W
                    x0, y0 = rng.uniform(0, pw - cw), rng.uniform(0, ph - ch)
                    return np.array([x0, y0, x0 + cw, y0 + ch])

                boxes = (window(rng.uniform(0.6, 1.0)), window(rng.uniform(0.6, 1.0)))
            a = k / (SHOT_S * FPS)
            box = tuple(float(v) for v in (1 - a) * boxes[0] + a * boxes[1])
            img = np.asarray(photo.resize((W, H), Image.Resampling.BILINEAR, box=box), np.int16)
            img = np.clip(img + noise.integers(-6, 7, img.shape, dtype=np.int16), 0, 255).astype(np.uint8)
            frame = av.VideoFrame.from_ndarray(img, format="rgb24")
            frame.pts, frame.time_base = i, Fraction(1, FPS)
            out.mux(s.encode(frame))
        out.mux(s.encode(None))
    with av.open(str(path)) as c:
        st = c.streams.video[0]
        keyframes = sum(1 for p in c.demux(st) if p.is_keyframe)
    mb = path.stat().st_size / 2**20
    info = {"seconds": seconds, "size": f"{W}x{H}", "fps": FPS, "frames": frames, "codec": "h264 yuv420p crf 23",
            "keyframes": keyframes, "megabytes": round(mb, 2), "kbit_per_s": round(mb * 2**20 * 8 / seconds / 1000),
            "encode_s": round(time.perf_counter() - t, 1)}
    fb.log(f"made {path}: {info}")
    return info


def clip_info(path: Path) -> dict:
    import av

    with av.open(str(path)) as c:
        st = c.streams.video[0]
        frames = keyframes = 0
        for p in c.demux(st):
            if p.size:
                frames += 1
                keyframes += p.is_keyframe
        rate = float(st.average_rate or FPS)
    mb = path.stat().st_size / 2**20
    return {"seconds": frames / rate, "size": f"{st.width}x{st.height}", "fps": rate, "frames": frames,
            "codec": st.codec_context.name, "keyframes": keyframes, "megabytes": round(mb, 2),
            "kbit_per_s": round(mb * 2**20 * 8 / (frames / rate) / 1000), "reused": True}


def first_frames(path: Path, n: int, transform) -> list[torch.Tensor]:
    import av

    out = []
    with av.open(str(path)) as c:
        for f in c.decode(video=0):
            out.append(transform(f.to_image()))
            if len(out) == n:
                break
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seconds", type=float, default=60)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--model", default="vit_small_patch16_224")
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--methods", default=METHODS, help=f"comma list of {METHODS}")
    ap.add_argument("--warmup", type=int, default=None, help="seconds of video per method before the rounds "
                                                             "(default: 2 batches of frames)")
    ap.add_argument("--workers", type=int, default=None, help="vitcli's decoding workers (default: automatic)")
    ap.add_argument("--clip", type=Path, help="keep the clip here; reuse it if it exists")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    methods = args.methods.split(",")
    bad = [m for m in methods if m not in METHODS.split(",")]
    if bad:
        raise SystemExit(f"unknown methods {bad}; choose from {METHODS}")
    bs = args.batch_size
    fb.instrument_pool()
    from vitcli.commands.features import Sampling
    from vitcli.requests import ModelRequest

    tmp = Path(tempfile.mkdtemp(prefix="vitcli-bench-video-"))
    try:
        clip = args.clip or tmp / "clip.mp4"
        info = clip_info(clip) if clip.exists() else make_clip(clip, args.seconds)
        warm_clip = tmp / "warm.mp4"  # a short clip of the same kind, for the warm-up
        make_clip(warm_clip, args.warmup or max(1.0, 2 * bs / FPS), seed=1)

        torch.manual_seed(0)
        model = timm.create_model(args.model, pretrained=False, num_classes=0).eval()
        timm.models.save_for_hf(model, tmp / "model", safe_serialization=True)
        local = f"local-dir:{tmp / 'model'}"
        cfg = timm.data.resolve_data_config({}, model=model)
        transform = timm.data.create_transform(**cfg)
        device = torch.device("cpu")
        pre = first_frames(clip, fb.FORWARD_PICTURES, transform)  # before any clock
        frames = info["frames"]
        batches = fb.forward_batches(pre, frames, bs, device)
        model_req = ModelRequest(name=local, device="cpu")
        load_s: list[float] = []

        def vitcli(name, path, **kw):
            def fn():
                t = fb.vitcli_run([str(path)], tmp / f"{name}.npy", model_req, bs, workers=args.workers, **kw)
                if name == "vitcli" and path == clip:
                    load_s.append(fb.load_model_alone(model_req))
                return t
            return fn

        def naive(path, batched: bool):
            import av

            t = time.perf_counter()
            m = timm.create_model(local, pretrained=True).eval()
            tf = timm.data.create_transform(**timm.data.resolve_data_config({}, model=m))
            loaded = time.perf_counter()
            n, held = 0, []
            with av.open(str(path)) as c, torch.inference_mode():
                for frame in c.decode(video=0):
                    x = tf(frame.to_image())
                    n += 1
                    if not batched:
                        m.forward_features(x.unsqueeze(0))
                        continue
                    held.append(x)
                    if len(held) == bs:
                        m.forward_features(torch.stack(held))
                        held = []
                if held:
                    m.forward_features(torch.stack(held))
            end = time.perf_counter()
            return fb.Timed(end - t, end - loaded, n)

        def makers(path):
            fw = batches if path == clip else batches[:2]
            return {"forward": lambda: fb.forward_alone(model, fw, device, "float32"),
                    "vitcli": vitcli("vitcli", path),
                    "every2": vitcli("every2", path, sampling=Sampling(every=2)),
                    "naive": lambda: naive(path, False),
                    "naive16": lambda: naive(path, True)}

        full, warm = makers(clip), makers(warm_clip)
        reference: dict = {}

        def after_round(r, times):
            nonlocal reference
            if r == 0 and "vitcli" in times:
                rows = np.load(times["vitcli"][-1].out, mmap_mode="r")
                if len(rows) != frames:
                    raise SystemExit(f"vitcli gave {len(rows)} rows for {frames} frames")
                reference = fb.against_timm(model, pre[:fb.REFERENCE_PICTURES], rows, device, "float32")

        times = fb.run_rounds({m: full[m] for m in methods}, args.rounds, lambda name: warm[name](), after_round,
                              unit="frames/s")
        rate = fb.rows_per_s(times)
        ratio = fb.ratios(times)
        startup = fb.median_startup({k: v for k, v in times.items() if k in ("vitcli", "every2")}, load_s)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    labels = {"forward": "forward alone on pre-decoded frames (the limit)", "vitcli": "vitcli features, every frame",
              "every2": "vitcli features --every 2", "naive": "naive loop: PyAV -> to_image -> transform -> "
              "forward, one frame at a time", "naive16": f"naive loop, batches of {bs}"}
    goals = []
    if "vitcli" in ratio:
        v = ratio["vitcli"]["end_to_end"]
        goals.append(f"goal (CPU): vitcli >= 0.85 of forward alone: {v:.2f} ({'met' if v >= 0.85 else 'NOT met'})")
        for k in ("naive", "naive16"):
            if k in ratio:
                x = v / ratio[k]["end_to_end"]
                goals.append(f"goal: vitcli ahead of the {labels[k]}: {x:.2f}x ({'met' if x > 1 else 'NOT met'})")
    result = {"clip": info, "model": args.model, "batch_size": bs, "rounds": args.rounds,
              "threads": torch.get_num_threads(), "cpus": os.cpu_count(), "methods": {m: labels[m] for m in methods},
              "rows": {k: v[0].rows for k, v in times.items()}, "rows_per_s": rate, "ratio_to_forward_alone": ratio,
              "startup": startup, "vitcli_vs_timm": reference, "goals": goals,
              "versions": {"torch": torch.__version__, "timm": timm.__version__}}
    if args.json:
        print(json.dumps(result, indent=2))
        return
    print(f"clip: {info['seconds']:g} s {info['size']} {info['fps']:g} fps, {info['frames']} frames, "
          f"{info['codec']}, {info['keyframes']} keyframes, {info['megabytes']} MB ({info['kbit_per_s']} kbit/s)")
    print(f"{args.model} (random weights) float32 on cpu, batch {bs}, {args.rounds} interleaved rounds, "
          f"{torch.get_num_threads()} torch threads, {os.cpu_count()} CPUs\n")
    print("| method | rows | rows/s (median, end to end) | vs forward alone, end to end | after the model load |")
    print("| --- | --- | --- | --- | --- |")
    for k, v in rate.items():
        r = ratio.get(k)
        cells = f"{r['end_to_end']:.2f} | {r['after_load']:.2f}" if r else " | "
        print(f"| {labels[k]} | {result['rows'][k]} | {v['end_to_end']:.1f} | {cells} |")
    for k, s in startup.items():
        f = lambda key: "-" if s.get(key) is None else f"{s[key]:.2f}"  # noqa: E731
        print(f"start-up of {labels[k]} (s from the call, median): workers {s['workers']} started "
              f"{f('pool_started_s')}, model ready {f('model_ready_s')} with {s['decoded_when_ready']} frames "
              f"decoded, first batch done {f('first_batch_s')} (in the model {f('first_batch_in_model_s')}, waited "
              f"{f('first_batch_waited_s')}); load_model alone {f('load_model_alone_s')}")
    if reference:
        print(f"vitcli vs timm transform + forward_features on the first {reference['pictures']} frames: max |diff| "
              f"{reference['max_abs_diff']:.2e} (values up to {reference['max_abs_value']:.1f}), cosine min "
              f"{reference['cosine_min']:.6f}")
    for line in goals:
        print(line)


if __name__ == "__main__":
    main()
