"""A :class:`~recsys.data.dataset.Dataset` as it was at a cut-off time.

The ranker's GNN score must come from a GNN that never saw the ranker's training window (otherwise the
score of a (user, post) pair the user clicked in that window already encodes the label), so the feed
trains its feature GNN on :func:`dataset_before` the window's start.
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import scipy.sparse as sp

from recsys.data.dataset import Dataset


def _keep(matrix: sp.csr_matrix, mask: np.ndarray) -> sp.csr_matrix:
    rows = np.repeat(np.arange(matrix.shape[0]), np.diff(matrix.indptr))[mask]
    indptr = np.zeros(matrix.shape[0] + 1, dtype=np.int64)
    np.cumsum(np.bincount(rows, minlength=matrix.shape[0]), out=indptr[1:])
    return sp.csr_matrix((matrix.data[mask], matrix.indices[mask], indptr), shape=matrix.shape)


def dataset_before(dataset: Dataset, cutoff_ts: int) -> Dataset:
    """Positives, follows and events strictly before ``cutoff_ts`` (same id maps).

    Args:
        dataset (Dataset): Must have ``timestamps`` (and ``follow_timestamps`` when it has follows).
        cutoff_ts (int): Unix seconds; nothing at or after it is kept.
    """
    if dataset.timestamps is None:
        raise ValueError(f"{dataset.name}: no timestamps; a cut-off needs them")
    times = dataset.timestamps.tocsr()
    positives = dataset.user_items.tocsr()
    if not np.array_equal(times.indices, positives.indices):
        raise ValueError(f"{dataset.name}: timestamps do not have the sparsity of the positives")
    keep = times.data < cutoff_ts
    follows, follow_times = dataset.follows, dataset.follow_timestamps
    if follows is not None and follow_times is not None:
        ft = follow_times.tocsr()
        fkeep = ft.data < cutoff_ts
        follows, follow_times = _keep(follows.tocsr(), fkeep), _keep(ft, fkeep)
    events = dataset.events
    if events is not None:
        events = events[events["ts"].to_numpy() < cutoff_ts].reset_index(drop=True)
    return replace(
        dataset,
        user_items=_keep(positives, keep),
        timestamps=_keep(times, keep),
        follows=follows,
        follow_timestamps=follow_times,
        events=events,
    )
