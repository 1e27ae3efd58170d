"""Position embeddings as experiments: the shuffle experiment on tiny timm ViTs (CLS, registers, no CLS), the
sine-cosine reference against MAE's layout (transformers' ViTMAE), and the neighbour / far figures against a
brute-force count. Random weights: equivariance without positions is exact for any weights."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import timm
import torch

from vitcli.backend.positions import (
    neighbour_far,
    shuffle_experiment,
    shuffle_patches,
    similarity_figures,
    sincos_table,
)
from vitcli.errors import ModelError, UsageError

TINY = dict(img_size=32, patch_size=8, embed_dim=32, depth=2, num_heads=2)
KINDS = {
    "cls": dict(num_classes=5),  # ViT: CLS, pos_embed over CLS + patches
    "registers": dict(num_classes=0, reg_tokens=4, no_embed_class=True, init_values=1e-5),  # DINOv2-like
    "nocls": dict(num_classes=0, class_token=False, global_pool="map"),  # SigLIP-like
}


def tiny(kind: str, seed: int = 0) -> torch.nn.Module:
    torch.manual_seed(seed)
    return timm.create_model("vit_tiny_patch16_224", pretrained=False, **TINY, **KINDS[kind])


def picture(b: int = 2, seed: int = 0) -> torch.Tensor:
    return torch.randn(b, 3, 32, 32, generator=torch.Generator().manual_seed(seed))


# ---- the shuffle experiment -----------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", list(KINDS))
def test_shuffle_is_invisible_without_positions_and_visible_with_them(kind):
    m = tiny(kind)
    m.train()  # the experiment runs in eval mode and gives the mode back
    before = {k: v.clone() for k, v in m.state_dict().items()}
    x = picture()
    r = shuffle_experiment(m, x, seed=3)

    # The model is exactly as it was: pos_embed restored bit for bit, training mode kept.
    assert m.training
    after = m.state_dict()
    assert before.keys() == after.keys() and all(torch.equal(before[k], after[k]) for k in before)

    scale = r["output_scale"]
    assert 0.3 < scale < 3  # outputs after the final LayerNorm: about unit RMS
    # Without positions: the shuffled run's patch outputs are the original's, moved the same way (float rounding).
    assert r["max_diff_without_pos"] < 1e-4 * scale
    assert r["rel_diff_without_pos"] < 1e-4
    assert r["without_pos"]["patch_min_cosine"] > 1 - 1e-5
    # With positions: clearly not (random timm init, pos_embed std 0.02, still ~1e4 times the rounding).
    assert r["max_diff_with_pos"] > 1e-2 * scale
    assert r["rel_diff_with_pos"] > 1e-2
    # The shuffle itself is real: unpermuted, outputs differ by about the output scale either way.
    assert r["without_pos"]["patch_max_diff_unpermuted"] > 0.5 * scale
    # Prefix tokens (CLS, registers) and the pooled output cannot see the shuffle without positions.
    prefix = {"cls": 1, "registers": 5, "nocls": 0}[kind]
    assert r["prefix_tokens"] == prefix and r["registers"] == {"cls": 0, "registers": 4, "nocls": 0}[kind]
    assert r["cls_token"] is (kind != "nocls")
    if prefix:
        assert r["without_pos"]["prefix_max_diff"] < 1e-4 * scale
        assert r["with_pos"]["prefix_max_diff"] > 100 * r["without_pos"]["prefix_max_diff"]
    else:
        assert r["without_pos"]["prefix_max_diff"] is None
    assert r["without_pos"]["pooled_max_diff"] < 1e-4
    assert r["with_pos"]["pooled_max_diff"] > 100 * max(r["without_pos"]["pooled_max_diff"], 1e-9)
    # Moving patches in pixel space moves the patch embeddings and nothing else.
    assert r["patch_embed_max_diff"] == 0.0


def test_shuffle_figures_match_a_hand_run_through_timm():
    """The figures are what timm's forward_features gives: recompute them by hand (hooks nothing, copies the
    model, zeroes its pos_embed the plain way)."""
    m = tiny("cls", seed=5).eval()
    x = picture(1, seed=5)
    r = shuffle_experiment(m, x, seed=11)
    perm = torch.tensor(r["permutation"])
    shuffled = torch.from_numpy(r["shuffled"])
    # The shuffled picture is the original's 8x8 pixel blocks moved: block i of it is block perm[i] of x.
    for i, j in enumerate(perm.tolist()):
        (ri, ci), (rj, cj) = divmod(i, 4), divmod(j, 4)
        assert torch.equal(shuffled[0, :, 8 * ri:8 * ri + 8, 8 * ci:8 * ci + 8], x[0, :, 8 * rj:8 * rj + 8, 8 * cj:8 * cj + 8])
    assert sorted(r["permutation"]) == list(range(16)) and r["permutation"] != list(range(16))
    with torch.no_grad():
        a, b = m.forward_features(x), m.forward_features(shuffled)
        with_pos = (a[:, 1:][:, perm] - b[:, 1:]).abs().max().item()
        zeroed = timm.create_model("vit_tiny_patch16_224", pretrained=False, **TINY, **KINDS["cls"]).eval()
        zeroed.load_state_dict({**m.state_dict(), "pos_embed": torch.zeros_like(m.pos_embed)})
        a0, b0 = zeroed.forward_features(x), zeroed.forward_features(shuffled)
        without = (a0[:, 1:][:, perm] - b0[:, 1:]).abs().max().item()
    assert r["max_diff_with_pos"] == pytest.approx(with_pos, rel=1e-5)
    assert r["max_diff_without_pos"] == pytest.approx(without, abs=1e-6)
    assert r["output_scale"] == pytest.approx(a[:, 1:].pow(2).mean().sqrt().item(), rel=1e-6)


def test_shuffle_is_seeded():
    m = tiny("cls")
    x = picture()
    r1, r2, r3 = (shuffle_experiment(m, x, seed=s) for s in (7, 7, 8))
    assert r1["permutation"] == r2["permutation"] != r3["permutation"]
    assert r1["max_diff_with_pos"] == r2["max_diff_with_pos"]
    assert r1["seed"] == 7 and r1["grid"] == [4, 4] and r1["patch"] == [8, 8]


def test_shuffle_refuses_what_it_cannot_do():
    m = tiny("cls")
    with pytest.raises(UsageError, match="whole 8x8 patches"):
        shuffle_experiment(m, torch.randn(1, 3, 36, 32), seed=0)
    nopos = timm.create_model("vit_tiny_patch16_224", pretrained=False, pos_embed="none", **TINY)
    with pytest.raises(ModelError, match="no learned absolute position embedding"):
        shuffle_experiment(nopos, picture(), seed=0)


def test_shuffle_patches_moves_pictures_like_batches():
    """The numpy picture path (for drawing the shuffled picture) and the tensor batch path agree."""
    rng = np.random.default_rng(0)
    pic = rng.integers(0, 256, (12, 8, 3), dtype=np.uint8)  # (H, W, C): a 3x2 grid of 4x4 patches
    perm = [5, 0, 3, 1, 4, 2]
    moved = shuffle_patches(pic, perm, (4, 4))
    batch = torch.from_numpy(pic).permute(2, 0, 1)[None]
    assert np.array_equal(shuffle_patches(batch, perm, (4, 4))[0].permute(1, 2, 0).numpy(), moved)
    assert np.array_equal(moved[0:4, 0:4], pic[8:12, 4:8])  # output patch 0 is input patch 5 (row 2, col 1)
    assert np.array_equal(shuffle_patches(moved, np.argsort(perm), (4, 4)), pic)  # the inverse undoes it


# ---- the sine-cosine reference ------------------------------------------------------------------------------


def mae_position_embedding(grid: int, dim: int) -> np.ndarray:
    """MAE's released layout, from transformers' ViTMAE initialisation (the table MAE checkpoints carry)."""
    from transformers import ViTMAEConfig, ViTMAEModel

    cfg = ViTMAEConfig(image_size=grid * 8, patch_size=8, hidden_size=dim, num_hidden_layers=1,
                       num_attention_heads=2, intermediate_size=2 * dim)
    model = ViTMAEModel(cfg)
    model.embeddings.patch_embeddings.projection._is_hf_initialized = False  # let initialize_weights run again
    model.embeddings.initialize_weights()
    table = model.embeddings.position_embeddings.detach()[0, 1:].numpy()  # (N, D) without the CLS row
    assert np.abs(table).max() > 0.5  # really filled in (not the zeros it starts as)
    return table


def test_sincos_is_timm_and_matches_mae_up_to_a_channel_order():
    from timm.layers import build_sincos2d_pos_embed

    grid, dim = 4, 32
    q = dim // 4
    t = sincos_table((grid, grid), dim)
    assert t.shape == (16, 32) and t.dtype == np.float32
    assert np.array_equal(t, build_sincos2d_pos_embed([grid, grid], dim=dim).numpy())
    mae = mae_position_embedding(grid, dim)
    # timm: [sin(row) | sin(col) | cos(row) | cos(col)]; MAE: [sin(col) | cos(col) | sin(row) | cos(row)].
    to_mae = np.r_[q:2 * q, 3 * q:4 * q, 0:q, 2 * q:3 * q]
    np.testing.assert_allclose(t[:, to_mae], mae, atol=1e-6)
    # ... so every cosine similarity, and so both figures, are the same.
    assert similarity_figures(t, (grid, grid)) == pytest.approx(similarity_figures(mae, (grid, grid)), abs=1e-6)
    # Written out: position (r, c) = (1, 2) -> k-th frequency 1 / 10000^(k / q).
    freq = 1 / 10000 ** (np.arange(q) / q)
    np.testing.assert_allclose(t[1 * grid + 2], np.r_[np.sin(1 * freq), np.sin(2 * freq), np.cos(1 * freq),
                                                     np.cos(2 * freq)], atol=1e-6)


@pytest.mark.parametrize("grid,dim", [((8, 8), 64), ((14, 14), 384), ((4, 6), 32)])
def test_sincos_neighbours_are_more_alike_than_far_positions(grid, dim):
    near, far = similarity_figures(sincos_table(grid, dim), grid)
    assert near > far + 0.1
    assert 0.9 < near < 1.0


def test_sincos_refuses_bad_sizes():
    with pytest.raises(UsageError, match="multiple of 4"):
        sincos_table((4, 4), 30)
    with pytest.raises(UsageError, match="at least 1x1"):
        sincos_table((0, 4), 32)


# ---- the neighbour / far figures ---------------------------------------------------------------------------


@pytest.mark.parametrize("grid", [(8, 8), (3, 5), (1, 4), (2, 2)])
def test_figures_equal_a_brute_force_count(grid):
    gh, gw = grid
    rng = np.random.default_rng(gh * 10 + gw)
    table = rng.normal(size=(gh * gw, 12))
    near_vals, far_vals = [], []
    for (i, a), (j, b) in itertools.product(enumerate(table), repeat=2):
        (ri, ci), (rj, cj) = divmod(i, gw), divmod(j, gw)
        d = abs(ri - rj) + abs(ci - cj)
        cos = float(a @ b / np.linalg.norm(a) / np.linalg.norm(b))
        if d == 1:
            near_vals.append(cos)
        if d >= max(1, (gh + gw) // 2):
            far_vals.append(cos)
    near, far = similarity_figures(table, grid)
    assert near == pytest.approx(np.mean(near_vals), abs=1e-12)
    assert far == pytest.approx(np.mean(far_vals), abs=1e-12)


def test_figures_on_a_known_matrix():
    """2x2 grid: neighbours are the 8 ordered pairs at distance 1, far (distance >= 2) the 4 diagonal ones."""
    sim = np.array([[1.0, 0.5, 0.4, 0.1],
                    [0.5, 1.0, 0.2, 0.3],
                    [0.4, 0.2, 1.0, 0.6],
                    [0.1, 0.3, 0.6, 1.0]])
    near, far = neighbour_far(sim, (2, 2))
    assert near == pytest.approx((0.5 + 0.4 + 0.3 + 0.6) / 4)
    assert far == pytest.approx((0.1 + 0.2) / 2)
    assert all(np.isnan(neighbour_far(np.ones((1, 1)), (1, 1))))
    with pytest.raises(ValueError, match="does not match"):
        neighbour_far(sim, (3, 3))
