"""`vitcli features`: CLS / patch / mean / all tokens, final or per layer, one or several models, to `.npy`."""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import dataclass, field, replace
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

from vitcli.core.tokens import Pair, parse_pair
from vitcli.errors import Interrupted, UsageError
from vitcli.inputs import collect_inputs
from vitcli.outputs import check_targets, ensure_room
from vitcli.progress import SILENT, Reporter
from vitcli.requests import FeatureRequest, ModelRequest, RunOptions, one_of
from vitcli.results import Outcome, Skipped
from vitcli.units import human_bytes

OUT_DTYPES = ("float32", "float16")


@dataclass(frozen=True, kw_only=True)
class FeaturesRequest:
    """Everything `features` was asked, checked; a preset is expanded here into the options it sets."""

    inputs: tuple[str, ...]
    out: str
    models: tuple[ModelRequest, ...] = (ModelRequest(),)
    mode: str | None = None  # default: patch
    layers: tuple[int, ...] | None = None
    norm: bool = False
    grid: bool = False
    stop_early: bool = False
    run: RunOptions = RunOptions()
    size: Pair | None = None  # rebuild the models for this input size
    out_dtype: str = "float32"
    force: bool = False
    resume: bool = False
    preset: str | None = None
    feat: FeatureRequest = field(init=False)  # mode, layers, norm, grid, stop_early: checked together

    def __post_init__(self):
        if self.preset:
            from vitcli.core.presets import get_preset

            p = get_preset(self.preset)
            given = [flag for flag, value in (("--model", any(m.name for m in self.models)), ("--mode", self.mode),
                                              ("--layer", self.layers), ("--size", self.size), ("--norm", self.norm),
                                              ("--squash", any(m.squash for m in self.models))) if value]
            if given:
                raise UsageError(f"--preset {p.name} sets {', '.join(given)} itself",
                                 hint="drop them, or spell the recipe out with --model, --layer, --size and --squash")
            base = self.models[0]
            object.__setattr__(self, "models", tuple(replace(base, name=m, squash=p.squash) for m in p.models))
            for key, value in (("mode", p.mode), ("layers", (p.layer,)), ("norm", p.norm), ("size", p.size)):
                object.__setattr__(self, key, value)
        object.__setattr__(self, "feat", FeatureRequest(mode=self.mode or "patch", layers=self.layers, norm=self.norm,
                                                        grid=self.grid, stop_early=self.stop_early))
        if self.size is not None:
            object.__setattr__(self, "size", parse_pair(self.size, "--size"))
        if not self.inputs:
            raise UsageError("give at least one image, directory or glob pattern",
                             hint="e.g. vitcli features photo.jpg -o feats.npy")
        if Path(self.out).suffix != ".npy":
            raise UsageError(f"-o {self.out} must end in .npy", hint="e.g. -o feats.npy (the sidecar is feats.json)")
        one_of("--out-dtype", self.out_dtype, OUT_DTYPES)
        if len(self.models) > 1 and self.models[0].checkpoint:
            raise UsageError("--checkpoint applies to one --model", hint="give fine-tuned models as local-dir: sources")


@dataclass(frozen=True)
class FeaturesResult(Outcome):
    out: str
    sidecar: str
    sidecar_data: dict
    resumed_from: int  # inputs already done by an interrupted run (0: a fresh run)

    @property
    def skipped(self) -> tuple[Skipped, ...]:
        return tuple(Skipped(**s) for s in self.sidecar_data["skipped"])

    @property
    def total(self) -> int:
        return len(self.sidecar_data["images"]) + len(self.skipped)

    def to_dict(self) -> dict:
        return {"out": self.out, "sidecar": self.sidecar, "resumed_from": self.resumed_from, **self.sidecar_data}


def _versions() -> dict:
    out = {}
    for pkg in ("vitcli", "timm", "torch", "numpy"):
        try:
            out[pkg] = version(pkg)
        except PackageNotFoundError:
            out[pkg] = None
    return out


def _axes(extractor) -> list[str]:
    req = extractor.req
    axes = ["image"] + (["layer"] if extractor.layer_axis else [])
    patch = ["grid_row", "grid_col"] if req.grid else ["patch"]
    axes += {"cls": [], "mean": [], "all": ["token"], "patch": patch}[req.mode]
    return axes + ["channel"]


def sidecar(out: Path, extractors, shape, out_dtype: str, images: list[str], skipped: list, settings: dict) -> dict:
    """What each row of the array is, exactly."""
    first = extractors[0]
    models, start = [], 0
    for e in extractors:
        info = e.model.info
        prefix = {"cls": int(e.has_cls), "registers": e.prefix - int(e.has_cls)}
        models.append({
            **info.to_dict(),
            "depth": e.depth, "embed_dim": e.dim, "grid": list(e.grid), "prefix_tokens": prefix,
            "layers": list(e.layers) if e.layers else None,
            "channels": [start, start + e.row_shape[-1]],
        })
        start += e.row_shape[-1]
    mode = first.req.mode
    return {
        "format": "vitcli-features/1",
        "file": out.name,
        "shape": list(shape),
        "dtype": out_dtype,
        "axes": _axes(first),
        "mode": mode,
        "cls_source": [e.cls_source for e in extractors] if mode == "cls" else None,
        "layers": list(first.layers) if first.layers else None,
        "layer_source": ("forward_intermediates: output of each block as the block emits it"
                         + (", then the final norm" if first.req.norm else ", without the final norm")
                         if first.layers else "forward_features: the final output, after the final norm"),
        "norm": bool(first.req.norm) if first.layers else True,
        "prefix_tokens_removed": mode in ("patch", "mean"),
        "models": models,
        "images": images,
        "skipped": skipped,
        "settings": settings,
        "versions": _versions(),
    }


def run_features(req: FeaturesRequest, ui: Reporter = SILENT) -> FeaturesResult | None:
    """Extract features of every input into `req.out` (.npy) and its sidecar (.json); None on a torchrun rank
    other than 0 (rank 0 reports for all)."""
    from vitcli.backend import distributed
    from vitcli.backend.features import Extractor, extract, fused_row_shape
    from vitcli.backend.models import load_model
    from vitcli.export import NpyWriter, partial_paths, sidecar_path

    target, feat, run, out_dtype = Path(req.out), req.feat, req.run, req.out_dtype
    check_targets([target, sidecar_path(target)], req.force)
    paths = collect_inputs(req.inputs, run.recursive)
    requests, resume, size_pair, out = list(req.models), req.resume, req.size, req.out
    progress = ui.progress()

    rank, world = distributed.world()
    if world > 1:
        if resume:
            raise UsageError("--resume is not available under torchrun", hint="rerun the whole job, or run one process")
        requests = [replace(r, device=distributed.local_device(r.device)) for r in requests]
        distributed.init(requests[0].device)
        if rank:
            ui, progress = SILENT, SILENT.progress()
    if not requests[0].pretrained:
        ui.warn("--no-pretrained: random weights, the features are meaningless")
    models = [load_model(r, img_size=size_pair) for r in requests]
    extractors = [Extractor(m, feat) for m in models]
    row_shape = fused_row_shape(extractors)
    settings = {"batch_size": run.batch_size, "dtype": requests[0].dtype, "out_dtype": out_dtype,
                "size": list(size_pair) if size_pair else None, "squash": requests[0].squash, "grid": feat.grid,
                "stop_early": feat.stop_early}
    fingerprint = {
        "models": [[m.info.name, m.info.weights] for m in models], "mode": feat.mode,
        "layers": list(extractors[0].layers or []), "norm": feat.norm, **settings,
        "inputs_sha256": hashlib.sha256(json.dumps(paths).encode()).hexdigest(), "row_shape": list(row_shape),
    }
    nbytes = len(paths) * math.prod(row_shape) * (4 if out_dtype == "float32" else 2)
    ui.note(f"Output {out}: up to ({len(paths)}, {', '.join(map(str, row_shape))}) {out_dtype} = "
             f"{human_bytes(nbytes)} for {len(paths)} image{'s' if len(paths) != 1 else ''}"
             + (f", on {world} ranks" if world > 1 else ""))
    partial, _ = partial_paths(target)
    have = partial.stat().st_size if resume and partial.exists() else 0
    ensure_room(target, max(0, nbytes - have))

    start, stop = distributed.shard(len(paths), run.batch_size, rank, world)
    part_target = target if world == 1 else target.with_name(f"{target.name}.rank{rank}")
    writer = NpyWriter(part_target, stop - start, row_shape, out_dtype, fingerprint, resume)
    resumed_from = writer.state.next_input if writer.resumed else 0
    if resume and not writer.resumed:
        ui.note(f"nothing to resume at {partial}: starting from the first image")

    def write(rows, next_input, skipped):
        writer.write(writer.mm[:0] if rows is None else rows, next_input, skipped)

    try:
        extract(extractors, paths, write, start=max(start, writer.state.next_input), stop=stop,
                batch_size=run.batch_size, workers=run.workers, progress=progress)
    except KeyboardInterrupt:
        writer.close()
        done = writer.state.next_input
        raise Interrupted(f"interrupted after {done} of {len(paths)} images; the finished batches are kept in "
                          f"{partial}", hint="run the same command with --resume to continue") from None
    except BaseException:
        writer.close()
        raise

    if world > 1:
        return _merge_ranks(target, writer, extractors, row_shape, out_dtype, paths, settings, fingerprint, rank)
    shape = (writer.state.rows, *row_shape)
    data = sidecar(target, extractors, shape, out_dtype, _good(paths, writer.state.skipped), writer.state.skipped,
                   settings)
    writer.finish(data)
    return FeaturesResult(str(target), str(sidecar_path(target)), data, resumed_from)


def _good(paths: list[str], skipped: list[dict]) -> list[str]:
    bad = {s["source"] for s in skipped}
    return [p for p in paths if p not in bad]


def _merge_ranks(target: Path, writer, extractors, row_shape, out_dtype, paths, settings, fingerprint,
                 rank: int) -> FeaturesResult | None:
    """Rank 0 concatenates every rank's part in rank order; the others wait, then return None."""
    from vitcli.backend import distributed
    from vitcli.export import NpyWriter, open_rows, sidecar_path

    writer.close()
    parts = distributed.gather((str(writer.path), str(writer.state_path), writer.state.rows, writer.state.skipped))
    result = None
    if rank == 0:
        skipped = [s for part in parts for s in part[3]]
        final = NpyWriter(target, sum(p[2] for p in parts), row_shape, out_dtype, fingerprint)
        for path, state_path, rows, _ in parts:
            for chunk in open_rows(Path(path), rows):
                final.write(chunk, len(paths), [])  # (the resume position is moot here: no --resume under torchrun)
            Path(path).unlink()
            Path(state_path).unlink()
        data = sidecar(target, extractors, (final.state.rows, *row_shape), out_dtype, _good(paths, skipped), skipped,
                       settings)
        final.finish(data)
        result = FeaturesResult(str(target), str(sidecar_path(target)), data, 0)
    distributed.barrier()
    distributed.finish()
    return result
