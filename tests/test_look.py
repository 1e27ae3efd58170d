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
