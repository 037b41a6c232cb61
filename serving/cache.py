"""Feature cache: each user's recent interactions, followees and computed user vectors.

Cache-aside: the request path asks the cache first (:meth:`FeatureCache.lookup`, one round trip for
the vector and the features), computes what is missing (features from the data source, the vector
from the ONNX encoder) and writes it back with a TTL. ``POST /feedback`` appends to the recent
interactions and drops the user's cached vectors, so the next request recomputes.

Two implementations behind one interface:

- :class:`RedisFeatureCache` (``REDIS_URL`` set) shared by all workers. Every call has short socket
  timeouts and goes through a :class:`CircuitBreaker`: after an error Redis is skipped for a few
  seconds (requests are served from the source, errors are counted), then retried, so the service
  recovers by itself when Redis comes back.
- :class:`InProcessFeatureCache` (default): an LRU with TTLs inside the worker.

Ids are stored as strings; vectors as raw float32 bytes, keyed by model version (a new model
version never reads an old model's vector). Beside the vector the service may cache the ranking it
computed from it (:class:`TopList`, the top ``RESULT_DEPTH`` items): a repeat request then skips the
scan over the catalogue. Both go when the user sends feedback or the TTL ends.
"""

from __future__ import annotations

import threading
import time
from abc import ABC, abstractmethod
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True, slots=True)
class UserFeatures:
    """What fold-in needs about a user: external ids, most recent interaction first."""

    recent_items: tuple[str, ...] = ()
    followees: tuple[str, ...] = ()

    @property
    def empty(self) -> bool:
        return not self.recent_items and not self.followees


@dataclass(frozen=True, slots=True)
class CacheLookup:
    """Result of one :meth:`FeatureCache.lookup`; ``None`` fields are misses (or cache errors).

    ``pending_recent`` holds interactions fed back while the user's features were not filled from
    the source yet (a miss); the caller merges them in front of the source's.
    """

    vector: np.ndarray | None
    features: UserFeatures | None
    pending_recent: tuple[str, ...] = ()
    top: TopList | None = None


@dataclass(frozen=True, slots=True)
class TopList:
    """A cached ranking: dense item indices and scores, best first (``RESULT_DEPTH`` long)."""

    items: np.ndarray
    scores: np.ndarray

    def to_bytes(self) -> bytes:
        return np.asarray(self.items, dtype=np.int32).tobytes() + np.asarray(self.scores, dtype=np.float32).tobytes()

    @classmethod
    def from_bytes(cls, raw: bytes) -> TopList:
        n = len(raw) // 8
        return cls(np.frombuffer(raw[: 4 * n], dtype=np.int32), np.frombuffer(raw[4 * n :], dtype=np.float32))


ErrorCallback = Callable[[str], None]


class FeatureCache(ABC):
    """Interface of the feature cache (see the module docstring)."""

    backend: str = ""

    @abstractmethod
    def lookup(self, user_id: str, model_version: str) -> CacheLookup:
        """The cached vector of ``user_id`` under ``model_version`` and the user's features."""

    @abstractmethod
    def put_features(self, user_id: str, features: UserFeatures) -> None:
        """Store features loaded from the source; interactions already cached (from feedback) are
        kept in front of the source's, which are older."""

    @abstractmethod
    def put_vector(self, user_id: str, model_version: str, vector: np.ndarray, top: TopList | None = None) -> None:
        """Store a computed user vector (and optionally the ranking computed from it)."""

    @abstractmethod
    def append_interaction(self, user_id: str, item_id: str) -> bool:
        """Record a new interaction and drop the user's cached vectors; False when not recorded."""

    @abstractmethod
    def healthy(self) -> bool:
        """Whether the cache is reachable right now (for ``/readyz``)."""

    def close(self) -> None:  # noqa: B027 - optional hook
        """Release connections."""


class InProcessFeatureCache(FeatureCache):
    """Thread-safe LRU with per-entry TTLs, private to one worker process.

    Args:
        max_entries (int): Users kept (features and vectors count separately).
        features_ttl_s (float): TTL of features. vector_ttl_s (float): TTL of vectors.
        max_recent (int): Recent interactions kept per user.
    """

    backend = "in-process"

    def __init__(
        self, max_entries: int = 100_000, features_ttl_s: float = 7 * 86400, vector_ttl_s: float = 3600,
        max_recent: int = 50,
    ) -> None:
        self.max_entries = max_entries
        self.features_ttl_s = features_ttl_s
        self.vector_ttl_s = vector_ttl_s
        self.max_recent = max_recent
        self._features: OrderedDict[str, tuple[float, UserFeatures, bool]] = OrderedDict()
        self._vectors: OrderedDict[str, tuple[float, dict[str, np.ndarray]]] = OrderedDict()
        self._lock = threading.Lock()

    def _get(self, table: OrderedDict, key: str) -> tuple | None:
        entry = table.get(key)
        if entry is None:
            return None
        if entry[0] < time.monotonic():
            del table[key]
            return None
        table.move_to_end(key)
        return entry

    def _set(self, table: OrderedDict, key: str, value: tuple) -> None:
        table[key] = value
        table.move_to_end(key)
        while len(table) > self.max_entries:
            table.popitem(last=False)

    def lookup(self, user_id: str, model_version: str) -> CacheLookup:
        with self._lock:
            f = self._get(self._features, user_id)
            v = self._get(self._vectors, user_id)
        features = f[1] if f is not None and f[2] else None  # f[2]: filled from the source
        pending = f[1].recent_items if f is not None and not f[2] else ()
        vector = v[1].get(model_version) if v is not None else None
        top = v[1].get(model_version + "|top") if v is not None else None
        return CacheLookup(vector=vector, features=features, pending_recent=pending, top=top)

    def put_features(self, user_id: str, features: UserFeatures) -> None:
        with self._lock:
            old = self._get(self._features, user_id)
            recent = (old[1].recent_items if old else ()) + features.recent_items
            merged = UserFeatures(recent[: self.max_recent], features.followees)
            self._set(self._features, user_id, (time.monotonic() + self.features_ttl_s, merged, True))

    def put_vector(self, user_id: str, model_version: str, vector: np.ndarray, top: TopList | None = None) -> None:
        with self._lock:
            old = self._get(self._vectors, user_id)
            versions = dict(old[1]) if old else {}
            versions[model_version] = np.asarray(vector, dtype=np.float32)
            if top is not None:
                versions[model_version + "|top"] = top
            self._set(self._vectors, user_id, (time.monotonic() + self.vector_ttl_s, versions))

    def append_interaction(self, user_id: str, item_id: str) -> bool:
        with self._lock:
            old = self._get(self._features, user_id)
            feats, filled = (old[1], old[2]) if old else (UserFeatures(), False)
            recent = ((item_id,) + feats.recent_items)[: self.max_recent]
            entry = (time.monotonic() + self.features_ttl_s, UserFeatures(recent, feats.followees), filled)
            self._set(self._features, user_id, entry)
            self._vectors.pop(user_id, None)
        return True

    def healthy(self) -> bool:
        return True


class CircuitBreaker:
    """Closed until a failure; then open (calls skipped) for ``reset_s``; then one trial call.

    Args:
        reset_s (float): Seconds to wait after a failure before trying again.
    """

    def __init__(self, reset_s: float = 3.0) -> None:
        self.reset_s = reset_s
        self._open_until = 0.0

    @property
    def is_open(self) -> bool:
        return time.monotonic() < self._open_until

    def allow(self) -> bool:
        return not self.is_open

    def failure(self) -> None:
        self._open_until = time.monotonic() + self.reset_s

    def success(self) -> None:
        self._open_until = 0.0


class RedisFeatureCache(FeatureCache):
    """Redis-backed cache shared by every worker (keys ``feedrec:u:{user}:...``).

    Args:
        url (str): ``redis://host:port/db``.
        timeout_s (float): Connect and read timeout of each call; a slow Redis must not slow
            requests down more than this.
        breaker_reset_s (float): Seconds Redis is skipped after an error.
        features_ttl_s, vector_ttl_s (int): TTLs in seconds. max_recent (int): Interactions kept.
        on_error (callable, optional): Called with the operation name on every Redis error (metrics).
        on_skip (callable, optional): Called with the operation name when the breaker skips Redis.
    """

    backend = "redis"

    def __init__(
        self, url: str, timeout_s: float = 0.05, breaker_reset_s: float = 3.0, features_ttl_s: int = 7 * 86400,
        vector_ttl_s: int = 3600, max_recent: int = 50, on_error: ErrorCallback | None = None,
        on_skip: ErrorCallback | None = None,
    ) -> None:
        import redis
        from redis.backoff import NoBackoff
        from redis.retry import Retry

        # No retries: the breaker decides when to try again; a retry loop would multiply latency.
        self._redis = redis.Redis.from_url(
            url, socket_timeout=timeout_s, socket_connect_timeout=timeout_s, retry=Retry(NoBackoff(), 0),
            health_check_interval=0,
        )
        self._errors: tuple[type[BaseException], ...] = (redis.RedisError, OSError)
        self.breaker = CircuitBreaker(breaker_reset_s)
        self.features_ttl_s = features_ttl_s
        self.vector_ttl_s = vector_ttl_s
        self.max_recent = max_recent
        self._on_error = on_error or (lambda op: None)
        self._on_skip = on_skip or (lambda op: None)

    @staticmethod
    def _keys(user_id: str) -> tuple[str, str, str, str]:
        base = f"feedrec:u:{user_id}"
        return f"{base}:recent", f"{base}:follows", f"{base}:filled", f"{base}:vec"

    def _run(self, op: str, fn: Callable[[], object]) -> object | None:
        if not self.breaker.allow():
            self._on_skip(op)
            return None
        try:
            result = fn()
        except self._errors:
            self.breaker.failure()
            self._on_error(op)
            return None
        self.breaker.success()
        return result

    def lookup(self, user_id: str, model_version: str) -> CacheLookup:
        recent_k, follows_k, filled_k, vec_k = self._keys(user_id)

        def call() -> list:
            pipe = self._redis.pipeline(transaction=False)
            pipe.hmget(vec_k, [model_version, model_version + "|top"]).exists(filled_k)
            pipe.lrange(recent_k, 0, self.max_recent - 1)
            pipe.lrange(follows_k, 0, -1)
            return pipe.execute()

        out = self._run("lookup", call)
        if out is None:
            return CacheLookup(None, None)
        (raw_vec, raw_top), filled, recent, follows = out
        vector = np.frombuffer(raw_vec, dtype=np.float32) if raw_vec else None
        top = TopList.from_bytes(raw_top) if raw_top else None
        recent_ids = tuple(x.decode() for x in recent)
        if not filled:
            return CacheLookup(vector, None, recent_ids, top)
        return CacheLookup(vector, UserFeatures(recent_ids, tuple(x.decode() for x in follows)), (), top)

    def put_features(self, user_id: str, features: UserFeatures) -> None:
        recent_k, follows_k, filled_k, _ = self._keys(user_id)

        def call() -> None:
            pipe = self._redis.pipeline(transaction=True)
            if features.recent_items:
                pipe.rpush(recent_k, *features.recent_items)  # older than anything fed back
                pipe.ltrim(recent_k, 0, self.max_recent - 1)
                pipe.expire(recent_k, self.features_ttl_s)
            pipe.delete(follows_k)
            if features.followees:
                pipe.rpush(follows_k, *features.followees)
                pipe.expire(follows_k, self.features_ttl_s)
            pipe.set(filled_k, b"1", ex=self.features_ttl_s)
            pipe.execute()

        self._run("put_features", call)

    def put_vector(self, user_id: str, model_version: str, vector: np.ndarray, top: TopList | None = None) -> None:
        vec_k = self._keys(user_id)[3]
        mapping = {model_version: np.ascontiguousarray(vector, dtype=np.float32).tobytes()}
        if top is not None:
            mapping[model_version + "|top"] = top.to_bytes()

        def call() -> None:
            pipe = self._redis.pipeline(transaction=False)
            pipe.hset(vec_k, mapping=mapping).expire(vec_k, self.vector_ttl_s)
            pipe.execute()

        self._run("put_vector", call)

    def append_interaction(self, user_id: str, item_id: str) -> bool:
        recent_k, _, _, vec_k = self._keys(user_id)

        def call() -> bool:
            pipe = self._redis.pipeline(transaction=True)
            pipe.lpush(recent_k, item_id).ltrim(recent_k, 0, self.max_recent - 1)
            pipe.expire(recent_k, self.features_ttl_s).delete(vec_k)
            pipe.execute()
            return True

        return bool(self._run("append_interaction", call))

    def healthy(self) -> bool:
        return bool(self._run("ping", self._redis.ping))

    def close(self) -> None:
        self._redis.close()


def build_cache(
    redis_url: str | None, *, lru_size: int, features_ttl_s: int, vector_ttl_s: int, max_recent: int,
    timeout_s: float, breaker_reset_s: float, on_error: ErrorCallback | None = None,
    on_skip: ErrorCallback | None = None,
) -> FeatureCache:
    """Redis when ``redis_url`` is set, else the in-process LRU."""
    if redis_url:
        return RedisFeatureCache(
            redis_url, timeout_s=timeout_s, breaker_reset_s=breaker_reset_s, features_ttl_s=features_ttl_s,
            vector_ttl_s=vector_ttl_s, max_recent=max_recent, on_error=on_error, on_skip=on_skip,
        )
    return InProcessFeatureCache(lru_size, features_ttl_s, vector_ttl_s, max_recent)


def as_strings(values: Sequence[object]) -> tuple[str, ...]:
    return tuple(str(v) for v in values)
