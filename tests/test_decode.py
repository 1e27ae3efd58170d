"""The decoding pool: order, worker priority, early start, and bad items that never stop a run (a decoder that
hangs is abandoned, one that dies is replaced)."""

from __future__ import annotations

import os
import signal
import time

import numpy as np
import pytest

from conftest import DATA
from vitcli import decode, imaging
from vitcli.decode import Prep, Recipe
from vitcli.inputs import Item, pieces
from vitcli.preprocess import Plan

pytestmark = pytest.mark.skipif(not hasattr(os, "nice"), reason="worker processes and priorities are POSIX here")

PLAN = Plan.from_config({"input_size": (3, 32, 32), "interpolation": "bicubic", "crop_pct": 0.875,
                         "crop_mode": "center", "mean": (0.5,) * 3, "std": (0.5,) * 3})
IMAGES = [DATA / "chelsea.jpg", DATA / "coffee.jpg", DATA / "camera-gray.png", DATA / "horse-rgba.png"]


def _niceness(_image):
    """A "transform" that reports the priority of the process it runs in."""
    return np.array([float(os.nice(0))], dtype=np.float32)


def run(items, workers, recipe, **kw):
    with decode.start(items, {}, [(0, len(items))], 2, workers, **kw) as pool:
        pool.set_recipe(recipe)
        return list(pool.run())


def test_items_come_back_in_order_equal_to_decoding_inline():
    items = [Item(str(IMAGES[i % 4])) for i in range(23)]
    recipe = Recipe((Prep(plan=PLAN),))
    got = run(items, 2, recipe)
    assert [p for p, _ in got] == list(range(23))
    for (_, out), item in zip(got, items):
        want = np.array(PLAN.resize_crop(imaging.open_image(item.source).image), dtype=np.uint8)
        assert out.error is None and np.array_equal(out.arrays[0], want)
    assert [p for p, _ in run(items, 0, recipe)] == list(range(23))  # no workers: the same, inline
    with decode.DecodePool(1, depth=1).start() as pool:  # a window of one piece: handed out as others finish
        pool.set_recipe(recipe)
        pool.prime([*pieces(items, 2, {}, 0, 6), *pieces(items, 2, {}, 10, 15)])  # two ranges, with a gap
        assert [p for p, _ in pool.run()] == [*range(6), *range(10, 15)]


def test_cpu_workers_decode_at_the_lowest_priority_and_the_model_keeps_its_own():
    base = os.nice(0)
    items = [Item(str(IMAGES[0]))] * 4
    recipe = Recipe((Prep(transform=_niceness),))
    seen = [float(out.arrays[0][0]) for _, out in run(items, 1, recipe, on_cpu=True)]
    assert seen == [float(min(19, base + 19))] * 4
    assert os.nice(0) == base  # the main process, where the model runs, is untouched
    assert [float(out.arrays[0][0]) for _, out in run(items, 0, recipe)] == [float(base)] * 4  # inline: its own
    assert [float(out.arrays[0][0]) for _, out in run(items, 1, recipe, on_cpu=False)] == [float(base)] * 4  # GPU


def test_decoding_starts_before_the_recipe_is_known():
    """The event order behind "decoding starts at once": while the models load (no recipe yet), the workers
    decode a whole first batch, handed out in pieces smaller than a batch, so it is ready when the model is."""
    items = [Item(str(IMAGES[i % 4])) for i in range(40)]
    pool = decode.start(items, {}, [(0, 40)], 16, 2)
    try:
        deadline = time.monotonic() + 60
        while pool.opened.value < 16 and time.monotonic() < deadline:  # the model "loads" meanwhile
            time.sleep(0.05)
        assert pool.opened.value >= 16 and pool.decoded == 0  # a first batch decoded, nothing resized yet
        assert len({s.proc.pid for s in pool._slots if s.pieces}) == 2  # spread over both workers
        pool.set_recipe(Recipe((Prep(plan=PLAN),)))
        assert [p for p, out in pool.run() if out.error is None] == list(range(40))
    finally:
        pool.close()


def test_a_worker_killed_before_the_recipe_costs_one_item_not_the_run():
    """A worker killed while the model loads (say, by the kernel for memory): sending it the recipe must not
    raise; its pieces go to a fresh worker, and only the item it held fails."""
    items = [Item(str(IMAGES[i % 4])) for i in range(40)]
    pool = decode.start(items, {}, [(0, 40)], 16, 2)
    try:
        deadline = time.monotonic() + 60
        while pool.opened.value < 16 and time.monotonic() < deadline:
            time.sleep(0.05)
        victim = pool._slots[0].proc
        victim.kill()
        victim.join()
        pool.set_recipe(Recipe((Prep(plan=PLAN),)))
        got = list(pool.run())
        assert [p for p, _ in got] == list(range(40))
        errors = [out.error for _, out in got if out.error is not None]
        assert len(errors) == 1 and errors[0].startswith("the decoder process died"), errors
        assert victim not in [s.proc for s in pool._slots] and len(pool._slots) == 2
    finally:
        pool.close()


def test_close_gives_all_workers_one_deadline(monkeypatch):
    """Workers that do not stop are killed after 2 s in all, not 2 s each."""
    items = [Item(str(IMAGES[i % 4])) for i in range(8)]
    pool = decode.start(items, {}, [(0, 8)], 4, 2)
    ends = []  # when each join would give up
    for s in pool._slots:
        os.kill(s.proc.pid, signal.SIGSTOP)  # a worker that cannot take the stop message
        real = s.proc.join
        monkeypatch.setattr(s.proc, "join", lambda timeout=None, real=real: (
            ends.append(None if timeout is None else time.monotonic() + timeout), real(timeout)))
    pool.close()
    finite = [e for e in ends if e is not None]
    assert len(finite) == 2 and max(finite) - min(finite) < 0.5, ends  # one deadline (was: 2 s after each join)


def test_bad_files_fail_alone(tmp_path):
    bad = tmp_path / "bad.jpg"
    bad.write_text("not a jpeg")
    items = [Item(str(IMAGES[0])), Item(str(bad)), Item(str(tmp_path / "missing.png")), Item(str(IMAGES[1]))]
    got = run(items, 2, Recipe((Prep(plan=PLAN),)))
    assert [out.error is None for _, out in got] == [True, False, False, True]
    assert got[1][1].error.startswith("not an image PIL can read") and got[2][1].error == "no such file"


def _hang_or_die(path, draft=None):
    """A test double of the decoder: hangs on hang.png, kills its process on die.png, else decodes."""
    name = os.path.basename(str(path))
    if name == "hang.png":
        time.sleep(3600)
    if name == "die.png":
        os._exit(3)
    return REAL_OPEN(path, draft)


REAL_OPEN = imaging.open_image


@pytest.mark.parametrize("bad,reason", [("hang.png", "the decoder did not finish within 2 s; abandoned"),
                                        ("die.png", "the decoder process died (exit code 3)")])
def test_a_hanging_or_dying_decoder_is_abandoned_and_the_rest_goes_on(monkeypatch, tmp_path, bad, reason):
    monkeypatch.setattr(imaging, "open_image", _hang_or_die)  # the forked workers inherit it
    (tmp_path / bad).write_bytes((DATA / "horse-rgba.png").read_bytes())
    items = [Item(str(IMAGES[i % 4])) for i in range(6)]
    items.insert(2, Item(str(tmp_path / bad)))
    start = time.monotonic()
    got = run(items, 2, Recipe((Prep(plan=PLAN),)), timeout=2)
    assert time.monotonic() - start < 60
    assert [p for p, _ in got] == list(range(7))
    assert [out.error for _, out in got] == [None, None, reason, None, None, None, None]


def test_pieces_cut_videos_at_keyframes_only():
    class Info:
        keyframes = (0, 10, 20)

    items = [Item("v.mp4", f, f / 10) for f in range(0, 30)] + [Item("x.jpg")] * 5
    got = list(pieces(items, 4, {"v.mp4": Info()}))
    assert [(p.start, len(p.items)) for p in got] == [(0, 10), (10, 10), (20, 10), (30, 4), (34, 1)]
    sparse = [Item("v.mp4", f, f / 10) for f in range(0, 30, 7)]  # 0 7 14 21 28: gaps, cut at a new GOP
    assert [len(p.items) for p in pieces(sparse, 2, {"v.mp4": Info()})] == [2, 3]  # 28 shares 21's GOP
