"""Which patches made a timm ViT choose its target: gradient attribution mapped onto the patch grid.

Methods (`METHODS`), and who computes what:

- `gradcam`, `gradcam++`, `layercam`, `eigencam`: pytorch-grad-cam (`GradCAM`, `GradCAMPlusPlus`, `LayerCAM`,
  `EigenCAM`) on the tokens entering block K's attention (`blocks[K].norm1`, see `default_layer`). The library
  computes the map; vitcli gives it the reshape (tokens -> grid) and reads the map at grid resolution with the
  library's own `get_cam_image` on the activations and gradients it recorded, then its ReLU (`np.maximum(cam,
  0)`), before the library's min-max scaling and resize to pixels. `eigencam` is the first principal component
  of the activations: class-agnostic, and its sign is the SVD's (arbitrary) one, as in the library.
- `integrated-gradients`, `occlusion`: Captum (`IntegratedGradients`, `Occlusion`) on the input pixels. The
  baseline is the model's mean colour: zeros in normalised space, i.e. each channel at the data config's mean.
  Integrated gradients: Gauss-Legendre, `ig_steps` points (Captum's default 50); a patch's value is the SUM of
  its pixels' attributions over pixels and channels, so the patch values add up to score(x) - score(baseline)
  up to Captum's convergence delta (reported in `extras`). Occlusion: windows of exactly one patch (3 x ph x pw,
  stride = the window), aligned to the patch grid, so each occlusion replaces exactly one token's pixels with
  the baseline; Captum gives every pixel of a window the window's score drop, and a patch's value is the MEAN
  over its pixels and channels, i.e. score(x) - score(x with that patch at the mean colour).
- `grad-rollout`: gradient-weighted attention rollout, written here (neither library has it), after
  jacobgil/vit-explain `vit_grad_rollout.py`: per block, attention probabilities x their gradient, mean over
  heads, negatives set to 0, identity added for the residual, rows renormalised, product over blocks. Two
  fixes to that file: gradients are paired with their own block (it pairs them in backward order), and rows
  are renormalised (it divides by column sums through broadcasting). The identity/renormalise/product is
  vitcli's `rollout` itself, fed the gradient-weighted matrices.
- `attention-rollout`: vitcli's attention rollout (no gradients, class-agnostic), for comparison.

Written by hand here: the token layout glue (`Layout`: prefix tokens and grid from the model itself), the
score the methods explain (`Scorer`), the pixel -> patch aggregation, grad-rollout, the rollout read-out,
`ln_rule` and `deletion_curve`.

Gradients through LayerNorm (`LN_RULE_METHODS`: the three gradient CAMs and grad-rollout): by default they run
inside `ln_rule`, which back-propagates through every LayerNorm as if its 1/sigma were constant (Ali et al.,
2022); the forward pass is unchanged bit for bit, and the library still computes the map from the activations
and gradients it records. `ln_rule=False` gives the plain gradient, the libraries' own output. Occlusion needs
no gradient and integrated gradients keeps the exact one (its completeness depends on it).

The score is the target class's logit (pytorch-grad-cam's `ClassifierOutputTarget`; the same logit for
Captum and grad-rollout), or, with a target embedding, the cosine similarity of the model's pooled pre-logits
output `forward_head(forward_features(x), pre_logits=True)` with that vector. The reported `score` is the
softmax probability of the target class, or that cosine similarity.

Sign convention of `Attribution.map` (gh, gw), float64: the CAM methods and both rollouts are >= 0 (the
libraries' ReLU; rollouts are products of non-negative matrices); `integrated-gradients` and `occlusion` keep
their sign (positive: the patch raises the score). `Attribution.display` is the positive part divided by its
maximum, in [0, 1].

Rollout read-out (which row of the rolled-out (T, T) matrix): the CLS row when the model pools the CLS token
(`global_pool="token"`; the mean of the CLS and distillation rows for distilled DeiT, whose two heads are
averaged); otherwise the mean of the rows of the tokens the pool reads (patch tokens, or all tokens with
`pool_include_prefix`), for average and attention-pool (`map`, SigLIP-like) models alike. Columns are the
patch tokens.

Measured (tests/test_explain.py, a 2-block ViT trained on coloured squares whose patch is the answer; top
patch on the square of 16 images, chance 1 in 24): occlusion and integrated gradients 16; with the LN-rule
grad-rollout 16, LayerCAM 16, Grad-CAM 13, Grad-CAM++ 7; with the plain gradient 10, 4, 3 and 0. The final
LayerNorm makes the score blind to the scale of the stream it reads, so the plain activation x gradient adds up
to about zero and the decisive token's share is often negative (the CAM's ReLU then drops it); over seven
trained models (docs/ln_rule_study.py) the LN-rule took grad-rollout from 78 to 112 of 112, Grad-CAM from 65 to
105, LayerCAM from 62 to 105, and Grad-CAM++ from 62 down to 43 (its weights assume non-negative activations).
Prefer occlusion (the CLI's default), integrated gradients, or grad-rollout when faithfulness matters;
`deletion_curve` measures it for any map (docs/explain.md, "Which method to trust").

Attention probabilities: timm's fused attention never materialises them, so for the rollouts the blocks read
run unfused (`fused_attn` off) with a forward hook on `attn_drop` (identity in eval), restored afterwards, as
in `vitcli.backend.internals`; grad-rollout keeps them in the graph (`retain_grad`), outside inference mode.
"""

from __future__ import annotations

from contextlib import contextmanager, nullcontext
from dataclasses import dataclass, field
from typing import NamedTuple

import numpy as np
import torch

from vitcli.errors import MissingExtra, ModelError, UsageError

CAM_METHODS = {"gradcam": "GradCAM", "gradcam++": "GradCAMPlusPlus", "layercam": "LayerCAM", "eigencam": "EigenCAM"}
CAPTUM_METHODS = ("integrated-gradients", "occlusion")
ROLLOUT_METHODS = ("grad-rollout", "attention-rollout")
METHODS = (*CAM_METHODS, *CAPTUM_METHODS, *ROLLOUT_METHODS)
SIGNED = frozenset(CAPTUM_METHODS)  # maps that keep their sign
LN_RULE_METHODS = ("gradcam", "gradcam++", "layercam", "grad-rollout")  # gradients read at tokens or attention


# ---- optional libraries -------------------------------------------------------------------------------------

def _missing(method: str, package: str) -> MissingExtra:
    """One line once printed: `--method gradcam needs pytorch-grad-cam, which is not installed; pip install
    "vitcli[explain]"`."""
    return MissingExtra(f"--method {method}", "explain", package)


def _grad_cam(method: str):
    """pytorch_grad_cam's CAM class for `method` and its ClassifierOutputTarget, imported on first use."""
    try:
        import pytorch_grad_cam
        from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget
    except ImportError as e:
        raise _missing(method, "pytorch-grad-cam") from e
    return getattr(pytorch_grad_cam, CAM_METHODS[method]), ClassifierOutputTarget


def _captum(method: str):
    try:
        from captum.attr import IntegratedGradients, Occlusion
    except ImportError as e:
        raise _missing(method, "captum") from e
    return {"integrated-gradients": IntegratedGradients, "occlusion": Occlusion}[method]


# ---- token layout -------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Layout:
    """Where the patch tokens are in a model's sequence, read from the model for one input size.

    prefix: tokens before the patches (CLS and registers, timm's `num_prefix_tokens`); grid: (gh, gw) patches
    for the actual input (timm's `patch_embed.dynamic_feat_size`); patch: (ph, pw) px; pool: the model's
    `global_pool` (token | avg | map | ...); pool_rows: the token rows the pool reads.
    """

    prefix: int
    grid: tuple[int, int]
    patch: tuple[int, int]
    pool: str
    pool_rows: str  # "cls" | "cls+dist" | "patches" | "all"

    def tokens_to_grid(self, t: torch.Tensor) -> torch.Tensor:
        """(B, T, D) tokens -> (B, D, gh, gw) patch tokens, row-major as the patch embedding emits them."""
        gh, gw = self.grid
        if t.shape[1] != self.prefix + gh * gw:
            raise ModelError(f"expected {self.prefix} prefix + {gh}x{gw} patch tokens, got {t.shape[1]} tokens")
        return t[:, self.prefix:].reshape(t.shape[0], gh, gw, t.shape[2]).permute(0, 3, 1, 2)

    def patch_reduce(self, values: torch.Tensor, how: str) -> np.ndarray:
        """(1, C, H, W) pixel values -> (gh, gw) float64: sum or mean over each patch's pixels and channels.

        Pixels beyond the last whole patch (dropped by the patch embedding) are left out; a partial last patch
        (dynamic padding) counts its real pixels (the mean divides by the full patch area)."""
        (gh, gw), (ph, pw) = self.grid, self.patch
        v = values.detach().double()[0, :, : gh * ph, : gw * pw]
        v = torch.nn.functional.pad(v, (0, gw * pw - v.shape[-1], 0, gh * ph - v.shape[-2]))
        s = v.reshape(v.shape[0], gh, ph, gw, pw).sum(dim=(0, 2, 4))
        if how == "mean":
            s = s / (v.shape[0] * ph * pw)
        return s.cpu().numpy()


def layout(module: torch.nn.Module, size: tuple[int, int]) -> Layout:
    """The Layout of `module` for inputs of `size` (H, W) px."""
    pe = getattr(module, "patch_embed", None)
    if pe is None or not hasattr(module, "blocks") or not hasattr(module, "num_prefix_tokens"):
        raise ModelError(f"{type(module).__name__} is not a timm ViT (no patch_embed, blocks, num_prefix_tokens)",
                         hint="use a timm ViT (ViT, DeiT, DINOv2, SigLIP, CLIP, EVA)")
    from vitcli.backend.internals import token_grid

    tokens = token_grid(module, size)
    pool = str(getattr(module, "global_pool", "token") or "")
    if pool == "token" and getattr(module, "attn_pool", None) is None:
        rows = "cls+dist" if getattr(module, "dist_token", None) is not None else "cls"  # DeiT averages both heads
    else:
        rows = "all" if getattr(module, "pool_include_prefix", False) else "patches"
    return Layout(tokens.prefix, tokens.grid, tuple(int(p) for p in pe.patch_size), pool, rows)


def default_layer(module: torch.nn.Module) -> int:
    """The last block. Its `norm1` output (the tokens entering its attention) has non-zero gradients for every
    patch token whatever the pooling: with CLS pooling the patch tokens reach the output only through the CLS
    query's attention in that block (the block's own output gives them zero gradient); with average or
    attention (map) pooling they reach it directly and through attention."""
    return len(module.blocks) - 1


def block_index(module: torch.nn.Module, k: int | None) -> int:
    """Block K (0-based; negative from the end; None: `default_layer`) as a 0-based index."""
    depth = len(module.blocks)
    if k is None:
        return default_layer(module)
    if not -depth <= k < depth:
        raise UsageError(f"--layer {k} is out of range: the model has {depth} blocks",
                         hint=f"use 0..{depth - 1}, or -1..-{depth} from the end")
    return k % depth


def target_layer(module: torch.nn.Module, k: int) -> tuple[torch.nn.Module, str]:
    """The layer the CAM methods read for block k: its `norm1` (LayerNorm before attention), and its name."""
    norm = getattr(module.blocks[k], "norm1", None)
    if norm is None:
        raise ModelError(f"block {k} ({type(module.blocks[k]).__name__}) has no norm1 to read",
                         hint="use a timm ViT with pre-norm blocks, or a method on pixels "
                              "(integrated-gradients, occlusion)")
    return norm, f"blocks.{k}.norm1"


# ---- what is explained --------------------------------------------------------------------------------------

class Scorer(torch.nn.Module):
    """(B, 3, H, W) normalised -> (B, K) scores: the model's logits, or with `embedding` (D,) a single column,
    the cosine similarity of its pooled pre-logits output (B, D) with the embedding."""

    def __init__(self, module: torch.nn.Module, embedding: torch.Tensor | None = None):
        super().__init__()
        self.module = module
        self.embedding = embedding

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.embedding is None:
            out = self.module(x)
        else:
            f = self.module.forward_head(self.module.forward_features(x), pre_logits=True)
            out = torch.nn.functional.cosine_similarity(f.float(), self.embedding[None], dim=-1)[:, None]
        if out.ndim != 2:
            raise ModelError(f"the model's output has shape {tuple(out.shape)}, not (batch, scores)",
                             hint="use a model with pooling (global_pool token, avg or map)")
        return out.float()


def _num_classes(module: torch.nn.Module) -> int:
    return int(getattr(module, "num_classes", 0) or 0)


def _pooled_dim(module: torch.nn.Module, x: torch.Tensor) -> int:
    with torch.no_grad():
        f = module.forward_head(module.forward_features(x[:1]), pre_logits=True)
    if f.ndim != 2:
        raise ModelError(f"the model's pooled output has shape {tuple(f.shape)}, not (batch, features)",
                         hint="use a model with pooling (global_pool token, avg or map)")
    return int(f.shape[-1])


@dataclass(frozen=True)
class Target:
    """What a map explains: `index` into the Scorer's columns (the class; 0 for an embedding), the class (None
    for an embedding), and `score` on the unchanged image: softmax probability, or cosine similarity."""

    scorer: Scorer
    index: int
    cls: int | None
    score: float
    kind: str  # "probability" | "cosine"


def resolve_target(module: torch.nn.Module, x: torch.Tensor, target: int | str = "top1",
                   embedding: np.ndarray | None = None) -> Target:
    """A class index, `top1` (the model's argmax), or a target embedding (D,) -> Target (one forward)."""
    if embedding is not None:
        if target not in (None, "top1"):
            raise UsageError(f"--target {target} and --target-embedding: give one of them")
        e = np.asarray(embedding, dtype=np.float64)
        if e.ndim == 2 and e.shape[0] == 1:
            e = e[0]
        if e.ndim != 1:
            raise UsageError(f"--target-embedding has shape {e.shape}, not one vector (D,)",
                             hint="pick one row of a `vitcli features` output")
        d = _pooled_dim(module, x)
        if e.shape[0] != d:
            raise UsageError(f"--target-embedding has {e.shape[0]} dimensions, the model's pooled output {d}",
                             hint="use features from the same model (`vitcli features` with its default pooling)")
        if not np.isfinite(e).all() or not np.linalg.norm(e) > 0:
            raise UsageError("--target-embedding is zero or not finite")
        scorer = Scorer(module, torch.as_tensor(e, dtype=torch.float32, device=x.device))
        with torch.no_grad():
            sim = float(scorer(x[:1])[0, 0])
        return Target(scorer, 0, None, sim, "cosine")
    n = _num_classes(module)
    if n == 0:
        raise UsageError("the model has no classifier head, so there is no class to explain",
                         hint="give --target-embedding FILE.npy (a row of `vitcli features` output) to explain "
                              "its similarity to that vector")
    scorer = Scorer(module)
    with torch.no_grad():
        probs = scorer(x[:1]).softmax(-1)[0]
    if target in (None, "top1"):
        cls = int(probs.argmax())
    elif isinstance(target, (int, np.integer)) and not isinstance(target, bool):
        cls = int(target)
        if not 0 <= cls < n:
            raise UsageError(f"--target {cls} is out of range: the model has {n} classes",
                             hint=f"use 0..{n - 1}, a label name, or top1")
    else:
        raise UsageError(f"--target {target!r}: give a class index or top1")
    return Target(scorer, cls, cls, float(probs[cls]), "probability")


# ---- the result ---------------------------------------------------------------------------------------------

@dataclass(frozen=True, eq=False)
class Attribution:
    """One method's map over the patch grid, and what it explains.

    map: (gh, gw) float64, raw (sign convention in the module docstring); method; target: the class index
    (None for a target embedding); score: softmax probability of the class, or cosine similarity
    (`score_kind`); layer: the block read (None for pixel methods and rollouts); layer_name: e.g.
    `blocks.11.norm1`; extras: method settings and checks (baseline, steps, convergence delta...).
    """

    map: np.ndarray
    method: str
    target: int | None
    score: float
    score_kind: str
    layer: int | None
    layer_name: str | None
    extras: dict = field(default_factory=dict)

    @property
    def grid(self) -> tuple[int, int]:
        return tuple(self.map.shape)

    @property
    def signed(self) -> bool:
        return self.method in SIGNED

    @property
    def display(self) -> np.ndarray:
        """(gh, gw) in [0, 1]: the positive part over its maximum (all zeros when nothing is positive)."""
        pos = np.clip(self.map, 0, None)
        top = pos.max()
        return pos / top if top > 0 else pos

    def to_dict(self) -> dict:
        return {"method": self.method, "target": self.target, "score": self.score, "score_kind": self.score_kind,
                "layer": self.layer, "layer_name": self.layer_name, "grid": list(self.grid),
                "signed": self.signed, "map": self.map.tolist(), "extras": self.extras}


# ---- the methods --------------------------------------------------------------------------------------------

@contextmanager
def _gradients(module: torch.nn.Module):
    """Autograd on (even inside the caller's inference_mode/no_grad), the weights' own gradients off (the
    input's gradient reaches every activation; nothing accumulates in .grad); restored afterwards."""
    flags = [p.requires_grad for p in module.parameters()]
    module.requires_grad_(False)
    try:
        with torch.inference_mode(False), torch.enable_grad():
            yield
    finally:
        for p, f in zip(module.parameters(), flags):
            p.requires_grad_(f)


def _norm_layers(module: torch.nn.Module) -> list[torch.nn.Module]:
    """The norms over the last dimension alone: these exact classes, not their subclasses (timm's 2-D norms of
    conv stems and norms fused with an activation keep their exact gradient)."""
    from timm import layers

    plain = {torch.nn.LayerNorm, torch.nn.RMSNorm, layers.LayerNorm, layers.LayerNormFp32, layers.RmsNorm,
             layers.RmsNormFp32}
    return [m for m in module.modules() if type(m) in plain and len(m.normalized_shape) == 1]


@contextmanager
def ln_rule(module: torch.nn.Module):
    """Back-propagate through every LayerNorm (and RMSNorm) of `module` as if its 1/sigma were a constant: the
    LN-rule of Ali et al., ICML 2022 (*XAI for Transformers: better explanations through conservative
    propagation*), also used by AttnLRP. Forward values are unchanged, bit for bit; only gradients change.

    Why: a pre-norm ViT's output reads its tokens through a final LayerNorm, which is invariant to their scale,
    so the exact gradient at the residual stream is orthogonal to the stream itself: activation x gradient sums
    to about zero over what the tokens contributed, and the decisive token's share can come out negative. With
    sigma held constant each norm is linear in its input (centring, then a fixed scale), and activation x
    gradient becomes each token's share of the score. Hooks are registered here, so enter this before a
    library registers its own on the same layers (theirs then see this output)."""
    def hook(mod, inputs, out):
        x = inputs[0]
        centred = x - x.mean(-1, keepdim=True) if isinstance(mod, torch.nn.LayerNorm) else x  # RMSNorm: no centring
        eps = torch.finfo(x.dtype).eps if mod.eps is None else mod.eps  # torch's RMSNorm: None = the dtype's
        scale = (centred.pow(2).mean(-1, keepdim=True) + eps).rsqrt()
        linear = centred * scale.detach()
        if mod.weight is not None:
            linear = linear * mod.weight
        return out.detach() + (linear - linear.detach()).to(out.dtype)  # the exact output; `linear`'s gradient

    handles = [m.register_forward_hook(hook) for m in _norm_layers(module)]
    try:
        yield
    finally:
        for h in handles:
            h.remove()


def _cam(method: str, module: torch.nn.Module, x: torch.Tensor, tgt: Target, lay: Layout, k: int) -> tuple:
    Cam, ClassifierOutputTarget = _grad_cam(method)
    layer, name = target_layer(module, k)
    cam = Cam(model=tgt.scorer, target_layers=[layer], reshape_transform=lay.tokens_to_grid)
    targets = [ClassifierOutputTarget(tgt.index)]
    try:
        cam(input_tensor=x, targets=targets)
        rec = cam.activations_and_grads
        acts = rec.activations[0].numpy()  # (1, D, gh, gw), reshaped by tokens_to_grid
        grads = None
        if cam.uses_gradients:
            grads = rec.gradients[0].numpy() if rec.gradients else None
            if grads is None or not np.any(grads):
                raise ModelError(f"{name} gets zero gradients from the target, so {method} has nothing to weigh",
                                 hint="pick an earlier --layer")
        grid = cam.get_cam_image(x, layer, targets, acts, grads, eigen_smooth=False)  # (1, gh, gw)
    finally:
        cam.activations_and_grads.release()
    return np.maximum(grid[0], 0).astype(np.float64), name, {}


def _captum_method(method: str, x: torch.Tensor, tgt: Target, lay: Layout, opts: dict) -> tuple:
    Method = _captum(method)
    algo = Method(tgt.scorer)
    base = torch.zeros_like(x)
    if method == "integrated-gradients":
        steps, batch = int(opts.get("ig_steps", 50)), int(opts.get("batch_size", 16))
        attr, delta = algo.attribute(x, baselines=base, target=tgt.index, n_steps=steps, method="gausslegendre",
                                     internal_batch_size=batch, return_convergence_delta=True)
        extras = {"baseline": "mean colour (0 after normalisation)", "steps": steps, "aggregate": "sum",
                  "convergence_delta": float(delta.reshape(-1)[0])}
        return lay.patch_reduce(attr, "sum"), extras
    (ph, pw), c = lay.patch, x.shape[1]
    attr = algo.attribute(x, sliding_window_shapes=(c, ph, pw), strides=(c, ph, pw), baselines=0,
                          target=tgt.index, perturbations_per_eval=int(opts.get("batch_size", 16)))
    extras = {"baseline": "mean colour (0 after normalisation)", "window": [ph, pw], "aggregate": "mean"}
    return lay.patch_reduce(attr, "mean"), extras


def _readout(rolled: np.ndarray, lay: Layout) -> np.ndarray:
    """(T, T) rollout -> (gh, gw): the row(s) of the pooled token(s), patch columns."""
    p = lay.prefix
    rows = {"cls": rolled[:1], "cls+dist": rolled[:2], "patches": rolled[p:], "all": rolled}[lay.pool_rows]
    return rows[:, p:].mean(axis=0).reshape(lay.grid)


def _rollout_method(method: str, module: torch.nn.Module, x: torch.Tensor, tgt: Target, lay: Layout,
                    opts: dict) -> tuple:
    from vitcli.backend.internals import recording_attention, rollout

    discard = float(opts.get("discard_ratio", 0.0))
    blocks = list(range(len(module.blocks)))
    if method == "attention-rollout":
        with torch.no_grad(), recording_attention(module, blocks) as seen:
            module.forward_features(x)
        mats = [seen[b][0][0].cpu().numpy() for b in blocks]  # (heads, T, T) each
    else:
        with recording_attention(module, blocks, in_graph=True) as seen:
            tgt.scorer(x)[0, tgt.index].backward()
        mats = []
        for b in blocks:
            a = seen[b][-1]
            if a.grad is None:
                raise ModelError(f"block {b}'s attention got no gradient from the target")
            weighted = (a.detach() * a.grad)[0].double().mean(dim=0).clamp(min=0)  # (T, T): heads averaged, >= 0
            mats.append(weighted[None].cpu().numpy())  # one "head": rollout's head mean leaves it as is
    rolled = rollout(mats, discard)
    return _readout(rolled, lay), {"discard_ratio": discard, "readout": lay.pool_rows}


def explain(module: torch.nn.Module, x: torch.Tensor, method: str = "gradcam", target: int | str = "top1",
            layer: int | None = None, embedding: np.ndarray | None = None, **opts) -> Attribution:
    """Attribute the target's score to the patches of one image.

    module: a timm ViT in eval mode; x: (1, 3, H, W) normalised as the model expects; method: one of METHODS;
    target: class index or `top1`; embedding: (D,) vector to explain cosine similarity to instead (models
    without a head); layer: block read by the CAM methods (default `default_layer`; ignored by the others).
    opts: `ig_steps` (50), `batch_size` (16: IG points / occlusions per forward), `discard_ratio` (0.0, rollouts),
    `ln_rule` (True: `ln_rule` around the methods in LN_RULE_METHODS; False: the plain gradient).
    Returns an Attribution whose map is (gh, gw) for the model's grid at this input size.
    """
    if method not in METHODS:
        raise UsageError(f"--method {method!r} is not one of {', '.join(METHODS)}")
    if x.ndim != 4 or x.shape[0] != 1:
        raise UsageError(f"explain takes one image (1, 3, H, W), got {tuple(x.shape)}")
    lay = layout(module, tuple(x.shape[-2:]))
    k = block_index(module, layer) if method in CAM_METHODS else None
    rule = method in LN_RULE_METHODS and bool(opts.get("ln_rule", True))
    with _gradients(module), ln_rule(module) if rule else nullcontext():
        x = x.detach().clone()  # a normal tensor even if x was made under inference_mode
        tgt = resolve_target(module, x, target, embedding)
        name, extras = None, {}
        if method in CAM_METHODS:
            values, name, extras = _cam(method, module, x.requires_grad_(True), tgt, lay, k)
        elif method in CAPTUM_METHODS:
            values, extras = _captum_method(method, x, tgt, lay, opts)
        else:
            values, extras = _rollout_method(method, module, x.requires_grad_(method == "grad-rollout"), tgt,
                                             lay, opts)
    if method in LN_RULE_METHODS:
        extras = {**extras, "ln_rule": rule}
    values = np.asarray(values, dtype=np.float64)
    if values.shape != lay.grid:
        raise ModelError(f"{method} gave a {values.shape} map for a {lay.grid} patch grid")
    return Attribution(values, method, tgt.cls, tgt.score, tgt.kind, k, name, extras)


# ---- faithfulness -------------------------------------------------------------------------------------------

class DeletionCurve(NamedTuple):
    """fractions: (S+1,) share of patches removed, 0..1; scores: (S+1,) target softmax probability (cosine
    similarity for an embedding target) after each step; area: trapezoid area under scores over fractions
    (lower = the map's top patches matter more)."""

    fractions: np.ndarray
    scores: np.ndarray
    area: float

    def to_dict(self) -> dict:
        return {"fractions": self.fractions.tolist(), "scores": self.scores.tolist(), "area": self.area}


def deletion_curve(module: torch.nn.Module, x: torch.Tensor, values: np.ndarray, target: int | str = "top1",
                   steps: int | None = None, embedding: np.ndarray | None = None,
                   batch_size: int = 32) -> DeletionCurve:
    """Deletion metric: remove patches in the order of `values` (gh, gw), highest first (ties: row-major), and
    record the target's score after each step.

    A removed patch is set to the model's mean colour: 0 in normalised space, i.e. each channel at the data
    config's mean. `steps` (default: one per patch, at most 64): points after 0, removing round(i * N / steps)
    patches at step i. The forwards run in batches of `batch_size` under inference mode.
    """
    lay = layout(module, tuple(x.shape[-2:]))
    values = np.asarray(values, dtype=np.float64)
    if values.shape != lay.grid:
        raise UsageError(f"the map is {values.shape}, the model's patch grid {lay.grid}")
    n = lay.grid[0] * lay.grid[1]
    steps = min(n, 64) if steps is None else int(steps)
    if not 1 <= steps <= n:
        raise UsageError(f"steps {steps} must be in 1..{n} (the number of patches)")
    counts = np.unique(np.round(np.arange(steps + 1) * n / steps).astype(int))  # (S+1,) patches removed
    order = np.argsort(-values.reshape(-1), kind="stable")
    (gh, gw), (ph, pw) = lay.grid, lay.patch
    keep = np.ones((len(counts), n), dtype=np.float32)
    for i, c in enumerate(counts):
        keep[i, order[:c]] = 0
    with torch.inference_mode():
        x = x.detach()
        tgt = resolve_target(module, x, target, embedding)
        keep_t = torch.as_tensor(keep, device=x.device).reshape(-1, 1, gh, gw)
        pix = keep_t.repeat_interleave(ph, dim=2).repeat_interleave(pw, dim=3)  # (S+1, 1, gh*ph, gw*pw)
        h, w = x.shape[-2:]
        pix = torch.nn.functional.pad(pix, (0, max(0, w - gw * pw), 0, max(0, h - gh * ph)), value=1.0)[..., :h, :w]
        scores = []
        for i in range(0, len(counts), batch_size):
            out = tgt.scorer(x * pix[i: i + batch_size])
            s = out.softmax(-1)[:, tgt.index] if tgt.kind == "probability" else out[:, 0]
            scores.append(s.double().cpu())
    scores = torch.cat(scores).numpy()
    fractions = counts / n
    area = float(np.sum((fractions[1:] - fractions[:-1]) * (scores[1:] + scores[:-1]) / 2))
    return DeletionCurve(fractions, scores, area)
