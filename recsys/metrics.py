"""Offline top-K ranking metrics, computed per user and then averaged over users.

Everything starts from *ranked lists*: ``topk_items[n, K]`` holds dense item indices, best first,
padded with ``-1`` where fewer than ``K`` items were ranked, and row ``u`` of ``heldout`` (CSR
``[n, n_items]``) holds the held-out positives of the same user. Only users with a non-empty held-out
set count (the Gowalla / LightGCN protocol); for the others every per-user value is ``NaN``.

Definitions, for a user with held-out set ``T`` and list ``L`` cut at ``k``:

* ``recall@k``    = ``|L ∩ T| / |T|`` (the LightGCN protocol; not capped at ``k``)
* ``precision@k`` = ``|L ∩ T| / k``
* ``hit_rate@k``  = ``1`` if ``L ∩ T`` is not empty
* ``ndcg@k``      = DCG / IDCG with binary relevance, DCG = ``sum_{hits at rank r} 1 / log2(r + 1)``
  (ranks from 1), IDCG the DCG of ``min(|T|, k)`` hits at the top
* ``mrr@k``       = ``1 / rank`` of the first hit within the top ``k``, ``0`` without one (truncated MRR,
  not the reciprocal rank in the full ranking)
* ``pop_mean@k``  = mean training popularity (number of training users) of the recommended items;
  ``pop_bias@k`` = the same divided by the mean popularity of all items (``1`` = as popular as an average
  item, ``>1`` = skewed to popular items). Both need ``item_popularity``; a list of padding only
  has no popularity and is left out of these two averages.
* ``coverage@k``  = distinct recommended items over all evaluated users / ``n_items`` (a catalogue
  metric: computed on the set of lists, not per user).

Hits are found without a Python loop per user: the held-out pairs become sorted keys
``row * n_items + item`` (CSR order is already sorted) and every recommended pair is looked up with
one ``np.searchsorted``.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import scipy.sparse as sp

#: Per-user metric names, in the order tables show them (``@k`` appended).
PER_USER_METRICS = ("recall", "ndcg", "hit_rate", "precision", "mrr")


def _check_lists(topk_items: np.ndarray, ks: Sequence[int]) -> np.ndarray:
    topk_items = np.asarray(topk_items)
    if topk_items.ndim != 2:
        raise ValueError(f"topk_items must be 2-d [n_users, K], got shape {topk_items.shape}")
    if not np.issubdtype(topk_items.dtype, np.integer):
        raise ValueError(f"topk_items must hold integer item indices, got {topk_items.dtype}")
    if not ks or min(ks) < 1 or max(ks) > topk_items.shape[1]:
        raise ValueError(f"ks={tuple(ks)} must lie in [1, {topk_items.shape[1]}] (the lists' length)")
    return topk_items.astype(np.int64, copy=False)


def hit_matrix(topk_items: np.ndarray, heldout: sp.spmatrix) -> np.ndarray:
    """Boolean ``[n, K]``: is ``topk_items[u, j]`` in row ``u`` of ``heldout``?

    Padding (``-1``) and out-of-range items are never hits.

    Raises:
        ValueError: mismatched row counts, or a list that repeats an item (a ranking cannot, and a
            repeated hit would be counted twice).
    """
    topk_items = np.asarray(topk_items, dtype=np.int64)
    heldout = sp.csr_matrix(heldout)
    if heldout.shape[0] != topk_items.shape[0]:
        raise ValueError(f"{topk_items.shape[0]} ranked lists but {heldout.shape[0]} held-out rows")
    if not heldout.has_sorted_indices:
        heldout = heldout.sorted_indices()
    n, n_items = heldout.shape
    valid = (topk_items >= 0) & (topk_items < n_items)
    _check_distinct(topk_items, valid)
    rows = np.repeat(np.arange(n, dtype=np.int64), np.diff(heldout.indptr))
    nonzero = heldout.data != 0
    keys = (rows * n_items + heldout.indices)[nonzero]  # sorted: CSR is row-major with sorted indices
    queries = np.arange(n, dtype=np.int64)[:, None] * n_items + topk_items
    pos = np.searchsorted(keys, queries)
    found = keys[np.minimum(pos, len(keys) - 1)] == queries if len(keys) else np.zeros_like(valid)
    return found & (pos < len(keys)) & valid


def _check_distinct(topk_items: np.ndarray, valid: np.ndarray) -> None:
    s = np.sort(np.where(valid, topk_items, -1), axis=1)
    dup = (s[:, 1:] == s[:, :-1]) & (s[:, 1:] >= 0)
    if dup.any():
        row = int(np.flatnonzero(dup.any(axis=1))[0])
        raise ValueError(f"ranked list {row} repeats an item; each list must hold distinct items")


def per_user_metrics(
    topk_items: np.ndarray,
    heldout: sp.spmatrix,
    ks: Sequence[int] = (20,),
    item_popularity: np.ndarray | None = None,
) -> dict[str, np.ndarray]:
    """Per-user metrics of ranked lists against held-out positives.

    Args:
        topk_items (np.ndarray): ``[n, K]`` dense item indices, best first, ``-1`` padding.
        heldout (sp.spmatrix): ``[n, n_items]`` held-out positives, row ``u`` for list ``u``.
        ks (Sequence[int]): Cut-offs, each ``<= K``. (default: ``(20,)``)
        item_popularity (np.ndarray, optional): ``[n_items]`` training popularity; adds
            ``pop_mean@k`` and ``pop_bias@k``. (default: None)

    Returns:
        dict[str, np.ndarray]: ``"<metric>@<k>"`` -> float64 ``[n]`` (``NaN`` for users without
        held-out items), plus ``"n_relevant"`` (int64 ``[n]``, the held-out set sizes).
    """
    topk_items = _check_lists(topk_items, ks)
    heldout = sp.csr_matrix(heldout, copy=True)
    heldout.eliminate_zeros()  # an explicit 0 is not a held-out positive
    hits = hit_matrix(topk_items, heldout)
    n_relevant = np.diff(heldout.indptr).astype(np.int64)
    has = n_relevant > 0
    width = topk_items.shape[1]
    ranks = np.arange(1, width + 1, dtype=np.float64)
    discount = 1.0 / np.log2(ranks + 1.0)
    ideal = np.concatenate([[0.0], np.cumsum(discount)])  # ideal[m] = IDCG of m hits at the top
    first_hit = np.where(hits.any(axis=1), hits.argmax(axis=1), width)  # 0-based rank, width = none

    out: dict[str, np.ndarray] = {"n_relevant": n_relevant}
    with np.errstate(divide="ignore", invalid="ignore"):
        for k in ks:
            n_hits = hits[:, :k].sum(axis=1).astype(np.float64)
            dcg = hits[:, :k] @ discount[:k]
            idcg = ideal[np.minimum(n_relevant, k)]
            values = {
                "recall": n_hits / n_relevant,
                "ndcg": dcg / idcg,
                "hit_rate": (n_hits > 0).astype(np.float64),
                "precision": n_hits / k,
                "mrr": np.where(first_hit < k, 1.0 / (first_hit + 1.0), 0.0),
            }
            if item_popularity is not None:
                pop = np.asarray(item_popularity, dtype=np.float64)
                listed = topk_items[:, :k]
                ok = (listed >= 0) & (listed < len(pop))
                pop_sum = np.where(ok, pop[np.where(ok, listed, 0)], 0.0).sum(axis=1)
                values["pop_mean"] = pop_sum / ok.sum(axis=1)
                values["pop_bias"] = values["pop_mean"] / pop.mean() if pop.size and pop.mean() > 0 else (
                    np.full(len(pop_sum), np.nan)
                )
            for name, v in values.items():
                out[f"{name}@{k}"] = np.where(has, v, np.nan)
    return out


def aggregate_metrics(
    per_user: dict[str, np.ndarray],
    topk_items: np.ndarray,
    ks: Sequence[int],
    n_items: int,
    rows: np.ndarray | None = None,
) -> dict[str, float]:
    """Average per-user metrics over users with held-out items and add ``coverage@k``.

    Args:
        per_user (dict): Output of :func:`per_user_metrics`.
        topk_items (np.ndarray): The same ``[n, K]`` lists (for coverage).
        ks (Sequence[int]): Cut-offs.
        n_items (int): Catalogue size, the denominator of coverage.
        rows (np.ndarray, optional): Boolean mask or indices of the users to aggregate over (a slice).

    Returns:
        dict[str, float]: each ``"<metric>@<k>"`` averaged, ``"coverage@<k>"``, and ``"n_users"``
        (users with held-out items in ``rows``). Averages of an empty set are ``NaN``.
    """
    topk_items = np.asarray(topk_items)
    selected = np.ones(len(topk_items), dtype=bool)
    if rows is not None:
        rows = np.asarray(rows)
        selected = rows if rows.dtype == bool else np.isin(np.arange(len(topk_items)), rows)
    selected = selected & (per_user["n_relevant"] > 0)
    result: dict[str, float] = {}
    for key, values in per_user.items():
        if key == "n_relevant":
            continue
        chosen = values[selected]
        chosen = chosen[~np.isnan(chosen)]
        result[key] = float(chosen.mean()) if chosen.size else float("nan")
    for k in ks:
        listed = topk_items[selected, :k]
        distinct = np.unique(listed[(listed >= 0) & (listed < n_items)])
        result[f"coverage@{k}"] = len(distinct) / n_items if n_items else float("nan")
    result["n_users"] = int(selected.sum())
    return result


def ranking_metrics(
    topk_items: np.ndarray,
    heldout: sp.spmatrix,
    ks: Sequence[int] = (20,),
    item_popularity: np.ndarray | None = None,
    n_items: int | None = None,
) -> dict[str, float]:
    """Metrics of ranked lists, averaged over users with a non-empty held-out set.

    Args:
        topk_items (np.ndarray): ``[n, K]`` dense item indices, best first, ``-1`` padding; the items a
            user trained on must already be left out (the caller ranks "all items not in the user's
            train set").
        heldout (sp.spmatrix): ``[n, n_items]`` held-out positives of the same users.
        ks (Sequence[int]): Cut-offs, each ``<= K``. (default: ``(20,)``)
        item_popularity (np.ndarray, optional): ``[n_items]`` training popularity, for ``pop_mean@k``
            and ``pop_bias@k``. (default: None)
        n_items (int, optional): Catalogue size for coverage. (default: ``heldout.shape[1]``)

    Returns:
        dict[str, float]: ``recall@k, ndcg@k, hit_rate@k, precision@k, mrr@k, coverage@k`` for each k,
        ``pop_mean@k, pop_bias@k`` when popularity is given, and ``n_users``.
    """
    per_user = per_user_metrics(topk_items, heldout, ks, item_popularity)
    n_items = heldout.shape[1] if n_items is None else n_items
    return aggregate_metrics(per_user, topk_items, ks, n_items)
