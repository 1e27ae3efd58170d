"""Atomic outputs: temporary file, rename when complete, nothing left on failure, never overwrite silently."""

from __future__ import annotations

import os
import stat

import pytest

from vitcli.errors import OutputError
from vitcli.outputs import atomic_output, check_targets


def test_success_renames_with_normal_permissions(tmp_path):
    target = tmp_path / "out.bin"
    with atomic_output(target) as tmp:
        assert tmp.parent == tmp_path and tmp != target
        tmp.write_bytes(b"data")
        assert not target.exists()
    assert target.read_bytes() == b"data"
    mask = os.umask(0)
    os.umask(mask)
    assert stat.S_IMODE(target.stat().st_mode) == 0o666 & ~mask
    assert [p.name for p in tmp_path.iterdir()] == ["out.bin"]


@pytest.mark.parametrize("exc", [RuntimeError, KeyboardInterrupt])
def test_failure_leaves_target_untouched(tmp_path, exc):
    target = tmp_path / "out.bin"
    target.write_bytes(b"old")
    with pytest.raises(exc):
        with atomic_output(target) as tmp:
            tmp.write_bytes(b"half")
            raise exc()
    assert target.read_bytes() == b"old"
    assert [p.name for p in tmp_path.iterdir()] == ["out.bin"]


def test_check_targets(tmp_path):
    (tmp_path / "exists.png").write_bytes(b"x")
    with pytest.raises(OutputError, match="already exists"):
        check_targets([tmp_path / "new.png", tmp_path / "exists.png"], force=False)
    assert check_targets([tmp_path / "exists.png", None], force=True) == [tmp_path / "exists.png"]
    with pytest.raises(OutputError, match="no such directory"):
        check_targets([tmp_path / "nodir" / "a.png"], force=False)
    with pytest.raises(OutputError, match="twice"):
        check_targets([tmp_path / "a.png", tmp_path / "a.png"], force=False)
