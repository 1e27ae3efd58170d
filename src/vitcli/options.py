"""Option aliases shared by commands (Typer `Annotated` style): one definition, one help text."""

from __future__ import annotations

from typing import Annotated, Optional

import typer

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
