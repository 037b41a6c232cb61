"""JSON-lines segment files: the write-ahead part of the file backend.

Naming: every writing process owns its segment files; nothing is shared, so several uvicorn workers
(or hosts on a shared directory) append to one directory without locks::

    <events_dir>/segments/seg-<start_ns>-<host>-<pid>-<seq>.jsonl.open   being written
    <events_dir>/segments/seg-<start_ns>-<host>-<pid>-<seq>.jsonl        closed (rotated)

``start_ns`` is when the segment was opened; a segment of a process that died stays ``.open``
(:func:`writer_alive` tells the two apart, and compaction takes dead writers' segments too).

One line per event: ``{"type": "exposure"|"outcome", <fields>}\\n``. An append is one ``write`` of
complete lines to an ``O_APPEND`` descriptor followed by ``fdatasync``; the call returns only after
that (the directory entry of a new segment is fsync'ed before its first append returns).

Group commit (:class:`SegmentWriter`): the first caller to find no write in progress becomes the
leader, takes every line queued so far, writes them with one ``write`` + one ``fdatasync`` and wakes the
others; callers that queued meanwhile are handled by the next leader. A lone caller pays one fsync
and waits for nobody; under load N threads share one fsync.

Readers (:func:`read_segment`) tolerate a torn last line (a crash in the middle of a ``write``): it
is skipped and counted, never fatal. A line in the middle that does not decode is counted as corrupt.
"""

from __future__ import annotations

import json
import os
import re
import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psutil

from abtest.event_store.tables import fsync_dir, is_valid_record
from abtest.events import EventLogError

OPEN_SUFFIX = ".jsonl.open"
CLOSED_SUFFIX = ".jsonl"
_NAME = re.compile(r"^seg-(?P<start_ns>\d+)-(?P<host>.+)-(?P<pid>\d+)-(?P<seq>\d+)\.jsonl(?:\.open)?$")
# fdatasync flushes the data and the size (what a reader needs), not atime/mtime; macOS lacks it
_datasync = getattr(os, "fdatasync", os.fsync)


@dataclass(frozen=True)
class SegmentName:
    """Parsed segment file name."""

    start_ns: int
    host: str
    pid: int
    seq: int
    open: bool

    @property
    def stem(self) -> str:
        """Name without ``.jsonl[.open]``: the same before and after the segment is closed."""
        return f"seg-{self.start_ns}-{self.host}-{self.pid}-{self.seq:06d}"


def parse_segment_name(name: str) -> SegmentName | None:
    """Parse ``seg-...jsonl[.open]``; ``None`` for any other file."""
    match = _NAME.match(name)
    if match is None:
        return None
    return SegmentName(
        int(match["start_ns"]), match["host"], int(match["pid"]), int(match["seq"]), name.endswith(OPEN_SUFFIX)
    )


def list_segments(directory: Path) -> list[tuple[Path, SegmentName]]:
    """Segment files of a directory, oldest first (``start_ns`` order)."""
    if not directory.is_dir():
        return []
    found = []
    for path in directory.iterdir():
        name = parse_segment_name(path.name)
        if name is not None:
            found.append((path, name))
    found.sort(key=lambda item: (item[1].start_ns, item[1].pid, item[1].seq))
    return found


def writer_alive(name: SegmentName) -> bool:
    """Whether the process that opened an ``.open`` segment may still be writing it.

    On another host we cannot tell and assume yes. On this host the pid must exist and have started
    before the segment was opened (a recycled pid belongs to a younger process).
    """
    if name.host != socket.gethostname():
        return True
    try:
        created = psutil.Process(name.pid).create_time()
    except (psutil.NoSuchProcess, psutil.AccessDenied):
        return False
    except psutil.Error:
        return True
    return created <= name.start_ns / 1e9 + 1.0


@dataclass
class SegmentRead:
    """Decoded records of one segment (or of the new tail of one) and what was skipped."""

    records: list[dict[str, Any]]
    torn: int = 0
    corrupt: int = 0
    end_offset: int = 0


def decode_lines(data: bytes, final: bool) -> SegmentRead:
    """Decode complete lines of ``data``.

    Args:
        data (bytes): File content from some offset on.
        final (bool): The writer is gone, so an unterminated last line is torn (counted). When
            ``False`` it may be a write in progress: left for the next read, not counted.
    """
    out = SegmentRead(records=[])
    end = data.rfind(b"\n") + 1
    tail = data[end:]
    for line in data[:end].splitlines():
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except ValueError:
            record = None
        if is_valid_record(record):
            out.records.append(record)
        else:
            out.corrupt += 1
    if tail and final:
        out.torn += 1
        end = len(data)
    out.end_offset = end
    return out


def read_segment(path: Path, offset: int = 0, final: bool = True) -> SegmentRead:
    """Read a segment from ``offset``; a file that vanished (compacted meanwhile) reads as empty."""
    try:
        with open(path, "rb") as fh:
            fh.seek(offset)
            data = fh.read()
    except FileNotFoundError:
        return SegmentRead(records=[], end_offset=offset)
    read = decode_lines(data, final)
    read.end_offset += offset
    return read


class _Ticket:
    __slots__ = ("line", "done", "error")

    def __init__(self, line: bytes) -> None:
        self.line = line
        self.done = False
        self.error: BaseException | None = None


class SegmentWriter:
    """Appends lines to this process's segment, durable when :meth:`append` returns (group commit).

    Args:
        directory (Path): The ``segments`` directory.
        max_bytes (int): Close the segment and open a new one past this size.
        max_age_s (float): ... or when it was opened longer ago than this.

    Attributes:
        appends (int): Lines written. fsyncs (int): ``fdatasync`` calls (group commits).
        segments_opened (int): Segment files created by this writer.
    """

    def __init__(self, directory: Path, max_bytes: int, max_age_s: float) -> None:
        self.directory = Path(directory)
        self.max_bytes = max_bytes
        self.max_age_s = max_age_s
        self._cond = threading.Condition(threading.Lock())
        self._queue: list[_Ticket] = []
        self._leader_busy = False
        self._closed = False
        # the current segment; only the leader touches these
        self._fd: int | None = None
        self._path: Path | None = None
        self._pid: int | None = None
        self._size = 0
        self._opened_at = 0.0
        self._seq = 0
        self.appends = 0
        self.fsyncs = 0
        self.segments_opened = 0

    @property
    def current_path(self) -> Path | None:
        """The segment being written by this process, if any."""
        return self._path if self._pid == os.getpid() else None

    def append(self, line: bytes) -> None:
        """Write one complete line (ending in ``\\n``) durably; raises :class:`EventLogError` on failure."""
        ticket = _Ticket(line)
        with self._cond:
            if self._closed:
                raise EventLogError("event log is closed")
            self._queue.append(ticket)
            while not ticket.done and self._leader_busy:
                self._cond.wait()
            if ticket.done:
                if ticket.error is not None:
                    raise EventLogError(f"event log write failed: {ticket.error}") from ticket.error
                return
            # nobody is writing: lead a group commit of everything queued so far (ours included)
            self._leader_busy = True
            batch, self._queue = self._queue, []
        error: BaseException | None = None
        try:
            self._commit([t.line for t in batch])
        except BaseException as exc:  # noqa: BLE001 - handed to every waiter of this batch, re-raised below
            error = exc
        with self._cond:
            for t in batch:
                t.done = True
                t.error = error
            self._leader_busy = False
            self._cond.notify_all()
        if error is not None:
            raise EventLogError(f"event log write failed: {error}") from error

    def _commit(self, lines: list[bytes]) -> None:
        if self._pid != os.getpid():
            # after fork the inherited descriptor belongs to the parent: leave it, open our own
            self._fd = None
        if self._fd is None or self._size >= self.max_bytes or time.time() - self._opened_at >= self.max_age_s:
            self._rotate()
        data = b"".join(lines)
        try:
            view = memoryview(data)
            while view:
                written = os.write(self._fd, view)
                view = view[written:]
            _datasync(self._fd)
        except OSError:
            # a partial write may have left half a line: never append after it, start a new segment
            self._close_segment(rename=True)
            raise
        self._size += len(data)
        self.appends += len(lines)
        self.fsyncs += 1

    def _rotate(self) -> None:
        self._close_segment(rename=True)
        self.directory.mkdir(parents=True, exist_ok=True)
        pid = os.getpid()
        start_ns = time.time_ns()
        self._seq += 1
        path = self.directory / f"seg-{start_ns}-{socket.gethostname()}-{pid}-{self._seq:06d}{OPEN_SUFFIX}"
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o644)
        # the new name must survive a crash before any event in the file is acknowledged
        fsync_dir(self.directory)
        self._fd, self._path, self._pid = fd, path, pid
        self._size = 0
        self._opened_at = time.time()
        self.segments_opened += 1

    def _close_segment(self, rename: bool) -> None:
        if self._fd is None or self._pid != os.getpid():
            self._fd = self._path = None
            return
        os.close(self._fd)
        path = self._path
        self._fd = self._path = None
        if rename and path is not None:
            try:
                os.replace(path, path.with_name(path.name[: -len(".open")]))
                fsync_dir(self.directory)
            except OSError:
                pass  # the segment stays ".open"; compaction takes it once this process is gone

    def seal(self) -> None:
        """Close the current segment (it becomes ``.jsonl``, ready for compaction)."""
        with self._cond:
            while self._leader_busy:
                self._cond.wait()
            self._leader_busy = True
        try:
            self._close_segment(rename=True)
        finally:
            with self._cond:
                self._leader_busy = False
                self._cond.notify_all()

    def close(self) -> None:
        """Seal the segment; later appends raise."""
        with self._cond:
            self._closed = True
        self.seal()


def iter_tail(paths: list[Path], offsets: dict[str, int]) -> Iterator[tuple[str, SegmentRead]]:
    """Helper for tailing: read each segment from its remembered offset (keyed by stem)."""
    for path in paths:
        name = parse_segment_name(path.name)
        if name is None:
            continue
        final = not name.open or not writer_alive(name)
        read = read_segment(path, offsets.get(name.stem, 0), final=final)
        yield name.stem, read
