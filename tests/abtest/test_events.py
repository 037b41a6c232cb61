"""Event log: records, the shared EventLog contract (file and Redis backends), the shown-items index,
group commit, torn lines, compaction, the flusher's re-delivery and the ``python -m abtest flush`` CLI.

The SIGKILL durability tests are in ``test_events_durability.py``.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time

import pandas as pd
import pytest
import redis
from pydantic import ValidationError
from redis.backoff import NoBackoff
from redis.retry import Retry

from abtest.event_store import open_event_log
from abtest.event_store import segments as segments_module
from abtest.event_store.file_log import SegmentFileLog
from abtest.event_store.redis_log import RedisStreamLog, flush_stream
from abtest.event_store.segments import decode_lines, list_segments, read_segment
from abtest.event_store.shown_index import ShownIndex
from abtest.event_store.tables import encode_line
from abtest.events import (
    EXPOSURE_COLUMNS,
    OUTCOME_COLUMNS,
    DuplicateRequest,
    EventLog,
    EventLogConfig,
    EventLogError,
    Exposure,
    ItemNotShown,
    Outcome,
    OutcomeRejected,
    UnknownRequest,
    UserMismatch,
    explode_exposures,
)


def exposure(request_id: str = "r1", user: int | str = 7, items=(10, 11, 12), **kw) -> Exposure:
    fields = {"experiment": "exp", "arm": "a", "model_version": "v1", **kw}
    return Exposure(request_id=request_id, user=user, items=list(items), **fields)


def outcome(request_id: str = "r1", user: int | str = 7, item: int | str = 11, **kw) -> Outcome:
    return Outcome(request_id=request_id, user=user, item=item, kind=kw.pop("kind", "click"), **kw)


# -- records -------------------------------------------------------------------------------------
def test_exposure_defaults_positions_and_ids():
    e = exposure()
    assert e.positions == [1, 2, 3]
    assert len(e.event_id) == 32 and e.event_id != exposure().event_id
    assert e.ts == pytest.approx(time.time(), abs=5)
    with pytest.raises(ValidationError):
        e.arm = "b"  # frozen


@pytest.mark.parametrize(
    "kwargs",
    [
        {"items": [1, 1]},  # repeated item
        {"items": [1, "1"]},  # the same id as int and str
        {"positions": [1, 2]},  # length mismatch
        {"positions": [1, 1, 2]},  # repeated position
        {"positions": [-1, 0, 1]},
        {"item_arms": ["a"]},
        {"request_id": "has space"},
        {"request_id": ""},
        {"user": True},  # bools are not ids
        {"user": 2**63},
        {"ts": float("nan")},
        {"ts": -1.0},
        {"arm": ""},
        {"items": list(range(1001))},
        {"colour": "red"},  # unknown field
    ],
)
def test_exposure_rejects_invalid(kwargs):
    with pytest.raises(ValidationError):
        exposure(**kwargs)


def test_outcome_kind_is_checked():
    assert outcome(kind="share").kind == "share"
    with pytest.raises(ValidationError):
        outcome(kind="impression")


# -- the EventLog contract, for both backends ------------------------------------------------------
@pytest.fixture(params=["file", "redis"])
def event_log(request, tmp_path):
    if request.param == "file":
        log = open_event_log(tmp_path / "events")
    else:
        server = request.getfixturevalue("durable_redis")
        log = open_event_log(tmp_path / "events", server.url)
    yield log
    log.close()


def test_open_event_log_picks_backend(event_log):
    expected = RedisStreamLog if isinstance(event_log, RedisStreamLog) else SegmentFileLog
    assert isinstance(event_log, expected) and isinstance(event_log, EventLog)


def test_roundtrip_columns_and_types(event_log):
    e = exposure(item_arms=["a", "b", "a"], model="mf", fallback=None)
    assert event_log.append_exposure(e) is True
    o = outcome(item=12, kind="like")
    assert event_log.append_outcome(o) is True
    exposures, outcomes = event_log.read_exposures(), event_log.read_outcomes()
    assert tuple(exposures.columns) == EXPOSURE_COLUMNS and tuple(outcomes.columns) == OUTCOME_COLUMNS
    row = exposures.iloc[0]
    assert row["event_id"] == e.event_id and row["user"] == 7 and list(row["items"]) == [10, 11, 12]
    assert list(row["positions"]) == [1, 2, 3] and list(row["item_arms"]) == ["a", "b", "a"]
    assert row["ts"] == pytest.approx(e.ts) and pd.isna(row["fallback"]) and row["model"] == "mf"
    assert str(outcomes["item"].dtype) == "int64"
    assert outcomes.iloc[0][["event_id", "request_id", "item", "kind"]].tolist() == [o.event_id, "r1", 12, "like"]


def test_rejections_are_typed_and_counted(event_log):
    event_log.append_exposure(exposure())
    cases = [(outcome(request_id="nope"), UnknownRequest), (outcome(item=99), ItemNotShown),
             (outcome(user=8), UserMismatch)]  # fmt: skip
    for bad, error in cases:
        with pytest.raises(error) as info:
            event_log.append_outcome(bad)
        assert isinstance(info.value, OutcomeRejected)
    counters = event_log.counters()
    for reason in ("unknown_request", "item_not_shown", "user_mismatch"):
        assert counters[f"rejected_{reason}"] == 1
    assert event_log.read_outcomes().empty


def test_ids_compare_as_strings(event_log):
    event_log.append_exposure(exposure(user="42", items=["5", "6"]))
    assert event_log.append_outcome(outcome(user=42, item=5))  # int spelling of the same ids


def test_duplicate_event_ids_are_written_once(event_log):
    e = exposure()
    assert event_log.append_exposure(e) and not event_log.append_exposure(e)
    o = outcome(event_id="client-retry-1")
    assert event_log.append_outcome(o) is True
    # a client retrying POST /feedback with the same id: acknowledged again, stored once
    assert event_log.append_outcome(outcome(event_id="client-retry-1")) is False
    assert event_log.counters()["duplicates_skipped"] == 2
    assert len(event_log.read_exposures()) == 1 and len(event_log.read_outcomes()) == 1
    with pytest.raises(DuplicateRequest):
        event_log.append_exposure(exposure())  # same request id, another event


def test_read_filters_by_time_and_sorts(event_log):
    now = time.time()
    for i, ts in enumerate([now - 30, now - 10, now - 20]):
        event_log.append_exposure(exposure(request_id=f"r{i}", ts=ts))
    assert event_log.read_exposures()["request_id"].tolist() == ["r0", "r2", "r1"]
    assert event_log.read_exposures(since=now - 25, until=now - 15)["request_id"].tolist() == ["r2"]


def test_flush_keeps_every_event_and_empties_the_write_ahead_store(event_log):
    for i in range(20):
        event_log.append_exposure(exposure(request_id=f"r{i}", items=[i, i + 100]))
        event_log.append_outcome(outcome(request_id=f"r{i}", item=i + 100))
    before = event_log.read_exposures(), event_log.read_outcomes()
    report = event_log.flush()
    assert report.events == {"exposures": 20, "outcomes": 20} and report.files
    after = event_log.read_exposures(), event_log.read_outcomes()
    for old, new in zip(before, after):
        pd.testing.assert_frame_equal(old[["event_id", "ts"]], new[["event_id", "ts"]])
    if isinstance(event_log, RedisStreamLog):
        assert event_log.stream_lengths() == {"exposures": 0, "outcomes": 0}
    else:
        assert not any(p.name.endswith(".jsonl") for p, _ in list_segments(event_log.segments_dir))
    # the index still knows flushed requests, and appends go on after a flush
    assert event_log.append_outcome(outcome(request_id="r3", item=3, kind="share"))
    assert event_log.append_exposure(exposure(request_id="r-after"))
    assert len(event_log.read_outcomes()) == 21 and len(event_log.read_exposures()) == 21


def test_one_event_id_under_two_requests_is_two_events(event_log):
    """Issue 11 item 1: two outcomes reusing one client ``event_id`` for different requests were both
    acknowledged (write-time dedup is per request) but read back as one (read-time dedup was global).
    One rule now: an event is ``(request_id, event_id)``."""
    event_log.append_exposure(exposure(request_id="r1", items=[10, 11]))
    event_log.append_exposure(exposure(request_id="r2", items=[10, 11]))
    assert event_log.append_outcome(outcome(request_id="r1", item=10, event_id="same-id")) is True
    assert event_log.append_outcome(outcome(request_id="r2", item=10, event_id="same-id")) is True
    assert event_log.append_outcome(outcome(request_id="r2", item=11, event_id="same-id")) is False  # a retry
    for frame in (event_log.read_outcomes(), (event_log.flush(), event_log.read_outcomes())[1]):
        assert sorted(frame["request_id"]) == ["r1", "r2"]
        assert frame.attrs["duplicates_dropped"] == 0


def test_health_follows_the_store(event_log, request):
    assert event_log.healthy() is True
    if isinstance(event_log, RedisStreamLog):
        server = request.getfixturevalue("durable_redis")
        server.kill()
        try:
            assert event_log.healthy() is False
        finally:
            server.start()


def test_explode_exposures_credits_interleaved_items():
    e1 = exposure(request_id="r1", items=[1, 2], item_arms=["a", "b"])
    e2 = exposure(request_id="r2", items=[3])
    frame = pd.DataFrame([e1.model_dump(), e2.model_dump()])
    flat = explode_exposures(frame)
    assert flat[["request_id", "item", "position", "arm", "list_arm"]].values.tolist() == [
        ["r1", 1, 1, "a", "a"], ["r1", 2, 2, "b", "a"], ["r2", 3, 1, "a", "a"]]  # fmt: skip
    assert explode_exposures(frame.iloc[:0]).empty


def test_mixed_int_and_str_ids_read_back_as_strings(tmp_path):
    with SegmentFileLog(tmp_path) as log:
        log.append_exposure(exposure(request_id="r1", user=1, items=[1, 2]))
        log.flush()  # one Parquet file with int ids ...
        log.append_exposure(exposure(request_id="r2", user="u2", items=["x"]))  # ... and a segment with str ids
        frame = log.read_exposures()
    assert frame["user"].tolist() == ["1", "u2"] and [list(i) for i in frame["items"]] == [["1", "2"], ["x"]]


# -- file backend specifics ----------------------------------------------------------------------
def test_segment_lines_are_json(tmp_path):
    with SegmentFileLog(tmp_path) as log:
        e = exposure()
        log.append_exposure(e)
        (path, name), = list_segments(log.segments_dir)
        assert name.open and name.pid == os.getpid()
        record = json.loads(path.read_bytes())
    assert record["type"] == "exposure" and record["event_id"] == e.event_id
    assert encode_line("outcome", outcome()).endswith(b"\n")


def test_torn_last_line_is_skipped_and_counted(tmp_path):
    seg_dir = tmp_path / "segments"
    seg_dir.mkdir()
    lines = [encode_line("exposure", exposure(request_id=f"r{i}")) for i in range(3)]
    # a writer that died mid-write (pid 1 started before 1970 is never this writer: "dead")
    path = seg_dir / "seg-1-otherhost-1-000001.jsonl"
    path.write_bytes(lines[0] + b"{not json}\n" + lines[1] + lines[2][:25])
    with SegmentFileLog(tmp_path) as log:
        frame = log.read_exposures()
        assert frame["request_id"].tolist() == ["r0", "r1"]
        assert frame.attrs["torn_lines"] == 1 and frame.attrs["corrupt_lines"] == 1
        assert log.counters()["torn_lines_skipped"] == 1
        report = log.flush()
    assert report.torn_lines == 1 and report.events["exposures"] == 2 and not path.exists()


def test_unterminated_line_of_a_live_writer_is_not_torn():
    partial = encode_line("exposure", exposure())[:-10]
    read = decode_lines(partial, final=False)
    assert (read.records, read.torn, read.end_offset) == ([], 0, 0)
    assert decode_lines(partial, final=True).torn == 1


def test_read_time_dedup_by_request_and_event_id(tmp_path):
    seg_dir = tmp_path / "segments"
    seg_dir.mkdir()
    line = encode_line("exposure", exposure())
    (seg_dir / "seg-1-otherhost-1-000001.jsonl").write_bytes(line + line)
    (seg_dir / "seg-2-otherhost-1-000002.jsonl").write_bytes(line)
    # the same event id under another request is another event (written by hand: the writer would
    # refuse nothing here, the point is what the reader keeps)
    other = encode_line("outcome", outcome(request_id="r1", event_id="e1"))
    other_request = encode_line("outcome", outcome(request_id="r2", event_id="e1"))
    (seg_dir / "seg-3-otherhost-1-000003.jsonl").write_bytes(other + other + other_request)
    with SegmentFileLog(tmp_path) as log:
        frame = log.read_exposures()
        outcomes = log.read_outcomes()
    assert len(frame) == 1 and frame.attrs["duplicates_dropped"] == 2
    assert outcomes["request_id"].tolist() == ["r1", "r2"] and outcomes.attrs["duplicates_dropped"] == 1


def test_index_is_rebuilt_at_startup_within_retention(tmp_path):
    config = EventLogConfig(retention_s=60)
    with SegmentFileLog(tmp_path, config) as log:
        log.append_exposure(exposure(request_id="fresh"))
        log.append_exposure(exposure(request_id="old", ts=time.time() - 120))
        log.append_exposure(exposure(request_id="compacted"))
        log.append_outcome(outcome(request_id="fresh", event_id="o-1"))
    with SegmentFileLog(tmp_path, config) as log:
        log.flush()
    with SegmentFileLog(tmp_path, config) as log:  # rebuilt from Parquet alone
        assert log.append_outcome(outcome(request_id="fresh", item=12))
        assert log.append_outcome(outcome(request_id="compacted"))
        assert log.append_outcome(outcome(request_id="fresh", event_id="o-1")) is False  # seen before restart
        with pytest.raises(UnknownRequest):
            log.append_outcome(outcome(request_id="old"))


def test_outcome_served_by_another_process_is_found_by_catch_up(tmp_path):
    worker_a, worker_b = SegmentFileLog(tmp_path), SegmentFileLog(tmp_path)
    try:
        worker_a.append_exposure(exposure(request_id="served-by-a"))
        # worker B opened before A wrote: its index learns of the request when the outcome arrives
        assert worker_b.append_outcome(outcome(request_id="served-by-a"))
        worker_b.append_exposure(exposure(request_id="served-by-b"))
        worker_b.flush()  # compacts B's segment away before A ever tailed it
        assert worker_a.append_outcome(outcome(request_id="served-by-b"))
        assert worker_a.counters()["index_catch_ups"] >= 2
    finally:
        worker_a.close()
        worker_b.close()
    assert len(SegmentFileLog(tmp_path).read_outcomes()) == 2


def test_segments_rotate_by_size(tmp_path):
    with SegmentFileLog(tmp_path, EventLogConfig(segment_max_bytes=2048)) as log:
        for i in range(30):
            log.append_exposure(exposure(request_id=f"r{i}"))
        found = list_segments(log.segments_dir)
        line_bytes = len(encode_line("exposure", exposure(request_id="r10")))
        closed = [path.stat().st_size for path, name in found if not name.open]
        assert len(closed) >= 3 and sum(name.open for _, name in found) == 1
        assert all(2048 <= size < 2048 + line_bytes for size in closed)
        assert len(log.read_exposures()) == 30


def test_group_commit_shares_fsyncs_across_threads(tmp_path, monkeypatch):
    real = segments_module._datasync

    def slow_datasync(fd):  # a disk with 3 ms fsync latency: others queue while one syncs
        time.sleep(0.003)
        real(fd)

    monkeypatch.setattr(segments_module, "_datasync", slow_datasync)
    threads_n, per_thread = 8, 40
    with SegmentFileLog(tmp_path) as log:
        def work(t):
            for i in range(per_thread):
                log.append_exposure(exposure(request_id=f"t{t}-{i}", user=t))

        threads = [threading.Thread(target=work, args=(t,)) for t in range(threads_n)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        writer = log.writer
        assert writer.appends == threads_n * per_thread
        assert writer.fsyncs <= writer.appends / 3, (writer.fsyncs, writer.appends)
        frame = log.read_exposures()
    assert len(frame) == threads_n * per_thread and frame.attrs["corrupt_lines"] == 0


def test_append_returns_only_after_its_line_is_fsynced(tmp_path, monkeypatch):
    """Guards against acknowledging from a buffer: at every fsync, record which lines the file holds;
    each append must find its own line among the synced ones when it returns."""
    real = segments_module._datasync
    synced: set[str] = set()

    def recording_datasync(fd):
        real(fd)
        for path, _ in list_segments(tmp_path / "segments"):
            synced.update(r["event_id"] for r in read_segment(path, final=False).records)

    monkeypatch.setattr(segments_module, "_datasync", recording_datasync)
    with SegmentFileLog(tmp_path) as log:
        def work(t):
            for i in range(15):
                e = exposure(request_id=f"t{t}-{i}")
                log.append_exposure(e)
                assert e.event_id in synced
                o = outcome(request_id=f"t{t}-{i}")
                log.append_outcome(o)
                assert o.event_id in synced

        errors = []
        threads = [threading.Thread(target=lambda t=t: _capture(errors, work, t)) for t in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    assert not errors, errors[0]


def _capture(errors, fn, *args):
    try:
        fn(*args)
    except BaseException as exc:  # noqa: BLE001 - re-raised in the main thread by the assert
        errors.append(exc)


def test_lone_writer_syncs_every_append(tmp_path):
    with SegmentFileLog(tmp_path) as log:
        for i in range(5):
            log.append_exposure(exposure(request_id=f"r{i}"))
        assert log.writer.fsyncs == 5


def test_failed_write_is_not_acknowledged_and_the_next_goes_to_a_new_segment(tmp_path, monkeypatch):
    with SegmentFileLog(tmp_path) as log:
        log.append_exposure(exposure())
        real_write = os.write
        calls = {"n": 0}

        def failing_write(fd, data):
            calls["n"] += 1
            if calls["n"] == 1:
                real_write(fd, bytes(data)[:7])  # half a line reached the disk
                raise OSError(28, "No space left on device")
            return real_write(fd, data)

        monkeypatch.setattr(segments_module.os, "write", failing_write)
        with pytest.raises(EventLogError):
            log.append_outcome(outcome(event_id="o-retry"))
        assert log.append_outcome(outcome(event_id="o-retry")) is True  # the retry is not a "duplicate"
        assert log.counters()["segments_opened"] == 2
        frame = log.read_outcomes()
        assert frame["event_id"].tolist() == ["o-retry"] and frame.attrs["torn_lines"] == 1


def test_append_after_close_raises(tmp_path):
    log = SegmentFileLog(tmp_path)
    log.close()
    with pytest.raises(EventLogError):
        log.append_exposure(exposure())


def test_read_segment_of_a_vanished_file_is_empty(tmp_path):
    assert read_segment(tmp_path / "gone.jsonl").records == []


# -- the shown-items index -----------------------------------------------------------------------
class FakeClock:
    def __init__(self, now: float = 1_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def test_index_evicts_least_recently_added_beyond_capacity():
    index = ShownIndex(retention_s=1e9, max_requests=3, clock=FakeClock())
    for i in range(5):
        index.add_exposure(f"r{i}", f"e{i}", "u", ["1"], 1_000_000.0)
    assert len(index) == 3 and index.evicted == 2 and "r0" not in index and "r4" in index


def test_index_forgets_requests_past_retention():
    clock = FakeClock()
    index = ShownIndex(retention_s=100, max_requests=10, clock=clock)
    index.add_exposure("r1", "e1", "u", ["1"], clock.now)
    assert index.check_outcome("r1", "u", "1", "o1")
    clock.now += 101
    with pytest.raises(UnknownRequest):
        index.check_outcome("r1", "u", "1", "o2")
    index.add_exposure("r2", "e2", "u", ["1"], clock.now)  # adding evicts the expired entry
    assert "r1" not in index and len(index) == 1


def test_index_release_lets_a_failed_outcome_be_retried():
    index = ShownIndex(retention_s=100, max_requests=10, clock=FakeClock())
    index.add_exposure("r1", "e1", "u", ["1"], 1_000_000.0)
    assert index.check_outcome("r1", "u", "1", "o1") and not index.check_outcome("r1", "u", "1", "o1")
    index.release_outcome("r1", "o1")
    assert index.check_outcome("r1", "u", "1", "o1")


# -- Redis specifics -----------------------------------------------------------------------------
def test_redis_reports_fsync_always_and_request_hash_ttl(durable_redis, tmp_path):
    with RedisStreamLog(durable_redis.url, tmp_path, EventLogConfig(retention_s=600)) as log:
        assert log.durability == "aof-always"
        log.append_exposure(exposure())
        ttl = log.client.ttl(log.request_key("r1"))
        assert 590 <= ttl <= 600


def test_redis_flusher_crash_before_ack_redelivers(durable_redis, tmp_path):
    with RedisStreamLog(durable_redis.url, tmp_path) as log:
        for i in range(10):
            log.append_exposure(exposure(request_id=f"r{i}"))

        def crash(path):
            assert path is not None and path.exists()  # the Parquet file is durable ...
            raise RuntimeError("flusher killed")  # ... but the entries were never acknowledged

        with pytest.raises(RuntimeError):
            flush_stream(log.client, log.streams["exposures"], "exposures", tmp_path, consumer="f1",
                         after_write=crash)  # fmt: skip
        assert log.stream_lengths()["exposures"] == 10
        # another flusher takes the pending entries over and writes them again
        report = flush_stream(log.client, log.streams["exposures"], "exposures", tmp_path, consumer="f2",
                              min_idle_ms=0)  # fmt: skip
        assert report.events["exposures"] == 10 and log.stream_lengths()["exposures"] == 0
        frame = log.read_exposures()
        assert len(frame) == 10 and frame.attrs["duplicates_dropped"] == 10
        assert not log.client.xpending(log.streams["exposures"], "parquet-flusher")["pending"]


def test_redis_unreachable_raises_event_log_error(tmp_path):
    with pytest.raises(EventLogError):
        client = redis.Redis(port=1, socket_connect_timeout=0.2, retry=Retry(NoBackoff(), 0))
        RedisStreamLog("redis://127.0.0.1:1/0", tmp_path, client=client)


# -- CLI -----------------------------------------------------------------------------------------
def test_cli_flush_compacts_and_reports(tmp_path):
    with SegmentFileLog(tmp_path) as log:
        log.append_exposure(exposure())
    result = subprocess.run([sys.executable, "-m", "abtest", "flush", "--events-dir", str(tmp_path)],
                            capture_output=True, text=True, timeout=60)  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert "flushed 1 exposures, 0 outcomes into 1 parquet file(s)" in result.stdout
    assert list((tmp_path / "exposures").glob("*.parquet"))
    bad = subprocess.run([sys.executable, "-m", "abtest", "flush", "--events-dir", str(tmp_path / "nope")],
                         capture_output=True, text=True, timeout=60)  # fmt: skip
    assert bad.returncode == 2 and "no such event log directory" in bad.stderr and "Traceback" not in bad.stderr
