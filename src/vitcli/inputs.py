"""Every kind of input becomes the same small record, `Item` (where a row's picture comes from), produced here
and consumed by every command. Standard library only at import; PyAV and pyarrow are imported when a video or
a LeRobot dataset is met.

Producers: `collect` (image and video files, directories, glob patterns; videos sampled with `Sampling`),
`lerobot_items` (a LeRobot dataset's camera frames), `open_single` (one picture for single-image commands:
`IMAGE`, `VIDEO@t=SECONDS`, `VIDEO@frame=N`). `pieces` groups items into units of decoding work (a few images,
or a run of frames of one video cut at keyframes), which `vitcli.decode` hands to worker processes.
"""

from __future__ import annotations

import glob
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from vitcli.errors import InputError, MissingExtra, UsageError
from vitcli.results import Skipped

IMAGE_SUFFIXES = frozenset(
    ".jpg .jpeg .png .bmp .gif .tif .tiff .webp .ppm .pgm .pbm .pnm .tga .jp2 .j2k .pcx .sgi .qoi .avif".split()
)
VIDEO_SUFFIXES = frozenset(".mp4 .m4v .mov .qt .mkv .webm .avi".split())  # vitcli.video.VIDEO_SUFFIXES


@dataclass(frozen=True)
class Item:
    """One picture a row is made from: an image file, or frame `frame` (display order, at `time` seconds) of
    the video `source`; LeRobot frames also carry their `episode`, `camera` and the dataset's global `index`."""

    source: str
    frame: int | None = None
    time: float | None = None
    episode: int | None = None
    camera: str | None = None
    index: int | None = None
    timestamp: float | None = None  # LeRobot: time within the episode (s)

    @property
    def is_video(self) -> bool:
        return self.frame is not None

    def label(self) -> str:
        """How a person names it: the path, or path@frame=N."""
        return self.source if self.frame is None else f"{self.source}@frame={self.frame}"

    def row(self) -> dict:
        """The sidecar's description of this row: source, frame, time (+ LeRobot's episode, camera, index)."""
        d = {"source": self.source, "frame": self.frame, "time": self.time}
        if self.episode is not None:
            d.update(episode=self.episode, camera=self.camera, index=self.index, timestamp=self.timestamp)
        return d


@dataclass(frozen=True)
class Collected:
    """What the inputs turned into: items in order, the inputs that could not be opened at all, and the
    videos met (path -> probe), so nothing is probed twice."""

    items: tuple[Item, ...]
    skipped: tuple[Skipped, ...] = ()
    videos: dict = field(default_factory=dict)


def _video():
    try:
        from vitcli import video
        import av  # noqa: F401
    except ImportError as e:
        raise MissingExtra("video inputs", "video", "PyAV (av)") from e
    return video


def _files_in(folder: Path, recursive: bool) -> list[str]:
    found = folder.rglob("*") if recursive else folder.iterdir()
    suffixes = IMAGE_SUFFIXES | VIDEO_SUFFIXES
    return sorted(str(p) for p in found if p.is_file() and p.suffix.lower() in suffixes)


def expand(inputs: Sequence[str], recursive: bool = False) -> list[str]:
    """Files kept as given (a bad one is reported later, not dropped here); a directory gives its images and
    videos sorted by path (`recursive`: its whole tree); a pattern with * ? [ gives its matches, sorted.
    Duplicates removed, first occurrence kept."""
    if not inputs:
        raise UsageError("give at least one image, video, directory or glob pattern",
                         hint="e.g. vitcli classify photo.jpg")
    out: list[str] = []
    for item in inputs:
        p = Path(item)
        if p.is_dir():
            found = _files_in(p, recursive)
            if not found:
                where = "" if recursive else " (not recursive)"
                raise InputError(f"{item}: no images or videos in this directory{where}",
                                 hint="add --recursive to search sub-directories" if not recursive else None)
            out += found
        elif any(ch in item for ch in "*?[") and not p.exists():
            matches = sorted(m for m in glob.glob(item, recursive=True) if Path(m).is_file())
            if not matches:
                raise InputError(f"{item}: the pattern matches no files")
            out += matches
        else:
            out.append(item)
    return list(dict.fromkeys(out))


def looks_like_video(path: str) -> bool:
    """By extension, or by the container's first bytes (an MP4 without its suffix is still a video)."""
    if Path(path).suffix.lower() in VIDEO_SUFFIXES:
        return True
    if Path(path).suffix.lower() in IMAGE_SUFFIXES:
        return False
    try:
        with open(path, "rb") as f:
            head = f.read(64)
    except OSError:
        return False
    from vitcli.video import sniff_container

    return sniff_container(head) is not None


def collect(inputs: Sequence[str], recursive: bool = False, sampling=None) -> Collected:
    """Items of every input in order: one per image, one per sampled frame of each video (`sampling`: a
    `vitcli.video.Sampling`; default every frame). A video that cannot be opened is skipped, not fatal."""
    items: list[Item] = []
    skipped: list[Skipped] = []
    videos: dict = {}
    for path in expand(inputs, recursive):
        if not looks_like_video(path):
            items.append(Item(path))
            continue
        video = _video()
        try:
            info = video.probe(path)
            chosen = video.select_frames(info, sampling or video.Sampling())
        except InputError as e:
            skipped.append(Skipped(path, e.message.removeprefix(f"{path}: "), rows=0))  # no rows: not opened
            continue
        videos[path] = info
        items += [Item(path, i, float(info.time_of(i))) for i in chosen]
    if sampling is not None and not videos and not skipped:
        raise UsageError("--fps, --every, --start, --end and --max-frames sample videos, and no input is a video")
    return Collected(tuple(items), tuple(skipped), videos)


def lerobot_items(root: str, cameras: Sequence[str] | None = None, episodes: Sequence[int] | None = None) -> Collected:
    """Every frame of the chosen episodes and cameras of a local LeRobot dataset, ordered by episode, frame,
    then camera (vitcli.lerobot)."""
    _video()
    try:
        from vitcli import lerobot
    except ImportError as e:  # pragma: no cover - pyarrow missing
        raise MissingExtra("--lerobot", "video", "pyarrow") from e
    dataset = lerobot.open_dataset(root)
    frames = lerobot.frames(dataset, cameras, episodes)
    items = tuple(Item(f.video, f.video_frame, f.video_time, f.episode, f.camera, f.index, f.timestamp)
                  for f in frames)
    videos = {f.video: lerobot.video_info(f.video) for f in frames}
    return Collected(items, (), videos)


def open_single(ref: str):
    """One picture for a single-image command: an image file, `VIDEO@t=SECONDS`, `VIDEO@frame=N`, or a video
    (its first frame). Returns a `vitcli.imaging.LoadedImage` whose `path` names the frame."""
    from vitcli.imaging import LoadedImage, open_image

    path, t, frame = ref, None, None
    if "@" in ref and not Path(ref).exists():
        from vitcli.video import parse_frame_ref

        path, t, frame = parse_frame_ref(ref)
    if t is None and frame is None and not looks_like_video(path):
        return open_image(path)
    video = _video()
    index, time, img = video.frame_at(path, time=t, frame=frame)
    return LoadedImage(f"{path}@frame={index}", img, (img.height, img.width), "RGB", "video frame",
                       (f"frame {index} at {time:.3f} s",))


# ---- units of decoding work -----------------------------------------------------------------------------------

@dataclass(frozen=True)
class Piece:
    """Items `start`..`start + len(items) - 1` of a run, decoded together by one worker: a few images, or
    frames of one video in ascending order (one decoder, seeking only where the keyframes make it cheaper)."""

    start: int
    items: tuple[Item, ...]


def pieces(items: Sequence[Item], size: int, videos: dict | None = None, start: int = 0,
           stop: int | None = None) -> Iterator[Piece]:
    """Split items[start:stop] into pieces of about `size` items. Images: `size` at a time. Frames of a video:
    runs of that video, cut only where the next frame's keyframe comes after the run's last frame, so no two
    pieces decode the same frames (a long group of pictures stays in one piece)."""
    stop = len(items) if stop is None else stop
    videos = videos or {}
    i = start
    while i < stop:
        first = items[i]
        j = i + 1
        if not first.is_video:
            while j < stop and j - i < size and not items[j].is_video:
                j += 1
        else:
            info = videos.get(first.source)
            keyframes = getattr(info, "keyframes", ()) or (0,)
            import bisect

            def gop(frame: int) -> int:
                return keyframes[max(0, bisect.bisect_right(keyframes, frame) - 1)]

            while j < stop and items[j].source == first.source and items[j].is_video \
                    and items[j].frame > items[j - 1].frame \
                    and (j - i < size or gop(items[j].frame) <= items[j - 1].frame):
                j += 1
        yield Piece(i, tuple(items[i:j]))
        i = j


def collect_inputs(inputs: Sequence[str], recursive: bool = False) -> list[str]:
    """The paths `expand` finds (for commands that take image files only)."""
    return expand(inputs, recursive)
