"""In-memory index ``request_id -> (user, shown items)`` that outcomes are checked against.

Bounded two ways, so memory stays flat however long the service runs:

* retention: a request whose exposure ``ts`` is older than ``retention_s`` is forgotten (outcomes
  for it are then :class:`~abtest.events.UnknownRequest`);
* size: at most ``max_requests`` requests; past that the oldest-added is evicted first (LRU on
  insertion, which is exposure order).

An entry costs ~0.6 kB for a 20-item list (ids, a tuple of interned item ids: each distinct item or
user id is stored once, ~60 bytes; measured with tracemalloc), so the default 500,000 requests take
~300 MB at most; lower ``max_index_requests`` for small hosts.

The index also remembers the outcome ``event_id``s accepted per request (at most
``MAX_OUTCOME_IDS_PER_REQUEST``), so a retried ``POST /feedback`` is recognised without touching the
log. Thread-safe.
"""

from __future__ import annotations

import sys
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from typing import Final

from abtest.events import DuplicateRequest, ItemNotShown, UnknownRequest, UserMismatch, id_key

#: Outcome ids remembered per request for write-time dedup (beyond it, read-time dedup still holds).
MAX_OUTCOME_IDS_PER_REQUEST: Final = 256


class _Shown:
    __slots__ = ("event_id", "user", "items", "ts", "outcome_ids")

    def __init__(self, event_id: str, user: str, items: tuple[str, ...], ts: float) -> None:
        self.event_id = event_id
        self.user = user
        self.items = items
        self.ts = ts
        self.outcome_ids: set[str] | None = None


class ShownIndex:
    """Bounded map of recent requests to the user and items they showed.

    Args:
        retention_s (float): Forget requests whose exposure is older than this.
        max_requests (int): Hold at most this many requests.
        clock (callable, optional): Returns now in epoch seconds. (default: ``time.time``)
    """

    def __init__(self, retention_s: float, max_requests: int, clock: Callable[[], float] = time.time) -> None:
        self.retention_s = retention_s
        self.max_requests = max_requests
        self._clock = clock
        self._entries: OrderedDict[str, _Shown] = OrderedDict()
        self._lock = threading.Lock()
        self.evicted = 0

    def __len__(self) -> int:
        return len(self._entries)

    def __contains__(self, request_id: str) -> bool:
        with self._lock:
            return request_id in self._entries

    def check_exposure(self, request_id: str, event_id: str) -> bool:
        """``False`` if this exact exposure is indexed already; raises :class:`DuplicateRequest` if
        another exposure holds the request id; ``True`` otherwise."""
        with self._lock:
            entry = self._entries.get(request_id)
        if entry is None:
            return True
        if entry.event_id == event_id:
            return False
        raise DuplicateRequest(f"request {request_id!r} already has exposure {entry.event_id!r}")

    def add_exposure(self, request_id: str, event_id: str, user: str, items: list[str], ts: float) -> None:
        """Index a stored exposure (idempotent; ignored when already out of the retention window)."""
        now = self._clock()
        if ts < now - self.retention_s:
            return
        with self._lock:
            if request_id in self._entries:
                return
            # item and user ids repeat across requests: interning shares one string per id, and a tuple
            # (a linear scan of <= 1000 short strings) is a fifth of a frozenset's size
            items_tuple = tuple(map(sys.intern, items))
            self._entries[request_id] = _Shown(event_id, sys.intern(user), items_tuple, ts)
            self._evict(now)

    def _evict(self, now: float) -> None:
        entries = self._entries
        while len(entries) > self.max_requests:
            entries.popitem(last=False)
            self.evicted += 1
        cutoff = now - self.retention_s
        # entries arrive roughly in ts order, so expired ones gather at the front
        while entries:
            first = next(iter(entries.values()))
            if first.ts >= cutoff:
                break
            entries.popitem(last=False)
            self.evicted += 1

    def check_outcome(self, request_id: str, user: str, item: str, event_id: str) -> bool:
        """Validate an outcome and reserve its id.

        Returns:
            bool: ``True`` if it should be written (call :meth:`release_outcome` if writing fails),
            ``False`` if this ``event_id`` was accepted before.

        Raises:
            UnknownRequest | ItemNotShown | UserMismatch
        """
        with self._lock:
            entry = self._entries.get(request_id)
            if entry is None or entry.ts < self._clock() - self.retention_s:
                raise UnknownRequest(f"unknown request_id {request_id!r} (or older than the retention window)")
            if item not in entry.items:
                raise ItemNotShown(f"item {item!r} was not shown in request {request_id!r}")
            if user != entry.user:
                raise UserMismatch(f"request {request_id!r} was shown to another user than {user!r}")
            if entry.outcome_ids is None:
                entry.outcome_ids = set()
            if event_id in entry.outcome_ids:
                return False
            if len(entry.outcome_ids) < MAX_OUTCOME_IDS_PER_REQUEST:
                entry.outcome_ids.add(event_id)
            return True

    def release_outcome(self, request_id: str, event_id: str) -> None:
        """Forget a reserved outcome id whose write failed (so a retry is written)."""
        with self._lock:
            entry = self._entries.get(request_id)
            if entry is not None and entry.outcome_ids is not None:
                entry.outcome_ids.discard(event_id)

    def note_outcome(self, request_id: str, event_id: str) -> None:
        """Remember an outcome id seen in the log (rebuild, other processes)."""
        with self._lock:
            entry = self._entries.get(request_id)
            if entry is None:
                return
            if entry.outcome_ids is None:
                entry.outcome_ids = set()
            if len(entry.outcome_ids) < MAX_OUTCOME_IDS_PER_REQUEST:
                entry.outcome_ids.add(event_id)

    def add_record(self, record: dict) -> None:
        """Index one decoded log record (exposure or outcome; see ``tables.is_valid_record``)."""
        if record["type"] == "exposure":
            self.add_exposure(
                record["request_id"], record["event_id"], id_key(record["user"]),
                [id_key(i) for i in record["items"]], float(record["ts"]),
            )  # fmt: skip
        else:
            self.note_outcome(record["request_id"], record["event_id"])
