"""The feature state of a running service: :class:`FeatureState` warmed from Parquet, fed online events,
and (with Redis) shared between processes through a Redis stream.

:class:`StreamedFeatureState` is the Redis implementation of :class:`~recsys.feed.state.FeatureStore`.
Redis holds the *events* (one stream, ``feedrec:feed:events``, one entry per batch of events as packed
int64 arrays) and every process keeps the counters built from them in its own :class:`FeatureState`,
so a request reads its ~600 candidates' features from memory (no round trip per feature) and the
counters are, by construction, the ones training's replay computes from the same events. Writes go
to the local state and to the stream; :meth:`StreamedFeatureState.sync` (one ``XREAD`` per request)
applies what the other processes wrote.

Failure rule (issue 13): Redis down is never an error. A failed call opens a circuit breaker
(``breaker_reset_s``) during which the stream is skipped: the process keeps serving from its own
state, fed its own events; events it writes while Redis is down stay local (the other processes
miss them), and on recovery it reads the stream from where it stopped.
"""

from __future__ import annotations

import logging
import os
import time
import uuid
from collections.abc import Callable
from typing import Any

import numpy as np

from recsys.feed.data import EventLog, FeedData, FollowLog
from recsys.feed.state import FeatureState

log = logging.getLogger(__name__)

STREAM_KEY = "feedrec:feed:events"


def warm_state(data: FeedData) -> FeatureState:
    """A :class:`FeatureState` fed every event and follow of ``data`` (the service's start-up state)."""
    state = FeatureState(data.catalog)
    state.observe(data.events)
    state.observe_follows(data.follows)
    return state


class StreamedFeatureState:
    """A :class:`FeatureState` whose online events are shared through a Redis stream (module docstring).

    Every query method of :class:`~recsys.feed.state.FeatureStore` is the local state's.

    Args:
        state (FeatureState): The local state (warmed from the dataset).
        client (Any): A ``redis.Redis`` client (short socket timeouts: a slow Redis must not slow requests).
        key (str): Stream key. (default: ``feedrec:feed:events``)
        maxlen (int): Approximate stream length kept (``XADD MAXLEN ~``). (default: 1,000,000 batches)
        breaker_reset_s (float): After a Redis error, skip Redis for this long. (default: 3.0)
        on_error (Callable[[str], None], optional): Called with the operation on each Redis error.
    """

    def __init__(self, state: FeatureState, client: Any, key: str = STREAM_KEY, maxlen: int = 1_000_000,
                 breaker_reset_s: float = 3.0, on_error: Callable[[str], None] | None = None) -> None:
        self.state = state
        self.client = client
        self.key = key
        self.maxlen = maxlen
        self.breaker_reset_s = breaker_reset_s
        self.on_error = on_error
        self.origin = f"{os.getpid()}-{uuid.uuid4().hex[:8]}".encode()
        self.last_id = b"0-0"  # read the whole stream once: events other processes wrote before this one started
        self._open_until = 0.0

    # -- the FeatureStore interface --------------------------------------------------------------
    @property
    def clock(self) -> int:
        return self.state.clock

    def __getattr__(self, name: str) -> Any:
        # queries (item_counters, social_counters, seen_items, ...) are the local state's
        return getattr(self.state, name)

    def observe(self, events: EventLog) -> None:
        self.state.observe(events)
        if len(events):
            arrays = (events.user, events.item, events.ts, events.kind, events.position)
            self._publish(b"e", np.stack([np.asarray(a, dtype=np.int64) for a in arrays]))

    def observe_follows(self, follows: FollowLog) -> None:
        self.state.observe_follows(follows)
        if len(follows):
            self._publish(b"f", np.stack([follows.follower, follows.followee, follows.ts]).astype(np.int64))

    # -- Redis -----------------------------------------------------------------------------------
    @property
    def healthy(self) -> bool:
        """False while the breaker is open (the last Redis call failed within ``breaker_reset_s``)."""
        return time.monotonic() >= self._open_until

    def _failed(self, op: str, error: Exception) -> None:
        self._open_until = time.monotonic() + self.breaker_reset_s
        log.warning("feed feature stream: %s failed (%s); serving from the local state", op, error)
        if self.on_error is not None:
            self.on_error(op)

    def _publish(self, kind: bytes, rows: np.ndarray) -> None:
        if not self.healthy:
            return
        fields = {b"o": self.origin, b"k": kind, b"n": str(rows.shape[1]).encode(), b"a": rows.tobytes()}
        try:
            self.client.xadd(self.key, fields, maxlen=self.maxlen, approximate=True)
        except Exception as error:  # noqa: BLE001 - any Redis failure degrades to the local state
            self._failed("xadd", error)

    def sync(self, max_batches: int = 10_000) -> int:
        """Apply the events other processes added to the stream since the last call; returns how many
        batches were applied (0 while Redis is down)."""
        if not self.healthy:
            return 0
        try:
            reply = self.client.xread({self.key: self.last_id}, count=max_batches)
        except Exception as error:  # noqa: BLE001
            self._failed("xread", error)
            return 0
        applied = 0
        events: list[EventLog] = []
        for _, entries in reply or ():
            for entry_id, fields in entries:
                self.last_id = entry_id
                if fields.get(b"o") == self.origin:
                    continue  # our own write: applied locally already
                rows = np.frombuffer(fields[b"a"], dtype=np.int64).reshape(-1, int(fields[b"n"]))
                if fields.get(b"k") == b"f":
                    self.state.observe_follows(FollowLog(rows[0].copy(), rows[1].copy(), rows[2].copy()))
                else:
                    events.append(EventLog(rows[0].astype(np.int32), rows[1].astype(np.int32), rows[2].copy(),
                                           rows[3].astype(np.int8), rows[4].astype(np.int16)))  # fmt: skip
                applied += 1
        if events:
            self.state.observe(EventLog.concat(events))
        return applied
