"""`vitcli features`: CLS / patch / mean / all tokens, final or per layer, one or several models, of images,
video frames and LeRobot episodes, to one `.npy` + sidecar or to a directory of shards.

The run, in order: the inputs become items (`vitcli.inputs`); the rows this process computes are chosen (all of
them; those after an interrupted run's last batch with --resume; the shards still missing in a directory; this
rank's or task's shards); decoding starts in worker processes, before torch is imported; the models load and
the workers get their preprocessing recipe; batches go through the models and into the output.
"""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import dataclass, field, replace
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

from vitcli.core.tokens import Pair, parse_pair
from vitcli.errors import Interrupted, OutputError, UsageError
from vitcli.outputs import check_targets, ensure_room
from vitcli.progress import SILENT, Reporter
from vitcli.requests import FeatureRequest, ModelRequest, RunOptions, at_least, one_of
from vitcli.results import Outcome, Skipped, collapse
from vitcli.units import human_bytes
from vitcli.video import Sampling

OUT_DTYPES = ("float32", "float16")
ENGINES = ("local", "ray")
SHARD_BYTES = 2**30  # a directory's shards hold about this much each, by default
NO_PRETRAINED = "--no-pretrained: random weights, the features are meaningless"


@dataclass(frozen=True, kw_only=True)
class FeaturesRequest:
    """Everything `features` was asked, checked; a preset is expanded here into the options it sets."""

    inputs: tuple[str, ...] = ()
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
    sampling: Sampling = Sampling()
    from_list: str | None = None  # a file of inputs, one per line
    lerobot: str | None = None  # a LeRobot dataset's root folder
    cameras: tuple[str, ...] = ()
    episodes: str | None = None  # "0-9,12"
    fuse_cameras: bool = False
    fast_decode: bool = False
    gpu_decode: bool = False
    decode_timeout: float | None = None
    shard_size: int | None = None  # rows per shard of a directory output (default: ~1 GiB)
    task: tuple[int, int] | None = None  # (i, n): this job-array task's share of the shards
    engine: str = "local"  # local: this process (torchrun, --task); ray: a Ray cluster (backend/ray_engine.py)
    actors: int | None = None  # --engine ray: model actors (default: the cluster's GPUs, else 1)
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
        if not self.inputs and not self.lerobot and not self.from_list:
            raise UsageError("give at least one image, video, directory or glob pattern, --from-list FILE or "
                             "--lerobot ROOT", hint="e.g. vitcli features photo.jpg -o feats.npy")
        if (self.inputs or self.from_list) and self.lerobot:
            raise UsageError("--lerobot reads its own inputs", hint="drop the other inputs, or run twice")
        if (self.cameras or self.episodes or self.fuse_cameras) and not self.lerobot:
            raise UsageError("--camera, --episodes and --fuse-cameras go with --lerobot ROOT")
        if self.episodes is not None:
            from vitcli.lerobot import parse_episodes

            parse_episodes(self.episodes)
        if not self.directory and Path(self.out).suffix != ".npy":
            raise UsageError(f"-o {self.out} must end in .npy, or in / for a directory of shards",
                             hint="e.g. -o feats.npy (the sidecar is feats.json), or -o feats/")
        one_of("--out-dtype", self.out_dtype, OUT_DTYPES)
        if len(self.models) > 1 and self.models[0].checkpoint:
            raise UsageError("--checkpoint applies to one --model", hint="give fine-tuned models as local-dir: sources")
        if self.fast_decode and self.gpu_decode:
            raise UsageError("--fast-decode and --gpu-decode are two ways to decode", hint="choose one")
        if self.gpu_decode and not any(m.device.startswith(("cuda", "auto")) for m in self.models):
            raise UsageError("--gpu-decode decodes JPEGs on the model's CUDA device", hint="use --device cuda")
        if self.decode_timeout is not None and self.decode_timeout <= 0:
            raise UsageError(f"--decode-timeout {self.decode_timeout} must be a positive number of seconds")
        if self.decode_timeout is not None and self.run.workers == 0:
            raise UsageError("--decode-timeout needs decoding workers", hint="drop --workers 0")
        if self.shard_size is not None:
            at_least("--shard-size", self.shard_size, 1)
            if self.shard_size % self.run.batch_size:
                raise UsageError(f"--shard-size {self.shard_size} must be a multiple of --batch-size "
                                 f"{self.run.batch_size}", hint="so every shard is made of whole batches")
        if (self.shard_size is not None or self.task is not None) and not self.directory:
            raise UsageError("--shard-size and --task write a directory of shards", hint="give -o FOLDER/")
        if self.task is not None and not 0 <= self.task[0] < self.task[1]:
            raise UsageError(f"--task {self.task[0]}/{self.task[1]}: give I/N with 0 <= I < N")
        if self.resume and self.directory:
            raise UsageError("a directory of shards resumes by itself: rerun the same command",
                             hint="drop --resume")
        one_of("--engine", self.engine, ENGINES)
        at_least("--actors", self.actors, 1)
        if self.actors is not None and self.engine != "ray":
            raise UsageError("--actors sets the model actors of --engine ray", hint="add --engine ray")
        if self.engine == "ray":
            if not self.directory:
                raise UsageError("--engine ray writes a directory of shards", hint="give -o FOLDER/")
            if self.task is not None:
                raise UsageError("--engine ray spreads the shards over the Ray cluster itself",
                                 hint="drop --task (and run outside a SLURM job array)")
            if self.run.workers is not None or self.decode_timeout is not None:
                raise UsageError("--workers and --decode-timeout set this machine's decoding processes; with "
                                 "--engine ray, Ray's tasks decode", hint="drop them")

    @property
    def directory(self) -> bool:
        return self.out.endswith(("/", "\\")) or Path(self.out).is_dir()



@dataclass(frozen=True)
class FeaturesResult(Outcome):
    out: str
    sidecar: str  # the sidecar, or a directory's index.json
    sidecar_data: dict
    resumed_from: int  # rows already done by an interrupted run (0: a fresh run)
    rows_done: int = 0  # rows this process computed
    seconds: float = 0.0  # computing them (from the first batch to the last)
    first_batch_s: float | None = None  # the models' first batch (with --compile: the compilation)

    @property
    def skipped(self) -> tuple[Skipped, ...]:
        return tuple(Skipped(**s) for s in self.sidecar_data["skipped"])

    @property
    def total(self) -> int:
        """Rows to compute, and inputs that could not be opened at all (videos that could not be probed)."""
        return self.sidecar_data["rows_in"] + self.unopened

    @property
    def unopened(self) -> int:
        return sum(1 for s in self.sidecar_data["skipped"] if s.get("rows") == 0)

    def to_dict(self) -> dict:
        return {"out": self.out, "sidecar": self.sidecar, "resumed_from": self.resumed_from,
                "rows_done": self.rows_done, "seconds": self.seconds, "first_batch_s": self.first_batch_s,
                "rows_per_second": self.rows_done / self.seconds if self.seconds else None, **self.sidecar_data}


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
    axes = ["row"] + (["layer"] if extractor.layer_axis else [])
    patch = ["grid_row", "grid_col"] if req.grid else ["patch"]
    axes += {"cls": [], "mean": [], "all": ["token"], "patch": patch}[req.mode]
    return axes + ["channel"]


def describe(extractors, row_shape, out_dtype: str, settings: dict, cameras: list[str] | None) -> dict:
    """What every row of the output is, the same for a single file and a directory of shards."""
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
        "row_shape": list(row_shape),
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
        "fused_cameras": ({"cameras": cameras, "channels_per_camera": start,
                           "order": "camera-major: every model's channels for camera 0, then camera 1, ..."}
                          if cameras else None),
        "settings": settings,
        "versions": _versions(),
    }


def _rows(items, group: int, positions) -> list[dict]:
    """Sidecar rows: where each row's picture(s) came from."""
    out = []
    for p in positions:
        its = items[p * group:(p + 1) * group]
        if group == 1:
            out.append(its[0].row())
        else:
            first = its[0]
            out.append({"source": [i.source for i in its], "frame": [i.frame for i in its],
                        "time": [i.time for i in its], "camera": [i.camera for i in its], "episode": first.episode,
                        "index": first.index, "timestamp": first.timestamp})
    return out


def _sidecar(name: str, common: dict, items, group: int, good: list[int], skipped: list[dict], rows_in: int,
             images_only: bool, input_skips=()) -> dict:
    """A sidecar: what every row of the array is (`rows`, parallel to its first axis; `images` too for a run of
    images only) and what was skipped (`skipped`: inputs that could not be opened, then lost rows; `rows_in`:
    the rows that were to be computed)."""
    lost = collapse(Skipped(**{k: v for k, v in d.items() if k != "position"}) for d in skipped)
    data = {"format": "vitcli-features/2", "file": name, "shape": [len(good), *common["row_shape"]],
            **{k: v for k, v in common.items() if k != "row_shape"}, "rows_in": rows_in,
            "rows": _rows(items, group, good),
            "skipped": [s.to_dict() for s in (*input_skips, *lost)]}
    if images_only:
        data["images"] = [items[p].label() for p in good]
    return data


def _good(start: int, stop: int, skipped: list[dict]) -> list[int]:
    bad = {d["position"] for d in skipped}
    return [p for p in range(start, stop) if p not in bad]


@dataclass
class _Run:
    """What run_features works out before the models load."""

    items: tuple
    videos: dict
    cameras: list[str] | None  # LeRobot cameras fused along channels (None: a picture per row)
    group: int  # pictures per row
    rows: int
    rank: int
    world: int
    ranges: list[tuple[int, int]] | None  # rows this process computes (None: known once the models are)
    resume_from: int = 0
    images_only: bool = True
    input_skips: tuple = ()  # inputs that could not be opened at all (a video that cannot be probed)


def run_features(req: FeaturesRequest, ui: Reporter = SILENT) -> FeaturesResult | None:
    """Extract features of every row into `req.out`; None on a torchrun rank other than 0 (rank 0 reports)."""
    from vitcli import cluster
    from vitcli.export import ShardPlan, ShardSet, resume_point, sidecar_path
    from vitcli.inputs import collect, lerobot_items

    target = Path(req.out)
    rank, world = cluster.world()
    if req.resume and world > 1:  # the ranks' parts are never resumed: a resumed rank 0 would clip its rows
        raise UsageError("--resume is not available under torchrun",
                         hint="rerun the whole job, or give a folder (-o feats/): it resumes by itself")
    if req.force and req.directory and (world > 1 or (req.task is not None and req.task[1] > 1)):
        raise UsageError("--force under torchrun or --task would let each process delete the others' shards",
                         hint="empty the folder once before the job starts, and run it without --force")
    if req.directory:
        if target.exists() and not target.is_dir():
            raise OutputError(f"{target}: exists and is not a directory", hint="choose another -o FOLDER/")
        if req.force and target.is_dir():
            _clear_shards(target)
    else:
        check_targets([target, sidecar_path(target)], req.force)

    cameras = None
    if req.lerobot:
        from vitcli.lerobot import parse_episodes

        collected = lerobot_items(req.lerobot, list(req.cameras) or None,
                                  parse_episodes(req.episodes) if req.episodes else None)
        if req.fuse_cameras:
            cameras = list(dict.fromkeys(i.camera for i in collected.items))
    else:
        from vitcli.inputs import from_list

        inputs = (*req.inputs, *(from_list(req.from_list) if req.from_list else ()))
        collected = collect(inputs, req.run.recursive, req.sampling.video())
    group = len(cameras) if cameras else 1
    if req.engine == "ray" and world > 1:
        raise UsageError("--engine ray spreads the shards over the Ray cluster; torchrun would start it once per rank",
                         hint="run vitcli once, without torchrun")
    if req.task is not None:
        if world > 1:
            raise UsageError("--task splits the work between separate jobs; under torchrun the ranks do that")
        rank, world = req.task
    run = _Run(collected.items, collected.videos, cameras, group, len(collected.items) // group, rank, world, None,
               images_only=not collected.videos, input_skips=collected.skipped)
    if req.engine == "ray":
        from vitcli.backend.ray_engine import run_ray

        return run_ray(req, run, ui)
    if req.directory:
        old = ShardSet.read_index(target) if target.is_dir() else None
        shard_rows = req.shard_size or (old["shard_rows"] if old else None)
        if shard_rows:  # else the shard size follows from the row size, known once the models are
            run.ranges = _shard_ranges(target, ShardPlan(run.rows, shard_rows), rank, world)
    else:
        run.resume_from = resume_point(target) if req.resume else 0
        start, stop = cluster.shard(run.rows, req.run.batch_size, rank, world) if world > 1 else (0, run.rows)
        run.ranges = [(max(start, run.resume_from), stop)]
    pool = _decoding(req, run) if run.ranges is not None else None  # decoding while torch imports, models load
    try:
        return _compute(req, ui, run, pool)
    finally:
        if pool is not None:
            pool.close()


def _decoding(req: FeaturesRequest, run: _Run):
    from vitcli import cluster, decode

    return decode.start(run.items, run.videos, run.ranges, req.run.batch_size, req.run.workers,
                        on_cpu=cluster.probably_cpu(req.models[0].device), timeout=req.decode_timeout,
                        eager=not (req.fast_decode or req.gpu_decode), group=run.group)


def shards_note(target: Path, plan, row_bytes: int, todo: int, where: str) -> str:
    """What a folder run writes: its shards, their size, and how many of them are computed `where`."""
    return (f"Output {target}/: {plan.count} shard{'s' if plan.count != 1 else ''} of up to {plan.shard_rows:,} rows "
            f"({human_bytes(plan.shard_rows * row_bytes)} each); {todo} to compute {where}")


def _shard_ranges(folder: Path, plan, rank: int, world: int) -> list[tuple[int, int]]:
    """The row spans of the shards this process computes: the missing ones, shard k to process k mod world."""
    from vitcli.export import ShardSet

    shards = ShardSet(folder, plan, {})
    return [plan.span(k) for k in range(plan.count)
            if k % world == rank and not (folder.is_dir() and shards.complete(k))]


def _clear_shards(folder: Path) -> None:
    """--force on a directory of shards: remove its shards, partial shards, index and failed list only."""
    for p in folder.iterdir():
        if p.is_file() and (p.name in ("index.json", "failed.txt") or p.name.startswith(("shard-", ".shard-"))):
            p.unlink()


def _compute(req: FeaturesRequest, ui: Reporter, run: _Run, pool) -> FeaturesResult | None:
    result = _computed(req, ui, run, pool)
    if result is not None and result.rows_done and result.seconds:  # a measurement: stderr, not the output
        compiled = (f"; torch.compile: the first batch took {result.first_batch_s:.1f} s"
                    if req.run.compile and result.first_batch_s is not None else "")
        ui.note(f"{result.rows_done:,} rows in {result.seconds:.1f} s = {result.rows_done / result.seconds:,.1f} "
                f"rows/s (decoding: {result.sidecar_data['settings']['decode']}){compiled}")
    return result


@dataclass
class Setup:
    """The loaded models and what follows from them: the same on every engine and every process."""

    extractors: list
    row_shape: tuple[int, ...]
    recipe: object  # vitcli.decode.Recipe
    settings: dict
    fingerprint: dict
    common: dict  # what every sidecar says of the models and settings (describe)
    timing: dict = field(default_factory=dict)  # first_batch_s: the models' first batch (compilation)

    @property
    def row_bytes(self) -> int:
        return math.prod(self.row_shape) * (4 if self.settings["out_dtype"] == "float32" else 2)


def setup(req: FeaturesRequest, run: _Run, requests: list[ModelRequest]) -> Setup:
    """Load the models (each ModelRequest on its device) and derive the row shape, recipe, settings, the
    fingerprint that pins a resumable output to its settings, and the sidecars' common part."""
    from vitcli.backend.features import Extractor, fused_row_shape
    from vitcli.backend.models import load_model
    from vitcli.backend.pipeline import recipe_for

    feat = req.feat
    models = [load_model(r, img_size=req.size) for r in requests]
    extractors = [Extractor(m, feat) for m in models]
    if req.run.compile:
        for e in extractors:
            e.compile()
    row_shape = fused_row_shape(extractors)
    if run.group > 1:
        row_shape = (*row_shape[:-1], row_shape[-1] * run.group)
    recipe = recipe_for([m.info.data_config for m in models], fast=req.fast_decode, gpu=req.gpu_decode)
    settings = {"batch_size": req.run.batch_size, "dtype": requests[0].dtype, "out_dtype": req.out_dtype,
                "size": list(req.size) if req.size else None, "squash": requests[0].squash, "grid": feat.grid,
                "stop_early": feat.stop_early,
                "decode": "gpu" if recipe.jpeg_bytes else "fast" if recipe.fast else "exact",
                "sampling": {k: v for k, v in req.sampling.__dict__.items() if v is not None} or None,
                "lerobot": ({"root": req.lerobot, "cameras": sorted({i.camera for i in run.items}),
                             "episodes": req.episodes, "fuse_cameras": req.fuse_cameras} if req.lerobot else None)}
    fingerprint = {
        "models": [[m.info.name, m.info.weights] for m in models], "mode": feat.mode,
        "layers": list(extractors[0].layers or []), "norm": feat.norm, **settings,
        "inputs_sha256": hashlib.sha256(json.dumps([(i.source, i.frame) for i in run.items]).encode()).hexdigest(),
        "row_shape": list(row_shape),
    }
    return Setup(extractors, row_shape, recipe, settings, fingerprint,
                 describe(extractors, row_shape, req.out_dtype, settings, run.cameras))


def shard_set(req: FeaturesRequest, run: _Run, s: Setup):
    """The output folder's ShardSet: the shard size from --shard-size, the folder's index, or ~1 GiB of rows."""
    from vitcli.export import ShardPlan, ShardSet

    target, batch = Path(req.out), req.run.batch_size
    shard_rows = req.shard_size or (ShardSet.read_index(target) or {}).get("shard_rows") or max(
        batch, SHARD_BYTES // max(1, s.row_bytes) // batch * batch)
    plan = ShardPlan(run.rows, shard_rows)
    target.mkdir(parents=True, exist_ok=True)
    shards = ShardSet(target, plan, {"format": "vitcli-features-shards/1", "fingerprint": s.fingerprint,
                                     "rows": run.rows, "shard_rows": shard_rows, "shard_count": plan.count,
                                     "images_only": run.images_only,
                                     "unopened": [x.to_dict() for x in run.input_skips], **s.common})
    shards.check_compatible()
    return shards


def _computed(req: FeaturesRequest, ui: Reporter, run: _Run, pool) -> FeaturesResult | None:
    import time

    from vitcli import cluster
    from vitcli.backend import distributed
    from vitcli.export import partial_paths

    target, out_dtype = Path(req.out), req.out_dtype
    requests = list(req.models)
    torchrun = cluster.under_torchrun()
    if torchrun:
        requests = [replace(r, device=distributed.local_device(r.device)) for r in requests]
        distributed.init(requests[0].device)
    if run.rank and torchrun:  # rank 0 speaks for all (a job-array task speaks for itself)
        ui = SILENT
    if not requests[0].pretrained:
        ui.warn(NO_PRETRAINED)
    st = setup(req, run, requests)
    extractors, row_shape, recipe, row_bytes = st.extractors, st.row_shape, st.recipe, st.row_bytes
    if req.gpu_decode and not recipe.jpeg_bytes:
        from vitcli.backend.pipeline import gpu_refusal

        ui.warn(f"--gpu-decode: {gpu_refusal(recipe.preps)}; decoding on the CPU instead")

    shards = None
    if req.directory:
        shards = shard_set(req, run, st)
        plan = shards.plan
        if run.ranges is None:
            run.ranges = _shard_ranges(target, plan, run.rank, run.world)
        ui.note(shards_note(target, plan, row_bytes, len(run.ranges), "here")
                + (f" (process {run.rank} of {run.world})" if run.world > 1 else ""))
        ensure_room(target / "index.json", sum(b - a for a, b in run.ranges) * row_bytes)
    else:
        nbytes = run.rows * row_bytes
        ui.note(f"Output {target}: up to ({run.rows}, {', '.join(map(str, row_shape))}) {out_dtype} = "
                f"{human_bytes(nbytes)} for {run.rows} row{'s' if run.rows != 1 else ''}"
                + (f", on {run.world} ranks" if run.world > 1 else ""))
        partial, _ = partial_paths(target)
        have = partial.stat().st_size if req.resume and partial.exists() else 0
        ensure_room(target, max(0, nbytes - have))
    owned = pool is None
    if owned:
        pool = _decoding(req, run)
    pool.set_recipe(recipe)
    progress = ui.progress()
    t0 = time.monotonic()
    try:
        if shards is not None:
            write_shards(shards, st, pool, run, progress)
            result = None
            if torchrun:
                distributed.barrier()
            if run.rank == 0 or not torchrun:
                result = replace(close_folder(shards, run, sum(b - a for a, b in run.ranges), time.monotonic() - t0),
                                 first_batch_s=st.timing.get("first_batch_s"))
            if torchrun:
                distributed.finish()
            return result
        return _write_file(req, ui, target, extractors, pool, recipe, run, row_shape, out_dtype, st.common,
                           st.fingerprint, progress, t0, st.timing)
    finally:
        if owned:
            pool.close()


def write_shards(shards, st: Setup, source, run: _Run, progress=None) -> None:
    """Every shard of `run.ranges` (whole shards), decoded by `source` (anything with `run()` yielding
    (position, Decoded) for exactly those rows' items, in order: a DecodePool, or pictures decoded elsewhere),
    each written under a temporary name and renamed when complete."""
    from vitcli.backend.features import extract

    row_shape, out_dtype = st.row_shape, st.settings["out_dtype"]
    state: dict = {"k": None, "writer": None}

    def write(rows, end, skipped) -> None:
        k = (end - 1) // shards.plan.shard_rows  # a batch never straddles two shards
        if state["k"] != k:
            state["k"], state["writer"] = k, shards.writer(k, row_shape, out_dtype)
        writer = state["writer"]
        writer.write(rows, end, skipped)
        a, b = shards.plan.span(k)
        if end == b:
            side = _sidecar(writer.target.name, _common(shards), run.items, run.group,
                            _good(a, b, writer.state.skipped), writer.state.skipped, b - a, run.images_only)
            side["shard"] = {"index": k, "rows_in": [a, b],
                             "skipped_rows": [d["position"] for d in writer.state.skipped]}
            writer.finish(side)
            state["k"] = state["writer"] = None

    try:
        extract(st.extractors, source, st.recipe, run.items, write, batch_size=st.settings["batch_size"],
                progress=progress, group=run.group, ranges=run.ranges, timing=st.timing)
    except BaseException:
        if state["writer"] is not None:
            state["writer"].close()
        raise


SHARD_ONLY = ("format", "fingerprint", "rows", "shard_rows", "shard_count", "images_only", "unopened", "shards",
              "complete")


def _common(shards) -> dict:
    """What every shard's sidecar shares with a single-file sidecar (the models, settings, row shape...)."""
    return {k: v for k, v in shards.index.items() if k not in SHARD_ONLY}


def close_folder(shards, run: _Run, done: int, seconds: float) -> FeaturesResult:
    """A folder run's last steps, wherever its shards were computed (here, under torchrun, on Ray): index.json
    as the shard files show it now; `failed.txt`, every input of the complete shards that could not be read,
    one per line as `--from-list` takes them back for a retry (path, VIDEO@frame=N, ARCHIVE.tar::MEMBER; none:
    no file); and the folder as a whole, its shards' rows and skips as one sidecar would say them."""
    from vitcli.export import INDEX, write_lines_atomic

    sides = shards.sidecars()  # each complete shard's sidecar, read once
    index = shards.write_index(sides)
    folder = shards.folder
    skipped, written = [s.to_dict() for s in run.input_skips], 0
    failed = [s["source"] for s in index.get("unopened", [])]
    for side in sides.values():  # in shard order
        skipped += side["skipped"]
        written += side["shape"][0]
        for row in side["shard"]["skipped_rows"]:
            failed += [it.label() for it in run.items[row * run.group:(row + 1) * run.group]]
    path = folder / "failed.txt"
    if failed:
        write_lines_atomic(path, list(dict.fromkeys(failed)))
    else:
        path.unlink(missing_ok=True)
    data = {**{k: v for k, v in index.items() if k != "fingerprint"}, "rows_written": written,
            "skipped": skipped, "rows_in": index["rows"]}
    return FeaturesResult(str(folder), str(folder / INDEX), data, 0, done, seconds)


def _write_file(req, ui, target, extractors, pool, recipe, run: _Run, row_shape, out_dtype, common, fingerprint,
                progress, t0, timing: dict) -> FeaturesResult | None:
    import time

    from vitcli.backend.features import extract
    from vitcli.export import NpyWriter, sidecar_path

    (start, stop), = run.ranges
    if run.world > 1:  # each rank its part; rank 0 concatenates them
        writer = NpyWriter(target.with_name(f"{target.name}.rank{run.rank}"), stop - start, row_shape, out_dtype,
                           fingerprint)
    else:
        writer = NpyWriter(target, run.rows, row_shape, out_dtype, fingerprint, req.resume)
        if req.resume and not writer.resumed:
            ui.note(f"nothing to resume at {writer.path}: starting from the first row")
    try:
        extract(extractors, pool, recipe, run.items, writer.write, batch_size=req.run.batch_size, progress=progress,
                group=run.group, ranges=run.ranges, timing=timing)
    except KeyboardInterrupt:
        writer.close()
        if run.world > 1:  # a rank's part cannot be resumed
            done = max(0, writer.state.next_input - start)
            raise Interrupted(f"interrupted: rank {run.rank} had done {done} of its {stop - start} rows",
                              hint="rerun the whole torchrun command, which starts over; a folder output "
                                   "(-o feats/) keeps its finished shards") from None
        raise Interrupted(f"interrupted after {writer.state.next_input} of {run.rows} rows; the finished batches "
                          f"are kept in {writer.path}", hint="run the same command with --resume to continue") from None
    except BaseException:
        writer.close()
        raise
    seconds = time.monotonic() - t0
    done = stop - start
    if run.world > 1:
        return _merge_ranks(target, writer, common, out_dtype, run, fingerprint, done, seconds)
    data = _sidecar(target.name, common, run.items, run.group, _good(0, run.rows, writer.state.skipped),
                    writer.state.skipped, run.rows, run.images_only, run.input_skips)
    writer.finish(data)
    return FeaturesResult(str(target), str(sidecar_path(target)), data, run.resume_from, done, seconds,
                          timing.get("first_batch_s"))


def _merge_ranks(target: Path, writer, common, out_dtype, run: _Run, fingerprint, done, seconds
                 ) -> FeaturesResult | None:
    """A single-file output under torchrun: rank 0 concatenates every rank's part in rank order; the others wait,
    then return None. (A directory output needs no such step: each rank writes its own shards.)"""
    from vitcli.backend import distributed
    from vitcli.export import NpyWriter, append_rows, sidecar_path

    writer.close()
    parts = distributed.gather((str(writer.path), str(writer.state_path), writer.state.rows, writer.state.skipped))
    result = None
    if run.rank == 0:
        skipped = [s for part in parts for s in part[3]]
        final = NpyWriter(target, run.rows, tuple(common["row_shape"]), out_dtype, fingerprint)
        for path, state_path, rows, _ in parts:
            append_rows(final, Path(path), rows, run.rows)
            Path(path).unlink()
            Path(state_path).unlink()
        data = _sidecar(target.name, common, run.items, run.group, _good(0, run.rows, skipped), skipped, run.rows,
                        run.images_only, run.input_skips)
        final.finish(data)
        result = FeaturesResult(str(target), str(sidecar_path(target)), data, 0, done, seconds)
    distributed.barrier()
    distributed.finish()
    return result
