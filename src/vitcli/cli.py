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
from vitcli.choices import ActDtype, Engine, Family, Method, Mode, OutDtype, PosReference, Preset, TokensPreset, value
from vitcli.errors import VitcliError, debug_enabled
from vitcli.options import (
    BatchSizeOpt,
    CheckpointOpt,
    CompileOpt,
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


def report(e: BaseException) -> int:
    """Say what went wrong in one line on stderr (the traceback too with VITCLI_DEBUG=1); return the exit code."""
    def line(message: str, hint: str | None = None) -> None:
        sys.stderr.write(f"Error: {message}" + (f"; {hint}" if hint else "") + "\n")

    if debug_enabled():
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
        if not debug_enabled():  # library warnings (torch, timm) are noise on a CLI's stderr; VITCLI_DEBUG=1 shows them
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


def _tok(flag: str, kind: type, about: str, metavar: str | None = None):
    """A `tokens` option that is None when not given (the preset's released value then applies)."""
    return Annotated[Optional[kind], typer.Option(*flag.split(" "), help=about, show_default=False,
                                                  **({"metavar": metavar} if metavar else {}))]


@app.command()
def tokens(
    size: Annotated[Optional[list[str]], typer.Option(
        "--size", "-s", help="Image size in pixels: N or HxW, height first. Repeat for several. With --preset: the "
                             "input image or camera frame, which the preset resizes, tiles or squashes (default: "
                             "the preset's native size, e.g. 336 for llava-1.5, 224 for pi0 and openvla; "
                             "--list-presets shows each).", show_default=False)] = None,
    patch: PatchesOpt = None,
    cls: Annotated[Optional[bool], typer.Option("--cls/--no-cls", help="Prepend a CLS token (default: yes).",
                                                show_default=False)] = None,
    registers: Annotated[Optional[int], typer.Option("--registers", help="Register tokens (DINOv2-reg4: 4).",
                                                     show_default=False)] = None,
    model: ModelOpt = None,
    preset: Annotated[Optional[TokensPreset], typer.Option(
        "--preset", metavar="NAME", help="A VLM or VLA: the visual and special tokens its language model receives "
                                         "per image (and per control step): " + ", ".join(TokensPreset) + ".",
        show_default=False, case_sensitive=False)] = None,
    list_presets: Annotated[bool, typer.Option("--list-presets", help="List the presets with their models and "
                                                                      "references (with --size: tokens at each).")
                            ] = False,
    cameras: _tok("--cameras", int, "Cameras per control step (default: the preset's; pi0 3, others 1).") = None,
    frames: _tok("--frames", int, "Frames per camera per control step (history; default 1).") = None,
    hz: _tok("--hz", float, "Control steps per second: adds tokens and encoder FLOPs per second.") = None,
    min_pixels: _tok("--min-pixels", int, "Qwen presets: smallest resized area in pixels (released: 3,136; "
                                          "qwen3-vl 65,536).") = None,
    max_pixels: _tok("--max-pixels", int, "Qwen presets: largest resized area in pixels (released: 12,845,056; "
                                          "qwen3-vl 16,777,216).") = None,
    max_tiles: _tok("--max-tiles", int, "internvl: most tiles, thumbnail not counted (released: 12).") = None,
    min_tiles: _tok("--min-tiles", int, "internvl: fewest tiles (released: 1).") = None,
    longest_edge: _tok("--longest-edge", int, "idefics3, smolvlm: the longest edge is resized to this first "
                                              "(released: 1,456; smolvlm 2,048).") = None,
    image_splitting: _tok("--image-splitting/--no-image-splitting", bool, "idefics3, smolvlm: cut tiles (released: "
                                                                          "on).") = None,
    pan_and_scan: _tok("--pan-and-scan/--no-pan-and-scan", bool, "gemma3: add crops of elongated images "
                                                                 "(released: off).") = None,
    pan_and_scan_min_crop_size: _tok("--pan-and-scan-min-crop-size", int, "gemma3: smallest crop side in pixels "
                                                                          "(released: 256).") = None,
    pan_and_scan_max_crops: _tok("--pan-and-scan-max-crops", int, "gemma3: most crops (released: 4).") = None,
    pan_and_scan_min_ratio: _tok("--pan-and-scan-min-ratio", float, "gemma3: long/short side ratio from which "
                                                                    "crops are made (released: 1.2).") = None,
    anyres_max: _tok("--anyres-max", int, "llava-onevision: features reduced to about N tiles' worth (released: "
                                          "9).") = None,
    multi_image: _tok("--multi-image/--no-multi-image", bool, "llava-onevision: the image is one of several in the "
                                                              "prompt: padded to a square, no tiles (released: off; "
                                                              "on when cameras x frames > 1).") = None,
    json: JsonOpt = False,
) -> int:
    """Count the tokens an image becomes: patch grid, prefix tokens, sequence length; or, with --preset, what a
    VLM/VLA's language model receives per image and per control step.

    Example: vitcli tokens --size 384 --patch 16

    Example: vitcli tokens --preset qwen2-vl --size 1080x1920

    Example: vitcli tokens --preset pi0 --cameras 3 --hz 50
    """
    from vitcli.commands.tokens import TokensRequest, run_tokens

    options = dict(min_pixels=min_pixels, max_pixels=max_pixels, max_tiles=max_tiles, min_tiles=min_tiles,
                   longest_edge=longest_edge, image_splitting=image_splitting, pan_and_scan=pan_and_scan,
                   pan_and_scan_min_crop_size=pan_and_scan_min_crop_size, pan_and_scan_max_crops=pan_and_scan_max_crops,
                   pan_and_scan_min_ratio=pan_and_scan_min_ratio, anyres_max=anyres_max, multi_image=multi_image)
    return emit(run_tokens(TokensRequest(sizes=tuple(size or ()), patches=tuple(patch or ()), cls_token=cls,
                                         registers=registers, model=model, preset=value(preset),
                                         list_presets=list_presets, cameras=cameras, frames=frames, hz=hz,
                                         options=options)), json)


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
    image: ImageArg,
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


FpsOpt = Annotated[Optional[float], typer.Option("--fps", help="Videos: frames at this rate of video time (the "
                                                 "nearest frame to each tick).", show_default=False)]
EveryOpt = Annotated[Optional[int], typer.Option("--every", help="Videos: every Nth frame.", show_default=False)]
StartOpt = Annotated[Optional[float], typer.Option("--start", help="Videos: from this time (s).", show_default=False)]
EndOpt = Annotated[Optional[float], typer.Option("--end", help="Videos: up to this time (s, not included).",
                                                 show_default=False)]
MaxFramesOpt = Annotated[Optional[int], typer.Option("--max-frames", help="Videos: at most this many frames each.",
                                                     show_default=False)]


def sampling(fps, every, start, end, max_frames):
    from vitcli.video import Sampling

    return Sampling(fps=fps, every=every, start=start, end=end, max_frames=max_frames)


def task_option(text: str | None):
    """--task I/N, or a SLURM job array's own numbers."""
    if text is None:
        env = os.environ
        if "SLURM_ARRAY_TASK_ID" in env and "SLURM_ARRAY_TASK_COUNT" in env:
            first, step = int(env.get("SLURM_ARRAY_TASK_MIN", 0)), int(env.get("SLURM_ARRAY_TASK_STEP", 1))
            i, n = (int(env["SLURM_ARRAY_TASK_ID"]) - first) // step, int(env["SLURM_ARRAY_TASK_COUNT"])
            if not 0 <= i < n:
                from vitcli.errors import UsageError

                raise UsageError(f"SLURM_ARRAY_TASK_ID {env['SLURM_ARRAY_TASK_ID']} is not the {i}th of "
                                 f"{n} tasks", hint="give --array a range (0-15 or 0-15:4), or --task I/N")
            return i, n
        return None
    i, _, n = text.partition("/")
    if not (i.isdigit() and n.isdigit()):
        from vitcli.errors import UsageError

        raise UsageError(f"--task {text!r} is not I/N", hint="e.g. --task 0/8 for the first of 8 tasks")
    return int(i), int(n)


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
    fps: FpsOpt = None,
    every: EveryOpt = None,
    start: StartOpt = None,
    end: EndOpt = None,
    max_frames: MaxFramesOpt = None,
    compile: CompileOpt = False,
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
        run=RunOptions(batch_size=batch_size, workers=workers, recursive=recursive, compile=compile), top_k=top_k,
        labels=labels,
        csv=csv, force=force, sampling=sampling(fps, every, start, end, max_frames))
    return emit(run_classify(request, console()), json)


@app.command()
def features(
    out: Annotated[str, typer.Option("--out", "-o", help="Output .npy (the sidecar .json goes beside it), or a "
                                     "FOLDER/ of shards.", show_default=False)],
    inputs: Annotated[Optional[list[str]], typer.Argument(
        help="Images, videos, directories or glob patterns (or: merge FOLDER/ -o feats.npy).",
        show_default=False)] = None,
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
    fps: FpsOpt = None,
    every: EveryOpt = None,
    start: StartOpt = None,
    end: EndOpt = None,
    max_frames: MaxFramesOpt = None,
    from_list: Annotated[Optional[str], typer.Option("--from-list", help="Inputs listed in a file, one per line "
                                                     "(a folder's failed.txt retries what it lost).",
                                                     show_default=False)] = None,
    lerobot: Annotated[Optional[str], typer.Option("--lerobot", help="A LeRobot dataset's local root folder "
                                                   "(v3.0 or v2.1 layout): every camera frame of its episodes.",
                                                   show_default=False)] = None,
    camera: Annotated[Optional[list[str]], typer.Option("--camera", help="--lerobot: this camera only "
                                                        "(repeatable; default every camera).",
                                                        show_default=False)] = None,
    episodes: Annotated[Optional[str], typer.Option("--episodes", help="--lerobot: these episodes, e.g. 0-9,12.",
                                                    show_default=False)] = None,
    fuse_cameras: Annotated[bool, typer.Option("--fuse-cameras", help="--lerobot: one row per step, the cameras' "
                                               "features side by side along channels.")] = False,
    fast_decode: Annotated[bool, typer.Option("--fast-decode", help="Decode large JPEGs at 1/2, 1/4 or 1/8 "
                                              "scale (DCT scaling) before the model's resize: faster, not "
                                              "bit-exact.")] = False,
    gpu_decode: Annotated[bool, typer.Option("--gpu-decode", help="Decode JPEGs on the CUDA device (nvJPEG) and "
                                             "resize there; other files on the CPU.")] = False,
    decode_timeout: Annotated[Optional[float], typer.Option("--decode-timeout", help="Abandon a file the decoder "
                                                            "spends longer on (s); it is reported as skipped.",
                                                            show_default=False)] = None,
    shard_size: Annotated[Optional[int], typer.Option("--shard-size", help="FOLDER/ output: rows per shard (a "
                                                      "multiple of --batch-size; default: about 1 GiB).",
                                                      show_default=False)] = None,
    task: Annotated[Optional[str], typer.Option("--task", help="FOLDER/ output: compute only task I of N's share "
                                                "of the shards (I/N; default from SLURM_ARRAY_TASK_ID/COUNT).",
                                                show_default=False)] = None,
    engine: Annotated[Engine, typer.Option("--engine", help="FOLDER/ output: compute the shards here (local), or "
                                           "on a Ray cluster (ray: RAY_ADDRESS, `ray start`'s cluster, or a local "
                                           "one; needs vitcli[ray]).", case_sensitive=False)] = Engine.local,
    actors: Annotated[Optional[int], typer.Option("--actors", help="--engine ray: model actors, one GPU each "
                                                  "where the cluster has GPUs (default: its GPUs, else 1).",
                                                  show_default=False)] = None,
    checkpoint: CheckpointOpt = None,
    num_classes: NumClassesOpt = None,
    no_pretrained: NoPretrainedOpt = False,
    batch_size: BatchSizeOpt = 32,
    device: DeviceOpt = "auto",
    dtype: DtypeOpt = "float32",
    workers: WorkersOpt = None,
    recursive: RecursiveOpt = False,
    compile: CompileOpt = False,
    resume: Annotated[bool, typer.Option("--resume", help="Continue an interrupted run from its last complete "
                                         "batch (a FOLDER/ output always continues where it stopped).")] = False,
    force: ForceOpt = False,
    json: JsonOpt = False,
) -> int:
    """Extract CLS, patch, mean or all tokens, final or per layer, to .npy with a JSON sidecar.

    Example: vitcli features --mode patch images/ -o feats.npy
    """
    inputs = list(inputs or [])
    if inputs[:1] == ["merge"] and not os.path.exists("merge"):
        from vitcli.commands.merge import MergeRequest, run_merge

        return emit(run_merge(MergeRequest(folders=tuple(inputs[1:]), out=out, force=force), console()), json)
    from vitcli.commands.features import FeaturesRequest, run_features
    from vitcli.requests import RunOptions

    request = FeaturesRequest(
        inputs=tuple(inputs), out=out, preset=value(preset), mode=value(mode),
        layers=tuple(layer) if layer else None, norm=norm, grid=grid, stop_early=stop_early, size=size,
        models=tuple(model_request(n, checkpoint, num_classes, no_pretrained, device, dtype, squash)
                     for n in (model or [None])),
        run=RunOptions(batch_size=batch_size, workers=workers, recursive=recursive, compile=compile),
        out_dtype=value(out_dtype),
        force=force, resume=resume, sampling=sampling(fps, every, start, end, max_frames), lerobot=lerobot,
        from_list=from_list,
        cameras=tuple(camera or ()), episodes=episodes, fuse_cameras=fuse_cameras, fast_decode=fast_decode,
        gpu_decode=gpu_decode, decode_timeout=decode_timeout, shard_size=shard_size, task=task_option(task),
        engine=value(engine), actors=actors)
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
    reference: Annotated[Optional[PosReference], typer.Option(
        "--reference", help="Draw a reference instead of the model's table: sincos, the fixed 2-D sine-cosine "
                            "embedding, at --model's grid and width (default: ViT-B/16 at 224, 14x14 x 768). "
                            "No weights needed.", show_default=False, case_sensitive=False)] = None,
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

    request = PosembedRequest(model=model_request(model, checkpoint, None, no_pretrained, "cpu"), size=size,
                              reference=value(reference), out=out, npy=npy, force=force)
    return emit(run_posembed(request, console()), json)


@app.command()
def inspect(
    image: ImageArg,
    model: ModelOpt = None,
    shuffle_patches: Annotated[bool, typer.Option(
        "--shuffle-patches", help="Instead: shuffle the patches (seeded) and run the model with and without its "
                                  "position embeddings; report how far the outputs move.")] = False,
    seed: Annotated[Optional[int], typer.Option("--seed", help="Seed of the --shuffle-patches permutation "
                                                "(default 0).", show_default=False)] = None,
    out: Annotated[Optional[str], typer.Option("--out", "-o", help="With --shuffle-patches: write the model's "
                                               "input and its shuffled patches side by side (PNG).",
                                               show_default=False)] = None,
    checkpoint: CheckpointOpt = None,
    no_pretrained: NoPretrainedOpt = False,
    device: DeviceOpt = "auto",
    force: ForceOpt = False,
    json: JsonOpt = False,
) -> int:
    """Follow the tokens through the blocks, or shuffle the patches to see what position embeddings do.

    Example: vitcli inspect photo.jpg --model vit_small_patch16_224 --shuffle-patches --seed 0 -o shuffle.png
    """
    from vitcli.commands.inspect import InspectRequest, run_inspect

    request = InspectRequest(image=image, model=model_request(model, checkpoint, None, no_pretrained, device),
                             shuffle_patches=shuffle_patches, seed=seed, out=out, force=force)
    return emit(run_inspect(request, console()), json)


@app.command()
def explore(
    image: ImageArg,
    out: Annotated[str, typer.Option("--out", "-o", help="Write the page here (one self-contained HTML file).",
                                     show_default=False)],
    model: ModelOpt = None,
    size: Annotated[Optional[str], typer.Option("--size", "-s", help="Rebuild the model for this input size "
                                                "(position embeddings resampled); N or HxW.",
                                                show_default=False)] = None,
    checkpoint: CheckpointOpt = None,
    no_pretrained: NoPretrainedOpt = False,
    device: DeviceOpt = "auto",
    force: ForceOpt = False,
    json: JsonOpt = False,
) -> int:
    """Write one HTML page to explore a ViT on an image: patches, attention, rollout, features, prediction.

    Example: vitcli explore photo.jpg --model vit_small_patch16_224.augreg_in21k_ft_in1k -o page.html
    """
    from vitcli.commands.explore import ExploreRequest, run_explore

    request = ExploreRequest(image=image, out=out, size=size, force=force,
                             model=model_request(model, checkpoint, None, no_pretrained, device))
    return emit(run_explore(request, console()), json)


# ---- pca and similar: the patch tokens `features --mode patch --grid` gives ------------------------------------
TokenLayerOpt = Annotated[Optional[int], typer.Option("--layer", help="Block output K (0-based; negative from the "
                                                      "end). Default: the final output.", show_default=False)]
TokenSizeOpt = Annotated[Optional[str], typer.Option("--size", "-s", help="Rebuild the model for this input size "
                                                     "(position embeddings resampled); N or HxW.",
                                                     show_default=False)]


@app.command()
def pca(
    inputs: InputsArg,
    model: ModelOpt = None,
    layer: TokenLayerOpt = None,
    components: Annotated[int, typer.Option("--components", "-c", help="Principal components to show: 3 as RGB, 2 "
                                            "as RG, 1 through a colour map.")] = 3,
    per_image: Annotated[bool, typer.Option("--per-image", help="One PCA per image instead of one over all "
                                            "(colours then differ between images).")] = False,
    fit_on: Annotated[Optional[list[str]], typer.Option("--fit-on", help="Fit the PCA on these images (files, "
                                                        "directories, globs; repeatable) and apply it to INPUTS.",
                                                        show_default=False)] = None,
    fit_first: Annotated[Optional[int], typer.Option("--fit-first", help="Fit on the first K inputs (video: the "
                                                     "first K frames) and apply that fit to all of them.",
                                                     show_default=False)] = None,
    foreground: Annotated[bool, typer.Option("--foreground", help="Split foreground from background by the first "
                                             "component; fit the colours on the foreground, background black.")
                          ] = False,
    threshold: Annotated[Optional[float], typer.Option("--threshold", help="--foreground: background where the "
                                                       "first component, scaled to [0, 1], is above this (default "
                                                       "0.35).", show_default=False)] = None,
    out: Annotated[Optional[str], typer.Option("--out", "-o", help="Write the pictures: NAME.png one sheet; "
                                               "NAME.gif or NAME.webp an animation, one frame per input; FOLDER/ "
                                               "one PNG per input (0000.png ...).", show_default=False)] = None,
    mask: Annotated[Optional[str], typer.Option("--mask", help="Write the foreground mask picture (PNG); needs "
                                                "--foreground.", show_default=False)] = None,
    npy: Annotated[Optional[str], typer.Option("--npy", help="Write the (N, gh, gw, C) components in [0, 1] "
                                               "(float32); with --foreground also NAME.mask.npy (N, gh, gw) bool.",
                                               show_default=False)] = None,
    size: TokenSizeOpt = None,
    fps: FpsOpt = None,
    every: EveryOpt = None,
    start: StartOpt = None,
    end: EndOpt = None,
    max_frames: MaxFramesOpt = None,
    checkpoint: CheckpointOpt = None,
    no_pretrained: NoPretrainedOpt = False,
    batch_size: BatchSizeOpt = 32,
    device: DeviceOpt = "auto",
    dtype: DtypeOpt = "float32",
    workers: WorkersOpt = None,
    recursive: RecursiveOpt = False,
    force: ForceOpt = False,
    json: JsonOpt = False,
) -> int:
    """Colour the patch tokens by their principal components, fitted jointly over all inputs.

    Example: vitcli pca photos/ --model vit_small_patch14_dinov2.lvd142m --foreground -o pca.png
    """
    from vitcli.commands.pca import PcaRequest, run_pca
    from vitcli.requests import RunOptions

    request = PcaRequest(
        inputs=tuple(inputs), model=model_request(model, checkpoint, None, no_pretrained, device, dtype), layer=layer,
        size=size, run=RunOptions(batch_size=batch_size, workers=workers, recursive=recursive), components=components,
        per_image=per_image, fit_on=tuple(fit_on or ()), fit_first=fit_first, foreground=foreground,
        threshold=threshold, out=out, mask=mask, npy=npy, force=force,
        sampling=sampling(fps, every, start, end, max_frames))
    return emit(run_pca(request, console()), json)


@app.command()
def similar(
    query: Annotated[str, typer.Argument(help="The query image, or a video frame: VIDEO@t=SECONDS or "
                                         "VIDEO@frame=N (a video alone: its first frame).", show_default=False)],
    targets: Annotated[Optional[list[str]], typer.Argument(help="Images and videos to search (every frame, or "
                                                           "--fps/--every...; files, directories, globs).",
                                                           show_default=False)] = None,
    patch: Annotated[Optional[str], typer.Option("--patch", help="The query patch ROW,COL (0-based) on the query "
                                                 "image's patch grid.", show_default=False)] = None,
    point: Annotated[Optional[str], typer.Option("--point", help="The query patch as the pixel X,Y of the original "
                                                 "query image, mapped through the model's resize and crop.",
                                                 show_default=False)] = None,
    mutual: Annotated[bool, typer.Option("--mutual", help="Mutual nearest neighbours between the query image and "
                                         "one target instead.")] = False,
    top_k: Annotated[Optional[int], typer.Option("--top-k", "-k", help="--mutual: keep the K most similar pairs "
                                                 "(default: all).", show_default=False)] = None,
    model: ModelOpt = None,
    layer: TokenLayerOpt = None,
    out: PictureOpt = None,
    npy: Annotated[Optional[str], typer.Option("--npy", help="Write the (1 + T, gh, gw) similarity maps (float32); "
                                               "--mutual: the (K, 5) pairs a_row, a_col, b_row, b_col, cosine.",
                                               show_default=False)] = None,
    size: TokenSizeOpt = None,
    fps: FpsOpt = None,
    every: EveryOpt = None,
    start: StartOpt = None,
    end: EndOpt = None,
    max_frames: MaxFramesOpt = None,
    checkpoint: CheckpointOpt = None,
    no_pretrained: NoPretrainedOpt = False,
    batch_size: BatchSizeOpt = 32,
    device: DeviceOpt = "auto",
    dtype: DtypeOpt = "float32",
    workers: WorkersOpt = None,
    recursive: RecursiveOpt = False,
    force: ForceOpt = False,
    json: JsonOpt = False,
) -> int:
    """Find the patches most like one query patch, in the query image and in others.

    Example: vitcli similar cat.jpg other.jpg --point 120,80 --model vit_small_patch14_dinov2.lvd142m -o sim.png
    """
    from vitcli.commands.similar import SimilarRequest, run_similar
    from vitcli.requests import RunOptions

    request = SimilarRequest(
        query=query, targets=tuple(targets or ()), patch=patch, point=point, mutual=mutual, top_k=top_k,
        model=model_request(model, checkpoint, None, no_pretrained, device, dtype), layer=layer, size=size,
        run=RunOptions(batch_size=batch_size, workers=workers, recursive=recursive), out=out, npy=npy, force=force,
        sampling=sampling(fps, every, start, end, max_frames))
    return emit(run_similar(request, console()), json)


@app.command()
def explain(
    image: ImageArg,
    model: ModelOpt = None,
    method: Annotated[Optional[list[Method]], typer.Option("--method", help="Attribution method; repeat for a sheet "
                                                           "side by side (default: occlusion).", show_default=False,
                                                           case_sensitive=False)] = None,
    target: Annotated[Optional[str], typer.Option("--target", help="Class to explain: an index, a label name "
                                                  "(e.g. tabby), or top1 (default).", show_default=False)] = None,
    target_embedding: Annotated[Optional[str], typer.Option("--target-embedding", help="Explain the cosine "
                                                            "similarity of the model's pooled output to a vector: "
                                                            "FILE.npy (D,) or (N, D) with FILE.npy:ROW or --row "
                                                            "(e.g. `vitcli features --mode cls` output).",
                                                            show_default=False)] = None,
    row: Annotated[Optional[int], typer.Option("--row", help="Row of a 2-D --target-embedding file.",
                                               show_default=False)] = None,
    labels: Annotated[Optional[str], typer.Option("--labels", help="Label file, one name per line in class "
                                                  "order (for --target NAME).", show_default=False)] = None,
    layer: Annotated[Optional[int], typer.Option("--layer", help="Block the CAM methods read (0-based; negative "
                                                 "from the end; default: the last).", show_default=False)] = None,
    size: Annotated[Optional[str], typer.Option("--size", "-s", help="Rebuild the model for this input size "
                                                "(position embeddings resampled); N or HxW.",
                                                show_default=False)] = None,
    check: Annotated[bool, typer.Option("--check", help="Faithfulness: each map's deletion curve (patches set to "
                                        "the mean colour, most important first) and its area; lower is "
                                        "better.")] = False,
    ig_steps: Annotated[int, typer.Option("--ig-steps", help="Integrated gradients: points on the path.")] = 50,
    ln_rule: Annotated[bool, typer.Option("--ln-rule/--no-ln-rule", help="CAMs and grad-rollout: back-propagate "
                                          "through LayerNorm with its scale held constant (Ali et al., 2022); "
                                          "--no-ln-rule gives the plain gradient, as the libraries do.")] = True,
    batch_size: BatchSizeOpt = 16,
    out: PictureOpt = None,
    npy: Annotated[Optional[str], typer.Option("--npy", help="Write the raw maps (.npy, float32): (gh, gw), or "
                                               "(methods, gh, gw); and MAP.full.npy over the original image, NaN "
                                               "where the model never looked.", show_default=False)] = None,
    checkpoint: CheckpointOpt = None,
    num_classes: NumClassesOpt = None,
    no_pretrained: NoPretrainedOpt = False,
    device: DeviceOpt = "auto",
    force: ForceOpt = False,
    json: JsonOpt = False,
) -> int:
    """Show which patches made a ViT choose its target: attribution maps over the image.

    Example: vitcli explain photo.jpg --method occlusion --method gradcam --check -o explain.png
    """
    from vitcli.commands.explain import DEFAULT_METHOD, ExplainRequest, run_explain

    request = ExplainRequest(
        image=image, model=model_request(model, checkpoint, num_classes, no_pretrained, device),
        methods=tuple(value(m) for m in method) if method else (DEFAULT_METHOD,), target=target,
        target_embedding=target_embedding, row=row, labels=labels, layer=layer, size=size, check=check,
        ig_steps=ig_steps, ln_rule=ln_rule, batch_size=batch_size, out=out, npy=npy, force=force)
    return emit(run_explain(request, console()), json)


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
