"""The request path: route the user, get features and vector (cache-aside), score top-k, log exposure.

``RecommendService.recommend`` is what ``GET /recommend/{user_id}`` runs; the route only parses and
serialises. Per request it does one cache round trip, at most one ONNX call (none on a cached
vector), one C++ top-k over the item matrix with the seen items excluded, and builds plain dicts.

Which vector a user gets:

- known to the model: its trained vector (``user_encoder.onnx``); fallback ``None``;
- unknown, with recent interactions or followees the model knows: fold-in (``fold_in.onnx``);
  fallback ``"cold_start"``;
- otherwise (or when the model has no fold-in graph): the most popular items; fallback ``"popular"``.

Items the user interacted with recently (cache) are excluded as well as the training seen items, so
an interaction sent to ``POST /feedback`` shows up in the next list.

With ``result_cache`` on, the scan computes the top ``RESULT_DEPTH`` (= max k) once and caches that
ranking beside the vector; later requests of any ``k`` slice it without touching the catalogue,
until feedback or the TTL drops both. (The scan over 100k items is ~90% of a request's CPU.)
"""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from recsys.schemas import ENGAGEMENT_EVENTS
from serving.cache import CacheLookup, FeatureCache, TopList, UserFeatures
from serving.events import EventSink, ExposureEvent, OutcomeEvent
from serving.features import FeatureSource
from serving.loading import ModelStore, ServingModel
from serving.metrics import ServingMetrics
from serving.routing import Router

#: Depth of a cached ranking; the API's largest k.
RESULT_DEPTH = 100


class ModelUnavailable(RuntimeError):
    """The model the router picked is not loaded (answered with 503)."""


@dataclass(slots=True)
class Recommendation:
    """What ``GET /recommend`` returns (before serialisation)."""

    user_id: str
    items: list[dict[str, Any]]
    arm: str
    experiment: str | None
    model: str
    model_version: str
    request_id: str
    fallback: str | None

    def as_dict(self) -> dict[str, Any]:
        return {
            "user_id": self.user_id, "items": self.items, "arm": self.arm, "experiment": self.experiment,
            "model": self.model, "model_version": self.model_version, "request_id": self.request_id,
            "fallback": self.fallback,
        }


class RecommendService:
    """Everything the routes need, wired once at start-up (see the module docstring)."""

    def __init__(self, store: ModelStore, cache: FeatureCache, source: FeatureSource, router: Router,
                 sink: EventSink, metrics: ServingMetrics, *, vector_cache: bool = True,
                 result_cache: bool = True) -> None:
        from recsys.topk import get_topk_backend

        self.store = store
        self.cache = cache
        self.source = source
        self.router = router
        self.sink = sink
        self.metrics = metrics
        self.vector_cache = vector_cache
        self.result_cache = result_cache and vector_cache
        self.topk = get_topk_backend()
        m = metrics
        self._hit_vec, self._miss_vec = m.cache_hits.labels("vector"), m.cache_misses.labels("vector")
        self._hit_feat, self._miss_feat = m.cache_hits.labels("features"), m.cache_misses.labels("features")
        self._hit_top = m.cache_hits.labels("ranking")

    def _features(self, user_id: str, lookup: CacheLookup, max_recent: int) -> UserFeatures:
        if lookup.features is not None:
            self._hit_feat.inc()
            return lookup.features
        self._miss_feat.inc()
        source = self.source.get(user_id)
        self.cache.put_features(user_id, source)
        # Interactions fed back before this fill are newer than the source's (the cache merged
        # them the same way).
        return UserFeatures((lookup.pending_recent + source.recent_items)[:max_recent], source.followees)

    def _top_k(self, model: ServingModel, vector: np.ndarray, k: int, exclude: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        users = torch.from_numpy(np.ascontiguousarray(vector, dtype=np.float32).reshape(1, -1))
        exclude = np.ascontiguousarray(exclude, dtype=np.int64)
        indptr = torch.tensor([0, len(exclude)], dtype=torch.int64)
        idx, scores = self.topk.score_topk(users, model.item_matrix, k, indptr, torch.from_numpy(exclude))
        return idx[0].numpy(), scores[0].numpy()

    def _popular(self, model: ServingModel, k: int, exclude: list[int]) -> tuple[np.ndarray, np.ndarray]:
        items, scores = model.popular_items, model.popular_scores
        if exclude:
            keep = ~np.isin(items, np.asarray(exclude, dtype=np.int64))
            items, scores = items[keep], scores[keep]
        return items[:k], scores[:k]

    def recommend(self, user_id: str, k: int) -> Recommendation:
        """Top-``k`` items for ``user_id`` (external id as a string), ``1 <= k <= RESULT_DEPTH``."""
        assignment = self.router.assign(user_id)
        model = self.store.get(assignment.model)
        if model is None:
            raise ModelUnavailable(f"model {assignment.model!r} is not loaded")
        lookup = self.cache.lookup(user_id, model.version)
        features = self._features(user_id, lookup, model.max_recent)
        recent = model.item_indices(features.recent_items, model.max_recent)
        user_idx = model.user_index(user_id)
        cached_top = lookup.top if self.result_cache else None
        vector = lookup.vector
        fallback: str | None = None
        exclude = np.asarray(recent, dtype=np.int64)
        if user_idx < 0:
            followees = model.user_indices(features.followees, model.max_followees)
            if model.has_fold_in and (recent or followees):
                fallback = "cold_start"
                if vector is None and cached_top is None:
                    vector = model.encode_new(recent, followees)
            else:
                fallback = "popular"
        elif vector is None and cached_top is None:
            vector = model.encode_known(user_idx)
        if fallback == "popular":
            idx, scores = self._popular(model, k, recent)
        elif cached_top is not None:
            self._hit_top.inc()
            idx, scores = cached_top.items[:k], cached_top.scores[:k]
        else:
            if lookup.vector is not None:
                self._hit_vec.inc()
            else:
                self._miss_vec.inc()
            if user_idx >= 0:
                exclude = np.concatenate([model.seen_row(user_idx), exclude])
            depth = RESULT_DEPTH if self.result_cache else k
            idx, scores = self._top_k(model, vector, depth, exclude)
            if self.vector_cache and (lookup.vector is None or self.result_cache):
                top = TopList(idx, scores) if self.result_cache else None
                self.cache.put_vector(user_id, model.version, vector, top)
            idx, scores = idx[:k], scores[:k]
        if fallback is not None:
            self.metrics.fallbacks.labels(model.name, fallback).inc()
        item_ids = model.item_ids
        items = [
            {"item_id": item_ids[i], "score": float(s), "rank": rank}
            for rank, (i, s) in enumerate(zip(idx.tolist(), scores.tolist()), start=1)
            if i >= 0
        ]
        request_id = uuid.uuid4().hex
        self.sink.exposure(ExposureEvent(
            request_id=request_id, ts=time.time(), experiment=assignment.experiment, arm=assignment.arm,
            user_id=user_id, model=model.name, model_version=model.version,
            items=tuple(it["item_id"] for it in items), fallback=fallback,
        ))
        return Recommendation(user_id, items, assignment.arm, assignment.experiment, model.name, model.version,
                              request_id, fallback)

    def feedback(self, request_id: str, user_id: str, item_id: str, kind: str) -> bool:
        """Record an outcome; engagements also go to the user's recent interactions (and drop the
        cached vector). Returns whether the cache recorded it."""
        self.sink.outcome(OutcomeEvent(request_id=request_id, ts=time.time(), user_id=user_id, item_id=item_id,
                                       kind=kind))
        if kind in ENGAGEMENT_EVENTS:
            return self.cache.append_interaction(user_id, item_id)
        return False
