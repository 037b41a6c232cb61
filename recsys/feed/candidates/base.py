"""One interface for every candidate source, and the request they all answer.

A source is a small class with a ``name``, a ``quota`` and ``candidates(request) -> (items, scores)``:
at most ``quota`` dense post indices, best first by the source's own score, every one of them
eligible for the request (:meth:`Request.eligible`). Adding a source is a new file and one line in
the pipeline's configuration, never an edit in the middle of a request.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import numpy as np

from recsys.feed.data import DAY, Catalog
from recsys.feed.embeddings import FeedEmbeddings
from recsys.feed.state import FeatureStore


@dataclass
class FeedContext:
    """What sources, features and slate rules share: the catalog, the live store and the vectors.

    Args:
        catalog (Catalog): Post metadata.
        store (FeatureStore): Real-time state (events before the request time).
        embeddings (FeedEmbeddings): User/post vectors.
        max_age (int): Posts older than this many seconds are never candidates. (default: 7 days)
    """

    catalog: Catalog
    store: FeatureStore
    embeddings: FeedEmbeddings
    max_age: int = 7 * DAY
    _by_creator: tuple[np.ndarray, np.ndarray] | None = None

    def fresh_items(self, now: int, max_age: int | None = None) -> np.ndarray:
        """Posts published in ``[now - max_age, now]`` (sorted indices)."""
        created = self.catalog.created_ts
        age = self.max_age if max_age is None else max_age
        return np.flatnonzero((created <= now) & (created >= now - age))

    def creator_posts(self, creators: np.ndarray) -> np.ndarray:
        """Every post of the given creators."""
        if self._by_creator is None:
            order = np.argsort(self.catalog.creator, kind="stable")
            self._by_creator = (order, self.catalog.creator[order])
        order, sorted_creators = self._by_creator
        creators = np.asarray(creators, dtype=np.int64)
        lo = np.searchsorted(sorted_creators, creators, side="left")
        hi = np.searchsorted(sorted_creators, creators, side="right")
        counts = hi - lo
        if counts.sum() == 0:
            return np.empty(0, np.int64)
        # the ranges [lo, hi) concatenated, without a Python loop over creators
        starts = np.repeat(lo - np.r_[0, np.cumsum(counts)[:-1]], counts)
        return order[starts + np.arange(counts.sum())]


@dataclass
class Request:
    """One feed request: who, when, and the posts they have already seen (sorted)."""

    user: int
    now: int
    seen: np.ndarray
    context: FeedContext

    @classmethod
    def build(cls, context: FeedContext, user: int, now: int) -> Request:
        return cls(int(user), int(now), np.sort(context.store.seen_items(int(user))), context)

    def eligible(self, items: np.ndarray) -> np.ndarray:
        """bool mask: published, not older than the age cap, not seen, not the user's own."""
        items = np.asarray(items, dtype=np.int64)
        cat = self.context.catalog
        created = cat.created_ts[items]
        ok = (created <= self.now) & (created >= self.now - self.context.max_age)
        ok &= cat.creator[items] != self.user
        if len(self.seen):
            at = np.minimum(np.searchsorted(self.seen, items), len(self.seen) - 1)
            ok &= self.seen[at] != items
        return ok


class CandidateSource(Protocol):
    """A candidate source (module docstring)."""

    name: str
    quota: int

    def candidates(self, request: Request) -> tuple[np.ndarray, np.ndarray]:
        """At most ``quota`` eligible posts, best first, and the source's scores."""


def top_eligible(request: Request, items: np.ndarray, scores: np.ndarray, quota: int) -> tuple[np.ndarray, np.ndarray]:
    """The ``quota`` best eligible ``items`` by ``scores`` (ties: lower index first)."""
    items, scores = np.asarray(items, dtype=np.int64), np.asarray(scores, dtype=np.float64)
    keep = request.eligible(items)
    items, scores = items[keep], scores[keep]
    if len(items) > quota:
        part = np.argpartition(-scores, quota - 1)[:quota]
        items, scores = items[part], scores[part]
    order = np.lexsort((items, -scores))
    return items[order], scores[order]
