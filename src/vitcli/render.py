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
    title = f"preset {result.preset['name']}" if result.preset else (f"{model} (timm)" if model else None)
    t = table(title, *(["model"] if several else []), "image", "patch", "grid", "patch tokens", "prefix", "seq len",
              right_from=1 if several else 0)
    for lay in result.layouts:
        prefix = " + ".join(x for x in (("CLS" if lay.cls_token else ""),
                                         (f"{lay.registers} reg" if lay.registers else "")) if x) or "none"
        t.add_row(*([lay.model] if several else []), pair(lay.image_size), pair(lay.patch_size),
                  pair(lay.grid) + ("*" if lay.non_divisible else ""), f"{lay.num_patches:,}", prefix,
                  f"{lay.seq_len:,}")
    con.print(t)
    if result.preset:
        con.print(preset_line(result.preset))
        return
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
        t = table(f"{len(images)} images" + (f" in {folder}" if folder else ""), "image", "top-1", "prob", "next",
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
    rows = [("wrote", f"{result.out}  shape ({', '.join(map(str, d['shape']))}) {d['dtype']}, axes "
                      f"({', '.join(d['axes'])})"),
            ("sidecar", result.sidecar),
            ("mode", d["mode"] + (f" ({', '.join(d['cls_source'])})" if d["cls_source"] else "")
             + ("; prefix tokens removed" if d["prefix_tokens_removed"] else "")),
            ("layers", f"{d['layers']}: {d['layer_source']}" if d["layers"] else d["layer_source"])]
    for m in d["models"]:
        cfg = m["data_config"]
        rows.append(("model", f"{m['name']} ({m['weights']}); input {cfg['input_size'][1]}x{cfg['input_size'][2]}, "
                               f"grid {m['grid'][0]}x{m['grid'][1]}, "
                               f"channels {m['channels'][0]}-{m['channels'][1] - 1}"))
    rows.append(("images", f"{len(d['images'])} written, {len(d['skipped'])} skipped"
                           + (f", resumed after {result.resumed_from}" if result.resumed_from else "")))
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


@renders("PosembedResult")
def render_posembed(result) -> None:
    rows = [("model", f"{result.model.name} ({result.model.weights})"),
            ("positions", f"{pair(result.grid)} = {result.grid[0] * result.grid[1]}"
                          + (" (resampled by timm)" if result.resampled else "")),
            ("neighbours", f"mean cosine similarity of adjacent positions: {result.neighbour_similarity:.3f}"),
            ("far apart", "mean cosine similarity of positions half the grid apart or more: "
                          f"{result.far_similarity:.3f}")]
    rows += [(f"wrote {k}", v) for k, v in result.outputs.items()]
    facts(rows)


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
