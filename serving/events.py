"""Where the service reports exposures (what it showed) and outcomes (what the user did).

The service calls :class:`EventSink` at the right moments: ``exposure`` after a recommendation list
is computed and before it is returned (the HTTP 200 is sent only after the sink returned), ``outcome``
when ``POST /feedback`` arrives. Two sinks:

* the durable event log of the A/B layer (:func:`abtest.events.open_event_log`, opened by
  :func:`open_sink` from ``FEEDREC_EVENTS_DIR``): every append is on disk (or in Redis) before it
  returns;
* :class:`InMemoryEventSink` (``FEEDREC_EVENTS_DIR=memory``, or passed to ``create_app`` by tests): a
  bounded tail, lost at restart.

Both apply the same rules to outcomes, so the API behaves the same whichever is configured: an outcome
for an unknown request, an item the request did not show, or another user raises an
:class:`abtest.events.OutcomeRejected` (``UnknownRequest``, ``ItemNotShown``, ``UserMismatch``), and a
retry with an ``event_id`` already accepted returns ``False`` and is not stored twice.
"""

from __future__ import annotations

import threading
import uuid
from collections import deque
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

if TYPE_CHECKING:
    from serving.settings import ServingSettings

#: ``arm`` of a team-draft interleaved list (its items' arms are in ``item_arms``).
INTERLEAVED_ARM = "interleaved"
#: ``item_arms`` entry of an item both arms ranked at the same next position (credited to nobody).
SHARED_ITEM_ARM = "shared"


@dataclass(frozen=True, slots=True)
class ExposureEvent:
    """One recommendation list shown to a user (item ids in rank order, position = index + 1).

    ``item_arms`` is set for interleaved lists: the arm that contributed each item (or ``"shared"``).
    """

    request_id: str
    ts: float
    experiment: str | None
    arm: str
    user_id: str
    model: str
    model_version: str
    items: tuple[str | int, ...]
    fallback: str | None
    item_arms: tuple[str, ...] | None = None


@dataclass(frozen=True, slots=True)
class OutcomeEvent:
    """A user's reaction to an item, tied to the request that showed it.

    ``event_id`` (optional) de-duplicates client retries; ``None`` means a fresh id.
    """

    request_id: str
    ts: float
    user_id: str
    item_id: str | int
    kind: str
    event_id: str | None = None


@runtime_checkable
class EventSink(Protocol):
    """Append-only event destination. A sink that acknowledges an event must not lose it.

    ``outcome`` raises :class:`abtest.events.OutcomeRejected` for an outcome that does not match a shown
    item, and may return ``False`` for a retry it already stored. A sink whose appends do not block
    (no fsync, no network) sets ``blocking = False``; the async route then calls it on the event loop
    instead of in a worker thread.
    """

    def exposure(self, event: ExposureEvent) -> Any: ...

    def outcome(self, event: OutcomeEvent) -> Any: ...


class InMemoryEventSink:
    """Keeps the last ``maxlen`` events of each type (not durable: lost at restart).

    Outcomes are checked against the shown items of the last ``maxlen`` exposures (younger than
    ``retention_s``) with the event log's own index (:class:`abtest.event_store.shown_index.ShownIndex`).

    Args:
        maxlen (int, optional): Events of each type kept, and requests indexed. (default: 10000)
        retention_s (float, optional): Outcomes are accepted this long after their exposure.
            (default: 86400)
    """

    blocking = False

    def __init__(self, maxlen: int = 10_000, retention_s: float = 86400.0) -> None:
        from abtest.event_store.shown_index import ShownIndex

        self.exposures: deque[ExposureEvent] = deque(maxlen=maxlen)
        self.outcomes: deque[OutcomeEvent] = deque(maxlen=maxlen)
        self._index = ShownIndex(retention_s, maxlen)
        self._lock = threading.Lock()
        self._counters: dict[str, int] = {}

    def exposure(self, event: ExposureEvent) -> bool:
        self._index.add_exposure(event.request_id, event.request_id, str(event.user_id),
                                 list(map(str, event.items)), event.ts)  # fmt: skip
        with self._lock:
            self.exposures.append(event)
            self._count("exposures_appended")
        return True

    def outcome(self, event: OutcomeEvent) -> bool:
        from abtest.events import OutcomeRejected

        event_id = event.event_id or uuid.uuid4().hex
        try:
            fresh = self._index.check_outcome(event.request_id, str(event.user_id), str(event.item_id), event_id)
        except OutcomeRejected as exc:
            with self._lock:
                self._count(f"rejected_{exc.reason}")
            raise
        with self._lock:
            if not fresh:
                self._count("duplicates_skipped")
                return False
            self.outcomes.append(event)
            self._count("outcomes_appended")
        return True

    def counters(self) -> dict[str, int]:
        """Same keys as :meth:`abtest.events.EventLog.counters` (for ``/metrics``)."""
        with self._lock:
            return {**self._counters, "index_requests": len(self._index), "index_evicted": self._index.evicted}

    def close(self) -> None:
        """Nothing to release (the protocol of the durable log)."""

    def _count(self, key: str) -> None:
        self._counters[key] = self._counters.get(key, 0) + 1


def open_sink(settings: ServingSettings) -> EventSink:
    """The sink ``settings`` ask for: the durable event log in ``events_dir`` (Redis streams when
    ``REDIS_URL`` is set and ``events_backend`` is ``auto``), or :class:`InMemoryEventSink`.

    Raises:
        abtest.events.EventLogError: The log cannot be opened (Redis unreachable, ...).
    """
    retention_s = settings.events_retention_s
    if settings.allow_sim_time:
        # Simulated timestamps can lie years before now: a window on the event time would forget every
        # simulated request at once. The index stays bounded by its size (max_index_requests).
        retention_s = 100 * 365 * 86400.0
    if settings.events_dir is None:
        return InMemoryEventSink(retention_s=retention_s)
    from abtest.events import EventLogConfig, open_event_log

    redis_url = settings.redis_url if settings.events_backend == "auto" else None
    return open_event_log(settings.events_dir, redis_url, EventLogConfig(retention_s=retention_s))
