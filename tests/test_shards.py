"""Features at cluster scale: a folder of shards equals the single file (after `merge`), a killed run is rerun to
the same bytes without recomputing finished shards, job-array tasks and torchrun ranks write the same shards as
one process, tar shards and --from-list are inputs, and a decoder that hangs is abandoned and listed."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tarfile
import time

import numpy as np
import pytest

import vitcli.features
from conftest import DATA
from videos import make_video

IMAGES = [DATA / "chelsea.jpg", DATA / "coffee.jpg", DATA / "camera-gray.png", DATA / "horse-rgba.png"]


@pytest.fixture(scope="module")
def inputs(tmp_path_factory):
    """9 images (one broken) and a 6-frame video: 15 rows, one lost."""
    folder = tmp_path_factory.mktemp("inputs")
    for i in range(9):
        shutil.copy(IMAGES[i % 4], folder / f"{i}{IMAGES[i % 4].suffix}")
    (folder / "4.jpg").unlink()
    (folder / "4.jpg").write_text("broken")
    make_video(folder / "v.mp4", 6, fps=6, gop=3)
    return folder


def args(model, *extra):
    return ["--model", f"local-dir:{model}", "--mode", "patch", "--batch-size", "2", "--device", "cpu", *extra]


def files(folder):
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir()) if p.name.startswith("shard-")}


def test_a_folder_equals_the_single_file_after_merge(cli, tmp_path, inputs, tiny_dir):
    single = tmp_path / "single.npy"
    assert cli("features", inputs, "-o", single, *args(tiny_dir)).exit_code == 1  # 4.jpg is skipped
    r = cli("features", inputs, "-o", f"{tmp_path / 'dir'}/", *args(tiny_dir, "--shard-size", "4"), "--json")
    assert r.exit_code == 1, r.stderr
    d = r.json()
    assert d["shard_count"] == 4 and d["complete"] and d["rows_written"] == 14 and d["rows_in"] == 15
    assert sorted(files(tmp_path / "dir")) == [f"shard-{k:05d}.{e}" for k in range(4) for e in ("json", "npy")]
    assert (tmp_path / "dir" / "failed.txt").read_text() == f"{inputs / '4.jpg'}\n"
    # merged: the same bytes, the same sidecar
    merged = tmp_path / "merged" / "single.npy"
    merged.parent.mkdir()
    m = cli("features", "merge", f"{tmp_path / 'dir'}/", "-o", merged)
    assert m.exit_code == 1 and "Skipped:" in m.stderr  # the merged output still says what was lost
    assert merged.read_bytes() == single.read_bytes()
    assert merged.with_suffix(".json").read_text() == single.with_suffix(".json").read_text()
    # the reader: one lazily concatenated view of the folder
    view = vitcli.features.open(tmp_path / "dir")
    whole = np.load(single)
    assert view.shape == whole.shape and np.array_equal(view[:], whole) and np.array_equal(view[5], whole[5])
    assert np.array_equal(view[3:9], whole[3:9]) and view.rows == json.loads(single.with_suffix(".json").read_text())["rows"]


def test_rerunning_after_a_kill_computes_only_what_is_missing(tmp_path, inputs, tiny_dir):
    """SIGKILL in the middle of a shard, rerun: identical to an uninterrupted run; finished shards untouched."""
    slow = ("import sys, time; import vitcli.backend.features as f; call = f.Extractor.__call__\n"
            "def slowly(self, x):\n    time.sleep(0.4)\n    return call(self, x)\n"
            "f.Extractor.__call__ = slowly\nsys.argv = ['vitcli', *sys.argv[1:]]\n"
            "from vitcli.cli import main\nmain()\n")
    out = tmp_path / "dir"
    cmd = ["features", str(inputs), "-o", f"{out}/", *args(tiny_dir, "--shard-size", "4", "--workers", "0")]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    p = subprocess.Popen([sys.executable, "-c", slow, *cmd], env=env, stdout=subprocess.DEVNULL,
                         stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 240
    while not (out / "shard-00001.json").exists() and time.monotonic() < deadline and p.poll() is None:
        time.sleep(0.02)
    p.send_signal(signal.SIGKILL)
    p.wait()
    assert (out / "shard-00000.json").exists() and not (out / "shard-00003.json").exists()
    done = {k: (out / f"shard-{k:05d}.npy").stat().st_mtime_ns for k in (0, 1)}
    r = subprocess.run([sys.executable, "-m", "vitcli", *cmd], env=env, capture_output=True, text=True, timeout=300)
    assert r.returncode == 1, r.stderr  # (the broken image)
    assert {k: (out / f"shard-{k:05d}.npy").stat().st_mtime_ns for k in (0, 1)} == done
    assert "2 to compute here" in r.stderr and not list(out.glob("*.partial*"))
    clean = tmp_path / "clean"
    r = subprocess.run([sys.executable, "-m", "vitcli", *cmd[:3], f"{clean}/", *cmd[4:]], env=env,
                       capture_output=True, text=True, timeout=300)
    assert files(out) == files(clean) and (out / "index.json").read_bytes() == (clean / "index.json").read_bytes()


def test_job_array_tasks_write_the_shards_of_one_process(cli, tmp_path, inputs, tiny_dir):
    one = tmp_path / "one"
    assert cli("features", inputs, "-o", f"{one}/", *args(tiny_dir, "--shard-size", "4")).exit_code == 1
    tasks = tmp_path / "tasks"
    first = cli("features", inputs, "-o", f"{tasks}/", *args(tiny_dir, "--shard-size", "4", "--task", "0/2"),
                "--json")
    assert sorted(p.name for p in tasks.glob("shard-*.npy")) == ["shard-00000.npy", "shard-00002.npy"]
    assert first.json()["complete"] is False
    second = cli("features", inputs, "-o", f"{tasks}/", *args(tiny_dir, "--shard-size", "4"), "--json",
                 env={"SLURM_ARRAY_TASK_ID": "1", "SLURM_ARRAY_TASK_COUNT": "2"})
    assert second.json()["complete"] is True
    assert files(tasks) == files(one) and (tasks / "index.json").read_bytes() == (one / "index.json").read_bytes()


def test_torchrun_ranks_write_the_shards_of_one_process(tmp_path, inputs, tiny_dir):
    """Two ranks share the shards (the video's frames land in several shards): nothing passes through rank 0."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
    cmd = ["-m", "vitcli", "features", str(inputs), *args(tiny_dir, "--shard-size", "4")]
    one, two = tmp_path / "one", tmp_path / "two"
    subprocess.run([sys.executable, *cmd, "-o", f"{one}/"], env=env, capture_output=True, timeout=300)
    p = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
                        *cmd, "-o", f"{two}/"], env=env, capture_output=True, text=True, timeout=300)
    assert "(process 1 of 2)" not in p.stderr  # rank 1 is silent; rank 0 reports for all
    assert files(two) == files(one) and (two / "index.json").read_bytes() == (one / "index.json").read_bytes()


def test_tar_shards_equal_the_same_images_as_files(cli, tmp_path, tiny_dir):
    folder = tmp_path / "imgs"
    folder.mkdir()
    for k in range(2):  # WebDataset layout: KEY.EXT members, brace-numbered shards
        with tarfile.open(tmp_path / f"data-{k:03d}.tar", "w") as tar:
            for i in range(3):
                src = IMAGES[(3 * k + i) % 4]
                name = f"{3 * k + i:03d}{src.suffix}"
                shutil.copy(src, folder / name)
                tar.add(src, arcname=f"sample/{3 * k + i:03d}{src.suffix}")
                tar.addfile(tarfile.TarInfo(f"sample/{3 * k + i:03d}.cls"), None)  # a label: not an image
    a = cli("features", str(tmp_path / "data-{000..001}.tar"), "-o", tmp_path / "tar.npy", *args(tiny_dir), "--json")
    b = cli("features", folder, "-o", tmp_path / "files.npy", *args(tiny_dir))
    assert a.exit_code == b.exit_code == 0, a.stderr
    assert np.array_equal(np.load(tmp_path / "tar.npy"), np.load(tmp_path / "files.npy"))
    rows = a.json()["rows"]
    assert [(r["tar"], r["key"]) for r in rows] == [(str(tmp_path / f"data-{i // 3:03d}.tar"), f"sample/{i:03d}")
                                                    for i in range(6)]


def test_a_hanging_decoder_is_abandoned_and_retried_from_the_list(cli, tmp_path, tiny_dir, monkeypatch):
    from vitcli import imaging

    real = imaging.open_image

    def hangs_on_one(path, draft=None, data=None):
        if str(path).endswith("hang.png"):
            time.sleep(3600)
        return real(path, draft, data)

    monkeypatch.setattr(imaging, "open_image", hangs_on_one)  # the forked decoding workers inherit it
    folder = tmp_path / "imgs"
    folder.mkdir()
    for i in range(5):
        shutil.copy(IMAGES[i % 4], folder / f"{i}{IMAGES[i % 4].suffix}")
    shutil.copy(DATA / "horse-rgba.png", folder / "hang.png")
    out = tmp_path / "dir"
    r = cli("features", folder, "-o", f"{out}/", *args(tiny_dir, "--decode-timeout", "2", "--workers", "2"),
            "--json")
    assert r.exit_code == 1 and r.json()["rows_written"] == 5
    assert f"Skipped: {folder / 'hang.png'}: the decoder did not finish within 2 s; abandoned" in r.stderr
    assert (out / "failed.txt").read_text() == f"{folder / 'hang.png'}\n"
    monkeypatch.setattr(imaging, "open_image", real)
    retry = cli("features", "--from-list", out / "failed.txt", "-o", tmp_path / "retry.npy", *args(tiny_dir), "--json")
    assert retry.exit_code == 0 and retry.json()["images"] == [str(folder / "hang.png")]


KILL_RANK_1 = """
import os, signal, sys
import vitcli.export as export

finish = export.NpyWriter.finish


def finish_then_die(self, sidecar):
    finish(self, sidecar)
    if os.environ.get("RANK") == "1":  # rank 1 is killed right after its first shard is complete
        os.kill(os.getpid(), signal.SIGKILL)


export.NpyWriter.finish = finish_then_die
sys.argv = ["vitcli", *sys.argv[1:]]
from vitcli.cli import main
main()
"""


def test_a_killed_torchrun_rank_loses_nothing_but_its_unfinished_shards(tmp_path, inputs, tiny_dir):
    script = tmp_path / "kill_rank_1.py"
    script.write_text(KILL_RANK_1)
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cmd = ["features", str(inputs), *args(tiny_dir, "--shard-size", "4")]
    run = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2"]
    out = tmp_path / "dir"
    p = subprocess.run([*run, str(script), *cmd, "-o", f"{out}/"], env=env, capture_output=True, timeout=300)
    assert p.returncode != 0 and (out / "shard-00001.json").exists()  # rank 1 died after its shard 1
    assert not (out / "shard-00003.json").exists() and not (out / "index.json").exists()
    kept = {p.name: p.stat().st_mtime_ns for p in out.glob("shard-*.npy")}
    p = subprocess.run([*run, "-m", "vitcli", *cmd, "-o", f"{out}/"], env=env, capture_output=True, timeout=300)
    assert {n: (out / n).stat().st_mtime_ns for n in kept} == kept  # finished shards were not recomputed
    clean = tmp_path / "clean"
    subprocess.run([sys.executable, "-m", "vitcli", *cmd, "-o", f"{clean}/"], env=env, capture_output=True,
                   timeout=300)
    assert files(out) == files(clean) and (out / "index.json").read_bytes() == (clean / "index.json").read_bytes()


def test_rerunning_a_complete_folder_computes_nothing(cli, tmp_path, inputs, tiny_dir):
    out = tmp_path / "dir"
    first = cli("features", inputs, "-o", f"{out}/", *args(tiny_dir, "--shard-size", "4"), "--json")
    before = {p.name: p.stat().st_mtime_ns for p in out.glob("shard-*")}
    again = cli("features", inputs, "-o", f"{out}/", *args(tiny_dir, "--shard-size", "4"), "--json")
    assert again.exit_code == first.exit_code == 1  # the broken image is still reported
    assert "0 to compute here" in again.stderr and again.json()["rows_done"] == 0
    assert {p.name: p.stat().st_mtime_ns for p in out.glob("shard-*")} == before
    beyond = cli("features", inputs, "-o", f"{out}/", *args(tiny_dir, "--shard-size", "4", "--task", "7/9"))
    assert beyond.exit_code == 1 and "0 to compute here" in beyond.stderr  # a task with no shard of its own


@pytest.mark.parametrize("extra,env", [(["--task", "1/2"], None), ([], {"RANK": "1", "WORLD_SIZE": "2"}),
                                       ([], {"SLURM_ARRAY_TASK_ID": "1", "SLURM_ARRAY_TASK_COUNT": "2"})],
                         ids=["task", "torchrun", "slurm"])
def test_force_is_refused_where_each_process_would_delete_the_others_shards(cli, tmp_path, inputs, extra, env):
    """Each task or rank would clear the folder at its start, a late one deleting the shards of the others:
    refused before any model loads (the model does not exist), and nothing in the folder is touched."""
    out = tmp_path / "dir"
    out.mkdir()
    kept = {"shard-00000.npy": b"done", "shard-00000.json": b"{}", "shard-00001.npy.partial": b"half",
            "index.json": b"{}"}
    for name, data in kept.items():
        (out / name).write_bytes(data)
    r = cli("features", inputs, "-o", f"{out}/", *args(tmp_path / "none", "--shard-size", "4", *extra), "--force",
            env=env)
    assert r.exit_code == 2 and "--force" in r.stderr and "delete the others' shards" in r.stderr
    assert {p.name: p.read_bytes() for p in out.iterdir()} == kept


def test_force_alone_clears_the_folders_shards_only(cli, tmp_path, tiny_dir):
    out = tmp_path / "dir"
    out.mkdir()
    (out / "shard-00007.npy").write_bytes(b"stale")
    (out / "failed.txt").write_text("old\n")
    (out / "notes.txt").write_text("mine")
    r = cli("features", *IMAGES[:2], "-o", f"{out}/", *args(tiny_dir, "--shard-size", "2"), "--force")
    assert r.exit_code == 0, r.stderr
    assert sorted(p.name for p in out.iterdir()) == ["index.json", "notes.txt", "shard-00000.json",
                                                     "shard-00000.npy"]


def test_merge_copies_in_chunks_of_bounded_bytes(cli, tmp_path, tiny_dir, monkeypatch):
    """Chunks are sized in bytes (here 3 rows of 2 KiB), not 4096 rows whatever their size; same bytes."""
    from vitcli import export

    imgs = tmp_path / "imgs"
    imgs.mkdir()
    for i in range(6):
        shutil.copy(IMAGES[i % 4], imgs / f"{i}{IMAGES[i % 4].suffix}")
    single, out = tmp_path / "single.npy", tmp_path / "dir"
    assert cli("features", imgs, "-o", single, *args(tiny_dir)).exit_code == 0
    assert cli("features", imgs, "-o", f"{out}/", *args(tiny_dir, "--shard-size", "4")).exit_code == 0
    row_bytes = 16 * 32 * 4  # (patch, channel) float32
    monkeypatch.setattr(export, "CHUNK_BYTES", 3 * row_bytes)
    sizes, write = [], export.NpyWriter.write

    def spy(self, rows, *rest):
        sizes.append(len(rows))
        return write(self, rows, *rest)

    monkeypatch.setattr(export.NpyWriter, "write", spy)
    merged = tmp_path / "merged" / "single.npy"
    merged.parent.mkdir()
    assert cli("features", "merge", f"{out}/", "-o", merged).exit_code == 0
    assert sizes == [3, 1, 2] and merged.read_bytes() == single.read_bytes()
