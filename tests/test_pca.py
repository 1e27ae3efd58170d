"""`vitcli.pca` against scikit-learn's PCA and brute-force numpy; `vitcli.draw_features` pixel by pixel."""

from __future__ import annotations

import io
import subprocess
import sys
import tracemalloc

import numpy as np
import pytest
from PIL import Image
from sklearn.decomposition import PCA

from vitcli import draw_features as df
from vitcli import pca
from vitcli.errors import UsageError

TOL = 1e-4


def tokens_like(seed: int, shape: tuple[int, ...], spread=(9.0, 5.0, 3.0, 2.0)) -> np.ndarray:
    """Gaussian tokens (..., D) float32 with distinct variances along random orthogonal axes and an offset."""
    rng = np.random.default_rng(seed)
    d = shape[-1]
    scales = np.concatenate([spread, np.linspace(1.0, 0.2, d - len(spread))])[:d]
    axes, _ = np.linalg.qr(rng.normal(size=(d, d)))
    z = rng.normal(size=(*shape[:-1], d)) * scales
    return (z @ axes.T + rng.normal(size=d) * 3).astype(np.float32)


def sk_pca(x: np.ndarray, c: int) -> PCA:
    return PCA(n_components=c, svd_solver="full").fit(np.asarray(x, dtype=np.float64).reshape(-1, x.shape[-1]))


def aligned(ours: np.ndarray, ref: np.ndarray, axis_rows: bool = True) -> np.ndarray:
    """Flip each of our components (rows, or last-axis columns) to the reference's sign."""
    if axis_rows:
        s = np.sign(np.sum(ours * ref, axis=1))
        return ours * s[:, None]
    s = np.sign(np.sum(ours * ref, axis=tuple(range(ours.ndim - 1))))
    return ours * s


# ---- PCA == scikit-learn -------------------------------------------------------------------------------------

@pytest.mark.parametrize("sample", [pca.DEFAULT_SAMPLE, 120])  # 120 = exactly every patch: the bounded path, full
def test_fit_equals_sklearn(sample):
    x = tokens_like(0, (5, 4, 6, 16))  # 120 patches
    fit = pca.fit(x, components=3, sample=sample)
    ref = sk_pca(x, 3)
    assert fit.n_fit == 120 and fit.n_sample == 120
    np.testing.assert_allclose(aligned(fit.components, ref.components_), ref.components_, atol=TOL)
    np.testing.assert_allclose(fit.explained_variance, ref.explained_variance_, rtol=TOL)
    np.testing.assert_allclose(fit.explained_variance_ratio, ref.explained_variance_ratio_, atol=TOL)
    proj = pca.transform(fit, x)
    assert proj.shape == (5, 4, 6, 3)
    ref_proj = ref.transform(x.reshape(-1, 16).astype(np.float64)).reshape(5, 4, 6, 3)
    np.testing.assert_allclose(aligned(proj, ref_proj, axis_rows=False), ref_proj, atol=TOL)
    # the sign convention is scikit-learn's own (svd_flip on the components): not just "up to sign"
    np.testing.assert_allclose(fit.components, ref.components_, atol=TOL)
    top = np.argmax(np.abs(fit.components), axis=1)
    assert np.all(fit.components[np.arange(3), top] > 0)
    # the sample covers every patch: the scaling percentiles are those of every projection
    lo, hi = np.percentile(ref_proj.reshape(-1, 3), pca.SCALE_PERCENTILES, axis=0)
    np.testing.assert_allclose(fit.lo, lo, atol=TOL)
    np.testing.assert_allclose(fit.hi, hi, atol=TOL)
    scaled = pca.scale(fit, proj)
    assert scaled.dtype == np.float32 and scaled.min() == 0.0 and scaled.max() == 1.0
    np.testing.assert_allclose(scaled, np.clip((ref_proj - lo) / (hi - lo), 0, 1), atol=TOL)


def test_bounded_sample_keeps_the_exact_components_and_is_seeded():
    x = tokens_like(1, (40, 4, 4, 12))  # 640 patches, sample of 50
    ref = sk_pca(x, 3)
    a = pca.fit(x, components=3, sample=50, seed=7)
    assert a.n_fit == 640 and a.n_sample == 50
    np.testing.assert_allclose(a.components, ref.components_, atol=TOL)  # covariance is over every patch
    np.testing.assert_allclose(a.explained_variance_ratio, ref.explained_variance_ratio_, atol=TOL)
    b = pca.fit(x, components=3, sample=50, seed=7)
    np.testing.assert_array_equal(a.lo, b.lo)
    np.testing.assert_array_equal(a.hi, b.hi)
    c = pca.fit(x, components=3, sample=50, seed=8)
    assert not np.array_equal(a.lo, c.lo)
    # chunking does not change the sample: one image at a time == the whole array
    d = pca.fit((x[i] for i in range(40)), components=3, sample=50, seed=7)
    np.testing.assert_allclose(a.lo, d.lo, rtol=1e-12)  # same sample; the float64 sums differ in the last bit
    np.testing.assert_allclose(a.components, d.components, atol=1e-10)
    acc, per_image = pca.PcaAccumulator(sample=50, seed=7), pca.PcaAccumulator(sample=50, seed=7)
    acc.update(x)
    for i in range(40):
        per_image.update(x[i])
    np.testing.assert_array_equal(acc.sample_rows, per_image.sample_rows)
    # the sample rows are real patches
    rows = {r.tobytes() for r in x.reshape(-1, 12)}
    assert all(r.tobytes() in rows for r in acc.sample_rows)
    assert len({r.tobytes() for r in acc.sample_rows}) == 50


def test_fit_memory_is_bounded_by_the_sample_not_the_stream():
    d, per_image, images, k = 64, 16 * 16, 80, 256  # 20480 patches = 5.2 MB of float32 tokens streamed
    rng = np.random.default_rng(0)
    axes = rng.normal(size=(d, d))

    def stream():
        for i in range(images):
            g = np.random.default_rng(i)
            yield (g.normal(size=(1, 16, 16, d)) @ axes).astype(np.float32)

    tracemalloc.start()
    acc = pca.PcaAccumulator(sample=k, seed=0)
    for chunk in stream():
        acc.update(chunk)
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    total = images * per_image * d * 4
    assert acc.n == images * per_image
    assert acc.peak_sample_rows == k and acc.sample_rows.shape == (k, d)  # never more than K rows kept
    # O(D²) moments + K sample rows + one chunk, far below the stream (measured ~0.9 MB against 5.2 MB)
    budget = 3 * d * d * 8 + 3 * k * d * 8 + 6 * per_image * d * 8
    assert peak < budget < total / 2, (peak, budget, total)
    fit = acc.fit(3)
    assert fit.n_sample == k and fit.n_fit == images * per_image


def test_masked_fit_equals_sklearn_on_the_kept_patches():
    x = tokens_like(2, (3, 5, 5, 10))
    mask = np.random.default_rng(3).random((3, 5, 5)) < 0.6
    fit = pca.fit(x, components=2, mask=mask)
    ref = sk_pca(x[mask], 2)
    assert fit.n_fit == int(mask.sum())
    np.testing.assert_allclose(fit.components, ref.components_, atol=TOL)
    np.testing.assert_allclose(fit.explained_variance_ratio, ref.explained_variance_ratio_, atol=TOL)
    # the same through a stream of (chunk, mask) pairs
    s = pca.fit(((x[i], mask[i]) for i in range(3)), components=2)
    np.testing.assert_allclose(s.components, ref.components_, atol=TOL)


def test_fit_refuses_impossible_requests():
    x = tokens_like(0, (1, 2, 2, 4))
    with pytest.raises(UsageError, match="between 1 and the token width 4"):
        pca.fit(x, components=5)
    with pytest.raises(UsageError, match="no patches") as e:
        pca.fit(x, mask=np.zeros((1, 2, 2), bool))
    assert "raise --threshold" in e.value.hint  # background is score > threshold: a higher one keeps more
    with pytest.raises(UsageError, match="width 8"):
        pca.transform(pca.fit(x, components=2), tokens_like(0, (1, 2, 2, 8)))


# ---- joint, per image, fit-on --------------------------------------------------------------------------------

def test_joint_fit_gives_identical_images_identical_colours():
    x, y = tokens_like(4, (1, 6, 6, 8)), tokens_like(5, (1, 6, 6, 8))
    out = pca.pca_maps(np.concatenate([x, x, y]))
    assert out.maps.shape == (3, 6, 6, 3) and out.maps.dtype == np.float32 and out.mode == "joint"
    np.testing.assert_array_equal(out.maps[0], out.maps[1])
    assert not np.allclose(out.maps[0], out.maps[2])
    assert 0.0 <= out.maps.min() and out.maps.max() <= 1.0
    assert len(out.fits) == 1 and out.mask is None


def test_per_image_differs_from_joint_where_it_should():
    rng = np.random.default_rng(6)
    d = 8
    e = np.eye(d)
    # image A varies along e0; image B sits 20 away along e1 and varies along e2: jointly, the first component
    # is the offset between the images (A is one flat colour); per image, it is each image's own variation
    a = rng.normal(size=(1, 6, 6, 1)) * e[0] + rng.normal(size=(1, 6, 6, d)) * 0.05
    b = 20 * e[1] + rng.normal(size=(1, 6, 6, 1)) * e[2] + rng.normal(size=(1, 6, 6, d)) * 0.05
    x = np.concatenate([a, b]).astype(np.float32)
    joint = pca.pca_maps(x)
    per = pca.pca_maps(x, per_image=True)
    assert per.mode == "per-image" and len(per.fits) == 2
    assert np.ptp(joint.maps[0, ..., 0]) < 0.05  # flat red channel on A: the joint PC1 separates A from B
    assert np.ptp(per.maps[0, ..., 0]) == 1.0  # per image, A's own variation spans the whole range
    assert abs(np.corrcoef(per.maps[0, ..., 0].ravel(), a[0, ..., 0].ravel())[0, 1]) > 0.99
    # per image == fitting that image alone
    np.testing.assert_array_equal(per.maps[1], pca.pca_maps(x[1:]).maps[0])


def test_fit_on_applies_one_fit_with_its_own_percentiles():
    f, x = tokens_like(7, (2, 4, 4, 8)), tokens_like(8, (3, 4, 4, 8))
    out = pca.pca_maps(x, fit_tokens=f)
    ref = pca.fit(f)
    assert out.mode == "fit-on"
    np.testing.assert_array_equal(out.maps, pca.scale(ref, pca.transform(ref, x)))
    frames = pca.pca_maps(np.concatenate([f, x]), fit_tokens=f)  # video: the first frames' colours stay put
    np.testing.assert_array_equal(frames.maps[2:], out.maps)
    with pytest.raises(UsageError, match="contradict"):
        pca.pca_maps(x, fit_tokens=f, per_image=True)
    with pytest.raises(UsageError, match="--foreground"):
        pca.pca_maps(x, threshold=0.5)


# ---- foreground ----------------------------------------------------------------------------------------------

def two_groups(fraction_first: float, seed: int = 0, shape=(2, 10, 10), d: int = 8):
    """Tokens in two tight clusters on opposite sides; returns (tokens, True where the first cluster is)."""
    rng = np.random.default_rng(seed)
    n = int(np.prod(shape))
    first = np.zeros(n, bool)
    first[rng.permutation(n)[: round(fraction_first * n)]] = True
    u, v = rng.normal(size=d), rng.normal(size=d)
    x = np.where(first[:, None], u * 3, v * 3) + rng.normal(size=(n, d)) * 0.3
    return x.reshape(*shape, d).astype(np.float32), first.reshape(shape)


@pytest.mark.parametrize("sign", [1.0, -1.0])
def test_foreground_larger_part_is_background(sign):
    x, bg = two_groups(0.7)
    out = pca.pca_maps(sign * x, foreground=True)
    np.testing.assert_array_equal(out.mask, ~bg)  # the 70% cluster is background whatever PC1's sign
    assert out.rules[0].background_fraction == pytest.approx(0.7)
    assert np.all(out.maps[~out.mask] == 0.0)
    # swap the proportions: now the other cluster is the larger part, so it is the background
    x2, small = two_groups(0.3)
    np.testing.assert_array_equal(pca.pca_maps(sign * x2, foreground=True).mask, small)


def demo_mask(x: np.ndarray, threshold: float) -> np.ndarray:
    """The DINOv2 demo (issue #23) with scikit-learn: PCA(1), min-max scale, background = score > threshold,
    with the sign that makes the larger part background."""
    flat = x.reshape(-1, x.shape[-1]).astype(np.float64)
    p = PCA(n_components=1, svd_solver="full").fit_transform(flat)[:, 0]
    s = (p - p.min()) / (p.max() - p.min())
    bg = s > threshold
    if np.sum(1 - s > threshold) > bg.sum():
        bg = (1 - s) > threshold
    return ~bg.reshape(x.shape[:-1])


@pytest.mark.parametrize("threshold", [pca.BACKGROUND_THRESHOLD, 0.6])
def test_foreground_rule_equals_the_demo_and_fits_rgb_on_the_foreground(threshold):
    x = tokens_like(9, (3, 8, 8, 12), spread=(6.0, 2.0, 1.5, 1.2))  # one long axis: a continuous score
    rule = pca.fit_foreground(x, threshold)
    mask = pca.foreground_mask(rule, x)
    np.testing.assert_array_equal(mask, demo_mask(x, threshold))
    assert 0.0 < mask.mean() < 1.0 and rule.threshold == threshold
    out = pca.pca_maps(x, foreground=True, threshold=None if threshold == pca.BACKGROUND_THRESHOLD else threshold)
    np.testing.assert_array_equal(out.mask, mask)
    ref = sk_pca(x[mask], 3)  # the RGB PCA is fitted on the foreground patches only
    np.testing.assert_allclose(out.fits[0].components, ref.components_, atol=TOL)
    fg = pca.scale(out.fits[0], ref.transform(x[mask].astype(np.float64)))
    np.testing.assert_allclose(out.maps[mask], fg, atol=TOL)
    assert np.all(out.maps[~mask] == 0)
    d = out.to_dict()
    assert d["foreground"]["foreground_patches"] == [int(m.sum()) for m in mask]
    assert d["foreground"]["rules"][0]["threshold"] == threshold


@pytest.mark.parametrize("threshold", [0.0, pca.BACKGROUND_THRESHOLD, 1.0])
def test_foreground_of_identical_patches_is_everything_and_nothing_flipped(threshold):
    """Zero spread: every score is 0, so every patch is foreground; the rule says so (no flip, no background)."""
    x = np.broadcast_to(tokens_like(3, (1, 1, 1, 6)), (2, 3, 3, 6)).copy()
    rule = pca.fit_foreground(x, threshold)
    assert (rule.flipped, rule.background_fraction) == (False, 0.0)
    np.testing.assert_array_equal(rule.score(x), np.zeros((2, 3, 3)))
    assert pca.foreground_mask(rule, x).all()
    out = pca.pca_maps(x, foreground=True, threshold=threshold)
    assert out.mask.all() and out.to_dict()["foreground"]["rules"][0]["background_fraction"] == 0.0
    assert out.to_dict()["foreground"]["rules"][0]["flipped"] is False


def test_foreground_threshold_must_be_a_score():
    with pytest.raises(UsageError, match="between 0 and 1"):
        pca.fit_foreground(tokens_like(0, (1, 3, 3, 4)), threshold=1.5)


# ---- similarity ----------------------------------------------------------------------------------------------

def test_cosine_maps_equal_numpy():
    x = tokens_like(10, (3, 4, 5, 8))
    x[1, 2, 3] = 0.0  # a zero vector: similarity 0
    q = x[0, 1, 2]
    got = pca.cosine_maps(q, x)
    flat = x.reshape(-1, 8).astype(np.float64)
    norms = np.linalg.norm(flat, axis=1)
    want = np.where(norms > 0, flat @ q / np.where(norms > 0, norms, 1) / np.linalg.norm(q.astype(np.float64)), 0)
    assert got.shape == (3, 4, 5) and got.dtype == np.float32
    np.testing.assert_allclose(got, want.reshape(3, 4, 5), atol=1e-6)
    assert got[0, 1, 2] == pytest.approx(1.0, abs=1e-6) and got[1, 2, 3] == 0.0


def test_best_match_and_similar():
    x = tokens_like(11, (3, 4, 5, 8))
    x[2, 3, 1] = 2.5 * x[0, 1, 2]  # the same direction: cosine 1 in target 2
    x[0, 0, 0] = 0.5 * x[0, 1, 2]  # and in the query image, away from the query patch
    res = pca.similar(x, 1, 2)
    assert res.best[0] == pca.Match(0, 0, pytest.approx(1.0, abs=1e-6))  # not the query patch itself
    assert (res.best[2].row, res.best[2].col) == (3, 1) and res.best[2].similarity == pytest.approx(1.0, abs=1e-6)
    m = res.maps[1]
    r, c = np.unravel_index(np.argmax(m), m.shape)
    assert (res.best[1].row, res.best[1].col, res.best[1].similarity) == (r, c, pytest.approx(float(m.max())))
    tie = np.array([[0.5, 0.9], [0.9, 0.1]])
    assert pca.best_match(tie) == pca.Match(0, 1, 0.9)  # ties: first in row-major order
    assert pca.best_match(tie, exclude=(0, 1)) == pca.Match(1, 0, 0.9)
    with pytest.raises(UsageError, match="outside the 4x5 patch grid"):
        pca.similar(x, 4, 0)
    assert res.to_dict()["best"][2] == {"row": 3, "col": 1, "similarity": res.best[2].similarity}


def brute_mnn(a: np.ndarray, b: np.ndarray):
    pa, pb = a.reshape(-1, a.shape[-1]).astype(np.float64), b.reshape(-1, b.shape[-1]).astype(np.float64)
    sim = np.array([[u @ v / np.linalg.norm(u) / np.linalg.norm(v) for v in pb] for u in pa])
    out = []
    for i in range(len(pa)):
        j = int(np.argmax(sim[i]))
        if int(np.argmax(sim[:, j])) == i:
            out.append((divmod(i, a.shape[1]), divmod(j, b.shape[1]), sim[i, j]))
    return sorted(out, key=lambda t: -t[2])


def test_mutual_nearest_neighbours_equal_brute_force():
    a, b = tokens_like(12, (3, 4, 8)), tokens_like(13, (5, 2, 8))  # different grids
    got = pca.mutual_nearest_neighbours(a, b, block=5)  # blocks that do not divide the 12 patches
    want = brute_mnn(a, b)
    assert [(g.a, g.b) for g in got] == [(w[0], w[1]) for w in want] and len(got) > 0
    np.testing.assert_allclose([g.similarity for g in got], [w[2] for w in want], atol=1e-12)
    assert pca.mutual_nearest_neighbours(a, b, top_k=2) == got[:2]
    # a shuffled, slightly perturbed copy: every patch finds its counterpart
    rng = np.random.default_rng(0)
    perm = rng.permutation(12)
    c = (a.reshape(12, 8)[perm] + rng.normal(size=(12, 8)) * 1e-3).reshape(3, 4, 8)
    pairs = pca.mutual_nearest_neighbours(a, c)
    assert len(pairs) == 12
    for p in pairs:
        assert perm[p.b[0] * 4 + p.b[1]] == p.a[0] * 4 + p.a[1]
    ((ra, ca), (rb, cb), s) = pairs[0]  # unpacks as the plain tuple ((ra, ca), (rb, cb), sim)
    assert ((ra, ca), (rb, cb), s) == (pairs[0].a, pairs[0].b, pairs[0].similarity)
    assert p.to_dict() == {"a": list(p.a), "b": list(p.b), "similarity": p.similarity}


# ---- pictures ------------------------------------------------------------------------------------------------

def checker(size: tuple[int, int], seed: int = 0) -> Image.Image:
    return Image.fromarray(np.random.default_rng(seed).integers(0, 256, (size[1], size[0], 3), dtype=np.uint8))


def test_map_picture_is_patch_aligned():
    vals = np.random.default_rng(0).random((2, 3, 3))
    want = np.round(vals * 255).astype(np.uint8)
    pic = df.map_picture(vals, (26, 17), s=2)  # 3x2 patches of 8x8 px, 2 px and 1 px left over
    a = np.asarray(pic)
    assert pic.size == (52, 34)
    for r in range(2):
        for c in range(3):
            x0, y0, x1, y1 = df.patch_box((2, 3), (26, 17), r, c, 2)
            assert (x0, y0, x1, y1) == (16 * c, 16 * r, 16 * c + 16, 16 * r + 16)
            assert np.all(a[y0:y1, x0:x1] == want[r, c])
    assert np.all(a[32:, :] == df.DROPPED) and np.all(a[:, 48:] == df.DROPPED)
    gray = np.asarray(df.map_picture(vals[..., :1], (24, 16)))  # one component: the colour map
    assert gray[0, 0].tolist() != [gray[0, 0, 0]] * 3


def test_pca_sheet_sizes_and_pixels():
    imgs = [checker((32, 32), i) for i in range(3)]
    maps = np.random.default_rng(1).random((3, 4, 4, 3)).astype(np.float32)
    mask = np.ones((3, 4, 4), bool)
    mask[1, 2, 3] = False
    pic = df.pca_sheet(imgs, maps, titles=["a", "b", "c"], mask=mask)
    s = df.display_scale((32, 32))
    assert s == 5
    tile = (160, 160)
    columns = 1  # round(sqrt(3 / 2)) cells across
    assert pic.width == df.GAP + columns * (2 * 160 + df.GAP + df.GAP)
    assert pic.height > df.GAP + 3 * (160 + df.TITLE_H + df.GAP)  # plus the legend
    a = np.asarray(pic)
    for i in range(3):
        ix, iy = df.tile_origin(i, 0, tile, 2, columns)
        mx, my = df.tile_origin(i, 1, tile, 2, columns)
        assert np.array_equal(a[iy + 7 * 5, ix + 13 * 5], np.asarray(imgs[i])[7, 13])  # input, nearest x5
        for r, c in [(0, 0), (2, 3), (3, 1)]:
            x0, y0, x1, y1 = df.patch_box((4, 4), (32, 32), r, c, s)
            want = [0, 0, 0] if not mask[i, r, c] else np.round(maps[i, r, c] * 255).tolist()
            assert a[my + y0, mx + x0].tolist() == want  # first pixel of the patch
            assert a[my + y1 - 1, mx + x1 - 1].tolist() == want  # last pixel of the patch


def test_mask_picture_darkens_background():
    img = Image.new("RGB", (16, 16), (200, 100, 40))
    masks = np.array([[[True, False], [True, True]]])
    pic = df.mask_picture([img], masks)
    a = np.asarray(pic)
    x, y = df.tile_origin(0, 0, (160, 160), 1, 1)
    assert a[y + 10, x + 10].tolist() == [200, 100, 40]
    assert a[y + 10, x + 150].tolist() == [50, 25, 10]  # patch (0, 1): background


def test_similarity_sheet_marks_query_and_best():
    q, t = checker((32, 24), 0), checker((32, 24), 1)
    maps = np.random.default_rng(2).random((2, 3, 4))
    best = [pca.Match(2, 0, 0.5), pca.Match(1, 3, 0.9)]
    pic = df.similarity_sheet(q, (0, 1), [t], maps, best)
    s = df.display_scale((32, 24))
    a = np.asarray(pic)
    tile = (32 * s, 24 * s)
    assert pic.width == max(240, df.GAP + 2 * (tile[0] + df.GAP))
    x, y = df.tile_origin(0, 0, tile, 1, 2)
    bx0, by0, _, _ = df.patch_box((3, 4), (32, 24), 0, 1, s)
    assert a[y + by0, x + bx0].tolist() == list(df.QUERY)
    bx0, by0, _, _ = df.patch_box((3, 4), (32, 24), 2, 0, s)
    assert a[y + by0, x + bx0].tolist() == list(df.BEST)
    x, y = df.tile_origin(1, 0, tile, 1, 2)  # query and target side by side
    bx0, by0, bx1, by1 = df.patch_box((3, 4), (32, 24), 1, 3, s)
    assert a[y + by1 - 1, x + bx1 - 1].tolist() == list(df.BEST)
    # inside a patch: the image blended with the colour of its similarity (0..1 on the inferno map)
    from vitcli.draw import colorize
    r, c = 2, 2
    px, py = x + (c * 8 + 4) * s, y + (r * 8 + 4) * s
    heat = np.asarray(colorize(np.array([[maps[1, r, c]]]), 0, 1))[0, 0].astype(float)
    base = np.asarray(t)[r * 8 + 4, c * 8 + 4].astype(float)
    np.testing.assert_allclose(a[py, px], base * (1 - df.ALPHA) + heat * df.ALPHA, atol=1.01)
    assert pic.height > tile[1] + df.TITLE_H + df.GAP


def test_correspondence_picture_joins_patch_centres():
    a_img, b_img = Image.new("RGB", (32, 32), (0, 0, 0)), Image.new("RGB", (48, 32), (0, 0, 0))
    matches = [((0, 0), (3, 5), 0.9), ((3, 2), (0, 1), 0.8)]
    pic = df.correspondence_picture(a_img, b_img, matches, (4, 4), (4, 6))
    s = df.display_scale((48, 32))
    colours = df.distinct_colours(2)
    assert colours[0] != colours[1]
    a = np.asarray(pic)
    assert pic.width == (32 + 48) * s + 16
    for (pa, pb, _), colour in zip(matches, colours):
        xa, ya = df.patch_centre((4, 4), (32, 32), *pa, s)
        xb, yb = df.patch_centre((4, 6), (48, 32), *pb, s)
        assert a[int(ya), int(xa)].tolist() == list(colour)
        assert a[int(yb), int(xb) + 32 * s + 16].tolist() == list(colour)


@pytest.mark.parametrize("fmt", ["GIF", "WEBP"])
def test_animated_writes_every_frame(fmt):
    colours = [(255, 0, 0), (0, 255, 0), (0, 0, 255)]
    frames = [Image.new("RGB", (20, 10), c) for c in colours]
    buf = io.BytesIO()
    df.animated(frames, buf, format=fmt.lower(), fps=4)
    buf.seek(0)
    with Image.open(buf) as im:
        assert im.format == fmt and im.n_frames == 3 and im.size == (20, 10)
        for i, c in enumerate(colours):
            im.seek(i)
            assert im.convert("RGB").getpixel((5, 5)) == c
            assert im.info["duration"] == 250
    with pytest.raises(UsageError, match="not one of"):
        df.animated(frames, io.BytesIO(), format="PNG")
    with pytest.raises(UsageError, match="differ in size"):
        df.animated([frames[0], Image.new("RGB", (5, 5))], io.BytesIO())


def test_modules_stay_torch_and_sklearn_free():
    code = ("import sys, vitcli.pca, vitcli.draw_features; "
            "print(sorted(m for m in ('torch', 'timm', 'sklearn') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
