"""Crash-test harness: kill a writer with SIGKILL, then check every acknowledged event is in the log.

The protocol is tiny so any writer can speak it (this module's own child below, or a load generator
that talks to the real HTTP service): after the write of an event *returned* (append returned,
HTTP 2xx received), the writer prints one line to stdout::

    ACK <table> <column>=<value>          e.g.  ACK exposures event_id=3f2a...   ACK exposures request_id=r-17

The parent reads the pipe (:func:`collect_acks`), kills the writer (and, for Redis, the server), and
compares (:func:`audit_acks`): every acknowledged ``<column>=<value>`` must appear in that table of the
log. An event written but killed before its ACK line is fine; an ACK without its event is a loss.

Child writer (used by ``tests/abtest/test_events_durability.py``)::

    python -m abtest.event_store.crashcheck --events-dir DIR [--redis-url URL] --threads 4 \\
        [--flush-interval 0.2] [--seconds 30]

Each thread loops: append an exposure of 5 items, ACK it, append an outcome for one of them, ACK it.
"""

from __future__ import annotations

import argparse
import os
import select
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import pandas as pd


@dataclass(frozen=True)
class Ack:
    """One acknowledged event: ``table`` must hold a row with ``column == value``."""

    table: str
    column: str
    value: str

    def line(self) -> str:
        """The protocol line (with trailing newline)."""
        return f"ACK {self.table} {self.column}={self.value}\n"


def parse_ack(line: str) -> Ack | None:
    """Parse one protocol line; ``None`` for anything else (log output, a torn last line)."""
    parts = line.strip().split(" ")
    if len(parts) != 3 or parts[0] != "ACK" or "=" not in parts[2]:
        return None
    column, value = parts[2].split("=", 1)
    return Ack(parts[1], column, value) if column and value else None


def collect_acks(
    procs: subprocess.Popen | Sequence[subprocess.Popen],
    min_acks: int,
    timeout_s: float,
    kill: bool = True,
    kill_delay_s: float = 0.0,
) -> list[Ack]:
    """Read ACK lines from the writers' stdout until each printed ``min_acks`` (or timeout), SIGKILL
    them all at once, and drain what they wrote before dying.

    Args:
        procs (Popen | list[Popen]): Writers started with ``stdout=subprocess.PIPE`` (binary).
        min_acks (int): Kill once every writer printed this many ACKs.
        timeout_s (float): Kill after this long in any case.
        kill (bool): Send SIGKILL (``False``: wait for the writers to exit by themselves). (default: True)
        kill_delay_s (float): Keep reading this long after ``min_acks`` before the kill. The writers'
            fsyncs are their longest stalls, so a kill right at the threshold tends to land inside
            one; a delay spreads the kill point over the write cycle. (default: 0)

    Returns:
        list[Ack]: Every complete ACK line the writers printed.
    """
    procs = [procs] if isinstance(procs, subprocess.Popen) else list(procs)
    readers = {proc.stdout.fileno(): _LineReader() for proc in procs}
    open_fds = set(readers)
    deadline = time.monotonic() + timeout_s
    # read all pipes concurrently: a writer whose pipe is full blocks, which would skew the kill point
    kill_at = None
    while open_fds:
        now = time.monotonic()
        if kill and kill_at is None and all(len(r.acks) >= min_acks for r in readers.values()):
            kill_at = now + kill_delay_s
        if now >= deadline or (kill_at is not None and now >= kill_at):
            break
        ready, _, _ = select.select(list(open_fds), [], [], 0.005)
        for fd in ready:
            data = os.read(fd, 65536)
            if data:
                readers[fd].consume(data)
            else:
                open_fds.discard(fd)  # the writer exited
    if kill:
        for proc in procs:
            if proc.poll() is None:
                proc.send_signal(signal.SIGKILL)
    # lines already in a pipe were printed after their append returned: they count
    for fd in open_fds:
        while data := os.read(fd, 65536):
            readers[fd].consume(data)
    for proc in procs:
        proc.wait()
    return [ack for reader in readers.values() for ack in reader.acks]


class _LineReader:
    def __init__(self) -> None:
        self.buffer = b""
        self.acks: list[Ack] = []

    def consume(self, data: bytes) -> None:
        *lines, self.buffer = (self.buffer + data).split(b"\n")
        for line in lines:
            ack = parse_ack(line.decode(errors="replace"))
            if ack is not None:
                self.acks.append(ack)


@dataclass(frozen=True)
class DurabilityAudit:
    """Result of :func:`audit_acks`."""

    acknowledged: int
    missing: tuple[Ack, ...]
    rows: dict[str, int]

    @property
    def ok(self) -> bool:
        return not self.missing

    def summary(self) -> str:
        rows = ", ".join(f"{n} {t}" for t, n in self.rows.items())
        return f"{self.acknowledged} acknowledged, {len(self.missing)} missing; log holds {rows}"


def audit_acks(acks: Iterable[Ack], tables: dict[str, pd.DataFrame]) -> DurabilityAudit:
    """Check that every acknowledged value is in its table.

    Args:
        acks (iterable of Ack): From :func:`collect_acks`.
        tables (dict[str, DataFrame]): ``{"exposures": log.read_exposures(), "outcomes": ...}``.
    """
    acks = list(acks)
    present: dict[tuple[str, str], set[str]] = {}
    missing = []
    for ack in acks:
        key = (ack.table, ack.column)
        if key not in present:
            frame = tables.get(ack.table)
            values = frame[ack.column] if frame is not None and ack.column in frame else []
            present[key] = {str(v) for v in values}
        if ack.value not in present[key]:
            missing.append(ack)
    return DurabilityAudit(len(acks), tuple(missing), {t: len(f) for t, f in tables.items()})


def _writer_thread(log, thread: int, stop: threading.Event, out_lock: threading.Lock) -> None:
    from abtest.events import Exposure, Outcome

    i = 0
    while not stop.is_set():
        request_id = f"r-{os.getpid()}-{thread}-{i}"
        items = [thread * 1_000_000 + i * 10 + k for k in range(5)]
        exposure = Exposure(request_id=request_id, experiment="crash", arm=f"arm{i % 2}", user=thread,
                            model_version="v1", items=items)  # fmt: skip
        log.append_exposure(exposure)
        _emit(Ack("exposures", "event_id", exposure.event_id), out_lock)
        outcome = Outcome(request_id=request_id, user=thread, item=items[i % 5], kind="click")
        log.append_outcome(outcome)
        _emit(Ack("outcomes", "event_id", outcome.event_id), out_lock)
        i += 1


def _emit(ack: Ack, out_lock: threading.Lock) -> None:
    # one write per line under a lock: lines from several threads never interleave in the pipe
    with out_lock:
        sys.stdout.write(ack.line())
        sys.stdout.flush()


def main(argv: list[str] | None = None) -> int:
    from abtest.event_store import open_event_log
    from abtest.events import EventLogConfig

    parser = argparse.ArgumentParser(prog="python -m abtest.event_store.crashcheck", description=__doc__.split("\n")[0])
    parser.add_argument("--events-dir", required=True, help="event log directory")
    parser.add_argument("--redis-url", default=None, help="use the Redis backend")
    parser.add_argument("--threads", type=int, default=4, help="writer threads (default: 4)")
    parser.add_argument("--seconds", type=float, default=30.0, help="stop after this long (default: 30)")
    parser.add_argument("--flush-interval", type=float, default=None, help="background flush period in seconds")
    parser.add_argument("--segment-max-bytes", type=int, default=64 * 2**20, help="rotate segments past this size")
    args = parser.parse_args(argv)
    config = EventLogConfig(flush_interval_s=args.flush_interval, segment_max_bytes=args.segment_max_bytes,
                            flusher_min_idle_s=0)  # fmt: skip
    log = open_event_log(args.events_dir, args.redis_url, config)
    stop = threading.Event()
    out_lock = threading.Lock()
    threads = [
        threading.Thread(target=_writer_thread, args=(log, t, stop, out_lock), daemon=True)
        for t in range(args.threads)
    ]
    for t in threads:
        t.start()
    time.sleep(args.seconds)
    stop.set()
    for t in threads:
        t.join()
    log.close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
