"""What both backends share: reading = the write-ahead records not yet flushed + the Parquet files.

A backend (:class:`~abtest.event_store.file_log.SegmentFileLog`,
:class:`~abtest.event_store.redis_log.RedisStreamLog`) says how to list its write-ahead records
(:meth:`ParquetEventLog.pending`: segment lines, stream entries); the read itself, with its ordering
rule, dedup, ts filter and counters, is written once here.
"""

from __future__ import annotations

import abc
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from abtest.event_store.background import PeriodicFlush
from abtest.event_store.tables import Table, concat, read_parquet_files, records_to_table, to_frame
from abtest.events import EventLog


@dataclass
class PendingRecords:
    """Decoded write-ahead records of one table and what was skipped while reading them."""

    records: list[dict[str, Any]] = field(default_factory=list)
    torn: int = 0
    corrupt: int = 0


class ParquetEventLog(EventLog):
    """An :class:`~abtest.events.EventLog` whose flushed events are Parquet files under ``root``.

    Subclasses set ``root``, implement :meth:`pending` and :meth:`_release`, and may start a
    background flusher in ``_background`` (stopped by :meth:`close`).
    """

    root: Path
    _closed: bool = False
    _background: PeriodicFlush | None = None

    def close(self) -> None:
        """Stop the background flusher, then release the backend's files or connection (once)."""
        if self._closed:
            return
        self._closed = True
        if self._background is not None:
            self._background.stop()
        self._release()

    @abc.abstractmethod
    def _release(self) -> None:
        """Close what the backend holds (the segment writer, the Redis client)."""

    @abc.abstractmethod
    def pending(self, table: Table) -> PendingRecords:
        """The write-ahead records of ``table`` (not yet in Parquet), decoded."""

    def read_exposures(self, since: float | None = None, until: float | None = None) -> pd.DataFrame:
        return self._read("exposures", since, until)

    def read_outcomes(self, since: float | None = None, until: float | None = None) -> pd.DataFrame:
        return self._read("outcomes", since, until)

    def _read(self, table: Table, since: float | None, until: float | None) -> pd.DataFrame:
        # The write-ahead store before the Parquet files: a record flushed meanwhile is in a file
        # listed later (read twice at worst, and the copies are dropped below), never in neither.
        pending = self.pending(table)
        parts = [records_to_table(table, pending.records), *read_parquet_files(table, self.root / table)]
        frame, dropped = to_frame(table, concat(table, parts), since, until)
        self._count("torn_lines_skipped", pending.torn)
        self._count("corrupt_lines_skipped", pending.corrupt)
        self._count("duplicates_dropped", dropped)
        frame.attrs.update(torn_lines=pending.torn, corrupt_lines=pending.corrupt, duplicates_dropped=dropped)
        return frame
