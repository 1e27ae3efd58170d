"""`vitcli features INPUTS -o FOLDER/ --engine ray`: the same shards, computed on a Ray cluster with Ray Data.

The pattern is Ray Data's offline batch inference (docs.ray.io, "End-to-end: Offline Batch Inference"): a dataset,
`map_batches` with a function for the CPU work, `map_batches` with a callable class on a fixed-size actor pool
(`ActorPoolStrategy`, `num_gpus=1` per actor on a GPU cluster) for the model. Here a row is a whole shard, because
a shard is the unit every engine writes identically:

    driver (this process)  loads the models once on the CPU, only to plan: the shard size, the missing shards,
                           the fingerprint (the same `setup` and `shard_set` as a local run)
    from_items             one row per missing shard: its index and its rows' items (pickled)
    map_batches(decode_shard)             CPU tasks anywhere on the cluster decode the shard's pictures with
                                          `vitcli.decode.decode_piece` and the models' recipe, exactly as the
                                          local decoding workers do -> one row: the shard's (position, Decoded)
    map_batches(ShardWriter, ActorPoolStrategy(size=actors), num_gpus=1 or 0)
                                          each actor loads the models once on its own device; per shard it runs
                                          the local engine's `write_shards` (temporary name, renamed when
                                          complete) -> one row: the shard, its rows, the actor's index
                                          header (its models' devices), or the VitcliError it met
    driver                 reads the results as they come (progress), writes index.json and failed.txt

Failures: Ray Data retries a task lost to a system failure (a dead worker or node) and restarts a dead actor,
whose shard is then redone from scratch (a half-written shard lives under its temporary name); an error in vitcli's
own code (a model that cannot load, a full disk) stops the run with that error. Pictures that cannot be decoded
are skipped rows, as in a local run.

Requirements: the output folder and the inputs at the same path on every node (a shared file system), and vitcli
with the same versions of its dependencies installed on every node.
"""

from __future__ import annotations

import json
import logging
import os
import pickle
import time
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path

import numpy as np

from vitcli.errors import MissingExtra, UsageError, VitcliError, debug_enabled

MAX_SHARD_PICTURES = 2**31  # bytes of decoded pictures a shard may hold (one object in Ray's object store)
DECODER_MEMORY = 2**28  # bytes a decoding task's worker holds besides the pictures (Ray measured ~114 MiB)

last_run: dict = {}  # what the last run did, for tests to observe: decoder and writer process ids, actors, GPUs


def _ray():
    try:
        import ray
        import ray.data  # noqa: F401
    except ImportError as e:
        raise MissingExtra("--engine ray", "ray", "Ray Data (ray[data])") from e
    return ray


def run_ray(req, run, ui):
    """Compute the missing shards of `req.out` (a FOLDER/) on a Ray cluster; the same FeaturesResult as a local
    run. `run`: the commands.features._Run (items, videos, cameras...) of this request."""
    from vitcli.commands.features import NO_PRETRAINED, close_folder, setup, shard_set, shards_note
    from vitcli.outputs import ensure_room

    ray = _ray()
    target = Path(req.out)
    if not req.models[0].pretrained:
        ui.warn(NO_PRETRAINED)
    st = setup(req, run, [replace(m, device="cpu") for m in req.models])  # to plan only: rows, shapes, shards
    shards = shard_set(req, run, st)
    plan = shards.plan
    missing = shards.missing()
    sizes = [plan.span(k)[1] - plan.span(k)[0] for k in missing]
    per_row = _picture_bytes(st, run.group)
    _check_shard_pictures(req, max(sizes, default=0), per_row)
    todo = sum(sizes)
    ui.note(shards_note(target, plan, st.row_bytes, len(missing), "on Ray"))
    ensure_room(target / "index.json", todo * st.row_bytes)
    header, seconds = None, 0.0
    if missing:
        address = os.environ.get("RAY_ADDRESS")
        if not ray.is_initialized():
            ui.note(f"Ray: joining the cluster at RAY_ADDRESS={address}" if address else
                    "Ray: joining the cluster `ray start` runs on this machine, or else starting a local one")
        with _session(ray):
            header, seconds = _compute(ray, req, run, st.recipe, plan, missing, per_row, ui)
    if header is None:  # nothing computed: keep the folder's own header (its models' devices), else the plan's
        old = shards.read_index(target)
        header = {k: v for k, v in old.items() if k not in ("shards", "complete")} if old else shards.index
    result = close_folder(type(shards)(target, plan, header), run, todo, seconds)
    if todo and seconds:
        ui.note(f"{todo:,} rows in {seconds:.1f} s = {todo / seconds:,.1f} rows/s (on Ray, decoding: "
                f"{st.settings['decode']})")
    return result


def _picture_bytes(st, group: int) -> int:
    """Bytes of one row's decoded pictures: per model, uint8 (H, W, 3) from an exact plan, else float32 (3, H, W)."""
    total = 0
    for prep, e in zip(st.recipe.preps, st.extractors):
        c, h, w = e.model.info.data_config["input_size"]
        total += c * h * w * (1 if prep.plan is not None else 4)
    return total * group


def _check_shard_pictures(req, shard_rows: int, per_row: int) -> None:
    """A shard's decoded pictures travel as one object from its decoding task to its actor: refuse shards whose
    pictures would not fit in memory comfortably (cls or mean features of the default ~1 GiB shards: 100k+ rows)."""
    from vitcli.units import human_bytes

    if shard_rows * per_row <= MAX_SHARD_PICTURES:
        return
    batch = req.run.batch_size
    fit = max(batch, MAX_SHARD_PICTURES // 2 // per_row // batch * batch)
    raise UsageError(f"--engine ray decodes a shard at a time: {shard_rows:,} rows of {human_bytes(per_row)} of "
                     f"pictures each would be {human_bytes(shard_rows * per_row)} in memory",
                     hint=f"give --shard-size {fit} (or less) to this and every run of -o {req.out}")


def _compute(ray, req, run, recipe, plan, missing: list[int], per_row: int, ui) -> tuple[dict, float]:
    """Run the dataset; return the index header the actors' own models give (their devices), and the seconds
    from its start (the actors' start-up included) to the last shard."""
    import ray.data as rd

    resources = ray.cluster_resources()
    gpus, cpus = int(resources.get("GPU", 0)), int(resources.get("CPU", 0))
    use_gpu, device = _placement(req.models[0].device, gpus)
    room = gpus if use_gpu else cpus - 1  # a GPU each; or a CPU each, and one CPU left to decode at least
    if room < 1:
        raise UsageError(f"--engine ray: the Ray cluster has {cpus} CPU; the model's actor takes one, decoding "
                         "needs another", hint="give the cluster 2 CPUs or more")
    if req.actors and req.actors > room:  # more would wait for resources that are not there
        ui.warn(f"--actors {req.actors}: the Ray cluster has room for {room} (a {'GPU' if use_gpu else 'CPU'} each"
                + ("" if use_gpu else ", one CPU left to decode") + f"); starting {room}")
    actors = min(req.actors or (gpus if use_gpu else 1), room, len(missing))
    spans = {k: plan.span(k) for k in missing}
    work = []
    for k, (a, b) in spans.items():
        items = run.items[a * run.group:b * run.group]
        videos = {i.source: run.videos[i.source] for i in items if i.source in run.videos}
        work.append({"shard": k, "work": pickle.dumps((a * run.group, items, videos), protocol=5)})
    ds = rd.from_items(work, override_num_blocks=len(work))  # a block per shard: a decoding task each
    # decoding: CPU tasks, which hold a shard's pictures twice at most (decoded, then pickled), on top of a worker's
    # own ~120 MiB: told to Ray's scheduler (that it differs from the actors' resources also keeps Ray Data from
    # fusing the decoding into the actors)
    ds = ds.map_batches(decode_shard, batch_size=1, fn_kwargs={"recipe": recipe}, num_cpus=1,
                        memory=DECODER_MEMORY + 2 * max(b - a for a, b in spans.values()) * per_row)
    ds = ds.map_batches(ShardWriter, batch_size=1, compute=rd.ActorPoolStrategy(size=actors),
                        num_gpus=1 if use_gpu else 0,
                        fn_constructor_kwargs={"req": req, "run": run, "shard_rows": plan.shard_rows,
                                               "requests": [replace(m, device=device) for m in req.models]})
    ui.note(f"Ray: {len(missing)} shard{'s' if len(missing) != 1 else ''} to {actors} model "
            f"actor{'s' if actors != 1 else ''}" + (" with a GPU each" if use_gpu else " on CPU")
            + f"; decoding in CPU tasks ({cpus} CPUs in the cluster)")
    last_run.clear()
    last_run.update(actors=actors, gpu=use_gpu, decoders=set(), writers=set(), shards=[])
    progress = ui.progress()
    progress.start(sum(b - a for a, b in spans.values()), "features (Ray)")
    header, t0 = None, time.monotonic()
    try:
        for row in ds.iter_rows():
            if row["error"]:
                raise _error(json.loads(row["error"]))
            header = header or json.loads(row["index"])
            last_run["decoders"].add(int(row["decoder"]))
            last_run["writers"].add(int(row["writer"]))
            last_run["shards"].append(int(row["shard"]))
            progress.advance(int(row["rows_in"]))
    finally:
        progress.close()
    return {k: v for k, v in header.items() if k not in ("shards", "complete")}, time.monotonic() - t0


def _placement(device: str, gpus: int) -> tuple[bool, str]:
    """Whether each actor takes a GPU, and the --device its models load on there."""
    if device.startswith("cuda"):
        if not gpus:
            raise UsageError(f"--device {device}: the Ray cluster has no GPUs", hint="use --device cpu or auto")
        return True, "cuda"  # an actor sees its own GPU only, as cuda:0
    if device == "auto":
        return (True, "cuda") if gpus else (False, "cpu")
    return False, device


@contextmanager
def _session(ray):
    """Connected to Ray for the run: an existing connection as it is; else `ray.init()`, which joins the cluster
    of RAY_ADDRESS or of `ray start` on this machine, or starts a local one, and is shut down after the run.
    Ray's logs and progress bars stay off stdout, and off stderr too unless VITCLI_DEBUG=1."""
    import ray.data as rd

    debug = debug_enabled()
    started = not ray.is_initialized()
    loggers = {name: logging.getLogger(name).level for name in ("ray", "ray.data")}
    ctx = rd.DataContext.get_current()
    bars = ctx.enable_progress_bars
    if started:
        saved = os.environ.get("RAY_BACKEND_LOG_LEVEL")
        if not debug:
            os.environ["RAY_BACKEND_LOG_LEVEL"] = "fatal"  # the driver's core worker (C++) logs to stderr
        try:
            with _quiet_stderr(not debug):
                ray.init(log_to_driver=debug, logging_level=logging.INFO if debug else logging.ERROR,
                         include_dashboard=False)
        except Exception as e:  # noqa: BLE001 — whatever Ray says, in one line
            why = (str(e).splitlines() or [""])[0]
            raise VitcliError(f"Ray did not start or connect: {type(e).__name__}: {why}",
                              hint="check RAY_ADDRESS (unset: a local Ray); VITCLI_DEBUG=1 shows Ray's logs") from e
        finally:
            if saved is None:
                os.environ.pop("RAY_BACKEND_LOG_LEVEL", None)
            else:
                os.environ["RAY_BACKEND_LOG_LEVEL"] = saved
    if not debug:  # errors too: vitcli reports the run's error itself, in one line
        for name in loggers:
            logging.getLogger(name).setLevel(logging.CRITICAL)
    ctx.enable_progress_bars = debug
    try:
        yield
    finally:
        ctx.enable_progress_bars = bars
        for name, level in loggers.items():
            logging.getLogger(name).setLevel(level)
        if started:
            with _quiet_stderr(not debug):
                ray.shutdown()


@contextmanager
def _quiet_stderr(quiet: bool):
    """File descriptor 2 to /dev/null while Ray starts or stops (its processes and C++ logs write there directly;
    the processes it starts keep it, so they stay quiet for the run)."""
    if not quiet:
        yield
        return
    import sys

    sys.stderr.flush()
    saved = os.dup(2)
    null = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(null, 2)
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        os.close(null)


# ---- on the cluster ---------------------------------------------------------------------------------------------

def decode_shard(batch: dict, recipe) -> dict:
    """A Ray task: decode the pictures of each shard in the batch (one, with batch_size=1), in item order, as the
    local decoding workers do. Out: `decoded`, per shard its items' (position, Decoded) in a `_Decoded`."""
    from vitcli.decode import PIECE, decode_piece
    from vitcli.inputs import pieces

    out = np.empty(len(batch["shard"]), dtype=object)
    for j, work in enumerate(batch["work"]):
        start, items, videos = pickle.loads(work)
        decoded = []
        for piece in pieces(items, PIECE, videos):
            for k, d in decode_piece(piece, videos, lambda: recipe):
                decoded.append((start + piece.start + k, d))
        out[j] = _Decoded(decoded)  # an object of its own: Ray Data pickles it as is (no Arrow conversion)
    return {"shard": np.asarray(batch["shard"]), "decoded": out,
            "decoder": np.full(len(out), os.getpid(), dtype=np.int64)}


class _Decoded:
    """A shard's pictures decoded in a task, as write_shards reads them: `run()` yields (position, Decoded)."""

    def __init__(self, decoded: list):
        self.decoded = decoded

    def run(self):
        yield from self.decoded


class ShardWriter:
    """A Ray actor: the models loaded once on its device; writes each shard it is handed, as a local run would.
    A VitcliError (a model that cannot load on this node, a full disk) comes back as the shard's `error` (Ray
    would keep only its text) and the driver raises it."""

    def __init__(self, req, run, requests, shard_rows: int):
        from vitcli.commands.features import setup, shard_set

        self.run, self.error = run, None
        try:
            self.st = setup(req, run, requests)
            self.shards = shard_set(req, run, self.st)
        except VitcliError as e:
            self.error = e
            return
        if self.shards.plan.shard_rows != shard_rows:
            raise RuntimeError(f"shard size {self.shards.plan.shard_rows} differs from the driver's {shard_rows}")

    def __call__(self, batch: dict) -> dict:
        from vitcli.commands.features import write_shards

        n = len(batch["shard"])
        rows_in, index, error = np.zeros(n, dtype=np.int64), [""] * n, [""] * n
        for j, (k, decoded) in enumerate(zip(batch["shard"], batch["decoded"])):
            try:
                if self.error is not None:
                    raise self.error
                a, b = self.shards.plan.span(int(k))
                write_shards(self.shards, self.st, decoded, replace(self.run, ranges=[(a, b)]))
                rows_in[j], index[j] = b - a, json.dumps(self.shards.index)
            except VitcliError as e:
                error[j] = json.dumps(_error_dict(e))
        return {"shard": np.asarray(batch["shard"]), "rows_in": rows_in, "index": np.array(index, dtype=object),
                "error": np.array(error, dtype=object), "decoder": np.asarray(batch["decoder"]),
                "writer": np.full(n, os.getpid(), dtype=np.int64)}


def _error_dict(e: VitcliError) -> dict:
    return {"module": type(e).__module__, "class": type(e).__qualname__, "message": e.message, "hint": e.hint,
            "exit_code": e.exit_code}


def _error(d: dict) -> VitcliError:
    """The VitcliError an actor met, rebuilt (its class's own __init__ may take other arguments: MissingExtra)."""
    import importlib

    cls = getattr(importlib.import_module(d["module"]), d["class"], VitcliError)
    e = cls.__new__(cls)
    VitcliError.__init__(e, d["message"], d["hint"], d["exit_code"])
    return e
