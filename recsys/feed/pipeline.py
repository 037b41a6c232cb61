"""The feed as one library object: candidates -> features -> ranker -> slate rules.

``FeedPipeline.recommend(user, k, now) -> (items, scores)`` is what serving will wrap (phase 2). The
stages are small named objects assembled in :func:`build_pipeline` from a :class:`FeedConfig`, so a
new source is a new class in :mod:`recsys.feed.candidates` and one line in ``configs/feed/*.yaml``.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
from pydantic import Field

from feedrec_common.config import StrictModel
from recsys.feed.candidates import SOURCES, CandidateSource, FeedContext, Request
from recsys.feed.data import DAY
from recsys.feed.features import build_features
from recsys.feed.slate import apply_slate_rules

#: ``features [n, N_FEATURES] -> logits [n]`` (the torch ranker or its ONNX Runtime twin).
Scorer = Callable[[np.ndarray], np.ndarray]


class FeedConfig(StrictModel):
    """The feed's stages.

    Args:
        sources (dict[str, int]): Source name -> quota, in priority order (a post two sources
            return is credited to the first). (default: gnn 300, in_network 150, social 150,
            trending 150, interest 150; at most 900 candidates)
        max_age_days (float): Age cap of candidates. (default: 7)
        max_per_creator (int): Slate rule: posts of one creator in a list. (default: 2)
    """

    sources: dict[str, int] = Field(
        default_factory=lambda: {"gnn": 300, "in_network": 150, "social": 150, "trending": 150, "interest": 150}
    )
    max_age_days: float = Field(7.0, gt=0)
    max_per_creator: int = Field(2, ge=1)

    def model_post_init(self, __context: object) -> None:
        unknown = sorted(set(self.sources) - set(SOURCES))
        if unknown:
            raise ValueError(f"unknown candidate source(s) {', '.join(unknown)}; known: {', '.join(SOURCES)}")
        if any(q < 1 for q in self.sources.values()):
            raise ValueError("every source quota must be >= 1")


@dataclass
class Candidates:
    """The union of the sources for one request: posts, and the index of the source credited."""

    items: np.ndarray
    source: np.ndarray  # int8 index into FeedPipeline.sources
    timings: dict[str, float] = field(default_factory=dict)


class FeedPipeline:
    """The feed (module docstring).

    Args:
        context (FeedContext): Catalog, store, embeddings and age cap.
        sources (list[CandidateSource]): In priority order.
        scorer (Scorer): The ranker.
        max_per_creator (int): Slate rule. (default: 2)
    """

    def __init__(
        self, context: FeedContext, sources: list[CandidateSource], scorer: Scorer, max_per_creator: int = 2
    ) -> None:
        if not sources:
            raise ValueError("a feed needs at least one candidate source")
        self.context, self.sources, self.scorer = context, sources, scorer
        self.max_per_creator = max_per_creator

    def candidates(self, user: int, now: int) -> Candidates:
        """Every source's posts for the request, deduplicated (first source wins)."""
        request = Request.build(self.context, user, now)
        parts, codes, timings = [], [], {}
        for code, source in enumerate(self.sources):
            t = time.perf_counter()
            try:
                items, _ = source.candidates(request)
            except Exception as error:  # a broken source degrades the feed, never fails the request
                items = np.empty(0, np.int64)
                timings[f"error:{source.name}"] = 1.0
                _warn(source.name, error)
            timings[source.name] = time.perf_counter() - t
            parts.append(np.asarray(items, dtype=np.int64))
            codes.append(np.full(len(items), code, dtype=np.int8))
        items = np.concatenate(parts)
        source = np.concatenate(codes)
        _, first = np.unique(items, return_index=True)
        first = np.sort(first)
        return Candidates(items[first], source[first], timings)

    def rank(self, user: int, now: int, items: np.ndarray) -> np.ndarray:
        """Ranker scores (click logits at the top slot) of ``items`` for ``user`` at ``now``."""
        if len(items) == 0:
            return np.empty(0)
        users = np.full(len(items), user, dtype=np.int64)
        x = build_features(self.context.store, self.context.catalog, self.context.embeddings, users, items, now)
        return np.asarray(self.scorer(x), dtype=np.float64)

    def recommend(self, user: int, k: int, now: int) -> tuple[np.ndarray, np.ndarray]:
        """The served list: ``(items[<=k], scores)``, best first."""
        items, scores, _ = self.recommend_timed(user, k, now)
        return items, scores

    def recommend_timed(self, user: int, k: int, now: int) -> tuple[np.ndarray, np.ndarray, dict[str, float]]:
        """:meth:`recommend` plus seconds per stage (``candidates``, ``features+ranker``, ``slate``)."""
        t0 = time.perf_counter()
        cands = self.candidates(user, now)
        t1 = time.perf_counter()
        scores = self.rank(user, now, cands.items)
        t2 = time.perf_counter()
        keep = apply_slate_rules(
            cands.items, scores, self.context.catalog.creator[cands.items], k, self.max_per_creator
        )
        t3 = time.perf_counter()
        timings = {"candidates": t1 - t0, "features+ranker": t2 - t1, "slate": t3 - t2, "n_candidates": len(cands.items)}
        return cands.items[keep], scores[keep], timings


def build_pipeline(context: FeedContext, scorer: Scorer, config: FeedConfig | None = None) -> FeedPipeline:
    """Assemble the stages named by ``config`` (sources in its order)."""
    config = config or FeedConfig()
    context.max_age = int(config.max_age_days * DAY)
    sources = [SOURCES[name](context, quota=quota) for name, quota in config.sources.items()]
    return FeedPipeline(context, sources, scorer, config.max_per_creator)


def _warn(name: str, error: Exception) -> None:
    import logging

    logging.getLogger(__name__).warning("candidate source %s failed: %s", name, error)
