"""Option aliases shared by commands (Typer `Annotated` style): one definition, one help text."""

from __future__ import annotations

from typing import Annotated, Optional

import typer

from vitcli.choices import Dtype

JsonOpt = Annotated[bool, typer.Option("--json", help="Print one JSON document with raw numbers on stdout.")]
SizesOpt = Annotated[
    Optional[list[str]],
    typer.Option("--size", "-s", help="Image size in pixels: N or HxW. Repeat for several.", show_default=False),
]
PatchesOpt = Annotated[
    Optional[list[str]],
    typer.Option("--patch", "-p", help="Patch size in pixels: N or HxW. Repeat for several.", show_default=False),
]
ModelsOpt = Annotated[
    Optional[list[str]],
    typer.Option("--model", "-m", help="timm model name (arch or arch.tag), hf-hub:ORG/NAME or local-dir:PATH. "
                                      "Repeat for several.", show_default=False),
]
ModelOpt = Annotated[
    Optional[str],
    typer.Option("--model", "-m", help="timm model name (arch or arch.tag), hf-hub:ORG/NAME or local-dir:PATH.",
                 show_default=False),
]

# ---- model and run options, shared by the commands that load a model -----------------------------------------
InputsArg = Annotated[list[str], typer.Argument(help="Image and video files (every frame, or --fps/--every...), "
                                                     "directories (their images and videos, sorted) or glob "
                                                     "patterns.", show_default=False)]
ImageArg = Annotated[str, typer.Argument(help="Image file, or a video frame: VIDEO@t=SECONDS or VIDEO@frame=N.",
                                         show_default=False)]
CheckpointOpt = Annotated[Optional[str], typer.Option(
    "--checkpoint", help="Weights for the --model architecture: .safetensors, or .pth/.bin (loaded with "
                         "weights_only=True; nested state_dict/model keys handled).", show_default=False)]
NumClassesOpt = Annotated[Optional[int], typer.Option(
    "--num-classes", help="Classifier size (default: the model's, or the checkpoint's head).", show_default=False)]
NoPretrainedOpt = Annotated[bool, typer.Option(
    "--no-pretrained", help="Random weights: try the pipeline offline (results are meaningless).")]
DeviceOpt = Annotated[str, typer.Option("--device", help="auto, cpu, cuda, cuda:N or mps.")]
DtypeOpt = Annotated[Dtype, typer.Option("--dtype", help="float32, or bfloat16/float16 autocast.",
                                         case_sensitive=False)]
BatchSizeOpt = Annotated[int, typer.Option("--batch-size", "-b", help="Images per forward pass.")]
WorkersOpt = Annotated[Optional[int], typer.Option(
    "--workers", help="Image-decoding worker processes, at the lowest priority on CPU (default: none for one "
                      "batch, else up to 8; 0: in the main process).", show_default=False)]
RecursiveOpt = Annotated[bool, typer.Option("--recursive", "-r", help="Search directories recursively.")]
ForceOpt = Annotated[bool, typer.Option("--force", help="Overwrite outputs that already exist.")]
PictureOpt = Annotated[Optional[str], typer.Option("--out", "-o", help="Write the picture (PNG).", show_default=False)]
NpyOpt = Annotated[Optional[str], typer.Option("--npy", help="Write the numbers (.npy).", show_default=False)]
CompileOpt = Annotated[bool, typer.Option("--compile", help="Run the model through torch.compile (compiled on the "
                                          "first batch of each shape; the first batch's time is reported).")]
