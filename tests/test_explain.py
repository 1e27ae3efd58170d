"""Gradient attribution on the patch grid (`vitcli.backend.explain`) and its pictures (`vitcli.draw_explain`).

Checked against the libraries called directly with hand-written reshapes, against formulas written out here
(occlusion = score drop, integrated-gradients completeness, grad-rollout), and on a tiny ViT trained here on a
toy task whose answer is known (which patch holds the coloured square).
"""

from __future__ import annotations

import sys
from contextlib import nullcontext

import numpy as np
import pytest
import timm
import torch
from PIL import Image

from vitcli.backend import explain as E
from vitcli.draw_explain import Panel, explain_sheet, upsample
from vitcli.errors import UsageError, VitcliError

TINY = dict(img_size=32, patch_size=8, embed_dim=32, depth=2, num_heads=2)

# name -> (create_model kwargs, prefix tokens, grid): the layout written out by hand for each tiny model
LAYOUTS = {
    "cls": (dict(num_classes=5), 1, (4, 4)),
    "registers": (dict(num_classes=5, reg_tokens=4, no_embed_class=True, init_values=1e-5), 5, (4, 4)),
    "map-no-cls": (dict(num_classes=5, class_token=False, global_pool="map"), 0, (4, 4)),
    "non-square": (dict(num_classes=5, img_size=(32, 48)), 1, (4, 6)),
}
CAMS = ["gradcam", "gradcam++", "layercam", "eigencam"]


def tiny(seed: int = 0, **kw) -> torch.nn.Module:
    torch.manual_seed(seed)
    return timm.create_model("vit_tiny_patch16_224", pretrained=False, **{**TINY, **kw}).eval()


@pytest.fixture(scope="module")
def models():
    return {name: tiny(i, **kw) for i, (name, (kw, _, _)) in enumerate(LAYOUTS.items())}


def image(model: torch.nn.Module, seed: int = 0) -> torch.Tensor:
    h, w = model.patch_embed.img_size
    return torch.randn(1, 3, h, w, generator=torch.Generator().manual_seed(seed))


def hand_reshape(prefix: int, gh: int, gw: int):
    """pytorch-grad-cam's documented ViT reshape, with this model's numbers typed in."""
    def reshape(tensor):
        result = tensor[:, prefix:, :].reshape(tensor.size(0), gh, gw, tensor.size(2))
        return result.transpose(2, 3).transpose(1, 2)
    return reshape


# ---- layout: every method, every token layout -----------------------------------------------------------------

@pytest.mark.parametrize("name", LAYOUTS)
@pytest.mark.parametrize("method", E.METHODS)
def test_map_has_the_models_grid(models, name, method):
    m, (_, prefix, grid) = models[name], LAYOUTS[name]
    lay = E.layout(m, tuple(image(m).shape[-2:]))
    assert (lay.prefix, lay.grid) == (prefix, grid)
    a = E.explain(m, image(m), method, target=2, ig_steps=8)
    assert a.map.shape == grid and a.map.dtype == np.float64 and np.isfinite(a.map).all()
    assert np.ptp(a.map) > 0  # not a constant (degenerate) map
    assert a.target == 2 and a.score_kind == "probability"
    with torch.no_grad():
        assert a.score == pytest.approx(float(m(image(m)).softmax(-1)[0, 2]), abs=1e-6)
    assert a.display.min() >= 0 and a.display.max() == pytest.approx(1.0)
    if method in E.SIGNED:
        assert a.signed
    else:
        assert a.map.min() >= 0
    assert a.layer == (1 if method in CAMS else None)
    assert a.to_dict()["grid"] == list(grid) and np.array_equal(np.array(a.to_dict()["map"]), a.map)


@pytest.mark.parametrize("name", LAYOUTS)
@pytest.mark.parametrize("method", CAMS)
def test_cam_maps_equal_the_library_called_directly(models, name, method):
    from pytorch_grad_cam import EigenCAM, GradCAM, GradCAMPlusPlus, LayerCAM
    from pytorch_grad_cam.utils.image import scale_cam_image
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

    Cam = {"gradcam": GradCAM, "gradcam++": GradCAMPlusPlus, "layercam": LayerCAM, "eigencam": EigenCAM}[method]
    m, (_, prefix, (gh, gw)) = models[name], LAYOUTS[name]
    x = image(m, seed=3)
    for layer, rule in ((None, True), (0, True), (None, False), (0, False)):
        target_layer = m.blocks[1 if layer is None else layer].norm1
        with E.ln_rule(m) if rule else nullcontext():  # entered first, as explain does: the library sees its output
            cam = Cam(model=m, target_layers=[target_layer], reshape_transform=hand_reshape(prefix, gh, gw))
            targets = [ClassifierOutputTarget(4)]
            direct = cam(input_tensor=x, targets=targets)  # (1, H, W): the library's own output
            rec = cam.activations_and_grads
            raw = cam.get_cam_image(x, target_layer, targets, rec.activations[0].numpy(),
                                    rec.gradients[0].numpy() if rec.gradients else None, False)[0]
            rec.release()
        got = E.explain(m, x, method, target=4, layer=layer, ln_rule=rule)
        assert got.layer_name == f"blocks.{1 if layer is None else layer}.norm1"
        assert got.extras.get("ln_rule") == (rule if method != "eigencam" else None)  # EigenCAM: no gradients
        assert np.allclose(got.map, np.maximum(raw, 0), rtol=1e-5, atol=1e-8)  # grid level, raw scale
        # the library's scaling and resize applied to our grid map give the library's output
        h, w = x.shape[-2:]
        ours = scale_cam_image(scale_cam_image(got.map[None].astype(np.float32), (w, h)))
        assert direct.shape == (1, h, w) and np.allclose(ours, direct, atol=1e-5)


@pytest.mark.parametrize("name", LAYOUTS)
def test_captum_maps_equal_the_library_called_directly(models, name):
    from captum.attr import IntegratedGradients, Occlusion

    m, (_, _, (gh, gw)) = models[name], LAYOUTS[name]
    x = image(m, seed=4)
    ig = IntegratedGradients(m).attribute(x, baselines=torch.zeros_like(x), target=1, n_steps=24,
                                          method="gausslegendre")
    occ = Occlusion(m).attribute(x, sliding_window_shapes=(3, 8, 8), strides=(3, 8, 8), baselines=0, target=1)
    # pixels -> patches by hand: (1, 3, gh*8, gw*8) -> (gh, gw)
    ig_patches = ig.detach().double().reshape(3, gh, 8, gw, 8).sum(dim=(0, 2, 4)).numpy()
    occ_patches = occ.detach().double().reshape(3, gh, 8, gw, 8).mean(dim=(0, 2, 4)).numpy()
    got_ig = E.explain(m, x, "integrated-gradients", target=1, ig_steps=24)
    got_occ = E.explain(m, x, "occlusion", target=1)
    assert np.allclose(got_ig.map, ig_patches, rtol=1e-4, atol=1e-6)
    assert np.allclose(got_occ.map, occ_patches, rtol=1e-5, atol=1e-6)
    with torch.no_grad():
        full = m(x)[0, 1].item()
        # occlusion = the logit's drop when exactly that patch is set to the mean colour (0 normalised)
        for r, c in [(0, 0), (gh - 1, gw - 1), (1, gw - 2)]:
            y = x.clone()
            y[:, :, r * 8:(r + 1) * 8, c * 8:(c + 1) * 8] = 0
            assert got_occ.map[r, c] == pytest.approx(full - m(y)[0, 1].item(), abs=1e-5)
        # integrated gradients: the patches add up to logit(x) - logit(mean colour), up to Captum's delta
        gap = full - m(torch.zeros_like(x))[0, 1].item()
    assert got_ig.map.sum() == pytest.approx(gap - got_ig.extras["convergence_delta"], abs=1e-4)
    assert abs(got_ig.extras["convergence_delta"]) < 0.05 * max(abs(gap), 1e-3)


def rollout_by_hand(m: torch.nn.Module, x: torch.Tensor, target: int, rows: str, prefix: int) -> np.ndarray:
    """Gradient-weighted rollout written out: A*dA, heads averaged, clamped, +I, rows renormalised, product."""
    seen = {}

    def keep(b):
        def hook(mod, inputs, out):
            out.retain_grad()
            seen[b] = out
        return hook

    hooks = [blk.attn.attn_drop.register_forward_hook(keep(b)) for b, blk in enumerate(m.blocks)]
    flags = [blk.attn.fused_attn for blk in m.blocks]
    for blk in m.blocks:
        blk.attn.fused_attn = False
    try:
        m(x.clone().requires_grad_(True))[0, target].backward()
    finally:
        for h in hooks:
            h.remove()
        for blk, f in zip(m.blocks, flags):
            blk.attn.fused_attn = f
        m.zero_grad()
    t = seen[0].shape[-1]
    result = np.eye(t)
    for b in range(len(m.blocks)):
        a = (seen[b].detach() * seen[b].grad)[0].double().numpy().mean(axis=0).clip(min=0) + np.eye(t)
        result = (a / a.sum(axis=1, keepdims=True)) @ result
    read = result[:1] if rows == "cls" else result[prefix:]
    return read[:, prefix:].mean(axis=0)


@pytest.mark.parametrize("name", LAYOUTS)
def test_grad_rollout_by_hand(models, name):
    m, (_, prefix, _) = models[name], LAYOUTS[name]
    x = image(m, seed=5)
    rows = "patches" if name == "map-no-cls" else "cls"  # the attention pool reads the patch tokens
    fused = [blk.attn.fused_attn for blk in m.blocks]
    got = E.explain(m, x, "grad-rollout", target=3)
    assert got.extras["readout"] == rows and got.extras["ln_rule"] is True
    with E.ln_rule(m):
        assert np.allclose(got.map.reshape(-1), rollout_by_hand(m, x, 3, rows, prefix), rtol=1e-6, atol=1e-12)
    plain = E.explain(m, x, "grad-rollout", target=3, ln_rule=False)  # vit-explain's own gradients
    assert plain.extras["ln_rule"] is False
    assert np.allclose(plain.map.reshape(-1), rollout_by_hand(m, x, 3, rows, prefix), rtol=1e-6, atol=1e-12)
    assert [blk.attn.fused_attn for blk in m.blocks] == fused  # fused attention restored
    assert all(p.requires_grad for p in m.parameters()) and all(p.grad is None for p in m.parameters())


# ---- the LN-rule: LayerNorm's scale held constant in the backward pass ----------------------------------------

@pytest.mark.parametrize("norm", [torch.nn.LayerNorm(8), timm.layers.LayerNorm(8), timm.layers.LayerNormFp32(8),
                                  torch.nn.RMSNorm(8), timm.layers.RmsNorm(8),
                                  torch.nn.LayerNorm(8, elementwise_affine=False)],
                         ids=["torch-ln", "timm-ln", "timm-ln-fp32", "torch-rms", "timm-rms", "ln-no-affine"])
def test_ln_rule_keeps_the_output_and_holds_the_scale_constant(norm):
    torch.manual_seed(0)
    norm = norm.double()
    with torch.no_grad():
        for p in norm.parameters():
            p.uniform_(0.5, 2.0)
    x = torch.randn(2, 5, 8, dtype=torch.float64, requires_grad=True)
    g = torch.randn(2, 5, 8, dtype=torch.float64)
    plain = norm(x)
    with E.ln_rule(torch.nn.Sequential(norm)):
        ruled = norm(x)
    assert torch.equal(ruled, plain)  # the forward, bit for bit
    (grad,) = torch.autograd.grad((ruled * g).sum(), x)
    layer_norm = isinstance(norm, torch.nn.LayerNorm)
    centred = x - x.mean(-1, keepdim=True) if layer_norm else x
    eps = torch.finfo(x.dtype).eps if norm.eps is None else norm.eps
    scaled = g * (norm.weight if norm.weight is not None else 1) / (centred.pow(2).mean(-1, keepdim=True) + eps).sqrt()
    want = scaled - scaled.mean(-1, keepdim=True) if layer_norm else scaled  # centring's Jacobian; 1/sigma fixed
    assert torch.allclose(grad, want, rtol=1e-12, atol=1e-14)
    (after,) = torch.autograd.grad((norm(x) * g).sum(), x)  # hooks gone: the exact gradient again
    (exact,) = torch.autograd.grad((plain * g).sum(), x)
    assert torch.equal(after, exact) and not torch.allclose(exact, want)


def test_ln_rule_leaves_other_norms_alone():
    """2-D norms (conv stems) and norms fused with an activation normalise differently: their gradient stays."""
    others = torch.nn.Sequential(timm.layers.LayerNorm2d(8), timm.layers.LayerNormAct(8), torch.nn.BatchNorm1d(8))
    assert E._norm_layers(others) == []
    m = tiny(0, num_classes=5)
    assert E._norm_layers(m) == [n for b in m.blocks for n in (b.norm1, b.norm2)] + [m.norm]


def test_ln_rule_keeps_a_bfloat16_forward():
    m = tiny(0, num_classes=5).to(torch.bfloat16)
    x = image(m, seed=13).to(torch.bfloat16)
    with torch.no_grad():
        plain = m(x)
        with E.ln_rule(m):
            ruled = m(x)
    assert ruled.dtype == torch.bfloat16 and torch.equal(ruled, plain)


def test_ln_rule_makes_activation_times_gradient_add_up_to_the_logit():
    """Why the rule: the final LayerNorm makes the logit blind to the stream's scale, so the exact gradient is
    orthogonal to the stream it reads (activation x gradient adds up to 0, whatever the tokens contributed).
    With the scale held constant it adds up to the logit, less the norm's and the head's biases."""
    m = tiny(1, num_classes=5)
    x = image(m, seed=12).requires_grad_(True)
    seen = {}

    def keep(mod, inputs, out):
        inputs[0].retain_grad()
        seen["stream"] = inputs[0]

    h = m.norm.register_forward_hook(keep)
    try:
        with E._gradients(m):
            for rule in (False, True):
                with E.ln_rule(m) if rule else nullcontext():
                    logit = m(x)[0, 3]
                    logit.backward()
                stream = seen["stream"][0, 0].detach().double()  # the CLS row entering the final norm
                dot = float(seen["stream"].grad[0, 0].double() @ stream)
                if rule:
                    bias = float(m.head.weight[3].double() @ m.norm.bias.double() + m.head.bias[3])
                    assert dot == pytest.approx(float(logit.detach()) - bias, rel=1e-5)
                else:
                    assert abs(dot) < 1e-3 * float(seen["stream"].grad[0, 0].norm() * stream.norm())  # 0 but eps
    finally:
        h.remove()


# ---- the default layer has gradients for every patch -----------------------------------------------------------

def patch_grads(m: torch.nn.Module, x: torch.Tensor, module: torch.nn.Module, score) -> torch.Tensor:
    """(T, D) gradient of `score(model)` at `module`'s output."""
    out = {}

    def hook(mod, inputs, o):
        o.retain_grad()
        out["t"] = o

    h = module.register_forward_hook(hook)
    try:
        score(x).backward()
    finally:
        h.remove()
        m.zero_grad()
    return out["t"].grad[0]


@pytest.mark.parametrize("kw, prefix", [
    (dict(num_classes=5), 1),
    (dict(num_classes=5, reg_tokens=4, no_embed_class=True, init_values=1e-5), 5),
    (dict(num_classes=5, class_token=False, global_pool="map"), 0),
    (dict(num_classes=5, class_token=False, global_pool="avg"), 0),
    (dict(num_classes=5, global_pool="avg"), 1),
])
def test_default_layer_gives_every_patch_a_gradient(kw, prefix):
    m = tiny(7, **kw)
    x = image(m, seed=6)
    k = E.default_layer(m)
    assert k == len(m.blocks) - 1
    layer, name = E.target_layer(m, k)
    assert layer is m.blocks[-1].norm1 and name == "blocks.1.norm1"
    g = patch_grads(m, x, layer, lambda x: m(x)[0, 0])
    assert g.shape[0] == prefix + 16
    norms = g[prefix:].norm(dim=-1)
    assert (norms > 1e-3 * norms.max()).all()  # every patch token, not just some
    # why not the block's own output: with CLS pooling only the CLS token leaves the last block
    out_grads = patch_grads(m, x, m.blocks[-1], lambda x: m(x)[0, 0])[prefix:]
    if m.global_pool == "token":
        assert torch.count_nonzero(out_grads) == 0
    else:
        assert (out_grads.norm(dim=-1) > 0).all()


def test_default_layer_gradients_for_an_embedding_target():
    m = tiny(8, num_classes=0, reg_tokens=4, no_embed_class=True, init_values=1e-5)  # DINOv2-like, no head
    x = image(m, seed=7)
    v = torch.randn(32, generator=torch.Generator().manual_seed(0))
    score = E.Scorer(m, v)
    g = patch_grads(m, x, m.blocks[-1].norm1, lambda x: score(x)[0, 0])
    assert (g[5:].norm(dim=-1) > 0).all()


# ---- targets --------------------------------------------------------------------------------------------------

def test_targets(models):
    m = models["cls"]
    x = image(m, seed=8)
    with torch.no_grad():
        probs = m(x).softmax(-1)[0]
    top = E.explain(m, x, "gradcam")
    assert top.target == int(probs.argmax()) and top.score == pytest.approx(float(probs.max()), abs=1e-6)
    assert not np.allclose(E.explain(m, x, "gradcam", target=0).map, E.explain(m, x, "gradcam", target=3).map)
    with pytest.raises(UsageError, match="out of range"):
        E.explain(m, x, "gradcam", target=5)
    with pytest.raises(UsageError, match="not one of"):
        E.explain(m, x, "saliency")
    with pytest.raises(UsageError, match="out of range"):
        E.explain(m, x, "gradcam", layer=2)
    assert E.explain(m, x, "gradcam", layer=-2).layer == 0


def test_embedding_target_is_cosine_to_pooled_features():
    m = tiny(9, num_classes=0, class_token=False, global_pool="map")  # SigLIP-like: no CLS, no head
    x = image(m, seed=9)
    with pytest.raises(UsageError, match="no classifier head") as e:
        E.explain(m, x, "gradcam")
    assert "--target-embedding" in e.value.hint
    with pytest.raises(UsageError, match="31 dimensions, the model's pooled output 32"):
        E.explain(m, x, "gradcam", embedding=np.ones(31))
    with pytest.raises(UsageError, match="give one of them"):
        E.explain(models_with_head := tiny(9, num_classes=3), image(models_with_head), "gradcam", target=1,
                  embedding=np.ones(32))
    with torch.no_grad():
        feats = m.forward_head(m.forward_features(image(m, seed=10)), pre_logits=True)[0]  # a "features" row
        want = torch.nn.functional.cosine_similarity(m.forward_head(m.forward_features(x), pre_logits=True)[0],
                                                     feats, dim=0).item()
    for method in ("gradcam", "integrated-gradients", "grad-rollout"):
        a = E.explain(m, x, method, embedding=feats.numpy()[None], ig_steps=8)
        assert a.target is None and a.score_kind == "cosine" and a.score == pytest.approx(want, abs=1e-5)
        assert a.map.shape == (4, 4) and np.ptp(a.map) > 0
    curve = E.deletion_curve(m, x, np.arange(16.0).reshape(4, 4), embedding=feats.numpy())
    assert curve.scores[0] == pytest.approx(want, abs=1e-5)


# ---- missing libraries ----------------------------------------------------------------------------------------

@pytest.mark.parametrize("method, modules", [
    ("gradcam", ["pytorch_grad_cam"]),
    ("eigencam", ["pytorch_grad_cam"]),
    ("integrated-gradients", ["captum", "captum.attr"]),
    ("occlusion", ["captum", "captum.attr"]),
])
def test_missing_library_names_the_extra(models, monkeypatch, method, modules):
    for name in modules:
        monkeypatch.setitem(sys.modules, name, None)  # `import name` now fails as if not installed
    with pytest.raises(VitcliError) as e:
        E.explain(models["cls"], image(models["cls"]), method)
    line = f"{e.value.message}; {e.value.hint}"
    assert "\n" not in line and 'pip install "vitcli[explain]"' in line and method in line


# ---- deletion curve -------------------------------------------------------------------------------------------

def test_deletion_curve_by_hand(models):
    m = models["non-square"]
    x = image(m, seed=11)
    values = np.random.default_rng(0).random((4, 6))
    curve = E.deletion_curve(m, x, values, target=2, steps=6)
    order = np.argsort(-values.reshape(-1))
    want = []
    with torch.no_grad():
        for k in range(0, 25, 4):  # 0, 4, ..., 24 patches removed
            y = x.clone()
            for i in order[:k]:
                r, c = divmod(int(i), 6)
                y[:, :, r * 8:(r + 1) * 8, c * 8:(c + 1) * 8] = 0  # the mean colour
            want.append(m(y).softmax(-1)[0, 2].item())
    assert np.allclose(curve.fractions, np.arange(7) / 6)
    assert np.allclose(curve.scores, want, atol=1e-6)
    assert curve.area == pytest.approx(sum((want[i] + want[i + 1]) / 12 for i in range(6)), abs=1e-6)
    again = E.deletion_curve(m, x, values, target=2, steps=6, batch_size=2)
    assert np.allclose(again.scores, curve.scores, atol=1e-6)
    with pytest.raises(UsageError, match="patch grid"):
        E.deletion_curve(m, x, values.T, target=2)


# ---- a model trained here on a task whose answer is known -----------------------------------------------------

H, W, P = 32, 48, 8  # a non-square 4x6 grid: a transposed or shifted reshape would point at the wrong patch
COLOURS = torch.tensor([[2.0, -1, -1], [-1, 2, -1], [-1, -1, 2], [2, 2, -1]])  # normalised RGB, classes 0-3


def squares(n: int, g: torch.Generator):
    """(n, 3, 32, 48) noise; classes 0-3: one patch-aligned 8x8 square of that class's colour at a random
    patch; class 4: no square. Returns images, classes, the square's patch index (row-major)."""
    x = torch.randn(n, 3, H, W, generator=g) * 0.5
    y = torch.randint(0, 5, (n,), generator=g)
    pos = torch.randint(0, (H // P) * (W // P), (n,), generator=g)
    for i in range(n):
        if y[i] < 4:
            r, c = divmod(int(pos[i]), W // P)
            x[i, :, r * P:(r + 1) * P, c * P:(c + 1) * P] = COLOURS[y[i]][:, None, None]
    return x, y, pos


@pytest.fixture(scope="module")
def trained():
    """A 2-block ViT (CLS pooling) trained for 150 steps to 100% held-out accuracy; one thread, seeded."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # one reduction order: the same weights on every run
    try:
        torch.manual_seed(0)
        m = timm.create_model("vit_tiny_patch16_224", pretrained=False, **{**TINY, "img_size": (H, W)},
                              num_classes=5)
        opt = torch.optim.Adam(m.parameters(), lr=3e-3)
        g = torch.Generator().manual_seed(0)
        for _ in range(150):
            x, y, _ = squares(64, g)
            loss = torch.nn.functional.cross_entropy(m(x), y)
            opt.zero_grad()
            loss.backward()
            opt.step()
        m.eval().zero_grad()
        xt, yt, _ = squares(256, torch.Generator().manual_seed(1))
        with torch.no_grad():
            assert (m(xt).argmax(-1) == yt).all()
        x, y, pos = squares(48, torch.Generator().manual_seed(2))
        keep = (y < 4).nonzero()[:16, 0]  # 16 images with a square
        yield m, x[keep], y[keep], pos[keep]
    finally:
        torch.set_num_threads(threads)


def top_patch(values: np.ndarray) -> int:
    return int(np.argmax(values.reshape(-1)))


def test_trained_what_each_method_achieves(trained):
    """Top patch on the square, of 16 images (chance: 1 in 24). Measured (torch 2.14.1, one thread): occlusion
    16, integrated-gradients 16; with the LN-rule (the default) grad-rollout 16, LayerCAM 16, Grad-CAM 13,
    Grad-CAM++ 7; with the plain gradient (--no-ln-rule, what the libraries compute) 10, 4, 3 and 0.

    The plain-gradient CAMs miss, and not through a layout error (their maps equal the library's, above;
    attention-rollout, read through the same layout, finds it every time): before the CAM's ReLU, the square's
    own value is negative in most images (measured: Grad-CAM 13, Grad-CAM++ 14, LayerCAM 12 of 16), so the
    ReLU sets the decisive patch to zero. The final LayerNorm makes the score blind to the stream's scale, so
    activation x gradient adds up to about 0 (test above) and its sign at the decisive token is anyone's; the
    LN-rule makes it add up to the score. Grad-CAM still averages the gradient over all patches (CAM's
    average-pooling assumption, not a CLS token's attention) and Grad-CAM++'s closed-form weights assume
    non-negative activations: docs/explain.md has the other layers and training runs tried."""
    from pytorch_grad_cam import GradCAM, GradCAMPlusPlus, LayerCAM
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

    m, x, y, pos = trained
    n = len(y)

    def hits(method, **kw):
        return sum(top_patch(E.explain(m, x[i:i + 1], method, target=int(y[i]), **kw).map) == int(pos[i])
                   for i in range(n))

    assert hits("integrated-gradients") == hits("occlusion") == n
    ruled = {method: hits(method) for method in E.LN_RULE_METHODS}
    plain = {method: hits(method, ln_rule=False) for method in E.LN_RULE_METHODS}
    assert ruled["grad-rollout"] == ruled["layercam"] == n, ruled
    assert ruled["gradcam"] >= 12 and ruled["gradcam++"] >= 6, ruled
    assert all(ruled[k] > plain[k] for k in ruled), (ruled, plain)
    assert plain["grad-rollout"] >= n // 2 and max(plain.values()) < n, plain  # above chance, below the rule
    layer = m.blocks[-1].norm1
    for name, Cam in (("gradcam", GradCAM), ("gradcam++", GradCAMPlusPlus), ("layercam", LayerCAM)):
        negative = 0
        for i in range(n):
            xi = x[i:i + 1].clone().requires_grad_(True)
            cam = Cam(model=m, target_layers=[layer], reshape_transform=hand_reshape(1, H // P, W // P))
            targets = [ClassifierOutputTarget(int(y[i]))]
            cam(input_tensor=xi, targets=targets)
            rec = cam.activations_and_grads
            raw = cam.get_cam_image(xi, layer, targets, rec.activations[0].numpy(), rec.gradients[0].numpy(),
                                    False)[0]  # (gh, gw) before the ReLU
            rec.release()
            negative += int(raw.reshape(-1)[int(pos[i])] < 0)
        assert negative >= 10, (name, negative)  # the plain gradient, as the library computes it
    m.zero_grad()


def test_trained_attention_rollout_points_at_the_square(trained):
    """Class-agnostic, but the square is the only salient token: checks the rollout read-out's layout."""
    m, x, y, pos = trained
    assert all(top_patch(E.explain(m, x[i:i + 1], "attention-rollout").map) == int(pos[i]) for i in range(len(y)))


@pytest.mark.parametrize("method", ["gradcam", "gradcam++", "layercam", "grad-rollout", "integrated-gradients",
                                    "occlusion"])
def test_trained_maps_depend_on_the_target(trained, method):
    m, x, y, pos = trained
    a = E.explain(m, x[:1], method, target=int(y[0]))
    b = E.explain(m, x[:1], method, target=4)
    assert not np.allclose(a.map, b.map)


def test_trained_eigencam_is_class_agnostic(trained):
    m, x, y, pos = trained
    a = E.explain(m, x[:1], "eigencam", target=int(y[0]))
    b = E.explain(m, x[:1], "eigencam", target=4)
    assert np.array_equal(a.map, b.map) and np.ptp(a.map) > 0


def test_trained_deletion_square_first_beats_random_order(trained):
    m, x, y, pos = trained
    rng = np.random.default_rng(0)
    square_first, random_order, ig = [], [], []
    for i in range(len(y)):
        xi, t = x[i:i + 1], int(y[i])
        truth = np.zeros(24)
        truth[int(pos[i])] = 1
        square_first.append(E.deletion_curve(m, xi, truth.reshape(4, 6), target=t).area)
        random_order.append(np.mean([E.deletion_curve(m, xi, rng.random((4, 6)), target=t).area for _ in range(5)]))
        ig.append(E.deletion_curve(m, xi, E.explain(m, xi, "integrated-gradients", target=t).map, target=t).area)
    assert all(s < r for s, r in zip(square_first, random_order))
    assert np.mean(square_first) < 0.5 * np.mean(random_order)
    assert np.mean(ig) < 0.5 * np.mean(random_order)


# ---- pictures -------------------------------------------------------------------------------------------------

def test_upsample_is_bilinear_with_half_pixel_centres():
    values = np.random.default_rng(1).random((4, 6))
    got = upsample(values, (32, 48))
    want = torch.nn.functional.interpolate(torch.tensor(values)[None, None], size=(32, 48), mode="bilinear",
                                           align_corners=False)[0, 0].numpy()
    assert got.shape == (32, 48) and got.dtype == np.float64
    assert np.allclose(got, want, atol=1e-5)
    assert np.allclose(upsample(np.full((3, 5), 0.25), (7, 11)), 0.25)


class Crop:
    """A hand-made Geometry: an original of (h, w) scaled by `s` and cropped at (left, top) to (H, W)."""

    def __init__(self, original, s, crop, size):
        self.original, self.s, self.crop, self.size = original, s, crop, size

    def to_input(self, x, y):
        return x * self.s - self.crop[0], y * self.s - self.crop[1]

    def source_box(self):
        (h, w), (H, W) = self.original, self.size
        return (max(self.crop[0] / self.s, 0), max(self.crop[1] / self.s, 0), min((self.crop[0] + W) / self.s, w),
                min((self.crop[1] + H) / self.s, h))


def test_on_original_is_upsample_when_nothing_is_cropped():
    from vitcli.draw_explain import on_original
    from vitcli.preprocess import Plan

    values = np.random.default_rng(2).random((4, 6))
    cfg = {"input_size": (3, 32, 48), "interpolation": "bilinear", "crop_pct": 1.0, "crop_mode": "center",
           "mean": (0.5,) * 3, "std": (0.5,) * 3}
    geo = Plan.from_config(cfg).geometry((32, 48))  # the picture is the model input
    got = on_original(values, geo, (8, 8))
    assert got.shape == (32, 48) and np.allclose(got, upsample(values, (32, 48)), atol=1e-6)
    double = on_original(values, Plan.from_config(cfg).geometry((64, 96)), (8, 8))  # halved by the resize
    assert np.allclose(double, upsample(values, (64, 96)), atol=1e-6)


def test_on_original_places_patches_and_leaves_the_crop_out():
    from vitcli.draw_explain import on_original, original_overlay

    values = np.arange(16.0).reshape(4, 4)
    geo = Crop((40, 60), 1.0, (14, 4), (32, 32))  # a 40x60 picture, the model sees x 14..46, y 4..36
    got = on_original(values, geo, (8, 8))
    assert got.shape == (40, 60)
    seen = np.isfinite(got)
    assert seen[4:36, 14:46].all() and seen.sum() == 32 * 32  # exactly the crop
    for r, c in [(1, 1), (2, 1), (1, 2), (2, 2)]:  # inner patches (the edges are clamped, as in `upsample`)
        # pixel (x, y) of the original covers input pixel (x - 14, y - 4); patch (r, c)'s centre is at
        # input (8c + 4, 8r + 4), between the original pixels whose centres are half a pixel either side
        y0, x0 = 4 + 8 * r + 3, 14 + 8 * c + 3
        assert got[y0:y0 + 2, x0:x0 + 2].mean() == pytest.approx(values[r, c])
    pic = original_overlay(Image.new("RGB", (60, 40), (200, 200, 200)), values / values.max(), geo, (8, 8))
    px = np.asarray(pic, dtype=float)
    yy, xx = np.mgrid[0:40, 0:60]
    shade = np.where((xx + yy) % 8 < 2, 200 * 0.3 + 70, 200 * 0.3)  # darkened, hatched: the model never saw it
    assert np.allclose(px[~seen], shade[~seen][:, None], atol=1)
    assert not np.allclose(px[seen], 200, atol=5)  # the heat is drawn where it looked


def test_sheet_puts_the_heat_on_the_hot_patch():
    img = Image.new("RGB", (48, 32), (128, 128, 128))
    hot = np.zeros((4, 6))
    hot[3, 5] = 1.0  # bottom-right patch
    sheet = explain_sheet(img, [Panel("gradcam", hot, layer=11, deletion_area=0.125),
                                Panel("occlusion", hot[::-1].copy())], ["target: class 3, p = 0.900"], tile=96)
    assert sheet.width == 3 * (96 + 6) + 6
    px = np.asarray(sheet, dtype=float)
    tile = px[6:6 + 64, 6 + 102: 6 + 102 + 96]  # the gradcam tile (second), 96x64
    assert tile[56, 90].sum() > tile[8, 8].sum() + 100  # bright where the map is hot, dark elsewhere
    assert Panel("gradcam", hot, layer=11, deletion_area=0.125).caption() == ["gradcam (block 11)",
                                                                             "deletion area 0.125"]
