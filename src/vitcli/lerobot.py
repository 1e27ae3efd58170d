"""LeRobot robot-learning datasets (a local folder) as inputs: which camera frame of which episode, in which MP4.

Read with pyarrow, json and `vitcli.video` (PyAV), without torch and without lerobot itself (a heavy install:
torch, datasets, huggingface_hub...). The layout follows lerobot's own code (`lerobot/datasets/utils.py`
path templates, `lerobot_dataset.py` `_query_videos`, `video_utils.py` `decode_video_frames`):

v3.0 (`codebase_version` "v3.0", what current lerobot writes)::

    meta/info.json                                     fps, features, data_path / video_path templates
    meta/episodes/chunk-000/file-000.parquet           one row per episode: length, tasks, dataset_from_index,
                                                       data/chunk_index, data/file_index, and per camera
                                                       videos/<key>/chunk_index, file_index, from_timestamp,
                                                       to_timestamp
    data/chunk-000/file-000.parquet                    one row per frame, many episodes per file: timestamp
                                                       (episode time, s), frame_index, episode_index, index
    videos/<key>/chunk-000/file-000.mp4                SEVERAL episodes back to back per camera

  A frame's video time is `from_timestamp + timestamp` (lerobot: "episodes are stored sequentially on a single
  mp4 ... we load the start timestamp of the episode on this mp4 and shift the query timestamp").

v2.1 / v2.0::

    meta/info.json, meta/episodes.jsonl                {"episode_index", "tasks", "length"} per line
    data/chunk-{episode_chunk:03d}/episode_{episode_index:06d}.parquet
    videos/chunk-{episode_chunk:03d}/{video_key}/episode_{episode_index:06d}.mp4   one per camera per episode

  with episode_chunk = episode_index // chunks_size; the video time is the frame's `timestamp`.

Cameras are the features whose dtype is "video" (image features stored inside the parquet are not supported).
Each frame's video time is matched to the MP4's own frame times (`video.probe`) like lerobot's
`decode_video_frames`: the nearest frame, accepted only if |difference| < tolerance_s (lerobot's default 1e-4
s); otherwise InputError naming the episode, camera and time.
"""

from __future__ import annotations

import functools
import json
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from vitcli import video
from vitcli.errors import InputError, UsageError

TOLERANCE_S = 1e-4  # lerobot's LeRobotDataset(tolerance_s=1e-4)
V3_DATA_PATH = "data/chunk-{chunk_index:03d}/file-{file_index:03d}.parquet"
V3_VIDEO_PATH = "videos/{video_key}/chunk-{chunk_index:03d}/file-{file_index:03d}.mp4"
V2_DATA_PATH = "data/chunk-{episode_chunk:03d}/episode_{episode_index:06d}.parquet"
V2_VIDEO_PATH = "videos/chunk-{episode_chunk:03d}/{video_key}/episode_{episode_index:06d}.mp4"


@dataclass(frozen=True)
class EpisodeVideo:
    """Where one camera's footage of one episode lies: `path` (absolute) from `from_s` to `to_s` seconds."""

    path: str
    from_s: float
    to_s: float | None


@dataclass(frozen=True)
class Episode:
    index: int
    length: int  # frames
    tasks: tuple[str, ...]
    from_index: int  # the dataset's global index of its first frame
    data_path: str  # absolute path of the parquet file holding its rows
    videos: dict[str, EpisodeVideo] = field(repr=False)


@dataclass(frozen=True)
class Dataset:
    root: str
    version: str
    fps: float
    cameras: tuple[str, ...]  # feature keys with dtype "video", in info.json order
    episodes: tuple[Episode, ...] = field(repr=False)
    total_frames: int
    robot_type: str | None = None

    def episode(self, index: int) -> Episode:
        for ep in self.episodes:
            if ep.index == index:
                return ep
        raise UsageError(f"{self.root}: no episode {index}", hint=f"episodes: {_ranges(self.episode_indices)}")

    @property
    def episode_indices(self) -> list[int]:
        return [ep.index for ep in self.episodes]

    def to_dict(self) -> dict:
        return {"root": self.root, "version": self.version, "fps": self.fps, "cameras": list(self.cameras),
                "episodes": len(self.episodes), "total_frames": self.total_frames, "robot_type": self.robot_type}


@dataclass(frozen=True, slots=True)
class Frame:
    """One camera image of one step: `episode`, `camera`, `index` (the dataset's global frame index),
    `frame_index` (within the episode), `timestamp` (episode time, s), and where it is: `video` (MP4 path),
    `video_frame` (display index in that file) and `video_time` (its time there, s)."""

    episode: int
    camera: str
    index: int
    frame_index: int
    timestamp: float
    video: str
    video_frame: int
    video_time: float

    def to_dict(self) -> dict:
        return {"episode": self.episode, "camera": self.camera, "index": self.index,
                "frame_index": self.frame_index, "timestamp_s": self.timestamp, "video": self.video,
                "video_frame": self.video_frame, "video_time_s": self.video_time}


# ---- episodes text --------------------------------------------------------------------------------------------

_ITEM = re.compile(r"^(\d+)(?:-(\d+))?$")


def parse_episodes(text: str) -> list[int]:
    """"0-9,12" -> [0, 1, ..., 9, 12] (ranges inclusive, sorted, duplicates dropped). Bad text -> UsageError."""
    out: set[int] = set()
    items = [s.strip() for s in str(text).split(",")]
    for item in items:
        m = _ITEM.match(item)
        if m is None:
            raise UsageError(f"--episodes {text!r}: {item!r} is not an episode number or range",
                             hint="e.g. --episodes 0-9,12")
        a = int(m[1])
        b = int(m[2]) if m[2] is not None else a
        if b < a:
            raise UsageError(f"--episodes {text!r}: range {item} runs backwards", hint=f"write {b}-{a}")
        out.update(range(a, b + 1))
    return sorted(out)


def _ranges(nums: Iterable[int]) -> str:
    """[0, 1, 2, 5, 7, 8] -> "0-2,5,7-8"."""
    nums = sorted(nums)
    parts: list[str] = []
    i = 0
    while i < len(nums):
        j = i
        while j + 1 < len(nums) and nums[j + 1] == nums[j] + 1:
            j += 1
        parts.append(str(nums[i]) if i == j else f"{nums[i]}-{nums[j]}")
        i = j + 1
    return ",".join(parts)


# ---- open ------------------------------------------------------------------------------------------------------

def _read_json(path: Path, root: str):
    try:
        return json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise InputError(f"{root}: cannot read {path.relative_to(root)} ({e})",
                         hint="the dataset's metadata is damaged; download it again") from e


def _read_parquet(path: Path, columns: Sequence[str] | None, what: str, optional: Sequence[str] = ()):
    """The table of a parquet file: `columns` (None: all; each must be there) and those of `optional` that are.
    A missing, damaged or foreign file is an InputError naming it."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    if not path.is_file():
        raise InputError(f"{path}: missing ({what})", hint="the dataset is incomplete; download it again")
    try:
        names = set(pq.ParquetFile(path).schema_arrow.names)
        if columns is not None:
            missing = [c for c in columns if c not in names]
            if missing:
                raise InputError(f"{path}: no column {', '.join(missing)} ({what})",
                                 hint="not a LeRobot file of the version info.json names")
            columns = [*columns, *(c for c in optional if c in names)]
        return pq.read_table(path, columns=list(columns) if columns is not None else None)
    except (OSError, pa.ArrowException) as e:
        raise InputError(f"{path}: cannot read ({e}) ({what})",
                         hint=f"the dataset's {what} is damaged; download it again") from e


def open_dataset(root: str | Path) -> Dataset:
    """Read a LeRobot dataset's metadata (v3.0, v2.1 or v2.0) from a local folder. No video is opened here."""
    rootp = Path(root)
    name = str(root)
    if not rootp.is_dir():
        raise InputError(f"{name}: no such directory" if not rootp.exists() else f"{name}: not a directory",
                         hint="give the dataset's root folder (the one holding meta/info.json)")
    info_path = rootp / "meta" / "info.json"
    if not info_path.is_file():
        raise InputError(f"{name}: not a LeRobot dataset (no meta/info.json)",
                         hint="give the dataset's root folder, e.g. ~/.cache/huggingface/lerobot/<user>/<name>")
    info = _read_json(info_path, name)
    version = str(info.get("codebase_version", ""))
    features = info.get("features") or {}
    cameras = tuple(k for k, ft in features.items() if isinstance(ft, dict) and ft.get("dtype") == "video")
    if not cameras:
        images = [k for k, ft in features.items() if isinstance(ft, dict) and ft.get("dtype") == "image"]
        raise InputError(f"{name}: has no video cameras" + (f" (its cameras {', '.join(images)} are images stored "
                                                            "in the parquet files, which vitcli does not read)"
                                                            if images else ""),
                         hint="vitcli reads LeRobot datasets whose cameras are stored as videos")
    try:
        fps = float(info["fps"])
    except (KeyError, TypeError, ValueError) as e:
        raise InputError(f"{name}: meta/info.json has no valid fps", hint="the metadata is damaged") from e
    major = version.lstrip("v").split(".")[0]
    if major == "3":
        episodes = _episodes_v3(rootp, info, cameras)
    elif major == "2":
        episodes = _episodes_v2(rootp, info, cameras)
    else:
        raise InputError(f"{name}: LeRobot codebase_version {version or '(none)'} is not supported",
                         hint="vitcli reads v2.0, v2.1 and v3.0; convert older datasets with lerobot's scripts")
    return Dataset(root=name, version=version, fps=fps, cameras=cameras, episodes=tuple(episodes),
                   total_frames=int(info.get("total_frames", sum(ep.length for ep in episodes))),
                   robot_type=info.get("robot_type"))


def _episodes_v3(root: Path, info: dict, cameras: Sequence[str]) -> list[Episode]:
    files = sorted((root / "meta" / "episodes").glob("*/*.parquet"))
    if not files:
        raise InputError(f"{root}: no episode metadata (meta/episodes/chunk-*/file-*.parquet)",
                         hint="the dataset is incomplete; download it again")
    data_tpl = info.get("data_path") or V3_DATA_PATH
    video_tpl = info.get("video_path") or V3_VIDEO_PATH
    cols = ["episode_index", "length", "dataset_from_index", "data/chunk_index", "data/file_index"]
    for cam in cameras:
        cols += [f"videos/{cam}/{k}" for k in ("chunk_index", "file_index", "from_timestamp", "to_timestamp")]
    out: list[Episode] = []
    for f in files:
        table = _read_parquet(f, cols, "episode metadata", optional=["tasks"])
        for row in table.to_pylist():
            ep = int(row["episode_index"])
            videos = {}
            for cam in cameras:
                rel = video_tpl.format(video_key=cam, chunk_index=int(row[f"videos/{cam}/chunk_index"]),
                                       file_index=int(row[f"videos/{cam}/file_index"]))
                to_s = row[f"videos/{cam}/to_timestamp"]
                videos[cam] = EpisodeVideo(str(root / rel), float(row[f"videos/{cam}/from_timestamp"]),
                                           None if to_s is None else float(to_s))
            data = data_tpl.format(chunk_index=int(row["data/chunk_index"]), file_index=int(row["data/file_index"]))
            out.append(Episode(index=ep, length=int(row["length"]), tasks=tuple(row.get("tasks") or ()),
                               from_index=int(row["dataset_from_index"]), data_path=str(root / data), videos=videos))
    return sorted(out, key=lambda e: e.index)


def _episodes_v2(root: Path, info: dict, cameras: Sequence[str]) -> list[Episode]:
    path = root / "meta" / "episodes.jsonl"
    if not path.is_file():
        raise InputError(f"{root}: no meta/episodes.jsonl", hint="the dataset is incomplete; download it again")
    damaged = "the dataset's metadata is damaged; download it again"
    rows = []
    for n, line in enumerate(path.read_text().splitlines(), 1):
        if line.strip():
            try:
                r = json.loads(line)
            except json.JSONDecodeError as e:
                raise InputError(f"{path}: line {n} is not JSON ({e})", hint=damaged) from e
            missing = [k for k in ("episode_index", "length") if not isinstance(r, dict) or k not in r]
            if missing:
                raise InputError(f"{path}: line {n} has no {' and no '.join(missing)}", hint=damaged)
            try:
                rows.append((int(r["episode_index"]), int(r["length"]), r))
            except (TypeError, ValueError) as e:
                raise InputError(f"{path}: line {n}: episode_index and length must be whole numbers ({e})",
                                 hint=damaged) from e
    rows.sort(key=lambda row: row[0])
    chunks = int(info.get("chunks_size") or 1000)
    data_tpl = info.get("data_path") or V2_DATA_PATH
    video_tpl = info.get("video_path") or V2_VIDEO_PATH
    out, start = [], 0
    for ep, length, r in rows:
        chunk = ep // chunks
        videos = {cam: EpisodeVideo(str(root / video_tpl.format(episode_chunk=chunk, video_key=cam,
                                                                 episode_index=ep)), 0.0, None) for cam in cameras}
        out.append(Episode(index=ep, length=length, tasks=tuple(r.get("tasks") or ()), from_index=start,
                           data_path=str(root / data_tpl.format(episode_chunk=chunk, episode_index=ep)),
                           videos=videos))
        start += length
    return out


# ---- frames ----------------------------------------------------------------------------------------------------

def resolve_cameras(dataset: Dataset, cameras: Sequence[str] | None) -> list[str]:
    """Camera keys as given (`observation.images.top`) or by their last part (`top`) when that is unambiguous;
    None -> all. Unknown -> UsageError listing the dataset's cameras."""
    if not cameras:
        return list(dataset.cameras)
    out = []
    for c in cameras:
        if c in dataset.cameras:
            key = c
        else:
            hits = [k for k in dataset.cameras if k.rsplit(".", 1)[-1] == c]
            if len(hits) != 1:
                raise UsageError(f"{dataset.root}: no camera {c!r}" + (" (ambiguous)" if hits else ""),
                                 hint="cameras: " + ", ".join(dataset.cameras))
            key = hits[0]
        if key not in out:
            out.append(key)
    return out


def _select_episodes(dataset: Dataset, episodes: Sequence[int] | None) -> list[Episode]:
    if episodes is None:
        return list(dataset.episodes)
    by_index = {ep.index: ep for ep in dataset.episodes}
    unknown = [e for e in episodes if e not in by_index]
    if unknown:
        raise UsageError(f"{dataset.root}: no episode {_ranges(unknown)}",
                         hint=f"episodes: {_ranges(by_index)}")
    return [by_index[e] for e in sorted(set(episodes))]


@functools.lru_cache(maxsize=64)
def _probe(path: str, size: int, mtime_ns: int) -> video.VideoInfo:
    return video.probe(path)


def video_info(path: str) -> video.VideoInfo:
    """`video.probe(path)`, cached while the file is unchanged (one MP4 holds many episodes)."""
    p = Path(path)
    if not p.is_file():
        raise InputError(f"{path}: missing (a LeRobot camera video)", hint="the dataset is incomplete; download it "
                                                                           "again (with its videos)")
    st = p.stat()
    return _probe(str(path), st.st_size, st.st_mtime_ns)


def _episode_rows(episodes: Sequence[Episode]) -> dict[int, tuple[list[int], list[int], list[float]]]:
    """episode -> (index, frame_index, timestamp) columns from the data parquet files, each file read once."""
    import numpy as np
    import pyarrow.compute as pc

    by_file: dict[str, list[int]] = {}
    for ep in episodes:
        by_file.setdefault(ep.data_path, []).append(ep.index)
    out: dict[int, tuple[list[int], list[int], list[float]]] = {}
    for path, eps in by_file.items():
        table = _read_parquet(Path(path), ["episode_index", "index", "frame_index", "timestamp"], "frame data")
        ep_col = table["episode_index"]
        for e in eps:
            rows = table.filter(pc.equal(ep_col, e))
            order = np.argsort(np.asarray(rows["frame_index"]), kind="stable")
            out[e] = ([int(v) for v in np.asarray(rows["index"])[order]],
                      [int(v) for v in np.asarray(rows["frame_index"])[order]],
                      _seconds(np.asarray(rows["timestamp"])[order]))
    return out


def _seconds(a) -> list[float]:
    """Timestamps as Python floats; float32 ones (lerobot's dtype) by their shortest decimal (0.8, not
    0.800000011920929), which is the same float32 value."""
    import numpy as np

    return [float(v) for v in (a.astype(str) if a.dtype == np.float32 else a.astype(np.float64))]


def frames(dataset: Dataset, cameras: Sequence[str] | None = None, episodes: Sequence[int] | None = None,
           tolerance_s: float = TOLERANCE_S) -> list[Frame]:
    """Every frame of the chosen episodes (default all) and cameras (default all), ordered by episode, frame,
    then camera. Each is located in its MP4 (probed once per file): video time = from_timestamp + timestamp,
    matched to the nearest frame of the file; |difference| >= tolerance_s -> InputError naming the episode,
    camera and time (lerobot's check). Reads only the data parquet's index/timestamp columns."""
    import numpy as np

    cams = resolve_cameras(dataset, cameras)
    eps = _select_episodes(dataset, episodes)
    rows = _episode_rows(eps)
    out: list[Frame] = []
    for ep in eps:
        index, frame_index, ts = rows[ep.index]
        if not index:
            raise InputError(f"{dataset.root}: episode {ep.index} has no rows in {ep.data_path}",
                             hint="the dataset's data and metadata disagree; download it again")
        per_cam = {}
        for cam in cams:
            ev = ep.videos[cam]
            info = video_info(ev.path)
            times = np.asarray(info.times)
            q = ev.from_s + np.asarray(ts)
            j = np.clip(np.searchsorted(times, q), 1, len(times) - 1) if len(times) > 1 else np.zeros(len(q), int)
            if len(times) > 1:
                j = np.where(np.abs(times[j - 1] - q) <= np.abs(times[j] - q), j - 1, j)
            diff = np.abs(times[j] - q)
            bad = np.flatnonzero(diff >= tolerance_s)
            if bad.size:
                b = int(bad[0])
                raise InputError(
                    f"{dataset.root}: episode {ep.index}, camera {cam}: no video frame at {q[b]:.6f} s in "
                    f"{ev.path} (frame_index {frame_index[b]}, timestamp {ts[b]:.6f} s + episode start "
                    f"{ev.from_s:.6f} s; nearest frame {times[j[b]]:.6f} s, tolerance {tolerance_s:g} s)",
                    hint="the video and the dataset's timestamps disagree (lerobot would refuse this frame too)")
            per_cam[cam] = (ev.path, j, times[j])
        for r in range(len(index)):
            for cam in cams:
                path, j, t = per_cam[cam]
                out.append(Frame(ep.index, cam, index[r], frame_index[r], ts[r], path, int(j[r]), float(t[r])))
    return out
