"""Where the service reports exposures (what it showed) and outcomes (what the user did).

The records are the event log's own, :class:`abtest.events.Exposure` and :class:`abtest.events.Outcome`:
the request path builds them once and hands them to the sink as they are. The service calls
:class:`EventSink` at the right moments: ``append_exposure`` after a recommendation list is computed
and before it is returned, ``append_outcome`` when ``POST /feedback`` arrives. Two sinks:

* the durable event log of the A/B layer (:func:`abtest.event_store.open_event_log`, opened by
  :func:`open_sink` from ``FEEDREC_EVENTS_DIR``): every append is on disk (or in Redis) before it
  returns;
* :class:`InMemoryEventSink` (``FEEDREC_EVENTS_DIR=memory``, or passed to ``create_app`` by tests): a
  bounded tail, lost at restart.

Both apply the same rules to outcomes, so the API behaves the same whichever is configured: an outcome
for an unknown request, an item the request did not show, or another user raises an
:class:`abtest.events.OutcomeRejected` (``UnknownRequest``, ``ItemNotShown``, ``UserMismatch``), and a
retry with an ``event_id`` already accepted for that request returns ``False`` and is not stored twice.
"""

from __future__ import annotations

import threading
from collections import deque
from typing import TYPE_CHECKING, Protocol, runtime_checkable

from abtest.event_store.shown_index import ShownIndex
from abtest.events import Exposure, Outcome, OutcomeRejected, id_key

if TYPE_CHECKING:
    from serving.settings import ServingSettings


@runtime_checkable
class EventSink(Protocol):
    """Append-only event destination (:class:`abtest.events.EventLog` is one). A sink that
    acknowledges an event must not lose it.

    ``append_outcome`` raises :class:`abtest.events.OutcomeRejected` for an outcome that does not match a
    shown item, and returns ``False`` for a retry it already stored. Both raise
    :class:`abtest.events.EventLogError` when the store fails. A sink whose appends do not block (no
    fsync, no network) sets ``blocking = False``; the async route then calls it on the event loop
    instead of in a worker thread.
    """

    def append_exposure(self, exposure: Exposure) -> bool: ...

    def append_outcome(self, outcome: Outcome) -> bool: ...

    def healthy(self) -> bool: ...


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
        self.exposures: deque[Exposure] = deque(maxlen=maxlen)
        self.outcomes: deque[Outcome] = deque(maxlen=maxlen)
        self._index = ShownIndex(retention_s, maxlen)
        self._lock = threading.Lock()
        self._counters: dict[str, int] = {}

    def append_exposure(self, exposure: Exposure) -> bool:
        self._index.add_exposure(exposure.request_id, exposure.event_id, id_key(exposure.user),
                                 exposure.item_keys(), exposure.ts)  # fmt: skip
        with self._lock:
            self.exposures.append(exposure)
            self._count("exposures_appended")
        return True

    def append_outcome(self, outcome: Outcome) -> bool:
        try:
            fresh = self._index.check_outcome(outcome.request_id, id_key(outcome.user), id_key(outcome.item),
                                              outcome.event_id)  # fmt: skip
        except OutcomeRejected as exc:
            with self._lock:
                self._count(f"rejected_{exc.reason}")
            raise
        with self._lock:
            if not fresh:
                self._count("duplicates_skipped")
                return False
            self.outcomes.append(outcome)
            self._count("outcomes_appended")
        return True

    def healthy(self) -> bool:
        """Always: nothing outside the process can fail."""
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
    from abtest.event_store import open_event_log
    from abtest.events import EventLogConfig

    redis_url = settings.redis_url if settings.events_backend == "auto" else None
    return open_event_log(settings.events_dir, redis_url, EventLogConfig(retention_s=retention_s))
