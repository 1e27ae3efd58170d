"""What the user asked for, as frozen dataclasses passed by keyword and checked when built: every flag is
validated here, torch-free, before any model loads. Standard library only."""

from __future__ import annotations

import re
from dataclasses import dataclass

from vitcli.errors import UsageError

MODES = ("cls", "patch", "mean", "all")
DTYPES = ("float32", "bfloat16", "float16")
RANDOM_PICTURES = "--no-pretrained: random weights, the pictures show the pipeline, not a trained model"
_DEVICE = re.compile(r"^(auto|cpu|mps|meta|cuda(:\d+)?)$")


def one_of(option: str, value: str, valid) -> str:
    if value not in valid:
        raise UsageError(f"{option} {value!r} is not one of {', '.join(valid)}")
    return value


def at_least(option: str, value: int | float | None, low: int | float) -> None:
    if value is not None and value < low:
        raise UsageError(f"{option} {value} must be at least {low}")


@dataclass(frozen=True, kw_only=True)
class ModelRequest:
    """A model as the user named it: timm name, hf-hub:, local-dir:, or an architecture plus a checkpoint."""

    name: str | None = None  # None: the default model
    checkpoint: str | None = None
    num_classes: int | None = None
    pretrained: bool = True
    device: str = "auto"
    dtype: str = "float32"
    squash: bool = False  # resize to the input size without cropping (OpenVLA's resize-naive)

    def __post_init__(self):
        at_least("--num-classes", self.num_classes, 0)
        if self.checkpoint and not self.pretrained:
            raise UsageError("--checkpoint and --no-pretrained contradict each other", hint="drop one of them")
        if not _DEVICE.match(self.device):
            raise UsageError(f"--device {self.device!r} is not one of auto, cpu, cuda, cuda:N, mps")
        one_of("--dtype", self.dtype, DTYPES)


def needs_forward(model: ModelRequest, what: str) -> None:
    """Refuse `--device meta` (shapes only, no values) for a command whose `what` needs a real forward pass."""
    if model.device == "meta":
        raise UsageError(f"--device meta builds shapes only, and {what} needs a real forward pass",
                         hint="use --device cpu, cuda or auto")


@dataclass(frozen=True, kw_only=True)
class RunOptions:
    """How a many-input run is batched and decoded."""

    batch_size: int = 32
    workers: int | None = None  # None: automatic
    recursive: bool = False
    compile: bool = False  # torch.compile the model (compiled once per batch shape)

    def __post_init__(self):
        at_least("--batch-size", self.batch_size, 1)
        at_least("--workers", self.workers, 0)


@dataclass(frozen=True, kw_only=True)
class FeatureRequest:
    """Which tokens of which layer (checked here; the layer range against the model once it is known)."""

    mode: str = "patch"
    layers: tuple[int, ...] | None = None  # as given (0-based, negative from the end); None: final output
    norm: bool = False  # apply the final norm to --layer outputs
    grid: bool = False  # patch mode: (gh, gw, D) instead of (N, D)
    stop_early: bool = False  # skip the blocks after the last requested layer

    def __post_init__(self):
        one_of("--mode", self.mode, MODES)
        if self.grid and self.mode != "patch":
            raise UsageError("--grid goes with --mode patch")
        if self.stop_early and self.layers is None:
            raise UsageError("--stop-early needs --layer")
        if self.norm and self.layers is None:
            raise UsageError("--norm applies to --layer outputs", hint="the final output is always normed")
