"""The incremental .npy: shrinking in place gives numpy's own file for the smaller shape."""

from __future__ import annotations

import numpy as np
import pytest

from vitcli.export import shrink_rows


@pytest.mark.parametrize("shape,rows", [((10, 3, 4), 7), ((100, 5), 9), ((1000, 2), 999), ((5,), 0)])
def test_shrink_rows_is_byte_identical_to_a_fresh_file(tmp_path, shape, rows):
    a = np.arange(np.prod(shape), dtype=np.float32).reshape(shape)
    big, small = tmp_path / "big.npy", tmp_path / "small.npy"
    np.save(big, a)
    np.save(small, a[:rows])
    shrink_rows(big, rows)
    assert np.array_equal(np.load(big), a[:rows])
    assert big.read_bytes() == small.read_bytes()


def test_a_short_pwrite_is_continued_until_every_byte_is_written(tmp_path, monkeypatch):
    """os.pwrite may write less than asked (Linux: at most ~2 GiB per call): the writer loops."""
    import os

    from vitcli.export import NpyWriter

    real, calls = os.pwrite, []

    def short(fd, data, offset):  # at most 7 bytes per call
        calls.append(len(data))
        return real(fd, bytes(memoryview(data)[:7]), offset)

    a = np.arange(5 * 3 * 4, dtype=np.float32).reshape(5, 3, 4)
    target = tmp_path / "f.npy"
    w = NpyWriter(target, 5, (3, 4), "float32", {})
    monkeypatch.setattr(os, "pwrite", short)
    w.write(a[:2], 2, [])
    w.write(a[2:], 5, [])
    monkeypatch.undo()
    w.finish({})
    assert np.array_equal(np.load(target), a)
    assert len(calls) == -(-2 * 48 // 7) + -(-3 * 48 // 7)  # 96 then 144 bytes, 7 at a time


def test_rows_are_copied_in_chunks_of_bounded_bytes(tmp_path, monkeypatch):
    from vitcli import export

    assert export.chunk_rows(784 * 2**10) == 83  # a ViT-L patch row: 83 rows of 784 KiB in 64 MiB (not 4096)
    assert export.chunk_rows(2**30) == 1 and export.chunk_rows(4) == 16 * 2**20
    monkeypatch.setattr(export, "CHUNK_BYTES", 1000)  # 2 rows of 400 bytes
    a = np.arange(7 * 100, dtype=np.float32).reshape(7, 100)
    src = tmp_path / "src.npy"
    np.save(src, a)
    assert [len(c) for c in export.open_rows(src, 7)] == [2, 2, 2, 1]
    w = export.NpyWriter(tmp_path / "out.npy", 9, (100,), "float32", {})
    sizes = []
    write = w.write
    w.write = lambda rows, *rest: (sizes.append(len(rows)), write(rows, *rest))
    export.append_rows(w, src, 5, 9)
    export.append_rows(w, src, 3, 9)
    assert sizes == [2, 2, 1, 2, 1] and w.state.next_input == 9
    w.finish({})
    assert np.array_equal(np.load(tmp_path / "out.npy"), np.concatenate([a[:5], a[:3]]))


def test_resume_needs_both_partial_files(tmp_path):
    """The state file alone (the array renamed or deleted) resumes nothing: the rows restart at 0, as the
    writer does, so none is missing."""
    from vitcli.export import NpyWriter, partial_paths, resume_point

    target = tmp_path / "f.npy"
    partial, state = partial_paths(target)
    assert resume_point(target) == 0
    w = NpyWriter(target, 6, (2,), "float32", {"a": 1})
    w.write(np.ones((4, 2), np.float32), 4, [])
    w.close()
    assert resume_point(target) == 4
    again = NpyWriter(target, 6, (2,), "float32", {"a": 1}, resume=True)
    assert again.resumed and again.state.rows == 4
    again.close()
    partial.unlink()
    assert state.exists() and resume_point(target) == 0
    fresh = NpyWriter(target, 6, (2,), "float32", {"a": 1}, resume=True)
    assert not fresh.resumed and fresh.state.next_input == 0 and fresh.state.rows == 0
    fresh.close()


def test_index_marks_a_shard_complete_only_with_both_files(tmp_path):
    import json

    from vitcli.export import ShardPlan, ShardSet

    shards = ShardSet(tmp_path, ShardPlan(4, 2), {"fingerprint": {}})
    for k in (0, 1):
        (tmp_path / f"shard-{k:05d}.json").write_text(json.dumps({"shape": [2, 3]}))
    np.save(tmp_path / "shard-00000.npy", np.zeros((2, 3), np.float32))  # shard 1: its sidecar, no array yet
    shards.write_index()
    index = json.loads((tmp_path / "index.json").read_text())
    assert [(s["complete"], s["rows"]) for s in index["shards"]] == [(True, 2), (False, None)]
    assert index["complete"] is False and shards.missing() == [1]
