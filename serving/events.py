"""Where the service reports exposures (what it showed) and outcomes (what the user did).

The service calls :class:`EventSink` at the right moments: ``exposure`` after a recommendation list
is computed (before it is returned), ``outcome`` when ``POST /feedback`` arrives. The durable event
log (``abtest``) implements the same protocol; the default keeps a bounded in-memory tail, which is
enough for tests and demos.
"""

from __future__ import annotations

import threading
from collections import deque
from dataclasses import dataclass
from typing import Protocol, runtime_checkable


@dataclass(frozen=True, slots=True)
class ExposureEvent:
    """One recommendation list shown to a user (item ids in rank order, position = index + 1)."""

    request_id: str
    ts: float
    experiment: str | None
    arm: str
    user_id: str
    model: str
    model_version: str
    items: tuple[str | int, ...]
    fallback: str | None


@dataclass(frozen=True, slots=True)
class OutcomeEvent:
    """A user's reaction to an item, tied to the request that showed it."""

    request_id: str
    ts: float
    user_id: str
    item_id: str | int
    kind: str


@runtime_checkable
class EventSink(Protocol):
    """Append-only event destination. A sink that acknowledges an event must not lose it."""

    def exposure(self, event: ExposureEvent) -> None: ...

    def outcome(self, event: OutcomeEvent) -> None: ...


class InMemoryEventSink:
    """Keeps the last ``maxlen`` events of each type (not durable: lost at restart)."""

    def __init__(self, maxlen: int = 10_000) -> None:
        self.exposures: deque[ExposureEvent] = deque(maxlen=maxlen)
        self.outcomes: deque[OutcomeEvent] = deque(maxlen=maxlen)
        self._lock = threading.Lock()

    def exposure(self, event: ExposureEvent) -> None:
        with self._lock:
            self.exposures.append(event)

    def outcome(self, event: OutcomeEvent) -> None:
        with self._lock:
            self.outcomes.append(event)
