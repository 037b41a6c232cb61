"""(row, column) pairs to a CSR matrix: the one conversion every loader and split uses.

The LightGCN text reader, the ``data_gen`` parquet reader and the temporal split all turn pairs into
CSR matrices with one entry per distinct pair and sorted column indices. They differ only in which
duplicate wins and whether the pairs are already distinct and in row-major order, which are the
arguments of :func:`pairs_to_csr`.
"""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp


def pairs_to_csr(
    rows: np.ndarray,
    cols: np.ndarray,
    shape: tuple[int, int],
    values: np.ndarray | None = None,
    first_by: np.ndarray | None = None,
    presorted: bool = False,
) -> sp.csr_matrix:
    """CSR with one entry per distinct ``(row, col)`` pair, column indices sorted within each row.

    Args:
        rows (np.ndarray): Row index of each pair.
        cols (np.ndarray): Column index of each pair.
        shape (tuple[int, int]): Matrix shape.
        values (np.ndarray, optional): One value per pair; a distinct pair keeps the value of its
            first occurrence. (default: ``None``: every entry is ``1.0`` as float32)
        first_by (np.ndarray, optional): Which occurrence of a duplicated pair is "first": the one with
            the smallest ``first_by`` (e.g. its timestamp); ties keep the input order.
            (default: ``None``: the earliest in the input)
        presorted (bool): The pairs are already distinct and in row-major order with sorted columns
            (a masked subset of a CSR's entries), so no sort or de-duplication is done.
            (default: ``False``)

    Returns:
        scipy.sparse.csr_matrix: int32 indices when they fit (as scipy itself picks), else int64.
    """
    rows = np.asarray(rows)
    cols = np.asarray(cols)
    if presorted:
        data = np.ones(len(rows), dtype=np.float32) if values is None else np.asarray(values)
        return _assemble(rows, cols, data, shape)
    keys = rows.astype(np.int64) * shape[1] + cols.astype(np.int64)
    # Sort + neighbour compare: numpy 2's hash-based np.unique is ~20x slower on these keys. A stable
    # sort keeps duplicates in input (or first_by) order, so the first of each run is the one to keep.
    order = np.argsort(keys, kind="stable") if first_by is None else np.lexsort((first_by, keys))
    keys = keys[order]
    first = np.ones(len(keys), dtype=bool)
    first[1:] = keys[1:] != keys[:-1]
    keys = keys[first]
    data = np.ones(len(keys), dtype=np.float32) if values is None else np.asarray(values)[order][first]
    r, c = np.divmod(keys, shape[1]) if len(keys) else (keys, keys)
    return _assemble(r, c, data, shape)


def _assemble(rows: np.ndarray, cols: np.ndarray, data: np.ndarray, shape: tuple[int, int]) -> sp.csr_matrix:
    """CSR from distinct pairs in row-major order (rows non-decreasing, columns sorted per row)."""
    indptr = np.zeros(shape[0] + 1, dtype=np.int64)
    np.cumsum(np.bincount(rows.astype(np.int64), minlength=shape[0]), out=indptr[1:])
    index_dtype = np.int32 if max(shape) < 2**31 and len(cols) < 2**31 else np.int64
    return sp.csr_matrix((data, cols.astype(index_dtype), indptr.astype(index_dtype)), shape=shape)
