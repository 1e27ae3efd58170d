"""The math behind `vitcli pca` and `vitcli similar`, numpy only (no torch, no scikit-learn at run time).

Shapes: tokens are patch tokens with the prefix removed, (N, gh, gw, D) float32 for N images (any (..., D) array
where noted); a memory-mapped `.npy` works too, read one chunk of images at a time.

PCA (`fit`, `transform`, `scale`) — what scikit-learn's `PCA` computes, checked against it in tests:
- Components: the exact covariance of every fitted patch, accumulated in float64 one chunk at a time (Chan et
  al.'s pairwise merge of counts, means and centred scatter matrices), then `numpy.linalg.eigh`. Memory is
  O(D²) + one chunk + the sample below, whatever the number of images; nothing is approximated.
- Sign: scikit-learn's `svd_flip(u_based_decision=False)` convention, so pictures never flip between runs:
  in each component the loading of largest absolute value is positive.
- Scaling to [0, 1] for colours: per component, between the 1st and 99th percentiles (`SCALE_PERCENTILES`,
  numpy's linear interpolation) of the projections of a seeded random sample of at most `sample` fitted
  patches (uniform without replacement: each patch gets a key from `numpy.random.default_rng(seed)`, the
  `sample` smallest keys are kept), clipped. The percentiles are part of the fit, so a fit reused on other
  images or later video frames gives them the same colours.

Foreground (`fit_foreground`, `foreground_mask`) — the rule of the DINOv2 PCA demo (facebookresearch/dinov2
issue #23): the first principal component of all patches, min-max scaled to [0, 1] (min and max of the
same sample, clipped outside), thresholded: a patch is BACKGROUND when its score is > `threshold`
(default 0.35, the demo's value) and foreground otherwise. The component's sign is chosen so that the
larger part of the fitted patches is background (the demo flips it by hand per model; the DINOv2 paper
says "patches with a negative score of the first component" for the same idea). Ties keep the svd_flip sign.

Similarity (`cosine_maps`, `best_match`, `mutual_nearest_neighbours`) — cosine similarity in float64; a zero
vector has similarity 0 with everything; ties go to the first patch in row-major order.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import NamedTuple

import numpy as np

from vitcli.errors import UsageError

SCALE_PERCENTILES = (1.0, 99.0)
BACKGROUND_THRESHOLD = 0.35  # DINOv2 issue #23 demo: pca_features[:, 0] > 0.35 after min-max scaling = background
DEFAULT_SAMPLE = 20_000  # patches kept for the scaling percentiles and the foreground min/max
CHUNK_ROWS = 8192  # patches read and accumulated at a time
SIGN_CONVENTION = "largest-|loading| positive per component (scikit-learn svd_flip, u_based_decision=False)"


# ---- fitted objects ------------------------------------------------------------------------------------------

@dataclass(frozen=True, eq=False)
class PcaFit:
    """A fitted PCA: enough to project any patch tokens of the same width D and colour them the same way."""

    mean: np.ndarray  # (D,) float64
    components: np.ndarray  # (C, D) float64, orthonormal rows, largest |loading| of each row positive
    explained_variance: np.ndarray  # (C,) float64, eigenvalues of the covariance (divided by n - 1)
    explained_variance_ratio: np.ndarray  # (C,) float64, share of the total variance (trace)
    lo: np.ndarray  # (C,) projection at SCALE_PERCENTILES[0] over the sample: colour 0
    hi: np.ndarray  # (C,) projection at SCALE_PERCENTILES[1] over the sample: colour 1
    n_fit: int  # patches in the covariance
    n_sample: int  # patches in the scaling sample (<= the `sample` asked for)
    percentiles: tuple[float, float] = SCALE_PERCENTILES

    @property
    def n_components(self) -> int:
        return int(self.components.shape[0])

    def to_dict(self) -> dict:
        return {"components": self.n_components, "dim": int(self.components.shape[1]),
                "explained_variance": [float(v) for v in self.explained_variance],
                "explained_variance_ratio": [float(v) for v in self.explained_variance_ratio],
                "scaling": {"percentiles": list(self.percentiles), "lo": [float(v) for v in self.lo],
                            "hi": [float(v) for v in self.hi]},
                "patches_fitted": self.n_fit, "patches_sampled": self.n_sample, "sign": SIGN_CONVENTION}


def _flat(lo: float, hi: float) -> bool:
    """No spread between the min and max projections (the same test whichever sign the direction has)."""
    return hi - lo <= 1e-12 * max(1.0, abs(lo), abs(hi))


@dataclass(frozen=True, eq=False)
class ForegroundRule:
    """The first principal component turned into a background score in [0, 1]; background = score > threshold."""

    mean: np.ndarray  # (D,) float64
    direction: np.ndarray  # (D,) unit vector: the first component, oriented so the larger part scores high
    lo: float  # min of the sample's projections on `direction`: score 0
    hi: float  # max: score 1
    threshold: float
    flipped: bool  # True when `direction` is minus the svd_flip-signed first component
    background_fraction: float  # share of the sample that is background
    explained_variance_ratio: float  # of the first component
    n_fit: int
    n_sample: int

    def score(self, tokens) -> np.ndarray:
        """(..., D) tokens -> (...) float64 background score, min-max scaled with the fit's min/max, clipped."""
        p = _project(tokens, self.mean, self.direction[None, :])[..., 0]
        if _flat(self.lo, self.hi):
            return np.zeros(p.shape)
        return np.clip((p - self.lo) / (self.hi - self.lo), 0.0, 1.0)

    def to_dict(self) -> dict:
        return {"rule": "background = min-max scaled first principal component > threshold; sign chosen so the "
                        "larger part of the fitted patches is background (DINOv2 PCA demo)",
                "threshold": self.threshold, "flipped": self.flipped,
                "background_fraction": self.background_fraction,
                "min": self.lo, "max": self.hi, "explained_variance_ratio": self.explained_variance_ratio,
                "patches_fitted": self.n_fit, "patches_sampled": self.n_sample}


# ---- streaming fit -------------------------------------------------------------------------------------------

def _rows(tokens) -> tuple[Iterable[np.ndarray], int]:
    """Chunks of an (..., D) array (or memmap) as (n, D) float64 rows, in order; and D."""
    shape = np.shape(tokens)
    if len(shape) < 2:
        raise UsageError(f"patch tokens must have a channel axis, got shape {shape}")
    d = int(shape[-1])
    per_item = int(np.prod(shape[1:-1], dtype=np.int64)) if len(shape) > 2 else 1
    step = max(1, CHUNK_ROWS // max(1, per_item))

    def gen():
        for i in range(0, shape[0], step):
            yield np.asarray(tokens[i:i + step], dtype=np.float64).reshape(-1, d)
    return gen(), d


class PcaAccumulator:
    """Push patch tokens chunk by chunk (e.g. from the feature extractor's write callback), then `fit()`.

    Holds O(D²) float64 moments, at most `sample` rows of the scaling sample (float32) and, transiently, one
    chunk: memory does not grow with the number of images. Rows come in the order given; the sample depends
    only on `seed` and each patch's position in that order, not on how the stream is cut into chunks.
    """

    def __init__(self, sample: int = DEFAULT_SAMPLE, seed: int = 0):
        if sample < 2:
            raise UsageError(f"the PCA sample must hold at least 2 patches, got {sample}")
        self.sample = int(sample)
        self._rng = np.random.default_rng(seed)
        self.n = 0
        self.dim: int | None = None
        self._mean: np.ndarray | None = None
        self._m2: np.ndarray | None = None
        self._keys = np.empty(0)
        self._kept = np.empty((0, 0), dtype=np.float32)
        self.peak_sample_rows = 0  # the most sample rows ever held at once (the contract: <= sample)

    def update(self, tokens, mask=None) -> None:
        """Add (..., D) tokens; `mask` (...) bool keeps only the True patches (e.g. the foreground)."""
        tokens = np.asarray(tokens)
        d = tokens.shape[-1]
        x = tokens.reshape(-1, d)
        keys = self._rng.random(x.shape[0])  # one key per patch, masked or not: the sample ignores chunking
        if mask is not None:
            m = np.asarray(mask, dtype=bool).reshape(-1)
            if m.shape[0] != x.shape[0]:
                raise UsageError(f"mask of {m.shape[0]} patches for {x.shape[0]} patch tokens")
            x, keys = x[m], keys[m]
        if self.dim is None:
            self.dim = d
            self._mean, self._m2 = np.zeros(d), np.zeros((d, d))
            self._kept = np.empty((0, d), dtype=np.float32)
        elif d != self.dim:
            raise UsageError(f"patch tokens of width {d} after tokens of width {self.dim}")
        if x.shape[0] == 0:
            return
        x = x.astype(np.float64, copy=False)
        # exact moments: merge this chunk's (n, mean, centred scatter) into the running ones (Chan et al. 1979)
        nb = x.shape[0]
        mb = x.mean(axis=0)
        xc = x - mb
        m2b = xc.T @ xc
        n = self.n + nb
        delta = mb - self._mean
        self._m2 += m2b + np.outer(delta, delta) * (self.n * nb / n)
        self._mean += delta * (nb / n)
        self.n = n
        # bounded uniform sample: the `sample` smallest keys so far
        if self._keys.shape[0] >= self.sample:
            cutoff = self._keys.max()
            take = keys < cutoff
            x, keys = x[take], keys[take]
            if x.shape[0] == 0:
                return
        if x.shape[0] > self.sample:  # a chunk larger than the sample: keep its own smallest keys first
            best = np.argpartition(keys, self.sample - 1)[: self.sample]
            x, keys = x[best], keys[best]
        all_keys = np.concatenate([self._keys, keys])
        rows = np.concatenate([self._kept, x.astype(np.float32)])
        if all_keys.shape[0] > self.sample:
            best = np.argpartition(all_keys, self.sample - 1)[: self.sample]
            all_keys, rows = all_keys[best], rows[best]
        order = np.argsort(all_keys, kind="stable")  # a canonical order: results do not depend on chunking
        self._keys, self._kept = all_keys[order], rows[order]
        self.peak_sample_rows = max(self.peak_sample_rows, self._kept.shape[0])

    @property
    def sample_rows(self) -> np.ndarray:
        """(n_sample, D) float32: the kept sample (read-only view)."""
        v = self._kept.view()
        v.flags.writeable = False
        return v

    def _eig(self, components: int, what: str):
        if self.dim is None or self.n == 0:
            raise UsageError(f"no patches to fit the {what} on",
                             hint="with --foreground, raise --threshold; or give more images")
        if not 1 <= components <= self.dim:
            raise UsageError(f"--components {components} must be between 1 and the token width {self.dim}")
        if self.n < max(2, components):
            raise UsageError(f"{self.n} patch(es) cannot give {components} principal component(s)",
                             hint="give more images, or fewer --components")
        cov = self._m2 / (self.n - 1)
        vals, vecs = np.linalg.eigh(cov)  # ascending
        total = float(np.trace(cov))
        vals, vecs = vals[::-1][:components], vecs[:, ::-1][:, :components].T  # (C,), (C, D)
        vals = np.clip(vals, 0.0, None)
        top = np.argmax(np.abs(vecs), axis=1)
        signs = np.sign(vecs[np.arange(components), top])
        signs[signs == 0] = 1.0
        vecs = vecs * signs[:, None]
        ratio = vals / total if total > 0 else np.zeros_like(vals)
        return self._mean.copy(), vecs, vals, ratio

    def fit(self, components: int = 3) -> PcaFit:
        """The PCA of everything added so far, with the scaling percentiles of the sample."""
        mean, comps, vals, ratio = self._eig(components, "PCA")
        proj = (self._kept.astype(np.float64) - mean) @ comps.T  # (n_sample, C)
        lo, hi = np.percentile(proj, SCALE_PERCENTILES, axis=0)
        return PcaFit(mean=mean, components=comps, explained_variance=vals, explained_variance_ratio=ratio,
                      lo=lo, hi=hi, n_fit=self.n, n_sample=int(self._kept.shape[0]))

    def foreground(self, threshold: float = BACKGROUND_THRESHOLD) -> ForegroundRule:
        """The background/foreground rule (module docstring) from the first component of everything added."""
        if not 0.0 <= threshold <= 1.0:
            raise UsageError(f"--threshold {threshold} must be between 0 and 1 (a min-max scaled score)")
        mean, comps, _, ratio = self._eig(1, "foreground split")
        direction = comps[0]
        p = (self._kept.astype(np.float64) - mean) @ direction
        lo, hi = float(p.min()), float(p.max())
        if not _flat(lo, hi):
            s = (p - lo) / (hi - lo)
            bg_as_is, bg_flipped = int(np.sum(s > threshold)), int(np.sum(1.0 - s > threshold))
        else:  # no spread: every score is 0 (`score`), so every patch is foreground whatever the sign
            bg_as_is = bg_flipped = 0
        flipped = bg_flipped > bg_as_is
        if flipped:
            direction, lo, hi = -direction, -hi, -lo
        n = max(1, p.shape[0])
        return ForegroundRule(mean=mean, direction=direction, lo=lo, hi=hi, threshold=float(threshold),
                              flipped=bool(flipped), background_fraction=max(bg_as_is, bg_flipped) / n,
                              explained_variance_ratio=float(ratio[0]), n_fit=self.n, n_sample=int(p.shape[0]))


def _accumulate(tokens, mask, sample: int, seed: int) -> PcaAccumulator:
    acc = PcaAccumulator(sample=sample, seed=seed)
    if isinstance(tokens, np.ndarray) or hasattr(tokens, "__array__"):
        chunks, _ = _rows(tokens)
        if mask is None:
            for x in chunks:
                acc.update(x)
        else:
            mask = np.asarray(mask, dtype=bool)
            if mask.shape != np.shape(tokens)[:-1]:
                raise UsageError(f"mask of shape {mask.shape} for tokens of shape {np.shape(tokens)}")
            flat, i = mask.reshape(-1), 0
            for x in chunks:
                acc.update(x, flat[i:i + x.shape[0]])
                i += x.shape[0]
    else:  # an iterable of (..., D) chunks, or of (chunk, mask) pairs
        for item in tokens:
            if isinstance(item, tuple):
                acc.update(*item)
            else:
                acc.update(item)
    return acc


def fit(tokens, components: int = 3, sample: int = DEFAULT_SAMPLE, seed: int = 0, mask=None) -> PcaFit:
    """PCA of patch tokens: (..., D) array/memmap, or an iterable of (..., D) chunks (or (chunk, mask) pairs).

    `mask` (...) bool, for an array: fit on the True patches only (e.g. the foreground). Memory: O(D²) + at
    most `sample` rows + one chunk (`PcaAccumulator`). Deterministic for a given `seed`.
    """
    return _accumulate(tokens, mask, sample, seed).fit(components)


def fit_foreground(tokens, threshold: float = BACKGROUND_THRESHOLD, sample: int = DEFAULT_SAMPLE,
                   seed: int = 0) -> ForegroundRule:
    """The foreground rule (module docstring) fitted on all patches of `tokens` (..., D)."""
    return _accumulate(tokens, None, sample, seed).foreground(threshold)


def foreground_mask(rule: ForegroundRule, tokens) -> np.ndarray:
    """(..., D) tokens -> (...) bool, True = foreground (background score <= threshold)."""
    return rule.score(tokens) <= rule.threshold


# ---- projections and colours ---------------------------------------------------------------------------------

def _project(tokens, mean: np.ndarray, comps: np.ndarray) -> np.ndarray:
    """(..., D) -> (..., C) float64 projections (x - mean) @ comps.T, one chunk at a time."""
    shape = np.shape(tokens)
    if shape[-1] != mean.shape[0]:
        raise UsageError(f"patch tokens of width {shape[-1]} for a PCA fitted on width {mean.shape[0]}",
                         hint="fit and apply with the same model and layer")
    if len(shape) < 2:
        return (np.asarray(tokens, dtype=np.float64) - mean) @ comps.T
    chunks, _ = _rows(tokens)
    out = np.concatenate([(x - mean) @ comps.T for x in chunks]) if shape[0] else np.empty((0, comps.shape[0]))
    return out.reshape(*shape[:-1], comps.shape[0])


def transform(pca: PcaFit, tokens) -> np.ndarray:
    """(N, gh, gw, D) (any (..., D)) -> (N, gh, gw, C) float64 raw projections, like sklearn's transform."""
    return _project(tokens, pca.mean, pca.components)


def scale(pca: PcaFit, projections: np.ndarray) -> np.ndarray:
    """(..., C) raw projections -> (..., C) float32 in [0, 1]: lo -> 0, hi -> 1, clipped; a constant
    component (hi == lo) gives 0.5."""
    p = np.asarray(projections, dtype=np.float64)
    span = pca.hi - pca.lo
    flat = span <= 1e-12 * np.maximum(1.0, np.abs(pca.hi))
    out = np.clip((p - pca.lo) / np.where(flat, 1.0, span), 0.0, 1.0)
    out[..., flat] = 0.5
    return out.astype(np.float32)


@dataclass(frozen=True, eq=False)
class PcaMaps:
    """What `vitcli pca` shows and saves."""

    maps: np.ndarray  # (N, gh, gw, C) float32 in [0, 1]; 0 (black) on background patches with a mask
    mask: np.ndarray | None  # (N, gh, gw) bool, True = foreground; None without --foreground
    fits: tuple[PcaFit, ...]  # one (joint or fit-on) or one per image (per-image)
    rules: tuple[ForegroundRule, ...] = field(default=())  # the foreground rules, same count as fits
    mode: str = "joint"  # "joint" | "per-image" | "fit-on"

    def to_dict(self) -> dict:
        out = {"mode": self.mode, "shape": list(self.maps.shape),
               "scaling": {"percentiles": list(SCALE_PERCENTILES),
                           "rule": "each component mapped linearly to [0, 1] between these percentiles of its "
                                   "projections over the fitted patches (seeded sample), clipped"},
               "fits": [f.to_dict() for f in self.fits]}
        if self.mask is not None:
            out["foreground"] = {"rules": [r.to_dict() for r in self.rules],
                                 "foreground_patches": [int(m.sum()) for m in self.mask],
                                 "patches_per_image": int(self.mask[0].size) if len(self.mask) else 0}
        return out


def pca_maps(tokens, *, components: int = 3, per_image: bool = False, foreground: bool = False,
             threshold: float | None = None, fit_tokens=None, sample: int = DEFAULT_SAMPLE,
             seed: int = 0) -> PcaMaps:
    """The whole `vitcli pca` computation on (N, gh, gw, D) tokens (array or memmap).

    Joint (default): one PCA fitted on every patch of `tokens` (colours comparable across images).
    `fit_tokens` (M, gh', gw', D): fit there, apply to `tokens` (--fit-on; video: the first frames).
    `per_image`: one PCA per image. `foreground`: the foreground rule is fitted on the same patches as the
    PCA would be, the RGB PCA is then fitted on the foreground patches only, and background patches are 0.
    """
    shape = np.shape(tokens)
    if len(shape) != 4:
        raise UsageError(f"expected patch tokens of shape (N, gh, gw, D), got {shape}")
    if per_image and fit_tokens is not None:
        raise UsageError("--per-image and --fit-on contradict each other", hint="drop one of them")
    if threshold is not None and not foreground:
        raise UsageError("--threshold applies to --foreground only", hint="add --foreground")
    t = BACKGROUND_THRESHOLD if threshold is None else threshold

    def one(fit_on, apply_to):
        rule, mask, fg_fit = None, None, None
        if foreground:
            rule = fit_foreground(fit_on, t, sample=sample, seed=seed)
            fg_fit = foreground_mask(rule, fit_on)
            mask = foreground_mask(rule, apply_to) if apply_to is not fit_on else fg_fit
        f = fit(fit_on, components, sample=sample, seed=seed, mask=fg_fit)
        maps = scale(f, transform(f, apply_to))
        if mask is not None:
            maps[~mask] = 0.0
        return f, rule, maps, mask

    if per_image:
        parts = [one(tokens[i:i + 1], tokens[i:i + 1]) for i in range(shape[0])]
        mode = "per-image"
    else:
        parts = [one(tokens if fit_tokens is None else fit_tokens, tokens)]
        mode = "joint" if fit_tokens is None else "fit-on"
    maps = np.concatenate([p[2] for p in parts]) if parts else np.zeros((*shape[:3], components), np.float32)
    mask = np.concatenate([p[3] for p in parts]) if foreground and parts else None
    return PcaMaps(maps=maps, mask=mask, fits=tuple(p[0] for p in parts),
                   rules=tuple(p[1] for p in parts if p[1] is not None), mode=mode)


# ---- similarity ----------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Match:
    """The best-matching patch of one image."""

    row: int
    col: int
    similarity: float

    def to_dict(self) -> dict:
        return {"row": self.row, "col": self.col, "similarity": self.similarity}


class Correspondence(NamedTuple):
    """A mutual nearest neighbour pair: patch (row, col) of image A, patch (row, col) of image B, cosine."""

    a: tuple[int, int]
    b: tuple[int, int]
    similarity: float

    def to_dict(self) -> dict:
        return {"a": list(self.a), "b": list(self.b), "similarity": self.similarity}


def _unit_rows(x: np.ndarray) -> np.ndarray:
    """(n, D) float64 -> rows divided by their norm; zero rows stay zero."""
    norm = np.linalg.norm(x, axis=-1, keepdims=True)
    return x / np.where(norm > 0, norm, 1.0)


def cosine_maps(query_vec, tokens) -> np.ndarray:
    """Cosine similarity of one (D,) vector with every patch: (N, gh, gw, D) (any (..., D)) -> (N, gh, gw) float32."""
    q = _unit_rows(np.asarray(query_vec, dtype=np.float64).reshape(1, -1))[0]
    shape = np.shape(tokens)
    if shape[-1] != q.shape[0]:
        raise UsageError(f"query vector of width {q.shape[0]} for patch tokens of width {shape[-1]}")
    if len(shape) < 2:
        return np.float32(_unit_rows(np.asarray(tokens, np.float64)[None])[0] @ q)
    chunks, _ = _rows(tokens)
    sims = [_unit_rows(x) @ q for x in chunks]
    return (np.concatenate(sims) if sims else np.empty(0)).reshape(shape[:-1]).astype(np.float32)


def check_patch(grid: tuple[int, int], row: int, col: int, option: str = "--patch") -> None:
    """Raise UsageError unless (row, col) lies on the (gh, gw) patch grid."""
    gh, gw = grid
    if not (0 <= row < gh and 0 <= col < gw):
        raise UsageError(f"{option} {row},{col} is outside the {gh}x{gw} patch grid",
                         hint=f"rows go from 0 to {gh - 1}, columns from 0 to {gw - 1}")


def best_match(sim_map, exclude: tuple[int, int] | None = None) -> Match:
    """(gh, gw) similarities -> the highest (first in row-major order on ties); `exclude` skips one patch
    (the query patch itself, on the query image)."""
    m = np.asarray(sim_map, dtype=np.float64)
    if exclude is not None:
        m = m.copy()
        m[exclude] = -np.inf
    if m.size == 0 or not np.isfinite(m).any():
        raise UsageError("no patch to match", hint="the image has a single patch")
    r, c = np.unravel_index(int(np.argmax(m)), m.shape)
    return Match(int(r), int(c), float(np.asarray(sim_map, dtype=np.float64)[r, c]))


@dataclass(frozen=True, eq=False)
class Similarity:
    """What `vitcli similar` shows and saves: image 0 is the query image."""

    query: tuple[int, int]  # (row, col) of the query patch in image 0
    maps: np.ndarray  # (N, gh, gw) float32 cosine similarity with the query patch
    best: tuple[Match, ...]  # per image; for image 0 the best patch other than the query itself

    def to_dict(self) -> dict:
        return {"query": {"row": self.query[0], "col": self.query[1]},
                "best": [b.to_dict() for b in self.best], "similarity": "cosine, patch tokens"}


def similar(tokens, row: int, col: int) -> Similarity:
    """(N, gh, gw, D) tokens, image 0 the query -> its patch (row, col)'s cosine maps over every image."""
    shape = np.shape(tokens)
    if len(shape) != 4:
        raise UsageError(f"expected patch tokens of shape (N, gh, gw, D), got {shape}")
    check_patch(shape[1:3], row, col)
    maps = cosine_maps(np.asarray(tokens[0, row, col]), tokens)
    one_patch = shape[1] * shape[2] == 1
    best = tuple(best_match(m, exclude=(row, col) if i == 0 and not one_patch else None)
                 for i, m in enumerate(maps))
    return Similarity(query=(row, col), maps=maps, best=best)


def mutual_nearest_neighbours(a, b, top_k: int | None = None, block: int = 1024) -> list[Correspondence]:
    """Patches i of A and j of B that are each other's most cosine-similar patch.

    a: (gha, gwa, D), b: (ghb, gwb, D) (grids may differ) -> pairs sorted by similarity, highest first (ties:
    row-major order of A); `top_k` keeps the first k. Memory: one (block, ghb·gwb) similarity block at a time.
    """
    a, b = np.asarray(a), np.asarray(b)
    if a.ndim != 3 or b.ndim != 3 or a.shape[-1] != b.shape[-1]:
        raise UsageError(f"mutual nearest neighbours need (gh, gw, D) tokens of one width, got {a.shape} and {b.shape}")
    if top_k is not None and top_k < 1:
        raise UsageError(f"--top-k {top_k} must be at least 1")
    ua = _unit_rows(a.reshape(-1, a.shape[-1]).astype(np.float64))
    ub = _unit_rows(b.reshape(-1, b.shape[-1]).astype(np.float64))
    nn_ab = np.empty(ua.shape[0], dtype=np.int64)
    best_ab = np.empty(ua.shape[0])
    col_best = np.full(ub.shape[0], -np.inf)
    nn_ba = np.zeros(ub.shape[0], dtype=np.int64)
    for i in range(0, ua.shape[0], block):
        s = ua[i:i + block] @ ub.T  # (block, Pb)
        nn_ab[i:i + block] = np.argmax(s, axis=1)
        best_ab[i:i + block] = s[np.arange(s.shape[0]), nn_ab[i:i + block]]
        top = np.argmax(s, axis=0)
        val = s[top, np.arange(s.shape[1])]
        better = val > col_best  # strictly: ties keep the earlier patch of A
        col_best[better], nn_ba[better] = val[better], top[better] + i
    mutual = np.flatnonzero(nn_ba[nn_ab] == np.arange(ua.shape[0]))
    order = mutual[np.argsort(-best_ab[mutual], kind="stable")]
    if top_k is not None:
        order = order[:top_k]
    gwa, gwb = a.shape[1], b.shape[1]
    return [Correspondence((int(i // gwa), int(i % gwa)), (int(nn_ab[i] // gwb), int(nn_ab[i] % gwb)),
                           float(best_ab[i])) for i in order]
