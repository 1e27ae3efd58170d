"""PyAV against torchcodec on this machine, side by side in one run, to pick vitcli's video decoder.

    python benchmarks/video_decoders.py [--seconds 60] [--gop 30] [--rounds 5] [--clip PATH] [--json]

Makes (with PyAV, libx264 yuv420p, preset veryfast) a 640x480 30 fps H.264 MP4 of `--seconds` seconds with a
keyframe every `--gop` frames, then measures in interleaved rounds (A B C, A B C, ...; so machine noise hits
every case alike) and reports ratios of medians and of minimums (on a shared machine noise only ever adds time,
so the minimum is the steadier estimate), never a single absolute time:

  dense   decode every frame to RGB uint8
          - PyAV: thread_type AUTO, frame.to_ndarray(format="rgb24")
          - torchcodec: VideoDecoder(num_ffmpeg_threads=0, i.e. FFmpeg picks), get_frames_in_range in
            batches of 32 (never the whole video in memory)
          - vitcli.video.decode_frames (PyAV + timestamp bookkeeping + PIL images)
  sparse  one frame per second of video (indices 0, 30, 60, ...), with seeking
          - PyAV: seek to the keyframe before each target, decode up to its timestamp
          - torchcodec: get_frames_at(indices) (exact seek mode, which scans the file first like `probe`)
          - vitcli.video.decode_frames (probe included)
  import  `import av` vs `from torchcodec.decoders import VideoDecoder` (which imports torch), fresh processes
  --seek-sweep  vitcli's SEEK_MIN_SKIP (seek, or decode through, to the next wanted frame) on a 10 s clip
          with a keyframe every 2 frames (lerobot's encoding): every-N selections, thresholds 1, 4, 8, vitcli's,
          never

It also checks that both libraries give the same RGB values for the same frames (max absolute difference).
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from fractions import Fraction
from pathlib import Path

import numpy as np

W, H, FPS = 640, 480, 30


def make_clip(path: Path, seconds: int, gop: int) -> None:
    """A moving colour field with a few sharp edges: compresses like ordinary footage, not like noise."""
    import av

    y, x = np.mgrid[0:H, 0:W]
    with av.open(str(path), "w") as out:
        s = out.add_stream("libx264", rate=FPS, options={"preset": "veryfast", "crf": "23", "g": str(gop)})
        s.width, s.height, s.pix_fmt = W, H, "yuv420p"
        for i in range(seconds * FPS):
            img = np.empty((H, W, 3), np.uint8)
            img[..., 0] = (x + 3 * i) % 256
            img[..., 1] = (y * 2 + i) % 256
            img[..., 2] = ((x // 40 + y // 40 + i // 15) % 2) * 200
            frame = av.VideoFrame.from_ndarray(img, format="rgb24")
            frame.pts, frame.time_base = i, Fraction(1, FPS)
            out.mux(s.encode(frame))
        out.mux(s.encode(None))


# ---- cases: each returns a checksum so no work can be skipped --------------------------------------------------

def pyav_dense(path: Path) -> int:
    import av

    total = 0
    with av.open(str(path)) as c:
        s = c.streams.video[0]
        s.thread_type = "AUTO"
        for f in c.decode(s):
            total += int(f.to_ndarray(format="rgb24")[0, 0, 0])
    return total


def torchcodec_dense(path: Path) -> int:
    from torchcodec.decoders import VideoDecoder

    d = VideoDecoder(str(path), num_ffmpeg_threads=0, dimension_order="NHWC")
    n = d.metadata.num_frames
    total = 0
    for i in range(0, n, 32):
        batch = d.get_frames_in_range(i, min(i + 32, n)).data
        total += int(batch[:, 0, 0, 0].sum())
    return total


def vitcli_dense(path: Path) -> int:
    from vitcli import video

    info = video.probe(path)
    return sum(int(np.asarray(img)[0, 0, 0]) for _, _, img in video.decode_frames(path, range(info.frame_count),
                                                                                   info))


def pyav_sparse(path: Path, seconds: int) -> int:
    import av

    total = 0
    with av.open(str(path)) as c:
        s = c.streams.video[0]
        s.thread_type = "AUTO"
        for k in range(seconds):
            target = round(k / s.time_base)  # pts of the frame at k seconds
            c.seek(target, stream=s, backward=True)
            for f in c.decode(s):
                if f.pts >= target:
                    total += int(f.to_ndarray(format="rgb24")[0, 0, 0])
                    break
    return total


def torchcodec_sparse(path: Path, seconds: int) -> int:
    from torchcodec.decoders import VideoDecoder

    d = VideoDecoder(str(path), num_ffmpeg_threads=0, dimension_order="NHWC")
    return int(d.get_frames_at([k * FPS for k in range(seconds)]).data[:, 0, 0, 0].sum())


def vitcli_sparse(path: Path, seconds: int) -> int:
    from vitcli import video

    return sum(int(np.asarray(img)[0, 0, 0]) for _, _, img in video.decode_frames(path, [k * FPS for k in
                                                                                         range(seconds)]))


def rgb_agreement(path: Path, seconds: int) -> int:
    """Max |PyAV - torchcodec| over the 1 fps frames (uint8 levels)."""
    from torchcodec.decoders import VideoDecoder

    from vitcli import video

    idx = [k * FPS for k in range(seconds)]
    tc = VideoDecoder(str(path), dimension_order="NHWC").get_frames_at(idx).data.numpy()
    pa = np.stack([np.asarray(img) for _, _, img in video.decode_frames(path, idx)])
    return int(np.abs(tc.astype(np.int16) - pa.astype(np.int16)).max())


def seek_sweep(clip: Path, rounds: int) -> dict:
    """Min time (s) of decode_frames(every N-th frame) for SEEK_MIN_SKIP at 1, 4, 8, vitcli's value, never."""
    from vitcli import video

    info = video.probe(clip)
    thresholds = {"1": 1, "4": 4, "8": 8, f"vitcli ({video.SEEK_MIN_SKIP})": video.SEEK_MIN_SKIP, "never": 10**9}
    out = {f"every {n}": {k: [] for k in thresholds} for n in (2, 4, 8, 16, 32)}
    default = video.SEEK_MIN_SKIP
    try:
        for _ in range(rounds):
            for sel_name, cells in out.items():
                sel = list(range(0, info.frame_count, int(sel_name.split()[1])))
                for name, thr in thresholds.items():
                    video.SEEK_MIN_SKIP = thr
                    t = time.perf_counter()
                    for _ in video.decode_frames(clip, sel, info):
                        pass
                    cells[name].append(time.perf_counter() - t)
    finally:
        video.SEEK_MIN_SKIP = default
    return {sel: {k: round(min(v), 4) for k, v in cells.items()} for sel, cells in out.items()}


def import_time(stmt: str, runs: int) -> float:
    ts = []
    for _ in range(runs):
        t = time.perf_counter()
        subprocess.run([sys.executable, "-c", stmt], check=True)
        ts.append(time.perf_counter() - t)
    return statistics.median(ts)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--seconds", type=int, default=60)
    ap.add_argument("--gop", type=int, default=30)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--clip", type=Path, default=None, help="keep the test clip here; reuse it if it exists")
    ap.add_argument("--json", action="store_true")
    ap.add_argument("--seek-sweep", action="store_true", help="only measure vitcli's seek threshold")
    args = ap.parse_args()
    if args.seek_sweep:
        with tempfile.TemporaryDirectory() as tmp:
            clip = Path(tmp) / "gop2.mp4"
            make_clip(clip, 10, 2)
            sweep = seek_sweep(clip, args.rounds)
        print("min seconds to decode every N-th frame of a 10 s 640x480 clip, keyframe every 2 frames, "
              "by SEEK_MIN_SKIP:")
        for sel, cells in sweep.items():
            print(f"  {sel:9s} " + "  ".join(f"{k}: {v:.3f}s" for k, v in cells.items()))
        print(json.dumps(sweep))
        return
    import av
    import torchcodec

    with tempfile.TemporaryDirectory() as tmp:
        clip = args.clip or Path(tmp) / "clip.mp4"
        t = time.perf_counter()
        if not clip.exists():
            make_clip(clip, args.seconds, args.gop)
        encode_s = time.perf_counter() - t
        dense = {"pyav": lambda: pyav_dense(clip), "torchcodec": lambda: torchcodec_dense(clip),
                 "vitcli": lambda: vitcli_dense(clip)}
        sparse = {"pyav": lambda: pyav_sparse(clip, args.seconds),
                  "torchcodec": lambda: torchcodec_sparse(clip, args.seconds),
                  "vitcli": lambda: vitcli_sparse(clip, args.seconds)}
        times: dict[str, dict[str, list[float]]] = {"dense": {k: [] for k in dense},
                                                    "sparse": {k: [] for k in sparse}}
        for fn in (*dense.values(), *sparse.values()):  # warm: imports, file cache
            fn()
        for _ in range(args.rounds):
            for group, cases in (("dense", dense), ("sparse", sparse)):
                for name, fn in cases.items():
                    t = time.perf_counter()
                    fn()
                    times[group][name].append(time.perf_counter() - t)
        max_diff = rgb_agreement(clip, args.seconds)
        size_mb = clip.stat().st_size / 2**20
    imports = {"import av": import_time("import av", args.rounds),
               "from torchcodec.decoders import VideoDecoder":
                   import_time("from torchcodec.decoders import VideoDecoder", args.rounds)}
    med = {g: {k: statistics.median(v) for k, v in d.items()} for g, d in times.items()}
    low = {g: {k: min(v) for k, v in d.items()} for g, d in times.items()}
    frames = args.seconds * FPS

    def ratios(m: dict) -> dict:
        return {"dense pyav/torchcodec": m["dense"]["pyav"] / m["dense"]["torchcodec"],
                "dense vitcli/pyav": m["dense"]["vitcli"] / m["dense"]["pyav"],
                "sparse pyav/torchcodec": m["sparse"]["pyav"] / m["sparse"]["torchcodec"],
                "sparse vitcli/pyav": m["sparse"]["vitcli"] / m["sparse"]["pyav"]}

    result = {
        "clip": {"seconds": args.seconds, "size": f"{W}x{H}", "fps": FPS, "gop": args.gop, "frames": frames,
                 "megabytes": round(size_mb, 2), "encode_s": round(encode_s, 2)},
        "versions": {"av": av.__version__, "torchcodec": torchcodec.__version__},
        "rounds": args.rounds,
        "median_s": med,
        "min_s": low,
        "dense_fps_at_min": {k: frames / v for k, v in low["dense"].items()},
        "ratios_of_medians": ratios(med),
        "ratios_of_minimums": ratios(low),
        "import torchcodec/av": imports["from torchcodec.decoders import VideoDecoder"] / imports["import av"],
        "import_s": imports,
        "rgb_max_abs_diff_pyav_vs_torchcodec": max_diff,
        "note": "ratio < 1: the first is faster",
    }
    if args.json:
        print(json.dumps(result, indent=2))
        return
    print(f"clip: {args.seconds} s {W}x{H} {FPS} fps H.264, keyframe every {args.gop}, {size_mb:.1f} MB; "
          f"av {av.__version__}, torchcodec {torchcodec.__version__}; {args.rounds} interleaved rounds")
    print(f"{'case':8s} {'stat':6s} {'pyav':>8s} {'torchcodec':>11s} {'vitcli':>8s}   pyav/torchcodec  vitcli/pyav")
    for g in ("dense", "sparse"):
        for stat, m in (("median", med[g]), ("min", low[g])):
            print(f"{g:8s} {stat:6s} {m['pyav']:7.2f}s {m['torchcodec']:10.2f}s {m['vitcli']:7.2f}s   "
                  f"{m['pyav'] / m['torchcodec']:15.2f}  {m['vitcli'] / m['pyav']:11.2f}")
    print(f"import   median {imports['import av']:7.2f}s "
          f"{imports['from torchcodec.decoders import VideoDecoder']:10.2f}s   torchcodec/av "
          f"{result['import torchcodec/av']:.1f}x")
    print(f"RGB max |pyav - torchcodec| over the 1 fps frames: {max_diff} levels")
    print(json.dumps(result))


if __name__ == "__main__":
    main()
