"""The embedded backend: JSON-lines segment files, compacted into Parquet (no server needed).

Layout of ``events_dir`` (see :mod:`abtest.event_store.segments` and :mod:`abtest.event_store.tables`)::

    segments/seg-<start_ns>-<host>-<pid>-<seq>.jsonl[.open]   write-ahead, one writer process each
    exposures/part-*.parquet, outcomes/part-*.parquet        compacted by flush()
    .compact.lock                                            one compaction at a time (flock)

Several processes (uvicorn workers) may open the same directory. Each writes its own segments; the
shown-items index of each process is rebuilt from the directory at start-up and, when an outcome
names a request it does not know, catches up on what the other processes appended since (the new
bytes of every segment, and any new Parquet file) before rejecting it. That is cheap (only new data
is read) and correct: an exposure is on disk before its response leaves the service, so feedback
for it always finds it.

Use a local disk: ``fdatasync`` and ``flock`` are not reliable on every network file system.
"""

from __future__ import annotations

import fcntl
import os
import threading
import time
from pathlib import Path

import pyarrow.compute as pc
import pyarrow.parquet as pq

from abtest.event_store.background import PeriodicFlush
from abtest.event_store.parquet_log import ParquetEventLog, PendingRecords
from abtest.event_store.segments import (
    SegmentWriter,
    list_segments,
    read_segment,
    writer_alive,
)
from abtest.event_store.shown_index import ShownIndex
from abtest.event_store.tables import (
    RECORD_TYPES,
    Table,
    encode_line,
    fsync_dir,
    parquet_files,
    records_to_table,
    write_parquet_atomic,
)
from abtest.events import (
    TABLES,
    EventLogConfig,
    EventLogError,
    Exposure,
    FlushReport,
    Outcome,
    OutcomeRejected,
    UnknownRequest,
    id_key,
)


class SegmentFileLog(ParquetEventLog):
    """Event log in local segment files; see the module docstring.

    Args:
        events_dir (str | Path): Directory of segments and Parquet files (created if missing).
        config (EventLogConfig, optional): Tuning. (default: ``EventLogConfig()``)
    """

    def __init__(self, events_dir: str | Path, config: EventLogConfig | None = None) -> None:
        super().__init__()
        self.config = config or EventLogConfig()
        self.root = Path(events_dir)
        self.segments_dir = self.root / "segments"
        self.segments_dir.mkdir(parents=True, exist_ok=True)
        self._writer = SegmentWriter(self.segments_dir, self.config.segment_max_bytes, self.config.segment_max_age_s)
        self._index = ShownIndex(self.config.retention_s, self.config.max_index_requests)
        self._tail_lock = threading.Lock()
        self._tail_offsets: dict[str, int] = {}  # segment stem -> bytes already indexed
        self._parquet_seen: set[str] = set()  # exposure/outcome Parquet files already indexed
        self._catch_up()
        self._closed = False
        self._background = (
            PeriodicFlush(self.flush, self.config.flush_interval_s) if self.config.flush_interval_s else None
        )

    # -- writing -------------------------------------------------------------------------------
    def append_exposure(self, exposure: Exposure) -> bool:
        if not self._index.check_exposure(exposure.request_id, exposure.event_id):
            self._count("duplicates_skipped")
            return False
        self._writer.append(encode_line("exposure", exposure))
        self._index.add_exposure(
            exposure.request_id, exposure.event_id, id_key(exposure.user), exposure.item_keys(), exposure.ts
        )
        self._count("exposures_appended")
        return True

    def append_outcome(self, outcome: Outcome) -> bool:
        fresh = self._check_outcome(outcome)
        if not fresh:
            self._count("duplicates_skipped")
            return False
        try:
            self._writer.append(encode_line("outcome", outcome))
        except EventLogError:
            self._index.release_outcome(outcome.request_id, outcome.event_id)
            raise
        self._count("outcomes_appended")
        return True

    def _check_outcome(self, outcome: Outcome) -> bool:
        args = (outcome.request_id, id_key(outcome.user), id_key(outcome.item), outcome.event_id)
        try:
            try:
                return self._index.check_outcome(*args)
            except UnknownRequest:
                # another worker process may have served it: read what the others appended since
                self._catch_up()
                return self._index.check_outcome(*args)
        except OutcomeRejected as exc:
            self._count(f"rejected_{exc.reason}")
            raise

    # -- the shown-items index -----------------------------------------------------------------
    def _catch_up(self) -> None:
        """Index what other processes (or an earlier run) appended since the last call."""
        cutoff = time.time() - self.config.retention_s
        with self._tail_lock:
            self._count("index_catch_ups")
            own = self._writer.current_path
            outcomes: list[dict] = []
            listed = list_segments(self.segments_dir)
            for path, name in listed:
                if own is not None and path == own:
                    continue  # our own appends are indexed as they are written
                offset = self._tail_offsets.get(name.stem, 0)
                try:
                    stat = path.stat()
                except FileNotFoundError:
                    continue
                if stat.st_size <= offset:
                    continue
                if stat.st_mtime < cutoff:
                    self._tail_offsets[name.stem] = stat.st_size  # every event in it has expired
                    continue
                final = not name.open or not writer_alive(name)
                read = read_segment(path, offset, final=final)
                self._tail_offsets[name.stem] = read.end_offset
                for record in read.records:
                    if record["type"] == "exposure":
                        self._index.add_record(record)
                    else:
                        outcomes.append(record)
            stems = {name.stem for _, name in listed}
            for stem in list(self._tail_offsets):
                if stem not in stems:
                    del self._tail_offsets[stem]  # compacted away
            # listed after the segments: a segment compacted meanwhile is in one of these files
            self._index_parquet("exposures", cutoff)
            for record in outcomes:
                self._index.add_record(record)
            self._index_parquet("outcomes", cutoff)

    def _index_parquet(self, table: Table, cutoff: float) -> None:
        for path in parquet_files(self.root / table):
            if path.name in self._parquet_seen:
                continue
            self._parquet_seen.add(path.name)
            try:
                if path.stat().st_mtime < cutoff:
                    continue
                columns = ["event_id", "request_id", "ts", "user", "items"] if table == "exposures" else [
                    "event_id", "request_id"]  # fmt: skip
                data = pq.read_table(path, columns=columns)
            except FileNotFoundError:
                continue
            if table == "exposures":
                data = data.filter(pc.greater_equal(data["ts"], cutoff))
                for row in data.to_pylist():
                    row["type"] = "exposure"
                    self._index.add_record(row)
            else:
                for request_id, event_id in zip(data["request_id"].to_pylist(), data["event_id"].to_pylist()):
                    self._index.note_outcome(request_id, event_id)

    # -- reading -------------------------------------------------------------------------------
    def pending(self, table: Table) -> PendingRecords:
        out = PendingRecords()
        for path, name in list_segments(self.segments_dir):
            read = read_segment(path, 0, final=not name.open or not writer_alive(name))
            out.torn += read.torn
            out.corrupt += read.corrupt
            out.records.extend(r for r in read.records if RECORD_TYPES[r["type"]] == table)
        return out

    def healthy(self) -> bool:
        """The segment directory exists and is writable (a full disk shows only when a write fails)."""
        return self.segments_dir.is_dir() and os.access(self.segments_dir, os.W_OK)

    # -- compaction ----------------------------------------------------------------------------
    def flush(self) -> FlushReport:
        """Seal this process's segment and compact every closed (or orphaned) segment into Parquet.

        One compaction runs at a time per directory (``flock``); a concurrent call returns an empty
        report. Sources are removed only after their Parquet files are durable; a crash in between
        leaves both, and readers drop the duplicates.
        """
        report = FlushReport()
        lock_path = self.root / ".compact.lock"
        with open(lock_path, "a+b") as lock:
            try:
                fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                return report
            try:
                self._writer.seal()
                self._cleanup_partials()
                batch: list[Path] = []
                batch_bytes = 0
                for path, name in list_segments(self.segments_dir):
                    if name.open and writer_alive(name):
                        continue
                    batch.append(path)
                    batch_bytes += _size(path)
                    if batch_bytes >= 4 * self.config.segment_max_bytes:
                        report += self._compact(batch)
                        batch, batch_bytes = [], 0
                if batch:
                    report += self._compact(batch)
            finally:
                fcntl.flock(lock, fcntl.LOCK_UN)
        self._count("flushes")
        return report

    def _compact(self, paths: list[Path]) -> FlushReport:
        report = FlushReport()
        by_table: dict[str, list[dict]] = {t: [] for t in TABLES}
        for path in paths:
            read = read_segment(path, 0, final=True)
            report.torn_lines += read.torn
            report.corrupt += read.corrupt
            for record in read.records:
                by_table[RECORD_TYPES[record["type"]]].append(record)
        for table, records in by_table.items():
            for start in range(0, len(records), self.config.flush_batch):
                chunk = records[start : start + self.config.flush_batch]
                data = records_to_table(table, chunk)  # type: ignore[arg-type]
                report.files.append(write_parquet_atomic(data, self.root / table))
                report.events[table] += len(chunk)
        for path in paths:
            try:
                path.unlink()
                report.sources_removed += 1
            except FileNotFoundError:
                pass
        fsync_dir(self.segments_dir)
        return report

    def _cleanup_partials(self) -> None:
        """Remove ``.partial`` Parquet files left by a compaction that crashed (older than 1 h)."""
        for table in TABLES:
            directory = self.root / table
            if not directory.is_dir():
                continue
            for path in directory.glob("*.partial"):
                try:
                    if time.time() - path.stat().st_mtime > 3600:
                        path.unlink()
                except FileNotFoundError:
                    pass

    # -- lifecycle -----------------------------------------------------------------------------
    def _release(self) -> None:
        self._writer.close()

    def counters(self) -> dict[str, int]:
        out = super().counters()
        out.update(
            fsyncs=self._writer.fsyncs,
            segments_opened=self._writer.segments_opened,
            index_requests=len(self._index),
            index_evicted=self._index.evicted,
        )
        return out

    @property
    def writer(self) -> SegmentWriter:
        """The group-commit writer of this process (its counters show the batching)."""
        return self._writer


def _size(path: Path) -> int:
    try:
        return path.stat().st_size
    except FileNotFoundError:
        return 0
