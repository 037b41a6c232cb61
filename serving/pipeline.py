"""The request path: route the user, get features and vector (cache-aside), score top-k, log exposure.

``RecommendService.recommend`` is what ``GET /recommend/{user_id}`` runs; the route only parses and
serialises. Per request it does one cache round trip, at most one ONNX call (none on a cached
vector), one C++ top-k over the item matrix with the seen items excluded, and builds plain dicts.

A ``feed-ranker`` model (:class:`serving.feed_model.FeedModel`) skips all of that: its own pipeline
(candidates -> features -> ONNX ranker -> slate) ranks the user at the request's time, and every
loaded feed model is fed each served list's impressions (:meth:`RecommendService.log_exposure`) and
each engagement of :meth:`RecommendService.feedback`.

Which vector a user gets (encoder models):

- known to the model: its trained vector (``user_encoder.onnx``); fallback ``None``;
- unknown, with recent interactions or followees the model knows: fold-in (``fold_in.onnx``);
  fallback ``"cold_start"``;
- otherwise (or when the model has no fold-in graph): the most popular items; fallback ``"popular"``.

Items the user interacted with recently (cache) are excluded as well as the training seen items, so
an interaction sent to ``POST /feedback`` shows up in the next list.

With ``result_cache`` on, the scan computes the top ``RESULT_DEPTH`` (= max k) once and caches that
ranking beside the vector; later requests of any ``k`` slice it without touching the catalogue,
until feedback or the TTL drops both. (The scan over 100k items is ~90% of a request's CPU.)

Interleaving (the router's assignment has ``mode == "interleave"``): both arms' models rank the user's
top-``k`` as above, ``abtest.interleaving.team_draft_interleave`` merges them (coin flips seeded by the
request id, so the list is replayable), and the answer has arm ``"interleaved"``, model
``"<a>+<b>"``, version ``"<va>+<vb>"`` and ``item_arms``: the arm credited with each position
(``"shared"`` when both arms ranked the item next). Each item keeps its contributing model's score.

Events: ``recommend`` builds the exposure (the event log's own :class:`abtest.events.Exposure`, built once
per request), :meth:`RecommendService.log_exposure` writes it; the route answers only after that
returned. When the log cannot store it (Redis down, disk full) the list is still served, marked
``logged: false`` and counted in ``feedrec_exposures_unlogged_total``: a user keeps their feed through
an event-log outage, and nothing unacknowledged is claimed as logged. ``feedback`` writes the outcome,
which the sink may reject (unknown request, item not shown, other user) or recognise as a retry.
"""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from abtest.assignment import Assignment
from abtest.events import EventLogError, Exposure, Outcome
from abtest.interleaving import team_draft_interleave
from feedrec_common.parquet_tables import ENGAGEMENT_EVENTS
from recsys.topk import get_topk_backend
from serving.arm_router import SHARED_ITEM_ARM, ArmRouter
from serving.cache import CacheLookup, FeatureCache, TopList, UserFeatures
from serving.features import FeatureSource
from serving.feed_model import STAGES as FEED_STAGES
from serving.feed_model import FeedModel
from serving.loading import ModelStore, ServingModel
from serving.service_metrics import ServingMetrics
from serving.sinks import EventSink

#: Depth of a cached ranking; the API's largest k.
RESULT_DEPTH = 100


class ModelUnavailable(RuntimeError):
    """The model the router picked is not loaded (answered with 503; ``arm`` is the routed arm)."""

    arm: str = "none"


class EventLogUnavailable(RuntimeError):
    """The event sink could not store an outcome; nothing was acknowledged (answered with 503)."""


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
    item_arms: list[str] | None = None
    exposure: Exposure | None = None
    #: Whether the event log stored the exposure (set by :meth:`RecommendService.log_exposure`).
    logged: bool = False

    def as_dict(self) -> dict[str, Any]:
        return {
            "user_id": self.user_id, "items": self.items, "arm": self.arm, "experiment": self.experiment,
            "model": self.model, "model_version": self.model_version, "request_id": self.request_id,
            "fallback": self.fallback, "item_arms": self.item_arms, "logged": self.logged,
        }


class RecommendService:
    """Everything the routes need, wired once at start-up (see the module docstring)."""

    def __init__(self, store: ModelStore, cache: FeatureCache, source: FeatureSource, router: ArmRouter,
                 sink: EventSink, metrics: ServingMetrics, *, vector_cache: bool = True,
                 result_cache: bool = True) -> None:
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
        self._unlogged = m.exposures_unlogged

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
        if model.compact is not None:
            idx, scores = self.topk.score_topk_compact(users, model.compact, k, model.topk_oversample, indptr,
                                                       torch.from_numpy(exclude))
        else:
            idx, scores = self.topk.score_topk(users, model.item_matrix, k, indptr, torch.from_numpy(exclude))
        return idx[0].numpy(), scores[0].numpy()

    def _popular(self, model: ServingModel, k: int, exclude: list[int]) -> tuple[np.ndarray, np.ndarray]:
        items, scores = model.popular_items, model.popular_scores
        if exclude:
            keep = ~np.isin(items, np.asarray(exclude, dtype=np.int64))
            items, scores = items[keep], scores[keep]
        return items[:k], scores[:k]

    def _model(self, name: str) -> ServingModel:
        model = self.store.get(name)
        if model is None:
            raise ModelUnavailable(f"model {name!r} is not loaded")
        return model

    def _feed_models(self) -> list[FeedModel]:
        return [m for m in self.store.models.values() if isinstance(m, FeedModel)]

    def _rank_feed(self, model: FeedModel, user_id: str, k: int, ts: float) -> tuple[list[Any], list[float], str | None]:
        items, scores, fallback, timings = model.rank(user_id, k, ts)
        stage = self.metrics.feed_stage_seconds
        for name in ("sync", *FEED_STAGES):
            stage.labels(model.name, name).observe(timings[name])
        self.metrics.feed_candidates.labels(model.name).observe(timings["n_candidates"])
        if fallback is not None:
            self.metrics.fallbacks.labels(model.name, fallback).inc()
        return items, scores, fallback

    def _rank(self, model: ServingModel | FeedModel, user_id: str, k: int,
              ts: float) -> tuple[list[Any], list[float], str | None]:
        """Top-``k`` item ids and scores of ``model`` for ``user_id``, and the fallback used."""
        if isinstance(model, FeedModel):
            return self._rank_feed(model, user_id, k, ts)
        lookup = self.cache.lookup(user_id, model.version)
        features = self._features(user_id, lookup, model.max_recent)
        recent = model.item_indices(features.recent_items, model.max_recent)
        user_idx = model.user_index(user_id)
        if user_idx >= 0 and model.is_blank(user_idx):
            user_idx = -1  # known id, but nothing learned about them: same path as a new user
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
        pairs = [(item_ids[i], s) for i, s in zip(idx.tolist(), scores.tolist()) if i >= 0]
        return [p[0] for p in pairs], [float(p[1]) for p in pairs], fallback

    def recommend(self, user_id: str, k: int, ts: float | None = None) -> Recommendation:
        """Top-``k`` items for ``user_id`` (external id as a string), ``1 <= k <= RESULT_DEPTH``.

        The exposure is built (``Recommendation.exposure``) but not written: call
        :meth:`log_exposure` before answering (the route does it off the event loop).

        Args:
            user_id (str): External user id.
            k (int): List length.
            ts (float, optional): Event time stamped on the exposure. (default: now)

        Raises:
            ModelUnavailable: The routed model is not loaded (its ``arm`` attribute names the routed arm).
        """
        assignment = self.router.assign(user_id)
        request_id = uuid.uuid4().hex
        ts = time.time() if ts is None else ts
        try:
            if assignment.mode == "interleave" and len(getattr(assignment, "arm_models", ())) == 2:
                return self._interleaved(assignment, user_id, k, request_id, ts)
            model = self._model(assignment.model)
        except ModelUnavailable as exc:
            exc.arm = assignment.arm
            raise
        items, scores, fallback = self._rank(model, user_id, k, ts)
        # one exposure per request: the request id is its event id (no second uuid on the hot path)
        exposure = Exposure(
            event_id=request_id, request_id=request_id, ts=ts, experiment=assignment.experiment,
            arm=assignment.arm, user=user_id, model=model.name, model_version=model.version, items=items,
            fallback=fallback,
        )  # fmt: skip
        return Recommendation(user_id, _items(items, scores), assignment.arm, assignment.experiment, model.name,
                              model.version, request_id, fallback, exposure=exposure)  # fmt: skip

    def _interleaved(self, assignment: Assignment, user_id: str, k: int, request_id: str, ts: float) -> Recommendation:
        """Team-draft merge of both arms' top-``k`` (seeded by the request id); ``item_arms`` says which
        arm contributed each position (``"shared"`` when both ranked it next)."""
        (arm_a, name_a), (arm_b, name_b) = assignment.arm_models
        model_a, model_b = self._model(name_a), self._model(name_b)
        items_a, scores_a, fallback_a = self._rank(model_a, user_id, k, ts)
        items_b, scores_b, fallback_b = self._rank(model_b, user_id, k, ts)
        merged = team_draft_interleave(items_a, items_b, request_id=request_id, k=k, arms=(arm_a, arm_b))
        score_a, score_b = dict(zip(items_a, scores_a)), dict(zip(items_b, scores_b))
        # scores of different models are not comparable; each item keeps its contributing model's score
        scores = [score_b[item] if team == arm_b else score_a.get(item, score_b.get(item, 0.0))
                  for item, team in zip(merged.items, merged.teams)]  # fmt: skip
        item_arms = tuple(SHARED_ITEM_ARM if team is None else team for team in merged.teams)
        model, version = f"{model_a.name}+{model_b.name}", f"{model_a.version}+{model_b.version}"
        fallback = fallback_a or fallback_b
        exposure = Exposure(
            event_id=request_id, request_id=request_id, ts=ts, experiment=assignment.experiment,
            arm=assignment.arm, user=user_id,
            model=model, model_version=version, items=list(merged.items), fallback=fallback,
            item_arms=list(item_arms),
        )  # fmt: skip
        return Recommendation(user_id, _items(list(merged.items), scores), assignment.arm, assignment.experiment,
                              model, version, request_id, fallback, item_arms=list(item_arms), exposure=exposure)  # fmt: skip

    @property
    def sink_blocks(self) -> bool:
        """Whether the sink's appends block (fsync, network): then they run in a worker thread."""
        return bool(getattr(self.sink, "blocking", True))

    def log_exposure(self, rec: Recommendation) -> bool:
        """Write the exposure of ``rec``; returns once the sink acknowledged it (``True``) or failed
        (``False``: counted, and ``rec.logged`` stays ``False`` so the response says so). A failed
        exposure is not retried: the list is served unlogged rather than late.

        Every loaded feed model counts the list's impressions whatever the log did: the user saw it."""
        exp = rec.exposure
        for feed in self._feed_models():
            feed.observe_exposure(exp.user, list(exp.items), exp.ts)
        try:
            self.sink.append_exposure(rec.exposure)
        except EventLogError:
            self.metrics.event_log_errors.labels("exposures").inc()
            self._unlogged.inc()
            return False
        rec.logged = True
        return True

    def feedback(self, request_id: str, user_id: str, item_id: str | int, kind: str, *,
                 event_id: str | None = None, ts: float | None = None) -> bool:
        """Record an outcome; engagements also go to the user's recent interactions (and drop the
        cached vector).

        Returns:
            bool: Whether this call stored the outcome in the event log: ``False`` for a retry of an
            outcome already stored, and for ``impression`` / ``skip`` (accepted, not outcomes of the
            log, they change nothing). The feature cache does not decide it: a cache that missed the
            interaction (Redis down) is counted in ``feedrec_cache_errors_total``, the outcome is
            stored all the same.

        Raises:
            abtest.events.OutcomeRejected: Unknown request, item not shown, or another user.
            EventLogUnavailable: The sink could not store it.
        """
        if kind not in ENGAGEMENT_EVENTS:
            return False
        outcome = Outcome(request_id=request_id, ts=time.time() if ts is None else ts, user=user_id, item=item_id,
                          kind=kind, **({"event_id": event_id} if event_id is not None else {}))  # fmt: skip
        try:
            stored = self.sink.append_outcome(outcome)
        except EventLogError as exc:
            self.metrics.event_log_errors.labels("outcomes").inc()
            raise EventLogUnavailable(str(exc)) from exc
        if not stored:  # a client retry: applied the first time
            return False
        self.cache.append_interaction(user_id, str(item_id))
        for feed in self._feed_models():  # real-time features: item counters, followees' engagements
            feed.observe_outcome(user_id, item_id, kind, outcome.ts)
        return True


def _items(items: list[Any], scores: list[float]) -> list[dict[str, Any]]:
    return [{"item_id": item, "score": score, "rank": rank}
            for rank, (item, score) in enumerate(zip(items, scores), start=1)]  # fmt: skip
