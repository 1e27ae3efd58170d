"""The Typer app. Per command: check conflicting flags, one call into `commands`, render once.

One place turns exceptions into exit codes: 0 ok, 1 failure, 2 usage error, 130 Ctrl-C.
`VITCLI_DEBUG=1` shows the traceback of any error.
"""

from __future__ import annotations

import functools
import os
import sys
import traceback
import warnings
from typing import Annotated, Optional

import typer
from typer.core import TyperGroup

from vitcli import __version__, render
from vitcli.errors import UsageError, VitcliError
from vitcli.options import (
    BatchSizeOpt,
    CheckpointOpt,
    DeviceOpt,
    DtypeOpt,
    ForceOpt,
    InputsArg,
    JsonOpt,
    ModelOpt,
    ModelsOpt,
    NoPretrainedOpt,
    NumClassesOpt,
    PatchesOpt,
    RecursiveOpt,
    SizesOpt,
    WorkersOpt,
)

class _OneLineErrors(TyperGroup):
    """Typer's own usage errors (unknown option, not an integer) as one stderr line, exit code 2."""

    def main(self, args=None, prog_name=None, complete_var=None, standalone_mode=True, **extra):
        if not standalone_mode:
            return super().main(args, prog_name, complete_var, standalone_mode=False, **extra)
        if not _debug():  # library warnings (torch, timm) are noise on a CLI's stderr; VITCLI_DEBUG=1 shows them
            warnings.simplefilter("ignore")
        try:
            rv = super().main(args, prog_name, complete_var, standalone_mode=False, **extra)
        except typer.Abort:
            render.error_line("interrupted")
            sys.exit(130)
        except Exception as e:
            if not (hasattr(e, "format_message") and hasattr(e, "exit_code")):  # not a click error
                raise
            if type(e).__name__ == "NoArgsIsHelpError":  # `vitcli` alone: show the help
                e.show()
            else:
                ctx = getattr(e, "ctx", None)
                render.error_line(e.format_message().rstrip("."),
                                  hint=f"see `{ctx.command_path if ctx else 'vitcli'} --help`")
            sys.exit(e.exit_code)
        sys.exit(rv if isinstance(rv, int) else 0)


app = typer.Typer(
    cls=_OneLineErrors,
    name="vitcli",
    help="See how a Vision Transformer turns an image into tokens, and what it costs.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)


def _debug() -> bool:
    return os.environ.get("VITCLI_DEBUG", "") not in ("", "0")


def handle_errors(fn):
    """Turn VitcliError, Ctrl-C and unexpected exceptions into one stderr line and an exit code."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except VitcliError as e:
            if _debug():
                traceback.print_exc()
            render.error_line(e.message, e.hint)
            raise typer.Exit(e.exit_code) from None
        except KeyboardInterrupt:
            if _debug():
                traceback.print_exc()
            render.error_line("interrupted")
            raise typer.Exit(130) from None
        except (typer.Exit, typer.Abort):
            raise
        except Exception as e:  # a bug or an unforeseen failure: still one line, traceback on request
            if _debug():
                traceback.print_exc()
            render.error_line(f"{type(e).__name__}: {e}",
                              hint="run again with VITCLI_DEBUG=1 to see the traceback, and report it")
            raise typer.Exit(1) from None

    return wrapper


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


@app.command()
@handle_errors
def tokens(
    size: SizesOpt = None,
    patch: PatchesOpt = None,
    cls: Annotated[Optional[bool], typer.Option("--cls/--no-cls", help="Prepend a CLS token (default: yes).",
                                                show_default=False)] = None,
    registers: Annotated[Optional[int], typer.Option("--registers", help="Register tokens (DINOv2-reg4: 4).",
                                                     show_default=False)] = None,
    model: ModelOpt = None,
    preset: Annotated[Optional[str], typer.Option("--preset", help="A named recipe: openvla (its encoders and the "
                                                  "tokens its language model sees).", show_default=False)] = None,
    json: JsonOpt = False,
) -> None:
    """Count the tokens an image becomes: patch grid, prefix tokens, sequence length.

    Example: vitcli tokens --size 384 --patch 16
    """
    from vitcli.commands.tokens import run_tokens

    result = run_tokens(size or [], patch or [], cls, registers, model, preset)
    render.print_json(result.to_dict()) if json else render.render_tokens(result)


@app.command()
@handle_errors
def variants(
    family: Annotated[Optional[str], typer.Option("--family", help="Only one family: vit, deit, dinov2, siglip, "
                                                                   "clip.", show_default=False)] = None,
    json: JsonOpt = False,
) -> None:
    """List ViT variants with their timm names, shapes and exact parameter counts.

    Example: vitcli variants --family dinov2
    """
    from vitcli.commands.variants import run_variants

    result = run_variants(family)
    render.print_json(result.to_dict()) if json else render.render_variants(result)


@app.command()
@handle_errors
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
    dtype: Annotated[str, typer.Option("--dtype", help="Activation dtype for the memory table.")] = "float32",
    preset: Annotated[Optional[str], typer.Option("--preset", help="A named recipe: openvla (both encoders and the "
                                                  "per-frame budget).", show_default=False)] = None,
    json: JsonOpt = False,
) -> None:
    """Compute parameters, MACs, FLOPs and memory per image, by part, exactly.

    Example: vitcli cost --variant B/16 --size 224 --size 384
    """
    from vitcli.commands.cost import run_cost

    result = run_cost(model or [], variant or [], size or [], measure, num_classes, dtype, preset)
    render.print_json(result.to_dict()) if json else render.render_cost(result)


@app.command()
@handle_errors
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
) -> None:
    """Cut an image into the patches a ViT sees; draw the grid and export the patch tensor.

    Example: vitcli patchify photo.jpg --size 224 --patch 16 -o grid.png --mosaic mosaic.png --npy patches.npy
    """
    from vitcli.commands.patchify import run_patchify

    result = run_patchify(image, size, patch, model, out, mosaic, npy, force)
    render.print_json(result.to_dict()) if json else render.render_patchify(result)


@app.command()
@handle_errors
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
) -> None:
    """Classify images with a timm model: top-k label names and probabilities.

    Example: vitcli classify photo.jpg --model vit_base_patch16_224.augreg2_in21k_ft_in1k --top-k 5
    """
    from vitcli.commands.classify import run_classify
    from vitcli.commands.common import ModelRequest, RunOptions

    request = ModelRequest(model, checkpoint, num_classes, not no_pretrained, device, dtype)
    if no_pretrained:
        render.warn("--no-pretrained: random weights, the predictions below are meaningless")
    with render.progress_bar() as progress:
        result = run_classify(inputs, request, RunOptions(batch_size, workers, recursive), top_k, labels, csv,
                              force, progress)
    render.print_json(result.to_dict()) if json else render.render_classify(result)
    render.report_skipped([s.to_dict() for s in result.skipped], result.total)


@app.command()
@handle_errors
def features(
    inputs: InputsArg,
    out: Annotated[str, typer.Option("--out", "-o", help="Output .npy (the sidecar .json goes beside it).",
                                     show_default=False)],
    model: ModelsOpt = None,
    preset: Annotated[Optional[str], typer.Option("--preset", help="A named recipe: openvla (DINOv2 + SigLIP, "
                                                  "second-to-last block, 224 px, squashed).", show_default=False)] = None,
    mode: Annotated[Optional[str], typer.Option("--mode", help="cls, patch, mean or all (default: patch).",
                                                show_default=False)] = None,
    layer: Annotated[Optional[list[int]], typer.Option("--layer", help="Block output K (0-based; negative from "
                                                       "the end); repeat for several. Default: the final output.",
                                                       show_default=False)] = None,
    norm: Annotated[bool, typer.Option("--norm", help="Apply the final norm to --layer outputs.")] = False,
    grid: Annotated[bool, typer.Option("--grid", help="Patch mode: (gh, gw, D) per image instead of (N, D).")] = False,
    stop_early: Annotated[bool, typer.Option("--stop-early", help="Skip the blocks after the last --layer.")] = False,
    size: Annotated[Optional[str], typer.Option("--size", "-s", help="Rebuild the model(s) for this input size "
                                                "(position embeddings resampled); N or HxW.", show_default=False)] = None,
    squash: Annotated[bool, typer.Option("--squash", help="Resize to the input size without cropping (OpenVLA's "
                                         "resize-naive) instead of the model's crop.")] = False,
    out_dtype: Annotated[str, typer.Option("--out-dtype", help="float32 or float16.")] = "float32",
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
) -> None:
    """Extract CLS, patch, mean or all tokens, final or per layer, to .npy with a JSON sidecar.

    Example: vitcli features --mode patch images/ -o feats.npy
    """
    from vitcli.backend.features import FeatureRequest
    from vitcli.commands.common import ModelRequest, RunOptions
    from vitcli.commands.features import run_features

    from vitcli.commands.features import expand_preset

    if preset:
        model, mode, layer, size, squash = expand_preset(preset, model, mode, layer, size, norm, squash)
    names = model or [None]
    if checkpoint and len(names) > 1:
        raise UsageError("--checkpoint applies to one --model", hint="give fine-tuned models as local-dir: sources")
    requests = [ModelRequest(n, checkpoint, num_classes, not no_pretrained, device, dtype, squash) for n in names]
    if no_pretrained:
        render.warn("--no-pretrained: random weights, the features are meaningless")
    feat = FeatureRequest(mode or "patch", tuple(layer) if layer else None, norm, grid, stop_early)
    with render.progress_bar() as progress:
        result = run_features(inputs, requests, feat, out, RunOptions(batch_size, workers, recursive), size, out_dtype,
                              force, resume, progress, announce=render.note)
    if result is None:  # a torchrun rank other than 0: rank 0 reports for all
        return
    render.print_json(result.to_dict()) if json else render.render_features(result)
    render.report_skipped(result.skipped, result.total)


@app.command()
@handle_errors
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
    iters: Annotated[int, typer.Option("--iters", help="Timed iterations.")] = 5,
    peak: Annotated[Optional[float], typer.Option("--peak", help="The device's peak TFLOP/s for MFU (default: "
                                                  "measured by a matmul probe).", show_default=False)] = None,
    end_to_end: Annotated[Optional[list[str]], typer.Option("--end-to-end", help="Images (files, folders, globs) "
                                                            "to decode and preprocess in the loop.",
                                                            show_default=False)] = None,
    workers: WorkersOpt = None,
    json: JsonOpt = False,
) -> None:
    """Measure images/s, latency, peak memory and MFU of a model's forward pass.

    Example: vitcli bench --model vit_base_patch16_224 --batch-size 1 --batch-size 32
    """
    from vitcli.commands.bench import run_bench

    result = run_bench(model or [], batch_size or [], size, device, dtype, compile, channels_last, pretrained, warmup,
                       iters, peak, end_to_end, workers, note=render.warn)
    render.print_json(result.to_dict()) if json else render.render_bench(result)


PictureOpt = Annotated[Optional[str], typer.Option("--out", "-o", help="Write the picture (PNG).", show_default=False)]
NpyOpt = Annotated[Optional[str], typer.Option("--npy", help="Write the numbers (.npy).", show_default=False)]


def _look_request(model, checkpoint, no_pretrained, device):
    from vitcli.commands.common import ModelRequest

    if no_pretrained:
        render.warn("--no-pretrained: random weights, the pictures show the pipeline, not a trained model")
    return ModelRequest(model, checkpoint, None, not no_pretrained, device)


@app.command()
@handle_errors
def attention(
    image: Annotated[str, typer.Argument(help="Image file.", show_default=False)],
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
) -> None:
    """Show where a ViT attends: attention maps of a block, or attention rollout, over the image.

    Example: vitcli attention photo.jpg --model vit_small_patch16_224.augreg_in21k_ft_in1k -o attn.png
    """
    from vitcli.commands.look import run_attention

    result = run_attention(image, _look_request(model, checkpoint, no_pretrained, device), layer, head, rollout,
                           discard_ratio, out, npy, force)
    render.print_json(result.to_dict()) if json else render.render_attention(result)


@app.command()
@handle_errors
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
) -> None:
    """Compare every patch's position embedding with every other's (the ViT paper's figure 7).

    Example: vitcli posembed --model vit_base_patch16_224 -o pos.png
    """
    from vitcli.commands.look import run_posembed

    result = run_posembed(_look_request(model, checkpoint, no_pretrained, "cpu"), size, out, npy, force)
    render.print_json(result.to_dict()) if json else render.render_posembed(result)


@app.command()
@handle_errors
def inspect(
    image: Annotated[str, typer.Argument(help="Image file.", show_default=False)],
    model: ModelOpt = None,
    checkpoint: CheckpointOpt = None,
    no_pretrained: NoPretrainedOpt = False,
    device: DeviceOpt = "auto",
    json: JsonOpt = False,
) -> None:
    """Follow the tokens through the blocks: norms, CLS attention entropy, CLS versus patches.

    Example: vitcli inspect photo.jpg --model vit_small_patch14_reg4_dinov2.lvd142m
    """
    from vitcli.commands.look import run_inspect

    result = run_inspect(image, _look_request(model, checkpoint, no_pretrained, device))
    render.print_json(result.to_dict()) if json else render.render_inspect(result)


def main() -> None:
    app()
