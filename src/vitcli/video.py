"""Video files as inputs, without torch: recognise, probe, pick frames by time, decode them streamed.

Decoder: PyAV (`av`), chosen by measurement. `benchmarks/video_decoders.py` (a 60 s 640x480 30 fps H.264 MP4,
keyframe every 30 frames; PyAV 18.1 against torchcodec 0.17; interleaved rounds on this shared 2-core machine;
two runs, ratios of PyAV time to torchcodec time, < 1 = PyAV faster):

- every frame to RGB (PyAV thread_type AUTO + `to_ndarray("rgb24")`; torchcodec `VideoDecoder` with FFmpeg's
  own thread count, batches of 32): 0.98 and 0.71 (medians), 0.75 (minimums);
- 1 fps with seeking (PyAV keyframe seek + decode to the timestamp; torchcodec exact-mode `get_frames_at`):
  1.17 and 0.47 (medians), 0.72 (minimums);
- the same RGB values for the same frames (max difference 0 levels);
- importing torchcodec (which imports torch) took 28-39x as long as `import av` (19-27 s vs 0.5-0.9 s here).

So speed is a tie or better for PyAV, and packaging decides: PyAV's wheels carry their own FFmpeg (nothing to
install, nothing fetched at run time), while torchcodec loads the system's FFmpeg shared libraries and fails
without them, and needs torch: this module stays torch-free so decode workers never pay that import. PyAV also
exposes what exact frame identity needs: packet timestamps, keyframe and corruption flags, the display matrix.

Conventions (shared by every function here):

- A frame's *index* is its position in display order (sorted presentation timestamps), 0-based.
- A frame's *time* is its presentation timestamp in seconds, `pts * time_base`, exactly as the container
  stores it (torchcodec's `pts_seconds`, LeRobot's `timestamp` convention); never `index / fps`, so variable
  frame rate videos are exact. Most files start at 0; some (MPEG-TS, trimmed edits) start later.
- Frames come out as RGB `PIL.Image`s in *display orientation*: the container's display matrix (the old
  `rotate` tag; quarter turns and mirroring) is applied as `ffmpeg`'s autorotate does. Width and height are
  reported after it.
- Time -> frame is *nearest timestamp, ties to the earlier frame* (LeRobot's rule for matching query times to
  decoded frames; on constant-rate video: t * fps rounded, halves down). Used by `--fps` sampling and `@t=`.

Memory: `decode_frames` is a generator holding one decoded frame at a time (plus the decoder's own reference
frames); `probe` reads packets (compressed bytes, never decoded except the first frame) and keeps only their
timestamps.
"""

from __future__ import annotations

import bisect
import itertools
import math
import re
import struct
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path

from vitcli.errors import InputError, UsageError

VIDEO_SUFFIXES = frozenset([".mp4", ".m4v", ".mov", ".qt", ".mkv", ".webm", ".avi"])

# ISO BMFF brands that are still images or audio, not video (HEIF/HEIC/AVIF photos, M4A audio).
_NOT_VIDEO_BRANDS = frozenset({b"heic", b"heix", b"heim", b"heis", b"mif1", b"msf1", b"avif", b"avis", b"avci",
                               b"M4A ", b"M4B ", b"M4P ", b"crx "})
# Top-level QuickTime atoms that may open a .mov written without an `ftyp` box.
_QT_FIRST_ATOMS = frozenset({b"moov", b"mdat", b"wide", b"free", b"skip", b"pnot"})

_SWAPS_AXES = frozenset({"ROTATE_90", "ROTATE_270", "TRANSPOSE", "TRANSVERSE"})

# FFmpeg demuxers for still images (FFmpeg reads a JPEG as a one-frame "video"); animated GIF/APNG/WebP are
# images to vitcli too (imaging.py takes their first frame).
_IMAGE_FORMATS = frozenset({"image2", "gif", "apng", "webp", "ico", "bmp", "tiff"})

# Seek instead of decoding through when the keyframe before the next wanted frame lies more than this many frames
# past the last frame decoded. A seek flushes the (threaded) decoder and restarts it: on a 640x480 H.264 clip with a
# keyframe every 2 frames it cost about as much as decoding 4-7 frames (`benchmarks/video_decoders.py --seek-sweep`:
# every 4th frame was faster decoded through, every 8th faster with seeks).
SEEK_MIN_SKIP = 6


class VideoDecodeError(InputError):
    """Decoding stopped at `frame` (display index) of `path` because of `reason` (truncated file, corrupt data).

    Frames before it were already yielded; `frame` may equal the number of readable frames when the file ends
    before what its header declares."""

    def __init__(self, path: str, frame: int, reason: str):
        super().__init__(f"{path}: cannot decode frame {frame}: {reason}",
                         hint="the file looks truncated or corrupt; re-export or re-download it "
                              "(frames before this one were read)")
        self.path = path
        self.frame = frame
        self.reason = reason


# ---- recognise -----------------------------------------------------------------------------------------------

def sniff_container(head: bytes) -> str | None:
    """Container family from a file's first bytes: "mp4" (ISO BMFF / QuickTime), "matroska" (MKV/WebM), "avi",
    or None. HEIF/AVIF images and M4A audio (also ISO BMFF) are not video."""
    if len(head) >= 12 and head[4:8] == b"ftyp":
        return None if head[8:12] in _NOT_VIDEO_BRANDS else "mp4"
    if len(head) >= 8 and head[4:8] in _QT_FIRST_ATOMS:
        return "mp4"
    if head[:4] == b"\x1a\x45\xdf\xa3":
        return "matroska"
    if len(head) >= 12 and head[:4] == b"RIFF" and head[8:12] == b"AVI ":
        return "avi"
    return None


def is_video(path: str | Path) -> bool:
    """True when the file starts like an MP4/MOV, MKV/WebM or AVI container (by content, not by name).
    Missing or unreadable files are not videos (no error here; `probe` says why)."""
    try:
        with open(path, "rb") as f:
            return sniff_container(f.read(12)) is not None
    except OSError:
        return False


# ---- probe ---------------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class VideoInfo:
    """What a video holds, read from its packets (one frame decoded, for the display matrix and size).

    Per-frame tuples are in display order, one entry per readable frame: `pts` in `time_base` units and
    `times` = pts * time_base in seconds. `keyframes` are display indices of frames whose packet is a keyframe
    (decoding can start there). `duration` (s) runs from the first frame's time to the end of the last frame;
    `fps` = frame_count / duration (average, so meaningful for variable frame rate too). `width`/`height` in
    pixels as displayed: after `rotation` (degrees clockwise, 0/90/180/270) and any mirroring in the display
    matrix, applied as the PIL transpose steps in `transform` (`rotation` is FFmpeg's angle; with mirroring
    `transform` is the whole story). `damage` says why the file looks truncated or corrupt (None when it reads
    cleanly); decoding up to its end then raises VideoDecodeError.
    """

    path: str
    frame_count: int
    pts: tuple[int, ...] = field(repr=False)
    time_base: Fraction
    times: tuple[float, ...] = field(repr=False)
    keyframes: tuple[int, ...] = field(repr=False)
    duration: float
    fps: float
    width: int
    height: int
    rotation: int
    codec: str
    container: str
    damage: str | None = None
    transform: tuple[str, ...] = ()  # PIL Image.Transpose steps applied for display (rotation and mirroring)

    @property
    def start_time(self) -> float:
        return self.times[0]

    @property
    def end_time(self) -> float:
        return self.times[0] + self.duration

    def time_of(self, index: int) -> Fraction:
        """Exact time (s) of frame `index`."""
        return self.pts[index] * self.time_base

    def index_at(self, time: float | Fraction) -> int:
        """The frame nearest to `time` seconds (ties: the earlier frame). Raises UsageError outside the video."""
        t = _exact(time)
        if not (self.time_of(0) <= t < self.time_of(0) + _exact(self.duration)):
            raise UsageError(f"{self.path}: t={float(t):g} s is outside the video "
                             f"({self.start_time:g}-{self.end_time:g} s)",
                             hint=f"give a time in [{self.start_time:g}, {self.end_time:g})")
        return _nearest(self, t, 0, self.frame_count)

    def to_dict(self) -> dict:
        return {"path": self.path, "frame_count": self.frame_count, "start_time_s": self.start_time,
                "duration_s": self.duration, "fps": self.fps, "width": self.width, "height": self.height,
                "rotation_deg": self.rotation, "transform": list(self.transform), "codec": self.codec,
                "container": self.container, "keyframe_count": len(self.keyframes), "damage": self.damage}


def _check_file(path: str | Path) -> str:
    name, p = str(path), Path(path)
    if not p.exists():
        raise InputError(f"{name}: no such file", hint="check the path")
    if p.is_dir():
        raise InputError(f"{name}: is a directory", hint="give a video file")
    if p.stat().st_size == 0:
        raise InputError(f"{name}: empty file", hint="the file has no bytes; re-export or re-download it")
    return name


def _open(path: str | Path):
    """Open `path` with PyAV -> (container, video stream); InputError naming the file and the reason."""
    import av

    name = _check_file(path)
    try:
        container = av.open(name, mode="r")
    except av.error.FFmpegError as e:
        with open(name, "rb") as f:
            kind = sniff_container(f.read(12))
        why = "not a video FFmpeg can read" if kind is None else f"cannot read this {kind} file ({_reason(e)})"
        if kind == "mp4":
            why += "; an MP4/MOV without its index (moov box) was usually cut short while recording"
        raise InputError(f"{name}: {why}", hint="check that the file is a complete video (MP4, MOV, MKV, WebM, AVI)"
                         ) from e
    fmt = container.format.name
    if fmt in _IMAGE_FORMATS or fmt.endswith("_pipe"):
        container.close()
        raise InputError(f"{name}: is a still image ({fmt}), not a video", hint="give it as an image input")
    if not container.streams.video:
        container.close()
        raise InputError(f"{name}: has no video stream", hint="give a file with video (not audio only)")
    return container, container.streams.video[0]


def _reason(e: Exception) -> str:
    """FFmpeg's message without PyAV's errno prefix and file name."""
    msg = getattr(e, "strerror", None) or str(e)
    return str(msg).strip() or type(e).__name__


def _display_matrix(frame) -> tuple[int, ...] | None:
    """The frame's DISPLAYMATRIX side data (9 int32, 16.16 fixed point; FFmpeg copies the container's matrix
    onto every decoded frame), or None."""
    for sd in frame.side_data.keys():
        if getattr(sd.type, "name", "") == "DISPLAYMATRIX":
            raw = bytes(sd)
            return struct.unpack("=9i", raw[:36]) if len(raw) >= 36 else None
    return None


def _orientation(m: Sequence[int] | None) -> tuple[int, tuple[str, ...]]:
    """Display matrix -> (clockwise rotation in degrees, PIL `Image.Transpose` steps that show the frame upright).

    FFmpeg's own autorotate, step for step (fftools `get_rotation` + the transpose/hflip/vflip choice in
    ffmpeg_filter.c / ffplay.c): theta = -round(av_display_rotation_get(m)) in [0, 360); 90 -> transpose
    "clock" (or "cclock_flip" when m[3] > 0), 180 -> hflip if m[0] < 0 and vflip if m[4] < 0, 270 -> "cclock"
    (or "clock_flip" when m[3] < 0), 0 -> vflip if m[4] < 0. Angles off the quarter turns are left as stored.
    PIL equivalents: clock = ROTATE_270, cclock = ROTATE_90, cclock_flip = TRANSPOSE, clock_flip = TRANSVERSE.
    """
    if m is None:
        return 0, ()
    sx, sy = math.hypot(m[0] / 65536, m[3] / 65536), math.hypot(m[1] / 65536, m[4] / 65536)
    if sx == 0 or sy == 0:
        return 0, ()
    ccw = -math.degrees(math.atan2(m[1] / 65536 / sy, m[0] / 65536 / sx))  # av_display_rotation_get
    theta = -float(round(ccw))
    theta -= 360 * math.floor(theta / 360 + 0.9 / 360)
    if abs(theta - 90) < 1:
        return 90, ("TRANSPOSE",) if m[3] > 0 else ("ROTATE_270",)
    if abs(theta - 180) < 1:
        return 180, tuple(op for op, on in (("FLIP_LEFT_RIGHT", m[0] < 0), ("FLIP_TOP_BOTTOM", m[4] < 0)) if on)
    if abs(theta - 270) < 1:
        return 270, ("TRANSVERSE",) if m[3] < 0 else ("ROTATE_90",)
    if abs(theta) < 1:
        return 0, ("FLIP_TOP_BOTTOM",) if m[4] < 0 else ()
    return 0, ()


def probe(path: str | Path) -> VideoInfo:
    """Read a video's frames' timestamps, keyframes, size, rotation and codec by demuxing its packets.

    Packets arrive in decode order; with B-frames that is not display order, so timestamps are sorted. The first
    frame is decoded (for the display matrix and the true frame size). Unreadable, not-a-video, no video stream,
    no frame -> InputError. A file that demuxes partly (cut short, corrupt packets) gives the readable frames
    and `damage` saying what is wrong.
    """
    import av

    container, stream = _open(path)
    name = str(path)
    tb = stream.time_base or Fraction(1, 1000)
    rows: list[tuple[int, int, bool]] = []  # (pts, duration, keyframe) per packet, decode order
    damage: list[str] = []
    first = None
    try:
        try:
            for packet in container.demux(stream):
                if packet.size == 0 and packet.pts is None and packet.dts is None:
                    continue  # end-of-stream flush packet
                if packet.is_discard:
                    continue  # before the start of an MP4 edit list: decoded as reference, never shown
                ts = packet.pts if packet.pts is not None else packet.dts
                if ts is None:
                    raise InputError(f"{name}: video packets carry no timestamps",
                                     hint="remux it into MP4 or MKV (e.g. ffmpeg -i in -c copy out.mkv)")
                if packet.is_corrupt and not damage:
                    damage.append(f"frame data at {float(ts * tb):.3f} s is incomplete (file cut short?)")
                rows.append((ts, packet.duration or 0, bool(packet.is_keyframe)))
                if first is None:
                    try:
                        got = stream.decode(packet)
                    except av.error.FFmpegError:
                        got = []
                    if got:
                        first = got[0]
        except av.error.FFmpegError as e:
            damage.append(f"cannot read past {len(rows)} frames ({_reason(e)})")
        if first is None and rows:
            try:
                got = stream.decode(None)
                first = got[0] if got else None
            except av.error.FFmpegError:
                first = None
        declared_frames = stream.frames or 0
        declared_s = float(stream.duration * tb) if stream.duration else (
            container.duration / 1e6 if container.duration and len(container.streams) == 1 else None)
        codec = stream.codec_context.name
        fmt = container.format.name
        rate = float(stream.average_rate or 0)
    finally:
        container.close()
    if not rows:
        raise InputError(f"{name}: no video frames could be read" + (f" ({damage[0]})" if damage else ""),
                         hint="the file may be empty or corrupt")
    if first is None:
        raise InputError(f"{name}: the first frame cannot be decoded ({codec})",
                         hint="the file may be corrupt, or its codec is not supported by PyAV's FFmpeg")

    rows.sort(key=lambda r: r[0])
    pts = tuple(r[0] for r in rows)
    n = len(pts)
    step = _typical_step(pts)
    last_dur = rows[-1][1] or step or 0
    duration_q = (pts[-1] - pts[0] + last_dur) * tb
    duration = float(duration_q)
    if declared_frames > n:
        damage.append(f"the header declares {declared_frames} frames, only {n} can be read")
    elif declared_s is not None and step and declared_s - duration > max(2 * float(step * tb), 0.05):
        damage.append(f"the frames end at {duration:.3f} s, the header says {declared_s:.3f} s")
    rot, transform = _orientation(_display_matrix(first))
    w, h = first.width, first.height
    if set(transform) & _SWAPS_AXES:
        w, h = h, w
    return VideoInfo(path=name, frame_count=n, pts=pts, time_base=Fraction(tb), times=tuple(float(p * tb) for p in pts),
                     keyframes=tuple(i for i, r in enumerate(rows) if r[2]), duration=duration,
                     fps=n / duration if duration > 0 else rate, width=w, height=h,
                     rotation=rot, transform=transform, codec=codec, container=fmt,
                     damage="; ".join(damage) or None)


def _typical_step(pts: Sequence[int]) -> int:
    """Median gap between consecutive timestamps (0 for one frame)."""
    gaps = sorted(b - a for a, b in itertools.pairwise(pts))
    return gaps[len(gaps) // 2] if gaps else 0


# ---- choose frames -------------------------------------------------------------------------------------------

def _exact(x: float | Fraction) -> Fraction:
    """A user's number as the decimal they typed (0.1 -> 1/10, not the nearest binary float)."""
    return x if isinstance(x, Fraction) else Fraction(repr(float(x))) if isinstance(x, float) else Fraction(x)


@dataclass(frozen=True)
class Sampling:
    """Which frames of a video to use. All None: every frame.

    `fps`: frames per second of video time, by timestamp (targets start, start + 1/fps, ...; each takes the
    nearest frame, ties to the earlier; a frame picked twice is kept once). `every`: every N-th frame of the
    window (its first frame, then N later, ...). `fps` and `every` exclude each other. `start`/`end`: seconds,
    the half-open window start <= time < end on the frames' own timestamps. `max_frames`: keep the first M of
    what the rest selects. Bad values raise UsageError here, before any file is read.
    """

    fps: float | None = None
    every: int | None = None
    start: float | None = None
    end: float | None = None
    max_frames: int | None = None

    def __post_init__(self):
        if self.fps is not None and not (isinstance(self.fps, (int, float)) and math.isfinite(self.fps)
                                         and self.fps > 0):
            raise UsageError(f"--fps must be a number > 0, got {self.fps!r}", hint="e.g. --fps 1 (one frame a second)")
        if self.every is not None and (isinstance(self.every, bool) or not isinstance(self.every, int)
                                       or self.every < 1):
            raise UsageError(f"--every must be an integer >= 1, got {self.every!r}", hint="e.g. --every 10")
        if self.fps is not None and self.every is not None:
            raise UsageError("--fps and --every both choose frames; give one",
                             hint="--fps picks by time, --every by frame count")
        for key in ("start", "end"):
            v = getattr(self, key)
            if v is not None and not (isinstance(v, (int, float)) and math.isfinite(v) and v >= 0):
                raise UsageError(f"--{key} must be seconds >= 0, got {v!r}", hint=f"e.g. --{key} 2.5")
        if self.start is not None and self.end is not None and not self.start < self.end:
            raise UsageError(f"--start ({self.start:g}) must be before --end ({self.end:g})",
                             hint="the window is start <= t < end, in seconds")
        if self.max_frames is not None and (isinstance(self.max_frames, bool) or not isinstance(self.max_frames, int)
                                            or self.max_frames < 1):
            raise UsageError(f"--max-frames must be an integer >= 1, got {self.max_frames!r}")

    def given(self) -> bool:
        """Whether any flag was given (else: every frame)."""
        return any(v is not None for v in (self.fps, self.every, self.start, self.end, self.max_frames))

    def video(self) -> Sampling | None:
        """This sampling if any flag was given, else None (every frame)."""
        return self if self.given() else None

    def to_dict(self) -> dict:
        return {"fps": self.fps, "every": self.every, "start_s": self.start, "end_s": self.end,
                "max_frames": self.max_frames}


def _nearest(info: VideoInfo, t: Fraction, lo: int, hi: int) -> int:
    """Index in [lo, hi) whose time is nearest to t; ties -> the earlier frame."""
    tb = info.time_base
    j = bisect.bisect_left(info.pts, t / tb, lo, hi)  # first frame with time >= t
    if j == lo:
        return lo
    if j == hi:
        return hi - 1
    return j if info.pts[j] * tb - t < t - info.pts[j - 1] * tb else j - 1


def select_frames(info: VideoInfo, sampling: Sampling = Sampling()) -> list[int]:
    """Display indices of the frames `sampling` selects, ascending, no duplicates. Exact arithmetic on the
    container's timestamps (fractions), so 1/30-s frames and `--fps 10` meet exactly.

    InputError when the window holds no frame (e.g. --start past the end)."""
    tb = info.time_base
    lo = 0 if sampling.start is None else bisect.bisect_left(info.pts, _exact(sampling.start) / tb)
    hi = info.frame_count if sampling.end is None else bisect.bisect_left(info.pts, _exact(sampling.end) / tb)
    if lo >= hi:
        raise InputError(f"{info.path}: no frames in the window {_window(sampling)} "
                         f"(the video runs {info.start_time:g}-{info.end_time:g} s)",
                         hint="choose --start/--end inside the video")
    if sampling.every is not None:
        out = list(range(lo, hi, sampling.every))
    elif sampling.fps is not None:
        out = []
        step = 1 / _exact(sampling.fps)
        t0 = info.time_of(0) if sampling.start is None else _exact(sampling.start)
        stop = info.time_of(0) + _exact(info.duration)
        if sampling.end is not None:
            stop = min(stop, _exact(sampling.end))
        k = 0
        while True:
            t = t0 + k * step
            if t >= stop:
                break
            j = _nearest(info, t, lo, hi)
            if not out or j > out[-1]:
                out.append(j)
                if sampling.max_frames is not None and len(out) >= sampling.max_frames:
                    break
            if j + 1 >= hi:
                break
            # next target that can pick a later frame: strictly past the midpoint between j and j+1
            mid = (info.pts[j] + info.pts[j + 1]) * tb / 2
            k = max(k + 1, math.floor((mid - t0) / step) + 1)
    else:
        out = list(range(lo, hi))
    return out[: sampling.max_frames] if sampling.max_frames is not None else out


def _window(s: Sampling) -> str:
    a = "start" if s.start is None else f"{s.start:g}"
    b = "end" if s.end is None else f"{s.end:g}"
    return f"[{a}, {b}) s"


# ---- name one frame ------------------------------------------------------------------------------------------

_FRAME_REF = re.compile(r"^(?P<path>.+)@(?P<key>t|frame)=(?P<value>[^@/\\]*)$")


def parse_frame_ref(text: str) -> tuple[str, float | None, int | None]:
    """"clip.mp4@t=1.5" -> ("clip.mp4", 1.5, None); "clip.mp4@frame=12" -> ("clip.mp4", None, 12); anything
    else (including names that merely contain '@') -> (text, None, None). Bad values -> UsageError."""
    m = _FRAME_REF.match(text)
    if m is None:
        return text, None, None
    path, key, value = m["path"], m["key"], m["value"].strip()
    if key == "t":
        try:
            t = float(value)
        except ValueError:
            t = math.nan
        if not (math.isfinite(t) and t >= 0):
            raise UsageError(f"{text}: t= needs seconds >= 0, got {value!r}", hint=f"e.g. {path}@t=1.5")
        return path, t, None
    if not value.isdigit():
        raise UsageError(f"{text}: frame= needs a frame index >= 0, got {value!r}", hint=f"e.g. {path}@frame=12")
    return path, None, int(value)


# ---- decode --------------------------------------------------------------------------------------------------

def _to_image(frame, transform: Sequence[str]):
    """PyAV frame -> RGB PIL image in display orientation. swscale converts with the frame's own colour space
    and, when the stream flags it, its colour range (full-range "JPEG" YUV is not squeezed twice).
    (`to_ndarray` + `Image.fromarray` measured 2-3x faster than PyAV's `to_image`.)"""
    from PIL import Image

    kwargs = {"src_color_range": frame.color_range} if frame.color_range else {}
    img = Image.fromarray(frame.to_ndarray(format="rgb24", **kwargs), "RGB")
    for op in transform:
        img = img.transpose(Image.Transpose[op])
    return img


class _Failure(Exception):
    def __init__(self, index: int | None, reason: str):
        super().__init__(reason)
        self.index, self.reason = index, reason


def _decoded(container, stream, info: VideoInfo, seek_to: int | None) -> Iterator[tuple[int, object]]:
    """Decoded frames as (display index, av.VideoFrame), from where the demuxer stands or, with `seek_to` (a
    display index), from the keyframe at or before that frame. Raises _Failure(display index of the frame whose
    data is bad or None, reason); frames the decoder still held are yielded first."""
    import av

    if seek_to is not None:
        try:
            container.seek(info.pts[seek_to], stream=stream, backward=True, any_frame=False)
        except av.error.FFmpegError as e:
            raise _Failure(None, f"cannot seek to {info.times[seek_to]:.3f} s ({_reason(e)})") from e
    index_of = {p: i for i, p in enumerate(info.pts)}
    packets = container.demux(stream)
    while True:
        try:
            packet = next(packets)
        except StopIteration:
            return
        except av.error.FFmpegError as e:
            raise _Failure(None, f"cannot read the file ({_reason(e)})") from e
        ts = packet.pts if packet.pts is not None else packet.dts
        bad = "its data is incomplete (file cut short?)" if packet.is_corrupt else None
        frames = []
        if bad is None:
            try:
                frames = stream.decode(packet)
            except av.error.FFmpegError as e:
                bad = f"the decoder rejects its data ({_reason(e)})"
        if bad is not None:
            try:  # a threaded decoder may still hold earlier, good frames: drain it
                frames = stream.decode(None)
            except av.error.FFmpegError:
                frames = []
        for frame in frames:
            idx = index_of.get(frame.pts if frame.pts is not None else frame.dts)
            if idx is not None:  # a frame no shown packet has (edit-list pre-roll) is not one of the video's
                yield idx, frame
        if bad is not None:
            raise _Failure(index_of.get(ts) if ts is not None else None, bad)


def _advance(source: Iterator[tuple[int, object]], target: int, damage: str | None):
    """Pull decoded frames until display index `target`: its frame, or None when the decoder went past it."""
    for idx, frame in source:
        if idx == target:
            return frame
        if idx > target:
            return None
    raise _Failure(None, damage or "the file ends before this frame")


def decode_frames(path: str | Path, indices: Sequence[int], info: VideoInfo | None = None
                  ) -> Iterator[tuple[int, float, object]]:
    """Yield (index, time in s, RGB PIL.Image in display orientation) for each of `indices` (strictly ascending
    display indices), one decoded frame in memory at a time.

    Between wanted frames the decoder runs on, unless the keyframe before the next wanted frame lies more than
    SEEK_MIN_SKIP frames past the last decoded one: then it seeks to that keyframe (long stretches are never
    decoded just to be dropped). Each frame is identified by its timestamp (`info.pts`), never by counting
    after a seek; if a seek lands past the frame (open GOP), it retries from the keyframe before. Corrupt or
    missing data: the frames before are yielded, then VideoDecodeError names the first wanted frame not
    delivered; a file that `probe` found damaged raises it after its last readable frame too. `info`: a
    `probe` result, to avoid probing again.
    """
    info = info if info is not None else probe(path)
    name = info.path
    wanted = list(indices)
    for a, b in itertools.pairwise(wanted):
        if not a < b:
            raise UsageError(f"{name}: frame indices must be strictly ascending ({a} then {b})")
    if wanted and not (0 <= wanted[0] and wanted[-1] < info.frame_count):
        bad = wanted[0] if wanted[0] < 0 else wanted[-1]
        raise UsageError(f"{name}: frame {bad} does not exist (the video has {info.frame_count} frames)",
                         hint=f"frame indices run 0-{info.frame_count - 1}")
    if not wanted:
        return
    keyframes = info.keyframes if info.keyframes and info.keyframes[0] == 0 else (0, *info.keyframes)
    container, stream = _open(path)
    stream.thread_type = "AUTO"
    try:
        source: Iterator | None = None
        last = -1  # display index of the last frame decoded (or just before the keyframe sought)
        for target in wanted:
            k = bisect.bisect_right(keyframes, target) - 1
            if source is None or keyframes[k] - last > SEEK_MIN_SKIP:
                source = _decoded(container, stream, info, seek_to=None if source is None and k == 0 else keyframes[k])
            try:
                frame = _advance(source, target, info.damage)
                while frame is None:  # went past the target: start one keyframe earlier, at worst from frame 0
                    if k == 0:
                        raise _Failure(None, "the decoder skipped this frame")
                    k -= 1
                    source = _decoded(container, stream, info, seek_to=keyframes[k])
                    frame = _advance(source, target, info.damage)
            except _Failure as f:
                reason = f.reason if f.index in (None, target) else f"frame {f.index}, decoded first, fails: {f.reason}"
                raise VideoDecodeError(name, target, reason) from None
            last = target
            yield target, float(info.time_of(target)), _to_image(frame, info.transform)
        if info.damage and wanted[-1] == info.frame_count - 1:
            raise VideoDecodeError(name, info.frame_count, info.damage)
    finally:
        container.close()


def frame_at(path: str | Path, time: float | None = None, frame: int | None = None,
             info: VideoInfo | None = None) -> tuple[int, float, object]:
    """One frame: by `time` (s, nearest frame) or by display index `frame` (exactly one of them; neither -> the
    first frame). Returns (index, time in s, RGB PIL.Image in display orientation)."""
    if time is not None and frame is not None:
        raise UsageError("give a time or a frame index, not both", hint="e.g. clip.mp4@t=1.5 or clip.mp4@frame=12")
    info = info if info is not None else probe(path)
    index = info.index_at(time) if time is not None else (frame or 0)
    for got in decode_frames(path, [index], info):
        return got
    raise VideoDecodeError(info.path, index, "no frame decoded")  # pragma: no cover - decode_frames raises first
