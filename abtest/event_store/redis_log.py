"""The server backend (``REDIS_URL``): Redis streams, drained into Parquet by a consumer-group flusher.

Keys (``prefix`` = ``EventLogConfig.redis_prefix``, default ``feedrec:events``)::

    <prefix>:stream:exposures, <prefix>:stream:outcomes   streams, one entry per event: {"e": <json>}
    <prefix>:req:<request_id>                             hash, TTL retention_s: the shown-items index
        eid -> exposure event_id, user -> id_key(user), i:<id_key(item)> -> 1, o:<outcome event_id> -> 1

Each append is one Lua script, so the check and the write are atomic and take one round trip:
an exposure creates the request hash and XADDs; an outcome is checked against the hash (unknown
request, item not shown, other user), de-duplicated with ``HSETNX o:<event_id>`` and XADDed. Both
scripts are idempotent, so redis-py's retry after a lost reply stores nothing twice.

Durability: an XADD acknowledged by Redis survives a crash of Redis only if Redis logs it to its
append-only file and fsyncs that before replying, i.e. ``appendonly yes`` + ``appendfsync always``.
With ``appendfsync everysec`` (Redis's default when AOF is on) up to about a second of acknowledged
events can be lost if the Redis host dies; with RDB snapshots only, everything since the last
snapshot. :attr:`RedisStreamLog.durability` reports the server's setting (logged as a warning unless
``aof-always``). Replication does not help by itself: a failover to a replica loses what had not
reached it. Use a single Redis (not Cluster: the script touches the stream and the request hash,
which would hash to different slots).

Flushing (:func:`flush_stream`, ``python -m abtest flush``, or ``flush_interval_s`` for a background
thread): read a batch through the consumer group ``parquet-flusher`` (``XREADGROUP``), write it to a
Parquet file (fsync, rename, fsync dir), and only then ``XACK`` + ``XDEL`` it. A flusher that dies
before the ack leaves the entries pending; the next flush of the same process re-reads them, another
process takes them over once idle for ``flusher_min_idle_s`` (``XAUTOCLAIM``). Either way they are
delivered again rather than lost, and readers drop the duplicate copies by ``event_id``.
"""

from __future__ import annotations

import json
import logging
import math
import os
import socket
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import redis

from abtest.event_store.background import PeriodicFlush
from abtest.event_store.parquet_log import ParquetEventLog, PendingRecords
from abtest.event_store.tables import (
    Table,
    encode_line,
    is_valid_record,
    records_to_table,
    write_parquet_atomic,
)
from abtest.events import (
    TABLES,
    DuplicateRequest,
    EventLogConfig,
    EventLogError,
    EventRejected,
    Exposure,
    FlushReport,
    ItemNotShown,
    Outcome,
    UnknownRequest,
    UserMismatch,
    id_key,
)

log = logging.getLogger(__name__)

FLUSH_GROUP = "parquet-flusher"

# KEYS: request hash, stream. ARGV: event_id, user key, ttl seconds, payload, item keys...
# Returns 1 written, 0 same exposure already stored, -1 another exposure holds the request id.
_EXPOSURE_LUA = """
local eid = redis.call('HGET', KEYS[1], 'eid')
if eid then
  if eid == ARGV[1] then return 0 end
  return -1
end
local fields = {'eid', ARGV[1], 'user', ARGV[2]}
for i = 5, #ARGV do
  fields[#fields + 1] = 'i:' .. ARGV[i]
  fields[#fields + 1] = '1'
end
redis.call('HSET', KEYS[1], unpack(fields))
redis.call('EXPIRE', KEYS[1], ARGV[3])
redis.call('XADD', KEYS[2], '*', 'e', ARGV[4])
return 1
"""

# KEYS: request hash, stream. ARGV: event_id, user key, item key, payload.
# Returns 1 written, 0 duplicate event id, -1 unknown request, -2 item not shown, -3 other user.
_OUTCOME_LUA = """
local user = redis.call('HGET', KEYS[1], 'user')
if not user then return -1 end
if redis.call('HEXISTS', KEYS[1], 'i:' .. ARGV[3]) == 0 then return -2 end
if user ~= ARGV[2] then return -3 end
if redis.call('HSETNX', KEYS[1], 'o:' .. ARGV[1], '1') == 0 then return 0 end
redis.call('XADD', KEYS[2], '*', 'e', ARGV[4])
return 1
"""

_OUTCOME_REJECTIONS: dict[int, type[EventRejected]] = {-1: UnknownRequest, -2: ItemNotShown, -3: UserMismatch}


def redis_durability(client: redis.Redis) -> str:
    """The server's persistence as ``aof-always``, ``aof-everysec``, ``aof-no``, ``none`` or ``unknown``
    (``CONFIG`` disabled, as on some managed services)."""
    try:
        config = {_text(k): _text(v) for k, v in client.config_get("append*").items()}
    except redis.ResponseError:
        return "unknown"
    if config.get("appendonly") != "yes":
        return "none"
    return f"aof-{config.get('appendfsync', 'unknown')}"


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


class RedisStreamLog(ParquetEventLog):
    """Event log in Redis streams with Parquet segments; see the module docstring.

    Args:
        redis_url (str): ``redis://host:port/db``.
        events_dir (str | Path): Where the flusher writes ``exposures/`` and ``outcomes/`` Parquet.
        config (EventLogConfig, optional): Tuning. (default: ``EventLogConfig()``)
        client (redis.Redis, optional): Use this client instead of one made from ``redis_url``.

    Attributes:
        durability (str): What the server guarantees for acknowledged writes (see
            :func:`redis_durability`).
    """

    def __init__(
        self,
        redis_url: str,
        events_dir: str | Path,
        config: EventLogConfig | None = None,
        client: redis.Redis | None = None,
    ) -> None:
        super().__init__()
        self.config = config or EventLogConfig()
        self.root = Path(events_dir)
        self.client = client or redis.Redis.from_url(redis_url, socket_timeout=10, socket_connect_timeout=5)
        prefix = self.config.redis_prefix
        self._prefix = prefix
        self.streams: dict[Table, str] = {table: f"{prefix}:stream:{table}" for table in TABLES}
        self._exposure_script = self.client.register_script(_EXPOSURE_LUA)
        self._outcome_script = self.client.register_script(_OUTCOME_LUA)
        self._ttl_s = max(1, math.ceil(self.config.retention_s))
        try:
            self.durability = redis_durability(self.client)
        except redis.RedisError as exc:
            raise EventLogError(f"cannot reach Redis at {redis_url}: {exc}") from exc
        if self.durability != "aof-always":
            log.warning(
                "Redis persistence is %s: acknowledged events survive a Redis crash only with "
                "appendonly yes + appendfsync always (see docs/events.md)",
                self.durability,
            )
        self._flush_lock = threading.Lock()
        self._closed = False
        self._background = (
            PeriodicFlush(self.flush, self.config.flush_interval_s) if self.config.flush_interval_s else None
        )

    def request_key(self, request_id: str) -> str:
        """Redis key of one request's shown-items hash."""
        return f"{self._prefix}:req:{request_id}"

    # -- writing -------------------------------------------------------------------------------
    def append_exposure(self, exposure: Exposure) -> bool:
        self._check_open()
        payload = encode_line("exposure", exposure)[:-1]
        args = [exposure.event_id, id_key(exposure.user), self._ttl_s, payload, *exposure.item_keys()]
        result = self._run(self._exposure_script, [self.request_key(exposure.request_id), self.streams["exposures"]], args)
        if result == -1:
            self._count("rejected_duplicate_request")
            raise DuplicateRequest(f"request {exposure.request_id!r} already has another exposure")
        if result == 0:
            self._count("duplicates_skipped")
            return False
        self._count("exposures_appended")
        return True

    def append_outcome(self, outcome: Outcome) -> bool:
        self._check_open()
        payload = encode_line("outcome", outcome)[:-1]
        args = [outcome.event_id, id_key(outcome.user), id_key(outcome.item), payload]
        result = self._run(self._outcome_script, [self.request_key(outcome.request_id), self.streams["outcomes"]], args)
        if result in _OUTCOME_REJECTIONS:
            error = _OUTCOME_REJECTIONS[result]
            self._count(f"rejected_{error.reason}")
            raise error(
                f"outcome {outcome.event_id!r} rejected ({error.reason}): request {outcome.request_id!r}, "
                f"user {outcome.user!r}, item {outcome.item!r}"
            )
        if result == 0:
            self._count("duplicates_skipped")
            return False
        self._count("outcomes_appended")
        return True

    def _run(self, script: Any, keys: list[str], args: list[Any]) -> int:
        try:
            return int(script(keys=keys, args=args))
        except redis.RedisError as exc:
            raise EventLogError(f"event not stored (Redis error: {exc})") from exc

    def _check_open(self) -> None:
        if self._closed:
            raise EventLogError("event log is closed")

    # -- reading -------------------------------------------------------------------------------
    def pending(self, table: Table) -> PendingRecords:
        out = PendingRecords()
        for _, fields in iter_stream(self.client, self.streams[table]):
            record = _decode(fields)
            if record is None:
                out.corrupt += 1
            else:
                out.records.append(record)
        return out

    def healthy(self) -> bool:
        """Redis answers a PING."""
        try:
            return bool(self.client.ping())
        except redis.RedisError:
            return False

    # -- flushing ------------------------------------------------------------------------------
    def flush(self) -> FlushReport:
        """Drain both streams into Parquet (see :func:`flush_stream`)."""
        report = FlushReport()
        with self._flush_lock:
            for table in TABLES:
                report += flush_stream(
                    self.client, self.streams[table], table, self.root,
                    batch=self.config.flush_batch, min_idle_ms=int(self.config.flusher_min_idle_s * 1000),
                )  # fmt: skip
        self._count("flushes")
        return report

    def stream_lengths(self) -> dict[str, int]:
        """Entries waiting in each stream (not yet flushed)."""
        return {table: int(self.client.xlen(stream)) for table, stream in self.streams.items()}

    def _release(self) -> None:
        self.client.close()


def iter_stream(client: redis.Redis, stream: str, chunk: int = 10_000):
    """Yield ``(entry_id, fields)`` of a whole stream in id order, ``chunk`` entries per round trip."""
    start: bytes | str = "-"
    while True:
        entries = client.xrange(stream, min=start, max="+", count=chunk)
        yield from entries
        if len(entries) < chunk:
            return
        start = b"(" + entries[-1][0]


def _decode(fields: dict | None) -> dict | None:
    if not fields:
        return None
    try:
        record = json.loads(fields[b"e"])
    except (KeyError, ValueError):
        return None
    return record if is_valid_record(record) else None


def consumer_name() -> str:
    """This process's consumer name in the flusher group."""
    return f"{socket.gethostname()}-{os.getpid()}"


def flush_stream(
    client: redis.Redis,
    stream: str,
    table: Table,
    events_dir: str | Path,
    batch: int = 100_000,
    min_idle_ms: int = 60_000,
    consumer: str | None = None,
    after_write: Callable[[Path | None], None] | None = None,
) -> FlushReport:
    """Move a stream's entries into Parquet files, acknowledging each batch only once it is durable.

    Args:
        client (redis.Redis): Connection (``decode_responses=False``).
        stream (str): Stream key.
        table (str): ``exposures`` or ``outcomes`` (the Parquet directory under ``events_dir``).
        events_dir (str | Path): Root of the Parquet layout.
        batch (int): Entries per Parquet file. (default: 100000)
        min_idle_ms (int): Take over entries other consumers read but left unacknowledged this long.
            (default: 60000)
        consumer (str, optional): Consumer name. (default: ``<host>-<pid>``)
        after_write (callable, optional): Called with each new file before its entries are
            acknowledged (tests inject a crash here). (default: None)
    """
    consumer = consumer or consumer_name()
    out_dir = Path(events_dir) / table
    report = FlushReport()
    try:
        client.xgroup_create(stream, FLUSH_GROUP, id="0", mkstream=True)
    except redis.ResponseError as exc:
        if "BUSYGROUP" not in str(exc):
            raise
    # entries a dead flusher read but never acknowledged become ours (then read below via id 0)
    cursor: bytes | str = "0-0"
    while True:
        cursor = client.xautoclaim(stream, FLUSH_GROUP, consumer, min_idle_ms, cursor, count=batch)[0]
        if cursor in (b"0-0", "0-0"):
            break
    # our own pending entries first ("0"), then new ones (">")
    for start_id in ("0", ">"):
        while True:
            reply = client.xreadgroup(FLUSH_GROUP, consumer, {stream: start_id}, count=batch)
            entries = reply[0][1] if reply else []
            if not entries:
                break
            report += _flush_batch(client, stream, table, out_dir, entries, after_write)
            if start_id == ">" and len(entries) < batch:
                break
    return report


def _flush_batch(client, stream, table, out_dir, entries, after_write) -> FlushReport:
    report = FlushReport()
    ids = []
    records = []
    for entry_id, fields in entries:
        ids.append(entry_id)
        record = _decode(fields)
        if record is None:
            # a pending entry deleted meanwhile reads back without fields: nothing to keep
            report.corrupt += bool(fields)
            continue
        records.append(record)
    path = None
    if records:
        path = write_parquet_atomic(records_to_table(table, records), out_dir)
        report.files.append(path)
        report.events[table] += len(records)
    if after_write is not None:
        after_write(path)
    # only now, with the file durable, may Redis forget the entries
    pipe = client.pipeline(transaction=True)
    pipe.xack(stream, FLUSH_GROUP, *ids)
    pipe.xdel(stream, *ids)
    pipe.execute()
    report.sources_removed += len(ids)
    return report
