"""`vitcli tokens`: the token layout for image sizes x patch sizes or a timm model; or, with `--preset`, the visual
tokens a VLM/VLA's language model receives per image and per robot control step (core/vlm.py). Torch-free."""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING

from vitcli.core.tokens import Pair, TokenLayout, parse_pairs, token_layout
from vitcli.errors import UsageError

if TYPE_CHECKING:  # core.vlm loads with --preset or --list-presets only
    from vitcli.core.vlm import ControlBudget, ImageTokens, VLMPreset

ASSUMES = ("every frame of every camera is encoded and sent to the language model each step (no feature cache); "
           "history frames count as separate images")


@dataclass(frozen=True, kw_only=True)
class TokensRequest:
    """What to count. Without a preset: `sizes` x `patches` (or a timm `model`). With a VLM/VLA `preset`: `sizes`
    are input images or camera frames (h, w), default the preset's native size; `options` the preset's processor
    options by name (None: the released default); `cameras`, `frames`, `hz` turn on the per-step budget."""

    sizes: tuple[Pair, ...] = ()  # N or HxW text, parsed here
    patches: tuple[Pair, ...] = ()
    cls_token: bool | None = None  # None: yes, or the model's own
    registers: int | None = None
    model: str | None = None
    preset: str | None = None
    list_presets: bool = False
    cameras: int | None = None  # None: the preset's own (pi0: 3, others 1)
    frames: int | None = None  # history frames per camera per step; None: 1
    hz: float | None = None  # control steps per second
    options: dict = field(default_factory=dict)  # preset processor options by name; None values: not given

    def __post_init__(self):
        object.__setattr__(self, "sizes", parse_pairs(self.sizes, "--size"))
        object.__setattr__(self, "patches", parse_pairs(self.patches, "--patch"))
        given = {k: v for k, v in self.options.items() if v is not None}
        object.__setattr__(self, "options", given)
        if self.registers is not None and self.registers < 0:
            raise UsageError(f"--registers {self.registers} must be 0 or more")
        layout_flags = [flag for flag, v in (("--patch", self.patches), ("--model", self.model),
                                             ("--cls/--no-cls", self.cls_token is not None),
                                             ("--registers", self.registers is not None)) if v]
        vlm_flags = [flag for flag, v in (("--cameras", self.cameras), ("--frames", self.frames), ("--hz", self.hz))
                     if v is not None]
        vlm_flags += ["--" + k.replace("_", "-") for k in given]
        if self.list_presets:
            other = layout_flags + vlm_flags + (["--preset"] if self.preset else [])
            if other:
                raise UsageError(f"--list-presets goes with --size and --json only, not {', '.join(other)}",
                                 hint="--list-presets --size HxW shows every preset's tokens at that size")
            return
        if self.preset:
            from vitcli.core.vlm import check_control, get_vlm_preset, resolve_options

            if layout_flags:
                raise UsageError(f"--preset {self.preset} sets the patch, prefix tokens and models itself",
                                 hint=f"drop {'/'.join(layout_flags)} (--size is the input image or camera frame)")
            p = get_vlm_preset(self.preset)
            resolve_options(p, given)  # an option the preset does not take, or a bad value: UsageError
            check_control(self.cameras, self.frames, self.hz)
            return
        if vlm_flags:
            raise UsageError(f"{', '.join(vlm_flags)} need{'s' if len(vlm_flags) == 1 else ''} --preset",
                             hint="e.g. vitcli tokens --preset pi0 --cameras 3 --hz 50 (see --list-presets)")
        if self.model is None and not (self.sizes and self.patches):
            missing = "--size" if not self.sizes else "--patch"
            raise UsageError(f"{missing} is needed without --model",
                             hint="e.g. vitcli tokens --size 384 --patch 16, or --preset qwen2-vl --size 1080x1920")

    @property
    def control(self) -> bool:
        """Whether the per-control-step budget was asked for."""
        return self.cameras is not None or self.frames is not None or self.hz is not None


@dataclass(frozen=True)
class TokensResult:
    layouts: tuple[TokenLayout, ...]

    def to_dict(self) -> dict | list[dict]:
        """One layout -> one object; several -> a list, in the order size x patch."""
        rows = [layout.to_dict() for layout in self.layouts]
        return rows[0] if len(rows) == 1 else rows


@dataclass(frozen=True)
class VLMTokensResult:
    """One VLM/VLA preset: per input size (h, w) what the language model receives (`rows`, core.vlm.ImageTokens),
    and with --cameras/--frames/--hz the budget per control step for each size (`steps`, core.vlm.ControlBudget:
    every camera at that size). `fused` (openvla only): its two encoders' layouts and core/presets.budget."""

    preset: VLMPreset
    rows: tuple[ImageTokens, ...]  # one per size
    native: bool  # no --size given: the preset's native size
    steps: tuple[ControlBudget, ...] | None = None  # one per row
    notes: tuple[str, ...] = ()
    fused: dict | None = None

    def to_dict(self) -> dict:
        """{"preset": record, "rows": [per size], "control": settings or null, "fused": openvla's encoders or
        null, "notes": [...]}. Each row: core.vlm.ImageTokens.to_dict() (preset, image, resized, tiles,
        encoder_tokens, visual_tokens, special_tokens, ...), and with control: cameras, frames, hz,
        tokens_per_step, tokens_per_second, encoder_macs_per_step (null where vitcli's cost model lacks the
        encoder) and the rest of core.vlm.ControlBudget.to_dict()."""
        rows = []
        for i, r in enumerate(self.rows):
            d = r.to_dict()
            if self.steps:
                b = self.steps[i].to_dict()
                units = {**d.pop("units"), **b.pop("units")}
                for k in ("preset", "per_camera", "encoder"):
                    b.pop(k)
                d = {**d, **b, "units": units}
            rows.append(d)
        control = None
        if self.steps:
            b = self.steps[0]
            control = {"cameras": b.cameras, "frames": b.frames, "hz": b.hz, "encoder": b.encoder,
                       "assumes": ASSUMES}
        return {"preset": self.preset.to_dict(), "size_source": "native" if self.native else "--size",
                "rows": rows, "control": control, "fused": self.fused, "notes": list(self.notes)}


@dataclass(frozen=True)
class TokensPresetsResult:
    """Every VLM/VLA preset (core.vlm.VLMPreset), its tokens at its native size (`native`, ImageTokens), and with
    --size the tokens at each size (`at`: per preset, one ImageTokens or the UsageError message per size)."""

    presets: tuple[VLMPreset, ...]
    native: tuple[ImageTokens, ...]
    sizes: tuple[Pair, ...] = ()
    at: tuple[tuple[ImageTokens | dict, ...], ...] = ()  # per preset, per size: the row or {"image", "error"}

    def to_dict(self) -> dict:
        out = []
        for i, p in enumerate(self.presets):
            n = self.native[i]
            d = {**p.to_dict(), "native_tokens": {"visual_tokens": n.visual_tokens,
                                                  "special_tokens": n.special_tokens,
                                                  "total_tokens": n.total_tokens}}
            if self.sizes:
                d["at_sizes"] = [r if isinstance(r, dict) else {
                    "image": list(r.image), "tiles": r.tiles, "encoder_tokens": r.encoder_tokens,
                    "visual_tokens": r.visual_tokens, "special_tokens": r.special_tokens,
                    "total_tokens": r.total_tokens, "encoder_macs": r.encoder_macs} for r in self.at[i]]
            out.append(d)
        return {"presets": out, "sizes": [list(s) for s in self.sizes]}


def run_tokens(req: TokensRequest) -> TokensResult | VLMTokensResult | TokensPresetsResult:
    """Token layouts for every size x patch (unset values from a timm model); with a preset, the VLM/VLA budget
    per size (and per control step); with list_presets, every preset."""
    if req.list_presets:
        return _list_presets(req.sizes)
    if req.preset:
        return _run_vlm(req)
    from vitcli.specs import resolve_spec  # the spec table: only with a model

    sizes, patches, cls_token, registers = req.sizes, req.patches, req.cls_token, req.registers
    if req.model is not None:
        spec = resolve_spec(req.model)
        sizes = sizes or (spec.img_size,)
        patches = patches or (spec.patch_size,)
        cls_token = spec.class_token if cls_token is None else cls_token
        registers = spec.reg_tokens if registers is None else registers
    return TokensResult(tuple(token_layout(s, p, True if cls_token is None else cls_token, registers or 0,
                                           model=req.model) for s in sizes for p in patches))


def _run_vlm(req: TokensRequest) -> VLMTokensResult:
    from vitcli.core import vlm

    p = vlm.get_vlm_preset(req.preset)
    sizes = req.sizes or (p.native,)
    options = dict(req.options)
    cameras = p.cameras if req.cameras is None else req.cameras
    frames = req.frames or 1
    notes = []
    if not req.sizes:
        notes.append(f"no --size: {p.name}'s native size {p.native[0]}x{p.native[1]}; give --size HxW (height "
                     f"first) for your image or camera frame")
    images = cameras * frames
    if req.control and any(o.name == "multi_image" for o in p.options) and "multi_image" not in options \
            and images > 1:
        options["multi_image"] = True
        notes.append(f"{images} images per step in one prompt: {p.name}'s processor treats each as one of several "
                     f"images (padded to a square, no tiles; --no-multi-image to count single images)")
    rows = tuple(vlm.image_tokens(p, s, **options) for s in sizes)
    steps = None
    if req.control:
        steps = tuple(vlm.control_budget([r], cameras=cameras, frames=frames, hz=req.hz) for r in rows)
        if p.kind == "qwen" and frames > 1:
            notes.append("Qwen's video path (2 frames merged per temporal patch) is not modelled: frames count as "
                         "separate images")
    elif p.cameras > 1:
        r = rows[0]
        notes.append(f"{p.name} sees {p.cameras} cameras per control step: {p.cameras} x {r.total_tokens:,} = "
                     f"{p.cameras * r.total_tokens:,} tokens per step at {r.image[0]}x{r.image[1]}; add --hz F "
                     f"(and --cameras, --frames) for the budget per step and per second")
    fused = _openvla_fused() if p.kind == "openvla" else None
    return VLMTokensResult(p, rows, native=not req.sizes, steps=steps, notes=tuple(notes), fused=fused)


def _openvla_fused() -> dict:
    """OpenVLA's two encoders (core/presets.py 'openvla') at 224: their layouts and the per-frame budget."""
    from vitcli.core.presets import PRESETS
    from vitcli.core.spec import known_spec
    from vitcli.core.vlm import openvla_budget

    enc = PRESETS["openvla"]
    layouts = [replace(known_spec(m).at_size(enc.size).layout(), model=m) for m in enc.models]
    return {"encoders": [lay.to_dict() for lay in layouts], "budget": openvla_budget()}


def _list_presets(sizes: tuple[Pair, ...]) -> TokensPresetsResult:
    from vitcli.core.vlm import image_tokens, list_presets

    presets = tuple(list_presets())
    native = tuple(image_tokens(p, p.native) for p in presets)
    at = []
    for p in presets:
        row = []
        for s in sizes:
            try:
                row.append(image_tokens(p, s))
            except UsageError as e:  # this preset refuses this size (e.g. pi0 at 16x7680): said in the cell
                row.append({"image": list(s), "error": e.message})
        at.append(tuple(row))
    return TokensPresetsResult(presets, native, sizes, tuple(at))
