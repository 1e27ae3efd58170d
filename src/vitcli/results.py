"""Plain result types that cross from `backend` into `commands` and `render`. Standard library only: no torch.

`Outcome` carries the exit policy of commands that read many inputs: a run that skipped any input fails with
exit code 1 after its results are shown.
"""

from __future__ import annotations

from dataclasses import dataclass, field


def config_to_json(cfg: dict) -> dict:
    """timm's data config (input_size, interpolation, crop, mean/std) as plain JSON values."""
    return {
        "input_size": list(cfg["input_size"]),
        "interpolation": cfg.get("interpolation"),
        "crop_pct": cfg.get("crop_pct"),
        "crop_mode": cfg.get("crop_mode"),
        "mean": list(cfg["mean"]),
        "std": list(cfg["std"]),
    }


@dataclass(frozen=True)
class ModelInfo:
    """What was loaded, in plain data."""

    name: str
    source: str  # timm | hf-hub | local-dir
    arch: str
    tag: str | None
    weights: str  # where the weights came from, or "random ..."
    pretrained: bool
    num_classes: int
    data_config: dict
    device: str
    dtype: str
    num_prefix_tokens: int = 0
    patch_size: tuple[int, int] | None = None
    img_size: tuple[int, int] | None = None
    depth: int | None = None  # transformer blocks (None: not a ViT)
    num_heads: int | None = None
    embed_dim: int | None = None

    def block_index(self, k: int, option: str = "--layer") -> int:
        """Block K (0-based; negative from the end) as a 0-based index; a usage error naming the range otherwise."""
        from vitcli.errors import ModelError, UsageError

        if self.depth is None:
            raise ModelError(f"{self.name} has no transformer blocks", hint="use a ViT-family timm model")
        if not -self.depth <= k < self.depth:
            raise UsageError(f"{option} {k} is out of range for {self.name}, which has {self.depth} blocks",
                             hint=f"use 0..{self.depth - 1}, or -1..-{self.depth} from the end")
        return k % self.depth

    def to_dict(self) -> dict:
        return {"name": self.name, "source": self.source, "arch": self.arch, "tag": self.tag,
                "weights": self.weights, "pretrained": self.pretrained, "num_classes": self.num_classes,
                "device": self.device, "dtype": self.dtype, "data_config": config_to_json(self.data_config)}


@dataclass(frozen=True)
class Skipped:
    """An input that could not be used, and why; for a video, `frame` is the first frame lost and `rows` how
    many rows (frames) were lost with it (0: a video that could not be opened at all, so its rows are unknown)."""

    source: str
    reason: str
    frame: int | None = None
    rows: int = 1

    def to_dict(self) -> dict:
        d = {"source": self.source, "reason": self.reason}
        if self.frame is not None:
            d["frame"] = self.frame
        if self.rows != 1:
            d["rows"] = self.rows
        return d

    def line(self) -> str:
        where = self.source + (f" (frame {self.frame})" if self.frame is not None else "")
        lost = f" [{self.rows} frames lost]" if self.rows > 1 else ""
        return f"{where}: {self.reason}{lost}"


def collapse(skipped) -> tuple[Skipped, ...]:
    """Consecutive entries of the same source and reason (the frames a broken video loses) as one entry."""
    out: list[Skipped] = []
    for s in skipped:
        if out and out[-1].source == s.source and out[-1].reason == s.reason and s.frame is not None:
            out[-1] = Skipped(s.source, s.reason, out[-1].frame, out[-1].rows + s.rows)
        else:
            out.append(s)
    return tuple(out)


class Outcome:
    """Mixin for results of commands that read many inputs (fields `skipped` and `total`)."""

    skipped: tuple
    total: int

    @property
    def exit_code(self) -> int:
        return 1 if self.skipped else 0

    def failure(self) -> tuple[str, str] | None:
        """(message, hint) when inputs were skipped, else None."""
        n = sum(max(1, s.rows) for s in self.skipped)
        if not n:
            return None
        return (f"{n} of {self.total} input{'s' if self.total != 1 else ''} could not be read and "
                f"{'were' if n != 1 else 'was'} skipped", "the others are done")


@dataclass(frozen=True)
class Prediction:
    image: str  # the file, or FILE@frame=N for a video frame
    top: tuple[tuple[int, str, float], ...]  # (class index, label, probability), most probable first
    frame: int | None = None  # a video frame: its index and time (s)
    time: float | None = None

    def to_dict(self) -> dict:
        d = {"image": self.image, "top": [{"index": i, "label": s, "prob": p} for i, s, p in self.top]}
        if self.frame is not None:
            d.update(frame=self.frame, time=self.time)
        return d


@dataclass(frozen=True)
class BenchRow:
    model: str
    image_size: tuple[int, int]
    batch_size: int
    requested_batch_size: int
    dtype: str
    device: str
    compile: bool
    channels_last: bool
    end_to_end: bool
    img_per_s: float
    ms_per_batch: float
    ms_per_batch_p10: float
    ms_per_batch_p90: float
    flops_per_image: int
    flops_source: str
    tflops: float
    peak_tflops: float
    peak_source: str
    mfu: float
    peak_memory_bytes: int  # this row's own peak (see memory_source)
    memory_over_model_bytes: int  # that peak minus the memory in use before the row (weights, imports)
    memory_source: str
    iterations: int
    seconds: float  # timed seconds in all
    notes: tuple[str, ...] = field(default_factory=tuple)

    def to_dict(self) -> dict:
        d = dict(self.__dict__)
        d["image_size"] = list(self.image_size)
        d["notes"] = list(self.notes)
        return d
