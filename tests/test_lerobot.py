"""vitcli.lerobot on LeRobot-layout folders written here (v3.0 and v2.1), with real MP4s and parquet files.

Each camera frame shows code = camera number * 4096 + the dataset's global frame index (tests/videos.py), so a
decoded image proves it is the right camera, episode and step.
"""

from __future__ import annotations

import json
import shutil

import numpy as np
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest
from videos import (
    CAMERAS,
    code_of,
    lerobot_code,
    make_lerobot_v21,
    make_lerobot_v30,
    pattern,
)

from vitcli import lerobot, video
from vitcli.errors import InputError, UsageError

LENGTHS = (12, 9)
FPS = 10


@pytest.fixture(scope="module")
def v30(tmp_path_factory):
    return make_lerobot_v30(tmp_path_factory.mktemp("v30") / "ds", LENGTHS, fps=FPS)


@pytest.fixture(scope="module")
def v21(tmp_path_factory):
    return make_lerobot_v21(tmp_path_factory.mktemp("v21") / "ds", LENGTHS, fps=FPS)


def decoded(frames: list[lerobot.Frame]):
    """(Frame, RGB PIL.Image) for each frame: its MP4 decoded at `video_frame`, as the features pipeline reads it
    (an Item of (video, video_frame) decoded by vitcli.video.decode_frames)."""
    by_file: dict[str, list[lerobot.Frame]] = {}
    for f in frames:
        by_file.setdefault(f.video, []).append(f)
    for path, group in by_file.items():
        at = {}
        for idx, _, img in video.decode_frames(path, sorted({f.video_frame for f in group}), lerobot.video_info(path)):
            at[idx] = img
        yield from ((f, at[f.video_frame]) for f in group)


def check_frames_and_pixels(ds: lerobot.Dataset, frames: list[lerobot.Frame]) -> None:
    """Every frame's bookkeeping and its decoded image agree with what the writer put there."""
    starts = {0: 0, 1: LENGTHS[0]}
    for f in frames:
        assert f.index == starts[f.episode] + f.frame_index
        assert f.timestamp == float(np.float32(f.frame_index / FPS).astype(str))  # lerobot stores float32
    pictures = list(decoded(frames))
    assert sorted((f.episode, f.index, f.camera) for f, _ in pictures) == \
        sorted((f.episode, f.index, f.camera) for f in frames)
    for f, img in pictures:
        code = lerobot_code(ds.cameras.index(f.camera), f.index)
        assert code_of(img) == code and np.array_equal(np.asarray(img), pattern(code)), f


def test_v30_two_episodes_share_one_mp4_per_camera(v30):
    ds = lerobot.open_dataset(v30)
    assert (ds.version, ds.fps, ds.cameras, ds.total_frames) == ("v3.0", 10.0, CAMERAS, 21)
    assert [(e.index, e.length, e.from_index) for e in ds.episodes] == [(0, 12, 0), (1, 9, 12)]
    ep1 = ds.episode(1).videos[CAMERAS[1]]
    assert ep1.path == str(v30 / f"videos/{CAMERAS[1]}/chunk-000/file-000.mp4")
    assert (ep1.from_s, ep1.to_s) == pytest.approx((1.2, 2.1))
    frames = lerobot.frames(ds)
    assert len(frames) == 2 * 21
    # ordered by episode, step, camera; both episodes in the same file per camera, episode 1 after episode 0
    assert [(f.episode, f.frame_index, f.camera) for f in frames[:3]] == \
        [(0, 0, CAMERAS[0]), (0, 0, CAMERAS[1]), (0, 1, CAMERAS[0])]
    for f in frames:
        assert f.video == str(v30 / f"videos/{f.camera}/chunk-000/file-000.mp4")
        assert f.video_frame == f.index  # one file holds all episodes back to back
        assert f.video_time == pytest.approx((0.0 if f.episode == 0 else 1.2) + f.timestamp, abs=1e-4)
    last = frames[-1]
    assert (last.episode, last.index, last.frame_index, last.timestamp) == (1, 20, 8, 0.8)
    check_frames_and_pixels(ds, frames)


def test_v30_episodes_in_separate_files(tmp_path):
    root = make_lerobot_v30(tmp_path / "ds", (5, 4, 6), fps=FPS, episodes_per_video=2)
    ds = lerobot.open_dataset(root)
    frames = lerobot.frames(ds, cameras=["top"], episodes=[1, 2])
    files = {f.episode: f.video.rsplit("/", 1)[-1] for f in frames}
    assert files == {1: "file-000.mp4", 2: "file-001.mp4"}  # episode 2 starts a new file at t=0
    assert [f.video_frame for f in frames if f.episode == 1] == list(range(5, 9))
    assert [f.video_frame for f in frames if f.episode == 2] == list(range(6))
    for f, img in decoded(frames):
        assert code_of(img) == lerobot_code(0, f.index)


def test_v21_one_mp4_per_camera_per_episode(v21):
    ds = lerobot.open_dataset(v21)
    assert (ds.version, ds.cameras, [e.length for e in ds.episodes]) == ("v2.1", CAMERAS, list(LENGTHS))
    frames = lerobot.frames(ds)
    assert len(frames) == 42
    for f in frames:
        assert f.video == str(v21 / f"videos/chunk-000/{f.camera}/episode_{f.episode:06d}.mp4")
        assert f.video_frame == f.frame_index and f.video_time == pytest.approx(f.timestamp, abs=1e-6)
    check_frames_and_pixels(ds, frames)


def test_choose_cameras_and_episodes(v30):
    ds = lerobot.open_dataset(v30)
    frames = lerobot.frames(ds, cameras=["wrist"], episodes=[1])
    assert {f.camera for f in frames} == {CAMERAS[1]} and [f.index for f in frames] == list(range(12, 21))
    assert lerobot.resolve_cameras(ds, ["observation.images.top", "top"]) == [CAMERAS[0]]
    with pytest.raises(UsageError) as e:
        lerobot.frames(ds, cameras=["side"])
    assert "side" in e.value.message and CAMERAS[0] in e.value.hint and CAMERAS[1] in e.value.hint
    with pytest.raises(UsageError) as e:
        lerobot.frames(ds, episodes=[1, 5, 6, 9])
    assert "5-6,9" in e.value.message and "0-1" in e.value.hint


def test_a_steps_cameras_are_consecutive_in_the_asked_order(v30):
    """--fuse-cameras reads each run of len(cameras) frames as one step: they must share the step and follow the
    camera order given."""
    ds = lerobot.open_dataset(v30)
    for cameras in (None, [CAMERAS[1], CAMERAS[0]]):
        frames = lerobot.frames(ds, cameras=cameras)
        steps = [frames[i:i + 2] for i in range(0, len(frames), 2)]
        assert len(steps) == 21 and [s[0].index for s in steps] == list(range(21))
        for step in steps:
            assert [f.camera for f in step] == list(cameras or CAMERAS)
            assert len({(f.episode, f.index, f.timestamp) for f in step}) == 1


def test_parse_episodes():
    assert lerobot.parse_episodes("0-9,12") == [*range(10), 12]
    assert lerobot.parse_episodes(" 3 , 1-2,2") == [1, 2, 3]
    assert lerobot.parse_episodes("7") == [7]
    for bad in ("", "a", "5-3", "1,,2", "-1", "1-", "1.5", "0-2;4"):
        with pytest.raises(UsageError):
            lerobot.parse_episodes(bad)


def _shift_from_timestamp(root, seconds: float) -> None:
    path = root / "meta/episodes/chunk-000/file-000.parquet"
    t = pq.read_table(path)
    col = f"videos/{CAMERAS[0]}/from_timestamp"
    i = t.schema.get_field_index(col)
    pq.write_table(t.set_column(i, col, pc.add(t[col], seconds)), path)


def test_timestamps_are_matched_within_lerobots_tolerance(tmp_path):
    near = make_lerobot_v30(tmp_path / "near", LENGTHS, fps=FPS)
    _shift_from_timestamp(near, 5e-5)  # < 1e-4: still the same frames
    frames = lerobot.frames(lerobot.open_dataset(near))
    assert all(f.video_frame == f.index for f in frames)
    far = make_lerobot_v30(tmp_path / "far", LENGTHS, fps=FPS)
    _shift_from_timestamp(far, 0.02)  # between two frames: lerobot refuses, so does vitcli
    with pytest.raises(InputError) as e:
        lerobot.frames(lerobot.open_dataset(far))
    assert "episode 0" in e.value.message and CAMERAS[0] in e.value.message and "0.020000 s" in e.value.message
    # a looser tolerance accepts the nearest frame
    assert len(lerobot.frames(lerobot.open_dataset(far), cameras=["top"], tolerance_s=0.03)) == 21


def test_damaged_or_foreign_folders_are_input_errors(tmp_path, v21):
    with pytest.raises(InputError, match="no meta/info.json"):
        lerobot.open_dataset(tmp_path)
    with pytest.raises(InputError, match="no such directory"):
        lerobot.open_dataset(tmp_path / "missing")
    info = json.loads((v21 / "meta/info.json").read_text())
    old = tmp_path / "old"
    (old / "meta").mkdir(parents=True)
    (old / "meta/info.json").write_text(json.dumps({**info, "codebase_version": "v1.6"}))
    with pytest.raises(InputError, match="v1.6 is not supported"):
        lerobot.open_dataset(old)
    images = tmp_path / "images"
    (images / "meta").mkdir(parents=True)
    feats = {k: ({**v, "dtype": "image"} if v["dtype"] == "video" else v) for k, v in info["features"].items()}
    (images / "meta/info.json").write_text(json.dumps({**info, "features": feats}))
    with pytest.raises(InputError, match="no video cameras"):
        lerobot.open_dataset(images)
    broken = make_lerobot_v21(tmp_path / "broken", (3,), fps=FPS)
    video_file = broken / f"videos/chunk-000/{CAMERAS[1]}/episode_000000.mp4"
    video_file.unlink()
    with pytest.raises(InputError) as e:
        lerobot.frames(lerobot.open_dataset(broken))
    assert str(video_file) in e.value.message


def test_tasks_are_read_when_the_episode_metadata_has_them(tmp_path, v30):
    assert [e.tasks for e in lerobot.open_dataset(v30).episodes] == [("pick the cube",)] * 2
    copy = tmp_path / "ds"
    shutil.copytree(v30 / "meta", copy / "meta")  # opening reads the metadata only
    path = copy / "meta/episodes/chunk-000/file-000.parquet"
    pq.write_table(pq.read_table(path).drop_columns(["tasks"]), path)
    ds = lerobot.open_dataset(copy)
    assert [(e.index, e.length, e.tasks) for e in ds.episodes] == [(0, 12, ()), (1, 9, ())]


def test_damaged_episode_metadata_is_an_input_error_naming_the_file(tmp_path, v30, v21):
    v3 = tmp_path / "v3"
    shutil.copytree(v30 / "meta", v3 / "meta")
    parquet = v3 / "meta/episodes/chunk-000/file-000.parquet"
    parquet.write_bytes(b"PAR1 this is not a parquet file")
    with pytest.raises(InputError) as e:
        lerobot.open_dataset(v3)
    assert str(parquet) in e.value.message and "episode metadata" in e.value.message
    assert "metadata is damaged" in e.value.hint
    v2 = tmp_path / "v2"
    shutil.copytree(v21 / "meta", v2 / "meta")
    jsonl = v2 / "meta/episodes.jsonl"
    lines = jsonl.read_text().splitlines()
    for broken, words in ((json.dumps({"episode_index": 1, "tasks": []}), ["line 2 has no length"]),
                          (json.dumps({"length": 9}), ["line 2 has no episode_index"]),
                          (json.dumps([1, 9]), ["line 2 has no episode_index and no length"]),
                          (json.dumps({"episode_index": 1, "length": "nine"}), ["line 2", "whole numbers"])):
        jsonl.write_text("\n".join([lines[0], broken]) + "\n")
        with pytest.raises(InputError) as e:
            lerobot.open_dataset(v2)
        assert str(jsonl) in e.value.message and all(w in e.value.message for w in words), e.value.message
        assert "metadata is damaged" in e.value.hint
    jsonl.write_text("\n".join(lines) + "\n")  # intact again: it opens
    assert [(ep.index, ep.length) for ep in lerobot.open_dataset(v2).episodes] == [(0, 12), (1, 9)]


def test_to_dict(v30):
    ds = lerobot.open_dataset(v30)
    assert ds.to_dict() == {"root": str(v30), "version": "v3.0", "fps": 10.0, "cameras": list(CAMERAS),
                            "episodes": 2, "total_frames": 21, "robot_type": "test_arm"}
    f = lerobot.frames(ds, episodes=[1])[0]
    assert f.to_dict()["video_frame"] == 12 and f.to_dict()["timestamp_s"] == 0.0
