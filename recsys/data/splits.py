"""Temporal train / valid / test split of a timestamped :class:`Dataset`.

The split is *global* in time: every positive is ordered by ``(ts, user, item)`` (the user and item
break ties, so the order and the split are deterministic), the last ``test_frac`` of them is the test
window, the ``valid_frac`` before it the validation window, and the rest is training. A model is thus
always evaluated on what happened *after* everything it trained on, as in production, which a random
or leave-one-out split does not guarantee.

Consequences, by design:

* id maps are unchanged. Users who only appear in the valid/test windows keep their (empty) training
  row: they are the cold-start users the ``cold`` evaluation slice measures. Items first engaged
  with after the cut-off stay in the map as candidates a model has never seen a positive for.
* positives are distinct ``(user, item)`` pairs stamped with their *first* engagement, so a pair lies
  in exactly one window: a pair already positive in train is never a held-out positive (re-engaging a
  known item is not a new discovery). The split still removes any such overlap explicitly.
* ``train.follows`` keeps the follows created before the start of the *test* window: at serving time
  the system knows the follow graph up to now, and following someone is an input to recommending, not
  the outcome being predicted, so the follows made during the validation window are fair context for
  the test period.
* ``train.events`` keeps the raw events (impressions included) strictly before the first validation
  positive in the same ``(ts, user, item)`` order, so exposure features cannot peek into held-out time.
"""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp

from recsys.data.dataset import DataError, Dataset, Split
from recsys.data.sparse import pairs_to_csr


def _before(ts: np.ndarray, users: np.ndarray, items: np.ndarray, key: tuple[int, int, int]) -> np.ndarray:
    """Mask of rows whose ``(ts, user, item)`` sorts strictly before ``key``."""
    t0, u0, i0 = key
    return (ts < t0) | ((ts == t0) & ((users < u0) | ((users == u0) & (items < i0))))


def temporal_split(dataset: Dataset, valid_frac: float = 0.1, test_frac: float = 0.1) -> Split:
    """Split the positives of ``dataset`` by time into train / valid / test.

    Args:
        dataset (Dataset): Must have ``timestamps`` (e.g. from :func:`recsys.data.load_datagen`).
        valid_frac (float): Share of positives in the validation window, just before test; ``0`` gives
            ``split.valid = None``. (default: 0.1)
        test_frac (float): Share of positives in the test window, the most recent ones. (default: 0.1)

    Returns:
        Split: ``kind="temporal"``; ``info`` holds the fractions, the row counts and the cut-off times
        ``valid_start_ts`` / ``test_start_ts`` (time of the first positive of each window; ties at a
        cut-off are ordered by user then item) and ``end_ts``.

    Raises:
        ValueError: fractions outside ``[0, 1)`` or a test window that would be empty.
        DataError: the dataset has no timestamps.
    """
    if not (0.0 <= valid_frac < 1.0 and 0.0 < test_frac < 1.0 and valid_frac + test_frac < 1.0):
        raise ValueError(
            f"need 0 <= valid_frac, 0 < test_frac and valid_frac + test_frac < 1; "
            f"got valid_frac={valid_frac}, test_frac={test_frac}"
        )
    if dataset.timestamps is None:
        raise DataError(f"{dataset.source or dataset.name}: no timestamps; a temporal split needs them")
    positives = dataset.user_items.tocsr().copy()
    positives.sort_indices()
    times = dataset.timestamps.tocsr().copy()
    times.sort_indices()
    if not (
        np.array_equal(positives.indptr, times.indptr) and np.array_equal(positives.indices, times.indices)
    ):
        raise DataError(f"{dataset.name}: timestamps do not have the sparsity of the positives")
    shape = positives.shape
    users = np.repeat(np.arange(shape[0], dtype=np.int64), np.diff(positives.indptr))
    items = positives.indices.astype(np.int64)
    ts = times.data.astype(np.int64)

    n = len(ts)
    n_test = int(round(n * test_frac))
    n_valid = int(round(n * valid_frac))
    if n_test == 0:
        raise ValueError(f"{dataset.name}: {n} positives leave an empty test window at test_frac={test_frac}")
    n_train = n - n_test - n_valid
    order = np.lexsort((items, users, ts))  # by ts, then user, then item
    window = np.empty(n, dtype=np.int8)  # 0 train, 1 valid, 2 test
    window[order[:n_train]] = 0
    window[order[n_train : n_train + n_valid]] = 1
    window[order[n_train + n_valid :]] = 2

    def key_at(rank: int) -> tuple[int, int, int]:
        row = order[rank]
        return int(ts[row]), int(users[row]), int(items[row])

    valid_key = key_at(n_train) if n_valid else key_at(n_train + n_valid)
    test_key = key_at(n_train + n_valid)

    def part(w: int, data: np.ndarray) -> sp.csr_matrix:
        # Rows stay in CSR (row-major) order, so the masked arrays are already sorted.
        m = window == w
        return pairs_to_csr(users[m], items[m], shape, values=data[m], presorted=True)

    ones = np.ones(n, dtype=np.float32)
    train_items, train_times = part(0, ones), part(0, ts)
    held_out = {w: part(w, ones) for w in (1, 2)}
    for w, m in held_out.items():  # pairs positive in train are not held-out discoveries
        overlap = m.multiply(train_items)
        if overlap.nnz:  # pragma: no cover - impossible with first-time positives; kept as a guard
            held_out[w] = (m - overlap).tocsr()
            held_out[w].eliminate_zeros()

    follows = follow_times = None
    if dataset.follows is not None:
        follows, follow_times = _follows_before(dataset, test_key[0])
    events = None
    if dataset.events is not None:
        ev = dataset.events
        keep = _before(ev["ts"].to_numpy(), ev["user"].to_numpy(), ev["item"].to_numpy(), valid_key)
        events = ev.loc[keep].reset_index(drop=True)

    train = Dataset(
        name=dataset.name,
        users=dataset.users,
        items=dataset.items,
        user_items=train_items,
        timestamps=train_times,
        follows=follows,
        events=events,
        source=dataset.source,
        follow_timestamps=follow_times,
        item_creators=dataset.item_creators,
    )
    info = {
        "valid_frac": float(valid_frac),
        "test_frac": float(test_frac),
        "n_train": int(n_train),
        "n_valid": int(held_out[1].nnz),
        "n_test": int(held_out[2].nnz),
        "valid_start_ts": valid_key[0] if n_valid else None,
        "test_start_ts": test_key[0],
        "end_ts": int(ts.max()),
        "follows_before_ts": test_key[0],
        "n_follows": int(follows.nnz) if follows is not None else 0,
    }
    return Split(
        train=train,
        test=held_out[2],
        valid=held_out[1] if n_valid else None,
        valid_timestamps=part(1, ts) if n_valid else None,
        kind="temporal",
        info=info,
    )


def _follows_before(dataset: Dataset, cutoff_ts: int) -> tuple[sp.csr_matrix, sp.csr_matrix | None]:
    """Follows created strictly before ``cutoff_ts``; all of them when their times are unknown."""
    follows = dataset.follows.tocsr()
    if dataset.follow_timestamps is None:
        return follows, None
    times = dataset.follow_timestamps.tocsr()
    keep = times.data < cutoff_ts
    rows = np.repeat(np.arange(follows.shape[0]), np.diff(times.indptr))[keep]
    cols = times.indices[keep]
    return (
        pairs_to_csr(rows, cols, follows.shape, presorted=True),
        pairs_to_csr(rows, cols, follows.shape, values=times.data[keep].astype(np.int64), presorted=True),
    )


def carve_validation(split: Split, n_users: int, fraction: float, seed: int, held_out: str = "random") -> Split:
    """Move a deterministic share of some users' training items into ``valid`` (for train/test splits
    such as Gowalla's, which ship no validation set).

    Args:
        split (Split): The split to carve; ``test`` is unchanged.
        n_users (int): Users to carve from (chosen at random among those with >= 3 training items,
            so each keeps >= 2).
        fraction (float): Share of each chosen user's training items to hold out (at least one).
        seed (int): Seeds the choice of users (and of items, for ``"random"``).
        held_out (str): ``"random"`` items, or each user's ``"latest"`` ones, by ``train.timestamps``
            or else ``train.sequence`` (file order): what a temporal test split holds out, so a
            validation set that should behave like such a test set is carved the same way.
            (default: ``"random"``)

    Returns:
        Split: training positives without the held-out ones (no timestamps, events or sequence),
        the held-out ones as ``valid``.

    Raises:
        DataError: ``"latest"`` for a dataset with neither timestamps nor a sequence.
    """
    train = split.train.user_items.tocsr()
    counts = np.diff(train.indptr)
    rng = np.random.default_rng([seed, 20200725])
    eligible = np.flatnonzero(counts >= 3)  # keep >= 2 training items for every carved user
    chosen = np.sort(rng.choice(eligible, size=min(n_users, len(eligible)), replace=False))
    order = None
    if held_out == "latest":
        order = split.train.timestamps if split.train.timestamps is not None else split.train.sequence
        if order is None:
            raise DataError(f"{split.train.name}: held_out='latest' needs timestamps or a file order "
                            "(Dataset.sequence); this dataset has neither")
        order = order.tocsr()
        if not (np.array_equal(order.indptr, train.indptr) and np.array_equal(order.indices, train.indices)):
            raise DataError(f"{split.train.name}: the order matrix does not have the sparsity of user_items")
    hold = np.zeros(train.nnz, dtype=bool)
    for u in chosen:
        lo, hi = train.indptr[u], train.indptr[u + 1]
        n_hold = max(1, int(round(fraction * (hi - lo))))
        if order is None:
            hold[lo + rng.choice(hi - lo, size=n_hold, replace=False)] = True
        else:  # the n_hold latest; ties (equal times) by item index, deterministically
            hold[lo + np.argsort(order.data[lo:hi], kind="stable")[hi - lo - n_hold :]] = True
    rows = np.repeat(np.arange(train.shape[0]), counts)

    def csr(mask: np.ndarray) -> sp.csr_matrix:  # a mask keeps the row-major order presorted needs
        return pairs_to_csr(rows[mask], train.indices[mask], train.shape, values=train.data[mask], presorted=True)

    ds = split.train
    carved = Dataset(name=ds.name, users=ds.users, items=ds.items, user_items=csr(~hold), timestamps=None,
                     follows=ds.follows, events=None, source=ds.source, item_creators=ds.item_creators)
    info = {**split.info, "valid": f"carved from train: {len(chosen)} users x {fraction:.0%} of items "
                                   f"({held_out}), seed {seed}"}
    return Split(train=carved, test=split.test, valid=csr(hold), kind=split.kind, info=info)
