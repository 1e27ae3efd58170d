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
