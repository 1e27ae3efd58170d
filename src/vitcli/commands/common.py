"""What classify and features share: how a model is asked for, and how a run is batched. Stdlib only."""

from __future__ import annotations

from dataclasses import dataclass

from vitcli.errors import UsageError


def check_num_classes(num_classes: int | None) -> None:
    if num_classes is not None and num_classes < 0:
        raise UsageError(f"--num-classes {num_classes} must be 0 or more")


@dataclass(frozen=True)
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
        check_num_classes(self.num_classes)
        if self.checkpoint and not self.pretrained:
            raise UsageError("--checkpoint and --no-pretrained contradict each other", hint="drop one of them")


@dataclass(frozen=True)
class RunOptions:
    batch_size: int = 32
    workers: int | None = None  # None: automatic
    recursive: bool = False

    def __post_init__(self):
        if self.batch_size < 1:
            raise UsageError(f"--batch-size {self.batch_size} must be at least 1")
        if self.workers is not None and self.workers < 0:
            raise UsageError(f"--workers {self.workers} must be 0 or more")


def load(request: ModelRequest, **kwargs):
    """Load the requested model (imports torch)."""
    from vitcli.backend.models import load_model

    return load_model(request.name, request.pretrained, request.checkpoint, request.num_classes,
                      device=request.device, dtype=request.dtype, squash=request.squash, **kwargs)
