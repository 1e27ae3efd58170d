"""--gpu-decode's path (`backend.pipeline` with a `jpeg_bytes` recipe), run on CPU tensors: the same code the
CUDA device runs, with torchvision's CPU JPEG decoder in place of nvJPEG. A JPEG that cannot be decoded fails its
row alone, worded as the CPU path words it; models whose preprocessing the tensor path cannot replay are decoded
on the CPU instead."""

from __future__ import annotations

import json
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from conftest import DATA, make_local_dir
from vitcli import decode
from vitcli.backend.features import extract
from vitcli.backend.pipeline import batches, gpu_refusal, recipe_for
from vitcli.decode import Recipe
from vitcli.inputs import Item

CFG = dict(input_size=(3, 32, 32), interpolation="bicubic", crop_pct=0.875, crop_mode="center", mean=(0.5,) * 3,
           std=(0.5,) * 3)
GOOD = [DATA / "chelsea.jpg", DATA / "camera-gray.png", DATA / "coffee.jpg", DATA / "horse-rgba.png"]


@pytest.fixture
def bad_jpegs(tmp_path):
    """Two files that start like a JPEG (the workers hand them over as bytes): one cut short, one not a JPEG."""
    cut, junk = tmp_path / "cut.jpg", tmp_path / "junk.jpg"
    cut.write_bytes((DATA / "chelsea.jpg").read_bytes()[:2000])
    junk.write_bytes(b"\xff\xd8\xff" + b"not a picture" * 10)
    return cut, junk


def run_batches(paths, recipe: Recipe, batch_size: int = 2):
    """(rows {path: each model's (3, H, W) input}, failures {path: reason}) of a run over `paths` on CPU."""
    items = [Item(str(p)) for p in paths]
    rows, failures = {}, {}
    with decode.start(items, {}, [(0, len(items))], batch_size, 0, eager=False) as pool:
        pool.set_recipe(recipe)
        for b in batches(pool, recipe, batch_size, torch.device("cpu"), [(0, len(items))]):
            failures.update({str(paths[pos]): out.error for pos, out in b.failures})
            for k, pos in enumerate(b.positions):
                rows[str(paths[pos])] = [t[k] for t in b.tensors]
    return rows, failures


def test_a_jpeg_that_cannot_be_decoded_fails_its_row_alone(bad_jpegs):
    cut, junk = bad_jpegs
    paths = [GOOD[0], cut, GOOD[1], GOOD[2], junk, GOOD[3]]  # bad ones amid JPEGs and PNGs, in two batches
    gpu = recipe_for([CFG], gpu=True)
    assert gpu.jpeg_bytes
    want, none = run_batches(GOOD, gpu)
    got, failures = run_batches(paths, gpu)
    assert none == {} and list(got) == [str(p) for p in GOOD]
    assert all(torch.equal(a, b) for p in GOOD for a, b in zip(got[str(p)], want[str(p)]))
    # the same reasons as the CPU path's for the same files
    _, cpu_failures = run_batches(paths, recipe_for([CFG]))
    assert failures == cpu_failures
    assert failures[str(cut)].startswith("truncated or corrupt image (image file is truncated")
    assert failures[str(junk)] == "not an image PIL can read"


class Pixels:
    """An extractor whose features are the model's input itself: (B, 3, H, W) -> (B, 3·H·W)."""

    model = SimpleNamespace(info=SimpleNamespace(device="cpu", dtype="float32"))

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        return x.flatten(1)


def test_extract_reports_the_bad_jpeg_skipped_with_its_path(bad_jpegs):
    cut, _ = bad_jpegs
    paths = [GOOD[0], cut, GOOD[2]]
    items = [Item(str(p)) for p in paths]
    recipe = recipe_for([CFG], gpu=True)
    written, skipped = [], []

    def write(rows, next_row, skips):
        written.extend([] if rows is None else rows)
        skipped.extend(skips)

    with decode.start(items, {}, [(0, 3)], 2, 0, eager=False) as pool:
        pool.set_recipe(recipe)
        extract([Pixels()], pool, recipe, items, write, batch_size=2)
    assert [(s["source"], s["position"]) for s in skipped] == [(str(cut), 1)]
    assert skipped[0]["reason"].startswith("truncated or corrupt image")
    want, _ = run_batches([GOOD[0], GOOD[2]], recipe)
    assert np.array_equal(np.stack(written), np.stack([want[str(p)][0].flatten().numpy() for p in (GOOD[0], GOOD[2])]))


def test_cli_skips_the_bad_jpeg_and_exits_1(cli, tmp_path, tiny_dir, bad_jpegs):
    """--device auto is the CPU here: the run takes the GPU decoding path on CPU tensors."""
    cut, _ = bad_jpegs
    a, b = tmp_path / "a.npy", tmp_path / "b.npy"
    common = ("--model", f"local-dir:{tiny_dir}", "--mode", "cls", "--batch-size", "2", "--device", "auto",
              "--gpu-decode")
    r = cli("features", GOOD[0], cut, GOOD[2], "-o", a, *common)
    assert r.exit_code == 1 and "Skipped: " + str(cut) in r.stderr
    side = json.loads(a.with_suffix(".json").read_text())
    assert side["images"] == [str(GOOD[0]), str(GOOD[2])] and side["skipped"][0]["source"] == str(cut)
    assert side["settings"]["decode"] == "gpu"
    assert cli("features", GOOD[0], GOOD[2], "-o", b, *common).exit_code == 0
    assert np.allclose(np.load(a), np.load(b), atol=1e-5)


@pytest.mark.parametrize("interp", ["nearest", "box", "hamming", "lanczos"])
def test_gpu_decoding_only_for_plans_the_tensor_path_replays(interp):
    assert recipe_for([CFG], gpu=True).jpeg_bytes and gpu_refusal(recipe_for([CFG]).preps) is None
    assert recipe_for([dict(CFG, interpolation="bilinear")], gpu=True).jpeg_bytes
    odd = recipe_for([CFG, dict(CFG, interpolation=interp)], gpu=True)  # one such model is enough
    assert not odd.jpeg_bytes and odd.preps[1].plan.interpolation == interp
    assert gpu_refusal(odd.preps) == f"{interp} interpolation has no tensor equivalent (only bilinear and bicubic)"
    no_plan = recipe_for([dict(CFG, mean=(0.5,), std=(0.5,))], gpu=True)  # 1-channel normalisation: timm's own
    assert no_plan.preps[0].plan is None and not no_plan.jpeg_bytes
    assert gpu_refusal(no_plan.preps).startswith("a model's preprocessing has no exact plan")


def test_models_the_tensor_path_cannot_serve_are_decoded_on_the_cpu(bad_jpegs):
    """A JPEG amid other files, for a model with no plan and one with lanczos: the CPU path's exact inputs."""
    paths = [GOOD[0], GOOD[1], bad_jpegs[0], GOOD[2]]
    configs = [dict(CFG, mean=(0.5,), std=(0.5,)), dict(CFG, interpolation="lanczos")]
    got, failures = run_batches(paths, recipe_for(configs, gpu=True))
    want, want_failures = run_batches(paths, recipe_for(configs))
    assert failures == want_failures and list(got) == list(want) == [str(p) for p in GOOD[:3]]
    assert all(torch.equal(a, b) for p in want for a, b in zip(got[p], want[p]))


def test_cli_gpu_decode_with_a_lanczos_model_runs(cli, tmp_path):
    """Used to stop at the first batch (NotExact from resize_crop_tensor); now the CPU path's features."""
    model = make_local_dir(tmp_path / "lanczos", num_classes=0, cfg={"interpolation": "lanczos"})
    a, b = tmp_path / "a.npy", tmp_path / "b.npy"
    common = ("--model", f"local-dir:{model}", "--mode", "cls", "--device", "auto")
    r = cli("features", GOOD[0], GOOD[1], "-o", a, *common, "--gpu-decode")
    assert r.exit_code == 0, r.stderr
    assert "--gpu-decode: lanczos interpolation has no tensor equivalent" in r.stderr  # said once, not silent
    assert json.loads(a.with_suffix(".json").read_text())["settings"]["decode"] == "exact"  # what actually ran
    assert cli("features", GOOD[0], GOOD[1], "-o", b, *common).exit_code == 0
    assert np.array_equal(np.load(a), np.load(b))
