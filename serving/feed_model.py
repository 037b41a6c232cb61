"""The feed (``recsys.feed``) as one servable model: a ``feed-ranker`` bundle behind ``GET /recommend``.

:func:`load_feed_model` turns a bundle (directory or registry ref, e.g. ``ranker@champion``) into a
:class:`FeedModel`: it verifies the bundle and refuses one whose ONNX ranker fails its parity check
(:func:`recsys.feed.bundle.load_feed_bundle`), reads ``FEEDREC_DATA_DIR`` (post catalog, events and
follows, sharded tables too) and warms the feature state from it, then assembles the pipeline
(candidates -> features -> ONNX ranker -> slate) with the bundle's feed configuration.

Online events reach the state through :meth:`FeedModel.observe_exposure` (each served list: its
impressions) and :meth:`FeedModel.observe_outcome` (clicks, likes, shares of ``POST /feedback``).
They are queued and applied in one batch before the next request (the state's sorted arrays cost a
copy per batch, not per event); a user's own pending events are always applied before their next
list, so what they just saw is out of it. With ``REDIS_URL`` the state is a
:class:`~recsys.feed.live.StreamedFeatureState` shared by every process through a Redis stream.

Failure rules: a candidate source that fails is skipped (``FeedPipeline.candidates``); Redis down
degrades to the local state; a user with no history gets trending and interest candidates
(``fallback: "cold_start"``); a request time before the state's latest event is served at that
event's time (concurrent clients' clocks are not ordered), never refused; and a dataset whose newest
post is older than the age cap at the request's time is served as of its own end
(:meth:`FeedModel.request_time`).
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from recsys.bundle import BundleError
from recsys.feed.bundle import KIND, ONNX_FILE, load_feed_bundle
from recsys.feed.candidates import FeedContext
from recsys.feed.data import CLICK, IMPRESSION, LIKE, SHARE, EventLog, FeedData, load_feed_data
from recsys.feed.live import StreamedFeatureState, warm_state
from recsys.feed.pipeline import FeedConfig, FeedPipeline, build_pipeline

log = logging.getLogger("serving.feed")

FEED_KIND = KIND
_OUTCOME_CODES = {"click": CLICK, "like": LIKE, "share": SHARE}
#: Stage names of :meth:`FeedPipeline.recommend_timed` (Prometheus label values).
STAGES = ("candidates", "features+ranker", "slate")


@dataclass(eq=False)
class FeedModel:
    """A loaded feed (module docstring); quacks like :class:`serving.loading.ServingModel` where the
    service, ``/readyz`` and ``/models`` look (``name``, ``kind``, ``version``, ``provider``, ...)."""

    name: str
    ref: str
    path: Path
    version: str
    manifest: dict[str, Any]
    pipeline: FeedPipeline
    data: FeedData
    store: Any  # FeatureState or StreamedFeatureState
    kind: str = FEED_KIND
    provider: str = "CPUExecutionProvider"
    topk_mode: str = "feed"
    loaded_at: float = field(default_factory=time.time)
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _pending: list[tuple[int, int, int, int, int]] = field(default_factory=list)
    _pending_users: set[int] = field(default_factory=set)
    _new_users: dict[str, int] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self._user_lookup = {str(v): i for i, v in enumerate(self.data.users.ids.tolist())}
        self._item_lookup = {str(v): i for i, v in enumerate(self.data.items.ids.tolist())}
        self._item_ids = self.data.items.ids.tolist()
        created = self.data.catalog.created_ts
        self._newest_post = int(created.max()) if len(created) else 0
        self._frozen_at = max(int(self.data.end_ts), int(self.store.clock), self._newest_post)

    # -- ids -------------------------------------------------------------------------------------
    def user_index(self, user_id: str, create: bool = False) -> int:
        """Dense index of ``user_id``; a user the data never saw gets the next free index when
        ``create`` (its events then count like anyone's), else -1."""
        idx = self._user_lookup.get(user_id)
        if idx is None:
            idx = self._new_users.get(user_id, -1)
            if idx < 0 and create:
                idx = self._new_users[user_id] = len(self._user_lookup) + len(self._new_users)
        return idx

    # -- events ----------------------------------------------------------------------------------
    def observe_exposure(self, user_id: str, items: list[Any], ts: float) -> None:
        """Queue the impressions of a served list (slot ``j`` = position ``j``)."""
        with self._lock:
            user = self.user_index(user_id, create=True)
            t = self.event_time(ts)
            rows = [(user, self._item_lookup[str(it)], t, IMPRESSION, pos)
                    for pos, it in enumerate(items) if str(it) in self._item_lookup]  # fmt: skip
            self._pending.extend(rows)
            if rows:
                self._pending_users.add(user)

    def observe_outcome(self, user_id: str, item_id: Any, kind: str, ts: float) -> None:
        """Queue an engagement (click, like, share) of ``POST /feedback``; other kinds are ignored."""
        code = _OUTCOME_CODES.get(kind)
        item = self._item_lookup.get(str(item_id))
        if code is None or item is None:
            return
        with self._lock:
            user = self.user_index(user_id, create=True)
            self._pending.append((user, item, self.event_time(ts), code, -1))
            self._pending_users.add(user)

    def flush(self) -> int:
        """Apply the queued events (and, with Redis, the other processes'); returns how many were queued."""
        with self._lock:
            return self._flush()

    def _flush(self) -> int:
        pending, self._pending = self._pending, []
        self._pending_users.clear()
        if pending:
            a = np.asarray(pending, dtype=np.int64)
            order = np.argsort(a[:, 2], kind="stable")
            a = a[order]
            self.store.observe(EventLog(a[:, 0].astype(np.int32), a[:, 1].astype(np.int32), a[:, 2],
                                        a[:, 3].astype(np.int8), a[:, 4].astype(np.int16)))  # fmt: skip
        if isinstance(self.store, StreamedFeatureState):
            self.store.sync()
        return len(pending)

    # -- requests --------------------------------------------------------------------------------
    def rank(self, user_id: str, k: int, ts: float) -> tuple[list[Any], list[float], str | None, dict[str, float]]:
        """The user's list: ``(item ids, scores, fallback, seconds per stage)``.

        ``fallback`` is ``"cold_start"`` for a user with no history in the state (no impressions, no
        follows): the list then comes from trending, interest and (zero-vector) GNN candidates.
        """
        with self._lock:
            t0 = time.perf_counter()
            self._flush()
            user = self.user_index(user_id)
            if user < 0:
                user = len(self._user_lookup) + len(self._new_users)  # unseen: no state, no vector
            now = self.request_time(ts)
            t1 = time.perf_counter()
            items, scores, timings = self.pipeline.recommend_timed(user, k, now)
            cold = len(self.store.seen_items(user)) == 0 and len(self.store.followees(user)) == 0
        timings["sync"] = t1 - t0
        ids = self._item_ids
        return [ids[i] for i in items.tolist()], [float(s) for s in scores], "cold_start" if cold else None, timings

    def request_time(self, ts: float) -> int:
        """The feed's time for a request stamped ``ts``: never before the state's latest event
        (concurrent clients' clocks are not ordered); and when every post of the catalog is past the
        age cap at ``ts`` (a dataset generated in the past, served on today's clock) the state's own
        time, so such a dataset is served as of its end instead of with empty lists."""
        return max(self.event_time(ts), int(self.store.clock))

    def event_time(self, ts: float) -> int:
        """``ts``, or the data's end when every post is past the age cap at ``ts`` (see :meth:`request_time`);
        online events are stamped with it, so a frozen dataset's clock does not jump to today."""
        t = int(ts)
        return t if t - self._newest_post <= self.pipeline.context.max_age else self._frozen_at

    def describe(self) -> dict[str, Any]:
        cfg = self.manifest.get("feed_config", {})
        return {
            "name": self.name, "ref": self.ref, "path": str(self.path), "kind": self.kind, "version": self.version,
            "provider": self.provider, "topk": "feed: candidates -> ONNX ranker -> slate",
            "n_users": len(self.data.users), "n_items": len(self.data.items), "sources": cfg.get("sources"),
            "feature_store": type(self.store).__name__, "metrics": self.manifest.get("metrics", {}),
            "data_fingerprint": self.manifest.get("data_fingerprint"),
            "loaded_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(self.loaded_at)),
        }


def load_feed_model(name: str, ref: str, path: Path, data_dir: Path | None, *, redis_client: Any = None,
                    onnx_threads: int = 1, breaker_reset_s: float = 3.0, on_error: Any = None) -> FeedModel:
    """Load a ``feed-ranker`` bundle at ``path`` and build its pipeline over ``data_dir`` (module docstring).

    Raises:
        recsys.bundle.BundleError: The bundle fails its checksums or parity check, no data directory is
            configured, or the data is not the one the bundle was trained on (other user/post ids).
    """
    if data_dir is None:
        raise BundleError(f"model {name} ({ref}): a feed-ranker bundle needs FEEDREC_DATA_DIR (its post catalog "
                          "and the events that warm its feature state)")  # fmt: skip
    bundle = load_feed_bundle(path, onnx_threads=onnx_threads)  # refuses a bundle failing its ONNX parity check
    data = load_feed_data(data_dir)
    if not (np.array_equal(bundle.users.ids, data.users.ids) and np.array_equal(bundle.items.ids, data.items.ids)):
        raise BundleError(f"model {name} ({ref}): {data_dir} has other user/post ids than the data the bundle was "
                          "trained on")  # fmt: skip
    t = time.perf_counter()
    state = warm_state(data)
    store: Any = state
    if redis_client is not None:
        store = StreamedFeatureState(state, redis_client, breaker_reset_s=breaker_reset_s, on_error=on_error)
        store.sync()
    context = FeedContext(data.catalog, store, bundle.embeddings)
    pipeline = build_pipeline(context, bundle.onnx, FeedConfig.model_validate(bundle.feed_config))
    digest = bundle.manifest["files"][ONNX_FILE][:8]
    log.info("model %s: feed from %s, state warmed with %d events in %.1f s (%s)", name, path, len(data.events),
             time.perf_counter() - t, type(store).__name__)  # fmt: skip
    return FeedModel(name=name, ref=ref, path=Path(path), version=f"{KIND}-{bundle.manifest.get('version')}-{digest}",
                     manifest=bundle.manifest, pipeline=pipeline, data=data, store=store)  # fmt: skip
