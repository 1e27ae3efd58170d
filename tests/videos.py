"""Test videos and LeRobot-layout folders, made with PyAV: small (64x48 px), few frames, deterministic, fast.

Every frame carries a number painted in: the top 4 pixel rows are 16 black/white 4x4 blocks, the number's bits,
most significant first; below them a smooth gradient that moves with the number (so encoders find motion and
use B-frames). `code_of(image)` reads the number back, even through lossy compression; `pattern(code)` is the
exact array written, for equality checks on lossless files.

Lossless settings per container (decoded == written, exactly): MP4/MOV libx264rgb qp 0 (RGB in, no YUV
rounding), MKV and AVI FFV1 (bgr0), WebM VP9 lossless (gbrp). `lossless=False` writes ordinary H.264 yuv420p.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from fractions import Fraction
from pathlib import Path

import numpy as np

H, W = 48, 64
BITS, BLOCK = 16, 4

# container suffix -> (codec, pix_fmt, options) for lossless writing
LOSSLESS = {
    ".mp4": ("libx264rgb", "rgb24", {"qp": "0"}),
    ".mov": ("libx264rgb", "rgb24", {"qp": "0"}),
    ".mkv": ("ffv1", "bgr0", {}),
    ".avi": ("ffv1", "bgr0", {}),
    ".webm": ("libvpx-vp9", "gbrp", {"lossless": "1", "deadline": "realtime", "cpu-used": "8"}),
}


def pattern(code: int, h: int = H, w: int = W) -> np.ndarray:
    """(h, w, 3) uint8 frame carrying `code` (0 <= code < 2**16) in its top blocks."""
    y, x = np.mgrid[0:h, 0:w]
    img = np.empty((h, w, 3), np.uint8)
    img[..., 0] = (x * 3 + code * 5) % 256
    img[..., 1] = (y * 4 + code * 3) % 256
    img[..., 2] = (x + y + code * 7) % 256
    for b in range(BITS):
        bit = (code >> (BITS - 1 - b)) & 1
        img[:BLOCK, b * BLOCK:(b + 1) * BLOCK] = 255 if bit else 0
    return img


def code_of(image) -> int:
    """The number `pattern` painted into an RGB frame (PIL image or array), read from the blocks' mean."""
    a = np.asarray(image, dtype=np.float32)
    bits = [int(a[:BLOCK, b * BLOCK:(b + 1) * BLOCK].mean() > 127.5) for b in range(BITS)]
    return int("".join(map(str, bits)), 2)


def make_video(path: str | Path, frames: int | Sequence[np.ndarray] = 30, fps: float = 30, *,
               codes: Sequence[int] | None = None, lossless: bool = True, vfr_times: Sequence[float] | None = None,
               rotation: int | None = None, mirror: bool = False, gop: int | None = None, bframes: int | None = None,
               faststart: bool = False, codec: str | None = None) -> Path:
    """Write a video; the container follows the suffix (.mp4 .mov .mkv .webm .avi).

    `frames`: a count (frame i shows `pattern(codes[i])`, codes default 0..n-1) or a list of HxWx3 uint8
    arrays. `vfr_times`: explicit display times in seconds (variable frame rate; stored in a 1/1000 s time
    base, so give millisecond values). `rotation`: degrees clockwise a player must turn the stored frames
    (display matrix); `mirror`: then mirror them left-right. `gop`: keyframe interval. `bframes`: max B-frames (H.264; x264 allows none when lossless, so MP4/MOV then use
    qp 1: decoded values within 1 level of the pattern). `faststart`: MP4 index first.
    """
    import av

    path = Path(path)
    arrays = [pattern(c) for c in (codes if codes is not None else range(frames))] if isinstance(frames, int) \
        else list(frames)
    if codes is not None and isinstance(frames, int) and len(codes) != frames:
        raise ValueError("codes must have one entry per frame")
    suffix = path.suffix.lower()
    if lossless:
        name, pix, opts = LOSSLESS[suffix]
        opts = dict(opts)
    else:
        name, pix, opts = "libx264", "yuv420p", {"crf": "18", "preset": "veryfast"}
    name = codec or name
    if gop is not None:
        opts["g"] = str(gop)
        if name.startswith("libx264"):
            opts["x264-params"] = "scenecut=0"  # keyframes exactly every `gop` frames, not at "scene cuts"
    if bframes is not None:
        opts["bf"] = str(bframes)
        if lossless and name.startswith("libx264"):
            opts["qp"] = "1"  # x264 turns B-frames off when lossless (qp 0); qp 1 on RGB stays within 1 level
    h, w = arrays[0].shape[:2]
    rate = Fraction(fps).limit_denominator(1001)
    mp4 = suffix in (".mp4", ".mov", ".m4v")
    with av.open(str(path), "w", options={"movflags": "+faststart"} if faststart and mp4 else {}) as out:
        stream = out.add_stream(name, rate=rate, options=opts)
        stream.width, stream.height, stream.pix_fmt = w, h, pix
        if vfr_times is not None:
            if len(vfr_times) != len(arrays):
                raise ValueError("vfr_times must have one time per frame")
            stream.codec_context.time_base = Fraction(1, 1000)
            stream.time_base = Fraction(1, 1000)
        if rotation or mirror:
            stream.set_display_rotation(-(rotation or 0), hflip=mirror)  # PyAV: counter-clockwise, then mirror
        for i, a in enumerate(arrays):
            frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(a), format="rgb24")
            if vfr_times is not None:
                frame.pts, frame.time_base = round(vfr_times[i] * 1000), Fraction(1, 1000)
            else:
                frame.pts, frame.time_base = i, 1 / rate
            out.mux(stream.encode(frame))
        out.mux(stream.encode(None))
    return path


def truncate(path: str | Path, fraction: float = 0.6, out: str | Path | None = None) -> Path:
    """Copy of `path` cut to its first `fraction` of bytes (a recording that stopped mid-write)."""
    path = Path(path)
    data = path.read_bytes()
    dest = Path(out) if out is not None else path.with_name(path.stem + "_cut" + path.suffix)
    dest.write_bytes(data[: int(len(data) * fraction)])
    return dest


# ---- LeRobot layouts ------------------------------------------------------------------------------------------
# Frame content: code = camera number * 4096 + the dataset's global frame index, so a decoded frame tells which
# camera and which frame it is.

CAMERAS = ("observation.images.top", "observation.images.wrist")


def lerobot_code(camera_number: int, index: int) -> int:
    return camera_number * 4096 + index


def _features(cameras: Sequence[str], fps: int, h: int, w: int, version: str) -> dict:
    feats: dict = {}
    for cam in cameras:
        feats[cam] = {"dtype": "video", "shape": [h, w, 3], "names": ["height", "width", "channels"],
                      "info": {"video.height": h, "video.width": w, "video.codec": "h264", "video.pix_fmt": "gbrp",
                               "video.is_depth_map": False, "video.fps": fps, "video.channels": 3,
                               "has_audio": False}}
    feats["observation.state"] = {"dtype": "float32", "shape": [2], "names": ["x", "y"]}
    for key, dtype in (("timestamp", "float32"), ("frame_index", "int64"), ("episode_index", "int64"),
                       ("index", "int64"), ("task_index", "int64")):
        feats[key] = {"dtype": dtype, "shape": [1], "names": None}
    if version == "v3.0":
        for ft in feats.values():
            if ft["dtype"] != "video":
                ft["fps"] = fps
    return feats


def _data_table(episode_lengths: Sequence[int], episodes: Sequence[int], fps: int):
    """Rows of the data parquet for `episodes` (positions in episode_lengths), lerobot's columns and dtypes."""
    import pyarrow as pa

    starts = np.concatenate([[0], np.cumsum(episode_lengths)]).astype(int)
    cols: dict[str, list] = {"observation.state": [], "timestamp": [], "frame_index": [], "episode_index": [],
                             "index": [], "task_index": []}
    for ep in episodes:
        for fi in range(episode_lengths[ep]):
            cols["observation.state"].append([float(ep), float(fi)])
            cols["timestamp"].append(fi / fps)
            cols["frame_index"].append(fi)
            cols["episode_index"].append(ep)
            cols["index"].append(int(starts[ep]) + fi)
            cols["task_index"].append(0)
    return pa.table({
        "observation.state": pa.array(cols["observation.state"], pa.list_(pa.float32(), 2)),
        "timestamp": pa.array(cols["timestamp"], pa.float32()),
        "frame_index": pa.array(cols["frame_index"], pa.int64()),
        "episode_index": pa.array(cols["episode_index"], pa.int64()),
        "index": pa.array(cols["index"], pa.int64()),
        "task_index": pa.array(cols["task_index"], pa.int64()),
    })


def _info(version: str, episode_lengths: Sequence[int], cameras: Sequence[str], fps: int, h: int, w: int,
          data_path: str, video_path: str, **extra) -> dict:
    return {"codebase_version": version, "robot_type": "test_arm", "total_episodes": len(episode_lengths),
            "total_frames": int(sum(episode_lengths)), "total_tasks": 1, **extra, "chunks_size": 1000,
            "fps": fps, "splits": {"train": f"0:{len(episode_lengths)}"}, "data_path": data_path,
            "video_path": video_path, "features": _features(cameras, fps, h, w, version)}


def make_lerobot_v30(root: str | Path, episode_lengths: Sequence[int] = (12, 9), cameras: Sequence[str] = CAMERAS,
                     fps: int = 10, episodes_per_video: int | None = None, gop: int = 2) -> Path:
    """A LeRobot v3.0 dataset (lerobot's DEFAULT_*_PATH layout): one data parquet for all episodes,
    meta/episodes/chunk-000/file-000.parquet, and per camera MP4 files each holding `episodes_per_video`
    consecutive episodes (default: all in one file), located by videos/<key>/chunk_index, file_index,
    from_timestamp, to_timestamp. Keyframe every `gop` frames (lerobot encodes with g=2)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    root = Path(root)
    n_eps = len(episode_lengths)
    per = episodes_per_video or n_eps
    starts = np.concatenate([[0], np.cumsum(episode_lengths)]).astype(int)
    data_path = "data/chunk-{chunk_index:03d}/file-{file_index:03d}.parquet"
    video_path = "videos/{video_key}/chunk-{chunk_index:03d}/file-{file_index:03d}.mp4"
    (root / "meta").mkdir(parents=True, exist_ok=True)
    (root / "meta/info.json").write_text(json.dumps(_info(
        "v3.0", episode_lengths, cameras, fps, H, W, data_path, video_path,
        data_files_size_in_mb=100, video_files_size_in_mb=500), indent=4))
    dp = root / data_path.format(chunk_index=0, file_index=0)
    dp.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(_data_table(episode_lengths, range(n_eps), fps), dp)
    rows: dict[str, list] = {"episode_index": list(range(n_eps)), "tasks": [["pick the cube"]] * n_eps,
                             "length": list(episode_lengths), "data/chunk_index": [0] * n_eps,
                             "data/file_index": [0] * n_eps, "dataset_from_index": [int(s) for s in starts[:-1]],
                             "dataset_to_index": [int(s) for s in starts[1:]]}
    for c, cam in enumerate(cameras):
        chunk_col, file_col, from_col, to_col = [], [], [], []
        for f, first in enumerate(range(0, n_eps, per)):
            eps = range(first, min(first + per, n_eps))
            codes = [lerobot_code(c, int(starts[ep]) + fi) for ep in eps for fi in range(episode_lengths[ep])]
            vp = root / video_path.format(video_key=cam, chunk_index=0, file_index=f)
            vp.parent.mkdir(parents=True, exist_ok=True)
            make_video(vp, len(codes), fps=fps, codes=codes, gop=gop)
            t = 0.0
            for ep in eps:
                chunk_col.append(0)
                file_col.append(f)
                from_col.append(t)
                t += episode_lengths[ep] / fps
                to_col.append(t)
        rows[f"videos/{cam}/chunk_index"], rows[f"videos/{cam}/file_index"] = chunk_col, file_col
        rows[f"videos/{cam}/from_timestamp"], rows[f"videos/{cam}/to_timestamp"] = from_col, to_col
    rows["meta/episodes/chunk_index"], rows["meta/episodes/file_index"] = [0] * n_eps, [0] * n_eps
    ep_path = root / "meta/episodes/chunk-000/file-000.parquet"
    ep_path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.table(rows), ep_path)
    pq.write_table(pa.table({"task_index": [0], "task": ["pick the cube"]}), root / "meta/tasks.parquet")
    return root


def make_lerobot_v21(root: str | Path, episode_lengths: Sequence[int] = (12, 9), cameras: Sequence[str] = CAMERAS,
                     fps: int = 10, gop: int = 2) -> Path:
    """A LeRobot v2.1 dataset: meta/info.json, meta/episodes.jsonl, meta/tasks.jsonl, one data parquet per
    episode (data/chunk-000/episode_XXXXXX.parquet) and one MP4 per camera per episode, each starting at t=0."""
    import pyarrow.parquet as pq

    root = Path(root)
    starts = np.concatenate([[0], np.cumsum(episode_lengths)]).astype(int)
    data_path = "data/chunk-{episode_chunk:03d}/episode_{episode_index:06d}.parquet"
    video_path = "videos/chunk-{episode_chunk:03d}/{video_key}/episode_{episode_index:06d}.mp4"
    (root / "meta").mkdir(parents=True, exist_ok=True)
    (root / "meta/info.json").write_text(json.dumps(_info(
        "v2.1", episode_lengths, cameras, fps, H, W, data_path, video_path,
        total_videos=len(episode_lengths) * len(cameras), total_chunks=1), indent=4))
    (root / "meta/episodes.jsonl").write_text("".join(
        json.dumps({"episode_index": ep, "tasks": ["pick the cube"], "length": n}) + "\n"
        for ep, n in enumerate(episode_lengths)))
    (root / "meta/tasks.jsonl").write_text(json.dumps({"task_index": 0, "task": "pick the cube"}) + "\n")
    for ep, n in enumerate(episode_lengths):
        dp = root / data_path.format(episode_chunk=ep // 1000, episode_index=ep)
        dp.parent.mkdir(parents=True, exist_ok=True)
        pq.write_table(_data_table(episode_lengths, [ep], fps), dp)
        for c, cam in enumerate(cameras):
            vp = root / video_path.format(episode_chunk=ep // 1000, video_key=cam, episode_index=ep)
            vp.parent.mkdir(parents=True, exist_ok=True)
            make_video(vp, n, fps=fps, codes=[lerobot_code(c, int(starts[ep]) + fi) for fi in range(n)], gop=gop)
    return root
