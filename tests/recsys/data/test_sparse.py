"""``pairs_to_csr``: the one pairs -> CSR conversion of the loaders and splits."""

from __future__ import annotations

import numpy as np
import pytest

from recsys.data.sparse import pairs_to_csr


def _reference(rows, cols, values, shape):
    """Dict of the first value per pair, by plain Python."""
    first = {}
    for r, c, v in zip(rows.tolist(), cols.tolist(), values.tolist()):
        first.setdefault((r, c), v)
    return first


def _as_dict(m):
    m = m.tocoo()
    return {(int(r), int(c)): v for r, c, v in zip(m.row, m.col, m.data.tolist())}


@pytest.mark.parametrize("seed", [0, 1])
def test_first_occurrence_and_sorted_indices(seed: int) -> None:
    rng = np.random.default_rng(seed)
    rows, cols = rng.integers(0, 30, 500), rng.integers(0, 40, 500)
    values = np.arange(500, dtype=np.int64)
    m = pairs_to_csr(rows, cols, (30, 40), values=values)
    assert m.has_sorted_indices and m.shape == (30, 40)
    assert _as_dict(m) == _reference(rows, cols, values, (30, 40))
    ones = pairs_to_csr(rows, cols, (30, 40))
    assert ones.dtype == np.float32 and set(ones.data.tolist()) == {1.0} and ones.nnz == m.nnz


def test_first_by_keeps_the_smallest_key() -> None:
    rows, cols = np.array([0, 0, 1, 0]), np.array([2, 2, 0, 2])
    ts = np.array([50, 10, 7, 30])
    m = pairs_to_csr(rows, cols, (2, 3), values=ts, first_by=ts)
    assert _as_dict(m) == {(0, 2): 10, (1, 0): 7}


def test_presorted_pairs_are_taken_as_given() -> None:
    rows, cols = np.array([0, 0, 2]), np.array([1, 3, 0])
    m = pairs_to_csr(rows, cols, (3, 4), values=np.array([5.0, 6.0, 7.0]), presorted=True)
    assert m.indptr.tolist() == [0, 2, 2, 3] and _as_dict(m) == {(0, 1): 5.0, (0, 3): 6.0, (2, 0): 7.0}


def test_empty() -> None:
    m = pairs_to_csr(np.empty(0, np.int64), np.empty(0, np.int64), (3, 4))
    assert m.nnz == 0 and m.shape == (3, 4)
