"""Trending: the posts gaining clicks fastest (engagement velocity), the same list for everyone."""

from __future__ import annotations

import numpy as np

from recsys.feed.candidates.base import FeedContext, Request, top_eligible
from recsys.feed.state import ITEM_COUNTERS

_CLICKS_6H = ITEM_COUNTERS.index("item_clicks_6h")
_CLICKS_1D = ITEM_COUNTERS.index("item_clicks_1d")


class Trending:
    """Fresh posts by click velocity: clicks decayed with a 6-hour plus a 1-day half-life.

    The ranked list is shared by every request in the same hour (and store version), so a request
    pays only for filtering it.

    Args:
        context (FeedContext): Shared feed context.
        quota (int): Posts returned. (default: 200)
    """

    name = "trending"

    def __init__(self, context: FeedContext, quota: int = 200) -> None:
        self.context, self.quota = context, quota
        self._cache: tuple[tuple[int, int], np.ndarray, np.ndarray] | None = None

    def _ranked(self, now: int) -> tuple[np.ndarray, np.ndarray]:
        store = self.context.store
        key = (now - now % 3600, getattr(store, "version", 0))
        if self._cache is None or self._cache[0] != key:
            items = self.context.fresh_items(now)
            counts = store.item_counters(items, now)
            velocity = counts[:, _CLICKS_6H] + counts[:, _CLICKS_1D]
            # keep a margin above the quota for the per-user filters (seen, own posts)
            keep = np.argsort(-velocity, kind="stable")[: self.quota * 4]
            self._cache = (key, items[keep], velocity[keep])
        return self._cache[1], self._cache[2]

    def candidates(self, request: Request) -> tuple[np.ndarray, np.ndarray]:
        items, scores = self._ranked(request.now)
        return top_eligible(request, items, scores, self.quota)
