"""The A/B layer's event log: what was shown (exposures) and what users did with it (outcomes).

Records (frozen pydantic models, validated on construction)::

    Exposure(request_id="r1", experiment="gnn-vs-mf", arm="gnn", user=42, model_version="gnn/7",
             items=[10, 11, 12])                       # positions default to 1, 2, 3
    Outcome(request_id="r1", user=42, item=11, kind="click")

Every event has an ``event_id`` (a fresh UUID unless the caller supplies one: a client that retries
``POST /feedback`` with the same id is stored once) and a ``ts`` (float seconds since the Unix epoch,
UTC; default: now).

One interface, :class:`EventLog`, two durable, append-only backends (see ``docs/events.md``):

* :class:`abtest.event_store.file_log.SegmentFileLog` (default, no server): JSON-lines segment files,
  one per writing process, every append ``fdatasync``'ed before it returns (group commit),
  compacted into Parquet by :meth:`EventLog.flush` / ``python -m abtest flush``.
* :class:`abtest.event_store.redis_log.RedisStreamLog` (when ``REDIS_URL`` is set): Redis streams,
  drained into the same Parquet layout by a consumer-group flusher.

:func:`abtest.event_store.open_event_log` picks one. This module holds the records and the interface
only and imports no backend (the backends import it), so there is no import cycle between the two.
An append that returns has been acknowledged and is never lost; an append that raises may or may not
be stored (the caller retries with the same ``event_id``).

Outcomes are checked against the exposures of the last ``retention_s`` seconds: an outcome for a
request the log does not know raises :class:`UnknownRequest`, for an item that request did not show
:class:`ItemNotShown`, from another user than the one shown :class:`UserMismatch` (all three are
:class:`OutcomeRejected`, whose ``reason`` is a metric label).

De-duplication has one rule, at write and at read time: an event is identified by ``(request_id,
event_id)``. A repeated pair is not written twice where that is cheap to see (``append_*`` returns
``False``), and readers drop repeated pairs in any case. The same ``event_id`` under two different
requests names two events: both are stored and both are read back (a client's ``event_id`` is only
unique within its own request).

Ids: ``user`` and ``item`` are external ids (``int`` or ``str``); they are compared as ``str(id)``
(so ``42`` and ``"42"`` are the same item, as in :mod:`abtest.assignment`). Read back, an id column is
``int64`` when every stored id is an int and strings otherwise.
"""

from __future__ import annotations

import abc
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Final, Literal

import pandas as pd
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    StrictInt,
    StringConstraints,
    model_validator,
)

from feedrec_common.config import StrictModel
from feedrec_common.parquet_tables import ENGAGEMENT_EVENTS

__all__ = [
    "OUTCOME_KINDS",
    "MAX_ITEMS_PER_EXPOSURE",
    "EXPOSURE_COLUMNS",
    "OUTCOME_COLUMNS",
    "EventId",
    "ExternalId",
    "Exposure",
    "Outcome",
    "EventLogError",
    "EventRejected",
    "DuplicateRequest",
    "OutcomeRejected",
    "UnknownRequest",
    "ItemNotShown",
    "UserMismatch",
    "EventLogConfig",
    "EventLog",
    "FlushReport",
    "TABLES",
    "DEDUP_KEY",
    "new_event_id",
    "id_key",
    "explode_exposures",
]

#: Outcome kinds the log accepts (the engagement events of :mod:`feedrec_common.parquet_tables`).
OUTCOME_KINDS: Final = ENGAGEMENT_EVENTS
#: Longest list one exposure may hold (keeps an exposure line and its Redis hash small).
MAX_ITEMS_PER_EXPOSURE: Final = 1000

#: Columns of :meth:`EventLog.read_exposures`, in order.
EXPOSURE_COLUMNS: Final = (
    "event_id", "request_id", "ts", "experiment", "arm", "user", "model", "model_version",
    "fallback", "items", "positions", "item_arms",
)  # fmt: skip
#: Columns of :meth:`EventLog.read_outcomes`, in order.
OUTCOME_COLUMNS: Final = ("event_id", "request_id", "ts", "user", "item", "kind")
#: The two tables of the log.
TABLES: Final = ("exposures", "outcomes")
#: What identifies one event, for write-time and read-time de-duplication alike.
DEDUP_KEY: Final = ("request_id", "event_id")

#: Event and request ids: printable, no whitespace (they become file lines, Redis keys, ACK lines).
EventId = Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9._:@\-]{1,128}$")]
Label = Annotated[str, StringConstraints(min_length=1, max_length=256)]
#: A user or item id as the outside world spells it (bools are not ids).
ExternalId = Annotated[StrictInt, Field(ge=-(2**63), lt=2**63)] | Annotated[
    str, StringConstraints(min_length=1, max_length=256)
]


def new_event_id() -> str:
    """A fresh random event id (32 hex digits)."""
    return uuid.uuid4().hex


def id_key(value: int | str) -> str:
    """The form in which ids are compared and indexed: ``str(value)``."""
    return str(value)


class _Event(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    event_id: EventId = Field(default_factory=new_event_id)
    request_id: EventId
    # finite and positive, checked in pydantic-core (a Python validator cost the request path ~1 us)
    ts: float = Field(default_factory=time.time, gt=0, allow_inf_nan=False)


class Exposure(_Event):
    """One recommendation list served to a user.

    Args:
        event_id (str, optional): Unique id of this event. (default: a fresh UUID)
        request_id (str): Id of the request that served the list; outcomes refer to it.
        ts (float, optional): Seconds since the Unix epoch (UTC). (default: now)
        experiment (str, optional): Experiment key, ``None`` outside any experiment.
        arm (str): Arm that served the list (for interleaving: the arm of the merged list).
        user (int | str): External user id.
        model (str, optional): Name of the model that answered. (default: None)
        model_version (str): Version of that model (registry version, bundle hash, ...).
        fallback (str, optional): Why a fallback list was served instead, if it was. (default: None)
        items (list[int | str]): Item ids in rank order, unique, at most 1000.
        positions (list[int], optional): Rank of each item (>= 0, unique). (default: 1, 2, ...)
        item_arms (list[str], optional): For interleaving, the arm each item is credited to.
            (default: None: every item belongs to ``arm``)
    """

    experiment: Label | None = None
    arm: Label
    user: ExternalId
    model: Label | None = None
    model_version: Label
    fallback: Label | None = None
    items: list[ExternalId] = Field(max_length=MAX_ITEMS_PER_EXPOSURE)
    positions: list[Annotated[int, Field(ge=0)]] | None = None
    item_arms: list[Label] | None = None

    @model_validator(mode="after")
    def _check_lists(self) -> Exposure:
        n = len(self.items)
        if len({id_key(item) for item in self.items}) != n:
            raise ValueError("items must be unique within one exposure")
        if self.positions is None:
            # frozen model: set the default through object.__setattr__ (pydantic's documented escape)
            object.__setattr__(self, "positions", list(range(1, n + 1)))
        elif len(self.positions) != n:
            raise ValueError(f"positions has {len(self.positions)} entries for {n} items")
        elif len(set(self.positions)) != n:
            raise ValueError("positions must be unique")
        if self.item_arms is not None and len(self.item_arms) != n:
            raise ValueError(f"item_arms has {len(self.item_arms)} entries for {n} items")
        return self

    def item_keys(self) -> list[str]:
        """``id_key`` of every shown item, in rank order."""
        return [id_key(item) for item in self.items]



class Outcome(_Event):
    """A user's reaction to one item of a served list.

    Args:
        event_id (str, optional): Unique id; a retry with the same id is stored once.
            (default: a fresh UUID)
        request_id (str): The request whose list showed the item.
        ts (float, optional): Seconds since the Unix epoch (UTC). (default: now)
        user (int | str): External user id (must be the user the list was shown to).
        item (int | str): External item id (must be in that list).
        kind (str): One of :data:`OUTCOME_KINDS` (``click``, ``like``, ``share``).
    """

    user: ExternalId
    item: ExternalId
    kind: Literal[OUTCOME_KINDS]  # type: ignore[valid-type]



class EventLogError(RuntimeError):
    """The log could not store an event (disk, Redis); the event was not acknowledged."""


class EventRejected(ValueError):
    """An event is invalid against the log's state and was not stored.

    Attributes:
        reason (str): Short label for metrics (``unknown_request``, ``item_not_shown``, ...).
    """

    reason: str = "rejected"


class DuplicateRequest(EventRejected):
    """A second, different exposure (another ``event_id``) for a ``request_id`` the log holds."""

    reason = "duplicate_request"


class OutcomeRejected(EventRejected):
    """Base of the outcome rejections; the service answers them with a 4xx and counts ``reason``."""


class UnknownRequest(OutcomeRejected):
    """No exposure with this ``request_id`` in the retention window."""

    reason = "unknown_request"


class ItemNotShown(OutcomeRejected):
    """The request exists but its list did not contain the item."""

    reason = "item_not_shown"


class UserMismatch(OutcomeRejected):
    """The request's list was shown to another user."""

    reason = "user_mismatch"


@dataclass
class FlushReport:
    """What one :meth:`EventLog.flush` did.

    Attributes:
        events (dict[str, int]): Events written to Parquet per table.
        files (list[Path]): Parquet files written.
        sources_removed (int): Segment files (file backend) or stream entries (Redis) removed.
        torn_lines (int): Incomplete last lines skipped while reading segments.
        corrupt (int): Undecodable lines or entries skipped.
    """

    events: dict[str, int] = field(default_factory=lambda: dict.fromkeys(TABLES, 0))
    files: list[Path] = field(default_factory=list)
    sources_removed: int = 0
    torn_lines: int = 0
    corrupt: int = 0

    def __iadd__(self, other: FlushReport) -> FlushReport:
        for table, n in other.events.items():
            self.events[table] = self.events.get(table, 0) + n
        self.files.extend(other.files)
        self.sources_removed += other.sources_removed
        self.torn_lines += other.torn_lines
        self.corrupt += other.corrupt
        return self

    def summary(self) -> str:
        """One line for the CLI."""
        counts = ", ".join(f"{n} {table}" for table, n in self.events.items())
        return (
            f"flushed {counts} into {len(self.files)} parquet file(s); removed {self.sources_removed} "
            f"source(s); skipped {self.torn_lines} torn and {self.corrupt} corrupt record(s)"
        )


class EventLogConfig(StrictModel):
    """Tuning of both backends (the defaults suit one service host).

    Args:
        segment_max_bytes (int): A segment file is closed (and may be compacted) past this size.
            (default: 64 MiB)
        segment_max_age_s (float): ... or when its first append is older than this. (default: 3600)
        retention_s (float): Outcomes are accepted this long after their exposure; the shown-items
            index forgets older requests. (default: 86400)
        max_index_requests (int): Requests the in-memory index holds at most (least recently added
            are evicted first). (default: 500000)
        redis_prefix (str): Key prefix of the Redis backend. (default: ``feedrec:events``)
        flush_interval_s (float, optional): Run :meth:`EventLog.flush` in a background thread at this
            interval. (default: None: only on demand / ``python -m abtest flush``)
        flush_batch (int): Events per Parquet file written by one flush step. (default: 100000)
        flusher_min_idle_s (float): A Redis flusher takes over entries another consumer read but did
            not acknowledge for this long (the other flusher died). (default: 60)
    """

    segment_max_bytes: int = Field(default=64 * 2**20, ge=1024)
    segment_max_age_s: float = Field(default=3600.0, gt=0)
    retention_s: float = Field(default=86400.0, gt=0)
    max_index_requests: int = Field(default=500_000, ge=1)
    redis_prefix: str = Field(default="feedrec:events", min_length=1)
    flush_interval_s: float | None = Field(default=None, gt=0)
    flush_batch: int = Field(default=100_000, ge=1)
    flusher_min_idle_s: float = Field(default=60.0, ge=0)


class EventLog(abc.ABC):
    """Durable, append-only store of exposures and outcomes.

    Implementations are thread-safe; several processes may share one store (one directory or one
    Redis). The service writes to one through ``append_exposure`` / ``append_outcome`` directly (the
    records are the same :class:`Exposure` / :class:`Outcome` the service builds).
    """

    def __init__(self) -> None:
        self._counters: dict[str, int] = {}

    # -- writing -------------------------------------------------------------------------------
    @abc.abstractmethod
    def append_exposure(self, exposure: Exposure) -> bool:
        """Store one exposure durably before returning.

        Returns:
            bool: ``True`` if written, ``False`` if this ``event_id`` was already stored.

        Raises:
            DuplicateRequest: Another exposure holds this ``request_id``.
            EventLogError: The store failed; the event is not acknowledged.
        """

    @abc.abstractmethod
    def append_outcome(self, outcome: Outcome) -> bool:
        """Check one outcome against the shown items and store it durably before returning.

        Returns:
            bool: ``True`` if written, ``False`` if this ``event_id`` was already stored.

        Raises:
            UnknownRequest | ItemNotShown | UserMismatch: Rejected, nothing stored.
            EventLogError: The store failed; the event is not acknowledged.
        """

    @abc.abstractmethod
    def flush(self) -> FlushReport:
        """Move acknowledged events from the write-ahead store (segments, stream) into Parquet.

        Never needed for durability (appends are durable when they return); it bounds the size of
        the write-ahead store and makes reads cheap.
        """

    # -- reading -------------------------------------------------------------------------------
    @abc.abstractmethod
    def read_exposures(self, since: float | None = None, until: float | None = None) -> pd.DataFrame:
        """Every stored exposure with ``since <= ts < until``, deduplicated by ``event_id``, by ts.

        Columns :data:`EXPOSURE_COLUMNS`; ``items``, ``positions`` and ``item_arms`` hold one
        array-like per row (``item_arms`` may be ``None``). See :func:`explode_exposures`.
        """

    @abc.abstractmethod
    def read_outcomes(self, since: float | None = None, until: float | None = None) -> pd.DataFrame:
        """Every stored outcome with ``since <= ts < until``, deduplicated by ``event_id``, by ts."""

    # -- lifecycle and metrics -----------------------------------------------------------------
    @abc.abstractmethod
    def close(self) -> None:
        """Release files, connections and background threads (appends after close raise)."""

    def healthy(self) -> bool:
        """Whether an append could be stored right now (for ``/readyz``; cheap, never raises)."""
        return True

    def counters(self) -> dict[str, int]:
        """Snapshot of monotonically increasing counters for the service's metrics.

        Keys (absent until first incremented): ``exposures_appended``, ``outcomes_appended``,
        ``duplicates_skipped`` (write-time dedup), ``rejected_<reason>``, ``torn_lines_skipped``,
        ``corrupt_lines_skipped``, ``duplicates_dropped`` (read-time dedup), plus backend specifics
        (``fsyncs``, ``segments_opened``, ``index_catch_ups``, ...).
        """
        return dict(self._counters)

    def _count(self, key: str, amount: int = 1) -> None:
        # dict += under the GIL can interleave; counters are for monitoring, so rare misses are fine
        self._counters[key] = self._counters.get(key, 0) + amount

    def __enter__(self) -> EventLog:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


def explode_exposures(exposures: pd.DataFrame) -> pd.DataFrame:
    """One row per shown item: the form the analysis joins outcomes to.

    Args:
        exposures (DataFrame): As returned by :meth:`EventLog.read_exposures`.

    Returns:
        DataFrame: ``event_id, request_id, ts, experiment, arm, list_arm, user, model_version, item,
        position``; ``arm`` is the item's arm (``item_arms`` when present), ``list_arm`` the
        exposure's.
    """
    columns = ["event_id", "request_id", "ts", "experiment", "arm", "list_arm", "user", "model_version",
               "item", "position"]  # fmt: skip
    if exposures.empty:
        return pd.DataFrame({c: pd.Series(dtype=object) for c in columns})
    counts = exposures["items"].map(len).to_numpy()
    repeat = exposures.index.repeat(counts)
    base = exposures.loc[repeat, ["event_id", "request_id", "ts", "experiment", "arm", "user", "model_version"]]
    out = base.rename(columns={"arm": "list_arm"}).reset_index(drop=True)
    out["item"] = pd.Series([item for row in exposures["items"] for item in row])
    out["position"] = [int(p) for row in exposures["positions"] for p in row]
    arms = []
    for list_arm, item_arms, n in zip(exposures["arm"], exposures["item_arms"], counts):
        arms.extend([list_arm] * n if item_arms is None else list(item_arms))
    out["arm"] = arms
    return out[columns]

