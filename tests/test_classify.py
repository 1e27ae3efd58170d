"""`vitcli classify` against timm's own forward: local-dir, checkpoints, labels, JSON/CSV, bad files, offline."""

from __future__ import annotations

import csv
import json
import os
import pickle
import shutil
import subprocess
import sys
import time

import pytest
import timm
import torch
from safetensors.torch import save_file

from conftest import DATA, LABELS, make_local_dir
from vitcli.imaging import open_image

IMAGES = [DATA / "chelsea.jpg", DATA / "coffee.jpg", DATA / "camera-gray.png", DATA / "horse-rgba.png"]


def timm_topk(name: str, paths, k: int, checkpoint_sd: dict | None = None, num_classes: int | None = None):
    """Reference: timm's own model, data config, transform and forward."""
    kw = {} if num_classes is None else {"num_classes": num_classes}
    model = timm.create_model(name, pretrained=checkpoint_sd is None, **kw).eval()
    if checkpoint_sd is not None:
        model.load_state_dict(checkpoint_sd)
    t = timm.data.create_transform(**timm.data.resolve_data_config({}, model=model))
    x = torch.stack([t(open_image(p).image) for p in paths])
    with torch.no_grad():
        p, i = model(x).softmax(-1).topk(k)
    return i.tolist(), p.tolist()


def test_local_dir_equals_timm(cli, tiny_dir):
    name = f"local-dir:{tiny_dir}"
    r = cli("classify", *IMAGES, "--model", name, "--top-k", "3", "--batch-size", "3", "--json")
    assert r.exit_code == 0, r.stderr
    d = r.json()
    idx, prob = timm_topk(name, IMAGES, 3)
    assert [x["image"] for x in d["results"]] == [str(p) for p in IMAGES]
    for res, ii, pp in zip(d["results"], idx, prob):
        assert [t["index"] for t in res["top"]] == ii
        assert [t["prob"] for t in res["top"]] == pytest.approx(pp, abs=1e-6)
        assert [t["label"] for t in res["top"]] == [LABELS[i] for i in ii]
        assert [t["prob"] for t in res["top"]] == sorted((t["prob"] for t in res["top"]), reverse=True)
    assert d["skipped"] == []
    assert d["model"]["source"] == "local-dir" and d["model"]["pretrained"] is True
    assert d["model"]["data_config"]["mean"] == pytest.approx([0.4, 0.5, 0.6])  # the model's own, not ImageNet's


def _other_weights(seed: int, num_classes: int = 5) -> dict:
    torch.manual_seed(seed)
    from conftest import TINY

    return timm.create_model("vit_tiny_patch16_224", pretrained=False, num_classes=num_classes, **TINY).state_dict()


@pytest.mark.parametrize("fmt", ["safetensors", "pth", "pth-state_dict", "bin-model"])
def test_checkpoint_formats(cli, tiny_dir, tmp_path, fmt):
    sd = _other_weights(7)
    if fmt == "safetensors":
        path = tmp_path / "w.safetensors"
        save_file(sd, path)
    else:
        path = tmp_path / ("w.pth" if fmt.startswith("pth") else "w.bin")
        obj = {"pth": sd, "pth-state_dict": {"state_dict": sd, "epoch": 3}, "bin-model": {"model": sd}}[fmt]
        torch.save(obj, path)
    name = f"local-dir:{tiny_dir}"
    d = cli("classify", IMAGES[0], "--model", name, "--checkpoint", path, "-k", "5", "--json").json()
    idx, prob = timm_topk(name, IMAGES[:1], 5, checkpoint_sd=sd)
    assert [t["index"] for t in d["results"][0]["top"]] == idx[0]
    assert [t["prob"] for t in d["results"][0]["top"]] == pytest.approx(prob[0], abs=1e-6)
    assert d["model"]["weights"] == f"checkpoint {path}"


def test_checkpoint_head_size_is_read_from_the_checkpoint(cli, tiny_dir, tmp_path):
    path = tmp_path / "seven.safetensors"
    save_file(_other_weights(3, num_classes=7), path)
    d = cli("classify", IMAGES[0], "--model", f"local-dir:{tiny_dir}", "--checkpoint", path, "-k", "7", "--json").json()
    assert d["model"]["num_classes"] == 7
    assert {t["label"] for t in d["results"][0]["top"]} == {f"class {i}" for i in range(7)}


class Payload:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_malicious_pickle_is_refused_and_never_runs(cli, tiny_dir, tmp_path):
    marker = tmp_path / "pwned"
    path = tmp_path / "evil.pth"
    with open(path, "wb") as f:
        pickle.dump({"state_dict": Payload(marker)}, f)
    torch_style = tmp_path / "evil2.pth"
    torch.save({"model": Payload(marker)}, torch_style)
    for p in (path, torch_style):
        r = cli("classify", IMAGES[0], "--model", f"local-dir:{tiny_dir}", "--checkpoint", p)
        assert r.exit_code == 1 and "refused" in r.stderr and "Traceback" not in r.stderr
        assert len(r.stderr.strip().splitlines()) == 1
    assert not marker.exists()


def test_imagenet_1k_names(cli, tmp_path):
    d = make_local_dir(tmp_path / "in1k", seed=4, num_classes=1000)
    res = cli("classify", IMAGES[0], "--model", f"local-dir:{d}", "-k", "10", "--json").json()
    info = timm.data.ImageNetInfo("imagenet-1k")
    top = res["results"][0]["top"]
    assert len(top) == 10
    for t in top:
        assert t["label"] == info.index_to_description(t["index"])


def test_labels_file(cli, tiny_dir, tmp_path):
    labels = tmp_path / "labels.txt"
    labels.write_text("\n".join(["A", "B", "C", "D", "E"]) + "\n")
    d = cli("classify", IMAGES[0], "--model", f"local-dir:{tiny_dir}", "--labels", labels, "--json").json()
    assert {t["label"] for t in d["results"][0]["top"]} == set("ABCDE")
    labels.write_text("A\nB\n")
    r = cli("classify", IMAGES[0], "--model", f"local-dir:{tiny_dir}", "--labels", labels)
    assert r.exit_code == 2 and "2 labels" in r.stderr and "5 classes" in r.stderr


def test_unreadable_labels_fail_before_the_model_loads(cli, tiny_dir, tmp_path, monkeypatch):
    from vitcli.backend import models

    loads = []
    monkeypatch.setattr(models, "load_model", lambda *a, **kw: loads.append(a))
    (tmp_path / "binary.txt").write_bytes(b"\xff\xfe\x00bad")
    for bad in (tmp_path / "missing.txt", tmp_path / "binary.txt"):
        r = cli("classify", IMAGES[0], "--model", f"local-dir:{tiny_dir}", "--labels", bad)
        assert r.exit_code == 2 and f"--labels {bad}: cannot read" in r.stderr and "UTF-8" in r.stderr, r.stderr
    assert loads == []


def test_csv(cli, tiny_dir, tmp_path):
    out = tmp_path / "preds.csv"
    r = cli("classify", *IMAGES[:2], "--model", f"local-dir:{tiny_dir}", "-k", "2", "--csv", out)
    assert r.exit_code == 0, r.stderr
    rows = list(csv.reader(out.open()))
    assert rows[0] == ["image", "index_1", "label_1", "prob_1", "index_2", "label_2", "prob_2"]
    assert [row[0] for row in rows[1:]] == [str(p) for p in IMAGES[:2]]
    assert all(row[2] in LABELS and 0 < float(row[3]) <= 1 for row in rows[1:])
    r = cli("classify", IMAGES[0], "--model", f"local-dir:{tiny_dir}", "--csv", out)
    assert r.exit_code == 1 and "already exists" in r.stderr


def test_mixed_batch_with_workers(cli, tiny_dir, tmp_path):
    folder = tmp_path / "imgs"
    folder.mkdir()
    for i, p in enumerate(IMAGES):
        shutil.copy(p, folder / f"{i}_{p.name}")
    (folder / "2_broken.jpg").write_bytes(IMAGES[0].read_bytes()[:3000])
    (folder / "5_text.png").write_text("not an image")
    r = cli("classify", folder, "--model", f"local-dir:{tiny_dir}", "--batch-size", "2", "--workers", "2", "--json")
    assert r.exit_code == 1
    d = json.loads(r.stdout)
    names = sorted(p.name for p in folder.iterdir())
    good = [str(folder / n) for n in names if "broken" not in n and "text" not in n]
    assert [x["image"] for x in d["results"]] == good  # sorted, in order, none lost
    assert {s["source"]: s["reason"].split(" (")[0] for s in d["skipped"]} == {
        str(folder / "2_broken.jpg"): "truncated or corrupt image", str(folder / "5_text.png"): "not an image PIL can read"}
    assert "Skipped: " + str(folder / "2_broken.jpg") in r.stderr
    assert r.stderr.strip().splitlines()[-1].startswith("Error: 2 of 6 inputs could not be read")
    idx, _ = timm_topk(f"local-dir:{tiny_dir}", good, 5)
    assert [[t["index"] for t in x["top"]] for x in d["results"]] == idx


def test_one_bad_image_alone(cli, tiny_dir, tmp_path):
    bad = tmp_path / "x.jpg"
    bad.write_text("nope")
    r = cli("classify", bad, "--model", f"local-dir:{tiny_dir}", "--json")
    assert r.exit_code == 1 and json.loads(r.stdout)["results"] == []
    assert f"Skipped: {bad}: not an image PIL can read" in r.stderr


def test_inputs_glob_and_recursive(cli, tiny_dir, tmp_path):
    (tmp_path / "a" / "b").mkdir(parents=True)
    shutil.copy(IMAGES[0], tmp_path / "a" / "top.jpg")
    shutil.copy(IMAGES[1], tmp_path / "a" / "b" / "deep.jpg")
    name = f"local-dir:{tiny_dir}"
    images = lambda *args: [x["image"] for x in cli("classify", *args, "--model", name, "--json").json()["results"]]  # noqa: E731
    assert images(tmp_path / "a") == [str(tmp_path / "a" / "top.jpg")]
    assert images(tmp_path / "a", "--recursive") == [str(tmp_path / "a" / "b" / "deep.jpg"), str(tmp_path / "a" / "top.jpg")]
    assert images(str(tmp_path / "a" / "**" / "*.jpg")) == [str(tmp_path / "a" / "b" / "deep.jpg"), str(tmp_path / "a" / "top.jpg")]
    r = cli("classify", tmp_path / "a" / "b" / "nothing", "--model", name)
    assert r.exit_code == 1 and "nothing: no such file" in r.stderr  # a missing file is reported like any bad input


def test_no_pretrained_is_loud(cli):
    r = cli("classify", IMAGES[0], "--model", "vit_tiny_patch16_224", "--no-pretrained", "-k", "1")
    assert r.exit_code == 0
    assert "random weights" in r.stderr and "mean nothing" in r.stdout


def test_model_without_head(cli, tiny_reg_dir):
    r = cli("classify", IMAGES[0], "--model", f"local-dir:{tiny_reg_dir}")
    assert r.exit_code == 1 and "no classifier head" in r.stderr and "vitcli features" in r.stderr


def test_unknown_model_suggests(cli):
    r = cli("classify", IMAGES[0], "--model", "vit_base_patch16_224.augreg2_in21k_ft_in1kk")
    assert r.exit_code == 1 and "did you mean vit_base_patch16_224.augreg2_in21k_ft_in1k" in r.stderr


def test_offline_error_is_clean_and_fast(tmp_path):
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_HOME": str(tmp_path / "hf"), "VITCLI_PROGRESS": "0"}
    start = time.monotonic()
    p = subprocess.run([sys.executable, "-m", "vitcli", "classify", str(IMAGES[0])], env=env, capture_output=True,
                       text=True, timeout=120)
    elapsed = time.monotonic() - start
    assert p.returncode == 1
    lines = p.stderr.strip().splitlines()
    assert len(lines) == 1, p.stderr
    line = lines[0]
    assert "vit_base_patch16_224.augreg2_in21k_ft_in1k" in line and "timm/vit_base_patch16_224" in line
    for way_out in ("HF_HOME", "local-dir:", "--checkpoint", "--no-pretrained"):
        assert way_out in line
    assert elapsed < 60  # no network retries under HF_HUB_OFFLINE (they take ~50 s here)


def populate_hf_cache(home, repo: str, files: dict) -> None:
    """Lay out files as huggingface_hub's cache holds a downloaded repository (refs/main -> snapshot)."""
    folder = home / "hub" / f"models--{repo.replace('/', '--')}"
    sha = "0" * 40
    (folder / "refs").mkdir(parents=True, exist_ok=True)
    (folder / "refs" / "main").write_text(sha)
    snap = folder / "snapshots" / sha
    snap.mkdir(parents=True, exist_ok=True)
    for name, src in files.items():
        shutil.copy(src, snap / name)


def test_hub_weights_come_from_a_populated_cache(tmp_path, tiny_dir):
    """The download path itself (timm -> huggingface_hub), served by a local cache under HF_HUB_OFFLINE=1."""
    home = tmp_path / "hf"
    populate_hf_cache(home, "vitcli-test/tiny", {f.name: f for f in tiny_dir.iterdir()})
    torch.manual_seed(11)
    sd = timm.create_model("vit_tiny_patch16_224", pretrained=False).state_dict()  # the real architecture
    weights = tmp_path / "model.safetensors"
    save_file(sd, weights)
    populate_hf_cache(home, "timm/vit_tiny_patch16_224.augreg_in21k_ft_in1k", {"model.safetensors": weights})
    env = {**os.environ, "HF_HOME": str(home), "HF_HUB_OFFLINE": "1", "VITCLI_PROGRESS": "0"}

    def classify(model):
        p = subprocess.run([sys.executable, "-m", "vitcli", "classify", str(IMAGES[0]), "--model", model, "--json"],
                           env=env, capture_output=True, text=True, timeout=300)
        assert p.returncode == 0, p.stderr
        return json.loads(p.stdout)

    d = classify("hf-hub:vitcli-test/tiny")
    assert d["model"]["source"] == "hf-hub" and d["model"]["weights"] == "hf-hub vitcli-test/tiny"
    idx, _ = timm_topk(f"local-dir:{tiny_dir}", IMAGES[:1], 5)  # the same files read as a folder
    assert [t["index"] for t in d["results"][0]["top"]] == idx[0]
    assert {t["label"] for t in d["results"][0]["top"]} <= set(LABELS)

    d = classify("vit_tiny_patch16_224.augreg_in21k_ft_in1k")
    assert d["model"]["weights"] == "hf-hub timm/vit_tiny_patch16_224.augreg_in21k_ft_in1k"
    idx, _ = timm_topk("vit_tiny_patch16_224.augreg_in21k_ft_in1k", IMAGES[:1], 5, checkpoint_sd=sd)
    assert [t["index"] for t in d["results"][0]["top"]] == idx[0]
    info = timm.data.ImageNetInfo("imagenet-1k")
    assert [t["label"] for t in d["results"][0]["top"]] == [info.index_to_description(i) for i in idx[0]]
