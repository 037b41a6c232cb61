"""The key guarantee of the event log: an acknowledged event survives SIGKILL.

A child process appends events from several threads and prints ``ACK <table> event_id=<id>`` after
each append returned (protocol and helpers: ``abtest.event_store.crashcheck``). The parent kills it
with SIGKILL in full flight (for Redis, the Redis server too, then restarts it from its AOF) and
checks that every acknowledged id is in the log, before and after a flush into Parquet.
"""

from __future__ import annotations

import subprocess
import sys

import pytest

from abtest.event_store.crashcheck import Ack, audit_acks, collect_acks, parse_ack
from abtest.event_store.file_log import SegmentFileLog
from abtest.event_store.redis_log import RedisStreamLog
from abtest.events import EventLogConfig

MIN_ACKS = 400  # per child: enough that the kill lands while threads are mid-append
KILL_TIMEOUT_S = 20.0
KILL_DELAY_S = 0.13  # past the threshold, so the kill does not always land in an fsync stall


def start_writer(events_dir, *extra: str) -> subprocess.Popen:
    command = [sys.executable, "-m", "abtest.event_store.crashcheck", "--events-dir", str(events_dir),
               "--threads", "4", "--seconds", "60", *extra]  # fmt: skip
    return subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE)


def audit(log, acks):
    tables = {"exposures": log.read_exposures(), "outcomes": log.read_outcomes()}
    result = audit_acks(acks, tables)
    assert result.ok, f"{result.summary()}; first missing: {result.missing[:3]}"
    for frame in tables.values():
        assert frame["event_id"].is_unique
    return result, tables


def test_ack_protocol_roundtrip():
    ack = Ack("exposures", "request_id", "r-1")
    assert parse_ack(ack.line()) == ack
    assert parse_ack("ACK exposures event_id=") is None and parse_ack("ACK exposures event_id=ab") is not None
    assert parse_ack("Traceback (most recent call last):") is None


def test_audit_reports_missing_acks():
    import pandas as pd

    acks = [Ack("outcomes", "event_id", "a"), Ack("outcomes", "event_id", "b")]
    result = audit_acks(acks, {"outcomes": pd.DataFrame({"event_id": ["a"]})})
    assert not result.ok and result.missing == (acks[1],)


def test_file_backend_sigkill_two_writer_processes(tmp_path):
    events_dir = tmp_path / "events"
    # small segments and a background compaction: the kill can land in a rotation or a compaction
    extra = ("--flush-interval", "0.2", "--segment-max-bytes", "16384")
    writers = [start_writer(events_dir, *extra) for _ in range(2)]
    acks = collect_acks(writers, MIN_ACKS, KILL_TIMEOUT_S, kill_delay_s=KILL_DELAY_S)
    for proc in writers:
        assert proc.returncode == -9, proc.stderr.read().decode()[-2000:]
        proc.stderr.close()
    assert len(acks) >= 2 * MIN_ACKS

    with SegmentFileLog(events_dir) as log:
        result, tables = audit(log, acks)
        # both processes wrote, each into its own segments and nothing else
        assert tables["exposures"]["request_id"].str.split("-").str[1].nunique() == 2
        report = log.flush()  # the dead writers' open segments are compacted too
        assert report.sources_removed >= 2
        audit(log, acks)
        assert not list(log.segments_dir.iterdir())
    # every outcome refers to an exposure that was stored (outcomes are appended after theirs)
    assert set(tables["outcomes"]["request_id"]) <= set(tables["exposures"]["request_id"])


def test_redis_backend_sigkill_writer_and_server(tmp_path, durable_redis):
    events_dir = tmp_path / "events"
    proc = start_writer(events_dir, "--redis-url", durable_redis.url, "--flush-interval", "0.2")
    acks = collect_acks(proc, MIN_ACKS, KILL_TIMEOUT_S, kill_delay_s=KILL_DELAY_S)
    assert proc.returncode == -9, proc.stderr.read().decode()[-2000:]
    proc.stderr.close()
    assert len(acks) >= MIN_ACKS
    # Redis dies too, without a shutdown save: only what reached its AOF (fsync always) survives
    durable_redis.kill()
    durable_redis.start()

    with RedisStreamLog(durable_redis.url, events_dir, EventLogConfig(flusher_min_idle_s=0)) as log:
        assert log.durability == "aof-always"
        audit(log, acks)
        log.flush()  # takes over what the killed flusher had read but not acknowledged
        assert log.stream_lengths() == {"exposures": 0, "outcomes": 0}
        assert not log.client.xpending(log.streams["outcomes"], "parquet-flusher")["pending"]
        _, tables = audit(log, acks)
    assert len(tables["exposures"]) >= MIN_ACKS // 2


@pytest.mark.parametrize("backend", ["file", "redis"])
def test_clean_exit_keeps_everything(tmp_path, backend, request):
    """Control: a writer that stops by itself (no kill) also loses nothing and leaves no torn line."""
    events_dir = tmp_path / "events"
    extra = ("--redis-url", request.getfixturevalue("durable_redis").url) if backend == "redis" else ()
    proc = subprocess.Popen(
        [sys.executable, "-m", "abtest.event_store.crashcheck", "--events-dir", str(events_dir),
         "--threads", "2", "--seconds", "0.5", *extra],  # fmt: skip
        stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    )
    acks = collect_acks(proc, min_acks=10**9, timeout_s=KILL_TIMEOUT_S, kill=False)
    assert proc.returncode == 0, proc.stderr.read().decode()[-2000:]
    proc.stderr.close()
    log = SegmentFileLog(events_dir) if backend == "file" else RedisStreamLog(extra[1], events_dir)
    with log:
        result, tables = audit(log, acks)
        assert tables["exposures"].attrs["torn_lines"] == 0
        assert result.acknowledged == len(tables["exposures"]) + len(tables["outcomes"])
