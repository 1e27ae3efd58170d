"""Decoding off the model's critical path: worker processes open images and decode video frames, apply each
model's own resize and crop (`vitcli.preprocess.Plan`, pixel-identical to timm's PIL stages), and hand back
uint8 pixels in order. Torch-free (PIL, numpy, PyAV), so the workers can start, and decode, while the main
process is still importing torch and building the model.

How work flows:
- The run's items are cut into `Piece`s (`vitcli.inputs.pieces`: a few images, or a run of one video's frames)
  and handed to the workers a piece at a time, at most `depth` pieces ahead per worker; results come back
  per item and are yielded strictly in item order, so memory holds only the pieces in flight.
- A piece can be handed out before the models are known: a worker then decodes its pictures at once and waits
  for the `Recipe` (one `Prep` per model) to resize them (with `fast` JPEG decoding it waits first, since
  the DCT scale depends on the target size).
- A picture that fails becomes an error for that item; the others go on. A video that stops decoding fails
  from that frame to the end of the piece. A worker that takes more than `timeout` seconds on one item, or
  dies, is replaced: that item fails ("abandoned"), the rest of its piece is handed out again.
- On CPU runs the workers run at the lowest priority (`niceness`), so they use the time the model's threads
  leave idle instead of preempting them (measured in benchmarks/features.py).
"""

from __future__ import annotations

import itertools
import multiprocessing as mp
import os
import sys
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field

from vitcli.errors import InputError
from vitcli.inputs import Piece

CPU_WORKER_NICENESS = 19
AHEAD_BYTES = 512 * 2**20  # decoded pixels a pool may hold while it waits for the recipe (large photos)
PIECE = 4  # images per unit of decoding work: smaller than a batch, so the first batch is spread over workers


def default_workers(n_items: int, batch_size: int) -> int:
    """Decoding processes: none for a single batch (start-up would cost more than it saves), else up to 8."""
    if n_items <= batch_size:
        return 0
    return min(os.cpu_count() or 1, 8)


@dataclass(frozen=True)
class Prep:
    """How one model wants its pictures: its exact torch-free plan (uint8 (H, W, 3) out), or, when the plan
    cannot reproduce its config (`preprocess.NotExact`), timm's own transform object (float32 (3, H, W) out)."""

    plan: object = None  # vitcli.preprocess.Plan
    transform: object = None  # timm's eval transform (imports torch in the worker when used)

    def apply(self, loaded):
        import numpy as np

        if self.plan is not None:
            from vitcli.preprocess import prepare

            return np.array(prepare(loaded, self.plan), dtype=np.uint8)  # (H, W, 3)
        return np.asarray(self.transform(loaded.image), dtype=np.float32)


@dataclass(frozen=True)
class Recipe:
    """Every model's `Prep`, in channel order; `fast`: JPEGs at least twice the target are decoded at a DCT scale
    (the smallest that every plan allows); `jpeg_bytes`: JPEG files are not decoded at all but handed back as
    bytes, for decoding on the GPU."""

    preps: tuple[Prep, ...]
    fast: bool = False
    jpeg_bytes: bool = False

    def draft(self, hw) -> int:
        from vitcli.preprocess import draft_scale

        if not self.fast or any(p.plan is None for p in self.preps):
            return 1
        return min(draft_scale(hw, p.plan) for p in self.preps)


@dataclass(frozen=True)
class Decoded:
    """One item's outcome: `arrays` (one per Prep), or `jpeg` (the file's bytes, `jpeg_bytes` recipes), or
    `error` (why it could not be used)."""

    arrays: tuple | None = None
    jpeg: bytes | None = None
    error: str | None = None


# ---- the work of one piece (in a worker, or inline) ------------------------------------------------------------

def _pictures(piece: Piece, videos: dict, recipe: Callable[[], Recipe], wait_first: bool, at=lambda k: None):
    """Yield (k, opened picture or Decoded) for each item of the piece, in order (opening = decoding: the
    pixels are in memory when it is yielded)."""
    from vitcli.imaging import LoadedImage, open_image

    first = piece.items[0]
    if not first.is_video:
        for k, item in enumerate(piece.items):
            at(k)
            try:
                if wait_first and recipe().jpeg_bytes and item.member is None and _is_jpeg(item.source):
                    with open(item.source, "rb") as f:
                        yield k, Decoded(jpeg=f.read())
                    continue
                draft = recipe().draft if wait_first and recipe().fast else None
                if item.member is not None:  # a tar member, read where it lies in the archive
                    name, offset, size = item.member
                    with open(item.source, "rb") as f:
                        f.seek(offset)
                        data = f.read(size)
                    yield k, open_image(item.label(), draft=draft, data=data)
                else:
                    yield k, open_image(item.source, draft=draft)
            except InputError as e:
                yield k, Decoded(error=e.message.removeprefix(f"{item.label()}: "))
            except OSError as e:
                yield k, Decoded(error=f"cannot read ({e.strerror or e})")
        return
    from vitcli import video

    path, info = first.source, videos.get(first.source)
    frames = [it.frame for it in piece.items]
    k = 0
    try:
        for index, _, img in video.decode_frames(path, frames, info):
            while piece.items[k].frame != index:  # pragma: no cover - decode_frames yields exactly these frames
                k += 1
            yield k, LoadedImage(path, img, (img.height, img.width), "RGB", "video", ())
            k += 1
    except video.VideoDecodeError as e:
        for j in range(k, len(piece.items)):
            yield j, Decoded(error=f"decoding failed: {e.reason}")
    except InputError as e:
        for j in range(k, len(piece.items)):
            yield j, Decoded(error=e.message.removeprefix(f"{path}: "))


def _is_jpeg(path: str) -> bool:
    try:
        with open(path, "rb") as f:
            return f.read(3) == b"\xff\xd8\xff"
    except OSError:
        return False


def _counted(pictures, opened):
    """The pictures, counted in the pool's shared counter as they are decoded."""
    for got in pictures:
        if opened is not None:
            with opened.get_lock():
                opened.value += 1
        yield got


def decode_piece(piece: Piece, videos: dict, recipe: Callable[[], Recipe], wait_first: bool = True,
                 opened=None, at=lambda k: None, pictures: list | None = None) -> Iterator[tuple[int, Decoded]]:
    """(k, Decoded) for each item of the piece. `recipe()` returns the recipe, blocking until it is known;
    `wait_first`: ask for it before decoding (else decode first, then ask). `opened`: a shared counter of
    pictures decoded (before the recipe is applied); `at(k)`: called when work on item k begins. `pictures`:
    the piece's pictures already decoded (`decode_ahead`)."""
    if pictures is None:
        pictures = _counted(_pictures(piece, videos, recipe, wait_first, at), opened)
    for k, got in pictures:
        if isinstance(got, Decoded):
            yield k, got
            continue
        at(k)
        try:
            yield k, Decoded(arrays=tuple(p.apply(got) for p in recipe().preps))
        except Exception as e:  # noqa: BLE001 — a strange picture fails alone
            yield k, Decoded(error=f"cannot preprocess ({type(e).__name__}: {e})")


# ---- worker processes ------------------------------------------------------------------------------------------

def _die_with_parent() -> None:
    """On Linux, have the kernel kill this worker when the process that started it dies (even by SIGKILL), so
    no orphan keeps decoding, or keeps the parent's stdout open, after a killed run."""
    if sys.platform.startswith("linux"):
        import ctypes
        import signal

        try:
            ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
        except (OSError, AttributeError):
            pass


def _worker(conn, videos: dict, niceness: int, eager: bool, opened=None, inherited=(), workers: int = 1) -> None:
    """Receive ("recipe", Recipe), ("piece", id, Piece) and ("stop",); send ("item", id, k, Decoded) per item
    and ("done", id) per piece. `eager`: a piece that arrives before the recipe is decoded at once and its
    pictures wait for the recipe (not for fast or GPU decoding, which need the recipe to decode). `inherited`:
    the pool's ends of the pipes, which a forked worker closes so each pipe closes when its owner dies."""
    _die_with_parent()
    for c in inherited:
        c.close()
    if niceness and hasattr(os, "nice"):
        os.nice(niceness)
    state: dict = {"recipe": None}
    queue: deque = deque()  # (piece id, Piece), in the order given
    ahead: dict = {}  # piece id -> [(k, picture or Decoded)]: decoded before the recipe came
    room = [AHEAD_BYTES // max(1, workers)]  # bytes of decoded pixels this worker may still hold ahead

    def handle(msg) -> None:
        if msg[0] == "recipe":
            state["recipe"] = msg[1]
        elif msg[0] == "piece":
            queue.append(msg[1:])
        elif msg[0] == "stop":
            raise SystemExit(0)

    def recipe() -> Recipe:
        while state["recipe"] is None:
            handle(conn.recv())
        return state["recipe"]

    def decode_ahead() -> None:
        """While the models load: decode the images of every piece in hand (not resizing: that needs the
        recipe), as long as there is room, so the first batches are ready when the model is."""
        for pid, piece in list(queue):
            if pid in ahead or piece.items[0].is_video or room[0] <= 0 or conn.poll():
                continue
            at = lambda k, pid=pid: conn.send(("at", pid, k))  # noqa: E731
            ahead[pid] = list(_counted(_pictures(piece, videos, recipe, False, at), opened))
            room[0] -= _pixel_bytes(ahead[pid])

    try:
        while True:
            if not queue:
                handle(conn.recv())
                continue
            if eager and state["recipe"] is None:  # the models are loading: decode ahead, wait for the recipe
                decode_ahead()
                if state["recipe"] is None:
                    handle(conn.recv())
                continue
            pid, piece = queue.popleft()
            pictures = ahead.pop(pid, None)
            room[0] += _pixel_bytes(pictures or [])
            at = lambda k, pid=pid: conn.send(("at", pid, k))  # noqa: E731 — which item is in hand, for timeouts
            for k, out in decode_piece(piece, videos, recipe, opened=opened, at=at, pictures=pictures):
                conn.send(("item", pid, k, out))
                while conn.poll():  # take in what arrived meanwhile (the recipe, more pieces)
                    handle(conn.recv())
            conn.send(("done", pid))
    except (EOFError, KeyboardInterrupt, BrokenPipeError):
        pass


def _pixel_bytes(pictures) -> int:
    return sum(got.image.width * got.image.height * 3 for _, got in pictures if not isinstance(got, Decoded))


last_pool: DecodePool | None = None  # the pool started last in this process (to observe it, as tests do)


@dataclass
class _Slot:
    """A worker process and the pieces it holds (the first is in progress)."""

    proc: object
    conn: object
    pieces: deque = field(default_factory=deque)  # [piece id, Piece, items received]
    since: float = 0.0  # when it last reported progress
    in_hand: tuple[int, int] | None = None  # (piece id, item) it said it is working on


class DecodePool:
    """Worker processes that decode `Piece`s; `run()` yields (position, Decoded) in item order.

    `workers=0` decodes in the calling process (no timeout, no early start). `timeout` (s): an item a worker
    spends longer on is abandoned and the worker replaced. `eager`: workers decode pieces that arrive before
    the recipe (exact decoding only). Start it early (`start()`, `prime(pieces)`), hand it the recipe when the
    models are known (`set_recipe`), read `run()`, close it (`close()`, or use it as a context manager)."""

    def __init__(self, workers: int, videos: dict | None = None, niceness: int = 0, depth: int = 2,
                 timeout: float | None = None, eager: bool = True):
        self.workers, self.videos, self.niceness = workers, videos or {}, niceness
        self.depth, self.timeout, self.eager = depth, timeout, eager
        self.recipe: Recipe | None = None
        self._slots: list[_Slot] = []
        self._ctx = mp.get_context("fork" if sys.platform.startswith("linux") else "spawn")
        self._pending: Iterator[Piece] = iter(())
        self._order: deque = deque()  # (start, length) of each piece handed out, in the order to yield
        self._next_id = 0
        self._in_flight: dict[int, Piece] = {}  # piece id -> piece, given and not done
        self._store: dict[int, Decoded] = {}  # position -> outcome, not yet yielded
        self.events: list[tuple[str, float]] = []  # (what, time.monotonic()): started, recipe, first item
        self.decoded = 0  # items whose outcome came back
        self.opened = self._ctx.Value("i", 0)  # pictures the workers have decoded, recipe applied or not

    # -- lifecycle --
    def start(self) -> DecodePool:
        global last_pool
        last_pool = self
        for _ in range(self.workers):
            self._slots.append(self._spawn())
        self.events.append(("started", time.monotonic()))
        return self

    def _spawn(self) -> _Slot:
        parent, child = self._ctx.Pipe()
        inherited = (parent, *(s.conn for s in self._slots)) if self._ctx.get_start_method() == "fork" else ()
        proc = self._ctx.Process(target=_worker, args=(child, self.videos, self.niceness, self.eager, self.opened,
                                                       inherited, self.workers), daemon=True)
        proc.start()
        child.close()
        if self.recipe is not None:
            parent.send(("recipe", self.recipe))
        return _Slot(proc, parent)

    def set_recipe(self, recipe: Recipe) -> None:
        self.recipe = recipe
        self.events.append(("recipe", time.monotonic()))
        for s in self._slots:
            try:
                s.conn.send(("recipe", recipe))
            except OSError:  # a worker that died meanwhile is found, and replaced, when its pieces are awaited
                pass

    def close(self) -> None:
        """Stop every worker: all are asked at once and given 2 s together (after an error they may be stuck
        sending into full pipes), then the ones left are killed."""
        for s in self._slots:
            try:
                s.conn.send(("stop",))
            except OSError:
                pass
        deadline = time.monotonic() + 2
        for s in self._slots:
            s.proc.join(timeout=max(0.0, deadline - time.monotonic()))
            if s.proc.is_alive():
                s.proc.kill()
                s.proc.join()
            s.conn.close()
        self._slots = []

    def __enter__(self) -> DecodePool:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # -- work --
    def prime(self, pieces: Iterable[Piece]) -> None:
        """Take the pieces to decode and hand out the first ones now, so decoding starts at once."""
        self._pending = iter(pieces)
        self._fill()

    def _fill(self) -> None:
        """Give pieces to workers with room, keeping at most workers x depth pieces between the oldest one not
        yet done and the newest given (so results waiting for a slow piece stay bounded)."""
        window = max(1, len(self._slots)) * self.depth
        for s in sorted(self._slots, key=lambda s: len(s.pieces)):
            while len(s.pieces) < self.depth and self._next_id - min(self._in_flight, default=self._next_id) < window:
                piece = next(self._pending, None)
                if piece is None:
                    return
                self._order.append((piece.start, len(piece.items)))
                self._give(s, piece)

    def _give(self, s: _Slot, piece: Piece) -> None:
        pid = self._next_id
        self._next_id += 1
        self._in_flight[pid] = piece
        had_work = bool(s.pieces)
        if not had_work:
            s.since = time.monotonic()
        s.pieces.append([pid, piece, 0])
        try:
            s.conn.send(("piece", pid, piece))
        except OSError:  # the worker is dead; idle, it takes no item with it
            s.proc.join(timeout=5)
            self._replace(s, f"the decoder process died (exit code {s.proc.exitcode})" if had_work else None)

    def run(self) -> Iterator[tuple[int, Decoded]]:
        """Yield (position, Decoded) for every item of the primed pieces, in position order."""
        if not self._slots:
            yield from self._inline()
            return
        while True:
            while not self._order:  # more pieces, as the ones handed out come back
                self._fill()
                if not self._order and not self._in_flight:
                    return
                if not self._order:
                    self._receive()
            start, n = self._order.popleft()
            for position in range(start, start + n):
                while position not in self._store:
                    self._receive()
                yield position, self._store.pop(position)

    def _inline(self) -> Iterator[tuple[int, Decoded]]:
        def recipe() -> Recipe:
            if self.recipe is None:
                raise RuntimeError("the decode recipe is set before decoding in the main process")
            return self.recipe

        for piece in self._pending:
            for k, out in decode_piece(piece, self.videos, recipe):
                self.decoded += 1
                yield piece.start + k, out

    def _receive(self) -> None:
        """Wait for news from any worker (or a timeout), file it, hand out more work."""
        from multiprocessing.connection import wait

        busy = [s for s in self._slots if s.pieces]
        wait_for = None
        if self.timeout is not None and busy:
            wait_for = max(0.0, min(s.since + self.timeout for s in busy) - time.monotonic())
        ready = wait([s.conn for s in busy], timeout=wait_for)
        for s in busy:
            if s.conn in ready:
                try:
                    msg = s.conn.recv()
                except (EOFError, OSError):
                    s.proc.join(timeout=5)
                    self._replace(s, f"the decoder process died (exit code {s.proc.exitcode})")
                    continue
                self._file(s, msg)
            elif self.timeout is not None and time.monotonic() - s.since >= self.timeout:
                self._replace(s, f"the decoder did not finish within {self.timeout:g} s; abandoned")
        self._fill()

    def _file(self, s: _Slot, msg) -> None:
        now = time.monotonic()
        if msg[0] == "at":
            s.in_hand = (msg[1], msg[2])
        elif msg[0] == "item":
            _, pid, k, out = msg
            entry = s.pieces[0]  # pieces come back in the order they were given
            self._store[entry[1].start + k] = out
            entry[2] = k + 1
            self.decoded += 1
            if self.decoded == 1:
                self.events.append(("first item", now))
        elif msg[0] == "done":
            pid = s.pieces.popleft()[0]
            del self._in_flight[pid]
        s.since = now

    def _replace(self, s: _Slot, reason: str | None) -> None:
        """Kill a stuck or dead worker: its current item fails with `reason` (None: it died idle, no item fails),
        the rest of its pieces go to a new worker."""
        s.proc.kill()
        s.proc.join()
        s.conn.close()
        entries = list(s.pieces)
        piece = stuck = None
        if reason is not None:
            hand = next(((e, s.in_hand[1]) for e in entries if s.in_hand and e[0] == s.in_hand[0]), None)
            first = entries[0]
            entry, stuck = hand if hand is not None and hand[1] >= hand[0][2] else (first, first[2])
            piece = entry[1]
            self._store[piece.start + stuck] = Decoded(error=reason)
            self.decoded += 1
        rest = []  # every item not yet back, but the one in hand, to a fresh worker
        for pid, p, done in entries:
            del self._in_flight[pid]
            cut = stuck if p is piece else None
            runs = ((done, cut), (cut + 1, len(p.items))) if cut is not None else ((done, len(p.items)),)
            rest += [Piece(p.start + a, p.items[a:b]) for a, b in runs if a < b]
        fresh = self._spawn()
        self._slots[self._slots.index(s)] = fresh
        for p in rest:
            self._give(fresh, p)


def start(items, videos: dict, ranges, batch_size: int, workers: int | None = None, on_cpu: bool = True,
          timeout: float | None = None, eager: bool = True, group: int = 1) -> DecodePool:
    """A started pool, already decoding items of the row ranges [(start, stop), ...] in order (`group` items
    per row) when it has workers. `on_cpu`: the model runs on the CPU, so the workers yield to its threads."""
    from vitcli.inputs import pieces

    todo = sum(b - a for a, b in ranges) * group
    n = default_workers(todo, batch_size * group) if workers is None else workers
    if timeout is not None:
        n = max(n, 1)  # only a worker can be abandoned
    depth = max(2, -(-batch_size * group // (PIECE * max(1, n))) + 1)  # a first batch in hand, and one more piece
    pool = DecodePool(n, videos, niceness=CPU_WORKER_NICENESS if on_cpu else 0, depth=depth, timeout=timeout,
                      eager=eager)
    pool.start()
    pool.prime(itertools.chain.from_iterable(pieces(items, PIECE, videos, a * group, b * group) for a, b in ranges))
    return pool
