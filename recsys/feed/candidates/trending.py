"""Trending: the posts gaining clicks fastest (engagement velocity), the same list for everyone."""

from __future__ import annotations

import numpy as np

from recsys.feed.candidates.base import FeedContext, Request, top_eligible
from recsys.feed.state import ITEM_COUNTERS

_CLICKS_6H = ITEM_COUNTERS.index("item_clicks_6h")
_CLICKS_1D = ITEM_COUNTERS.index("item_clicks_1d")


class Trending:
    """Fresh posts by click velocity: clicks decayed with a 6-hour plus a 1-day half-life.

    The ranked list is shared by every request in the same hour, so a request pays only for filtering
    it; when the store changed (a service's stream of feedback changes it on every request) it is
    recomputed at most once per ``refresh_s`` of request time.

    Args:
        context (FeedContext): Shared feed context.
        quota (int): Posts returned. (default: 200)
    """

    name = "trending"

    refresh_s = 60

    def __init__(self, context: FeedContext, quota: int = 200) -> None:
        self.context, self.quota = context, quota
        self._cache: tuple[tuple[int, int], np.ndarray, np.ndarray] | None = None
        self._built_at = 0

    def _ranked(self, now: int) -> tuple[np.ndarray, np.ndarray]:
        store = self.context.store
        key = (now - now % 3600, getattr(store, "version", 0))
        stale = self._cache is None or self._cache[0][0] != key[0]
        stale = stale or (self._cache[0][1] != key[1] and abs(now - self._built_at) >= self.refresh_s)
        if stale:
            self._built_at = now
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
