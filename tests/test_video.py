"""vitcli.video on real files written by PyAV: containers, timestamps, sampling, decoding, rotation, damage.

Every frame carries its number painted in (tests/videos.py), so a decoded frame proves its own identity, and
lossless encodes prove the pixels too (decoded == written).
"""

from __future__ import annotations

import random
import subprocess
import sys
from fractions import Fraction

import av
import numpy as np
import pytest
from videos import code_of, make_video, pattern, truncate

from vitcli import video
from vitcli.errors import InputError, UsageError
from vitcli.video import Sampling, VideoDecodeError, decode_frames, probe, select_frames

CONTAINERS = [".mp4", ".mov", ".mkv", ".webm", ".avi"]
VFR_TIMES = [0.0, 0.05, 0.1, 0.3, 0.31, 0.5, 1.0, 1.04]


@pytest.fixture(scope="module")
def vids(tmp_path_factory):
    d = tmp_path_factory.mktemp("videos")
    out = {suffix: make_video(d / f"clip{suffix}", 30, fps=30, gop=10) for suffix in CONTAINERS}
    out["long"] = make_video(d / "long.mp4", 100, fps=30, gop=10)
    out["bframes"] = make_video(d / "bframes.mp4", 90, fps=30, gop=12, bframes=3)
    out["vfr"] = make_video(d / "vfr.mkv", len(VFR_TIMES), vfr_times=VFR_TIMES)
    out["vfr_mp4"] = make_video(d / "vfr.mp4", len(VFR_TIMES), vfr_times=VFR_TIMES)
    return out


def exact(img, code: int) -> bool:
    return np.array_equal(np.asarray(img), pattern(code))


# ---- recognise -----------------------------------------------------------------------------------------------

@pytest.mark.parametrize("suffix", CONTAINERS)
def test_is_video_by_content_for_each_container(vids, tmp_path, suffix):
    assert video.is_video(vids[suffix])
    renamed = tmp_path / "no_extension.bin"  # the container decides, not the name
    renamed.write_bytes(vids[suffix].read_bytes())
    assert video.is_video(renamed)


def test_is_video_rejects_images_text_audio_and_missing(tmp_path):
    from conftest import DATA

    fake = tmp_path / "fake.mp4"
    fake.write_text("not a video at all")
    heic = tmp_path / "photo.mp4"  # ISO BMFF, but an image brand
    heic.write_bytes(b"\x00\x00\x00\x18ftypheic\x00\x00\x00\x00mif1heic")
    for p in (DATA / "chelsea.jpg", DATA / "camera-gray.png", fake, heic, tmp_path / "missing.mp4"):
        assert not video.is_video(p), p
    assert video.sniff_container(b"\x1a\x45\xdf\xa3" + b"\x00" * 8) == "matroska"
    assert video.sniff_container(b"RIFF\x00\x00\x00\x00AVI LIST") == "avi"
    assert video.sniff_container(b"RIFF\x00\x00\x00\x00WAVEfmt ") is None
    assert video.sniff_container(b"\x00\x00\x00\x14ftypqt  \x00\x00") == "mp4"


def test_the_input_seam_recognises_videos_with_this_module(vids, tmp_path):
    """`inputs.looks_like_video`: a video suffix, else (not an image suffix) `video.is_video` on the content."""
    from conftest import DATA

    from vitcli import inputs

    assert inputs.VIDEO_SUFFIXES is video.VIDEO_SUFFIXES
    renamed = tmp_path / "clip.bin"
    renamed.write_bytes(vids[".mkv"].read_bytes())
    named = tmp_path / "clip.mp4"
    named.write_text("not a video, but named as one: probe says why later")
    disguised = tmp_path / "clip.png"  # an image suffix is taken at its word
    disguised.write_bytes(vids[".mp4"].read_bytes())
    text = tmp_path / "notes.txt"
    text.write_text("hello")
    cases = {vids[".webm"]: True, renamed: True, named: True, disguised: False, text: False,
             DATA / "chelsea.jpg": False, tmp_path / "missing.dat": False}
    assert {p: inputs.looks_like_video(str(p)) for p in cases} == cases


# ---- probe ---------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("suffix", CONTAINERS)
def test_probe_reads_count_times_size_for_each_container(vids, suffix):
    info = probe(vids[suffix])
    assert info.frame_count == 30
    # times from the container's own timestamps: exact 1/30 s steps, or rounded to its 1 ms time base
    expected = [i / 30 for i in range(30)] if info.time_base != Fraction(1, 1000) else \
        [round(i * 1000 / 30) / 1000 for i in range(30)]
    assert info.times == pytest.approx(expected, abs=1e-12)
    assert info.duration == pytest.approx(1.0, abs=1e-3)
    assert info.fps == pytest.approx(30, rel=1e-3)
    assert (info.width, info.height, info.rotation, info.damage) == (64, 48, 0, None)
    assert info.keyframes[0] == 0 and len(info.keyframes) >= 3  # gop 10
    assert info.codec == {".mp4": "h264", ".mov": "h264", ".mkv": "ffv1", ".webm": "vp9", ".avi": "ffv1"}[suffix]


@pytest.mark.parametrize("suffix", CONTAINERS)
def test_lossless_decode_is_exact_in_every_container(vids, suffix):
    got = list(decode_frames(vids[suffix], range(30)))
    assert [g[0] for g in got] == list(range(30))
    assert all(exact(img, i) for i, _, img in got)
    assert got[0][2].mode == "RGB" and got[0][2].size == (64, 48)


def test_probe_sorts_b_frames_into_display_order(vids):
    p = vids["bframes"]
    with av.open(str(p)) as c:  # the file really has B-frames: packets arrive out of display order
        pts = [pk.pts for pk in c.demux(c.streams.video[0]) if pk.size]
    assert pts != sorted(pts)
    info = probe(p)
    assert info.pts == tuple(sorted(pts))
    assert info.times == pytest.approx([i / 30 for i in range(90)], abs=1e-12)
    rng = random.Random(0)
    for _ in range(12):  # random sparse and dense selections, with seeks across B-frame GOPs
        sel = sorted(rng.sample(range(90), rng.randint(1, 30)))
        got = list(decode_frames(p, sel, info))
        assert [i for i, _, _ in got] == sel
        assert [code_of(img) for _, _, img in got] == sel
        # near-lossless (x264 qp 1 on RGB): within 1 level of what was written
        assert max(np.abs(np.asarray(img, np.int16) - pattern(i)).max() for i, _, img in got) <= 1


def test_probe_errors_name_the_file_and_reason(tmp_path):
    from conftest import DATA

    empty = tmp_path / "empty.mp4"
    empty.write_bytes(b"")
    text = tmp_path / "notes.mp4"
    text.write_text("hello " * 100)
    audio = tmp_path / "sound.mka"
    with av.open(str(audio), "w") as out:
        s = out.add_stream("flac", rate=8000, layout="mono")
        frame = av.AudioFrame.from_ndarray(np.zeros((1, 800), np.int16), format="s16", layout="mono")
        frame.sample_rate, frame.pts = 8000, 0
        out.mux(s.encode(frame))
        out.mux(s.encode(None))
    cases = {tmp_path / "nope.mp4": "no such file", empty: "empty file", text: "not a video",
             DATA / "chelsea.jpg": "still image", DATA / "camera-gray.png": "still image", audio: "no video stream", tmp_path: "is a directory"}
    for path, words in cases.items():
        with pytest.raises(InputError) as e:
            probe(path)
        assert str(path) in e.value.message and words in e.value.message, e.value.message
        assert e.value.hint


# ---- select frames -------------------------------------------------------------------------------------------

def nearest_reference(times: list[Fraction], targets: list[Fraction]) -> list[int]:
    """Independent reference: for each target, the frame of least |t - target| (first on ties), deduplicated."""
    out: list[int] = []
    for t in targets:
        j = min(range(len(times)), key=lambda i: (abs(times[i] - t), i))
        if j not in out:
            out.append(j)
    return out


def test_select_every_frame_by_default_and_every_n(vids):
    info = probe(vids["long"])
    assert select_frames(info) == list(range(100))
    assert select_frames(info, Sampling(every=7)) == list(range(0, 100, 7))
    assert select_frames(info, Sampling(every=7, max_frames=3)) == [0, 7, 14]
    # window start <= t < end, half-open: frame 15 is at exactly 0.5 s, frame 30 at exactly 1.0 s
    assert select_frames(info, Sampling(start=0.5, end=1.0)) == list(range(15, 30))
    assert select_frames(info, Sampling(start=0.51, end=1.0)) == list(range(16, 30))
    assert select_frames(info, Sampling(every=4, start=0.5, end=1.0)) == [15, 19, 23, 27]
    assert select_frames(info, Sampling(start=3.0)) == [90 + i for i in range(10)]


def test_select_fps_on_constant_rate(vids):
    info = probe(vids["long"])  # 100 frames at exactly i/30 s
    assert select_frames(info, Sampling(fps=10)) == list(range(0, 100, 3))
    assert select_frames(info, Sampling(fps=1)) == [0, 30, 60, 90]
    assert select_frames(info, Sampling(fps=0.5)) == [0, 60]
    assert select_frames(info, Sampling(fps=10, start=1.0, end=2.0)) == list(range(30, 60, 3))
    assert select_frames(info, Sampling(fps=2, max_frames=3)) == [0, 15, 30]
    assert select_frames(info, Sampling(fps=60)) == list(range(100))  # faster than the video: each frame once
    times = [Fraction(i, 30) for i in range(100)]
    for fps in (7, 12.5, 29.97, 0.7):  # off-grid rates: same as the written-out nearest rule
        step = 1 / Fraction(repr(float(fps)))
        targets = [k * step for k in range(1000) if k * step < Fraction(100, 30)]
        assert select_frames(info, Sampling(fps=fps)) == nearest_reference(times, targets), fps


def test_select_fps_on_a_millisecond_time_base(vids):
    # MKV stores 1/30 s steps rounded to 1 ms (frame 10 at 0.333 s, before 1/3 s): "nearest" still picks 0, 10, 20
    info = probe(vids[".mkv"])
    assert info.times[10] == 0.333
    assert select_frames(info, Sampling(fps=3)) == [0, 10, 20]


def test_select_on_variable_frame_rate(vids):
    for key in ("vfr", "vfr_mp4"):
        info = probe(vids[key])
        assert info.times == pytest.approx(VFR_TIMES, abs=1e-9)
        assert info.fps == pytest.approx(8 / info.duration)
        # targets 0, 0.1, ..., 1.0: 0.2 ties between 0.1 and 0.3 -> the earlier (already taken); 0.4 -> 0.31;
        # 0.6, 0.7 -> 0.5 (taken); 0.8, 0.9, 1.0 -> 1.0
        assert select_frames(info, Sampling(fps=10, end=1.05)) == [0, 2, 3, 4, 5, 6]
        assert select_frames(info, Sampling(start=0.1, end=0.5)) == [2, 3, 4]
        assert select_frames(info, Sampling(every=3)) == [0, 3, 6]
        assert select_frames(info, Sampling(fps=2)) == [0, 5, 6]  # 0, 0.5, 1.0
        times = [Fraction(t).limit_denominator(1000) for t in VFR_TIMES]
        targets = [Fraction(k, 4) for k in range(5)]  # 0, 0.25, ..., 1.0 (end ~1.07 s)
        assert select_frames(info, Sampling(fps=4)) == nearest_reference(times, targets)


@pytest.mark.parametrize("kwargs", [{"fps": 0}, {"fps": -1}, {"fps": float("nan")}, {"fps": float("inf")},
                                    {"every": 0}, {"every": 1.5}, {"fps": 1, "every": 2}, {"start": -1},
                                    {"start": 2, "end": 1}, {"start": 1, "end": 1}, {"max_frames": 0}])
def test_sampling_rejects_bad_values(kwargs):
    with pytest.raises(UsageError):
        Sampling(**kwargs)


def test_select_empty_window_is_an_input_error(vids):
    info = probe(vids["long"])
    with pytest.raises(InputError, match="no frames in the window"):
        select_frames(info, Sampling(start=10))


# ---- frame references ----------------------------------------------------------------------------------------

def test_parse_frame_ref():
    assert video.parse_frame_ref("clip.mp4@t=1.5") == ("clip.mp4", 1.5, None)
    assert video.parse_frame_ref("dir/clip.mp4@frame=12") == ("dir/clip.mp4", None, 12)
    assert video.parse_frame_ref("clip.mp4") == ("clip.mp4", None, None)
    assert video.parse_frame_ref("me@home/clip.mp4") == ("me@home/clip.mp4", None, None)
    assert video.parse_frame_ref("a@b.mp4@t=0") == ("a@b.mp4", 0.0, None)
    for bad in ("clip.mp4@t=abc", "clip.mp4@t=-1", "clip.mp4@frame=-2", "clip.mp4@frame=1.5", "clip.mp4@t="):
        with pytest.raises(UsageError):
            video.parse_frame_ref(bad)


def test_frame_at_by_time_and_index(vids):
    p = vids["long"]
    assert video.frame_at(p, frame=42)[0] == 42 and code_of(video.frame_at(p, frame=42)[2]) == 42
    i, t, img = video.frame_at(p, time=1.5)
    assert (i, t, code_of(img)) == (45, 1.5, 45)
    assert video.frame_at(p, time=1.51)[0] == 45  # nearest
    assert video.frame_at(p, time=1.52)[0] == 46
    with pytest.raises(UsageError, match="outside the video"):
        video.frame_at(p, time=99)
    with pytest.raises(UsageError, match="does not exist"):
        video.frame_at(p, frame=100)


# ---- decode --------------------------------------------------------------------------------------------------

@pytest.fixture
def counted(monkeypatch):
    """Count frames the decoder produced and the seeks made (the real decoder runs; only counted)."""
    stats = {"decoded": 0, "seeks": []}
    real = video._decoded

    def wrapper(container, stream, info, seek_to):
        if seek_to is not None:
            stats["seeks"].append(seek_to)
        for item in real(container, stream, info, seek_to):
            stats["decoded"] += 1
            yield item

    monkeypatch.setattr(video, "_decoded", wrapper)
    return stats


def test_sparse_decode_seeks_instead_of_decoding_through(vids, counted):
    p = vids["long"]  # 100 frames, keyframe every 10
    info = probe(p)
    assert info.keyframes == tuple(range(0, 100, 10))
    got = list(decode_frames(p, [3, 95], info))
    assert [(i, code_of(img)) for i, _, img in got] == [(3, 3), (95, 95)]
    assert all(exact(img, i) for i, _, img in got)
    assert counted["seeks"] == [90]  # jumped to the keyframe before 95
    assert counted["decoded"] <= 4 + 6 + 8  # frames 0-3, 90-95, plus what a threaded decoder runs ahead


def test_dense_decode_runs_through_without_seeking(vids, counted):
    p = vids["long"]
    sel = list(range(0, 100, 2))
    got = list(decode_frames(p, sel))
    assert [i for i, _, _ in got] == sel and all(exact(img, i) for i, _, img in got)
    assert [t for _, t, _ in got] == pytest.approx([i / 30 for i in sel])
    assert counted["seeks"] == []


def test_a_seek_that_lands_past_the_frame_retries_one_keyframe_earlier(vids, monkeypatch):
    # Some demuxers (MPEG-TS, broken indexes) land after the keyframe asked for. Simulate that on the real
    # decoder: the first source after the first seek loses its first 6 frames (90-95).
    p = vids["long"]
    real, seeks = video._decoded, []

    def landing_late(container, stream, info, seek_to):
        seeks.append(seek_to)
        frames = real(container, stream, info, seek_to)
        if len(seeks) == 1:
            for _ in range(6):
                next(frames)
        yield from frames

    monkeypatch.setattr(video, "_decoded", landing_late)
    got = list(decode_frames(p, [95, 97]))
    assert seeks == [90, 80] and [(i, code_of(img)) for i, _, img in got] == [(95, 95), (97, 97)]

    def never_gives_95(container, stream, info, seek_to):
        yield from ((i, f) for i, f in real(container, stream, info, seek_to) if i != 95)

    monkeypatch.setattr(video, "_decoded", never_gives_95)
    with pytest.raises(VideoDecodeError) as e:
        list(decode_frames(p, [95]))
    assert e.value.frame == 95 and "skipped" in e.value.reason


def test_open_gop_leading_frames_decode_exactly(tmp_path):
    # x264 open GOP: keyframe 10 is decoded before frame 9 (a leading B-frame that needs the previous GOP)
    p = tmp_path / "open_gop.mp4"
    with av.open(str(p), "w") as out:
        s = out.add_stream("libx264rgb", rate=30, options={"qp": "1", "bf": "3", "g": "10",
                                                            "x264-params": "open-gop=1:scenecut=0:b-adapt=0"})
        s.width, s.height, s.pix_fmt = 64, 48, "rgb24"
        for i in range(60):
            frame = av.VideoFrame.from_ndarray(pattern(i), format="rgb24")
            frame.pts, frame.time_base = i, Fraction(1, 30)
            out.mux(s.encode(frame))
        out.mux(s.encode(None))
    with av.open(str(p)) as c:
        order = [pk.pts for pk in c.demux(c.streams.video[0]) if pk.size]
    assert order.index(10 * 512) < order.index(9 * 512)  # really open: 9 comes after its keyframe 10
    info = probe(p)
    assert info.keyframes == (0, 10, 20, 30, 40, 50)
    for sel in ([9], [10], [9, 10], [19, 29, 39], [1, 49], [8, 9, 58, 59]):
        got = list(decode_frames(p, sel, info))
        assert [(i, code_of(img)) for i, _, img in got] == [(i, i) for i in sel]
        assert max(np.abs(np.asarray(img, np.int16) - pattern(i)).max() for i, _, img in got) <= 1


def test_decode_validates_indices(vids):
    p = vids["long"]
    with pytest.raises(UsageError, match="ascending"):
        list(decode_frames(p, [5, 3]))
    with pytest.raises(UsageError, match="does not exist"):
        list(decode_frames(p, [0, 100]))
    assert list(decode_frames(p, [])) == []


@pytest.mark.parametrize("mirror", [False, True])
@pytest.mark.parametrize("rotation", [0, 90, 180, 270])
def test_display_matrix_gives_display_orientation(tmp_path, rotation, mirror):
    # all 8 orientations a display matrix can hold (the EXIF set): turn `rotation` clockwise, then mirror
    p = make_video(tmp_path / "phone.mp4", 6, rotation=rotation, mirror=mirror)
    info = probe(p)
    if not mirror:
        assert info.rotation == rotation
    assert (info.width, info.height) == ((48, 64) if rotation in (90, 270) else (64, 48))
    for i, _, img in decode_frames(p, [0, 5], info):
        shown = np.rot90(pattern(i), k=-rotation // 90)
        shown = shown[:, ::-1] if mirror else shown
        assert img.size == (info.width, info.height)
        assert np.array_equal(np.asarray(img), shown)


def test_truncated_mp4_yields_good_frames_then_names_the_failing_frame(tmp_path):
    p = make_video(tmp_path / "rec.mp4", 60, gop=10, faststart=True)  # index first: survives a cut
    cut = truncate(p, 0.6)
    info = probe(cut)
    assert info.damage and "60 frames" in info.damage
    good = []
    with pytest.raises(VideoDecodeError) as e:
        for i, _, img in decode_frames(cut, range(info.frame_count), info):
            assert exact(img, i)
            good.append(i)
    assert good == list(range(len(good))) and 25 <= len(good) < 60
    assert e.value.frame == len(good) and e.value.path == str(cut)
    assert f"frame {len(good)}" in e.value.message and str(cut) in e.value.message
    assert isinstance(e.value, InputError)


def test_truncated_mkv_raises_after_its_last_readable_frame(tmp_path):
    cut = truncate(make_video(tmp_path / "rec.mkv", 60, gop=10), 0.6)
    info = probe(cut)
    assert info.damage and "2.000 s" in info.damage
    got = []
    with pytest.raises(VideoDecodeError) as e:
        got.extend(i for i, _, img in decode_frames(cut, range(info.frame_count), info) if exact(img, i))
    assert got == list(range(info.frame_count)) and e.value.frame == info.frame_count
    # frames short of the end decode without complaint
    assert [i for i, _, _ in decode_frames(cut, [0, 10], info)] == [0, 10]


def test_mp4_cut_before_its_index_is_an_input_error(tmp_path):
    cut = truncate(make_video(tmp_path / "rec.mp4", 30), 0.6)  # moov at the end: lost
    with pytest.raises(InputError, match="moov"):
        probe(cut)


def test_video_module_is_torch_free():
    code = ("import sys, vitcli.video, vitcli.lerobot, vitcli.inputs; "
            "print(sorted(m for m in ('torch', 'numpy', 'PIL', 'av', 'pyarrow') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
