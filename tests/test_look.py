"""attention, rollout, posembed and inspect against references computed in the tests from timm's weights."""

from __future__ import annotations

import numpy as np
import pytest
import timm
import torch
from PIL import Image

from conftest import DATA, make_local_dir
from test_imaging import bad_inputs
from vitcli.imaging import open_image

IMG = DATA / "chelsea.jpg"


@pytest.fixture(scope="module")
def qknorm_dir(tmp_path_factory):
    return make_local_dir(tmp_path_factory.mktemp("qk"), seed=8, num_classes=0, qk_norm=True, depth=3)


def manual_attention(model, x, block: int) -> np.ndarray:
    """softmax(q·kᵀ/√d) of `block`, from its own qkv weights and q/k norms, on the block's real input."""
    captured = {}
    model.blocks[block].norm1.register_forward_hook(lambda m, i, o: captured.setdefault("x", o))
    with torch.no_grad():
        model.forward_features(x)
        attn = model.blocks[block].attn
        h = captured["x"]  # (B, T, D): what attention sees
        B, T, D = h.shape
        qkv = (h @ attn.qkv.weight.T + attn.qkv.bias).reshape(B, T, 3, attn.num_heads, D // attn.num_heads)
        q, k = qkv[:, :, 0].transpose(1, 2), qkv[:, :, 1].transpose(1, 2)  # (B, heads, T, hd)
        q, k = attn.q_norm(q), attn.k_norm(k)
        return torch.softmax(q @ k.transpose(-1, -2) / (D // attn.num_heads) ** 0.5, dim=-1).numpy()


def model_and_input(model_dir):
    model = timm.create_model(f"local-dir:{model_dir}", pretrained=True).eval()
    t = timm.data.create_transform(**timm.data.resolve_data_config({}, model=model))
    return model, t(open_image(IMG).image).unsqueeze(0)


@pytest.mark.parametrize("fixture", ["tiny_dir", "tiny_reg_dir", "tiny_nocls_dir", "qknorm_dir"])
def test_attention_equals_manual_softmax(cli, tmp_path, fixture, request):
    model_dir = request.getfixturevalue(fixture)
    model, x = model_and_input(model_dir)
    for layer in range(len(model.blocks)):
        npy = tmp_path / f"a{layer}.npy"
        r = cli("attention", IMG, "--model", f"local-dir:{model_dir}", "--layer", str(layer), "--npy", npy,
                "--device", "cpu", "--json")
        assert r.exit_code == 0, r.stderr
        got = np.load(npy)
        want = manual_attention(model, x, layer)[0]
        tokens = model.patch_embed.num_patches + model.num_prefix_tokens
        assert got.shape == want.shape == (model.blocks[layer].attn.num_heads, tokens, tokens)
        assert np.allclose(got, want, atol=1e-5)
        assert np.allclose(got.sum(-1), 1, atol=1e-5)


def test_attention_recording_restores_fused_attention(tiny_dir):
    from vitcli.backend import internals
    from vitcli.backend.models import load_model
    from vitcli.requests import ModelRequest

    m = load_model(ModelRequest(name=f"local-dir:{tiny_dir}", device="cpu"))
    fused = [b.attn.fused_attn for b in m.module.blocks]
    internals.attention(m, internals.model_input(m, open_image(IMG).image), [0, 1])
    assert [b.attn.fused_attn for b in m.module.blocks] == fused
    with pytest.raises(RuntimeError), internals.recording_attention(m.module, [0]):
        assert m.module.blocks[0].attn.fused_attn is False  # switched off while recording
        raise RuntimeError
    assert [b.attn.fused_attn for b in m.module.blocks] == fused  # and back, even after a failure


def reference_rollout(attns, discard_ratio=0.0):
    result = np.eye(attns[0].shape[-1])
    for a in attns:
        m = a.mean(0)
        if discard_ratio:
            flat = m.flatten()
            order = np.argsort(flat, kind="stable")[: int(len(flat) * discard_ratio)]
            for i in order:
                if i != 0:
                    flat[i] = 0
            m = flat.reshape(m.shape)
        m = (m + np.eye(len(m)))
        m = m / m.sum(1, keepdims=True)
        result = m @ result
    return result


@pytest.mark.parametrize("ratio", [0.0, 0.6])
def test_rollout_equals_reference(cli, tmp_path, tiny_reg_dir, ratio):
    model, x = model_and_input(tiny_reg_dir)
    attns = [manual_attention(model, x, b)[0] for b in range(len(model.blocks))]
    npy = tmp_path / "r.npy"
    args = ["--discard-ratio", str(ratio)] if ratio else []
    r = cli("attention", IMG, "--model", f"local-dir:{tiny_reg_dir}", "--rollout", *args, "--npy", npy, "-o",
            tmp_path / "r.png")
    assert r.exit_code == 0, r.stderr
    got = np.load(npy)
    assert got.shape == (1, 21, 21)
    assert np.allclose(got[0], reference_rollout(attns, ratio), atol=1e-5)
    with Image.open(tmp_path / "r.png") as im:
        im.load()
        assert im.format == "PNG" and im.width > 300


def test_attention_picture_and_prefix(cli, tmp_path, tiny_reg_dir):
    out = tmp_path / "a.png"
    d = cli("attention", IMG, "--model", f"local-dir:{tiny_reg_dir}", "-o", out, "--json").json()
    model, x = model_and_input(tiny_reg_dir)
    a = manual_attention(model, x, len(model.blocks) - 1)[0]  # (heads, T, T) of the last block
    assert d["registers"] == 4
    assert d["prefix_attention"]["cls"] == pytest.approx(float(a[:, 0, 0].mean()), abs=1e-6)
    assert d["prefix_attention"]["registers"] == pytest.approx(a[:, 0, 1:5].mean(0).tolist(), abs=1e-6)
    assert d["grid"] == [4, 4] and d["tokens"] == 21 and d["outputs"]["picture"] == str(out)
    with Image.open(out) as im:
        im.load()
        assert im.mode == "RGB" and im.height > 100
    r = cli("attention", IMG, "--model", f"local-dir:{tiny_reg_dir}", "--head", "7")
    assert r.exit_code == 2 and "--head" in r.stderr


def near_far(sim: np.ndarray, gh: int, gw: int) -> tuple[float, float]:
    """Mean similarity of 4-neighbour positions and of positions at Manhattan distance >= (gh + gw) // 2, counted
    pair by pair."""
    near, far = [], []
    for i in range(gh * gw):
        for j in range(gh * gw):
            d = abs(i // gw - j // gw) + abs(i % gw - j % gw)
            if d == 1:
                near.append(sim[i, j])
            if d >= max(1, (gh + gw) // 2):
                far.append(sim[i, j])
    return float(np.mean(near)), float(np.mean(far))


@pytest.mark.parametrize("fixture,prefix_rows", [("tiny_dir", 1), ("tiny_reg_dir", 0)])
def test_posembed_native_and_resampled(cli, tmp_path, fixture, prefix_rows, request):
    from timm.layers import resample_abs_pos_embed

    model_dir = request.getfixturevalue(fixture)
    model = timm.create_model(f"local-dir:{model_dir}", pretrained=True)
    pos = model.pos_embed.detach()

    def cos(table):
        t = table[0, prefix_rows:].double()
        t = t / t.norm(dim=-1, keepdim=True)
        return (t @ t.T).numpy()

    npy = tmp_path / "s.npy"
    d = cli("posembed", "--model", f"local-dir:{model_dir}", "--npy", npy, "-o", tmp_path / "s.png", "--json").json()
    assert d["grid"] == [4, 4] and np.allclose(np.load(npy), cos(pos), atol=1e-5)
    assert d["embed_dim"] == 32 and d["reference"] is None
    assert (d["neighbour_similarity"], d["far_similarity"]) == pytest.approx(near_far(cos(pos), 4, 4), abs=1e-6)
    npy2 = tmp_path / "s48.npy"
    d = cli("posembed", "--model", f"local-dir:{model_dir}", "--size", "48", "--npy", npy2, "--json").json()
    want = cos(resample_abs_pos_embed(pos, new_size=[6, 6], old_size=[4, 4], num_prefix_tokens=prefix_rows))
    assert d["grid"] == [6, 6] and d["resampled"] is True and np.allclose(np.load(npy2), want, atol=1e-5)
    with Image.open(tmp_path / "s.png") as im:
        im.load()
        assert im.format == "PNG"


def test_posembed_without_learned_table(cli, tmp_path):
    d = make_local_dir(tmp_path / "nopos", seed=9, num_classes=0, pos_embed="none")
    r = cli("posembed", "--model", f"local-dir:{d}")
    assert r.exit_code == 1 and "no learned absolute position embedding" in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1


def sincos_cosines(gh: int, gw: int, dim: int) -> np.ndarray:
    """Cosine similarities of timm's 2-D sine-cosine table, computed here."""
    from timm.layers import build_sincos2d_pos_embed

    t = build_sincos2d_pos_embed([gh, gw], dim=dim).double()
    t = t / t.norm(dim=-1, keepdim=True)
    return (t @ t.T).numpy()


def test_posembed_sincos_reference(cli, tmp_path, tiny_dir):
    """--reference sincos: timm's table at the default model's shape (ViT-B/16 at 224), or at --model's grid and
    width with no weights read (the folder below has no weights file), or at --size's grid."""
    from vitcli.backend.models import DEFAULT_MODEL

    npy = tmp_path / "ref.npy"
    d = cli("posembed", "--reference", "sincos", "--npy", npy, "-o", tmp_path / "ref.png", "--json").json()
    assert d["grid"] == [14, 14] and d["positions"] == 196 and d["embed_dim"] == 768 and d["resampled"] is False
    assert d["reference"]["name"] == "sincos" and d["reference"]["default_model"] is True
    assert d["reference"]["shape_from"] == d["model"]["name"] == DEFAULT_MODEL and d["model"]["device"] == "meta"
    want = sincos_cosines(14, 14, 768)
    assert np.allclose(np.load(npy), want, atol=1e-5)
    near, far = near_far(want, 14, 14)
    assert (d["neighbour_similarity"], d["far_similarity"]) == pytest.approx((near, far), abs=1e-6)
    assert near > far + 0.1  # a structured embedding: neighbours more alike than far positions
    with Image.open(tmp_path / "ref.png") as im:
        im.load()
        assert im.format == "PNG"

    shape_only = tmp_path / "config-only"
    shape_only.mkdir()
    (shape_only / "config.json").write_bytes((tiny_dir / "config.json").read_bytes())  # no model.safetensors
    d = cli("posembed", "--reference", "SINCOS", "--model", f"local-dir:{shape_only}", "--json").json()
    assert d["grid"] == [4, 4] and d["embed_dim"] == 32 and d["reference"]["default_model"] is False
    assert (d["neighbour_similarity"], d["far_similarity"]) == pytest.approx(near_far(sincos_cosines(4, 4, 32), 4, 4),
                                                                             abs=1e-6)
    d = cli("posembed", "--reference", "sincos", "--model", f"local-dir:{shape_only}", "--size", "64", "--json").json()
    assert d["grid"] == [8, 8] and d["resampled"] is False
    assert d["neighbour_similarity"] == pytest.approx(near_far(sincos_cosines(8, 8, 32), 8, 8)[0], abs=1e-6)

    r = cli("posembed", "--reference", "sincos")
    assert r.exit_code == 0
    assert "sine-cosine" in r.stdout and "(the default model): 16x16 px patches, 768 channels" in r.stdout
    assert "14x14 = 196" in r.stdout and f"{near:.3f}" in r.stdout and f"{far:.3f}" in r.stdout
    r = cli("posembed", "--reference", "sincos", "--model", f"local-dir:{tiny_dir}", "--checkpoint", tmp_path / "w.pth")
    assert r.exit_code == 2 and "--checkpoint" in r.stderr
    r = cli("posembed", "--reference", "learned")
    assert r.exit_code == 2 and "sincos" in r.stderr


@pytest.mark.parametrize("fixture,prefix", [("tiny_dir", 1), ("tiny_reg_dir", 5), ("tiny_nocls_dir", 0)])
def test_inspect_shuffle_patches(cli, tmp_path, fixture, prefix, request):
    """The CLI runs the shuffle experiment on the model's own preprocessed input with the seed given: the
    figures equal the backend's on timm's transform of the image, position embeddings matter and their absence
    is invisible; the picture is the model's input and its patches moved by the reported permutation."""
    from vitcli.backend.data import pil_stages
    from vitcli.backend.positions import shuffle_experiment, shuffle_patches
    from vitcli.commands.inspect import GAP, TILE_MIN, TITLE

    model_dir = request.getfixturevalue(fixture)
    out = tmp_path / "shuffle.png"
    d = cli("inspect", IMG, "--model", f"local-dir:{model_dir}", "--shuffle-patches", "--seed", "5", "-o", out,
            "--device", "cpu", "--json").json()
    model, x = model_and_input(model_dir)
    want = shuffle_experiment(model, x, seed=5)
    assert d["seed"] == 5 and d["permutation"] == want["permutation"] and d["grid"] == [4, 4] and d["patch"] == [8, 8]
    assert d["prefix_tokens"] == prefix and d["outputs"] == {"picture": str(out)}
    assert d["max_diff_with_pos"] == pytest.approx(want["max_diff_with_pos"], rel=1e-5)
    assert d["output_scale"] == pytest.approx(want["output_scale"], rel=1e-6)
    scale = d["output_scale"]
    assert d["max_diff_without_pos"] < 1e-4 * scale < 1e-2 * scale < d["max_diff_with_pos"]
    assert d["without_pos"]["pooled_max_diff"] < 1e-4 * scale
    assert d["with_pos"]["pooled_max_diff"] > 100 * max(d["without_pos"]["pooled_max_diff"], 1e-9)
    assert "shuffled" not in d

    seen = np.asarray(pil_stages(timm.data.resolve_data_config({}, model=model))(open_image(IMG).image))  # (32, 32, 3)
    moved = shuffle_patches(seen, d["permutation"], (8, 8))
    k = -(-TILE_MIN // 32)  # each pixel drawn as a k x k block
    with Image.open(out) as im:
        pic = np.asarray(im.convert("RGB"))
    top = GAP + TITLE
    for i, tile in enumerate((seen, moved)):
        left = GAP + i * (32 * k + GAP)
        drawn = pic[top:top + 32 * k, left:left + 32 * k]
        assert np.array_equal(drawn[::k, ::k], tile) and np.array_equal(drawn[k - 1::k, k - 1::k], tile)
    assert not np.array_equal(seen, moved)


def test_inspect_shuffle_patches_output_and_flags(cli, tmp_path, tiny_dir):
    r = cli("inspect", IMG, "--model", f"local-dir:{tiny_dir}", "--shuffle-patches")
    assert r.exit_code == 0, r.stderr
    lines = dict(line.split(None, 1) for line in r.stdout.splitlines()[:3])
    assert lines["shuffle"].startswith("16 patches (4x4 grid of 8x8 px) moved by a random permutation, seed 0")
    assert "with pos" in r.stdout and "float rounding" in r.stdout and "bag of patches" in r.stdout
    without = next(line for line in r.stdout.splitlines() if line.startswith("without pos"))
    assert "max difference ~0" in without and "min cosine 1.0000" in without
    d = cli("inspect", IMG, "--model", f"local-dir:{tiny_dir}", "--shuffle-patches", "--json").json()
    assert d["seed"] == 0 and d["outputs"] == {}

    for args, words in [(["--seed", "3"], "--seed goes with --shuffle-patches"),
                        (["-o", tmp_path / "x.png"], "--out goes with --shuffle-patches"),
                        (["--shuffle-patches", "--seed", "-1"], "--seed -1 must be at least 0")]:
        r = cli("inspect", IMG, "--model", f"local-dir:{tiny_dir}", *args)
        assert r.exit_code == 2 and words in r.stderr, (args, r.stderr)
    taken = tmp_path / "taken.png"
    taken.write_bytes(b"mine")
    r = cli("inspect", IMG, "--model", f"local-dir:{tiny_dir}", "--shuffle-patches", "-o", taken)
    assert r.exit_code == 1 and "already exists" in r.stderr and taken.read_bytes() == b"mine"
    nopos = make_local_dir(tmp_path / "nopos", seed=9, num_classes=0, pos_embed="none")
    r = cli("inspect", IMG, "--model", f"local-dir:{nopos}", "--shuffle-patches")
    assert r.exit_code == 1 and "no learned absolute position embedding" in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1


def test_inspect_values(cli, tiny_reg_dir):
    model, x = model_and_input(tiny_reg_dir)
    outs = []
    for blk in model.blocks:
        blk.register_forward_hook(lambda m, i, o: outs.append(o))
    with torch.no_grad():
        model.forward_features(x)
    d = cli("inspect", IMG, "--model", f"local-dir:{tiny_reg_dir}", "--json").json()
    assert [row["block"] for row in d["blocks"]] == [0, 1]
    for b, (row, o) in enumerate(zip(d["blocks"], outs)):
        norms = o[0, 5:].norm(dim=-1)
        assert row["norm_mean"] == pytest.approx(float(norms.mean()), rel=1e-5)
        assert row["norm_max"] == pytest.approx(float(norms.max()), rel=1e-5)
        assert row["norm_median"] == pytest.approx(float(norms.median()), rel=1e-5)
        assert row["max_over_median"] == pytest.approx(float(norms.max() / norms.median()), rel=1e-5)
        cos = torch.nn.functional.cosine_similarity(o[0, 0], o[0, 5:].mean(0), dim=0)
        assert row["cls_cos_mean_patch"] == pytest.approx(float(cos), abs=1e-5)
        a = manual_attention(model, x, b)[0][:, 0]  # (heads, T): the CLS query's attention
        entropy = -(a * np.log(np.clip(a, 1e-12, None))).sum(-1).mean()
        assert row["cls_attention_entropy"] == pytest.approx(float(entropy), rel=1e-5)
    r = cli("inspect", IMG, "--model", f"local-dir:{tiny_reg_dir}")
    assert r.exit_code == 0 and "CLS attn entropy" in r.stdout


@pytest.mark.parametrize("command", ["attention", "inspect"])
@pytest.mark.parametrize("kind", ["missing", "truncated", "not an image"])
def test_bad_images_clean_error(cli, tmp_path, tiny_dir, command, kind):
    path, words = bad_inputs(tmp_path)[kind]
    out = tmp_path / "out"
    out.mkdir()
    extra = ["-o", out / "a.png"] if command == "attention" else []
    r = cli(command, path, "--model", f"local-dir:{tiny_dir}", *extra)
    assert r.exit_code == 1 and words in r.stderr and len(r.stderr.strip().splitlines()) == 1
    assert list(out.iterdir()) == []
