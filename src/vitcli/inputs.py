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
import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from vitcli.errors import InputError, MissingExtra, UsageError
from vitcli.results import Skipped
from vitcli.video import VIDEO_SUFFIXES, is_video

IMAGE_SUFFIXES = frozenset(
    ".jpg .jpeg .png .bmp .gif .tif .tiff .webp .ppm .pgm .pbm .pnm .tga .jp2 .j2k .pcx .sgi .qoi .avif".split()
)


@dataclass(frozen=True, slots=True)
class Item:
    """One picture a row is made from: an image file; frame `frame` (display order, at `time` seconds) of the
    video `source` (LeRobot frames also carry their `episode`, `camera` and the dataset's global `index`); or
    a member of the tar archive `source` (`member`: its name, data offset and size in the archive)."""

    source: str
    frame: int | None = None
    time: float | None = None
    episode: int | None = None
    camera: str | None = None
    index: int | None = None
    timestamp: float | None = None  # LeRobot: time within the episode (s)
    member: tuple[str, int, int] | None = None  # tar: (name, data offset, size)

    @property
    def is_video(self) -> bool:
        return self.frame is not None

    @property
    def key(self) -> str | None:
        """A tar member's WebDataset key: its name up to the first dot of its last component."""
        if self.member is None:
            return None
        head, _, tail = self.member[0].rpartition("/")
        return (head + "/" if head else "") + tail.split(".", 1)[0]

    @property
    def origin(self) -> str:
        """The file a skip entry names: the path (with the frame apart), or archive.tar::member."""
        return self.label() if self.member is not None else self.source

    def label(self) -> str:
        """How a person (and --from-list) names it: the path, path@frame=N, or archive.tar::member."""
        if self.member is not None:
            return f"{self.source}::{self.member[0]}"
        return self.source if self.frame is None else f"{self.source}@frame={self.frame}"

    def row(self) -> dict:
        """The sidecar's description of this row: source, frame, time (+ LeRobot's episode, camera, index;
        a tar member's tar and key)."""
        d = {"source": self.source, "frame": self.frame, "time": self.time}
        if self.episode is not None:
            d.update(episode=self.episode, camera=self.camera, index=self.index, timestamp=self.timestamp)
        if self.member is not None:
            d.update(tar=self.source, key=self.key, member=self.member[0])
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
    suffixes = IMAGE_SUFFIXES | VIDEO_SUFFIXES | {".tar"}
    return sorted(str(p) for p in found if p.is_file() and p.suffix.lower() in suffixes)


def braces(text: str) -> list[str]:
    """Expand WebDataset-style brace patterns: `data-{000..099}.tar` (numeric ranges, zero padding kept) and
    `{a,b}` lists; several braces multiply out, in order."""
    m = _BRACE.search(text)
    if not m:
        return [text]
    body, out = m.group(1), []
    rng = _RANGE.fullmatch(body)
    if rng:
        lo, hi = rng.group(1), rng.group(2)
        width = len(lo) if lo.startswith("0") or len(lo) == len(hi) else 0
        options = [str(i).zfill(width) for i in range(int(lo), int(hi) + 1)]
    else:
        options = body.split(",")
    for opt in options:
        out += braces(text[:m.start()] + opt + text[m.end():])
    return out


_BRACE = re.compile(r"\{([^{}]*(?:,|\.\.)[^{}]*)\}")
_RANGE = re.compile(r"(\d+)\.\.(\d+)")


def expand(inputs: Sequence[str], recursive: bool = False) -> list[str]:
    """Files kept as given (a bad one is reported later, not dropped here); a directory gives its images and
    videos sorted by path (`recursive`: its whole tree); a pattern with * ? [ gives its matches, sorted;
    braces `{000..099}` and `{a,b}` expand first. Duplicates removed, first occurrence kept."""
    if not inputs:
        raise UsageError("give at least one image, video, directory or glob pattern",
                         hint="e.g. vitcli classify photo.jpg")
    out: list[str] = []
    for item in (b for given in inputs for b in braces(given)):
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
    suffix = Path(path).suffix.lower()
    if suffix in VIDEO_SUFFIXES:
        return True
    return suffix not in IMAGE_SUFFIXES and is_video(path)


def read_labels(path: str) -> list[str]:
    """--labels FILE: one class name per line, in class-index order (blank lines ignored); read before any model
    loads, so a bad file costs nothing. The count is checked against the model's classes once it is loaded."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise UsageError(f"--labels {path}: cannot read ({getattr(e, 'strerror', None) or e})",
                         hint="give a UTF-8 text file, one label per line") from e
    return [line.strip() for line in text.splitlines() if line.strip()]


def from_list(path: str) -> list[str]:
    """The inputs listed in a file, one per line (blank lines and lines starting with # ignored): paths,
    directories, patterns, VIDEO@frame=N, ARCHIVE.tar::MEMBER — what `failed.txt` lists for a retry."""
    try:
        with open(path, encoding="utf-8") as f:
            return [s for line in f if (s := line.strip()) and not s.startswith("#")]
    except OSError as e:
        raise InputError(f"--from-list {path}: cannot read ({e.strerror or e})", hint="check the path") from e


def tar_items(path: str) -> list[Item]:
    """The images of a tar archive (WebDataset shard) in archive order, each located by its data offset, so
    a worker reads it directly (headers are read once, here)."""
    import tarfile

    try:
        with tarfile.open(path, "r:") as tar:  # uncompressed: members can be read at their offsets
            return [Item(path, member=(m.name, m.offset_data, m.size)) for m in tar
                    if m.isfile() and Path(m.name).suffix.lower() in IMAGE_SUFFIXES]
    except (tarfile.TarError, OSError) as e:
        raise InputError(f"{path}: cannot read this tar archive ({e})",
                         hint="give uncompressed .tar shards (WebDataset's format)") from e


def check_sampled(sampling, *sets: Collected) -> None:
    """The sampling flags (`sampling`: a `vitcli.video.Sampling`, or None) need a video among the inputs of
    `sets`; an input that could not be opened may have been one, so a set with skips passes."""
    if sampling is not None and not any(c.videos or c.skipped for c in sets):
        raise UsageError("--fps, --every, --start, --end and --max-frames sample videos, and no input is a video")


def collect(inputs: Sequence[str], recursive: bool = False, sampling=None, alone: bool = True) -> Collected:
    """Items of every input in order: one per image, one per sampled frame of each video (`sampling`: a
    `vitcli.video.Sampling`; default every frame), one per image in each tar archive; `VIDEO@frame=N` and
    `ARCHIVE.tar::MEMBER` name single items. An input that cannot be opened is skipped, not fatal. `alone`:
    these are all the inputs, so `check_sampled` them; False when another set (pca's --fit-on) may hold the
    videos, and the caller checks both."""
    items: list[Item] = []
    skipped: list[Skipped] = []
    videos: dict = {}
    tars: dict[str, dict] = {}
    for path in expand(inputs, recursive):
        if "::" in path and not Path(path).exists():  # one member of an archive
            tar, _, name = path.partition("::")
            try:
                found = tars.setdefault(tar, {it.member[0]: it for it in tar_items(tar)}).get(name)
            except InputError as e:
                skipped.append(Skipped(path, e.message.removeprefix(f"{tar}: "), rows=0))
                continue
            items.append(found) if found else skipped.append(Skipped(path, "no such member in the archive", rows=0))
            continue
        if "@" in path and not Path(path).exists():  # one frame of a video
            video = _video()
            source, t, frame = video.parse_frame_ref(path)
            try:
                info = videos.get(source) or video.probe(source)
                index = info.index_at(t) if t is not None else frame
                if not 0 <= index < info.frame_count:
                    raise InputError(f"{source}: frame {index} does not exist ({info.frame_count} frames)")
            except InputError as e:
                skipped.append(Skipped(path, e.message.removeprefix(f"{source}: "), rows=0))
                continue
            videos[source] = info
            items.append(Item(source, index, float(info.time_of(index))))
            continue
        if Path(path).suffix.lower() == ".tar":
            try:
                items += tar_items(path)
            except InputError as e:
                skipped.append(Skipped(path, e.message.removeprefix(f"{path}: "), rows=0))
            continue
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
    collected = Collected(tuple(items), tuple(skipped), videos)
    if alone:
        check_sampled(sampling, collected)
    return collected


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
            while j < stop and j - i < size and not items[j].is_video and (items[j].member is None) == (
                    first.member is None):
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
