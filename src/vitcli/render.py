"""Results -> rich tables or JSON on stdout; warnings, notes, progress and skipped inputs -> stderr.

stdout is data: `vitcli ... --json | jq` always works, whatever is said on stderr. `emit` is the one output
path: every command returns a result, `emit` prints it (a renderer registered for the result's type, or its
`to_dict()` as JSON), reports skipped inputs, and returns the exit code the result carries.
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Callable
from typing import Any

from rich.console import Console
from rich.markup import escape
from rich.table import Table

from vitcli.progress import Progress, Reporter
from vitcli.units import human_bytes

_RENDERERS: dict[str, Callable[[Any], None]] = {}


def renders(result_type: str):
    """Register the human renderer of the result class named `result_type`."""

    def register(fn):
        _RENDERERS[result_type] = fn
        return fn

    return register


def emit(result, as_json: bool) -> int:
    """Print `result` (JSON or its renderer), report its skipped inputs on stderr, return its exit code."""
    if result is None:  # nothing to show (a torchrun rank other than 0: rank 0 reports for all)
        return 0
    if as_json:
        print_json(result.to_dict())
    else:
        _RENDERERS[type(result).__name__](result)
    for s in getattr(result, "skipped", ()):
        sys.stderr.write(f"Skipped: {s.line()}\n")
    failure = result.failure() if hasattr(result, "failure") else None
    if failure:
        error_line(*failure)
    return getattr(result, "exit_code", 0)


def out() -> Console:
    """A console on stdout, made per call so COLUMNS and redirection are read when printing."""
    return Console(highlight=False, soft_wrap=True)


def err() -> Console:
    return Console(stderr=True, highlight=False)


def print_json(data: Any) -> None:
    """One JSON document on stdout, raw numbers, no markup."""
    sys.stdout.write(json.dumps(data, indent=2, ensure_ascii=False) + "\n")


def error_line(message: str, hint: str | None = None) -> None:
    """`Error: message; hint` as one line on stderr; never wrapped by the terminal width."""
    sys.stderr.write(f"Error: {message}" + (f"; {hint}" if hint else "") + "\n")


# ---- talking to the person while a command works (vitcli.progress.Reporter) ------------------------------------

class RichProgress(Progress):
    """A progress bar on stderr with items/s and ETA."""

    def __init__(self, unit: str = "img"):
        from rich.progress import BarColumn, MofNCompleteColumn, TextColumn, TimeRemainingColumn
        from rich.progress import Progress as Bar

        self._bar = Bar(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                        TextColumn("{task.fields[rate]}"), TimeRemainingColumn(), console=err(), transient=False)
        self._task = None
        self._unit = unit

    def start(self, total: int, description: str = "") -> None:
        self._bar.start()
        self._task = self._bar.add_task(description, total=total, rate="")

    def advance(self, n: int = 1) -> None:
        if self._task is None:
            return
        self._bar.advance(self._task, n)
        speed = self._bar.tasks[0].speed
        self._bar.update(self._task, rate=f"{speed:,.1f} {self._unit}/s" if speed else "")

    def close(self) -> None:
        if self._task is not None:
            self._bar.stop()
            self._task = None


class ConsoleReporter(Reporter):
    """Warnings and notes on stderr; a progress bar when stderr is a terminal (or VITCLI_PROGRESS=1)."""

    def warn(self, text: str) -> None:
        sys.stderr.write(f"Warning: {text}\n")

    def note(self, text: str) -> None:
        err().print(text)

    def progress(self) -> Progress:
        env = os.environ.get("VITCLI_PROGRESS")
        show = env == "1" or (sys.stderr.isatty() and env != "0")
        return RichProgress() if show else Progress()


# ---- number formats -------------------------------------------------------------------------------------------

def g(n: float, digits: int = 2) -> str:
    """1.756e10 -> '17.56' (billions)."""
    return f"{n / 1e9:,.{digits}f}"


def pct(x: float, digits: int = 1) -> str:
    return f"{100 * x:.{digits}f}%"


def pair(p) -> str:
    return f"{p[0]}x{p[1]}"


def lost_rows(skipped) -> int:
    """Rows lost with the skipped entries (`results.Skipped` or their `to_dict()`): a collapsed entry counts its
    `rows` (a video's lost frames), an input that could not be opened at all (rows 0) counts one."""
    return sum(max(1, s.get("rows", 1) if isinstance(s, dict) else s.rows) for s in skipped)


def table(title: str | None, *columns: str, right_from: int = 1) -> Table:
    """A table whose columns from `right_from` on are right-aligned (numbers)."""
    t = Table(title=title, title_justify="left", title_style="bold")
    for i, c in enumerate(columns):
        t.add_column(c, justify="right" if i >= right_from else "left", no_wrap=i < right_from)
    return t


# ---- per-command renderers -----------------------------------------------------------------------------------

@renders("TokensResult")
def render_tokens(result) -> None:
    con = out()
    model = result.layouts[0].model
    several = len({lay.model for lay in result.layouts}) > 1
    title = f"{model} (timm)" if model else None
    t = table(title, *(["model"] if several else []), "image", "patch", "grid", "patch tokens", "prefix", "seq len",
              right_from=1 if several else 0)
    for lay in result.layouts:
        prefix = " + ".join(x for x in (("CLS" if lay.cls_token else ""),
                                         (f"{lay.registers} reg" if lay.registers else "")) if x) or "none"
        t.add_row(*([lay.model] if several else []), pair(lay.image_size), pair(lay.patch_size),
                  pair(lay.grid) + ("*" if lay.non_divisible else ""), f"{lay.num_patches:,}", prefix,
                  f"{lay.seq_len:,}")
    con.print(t)
    if model:
        for lay in result.layouts:
            con.print(f"A language model fed this encoder's patch tokens (prefix dropped, as OpenVLA does) spends "
                      f"{lay.num_patches:,} visual tokens per {pair(lay.image_size)} frame.")
    for lay in result.layouts:
        con.print(lay.explain())
        if lay.non_divisible:
            r = lay.non_divisible
            h, w = lay.image_size
            con.print(f"  * {pair(lay.image_size)} is not a multiple of {pair(lay.patch_size)} "
                      f"(remainder {r.remainder[0]} rows, {r.remainder[1]} columns):")
            con.print("    standard ViT: rejects the image (strict_img_size)")
            con.print(f"    pad (timm dynamic_img_pad=True): grid {pair(r.pad_grid)} = "
                      f"{r.pad_grid[0] * r.pad_grid[1]:,} patches, {r.pad_pixels:,} zero pixels added")
            con.print(f"    drop the remainder: grid {pair(r.drop_grid)} = {r.drop_grid[0] * r.drop_grid[1]:,} "
                      f"patches, {r.drop_pixels:,} of {h * w:,} pixels never seen")


def _tiles(r) -> str:
    """'1', or the tile grid plus the base/global/thumbnail images: '2x4 + 1'."""
    if not r.tile_grid:
        return str(r.tiles)
    extra = r.tiles - r.tile_grid[0] * r.tile_grid[1]
    return pair(r.tile_grid) + (f" + {extra}" if extra else "")


def _as_flags(options, values: dict) -> str:
    """VLMOptions with `values` as command-line flags: '--min-pixels 3136 --no-pan-and-scan'."""
    parts = []
    for o in options:
        v = values[o.name]
        if isinstance(v, bool):
            parts.append(o.flag if v else "--no-" + o.flag[2:])
        else:
            parts.append(f"{o.flag} {v}")
    return " ".join(parts)


def _special(special: dict) -> str:
    return ", ".join(f"{k.encode('unicode_escape').decode()} x{v}" for k, v in special.items())


@renders("VLMTokensResult")
def render_vlm_tokens(result) -> None:
    con = out()
    p, rows = result.preset, result.rows
    t = table(f"{p.name} ({p.model}): per image", "image", "resized", "tiles", "patch grid", "encoder tokens",
              "visual tokens", "special tokens", "encoder GMACs", right_from=0)
    for r in rows:
        macs = "n/a" if r.encoder_macs is None else g(r.encoder_macs)
        t.add_row(pair(r.image), pair(r.resized), _tiles(r), pair(r.grid), f"{r.encoder_tokens:,}",
                  f"{r.visual_tokens:,}", f"{r.special_tokens:,}", macs)
    con.print(t)
    for r in rows:
        con.print(escape(r.rule))
    specials = {_special(r.special) for r in rows if r.special}
    if len(specials) == 1 and all(r.special for r in rows):
        con.print(escape(f"special tokens per image: {specials.pop()}"))
    else:
        for r in rows:
            if r.special:
                con.print(escape(f"special tokens, {pair(r.image)}: {_special(r.special)}"))
    if p.encoder is not None:
        e = p.encoder
        con.print(escape(f"encoder: {e.label}, runs {e.blocks} of {e.to_dict()['depth']} blocks per tile, reads "
                         f"{e.layer}. GMACs as `vitcli cost` counts them (projector and language model not counted)."))
    elif result.fused is None:
        con.print(f"encoder GMACs: n/a ({p.name}'s vision encoder is not in vitcli's cost model)")
    if p.options:
        used = rows[0].options
        changed = [o for o in p.options if used[o.name] != o.default]
        line = "processor options: " + _as_flags(p.options, used)
        if changed:
            line += " (released: " + _as_flags(changed, {o.name: o.default for o in changed}) + ")"
        con.print(escape(line))
    if result.fused:
        b = result.fused["budget"]
        encs = result.fused["encoders"]
        con.print(escape(f"{p.name}'s encoder: " + " and ".join(
            f"{e['model']} ({e['explanation']})" for e in encs) + f", each read at its second-to-last block "
            f"(blocks {' and '.join(str(x) for x in b['layers'])}), prefix tokens dropped, channels concatenated; "
            f"GMACs: both encoders up to those blocks, as `vitcli cost --preset {p.name}` counts them"))
        con.print(escape(preset_line(b)))
    for n in result.notes:
        con.print(escape(n))
    if not result.steps:
        return
    b0 = result.steps[0]
    hz = f" at {b0.hz:g} Hz" if b0.hz is not None else ""
    s = "s" if b0.cameras > 1 else ""
    f = "s" if b0.frames > 1 else ""
    t = table(f"Per control step: {b0.cameras} camera{s} x {b0.frames} frame{f}{hz}", "image", "images", "visual",
              "special", "tokens/step", "tokens/s", "encoder GMACs/step", "encoder TFLOP/s", right_from=0)
    for r, b in zip(rows, result.steps):
        macs = b.encoder_macs_per_step
        t.add_row(pair(r.image), str(b.cameras * b.frames), f"{b.visual_tokens_per_step:,}",
                  f"{b.special_tokens_per_step:,}", f"{b.tokens_per_step:,}",
                  "n/a" if b.tokens_per_second is None else f"{b.tokens_per_second:,.0f}",
                  "n/a" if macs is None else g(macs),
                  "n/a" if b.encoder_macs_per_second is None else f"{2 * b.encoder_macs_per_second / 1e12:,.2f}")
    con.print(t)
    for r, b in zip(rows, result.steps):
        line = (f"{pair(r.image)}: {b.cameras} camera{s} x {b.frames} frame{f} x {r.total_tokens:,} tokens = "
                f"{b.tokens_per_step:,} tokens per step")
        if b.hz is not None:
            line += f", x {b.hz:g} Hz = {b.tokens_per_second:,.0f} tokens per second"
        if b.encoder_macs_per_step is not None:
            line += (f"; encoder {b.cameras * b.frames} x {g(r.encoder_macs)} = {g(b.encoder_macs_per_step)} "
                     f"GMACs per step")
        con.print(escape(line))
    con.print("Assumes every frame of every camera is encoded and sent to the language model each step (no feature "
              "cache); FLOPs = 2 x MACs.")


@renders("TokensPresetsResult")
def render_token_presets(result) -> None:
    con = out()
    if not result.sizes:
        t = table("VLM/VLA presets of `vitcli tokens --preset`", "preset", "model", "native", "visual tokens",
                  "special tokens", right_from=3)
        for p, n in zip(result.presets, result.native):
            t.add_row(p.name, p.model, pair(p.native), f"{n.visual_tokens:,}", f"{n.special_tokens:,}")
        con.print(t)
        con.print("Tokens per image at the native size (the size used without --size). Released processor "
                  "options, as flags:")
        for p in result.presets:
            if p.options:
                con.print(escape(f"  {p.name}: " + _as_flags(p.options, {o.name: o.default for o in p.options})))
        con.print("References (the code each preset follows):")
        for p in result.presets:
            con.print(escape(f"  {p.name}: {p.reference}"))
        return
    t = table("Tokens per image: visual + special", "preset", "native", *(pair(s) for s in result.sizes),
              right_from=1)
    refused = []
    for p, cells in zip(result.presets, result.at):
        row = []
        for c in cells:
            if isinstance(c, dict):
                refused.append(f"{p.name} at {pair(c['image'])}: {c['error']}")
                row.append("refused")
            else:
                row.append(f"{c.visual_tokens:,}" + (f" + {c.special_tokens}" if c.special_tokens else ""))
        t.add_row(p.name, pair(p.native), *row)
    con.print(t)
    con.print("Released processor settings; `vitcli tokens --preset NAME --size HxW` shows how each count is made.")
    for line in refused:
        con.print(escape(line))


@renders("VariantsResult")
def render_variants(result) -> None:
    t = table(None, "variant", "timm name", "patch", "width", "depth", "heads", "MLP", "params", "classes",
              "tokens", right_from=2)
    for v in result.variants:
        lay = v.layout()
        t.add_row(v.name, v.timm_name, str(v.patch_size[0]), str(v.embed_dim), str(v.depth), str(v.num_heads),
                  f"{v.mlp_dim}{' (gated)' if v.mlp_gated else ''}", f"{v.params:,}", str(v.num_classes),
                  f"{lay.seq_len:,} @{v.img_size[0]}")
    out().print(t)
    out().print("params: exactly timm's count for the default pretrained tag (classes 0 = no head); "
                "tokens: sequence length at the native size.")


def preset_line(b: dict) -> str:
    chans = " + ".join(map(str, b["channels_per_model"]))
    return (f"{b['name']}: the language model receives {b['lm_tokens']:,} visual tokens per frame "
            f"({b['grid'][0]}x{b['grid'][1]} patches, prefix tokens dropped) of {chans} = {b['channels']:,} channels: "
            f"{human_bytes(b['bytes_per_frame']['float32'])} per frame in float32, "
            f"{human_bytes(b['bytes_per_frame']['bfloat16'])} in bfloat16.")


@renders("CostResult")
def render_cost(result) -> None:
    con = out()
    rows = result.rows
    first = rows[0]
    ratios = len(rows) > 1
    t = table("Compute per image (FLOPs = 2 x MACs)", "model", "size", "tokens", "params", "GMACs", "GFLOPs",
              "attn share", *(["x tokens", "x attn matmul", "x MACs"] if ratios else []))
    for r in rows:
        extra = ([f"{r.layout.seq_len / first.layout.seq_len:.2f}",
                  f"{r.breakdown['attn_matmul'] / first.breakdown['attn_matmul']:.2f}",
                  f"{r.macs / first.macs:.2f}"] if ratios else [])
        t.add_row(r.name, pair(r.layout.image_size), f"{r.layout.seq_len:,}", f"{r.params / 1e6:,.2f} M", g(r.macs),
                  g(r.flops), pct(r.attention_share), *extra)
    con.print(t)
    if ratios:
        con.print("x columns: relative to the first row. Tokens grow as 1/patch², linear layers with tokens, "
                  "attention matmuls with tokens².")
    b = table("MACs by part (G)", "model", "size", "patch embed", "attn proj", "attn matmul", "MLP", "head")
    for r in rows:
        b.add_row(r.name, pair(r.layout.image_size), *(g(r.breakdown[k], 3) for k in
                                                       ("patch_embed", "attn_proj", "attn_matmul", "mlp", "head")))
    con.print(b)
    m = table(f"Memory (activations per image in {first.act_dtype})", "model", "size", "weights fp32",
              "weights bf16", "tokens/layer", "attn matrix/block")
    for r in rows:
        w, a = r.weight_bytes(), r.activation_bytes()
        m.add_row(r.name, pair(r.layout.image_size), human_bytes(w["float32"]), human_bytes(w["bfloat16"]),
                  human_bytes(a["tokens"]), human_bytes(a["attention_matrix"]))
    con.print(m)
    if any(r.measured for r in rows):
        mt = table("Measured: torch FlopCounterMode, fused attention off, batch 1", "model", "size",
                   "analytic GFLOPs", "measured GFLOPs", "diff", "conv", "linear (mm)", "attn (bmm)", "params match")
        for r in rows:
            if not r.measured:
                continue
            ops = r.measured["flops_by_op"]
            mt.add_row(r.name, pair(r.layout.image_size), g(r.flops, 3), g(r.measured["flops"], 3),
                       pct(r.measured["diff"], 3), g(ops.get("convolution", 0), 3),
                       g(ops.get("addmm", 0) + ops.get("mm", 0), 3), g(ops.get("bmm", 0), 3),
                       "yes" if r.measured["params"] == r.params else f"no ({r.measured['params']:,})")
        con.print(mt)
    if result.preset:
        b = result.preset
        read = ", ".join(f"{k} of {d}" for k, d in zip(b["layers"], b["depths"]))
        con.print(f"[bold]Per frame, preset {b['name']}[/bold] (it reads block {read}; it never runs the heads):")
        con.print(f"  what it runs, blocks up to the layer read (--stop-early): {g(b['macs_stop_early'])} GMACs = "
                  f"{g(b['flops_stop_early'])} GFLOPs")
        con.print(f"  every block, no heads (features without --stop-early): {g(b['macs_all_blocks'])} GMACs = "
                  f"{g(b['flops_all_blocks'])} GFLOPs ({pct(b['macs_all_blocks'] / b['macs_stop_early'] - 1)} more)")
        con.print(f"  the heads apart (a plain forward adds them; the table above includes them): "
                  f"{g(b['macs_heads'])} GMACs")
        con.print("  " + preset_line(b))


def facts(rows: list[tuple[str, str]]) -> None:
    """Print `label  value` lines (values never truncated; long ones wrap in the terminal)."""
    con = out()
    width = max(len(k) for k, _ in rows) + 2
    for k, v in rows:
        con.print(f"[bold]{escape(k):<{width}}[/bold]{escape(v)}")


@renders("PatchifyResult")
def render_patchify(result) -> None:
    img, lay = result.image, result.layout
    prefix = " + ".join(x for x in (("1 CLS" if lay.cls_token else ""),
                                     (f"{lay.registers} registers" if lay.registers else "")) if x) or "no prefix"
    rows = [
        ("image", f"{img.path}: {pair(img.original_size)} (h x w), {img.original_mode}, {img.format or '?'}"),
        ("converted", "; ".join(img.conversions) or "nothing (already RGB)"),
        ("preprocess", (f"{result.model} data config: " if result.model else "") + result.transform),
        ("model input", f"{pair(result.input_size)} RGB"),
        ("patches", f"{pair(result.grid)} grid of {pair(lay.patch_size)} px = {result.num_patches:,} patch tokens, "
                    f"each {result.patch_dim:,} values (P x P x 3)"),
        ("sequence", f"{prefix} + {result.num_patches:,} patches = {result.seq_len:,} tokens"),
    ]
    remainder = result.describe_remainder()
    if remainder:
        rows.append(("remainder", remainder))
    rows += [(f"wrote {kind}", path) for kind, path in result.outputs.items()]
    facts(rows)


# Up to this many images get a table each; more get one table, a row per image.
CLASSIFY_TABLES_UP_TO = 5


@renders("ClassifyResult")
def render_classify(result) -> None:
    from rich.text import Text

    con = out()
    m = result.model
    con.print(f"[bold]{escape(m.name)}[/bold]  weights: {escape(m.weights)}  device: {m.device}  dtype: {m.dtype}")
    if not m.pretrained:
        con.print("[bold red]random weights (--no-pretrained): these predictions mean nothing[/bold red]")
    if len(result.predictions) > CLASSIFY_TABLES_UP_TO:
        images = [p.image for p in result.predictions]
        folder = os.path.commonpath(images) if all(os.path.isabs(i) == os.path.isabs(images[0]) for i in images) else ""
        folder = folder if folder and folder not in images else ""
        noun = "frames" if all(p.frame is not None for p in result.predictions) else (
            "images" if all(p.frame is None for p in result.predictions) else "images and frames")
        t = table(f"{len(images)} {noun}" + (f" in {folder}" if folder else ""), "image", "top-1", "prob", "next",
                  right_from=2)
        t.columns[3].justify = "left"
        t.columns[1].no_wrap = True
        t.columns[3].no_wrap, t.columns[3].overflow = True, "ellipsis"
        for p in result.predictions:
            (i, label, prob), rest = p.top[0], p.top[1:]
            t.add_row(escape(os.path.relpath(p.image, folder) if folder else p.image), escape(f"{label} ({i})"),
                      f"{prob:.4f}", escape(", ".join(f"{lab} {pr:.2f}" for _, lab, pr in rest)))
        con.print(t)
    else:
        for p in result.predictions:
            t = Table(title=escape(p.image), title_justify="left", title_style="bold")
            t.add_column("rank", justify="right")
            t.add_column("label")
            t.add_column("prob", justify="right")
            t.add_column("")
            for rank, (i, label, prob) in enumerate(p.top, 1):
                bar = Text("█" * round(prob * 30), style="cyan")
                t.add_row(str(rank), escape(f"{label} ({i})"), f"{prob:.4f}", bar)
            con.print(t)
    if result.csv_path:
        con.print(f"wrote {escape(result.csv_path)}")


@renders("FeaturesResult")
def render_features(result) -> None:
    d = result.sidecar_data
    shape = d["shape"] if "shape" in d else [d["rows_written"], *d["row_shape"]]
    where = (f"{result.out}  shape ({', '.join(map(str, shape))}) {d['dtype']}, axes ({', '.join(d['axes'])})"
             if "shards" not in d else
             f"{result.out}  {d['shard_count']} shard{'s' if d['shard_count'] != 1 else ''} of up to "
             f"{d['shard_rows']:,} rows, "
             f"({', '.join(map(str, shape))}) {d['dtype']} in all, axes ({', '.join(d['axes'])})"
             + ("" if d["complete"] else f"; {sum(not s['complete'] for s in d['shards'])} shards still to compute"))
    rows = [("wrote", where),
            ("sidecar" if "shards" not in d else "index", result.sidecar),
            ("mode", d["mode"] + (f" ({', '.join(d['cls_source'])})" if d["cls_source"] else "")
             + ("; prefix tokens removed" if d["prefix_tokens_removed"] else "")),
            ("layers", f"{d['layers']}: {d['layer_source']}" if d["layers"] else d["layer_source"])]
    for m in d["models"]:
        cfg = m["data_config"]
        rows.append(("model", f"{m['name']} ({m['weights']}); input {cfg['input_size'][1]}x{cfg['input_size'][2]}, "
                               f"grid {m['grid'][0]}x{m['grid'][1]}, "
                               f"channels {m['channels'][0]}-{m['channels'][1] - 1}"))
    if d.get("fused_cameras"):
        rows.append(("cameras", f"{', '.join(d['fused_cameras']['cameras'])} side by side along channels "
                                f"({d['fused_cameras']['channels_per_camera']} each)"))
    rows.append(("rows", f"{shape[0]:,} written of {d['rows_in']:,}, {lost_rows(d['skipped']):,} skipped"
                         + (f", resumed after {result.resumed_from:,}" if result.resumed_from else "")))
    facts(rows)


@renders("BenchResult")
def render_bench(result) -> None:
    con = out()
    t = table("Forward pass, measured (median of timed iterations)", "model", "size", "batch", "dtype", "device",
              "img/s", "ms/batch (p10-p90)", "TFLOP/s", "MFU", "peak mem")
    for r in result.rows:
        t.add_row(r.model + (" [e2e]" if r.end_to_end else ""), pair(r.image_size),
                  str(r.batch_size) + ("*" if r.batch_size != r.requested_batch_size else ""), r.dtype, r.device,
                  f"{r.img_per_s:,.1f}", f"{r.ms_per_batch:,.1f} ({r.ms_per_batch_p10:,.0f}-{r.ms_per_batch_p90:,.0f})",
                  f"{r.tflops:.3f}", pct(r.mfu), human_bytes(r.peak_memory_bytes))
    con.print(t)
    first = result.rows[0]
    con.print(f"FLOPs per image: {first.flops_source}; peak {first.peak_tflops:.3f} TFLOP/s ({first.peak_source}); "
              f"memory: {first.memory_source}." + (" *: batch halved to fit in memory." if any(
                  r.batch_size != r.requested_batch_size for r in result.rows) else ""))


@renders("AttentionResult")
def render_attention(result) -> None:
    what = ("attention rollout over all blocks" if result.rollout else f"block {result.layer}")
    rows = [("model", f"{result.model.name} ({result.model.weights})"), ("image", result.image),
            ("attention", f"{what}: {result.heads} head{'s' if result.heads != 1 else ''} over {result.tokens} tokens "
                          f"({pair(result.grid)} patches)"),
            ("map", result.map_source)]
    if result.prefix_attention:
        regs = result.prefix_attention["registers"]
        rows.append(("CLS -> CLS", f"{result.prefix_attention['cls']:.4f}"))
        if regs:
            rows.append(("CLS -> registers", ", ".join(f"{v:.4f}" for v in regs)))
    rows += [(f"wrote {k}", v) for k, v in result.outputs.items()]
    facts(rows)


@renders("ExplainResult")
def render_explain(result) -> None:
    t = result.target
    score = f"p = {t['score']:.4f}" if t["score_kind"] == "probability" else f"cosine = {t['score']:.4f}"
    what = f"{t['label']} ({t['index']})" if t["kind"] == "class" else t["label"]
    oh, ow = result.original_size
    rows = [("model", f"{result.model.name} ({result.model.weights})"),
            ("image", f"{result.image}: {oh}x{ow} -> model input {pair(result.input_size)}, "
                      f"{pair(result.grid)} patches of {pair(result.patch)} px"),
            ("target", f"{what}, {score}" + (" (top1)" if t.get("requested") == "top1" else ""))]
    if result.geometry:
        x0, y0, x1, y1 = result.geometry["source_box"]
        rows.append(("model saw", f"x {x0:.1f}-{x1:.1f}, y {y0:.1f}-{y1:.1f} of the original "
                                  f"({pct((x1 - x0) * (y1 - y0) / (oh * ow))} of its area)"))
    ruled = [m for m in result.maps if "ln_rule" in m.extras]
    if ruled:
        names = ", ".join(m.method for m in ruled)
        rows.append(("gradients", f"LN-rule for {names} (--no-ln-rule: the plain gradient)"
                     if ruled[0].extras["ln_rule"] else f"plain for {names} (--no-ln-rule)"))
    facts(rows)
    check = result.random_deletion_area is not None
    tab = table(None, "method", "block", "top patch", "map range", *(["deletion area"] if check else []),
                right_from=1)
    for m in result.maps:
        tab.add_row(m.method, "-" if m.layer is None else str(m.layer), f"({m.top_patch[0]}, {m.top_patch[1]})",
                    f"{m.values.min():.3g} .. {m.values.max():.3g}", *([f"{m.deletion['area']:.4f}"] if check else []))
    if check:
        tab.add_row(f"random order (mean of {result.random_orders})", "-", "-", "-",
                    f"{result.random_deletion_area:.4f}")
    out().print(tab)
    if check:
        out().print("Deletion area: the target's score as patches are set to the mean colour, most important "
                    "first, averaged over the share removed; lower than random = the map ranks patches that "
                    "matter first.")
    if result.outputs:
        facts([(f"wrote {k}", v) for k, v in result.outputs.items()])


@renders("PosembedResult")
def render_posembed(result) -> None:
    ref = result.reference
    if ref:
        rows = [("reference", ref["description"] + ": no weights"),
                ("shape of", f"{result.model.name}" + (" (the default model)" if ref["default_model"] else "")
                             + f": {pair(ref['patch_size'])} px patches, {result.embed_dim} channels")]
    else:
        rows = [("model", f"{result.model.name} ({result.model.weights})")]
    rows += [("positions", f"{pair(result.grid)} = {result.grid[0] * result.grid[1]}"
                           + (" (resampled by timm)" if result.resampled else "")),
            ("neighbours", f"mean cosine similarity of adjacent positions: {result.neighbour_similarity:.3f}"),
            ("far apart", "mean cosine similarity of positions half the grid apart or more: "
                          f"{result.far_similarity:.3f}")]
    rows += [(f"wrote {k}", v) for k, v in result.outputs.items()]
    facts(rows)


ROUNDING = 1e-5  # shuffle experiment: differences below this times the output RMS are float rounding


@renders("ShuffleResult")
def render_shuffle(result) -> None:
    f = result.figures
    gh, gw = f["grid"]
    prefix = " + ".join(x for x in (("CLS" if f["cls_token"] else ""),
                                     (f"{f['registers']} registers" if f["registers"] else "")) if x)

    def num(v: float) -> str:  # rounding-level differences vary with the CPU: say what they are, not their digits
        return f"{v:.3g}" if v >= ROUNDING * f["output_scale"] else "~0"

    def line(key: str) -> str:
        d = f[key]
        extra = [f"{name} {num(d[k])}" for name, k in ((prefix, "prefix_max_diff"), ("pooled", "pooled_max_diff"))
                 if d[k] is not None]
        rel = d["patch_max_diff"] / f["output_scale"]
        return (f"patch tokens: max difference {num(d['patch_max_diff'])} ("
                + (f"{rel:.3g} x the output RMS" if rel >= ROUNDING else f"under {ROUNDING:g} x the output RMS: "
                   "float rounding") + f"), min cosine {d['patch_min_cosine']:.4f}"
                + (f"; {', '.join(extra)}" if extra else ""))

    rows = [("model", f"{result.model.name} ({result.model.weights})"), ("image", result.image),
            ("shuffle", f"{gh * gw} patches ({pair(tuple(f['grid']))} grid of {pair(tuple(f['patch']))} px) moved "
                        f"by a random permutation, seed {f['seed']}" + (f"; {prefix} kept in front" if prefix else "")),
            ("with pos", line("with_pos")),
            ("without pos", line("without_pos")),
            ("output RMS", f"{f['output_scale']:.3g} (patch tokens after the final norm, original image)")]
    rows += [(f"wrote {k}", v) for k, v in result.outputs.items()]
    facts(rows)
    out().print("Compared: the shuffled image's outputs against the original's moved the same way (prefix and "
                "pooled outputs as they are). Without position embeddings a ViT sees a bag of patches and the "
                "difference is float rounding; with them, the same patches in other places give other outputs.")


@renders("InspectResult")
def render_inspect(result) -> None:
    t = table(f"{result.model.name}: tokens after each block ({result.image})", "block", "norm mean",
              "norm median", "norm max", "max/median", "CLS attn entropy", "cos(CLS, mean patch)")
    for r in result.rows:
        opt = lambda v: "-" if v is None else f"{v:.3f}"  # noqa: E731
        t.add_row(str(r["block"]), f"{r['norm_mean']:.2f}", f"{r['norm_median']:.2f}", f"{r['norm_max']:.2f}",
                  f"{r['max_over_median']:.2f}", opt(r["cls_attention_entropy"]), opt(r["cls_cos_mean_patch"]))
    out().print(t)
    out().print("Norms are of patch tokens; a max/median far above 1 marks high-norm outlier tokens (the artifact "
                "registers absorb). Entropy in nats: low = the CLS token attends to few tokens.")


@renders("PcaResult")
def render_pca(result) -> None:
    from vitcli.commands.pca import fit_description

    m, r, tok, noun = result.model, result.result, result.tokens, result.noun
    rows = [("model", f"{m.name} ({m.weights})"), ("tokens", tok["description"]),
            (noun, f"{len(result.images)} read, {lost_rows(result.skipped)} skipped"),
            ("fitted", fit_description(r.mode, len(result.fit_images), noun))]
    con = out()
    facts(rows)
    t = table(None, "fit", *[f"PC{i + 1}" for i in range(r.maps.shape[-1])], "patches")
    for i, f in enumerate(r.fits):
        name = os.path.basename(result.images[i]) if r.mode == "per-image" else "explained variance"
        t.add_row(escape(name), *[pct(v) for v in f.explained_variance_ratio], str(f.n_fit))
    con.print(t)
    if r.mask is not None:
        rule = r.rules[0]
        fg = [int(x.sum()) for x in r.mask]
        con.print(f"foreground: {sum(fg)} of {r.mask.size} patches (background: first component above "
                  f"{rule.threshold:g}, sign chosen so the larger part is background)")
    for k, v in result.outputs.items():
        con.print(f"wrote {k.replace('_', ' ')}: {escape(v)}")
    rp = result.row_pictures
    if rp and rp["kind"] == "animation":
        con.print(f"animation: {rp['frames']} frames at {rp['fps']:g} fps ({rp['frame_ms']} ms each)")
    elif rp:
        con.print(f"one picture per {noun[:-1]}: {len(rp['files'])} PNG files")
    if not m.pretrained:
        con.print("random weights (--no-pretrained): the colours show the pipeline, not what a trained ViT learned")


@renders("SimilarResult")
def render_similar(result) -> None:
    m = result.model
    rows = [("model", f"{m.name} ({m.weights})"), ("tokens", result.tokens["description"])]
    con = out()
    if result.mutual:
        a, b = (os.path.basename(p) for p in result.images)
        facts(rows + [("pairs", f"{len(result.pairs)} mutual nearest neighbours between {a} and {b}")])
        t = table(None, a, b, "cosine", right_from=2)
        for p in result.pairs[:MUTUAL_ROWS]:
            t.add_row(f"({p.a[0]}, {p.a[1]})", f"({p.b[0]}, {p.b[1]})", f"{p.similarity:.4f}")
        con.print(t)
        if len(result.pairs) > MUTUAL_ROWS:
            con.print(f"the {MUTUAL_ROWS} most similar of {len(result.pairs)} pairs; --json lists them all")
    else:
        q = result.query
        where = f"patch ({q['row']}, {q['col']})"
        if "point" in q:
            x0, y0, x1, y1 = q["patch_box"]
            where += (f" from point ({q['point'][0]:g}, {q['point'][1]:g}); it covers x {x0:.1f}-{x1:.1f}, "
                      f"y {y0:.1f}-{y1:.1f} of the original")
        facts(rows + [("query", f"{result.images[0]}: {where}")])
        t = table("Most similar patch of each image (on the query image: other than the query patch)", "image",
                  "row", "col", "cosine")
        for img, b in zip(result.images, result.best):
            t.add_row(escape(img), str(b.row), str(b.col), f"{b.similarity:.4f}")
        con.print(t)
    for k, v in result.outputs.items():
        con.print(f"wrote {k}: {escape(v)}")
    if not m.pretrained:
        con.print("random weights (--no-pretrained): these similarities show the pipeline, not a trained ViT")


MUTUAL_ROWS = 10  # pairs listed in the human output of `similar --mutual`


@renders("ExploreResult")
def render_explore(result) -> None:
    def size(n: int) -> str:  # as the page itself counts: MB = 10^6 bytes
        return f"{n / 1e6:.2f} MB" if n >= 1e6 else f"{n / 1e3:.1f} kB" if n >= 1e3 else f"{n} B"

    b = result.bytes
    parts = ", ".join(f"{k} {size(b[k])}" for k in ("attention", "rollout", "similarity", "pca", "image") if k in b)
    prefix = " + ".join(x for x in (("CLS" if result.cls_token else ""),
                                     (f"{result.registers} registers" if result.registers else "")) if x)
    rows = [("model", f"{result.model.name} ({result.model.weights})"), ("image", result.image),
            ("tokens", f"{result.tokens} = " + (f"{prefix} + " if prefix else "") + f"{pair(result.grid)} patches "
                       f"of the {pair(result.input_size)} input" + ("" if prefix else " (no prefix tokens)")),
            ("attention", f"{result.blocks} blocks x {result.heads} heads x {result.tokens}x{result.tokens}")]
    if result.top5:
        top = result.top5[0]
        rows.append(("top class", f"{top['label']} ({100 * top['prob']:.1f}%)"))
    rows += [("wrote", f"{result.out}: {size(b['total'])} (limit {result.limit_bytes / 1e6:.0f} MB)"),
             ("parts", parts)]
    facts(rows + [("note", n) for n in result.notes])
    out().print("Open it in any browser: everything is inside the file, nothing is loaded from the network.")


@renders("MergeResult")
def render_merge(result) -> None:
    d = result.sidecar_data
    facts([("wrote", f"{result.out}  shape ({', '.join(map(str, d['shape']))}) {d['dtype']}, from {result.shards} "
                     f"shards"),
           ("sidecar", result.sidecar),
           ("rows", f"{d['shape'][0]:,} written of {d['rows_in']:,}, {lost_rows(d['skipped']):,} skipped")])
