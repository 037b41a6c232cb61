"""Slate rules: the last stage of the feed, applied to the ranked candidates."""

from __future__ import annotations

import numpy as np


def apply_slate_rules(
    items: np.ndarray, scores: np.ndarray, creators: np.ndarray, k: int, max_per_creator: int
) -> np.ndarray:
    """Positions (into ``items``) of the served list: best score first, at most ``max_per_creator``
    posts of any one creator (a creator's later posts are skipped, not moved down).

    Own and seen posts never reach this stage (:meth:`recsys.feed.candidates.Request.eligible`).
    Returns fewer than ``k`` positions only when the rule leaves fewer eligible posts.
    """
    if max_per_creator < 1:
        raise ValueError(f"max_per_creator must be >= 1, got {max_per_creator}")
    order = np.lexsort((np.asarray(items), -np.asarray(scores, dtype=np.float64)))
    # rank of each post within its creator, in score order: keep the first max_per_creator
    c = np.asarray(creators)[order]
    by_creator = np.lexsort((np.arange(len(c)), c))
    first = np.r_[True, c[by_creator][1:] != c[by_creator][:-1]]
    start = np.maximum.accumulate(np.where(first, np.arange(len(c)), 0))
    rank = np.empty(len(c), dtype=np.int64)
    rank[by_creator] = np.arange(len(c)) - start
    return order[(rank < max_per_creator) | (c < 0)][:k]
