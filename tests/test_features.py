"""`vitcli features` against timm's forward_features / forward_intermediates; resume, skip, scale-out."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest
import timm
import torch

from conftest import DATA
from vitcli.imaging import open_image

IMAGES = [DATA / "chelsea.jpg", DATA / "coffee.jpg", DATA / "camera-gray.png", DATA / "horse-rgba.png"]


def reference(model_dir, paths=IMAGES, **kw):
    """timm's own model and preprocessing: (model, normalised batch (B, 3, H, W))."""
    model = timm.create_model(f"local-dir:{model_dir}", pretrained=True, **kw).eval()
    # timm's data config keeps the pretrained input size for a model built at another size: ask for it
    args = {"input_size": (3, *model.patch_embed.img_size)}
    t = timm.data.create_transform(**timm.data.resolve_data_config(args, model=model))
    return model, torch.stack([t(open_image(p).image) for p in paths])


def feats(cli, tmp_path, model_dir, *args, name="f.npy"):
    out = tmp_path / name
    r = cli("features", *IMAGES, "--model", f"local-dir:{model_dir}", "-o", out, "--device", "cpu", *args)
    assert r.exit_code == 0, r.stderr
    return np.load(out), json.loads(out.with_suffix(".json").read_text())


@pytest.mark.parametrize("fixture", ["tiny_dir", "tiny_reg_dir", "tiny_nocls_dir"])
def test_final_modes_equal_forward_features(cli, tmp_path, fixture, request):
    model_dir = request.getfixturevalue(fixture)
    model, x = reference(model_dir)
    with torch.no_grad():
        tokens = model.forward_features(x)  # (B, T, D)
        pooled = model.forward_head(tokens, pre_logits=True)
    p = model.num_prefix_tokens
    expected = {
        "cls": tokens[:, 0] if model.cls_token is not None else pooled,
        "patch": tokens[:, p:],
        "mean": tokens[:, p:].mean(1),
        "all": tokens,
    }
    for mode, want in expected.items():
        got, side = feats(cli, tmp_path, model_dir, "--mode", mode, name=f"{mode}.npy")
        assert got.shape == tuple(want.shape) and got.dtype == np.float32
        assert np.allclose(got, want.numpy(), atol=1e-5), mode
        assert side["shape"] == list(got.shape) and side["mode"] == mode
    assert side["images"] == [str(p) for p in IMAGES]


def test_registers_removed(cli, tmp_path, tiny_reg_dir):
    got, side = feats(cli, tmp_path, tiny_reg_dir, "--mode", "patch")
    assert got.shape == (4, 16, 32)  # 4x4 patches; CLS and 4 registers gone
    assert side["models"][0]["prefix_tokens"] == {"cls": 1, "registers": 4}
    assert side["prefix_tokens_removed"] is True


def test_no_cls_model_cls_mode_is_pooled(cli, tmp_path, tiny_nocls_dir):
    _, side = feats(cli, tmp_path, tiny_nocls_dir, "--mode", "cls")
    assert side["cls_source"] == ["pooled output (map pooling)"]


@pytest.mark.parametrize("fixture", ["tiny_dir", "tiny_reg_dir", "tiny_nocls_dir"])
@pytest.mark.parametrize("norm", [False, True])
def test_layers_equal_forward_intermediates(cli, tmp_path, fixture, norm, request):
    model_dir = request.getfixturevalue(fixture)
    model, x = reference(model_dir)
    with torch.no_grad():
        inter = model.forward_intermediates(x, indices=[0, 1], norm=norm, output_fmt="NLC", intermediates_only=True)
    p = model.num_prefix_tokens
    args = ["--layer", "-1", "--layer", "0"] + (["--norm"] if norm else [])  # given out of order
    got, side = feats(cli, tmp_path, model_dir, "--mode", "patch", *args)
    assert got.shape == (4, 2, 16, 32) and side["layers"] == [0, 1] and side["axes"] == ["row", "layer", "patch", "channel"]
    for k in (0, 1):
        assert np.allclose(got[:, k], inter[k].numpy(), atol=1e-5)
    # every mode at a layer, against the same intermediates (prefix tokens included this time)
    with torch.no_grad():
        full = model.forward_intermediates(x, indices=[1], norm=norm, output_fmt="NLC", intermediates_only=True,
                                           return_prefix_tokens=True)[0]
    tokens = torch.cat([full[1], full[0]], 1) if p else full
    got, side = feats(cli, tmp_path, model_dir, "--mode", "all", "--layer", "1", *(["--norm"] if norm else []),
                      name="a.npy")
    assert side["axes"] == ["row", "token", "channel"]  # one layer: no layer axis
    assert np.allclose(got, tokens.numpy(), atol=1e-5)
    got, _ = feats(cli, tmp_path, model_dir, "--mode", "mean", "--layer", "-1", *(["--norm"] if norm else []), name="m.npy")
    assert np.allclose(got, tokens[:, p:].mean(1).numpy(), atol=1e-5)


def test_layer_minus_2_is_second_to_last_block_as_emitted(cli, tmp_path, tiny_reg_dir):
    """OpenVLA's features: the output of block depth-2, without the final norm (forward hook on the block)."""
    model, x = reference(tiny_reg_dir)
    seen = {}
    model.blocks[-2].register_forward_hook(lambda m, i, o: seen.setdefault("out", o))
    with torch.no_grad():
        model.forward_features(x)
    got, _ = feats(cli, tmp_path, tiny_reg_dir, "--mode", "patch", "--layer", "-2")
    assert np.allclose(got, seen["out"][:, 5:].numpy(), atol=1e-5)
    got2, _ = feats(cli, tmp_path, tiny_reg_dir, "--mode", "patch", "--layer", "-2", "--stop-early", name="s.npy")
    assert np.array_equal(got, got2)


def test_grid_and_out_dtype(cli, tmp_path, tiny_dir):
    flat, _ = feats(cli, tmp_path, tiny_dir, "--mode", "patch")
    grid, side = feats(cli, tmp_path, tiny_dir, "--mode", "patch", "--grid", "--out-dtype", "float16", name="g.npy")
    assert grid.shape == (4, 4, 4, 32) and grid.dtype == np.float16 and side["dtype"] == "float16"
    assert np.allclose(grid.reshape(4, 16, 32), flat.astype(np.float16), atol=0)


def test_size_rebuilds_model_and_preprocessing(cli, tmp_path, tiny_dir):
    got, side = feats(cli, tmp_path, tiny_dir, "--mode", "patch", "--size", "48")
    assert got.shape == (4, 36, 32)  # 6x6 patches of 8 px
    assert side["models"][0]["data_config"]["input_size"] == [3, 48, 48] and side["models"][0]["grid"] == [6, 6]
    model, x = reference(tiny_dir, img_size=48)
    assert x.shape[-1] == 48
    with torch.no_grad():
        assert np.allclose(got, model.forward_features(x)[:, 1:].numpy(), atol=1e-5)


def test_bad_images_skipped_rows_only_for_good(cli, tmp_path, tiny_dir):
    bad = tmp_path / "bad.jpg"
    bad.write_bytes(IMAGES[0].read_bytes()[:2000])
    out = tmp_path / "f.npy"
    inputs = [IMAGES[0], bad, IMAGES[1]]
    r = cli("features", *inputs, "--model", f"local-dir:{tiny_dir}", "-o", out, "--mode", "cls", "--batch-size", "2")
    assert r.exit_code == 1 and "Skipped: " + str(bad) in r.stderr
    side = json.loads(out.with_suffix(".json").read_text())
    assert side["images"] == [str(IMAGES[0]), str(IMAGES[1])] and side["skipped"][0]["source"] == str(bad)
    model, x = reference(tiny_dir, [IMAGES[0], IMAGES[1]])
    with torch.no_grad():
        assert np.allclose(np.load(out), model.forward_features(x)[:, 0].numpy(), atol=1e-5)


def test_never_overwrites_without_force(cli, tmp_path, tiny_dir):
    out = tmp_path / "f.npy"
    out.write_bytes(b"keep")
    r = cli("features", IMAGES[0], "--model", f"local-dir:{tiny_dir}", "-o", out)
    assert r.exit_code == 1 and "already exists" in r.stderr and out.read_bytes() == b"keep"
    out.unlink()
    out.with_suffix(".json").write_text("{}")
    r = cli("features", IMAGES[0], "--model", f"local-dir:{tiny_dir}", "-o", out)
    assert r.exit_code == 1 and "f.json: already exists" in r.stderr
    r = cli("features", IMAGES[0], "--model", f"local-dir:{tiny_dir}", "-o", out, "--force")
    assert r.exit_code == 0 and np.load(out).shape == (1, 16, 32)


class InterruptAfter:
    """A Progress that presses Ctrl-C after `n` batches, inside the real extraction loop."""

    def __init__(self, n):
        self.n = n

    def start(self, total, description=""):
        pass

    def advance(self, k=1):
        self.n -= 1
        if self.n == 0:
            raise KeyboardInterrupt

    def close(self):
        pass


def test_resume_after_interruption_equals_clean_run(cli, tmp_path, tiny_reg_dir):
    from vitcli.commands.features import FeaturesRequest, run_features
    from vitcli.errors import Interrupted, VitcliError
    from vitcli.progress import Reporter
    from vitcli.requests import ModelRequest, RunOptions

    class Interrupting(Reporter):
        def __init__(self, n):
            self.n = n

        def progress(self):
            return InterruptAfter(self.n)

    folder = tmp_path / "imgs"
    folder.mkdir()
    for i in range(7):
        shutil.copy(IMAGES[i % 4], folder / f"{i}.{IMAGES[i % 4].suffix[1:]}")
    (folder / "3.png").write_text("broken")  # a bad image before the interruption
    args = ["--model", f"local-dir:{tiny_reg_dir}", "--mode", "all", "--layer", "-2", "--batch-size", "2", "--device",
            "cpu"]
    clean = tmp_path / "clean" / "f.npy"
    clean.parent.mkdir()
    assert cli("features", folder, "-o", clean, *args).exit_code == 1  # one skipped

    target = tmp_path / "run" / "f.npy"
    target.parent.mkdir()
    req = FeaturesRequest(inputs=(str(folder),), out=str(target), mode="all", layers=(-2,),
                          models=(ModelRequest(name=f"local-dir:{tiny_reg_dir}", device="cpu"),),
                          run=RunOptions(batch_size=2))
    with pytest.raises(Interrupted) as e:
        run_features(req, Interrupting(3))
    assert e.value.exit_code == 130 and "--resume" in e.value.hint
    assert not target.exists() and not target.with_suffix(".json").exists()  # nothing half-written at the target
    state = json.loads((target.parent / "f.npy.partial.json").read_text())
    assert state["next_input"] == 6 and state["rows"] == 5  # 3 batches done, one image skipped

    r = cli("features", folder, "-o", target, *args, "--resume")
    assert r.exit_code == 1  # the skipped image still counts
    assert target.read_bytes() == clean.read_bytes()
    assert target.with_suffix(".json").read_text() == clean.with_suffix(".json").read_text().replace(
        str(clean.parent), str(target.parent))
    assert sorted(p.name for p in target.parent.iterdir()) == ["f.json", "f.npy"]

    # resuming with other settings is refused
    target.unlink()
    target.with_suffix(".json").unlink()
    with pytest.raises(VitcliError):
        run_features(req, Interrupting(1))
    r = cli("features", folder, "-o", target, *args[:-4], "--batch-size", "3", "--device", "cpu", "--resume")
    assert r.exit_code == 1 and "other settings" in r.stderr and "batch_size" in r.stderr


def test_no_room_on_disk(cli, tmp_path, tiny_dir, monkeypatch):
    import shutil as sh
    from collections import namedtuple

    usage = namedtuple("usage", "total used free")
    monkeypatch.setattr(sh, "disk_usage", lambda p: usage(10**6, 10**6 - 1000, 1000))
    r = cli("features", IMAGES[0], "--model", f"local-dir:{tiny_dir}", "-o", tmp_path / "f.npy")
    assert r.exit_code == 1 and "only 1,000 are free" in r.stderr
    assert list(tmp_path.iterdir()) == []


def test_usage_errors(cli, tmp_path, tiny_dir):
    base = [IMAGES[0], "--model", f"local-dir:{tiny_dir}", "-o", tmp_path / "f.npy"]
    for extra, words in [(["--mode", "pixels"], "--mode"), (["--layer", "2"], "--layer 2 is out of range"),
                         (["--grid", "--mode", "cls"], "--grid"), (["--stop-early"], "--stop-early"),
                         (["--out-dtype", "int8"], "--out-dtype")]:
        r = cli("features", *base, *extra)
        assert r.exit_code == 2 and words in r.stderr, (extra, r.stderr)
    r = cli("features", IMAGES[0], "--model", f"local-dir:{tiny_dir}", "-o", tmp_path / "f.bin")
    assert r.exit_code == 2 and ".npy" in r.stderr


def test_torchrun_two_ranks_equals_one_process(tmp_path, tiny_dir):
    folder = tmp_path / "imgs"
    folder.mkdir()
    for i in range(5):
        shutil.copy(IMAGES[i % 4], folder / f"{i}{IMAGES[i % 4].suffix}")
    (folder / "5.jpg").write_text("bad")
    env = {**os.environ, "VITCLI_PROGRESS": "0", "OMP_NUM_THREADS": "1"}
    common = ["features", str(folder), "--model", f"local-dir:{tiny_dir}", "--mode", "patch", "--batch-size", "2",
              "--device", "cpu"]
    one, two = tmp_path / "one", tmp_path / "two"
    one.mkdir(), two.mkdir()
    p1 = subprocess.run([sys.executable, "-m", "vitcli", *common, "-o", str(one / "f.npy")], env=env,
                        capture_output=True, text=True, timeout=300)
    p2 = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
                         "-m", "vitcli", *common, "-o", str(two / "f.npy")], env=env, capture_output=True, text=True,
                        timeout=300)
    assert p1.returncode == 1 and "Skipped:" in p1.stderr  # 5.jpg
    assert "Skipped: " + str(folder / "5.jpg") in p2.stderr
    assert (one / "f.npy").read_bytes() == (two / "f.npy").read_bytes()
    assert (one / "f.json").read_text() == (two / "f.json").read_text()
    assert sorted(p.name for p in two.iterdir()) == ["f.json", "f.npy"]  # the rank parts are gone


def test_compile_gives_the_features_of_eager(cli, tmp_path, tiny_dir):
    """--compile (torch.compile, inductor on CPU): the same features within 1e-4; the first batch's time (the
    compilation) reported. Four images in batches of two: one shape, compiled once."""
    eager, _ = feats(cli, tmp_path, tiny_dir, "--mode", "all", "--batch-size", "2", name="eager.npy")
    out = tmp_path / "compiled.npy"
    r = cli("features", *IMAGES, "--model", f"local-dir:{tiny_dir}", "-o", out, "--device", "cpu", "--mode", "all",
            "--batch-size", "2", "--compile", "--json")
    assert r.exit_code == 0, r.stderr
    assert np.allclose(np.load(out), eager, atol=1e-4) and r.json()["first_batch_s"] > 0


def test_resume_with_only_the_state_file_starts_over(cli, tmp_path, tiny_dir):
    """A `.partial.json` without its `.partial` (a crash inside NpyWriter.finish, a deleted array): --resume
    starts from the first row, as the writer does, and loses no row."""
    args = ["--model", f"local-dir:{tiny_dir}", "--batch-size", "2", "--device", "cpu"]
    clean = tmp_path / "clean.npy"
    assert cli("features", *IMAGES, "-o", clean, *args).exit_code == 0
    target = tmp_path / "f.npy"
    (tmp_path / "f.npy.partial.json").write_text(json.dumps({"next_input": 2, "rows": 2, "skipped": [],
                                                             "fingerprint": {}}))
    r = cli("features", *IMAGES, "-o", target, *args, "--resume", "--json")
    assert r.exit_code == 0, r.stderr
    assert "nothing to resume" in r.stderr and r.json()["resumed_from"] == 0 and r.json()["rows_done"] == 4
    assert target.read_bytes() == clean.read_bytes()
    assert not (tmp_path / "f.npy.partial.json").exists()


def test_resume_is_refused_under_torchrun_before_loading(cli, tmp_path):
    """The ranks' parts never resume, so a resumed rank 0 would clip its rows: refused (a model that does not
    exist shows nothing was loaded)."""
    out = tmp_path / "f.npy"
    (tmp_path / "f.npy.partial.json").write_text(json.dumps({"next_input": 2}))
    r = cli("features", *IMAGES, "-o", out, "--model", f"local-dir:{tmp_path / 'none'}", "--resume",
            env={"RANK": "0", "WORLD_SIZE": "2"})
    assert r.exit_code == 2 and "--resume is not available under torchrun" in r.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["f.npy.partial.json"]


@pytest.mark.parametrize("world", [1, 2])
def test_interrupted_suggests_resume_only_where_it_works(tmp_path, monkeypatch, world):
    import vitcli.backend.features as backend
    from vitcli.commands.features import FeaturesRequest, _Run, _write_file
    from vitcli.errors import Interrupted
    from vitcli.progress import SILENT

    def interrupted(*a, **kw):
        raise KeyboardInterrupt

    monkeypatch.setattr(backend, "extract", interrupted)
    target = tmp_path / "f.npy"
    req = FeaturesRequest(inputs=("x.jpg",), out=str(target))
    rank = world - 1
    run = _Run((), {}, None, 1, 8, rank, world, [(4 * rank, 4 * rank + 4)])
    with pytest.raises(Interrupted) as e:
        _write_file(req, SILENT, target, [], None, None, run, (2,), "float32", {}, {}, None, 0.0, {})
    assert ("--resume" in e.value.hint) is (world == 1)
    assert ("rank 1" in e.value.message) is (world == 2)
