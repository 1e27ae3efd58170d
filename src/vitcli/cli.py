"""The Typer app. Per command: parse the options into a request (checked as it is built, before any model
loads), make one call into `commands`, and `emit` the result once.

`Boundary` is the one error boundary: every exception from parsing or from a command becomes one line on
stderr and an exit code (0 ok, 1 failure, 2 usage error, 130 Ctrl-C; `vitcli.errors` has the table).
`VITCLI_DEBUG=1` shows the traceback. A new command needs nothing but `@app.command()`.
"""

from __future__ import annotations

import os
import sys
from typing import Annotated, Optional

import typer
from typer.core import TyperGroup

from vitcli import __version__
from vitcli.choices import ActDtype, Family, Mode, OutDtype, Preset, value
from vitcli.errors import VitcliError
from vitcli.options import (
    BatchSizeOpt,
    CheckpointOpt,
    DeviceOpt,
    DtypeOpt,
    ForceOpt,
    ImageArg,
    InputsArg,
    JsonOpt,
    ModelOpt,
    ModelsOpt,
    NoPretrainedOpt,
    NpyOpt,
    NumClassesOpt,
    PatchesOpt,
    PictureOpt,
    RecursiveOpt,
    SizesOpt,
    WorkersOpt,
)


def _debug() -> bool:
    return os.environ.get("VITCLI_DEBUG", "") not in ("", "0")


def report(e: BaseException) -> int:
    """Say what went wrong in one line on stderr (the traceback too with VITCLI_DEBUG=1); return the exit code."""
    def line(message: str, hint: str | None = None) -> None:
        sys.stderr.write(f"Error: {message}" + (f"; {hint}" if hint else "") + "\n")

    if _debug():
        import traceback

        traceback.print_exception(e)
    if isinstance(e, VitcliError):
        line(e.message, e.hint)
        return e.exit_code
    if isinstance(e, (KeyboardInterrupt, typer.Abort)):
        line("interrupted")
        return 130
    if hasattr(e, "format_message") and hasattr(e, "exit_code"):  # Typer's own parse errors
        if type(e).__name__ == "NoArgsIsHelpError":  # `vitcli` alone: show the help
            e.show()
        else:
            ctx = getattr(e, "ctx", None)
            line(e.format_message().rstrip("."), f"see `{ctx.command_path if ctx else 'vitcli'} --help`")
        return e.exit_code
    line(f"{type(e).__name__}: {e}", "run again with VITCLI_DEBUG=1 to see the traceback, and report it")
    return 1


class Boundary(TyperGroup):
    """The one error boundary: parse errors surface from `main`, everything a command raises from `invoke`."""

    def main(self, args=None, prog_name=None, complete_var=None, standalone_mode=True, **extra):
        if not standalone_mode:
            return super().main(args, prog_name, complete_var, standalone_mode=False, **extra)
        if not _debug():  # library warnings (torch, timm) are noise on a CLI's stderr; VITCLI_DEBUG=1 shows them
            import warnings

            warnings.simplefilter("ignore")
        try:
            rv = super().main(args, prog_name, complete_var, standalone_mode=False, **extra)
        except Exception as e:  # noqa: BLE001 — the boundary
            sys.exit(report(e))
        sys.exit(rv if isinstance(rv, int) else 0)

    def invoke(self, ctx):
        try:
            return super().invoke(ctx)
        except VitcliError as e:
            raise typer.Exit(report(e)) from None
        except (KeyboardInterrupt, typer.Abort) as e:
            raise typer.Exit(report(e)) from None
        except Exception as e:
            if hasattr(e, "exit_code"):  # typer.Exit and parse errors: `main` handles them
                raise
            raise typer.Exit(report(e)) from None


SETTINGS = dict(
    cls=Boundary,
    name="vitcli",
    help="See how a Vision Transformer turns an image into tokens, and what it costs.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
    # plain help text: Typer's rich help imports rich.markdown and markdown-it, doubling `vitcli --help`'s start
    rich_markup_mode=None,
)
app = typer.Typer(**SETTINGS)


def emit(result, as_json: bool) -> int:
    """The one output path (vitcli.render.emit): the result on stdout, skipped inputs on stderr, the exit code."""
    from vitcli.render import emit as render_emit

    return render_emit(result, as_json)


def console():
    """Warnings, notes and progress bars on stderr."""
    from vitcli.render import ConsoleReporter

    return ConsoleReporter()


def _version(value: bool) -> None:
    if value:
        print(f"vitcli {__version__}")
        raise typer.Exit()


@app.callback()
def _main(
    version: Annotated[Optional[bool], typer.Option("--version", callback=_version, is_eager=True,
                                                    help="Print the version and exit.")] = None,
) -> None:
    """See how a Vision Transformer turns an image into tokens, and what it costs."""


def model_request(name, checkpoint=None, num_classes=None, no_pretrained=False, device="auto", dtype="float32",
                  squash=False):
    from vitcli.requests import ModelRequest

    return ModelRequest(name=name, checkpoint=checkpoint, num_classes=num_classes, pretrained=not no_pretrained,
                        device=device, dtype=value(dtype), squash=squash)


@app.command()
def tokens(
    size: SizesOpt = None,
    patch: PatchesOpt = None,
    cls: Annotated[Optional[bool], typer.Option("--cls/--no-cls", help="Prepend a CLS token (default: yes).",
                                                show_default=False)] = None,
    registers: Annotated[Optional[int], typer.Option("--registers", help="Register tokens (DINOv2-reg4: 4).",
                                                     show_default=False)] = None,
    model: ModelOpt = None,
    preset: Annotated[Optional[Preset], typer.Option("--preset", help="A named recipe: openvla (its encoders and the "
                                                     "tokens its language model sees).", show_default=False,
                                                     case_sensitive=False)] = None,
    json: JsonOpt = False,
) -> int:
    """Count the tokens an image becomes: patch grid, prefix tokens, sequence length.

    Example: vitcli tokens --size 384 --patch 16
    """
    from vitcli.commands.tokens import TokensRequest, run_tokens

    return emit(run_tokens(TokensRequest(sizes=tuple(size or ()), patches=tuple(patch or ()), cls_token=cls,
                                         registers=registers, model=model, preset=value(preset))), json)


@app.command()
def variants(
    family: Annotated[Optional[Family], typer.Option("--family", help="Only one family.", show_default=False,
                                                     case_sensitive=False)] = None,
    json: JsonOpt = False,
) -> int:
    """List ViT variants with their timm names, shapes and exact parameter counts.

    Example: vitcli variants --family dinov2
    """
    from vitcli.commands.variants import run_variants

    return emit(run_variants(value(family)), json)


@app.command()
def cost(
    model: ModelsOpt = None,
    variant: Annotated[Optional[list[str]], typer.Option("--variant", "-v", help="Variant name from `vitcli "
                                                         "variants`, e.g. B/16, L/14, DINOv2-L/14. Repeatable.",
                                                         show_default=False)] = None,
    size: SizesOpt = None,
    measure: Annotated[bool, typer.Option("--measure", help="Also build the real timm model (meta device, no "
                                          "weights) and count with torch's FlopCounterMode.")] = False,
    num_classes: Annotated[Optional[int], typer.Option("--num-classes", help="Classifier size (0 = no head); "
                                                       "default: the model's own.", show_default=False)] = None,
    dtype: Annotated[ActDtype, typer.Option("--dtype", help="Activation dtype for the memory table.",
                                            case_sensitive=False)] = ActDtype.float32,
    preset: Annotated[Optional[Preset], typer.Option("--preset", help="A named recipe: openvla (both encoders and "
                                                     "the per-frame budget).", show_default=False,
                                                     case_sensitive=False)] = None,
    json: JsonOpt = False,
) -> int:
    """Compute parameters, MACs, FLOPs and memory per image, by part, exactly.

    Example: vitcli cost --variant B/16 --size 224 --size 384
    """
    from vitcli.commands.cost import CostRequest, run_cost

    return emit(run_cost(CostRequest(models=tuple(model or ()), variants=tuple(variant or ()), sizes=tuple(size or ()),
                                     measure=measure, num_classes=num_classes, act_dtype=value(dtype),
                                     preset=value(preset))), json)


@app.command()
def patchify(
    image: Annotated[str, typer.Argument(help="Image file (any format PIL reads).", show_default=False)],
    size: Annotated[Optional[str], typer.Option("--size", "-s", help="Input size N or HxW (default 224; with "
                                                "--model, the model's own).", show_default=False)] = None,
    patch: Annotated[Optional[str], typer.Option("--patch", "-p", help="Patch size N or HxW (default 16; with "
                                                 "--model, the model's own).", show_default=False)] = None,
    model: ModelOpt = None,
    out: Annotated[Optional[str], typer.Option("--out", "-o", help="Write the image with its labelled patch grid "
                                               "(PNG).", show_default=False)] = None,
    mosaic: Annotated[Optional[str], typer.Option("--mosaic", help="Write the exploded patch mosaic (PNG).",
                                                  show_default=False)] = None,
    npy: Annotated[Optional[str], typer.Option("--npy", help="Write the patches as float32 (N, P*P*3) in [0, 1], "
                                               "token order.", show_default=False)] = None,
    force: ForceOpt = False,
    json: JsonOpt = False,
) -> int:
    """Cut an image into the patches a ViT sees; draw the grid and export the patch tensor.

    Example: vitcli patchify photo.jpg --size 224 --patch 16 -o grid.png --mosaic mosaic.png --npy patches.npy
    """
    from vitcli.commands.patchify import PatchifyRequest, run_patchify

    return emit(run_patchify(PatchifyRequest(image=image, size=size, patch=patch, model=model, out=out, mosaic=mosaic,
                                             npy=npy, force=force)), json)


@app.command()
def classify(
    inputs: InputsArg,
    model: ModelOpt = None,
    top_k: Annotated[int, typer.Option("--top-k", "-k", help="Classes to show per image.")] = 5,
    checkpoint: CheckpointOpt = None,
    num_classes: NumClassesOpt = None,
    labels: Annotated[Optional[str], typer.Option("--labels", help="Label file, one name per line in class "
                                                  "order.", show_default=False)] = None,
    no_pretrained: NoPretrainedOpt = False,
    batch_size: BatchSizeOpt = 32,
    device: DeviceOpt = "auto",
    dtype: DtypeOpt = "float32",
    workers: WorkersOpt = None,
    recursive: RecursiveOpt = False,
    csv: Annotated[Optional[str], typer.Option("--csv", help="Also write one CSV row per image to this file.",
                                               show_default=False)] = None,
    force: ForceOpt = False,
    json: JsonOpt = False,
) -> int:
    """Classify images with a timm model: top-k label names and probabilities.

    Example: vitcli classify photo.jpg --model vit_base_patch16_224.augreg2_in21k_ft_in1k --top-k 5
    """
    from vitcli.commands.classify import ClassifyRequest, run_classify
    from vitcli.requests import RunOptions

    request = ClassifyRequest(
        inputs=tuple(inputs), model=model_request(model, checkpoint, num_classes, no_pretrained, device, dtype),
        run=RunOptions(batch_size=batch_size, workers=workers, recursive=recursive), top_k=top_k, labels=labels,
        csv=csv, force=force)
    return emit(run_classify(request, console()), json)


@app.command()
def features(
    inputs: InputsArg,
    out: Annotated[str, typer.Option("--out", "-o", help="Output .npy (the sidecar .json goes beside it).",
                                     show_default=False)],
    model: ModelsOpt = None,
    preset: Annotated[Optional[Preset], typer.Option("--preset", help="A named recipe: openvla (DINOv2 + SigLIP, "
                                                     "second-to-last block, 224 px, squashed).", show_default=False,
                                                     case_sensitive=False)] = None,
    mode: Annotated[Optional[Mode], typer.Option("--mode", help="Which tokens (default: patch).", show_default=False,
                                                 case_sensitive=False)] = None,
    layer: Annotated[Optional[list[int]], typer.Option("--layer", help="Block output K (0-based; negative from "
                                                       "the end); repeat for several. Default: the final output.",
                                                       show_default=False)] = None,
    norm: Annotated[bool, typer.Option("--norm", help="Apply the final norm to --layer outputs.")] = False,
    grid: Annotated[bool, typer.Option("--grid", help="Patch mode: (gh, gw, D) per image instead of (N, D).")] = False,
    stop_early: Annotated[bool, typer.Option("--stop-early", help="Skip the blocks after the last --layer.")] = False,
    size: Annotated[Optional[str], typer.Option("--size", "-s", help="Rebuild the model(s) for this input size "
                                                "(position embeddings resampled); N or HxW.",
                                                show_default=False)] = None,
    squash: Annotated[bool, typer.Option("--squash", help="Resize to the input size without cropping (OpenVLA's "
                                         "resize-naive) instead of the model's crop.")] = False,
    out_dtype: Annotated[OutDtype, typer.Option("--out-dtype", help="dtype of the saved array.",
                                                case_sensitive=False)] = OutDtype.float32,
    checkpoint: CheckpointOpt = None,
    num_classes: NumClassesOpt = None,
    no_pretrained: NoPretrainedOpt = False,
    batch_size: BatchSizeOpt = 32,
    device: DeviceOpt = "auto",
    dtype: DtypeOpt = "float32",
    workers: WorkersOpt = None,
    recursive: RecursiveOpt = False,
    resume: Annotated[bool, typer.Option("--resume", help="Continue an interrupted run from its last complete "
                                         "batch.")] = False,
    force: ForceOpt = False,
    json: JsonOpt = False,
) -> int:
    """Extract CLS, patch, mean or all tokens, final or per layer, to .npy with a JSON sidecar.

    Example: vitcli features --mode patch images/ -o feats.npy
    """
    from vitcli.commands.features import FeaturesRequest, run_features
    from vitcli.requests import RunOptions

    request = FeaturesRequest(
        inputs=tuple(inputs), out=out, preset=value(preset), mode=value(mode),
        layers=tuple(layer) if layer else None, norm=norm, grid=grid, stop_early=stop_early, size=size,
        models=tuple(model_request(n, checkpoint, num_classes, no_pretrained, device, dtype, squash)
                     for n in (model or [None])),
        run=RunOptions(batch_size=batch_size, workers=workers, recursive=recursive), out_dtype=value(out_dtype),
        force=force, resume=resume)
    return emit(run_features(request, console()), json)


@app.command()
def bench(
    model: ModelsOpt = None,
    size: Annotated[Optional[str], typer.Option("--size", "-s", help="Input size N or HxW (default: the model's).",
                                                show_default=False)] = None,
    batch_size: Annotated[Optional[list[int]], typer.Option("--batch-size", "-b", help="Batch size; repeat for "
                                                            "several (default 1).", show_default=False)] = None,
    device: DeviceOpt = "auto",
    dtype: DtypeOpt = "float32",
    compile: Annotated[bool, typer.Option("--compile", help="Run the model through torch.compile.")] = False,
    channels_last: Annotated[bool, typer.Option("--channels-last", help="Use channels-last memory format.")] = False,
    pretrained: Annotated[bool, typer.Option("--pretrained", help="Load real weights (default: random, no "
                                             "download).")] = False,
    warmup: Annotated[int, typer.Option("--warmup", help="Untimed iterations first.")] = 2,
    iters: Annotated[int, typer.Option("--iters", help="Timed iterations, at least.")] = 5,
    min_time: Annotated[float, typer.Option("--min-time", help="Seconds of timed iterations, at least (more "
                                            "iterations run until both --iters and this are reached).")] = 1.0,
    peak: Annotated[Optional[float], typer.Option("--peak", help="The device's peak TFLOP/s for MFU (default: "
                                                  "measured by a matmul probe).", show_default=False)] = None,
    end_to_end: Annotated[Optional[list[str]], typer.Option("--end-to-end", help="Images (files, folders, globs) "
                                                            "to decode and preprocess in the loop.",
                                                            show_default=False)] = None,
    workers: WorkersOpt = None,
    json: JsonOpt = False,
) -> int:
    """Measure images/s, latency, peak memory and MFU of a model's forward pass.

    Example: vitcli bench --model vit_base_patch16_224 --batch-size 1 --batch-size 32
    """
    from vitcli.commands.bench import BenchRequest, run_bench

    request = BenchRequest(
        models=tuple(model or ()), batch_sizes=tuple(batch_size or (1,)), size=size, device=device,
        dtype=value(dtype), compile=compile, channels_last=channels_last, pretrained=pretrained, warmup=warmup,
        iters=iters, min_time=min_time, peak=peak, end_to_end=tuple(end_to_end or ()), workers=workers)
    return emit(run_bench(request, console()), json)


@app.command()
def attention(
    image: ImageArg,
    model: ModelOpt = None,
    layer: Annotated[int, typer.Option("--layer", help="Block (0-based; negative from the end).")] = -1,
    head: Annotated[str, typer.Option("--head", help="mean (every head and their mean) or a head index.")] = "mean",
    rollout: Annotated[bool, typer.Option("--rollout", help="Attention rollout over all blocks instead.")] = False,
    discard_ratio: Annotated[float, typer.Option("--discard-ratio", help="Rollout: drop this fraction of the "
                                                 "lowest attention values per block.")] = 0.0,
    out: PictureOpt = None,
    npy: NpyOpt = None,
    checkpoint: CheckpointOpt = None,
    no_pretrained: NoPretrainedOpt = False,
    device: DeviceOpt = "auto",
    force: ForceOpt = False,
    json: JsonOpt = False,
) -> int:
    """Show where a ViT attends: attention maps of a block, or attention rollout, over the image.

    Example: vitcli attention photo.jpg --model vit_small_patch16_224.augreg_in21k_ft_in1k -o attn.png
    """
    from vitcli.commands.attention import AttentionRequest, run_attention

    request = AttentionRequest(image=image, model=model_request(model, checkpoint, None, no_pretrained, device),
                               layer=layer, head=head, rollout=rollout, discard_ratio=discard_ratio, out=out, npy=npy,
                               force=force)
    return emit(run_attention(request, console()), json)


@app.command()
def posembed(
    model: ModelOpt = None,
    size: Annotated[Optional[str], typer.Option("--size", "-s", help="Resample the embedding to this input size "
                                                "(timm resample_abs_pos_embed).", show_default=False)] = None,
    out: PictureOpt = None,
    npy: NpyOpt = None,
    checkpoint: CheckpointOpt = None,
    no_pretrained: NoPretrainedOpt = False,
    force: ForceOpt = False,
    json: JsonOpt = False,
) -> int:
    """Compare every patch's position embedding with every other's (the ViT paper's figure 7).

    Example: vitcli posembed --model vit_base_patch16_224 -o pos.png
    """
    from vitcli.commands.posembed import PosembedRequest, run_posembed

    request = PosembedRequest(model=model_request(model, checkpoint, None, no_pretrained, "cpu"), size=size, out=out,
                              npy=npy, force=force)
    return emit(run_posembed(request, console()), json)


@app.command()
def inspect(
    image: ImageArg,
    model: ModelOpt = None,
    checkpoint: CheckpointOpt = None,
    no_pretrained: NoPretrainedOpt = False,
    device: DeviceOpt = "auto",
    json: JsonOpt = False,
) -> int:
    """Follow the tokens through the blocks: norms, CLS attention entropy, CLS versus patches.

    Example: vitcli inspect photo.jpg --model vit_small_patch14_reg4_dinov2.lvd142m
    """
    from vitcli.commands.inspect import InspectRequest, run_inspect

    request = InspectRequest(image=image, model=model_request(model, checkpoint, None, no_pretrained, device))
    return emit(run_inspect(request, console()), json)


def main() -> None:
    """The console script. When the command line names a command, only that command is turned into a click
    command (building all of them is most of a light command's start-up); otherwise the whole app."""
    words = [w for w in sys.argv[1:] if not w.startswith("-")]
    chosen = [c for c in app.registered_commands if words and (c.name or c.callback.__name__) == words[0]]
    if chosen and words[0] == sys.argv[1]:
        lite = typer.Typer(**SETTINGS)
        lite.registered_callback = app.registered_callback
        lite.registered_commands = chosen
        lite()
    else:
        app()
