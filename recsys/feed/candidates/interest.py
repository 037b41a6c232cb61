"""Fresh by interest: the newest posts on the topics the user clicks, nearest to the user's vector."""

from __future__ import annotations

import numpy as np

from recsys.feed.candidates.base import FeedContext, Request, top_eligible
from recsys.feed.data import DAY


class FreshByInterest:
    """Posts younger than ``max_age`` on the user's ``top_topics`` most-clicked topics (7-day
    half-life), scored by the dot product of the user's and the post's (content fold-in) vectors.
    A user with no clicks gets nothing here (trending covers them).

    Args:
        context (FeedContext): Shared feed context.
        quota (int): Posts returned. (default: 200)
        top_topics (int): Topics taken from the user's clicks. (default: 3)
        max_age (int): Seconds; only posts this young. (default: 2 days)
    """

    name = "interest"

    def __init__(self, context: FeedContext, quota: int = 200, top_topics: int = 3, max_age: int = 2 * DAY) -> None:
        self.context, self.quota, self.top_topics, self.max_age = context, quota, top_topics, max_age
        self._cache: tuple[int, np.ndarray, np.ndarray, np.ndarray] | None = None

    def _by_topic(self, now: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        hour = now - now % 3600
        if self._cache is None or self._cache[0] != hour:
            items = self.context.fresh_items(now, self.max_age)
            topics = self.context.catalog.topic[items]
            order = np.argsort(topics, kind="stable")
            items, topics = items[order], topics[order]
            bounds = np.searchsorted(topics, np.arange(self.context.catalog.n_topics + 1))
            self._cache = (hour, items, topics, bounds)
        return self._cache[1], self._cache[2], self._cache[3]

    def candidates(self, request: Request) -> tuple[np.ndarray, np.ndarray]:
        ctx = self.context
        n_topics = ctx.catalog.n_topics
        users = np.full(n_topics, request.user)
        clicks = ctx.store.topic_counters(users, np.arange(n_topics), request.now)[:, 0]
        top = np.argsort(-clicks, kind="stable")[: self.top_topics]
        top = top[clicks[top] > 0]
        if len(top) == 0:
            return np.empty(0, np.int64), np.empty(0)
        items, _, bounds = self._by_topic(request.now)
        pool = np.concatenate([items[bounds[t] : bounds[t + 1]] for t in top])
        emb = ctx.embeddings
        scores = emb.item_vectors[pool] @ emb.user_vector(request.user)
        return top_eligible(request, pool, scores.astype(np.float64), self.quota)
