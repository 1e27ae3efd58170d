"""Videos and LeRobot episodes as inputs of `features` and `classify` (and one frame for single-image commands):
every sampled frame's features equal those of the same frame saved as an image, rows say where they came
from, a broken video keeps its good frames, resume mid-video gives the same bytes."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
from PIL import Image

from conftest import DATA
from videos import CAMERAS, lerobot_code, make_lerobot_v21, make_lerobot_v30, make_video, pattern, truncate
from vitcli import video


@pytest.fixture(scope="module")
def clip(tmp_path_factory):
    """A lossless 24-frame MP4 at 12 fps (decoded frames equal the frames written) with a keyframe every 6."""
    folder = tmp_path_factory.mktemp("clip")
    return make_video(folder / "clip.mp4", 24, fps=12, gop=6)


def run_features(cli, tmp_path, inputs, model, *args, name="f.npy"):
    out = tmp_path / name
    r = cli("features", *inputs, "--model", f"local-dir:{model}", "-o", out, "--device", "cpu", "--batch-size",
            "4", *args)
    return r, out


def test_every_sampled_frame_equals_the_frame_saved_as_an_image(cli, tmp_path, clip, tiny_dir):
    r, out = run_features(cli, tmp_path, [clip], tiny_dir, "--every", "5", "--mode", "all")
    assert r.exit_code == 0, r.stderr
    side = json.loads(out.with_suffix(".json").read_text())
    frames = [0, 5, 10, 15, 20]
    assert [row["frame"] for row in side["rows"]] == frames
    assert [row["time"] for row in side["rows"]] == pytest.approx([f / 12 for f in frames])
    assert {row["source"] for row in side["rows"]} == {str(clip)} and "images" not in side
    pngs = tmp_path / "pngs"
    pngs.mkdir()
    for f in frames:  # the same frames, written as images (lossless: exactly what the video holds)
        Image.fromarray(pattern(f)).save(pngs / f"{f:02d}.png")
    r2, out2 = run_features(cli, tmp_path, [pngs], tiny_dir, "--mode", "all", name="png.npy")
    assert r2.exit_code == 0, r2.stderr
    assert np.allclose(np.load(out), np.load(out2), atol=1e-5)


@pytest.mark.parametrize("args,frames", [(["--fps", "4"], [0, 3, 6, 9, 12, 15, 18, 21]),
                                         (["--start", "0.5", "--end", "1.0"], [6, 7, 8, 9, 10, 11]),
                                         (["--every", "4", "--max-frames", "3"], [0, 4, 8])])
def test_sampling_picks_the_frames_vitcli_video_selects(cli, tmp_path, clip, tiny_dir, args, frames):
    r, out = run_features(cli, tmp_path, [clip], tiny_dir, *args, "--mode", "cls", "--json")
    assert r.exit_code == 0, r.stderr
    got = [row["frame"] for row in r.json()["rows"]]
    info = video.probe(clip)
    opts = {"--fps": "fps", "--start": "start", "--end": "end", "--every": "every", "--max-frames": "max_frames"}
    kw = {opts[a]: (int(v) if a in ("--every", "--max-frames") else float(v)) for a, v in zip(args[::2], args[1::2])}
    assert got == frames == video.select_frames(info, video.Sampling(**kw))


def test_variable_frame_rate_rows_carry_the_real_times(cli, tmp_path, tiny_dir):
    times = [0.0, 0.1, 0.15, 0.6, 0.65, 1.4]
    v = make_video(tmp_path / "vfr.mkv", 6, vfr_times=times)
    r, out = run_features(cli, tmp_path, [v], tiny_dir, "--fps", "2", "--mode", "cls", "--json")
    assert r.exit_code == 0, r.stderr
    rows = r.json()["rows"]
    want = video.select_frames(video.probe(v), video.Sampling(fps=2))
    assert [row["frame"] for row in rows] == want and [row["time"] for row in rows] == pytest.approx(
        [times[f] for f in want])


def test_a_truncated_video_keeps_its_good_frames_and_reports_where_it_broke(cli, tmp_path, tiny_dir):
    whole = make_video(tmp_path / "long.mp4", 48, fps=12, gop=6, faststart=True)  # its index first
    cut = truncate(whole, 0.5)
    info = video.probe(cut)
    r, out = run_features(cli, tmp_path, [cut, DATA / "chelsea.jpg"], tiny_dir, "--mode", "cls")
    assert r.exit_code == 1
    side = json.loads(out.with_suffix(".json").read_text())
    (skip,) = side["skipped"]
    assert info.damage and skip["source"] == str(cut) and skip["frame"] > 0
    assert skip.get("rows", 1) == info.frame_count - skip["frame"]  # every frame from there on is lost
    assert [row["frame"] for row in side["rows"]] == [*range(skip["frame"]), None]  # good frames, then the photo
    assert f"Skipped: {cut} (frame {skip['frame']})" in r.stderr
    assert f"{info.frame_count - skip['frame']} of {info.frame_count + 1} inputs could not be read" in r.stderr


def test_an_unreadable_video_is_skipped_not_fatal(cli, tmp_path, tiny_dir):
    bad = tmp_path / "bad.mp4"
    bad.write_bytes(b"\x00\x00\x00\x18ftypmp42" + b"\x00" * 100)
    r, out = run_features(cli, tmp_path, [bad, DATA / "chelsea.jpg"], tiny_dir, "--mode", "cls", "--json")
    assert r.exit_code == 1 and r.json()["shape"][0] == 1
    assert r.json()["skipped"][0]["source"] == str(bad)


def test_resume_mid_video_is_byte_identical(cli, tmp_path, clip, tiny_dir):
    from test_features import InterruptAfter

    from vitcli.commands.features import FeaturesRequest, run_features as run
    from vitcli.errors import Interrupted
    from vitcli.progress import Reporter
    from vitcli.requests import ModelRequest, RunOptions

    class Interrupting(Reporter):
        def progress(self):
            return InterruptAfter(3)

    clean = tmp_path / "clean.npy"
    args = [clip, "--model", f"local-dir:{tiny_dir}", "--device", "cpu", "--batch-size", "4", "--mode", "all"]
    assert cli("features", *args, "-o", clean).exit_code == 0
    target = tmp_path / "resumed.npy"
    req = FeaturesRequest(inputs=(str(clip),), out=str(target), mode="all",
                          models=(ModelRequest(name=f"local-dir:{tiny_dir}", device="cpu"),),
                          run=RunOptions(batch_size=4))
    with pytest.raises(Interrupted):
        run(req, Interrupting())
    assert json.loads((tmp_path / "resumed.npy.partial.json").read_text())["next_input"] == 12  # 3 batches of 4
    r = cli("features", *args, "-o", target, "--resume", "--json")
    assert r.exit_code == 0 and r.json()["resumed_from"] == 12
    assert target.read_bytes() == clean.read_bytes()


@pytest.mark.parametrize("layout", ["v3.0", "v2.1"])
def test_lerobot_rows_say_episode_camera_and_index(cli, tmp_path, tiny_dir, layout):
    root = (make_lerobot_v30 if layout == "v3.0" else make_lerobot_v21)(tmp_path / "ds", episode_lengths=(5, 3))
    r, out = run_features(cli, tmp_path, [], tiny_dir, "--lerobot", root, "--mode", "cls")
    assert r.exit_code == 0, r.stderr
    side = json.loads(out.with_suffix(".json").read_text())
    want = [(ep, cam, start + fi) for ep, (start, n) in enumerate([(0, 5), (5, 3)]) for fi in range(n)
            for cam in CAMERAS]
    assert [(row["episode"], row["camera"], row["index"]) for row in side["rows"]] == want
    assert np.load(out).shape == (16, 32)
    # each row is that camera's frame of that step: features equal the frame's pattern saved as an image
    pngs = tmp_path / "pngs"
    pngs.mkdir()
    for i, (ep, cam, index) in enumerate(want):
        Image.fromarray(pattern(lerobot_code(CAMERAS.index(cam), index))).save(pngs / f"{i:02d}.png")
    r2, out2 = run_features(cli, tmp_path, [pngs], tiny_dir, "--mode", "cls", name="png.npy")
    assert np.allclose(np.load(out), np.load(out2), atol=1e-5)
    # one camera, some episodes
    r3, out3 = run_features(cli, tmp_path, [], tiny_dir, "--lerobot", root, "--camera", "top", "--episodes", "1",
                            "--mode", "cls", "--json", name="top.npy")
    assert [(row["episode"], row["camera"]) for row in r3.json()["rows"]] == [(1, CAMERAS[0])] * 3


def test_fused_cameras_put_a_step_in_one_row(cli, tmp_path, tiny_dir):
    root = make_lerobot_v30(tmp_path / "ds", episode_lengths=(5, 3))
    r, out = run_features(cli, tmp_path, [], tiny_dir, "--lerobot", root, "--fuse-cameras", "--mode", "patch")
    assert r.exit_code == 0, r.stderr
    fused = np.load(out)
    assert fused.shape == (8, 16, 64)  # 8 steps, 2 cameras x 32 channels
    side = json.loads(out.with_suffix(".json").read_text())
    assert side["fused_cameras"]["cameras"] == list(CAMERAS) and side["rows"][0]["camera"] == list(CAMERAS)
    r2, out2 = run_features(cli, tmp_path, [], tiny_dir, "--lerobot", root, "--mode", "patch", name="apart.npy")
    apart = np.load(out2).reshape(8, 2, 16, 32)
    assert np.array_equal(fused, np.concatenate([apart[:, 0], apart[:, 1]], axis=-1))


def test_classify_a_video_frame_by_frame(cli, clip, tiny_dir):
    r = cli("classify", clip, "--model", f"local-dir:{tiny_dir}", "--every", "8", "--device", "cpu", "--json")
    assert r.exit_code == 0, r.stderr
    results = r.json()["results"]
    assert [(x["image"], x["frame"]) for x in results] == [(f"{clip}@frame={f}", f) for f in (0, 8, 16)]


def test_single_frame_commands_take_video_at_time(cli, tmp_path, clip, tiny_dir):
    r = cli("patchify", f"{clip}@t=1.0", "--size", "32", "--patch", "8", "--npy", tmp_path / "p.npy", "--json")
    assert r.exit_code == 0, r.stderr
    assert r.json()["image"]["path"] == f"{clip}@frame=12"
    Image.fromarray(pattern(12)).save(tmp_path / "twelve.png")  # frame 12 as written
    assert cli("patchify", tmp_path / "twelve.png", "--size", "32", "--patch", "8", "--npy",
               tmp_path / "q.npy").exit_code == 0
    assert np.array_equal(np.load(tmp_path / "p.npy"), np.load(tmp_path / "q.npy"))
    r = cli("attention", f"{clip}@frame=7", "--model", f"local-dir:{tiny_dir}", "--device", "cpu", "--json")
    assert r.exit_code == 0 and r.json()["image"] == f"{clip}@frame=7"
    r = cli("inspect", f"{clip}@t=99", "--model", f"local-dir:{tiny_dir}")
    assert r.exit_code == 2 and "outside the video" in r.stderr


def test_sampling_flags_need_a_video(cli, tmp_path, tiny_dir):
    shutil.copy(DATA / "chelsea.jpg", tmp_path / "a.jpg")
    r, _ = run_features(cli, tmp_path, [tmp_path / "a.jpg"], tiny_dir, "--fps", "2")
    assert r.exit_code == 2 and "no input is a video" in r.stderr
    r, _ = run_features(cli, tmp_path, [tmp_path / "a.jpg"], tiny_dir, "--camera", "top")
    assert r.exit_code == 2 and "--lerobot" in r.stderr
