"""`features -o FOLDER/ --engine ray`: Ray Data computes the same shards as one process, byte for byte.

One local Ray cluster run (started and stopped by vitcli itself), one rerun on a connection the test opened
(vitcli must use it and leave it up), then the request checks and the error paths without Ray at all.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import DATA, run_cli

ALLOWED = ("Warning: ", "Output ", "Ray: ", "Skipped: ", "Error: ")  # everything vitcli itself says on stderr


@pytest.fixture(scope="module")
def pictures(tmp_path_factory) -> Path:
    """13 inputs: the four test pictures three times over (JPEG, gray PNG, RGBA PNG) and one that is no image."""
    folder = tmp_path_factory.mktemp("ray-pictures")
    for i in range(3):
        for name in ("chelsea.jpg", "coffee.jpg", "camera-gray.png", "horse-rgba.png"):
            shutil.copy(DATA / name, folder / f"{i}-{name}")
    (folder / "1-broken.jpg").write_bytes(b"\xff\xd8\xff not a JPEG after all")  # sorts 5th: row 4, shard 1
    return folder


def _files(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir())}


def _vitcli_lines(stderr: str) -> list[str]:
    """stderr lines that are not vitcli's own (its notes, warnings, skips, error line, rows/s measurement)."""
    return [line for line in stderr.splitlines()
            if line and not line.startswith(ALLOWED) and " rows/s (" not in line]


def test_ray_writes_the_shards_of_one_process_and_recomputes_only_missing_ones(tmp_path, tiny_dir, pictures, capfd):
    import ray
    from vitcli.backend import ray_engine

    args = ["features", pictures, "--model", f"local-dir:{tiny_dir}", "--device", "cpu", "--batch-size", "2",
            "--shard-size", "4", "--json"]  # 13 rows: shards of 4, 4, 4 and 1 rows, 2 batches each
    local, on_ray = tmp_path / "local", tmp_path / "ray"
    one = run_cli(*args, "-o", f"{local}/")
    assert one.exit_code == 1, one.stderr  # one input skipped: exit 1, the rest written
    capfd.readouterr()

    r = run_cli(*args, "-o", f"{on_ray}/", "--engine", "ray", env={"COLUMNS": "1000"})  # a note a line
    fd = capfd.readouterr()
    assert r.exit_code == 1, r.stderr
    d = r.json()  # stdout is one JSON document: nothing of Ray's on it
    assert (d["rows_done"], d["rows_written"], d["shard_count"], d["complete"]) == (13, 12, 4, True)
    assert [s["source"] for s in d["skipped"]] == [str(pictures / "1-broken.jpg")]
    assert _vitcli_lines(r.stderr) == [] and "Ray: 4 shards to 1 model actor on CPU" in r.stderr
    assert fd.out == "" and fd.err == "", fd  # Ray's processes and C++ logs: quiet on the file descriptors too
    assert not ray.is_initialized()  # vitcli started the local cluster, and shut it down

    expected = _files(local)
    assert sorted(expected) == ["failed.txt", "index.json"] + [f"shard-{k:05d}.{ext}" for k in range(4)
                                                               for ext in ("json", "npy")]
    assert _files(on_ray) == expected  # every .npy, sidecar, index.json and failed.txt, byte for byte
    run = ray_engine.last_run
    assert sorted(run["shards"]) == [0, 1, 2, 3] and run["actors"] == 1 and not run["gpu"]
    assert run["decoders"] and run["writers"] and not run["decoders"] & run["writers"]  # decoded in tasks, apart
    assert os.getpid() not in run["decoders"] | run["writers"]

    # a lost shard: only it is computed again, on a connection the caller opened (and vitcli leaves open)
    for ext in ("npy", "json"):
        (on_ray / f"shard-00001.{ext}").unlink()
    kept = {p.name: p.stat().st_mtime_ns for p in on_ray.glob("shard-*")}
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        again = run_cli(*args, "-o", f"{on_ray}/", "--engine", "ray", "--actors", "3", env={"COLUMNS": "1000"})
        assert ray.is_initialized()
    finally:
        ray.shutdown()
    assert again.exit_code == 1, again.stderr
    assert "Warning: --actors 3: the Ray cluster has room for 1 (a CPU each, one CPU left to decode); starting 1" \
        in again.stderr.splitlines() and "Ray: joining" not in again.stderr  # 2 CPUs: 1 actor, 1 decoder
    assert again.json()["rows_done"] == 4 and ray_engine.last_run["shards"] == [1]
    assert {p.name: p.stat().st_mtime_ns for p in on_ray.glob("shard-*") if p.name in kept} == kept
    assert _files(on_ray) == expected

    # nothing missing: no Ray at all
    ray_engine.last_run.clear()
    done = run_cli(*args, "-o", f"{on_ray}/", "--engine", "ray")
    assert done.json()["rows_done"] == 0 and ray_engine.last_run == {} and not ray.is_initialized()
    assert "4 shards of up to 4 rows" in done.stderr and "0 to compute on Ray" in done.stderr
    assert _files(on_ray) == expected


PROBE = """
import atexit, sys
{before}
atexit.register(lambda: print("HEAVY=" + ",".join(m for m in ("ray", "torch") if sys.modules.get(m)),
                              file=sys.stderr))
sys.argv = ["vitcli", *{args!r}]
from vitcli.cli import main
main()
"""


def _probe(args: list[str], before: str = "") -> subprocess.CompletedProcess:
    code = PROBE.format(before=before, args=[str(a) for a in args])
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)


@pytest.mark.parametrize("extra, message", [
    (["-o", "feats.npy", "--engine", "ray"], "Error: --engine ray writes a directory of shards; give -o FOLDER/"),
    (["-o", "feats/", "--engine", "ray", "--task", "0/2"], "Error: --engine ray spreads the shards over the Ray "
                                                           "cluster itself"),
    (["-o", "feats/", "--engine", "ray", "--workers", "4"], "Error: --workers and --decode-timeout set this "
                                                            "machine's decoding processes"),
    (["-o", "feats/", "--actors", "2"], "Error: --actors sets the model actors of --engine ray; add --engine ray"),
    (["-o", "feats/", "--engine", "ray", "--actors", "0"], "Error: --actors 0 must be at least 1"),
    (["-o", "feats/", "--engine", "spark"], "Error: Invalid value for '--engine'"),
])
def test_usage_errors_exit_2_before_ray_is_imported(tmp_path, extra, message):
    p = _probe(["features", DATA / "chelsea.jpg", *[f"{tmp_path}/{a}" if a.startswith("feats") else a for a in extra]])
    assert p.returncode == 2, p.stderr
    lines = p.stderr.splitlines()
    assert lines[0].startswith(message) and lines[1:] == ["HEAVY="], p.stderr
    assert not (tmp_path / "feats").exists()


def test_without_ray_one_line_names_the_extra_before_any_model_loads(tmp_path):
    p = _probe(["features", DATA / "chelsea.jpg", "-o", f"{tmp_path}/feats/", "--engine", "ray"],
               before="sys.modules['ray'] = None  # as if Ray were not installed")
    assert p.returncode == 1
    assert p.stderr.splitlines() == ["Error: --engine ray needs Ray Data (ray[data]), which is not installed; "
                                     'pip install "vitcli[ray]"', "HEAVY="]


def test_a_shard_whose_pictures_would_not_fit_is_refused_with_a_shard_size_that_fits():
    from vitcli.backend.ray_engine import MAX_SHARD_PICTURES, _check_shard_pictures
    from vitcli.commands.features import FeaturesRequest
    from vitcli.errors import UsageError
    from vitcli.requests import RunOptions

    req = FeaturesRequest(inputs=("x.jpg",), out="feats/", engine="ray", mode="cls", run=RunOptions(batch_size=32))
    per_row = 224 * 224 * 3  # one model's uint8 picture
    _check_shard_pictures(req, MAX_SHARD_PICTURES // per_row, per_row)  # fits
    with pytest.raises(UsageError) as e:
        _check_shard_pictures(req, 8_388_608, per_row)  # cls rows of a 1 GiB shard of a 768-channel model
    assert "8,388,608 rows" in e.value.message
    n = int(e.value.hint.split("--shard-size ")[1].split()[0])
    assert n % 32 == 0 and n * per_row <= MAX_SHARD_PICTURES // 2 < (n + 32) * per_row


def test_errors_met_in_actors_come_back_whole(tmp_path):
    """Ray keeps only the text of an exception raised in an actor: a VitcliError comes back as data instead, and
    the driver raises the same class with its message and hint."""
    import numpy as np

    from vitcli.backend.ray_engine import ShardWriter, _error, _error_dict
    from vitcli.commands.features import FeaturesRequest, _Run
    from vitcli.errors import MissingExtra, ModelError
    from vitcli.inputs import Item
    from vitcli.requests import ModelRequest

    missing = ModelRequest(name=f"local-dir:{tmp_path}/no-such-model", device="cpu")
    req = FeaturesRequest(inputs=("x.jpg",), out=f"{tmp_path}/feats/", engine="ray", models=(missing,))
    run = _Run((Item("x.jpg"),), {}, None, 1, 1, 0, 1, None)
    writer = ShardWriter(req, run, [missing], shard_rows=32)  # on a node where the model cannot load
    out = writer({"shard": np.array([0]), "decoded": np.array([None], dtype=object), "decoder": np.array([7])})
    e = _error(json.loads(out["error"][0]))
    assert type(e) is ModelError and "no-such-model" in e.message and e.exit_code == 1
    assert not (tmp_path / "feats").exists()

    extra = MissingExtra("video inputs", "video", "PyAV (av)")  # a class whose __init__ takes other arguments
    back = _error(json.loads(json.dumps(_error_dict(extra))))
    assert (type(back), back.message, back.hint) == (MissingExtra, extra.message, extra.hint)
