"""docs/train_digits.py: a short, seeded training run on scikit-learn's bundled digits learns, saves a folder
that timm's local-dir loader (and vitcli) reads back with the same predictions, and its position embedding
has neighbour > far similarity. Offline: the digits ship with scikit-learn."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest
import timm
import torch
from PIL import Image

from vitcli.backend.positions import similarity_figures

ROOT = Path(__file__).resolve().parent.parent
SCRIPT = ROOT / "docs" / "train_digits.py"
COMMITTED = ROOT / "docs" / "models" / "digits"  # the tutorial's model: `python docs/train_digits.py docs/models/digits`
EPOCHS = 8  # about 25 s of CPU on one thread; the full run (60 epochs) is the docs generator's job

# Measured with seed 0, 8 epochs (torch 2.14.1, timm 1.0.31, one thread, deterministic algorithms):
# accuracy 0.4083 (147 of 360 held-back digits; chance is 0.10), 0.2528 with the position embedding zeroed,
# position embedding neighbour 0.2339 / far 0.0822. Margins leave room for another CPU's float rounding.
MIN_ACCURACY = 0.35
MIN_POS_GAIN = 0.08  # accuracy lost when the position embedding is zeroed
MIN_NEAR_OVER_FAR = 0.10


def load_script():
    spec = importlib.util.spec_from_file_location("train_digits", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def script():
    return load_script()


@pytest.fixture(scope="module")
def trained(script, tmp_path_factory):
    out = tmp_path_factory.mktemp("digits")
    return out, script.train(out, epochs=EPOCHS, seed=0)


def test_short_run_learns_digits_and_positions(trained):
    out, metrics = trained
    assert metrics["epochs"] == EPOCHS and metrics["seed"] == 0
    assert metrics["test_digits"] == 360 and metrics["train_digits"] == 1437  # 20 % of 1,797 held back
    assert metrics["accuracy"] >= MIN_ACCURACY
    confusion = np.array(metrics["confusion"])
    assert confusion.shape == (10, 10) and confusion.sum() == 360
    # Stratified: each digit's share of the 360 is 20 % of its count in load_digits (178, 182, 177, ...), rounded.
    assert confusion.sum(axis=1).tolist() == [36, 36, 35, 37, 36, 37, 36, 36, 35, 36]
    assert np.trace(confusion) == metrics["correct"] == round(metrics["accuracy"] * 360)
    # The model uses where each patch is: zeroing the learned position embedding costs accuracy.
    assert metrics["accuracy_pos_embed_zeroed"] <= metrics["accuracy"] - MIN_POS_GAIN
    # Learned positions: neighbouring positions' embeddings are more alike than far-apart ones'.
    pos = metrics["posembed"]
    assert pos["grid"] == [8, 8]
    assert pos["neighbour_similarity"] >= pos["far_similarity"] + MIN_NEAR_OVER_FAR
    ref = metrics["sincos_reference"]
    assert ref["neighbour_similarity"] > ref["far_similarity"] + 0.1
    assert json.loads((out / "metrics.json").read_text()) == metrics


def test_saved_folder_loads_through_timm_local_dir_with_the_same_predictions(trained, script):
    out, metrics = trained
    assert metrics["reloaded_max_logit_diff"] == 0.0  # measured inside train(): in-memory vs reloaded
    model = timm.create_model(f"local-dir:{out}", pretrained=True).eval()
    cfg = model.pretrained_cfg
    assert tuple(cfg["input_size"]) == (3, 32, 32) and cfg["crop_pct"] == 1.0 and cfg["tag"] == "sklearn_digits"
    assert tuple(cfg["mean"]) == (metrics["mean"],) * 3 and tuple(cfg["std"]) == (metrics["std"],) * 3
    assert list(cfg["label_names"]) == [str(k) for k in range(10)]
    assert "url" not in cfg and "license" not in cfg  # not the ImageNet checkpoint's

    # Every held-back digit through timm's own eval transform for the saved config (as vitcli runs it):
    # the same accuracy and confusion matrix as the in-memory model had.
    transform = timm.data.create_transform(**timm.data.resolve_data_config({}, model=model))
    pictures, labels, _, test_idx = script.digit_pictures()
    x = torch.stack([transform(Image.fromarray(pictures[i])) for i in test_idx])
    with torch.no_grad():
        predicted = model(x).argmax(-1).numpy()
    confusion = np.zeros((10, 10), dtype=int)
    np.add.at(confusion, (labels[test_idx], predicted), 1)
    assert confusion.tolist() == metrics["confusion"]
    # ... and timm's transform gives exactly the tensors training normalised by hand.
    by_hand = (torch.from_numpy(pictures[test_idx]).permute(0, 3, 1, 2).float() / 255 - metrics["mean"]) / metrics["std"]
    assert torch.allclose(x, by_hand, atol=1e-5)

    # The sample PNGs are held-back digits exactly as tested, with the in-memory model's predictions.
    for k, sample in enumerate(metrics["samples"]):
        png = np.asarray(Image.open(out / sample["file"]))
        assert sample["label"] == k and png.shape == (32, 32, 3)
        assert np.array_equal(png, pictures[sample["dataset_index"]])
        assert labels[sample["dataset_index"]] == k and sample["dataset_index"] in test_idx
        with torch.no_grad():
            probs = model(transform(Image.open(out / sample["file"]).convert("RGB"))[None]).softmax(-1)[0]
        assert int(probs.argmax()) == sample["predicted"]
        assert float(probs.max()) == pytest.approx(sample["probability"], abs=1e-4)

    # The posembed figures in metrics.json are those of the saved table (CLS row dropped), as posembed reads it.
    table = model.pos_embed.detach()[0, model.num_prefix_tokens:].numpy()
    near, far = similarity_figures(table, (8, 8))
    assert (round(near, 4), round(far, 4)) == (metrics["posembed"]["neighbour_similarity"],
                                                metrics["posembed"]["far_similarity"])


def test_vitcli_reads_the_folder(trained, cli):
    out, metrics = trained
    sample = metrics["samples"][3]
    run = cli("classify", str(out / sample["file"]), "--model", f"local-dir:{out}", "--json")
    assert run.exit_code == 0, run.stderr
    top = run.json()["results"][0]["top"][0]
    assert top["label"] == str(sample["predicted"]) and top["prob"] == pytest.approx(sample["probability"], abs=1e-4)
    run = cli("posembed", "--model", f"local-dir:{out}", "--json")
    assert run.exit_code == 0, run.stderr
    got = run.json()
    assert got["neighbour_similarity"] == pytest.approx(metrics["posembed"]["neighbour_similarity"], abs=1e-4)
    assert got["far_similarity"] == pytest.approx(metrics["posembed"]["far_similarity"], abs=1e-4)


def test_committed_model_is_what_metrics_json_and_the_tutorial_say(cli):
    """docs/models/digits (committed; the tutorial reads it) loads through vitcli, classifies its sample digits
    as its metrics.json says, has the position-embedding figures metrics.json gives, and the tutorial quotes
    metrics.json's numbers."""
    metrics = json.loads((COMMITTED / "metrics.json").read_text())
    assert (metrics["epochs"], metrics["seed"]) == (60, 0)  # made with the script's defaults
    assert metrics["accuracy"] >= 0.95 and metrics["accuracy_pos_embed_zeroed"] <= metrics["accuracy"] - 0.3
    assert metrics["posembed"]["neighbour_similarity"] >= metrics["posembed"]["far_similarity"] + 0.3

    model = f"local-dir:{COMMITTED}"
    run = cli("classify", str(COMMITTED / "samples" / "digit-*.png"), "--model", model, "--device", "cpu", "--json")
    assert run.exit_code == 0, run.stderr
    got = {Path(r["image"]).name: r["top"][0] for r in run.json()["results"]}
    assert sorted(got) == [f"digit-{k}.png" for k in range(10)]
    for sample in metrics["samples"]:
        top = got[Path(sample["file"]).name]
        assert top["label"] == str(sample["predicted"]) == str(sample["label"])  # every sample right
        assert top["prob"] == pytest.approx(sample["probability"], abs=1e-4)
    run = cli("posembed", "--model", model, "--json")
    assert run.exit_code == 0, run.stderr
    assert run.json()["grid"] == metrics["posembed"]["grid"]
    assert run.json()["neighbour_similarity"] == pytest.approx(metrics["posembed"]["neighbour_similarity"], abs=1e-4)
    assert run.json()["far_similarity"] == pytest.approx(metrics["posembed"]["far_similarity"], abs=1e-4)

    tutorial = " ".join((ROOT / "docs" / "tutorial.md").read_text().split())  # one line: prose wraps anywhere
    assert "python docs/train_digits.py docs/models/digits" in tutorial and "60 epochs, seed 0" in tutorial
    assert f"{metrics['correct']} of the {metrics['test_digits']} held-back digits" in tutorial
    accuracy, zeroed = f"{100 * metrics['accuracy']:.1f} %", f"{100 * metrics['accuracy_pos_embed_zeroed']:.1f} %"
    assert f"correctly ({accuracy};" in tutorial and f"{zeroed} of the held-back digits correctly instead of {accuracy}" \
        in tutorial
    near = metrics["posembed"]["neighbour_similarity"]
    assert f"mean cosine similarity of {near:.2f}" in tutorial
    ref = metrics["sincos_reference"]
    assert f"the reference is {ref['neighbour_similarity']:.2f} against {ref['far_similarity']:.2f}, where the " \
           f"learned table has {near:.2f} against about 0" in tutorial
    assert abs(metrics["posembed"]["far_similarity"]) < 0.005  # "about 0"


def test_same_seed_same_weights(script, tmp_path):
    """Seeded and deterministic: two one-epoch runs with one seed save byte-identical weights and metrics; the
    process's thread count and deterministic-algorithms flag are given back."""
    threads, deterministic = torch.get_num_threads(), torch.are_deterministic_algorithms_enabled()
    runs = [script.train(tmp_path / name, epochs=1, seed=3) for name in "ab"]
    assert (tmp_path / "a" / "model.safetensors").read_bytes() == (tmp_path / "b" / "model.safetensors").read_bytes()
    drop = lambda m: {k: v for k, v in m.items() if k != "train_seconds"}  # noqa: E731
    assert drop(runs[0]) == drop(runs[1])
    assert runs[0]["accuracy"] > 0.1  # and it did train: one epoch already beats chance
    assert (torch.get_num_threads(), torch.are_deterministic_algorithms_enabled()) == (threads, deterministic)


def test_command_line(script, tmp_path, capsys):
    with pytest.raises(SystemExit) as e:
        script.main(["--help"])
    assert e.value.code == 0 and "OUT_DIR" in capsys.readouterr().out.upper()
    with pytest.raises(ValueError, match="epochs must be at least 1"):
        script.train(tmp_path, epochs=0)
