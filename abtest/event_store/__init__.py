"""Backends of :class:`abtest.events.EventLog`, the pieces they share, and :func:`open_event_log`.

* :mod:`~abtest.event_store.file_log`: segment files + Parquet (embedded default).
* :mod:`~abtest.event_store.redis_log`: Redis streams + Parquet (``REDIS_URL``).
* :mod:`~abtest.event_store.parquet_log`: what both backends share (reading write-ahead records + Parquet).
* :mod:`~abtest.event_store.segments`: JSON-lines segments, group-commit writer, torn-line tolerant reader.
* :mod:`~abtest.event_store.tables`: the line form of a record, Arrow/Parquet conversion, atomic
  Parquet files, read-time dedup.
* :mod:`~abtest.event_store.shown_index`: bounded request -> shown items index (file backend).
* :mod:`~abtest.event_store.crashcheck`: SIGKILL durability harness (ACK protocol + audit).

Dependencies point one way: every module here imports :mod:`abtest.events` (records, errors, the
interface), which imports none of them. ``redis`` is imported only by ``redis_log``, and only when
:func:`open_event_log` is asked for the Redis backend.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from abtest.events import EventLog, EventLogConfig

__all__ = ["open_event_log"]


def open_event_log(
    events_dir: str | Path,
    redis_url: str | None = None,
    config: EventLogConfig | Mapping[str, Any] | None = None,
) -> EventLog:
    """Open the configured backend.

    Args:
        events_dir (str | Path): Directory of the segment files and of the Parquet files (both
            backends write their Parquet files there).
        redis_url (str, optional): ``REDIS_URL``; when set, the Redis stream backend. (default: None)
        config (EventLogConfig | dict, optional): Tuning. (default: ``EventLogConfig()``)
    """
    if config is None:
        config = EventLogConfig()
    elif not isinstance(config, EventLogConfig):
        config = EventLogConfig(**config)
    if redis_url:
        # imported here so that the file backend works without the redis package loaded
        from abtest.event_store.redis_log import RedisStreamLog

        return RedisStreamLog(redis_url, events_dir, config)
    from abtest.event_store.file_log import SegmentFileLog

    return SegmentFileLog(events_dir, config)
