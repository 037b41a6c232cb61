"""Acknowledged means durable, over HTTP: SIGKILL ``python -m serving`` under concurrent load, then every
``/recommend`` and ``/feedback`` answered with 200 must be in the event log on disk.

Client threads drive the real service (uvicorn, ONNX Runtime, the segment-file event log) and record an
ACK (:mod:`abtest.event_store.crashcheck` protocol) after each 200: the exposure's ``request_id``, the
outcome's ``event_id``. The server is killed in full flight; the audit reads the directory it left
(including its orphaned ``.open`` segment). A restarted server must then accept feedback for the
requests the dead one served and recognise a retried outcome, and a compaction must keep everything.

A SIGKILL loses what the process held in user space (a queue, a buffer), so this catches answering
before the sink's append returned; it cannot show a missing fsync (the page cache survives a process
kill): ``tests/abtest/test_events_durability.py`` checks that part.
"""

from __future__ import annotations

import signal
import threading
import time
import uuid
from collections import Counter

import httpx

from abtest.event_store import open_event_log
from abtest.event_store.crashcheck import Ack, audit_acks
from tests.conftest import ServerProcess
from tests.serving.conftest import N_USERS, USER_ID0

THREADS = 8
MIN_ACKS = 200


def read_tables(events_dir) -> dict:
    with open_event_log(events_dir, config={"retention_s": 1e12}) as log:
        return {"exposures": log.read_exposures(), "outcomes": log.read_outcomes()}


def drive(url: str, worker: int, acks: list[Ack], lock: threading.Lock, stop: threading.Event,
          outcomes: Counter) -> None:
    """Recommend, then click one shown item, until stopped or the server is gone."""
    i = 0
    with httpx.Client(base_url=url, timeout=10) as client:
        while not stop.is_set():
            user = str(USER_ID0 + (worker * 37 + i) % N_USERS)
            i += 1
            try:
                r = client.get(f"/recommend/{user}", params={"k": 5})
                if r.status_code != 200:
                    outcomes[f"recommend {r.status_code}"] += 1
                    continue
                body = r.json()
                with lock:
                    acks.append(Ack("exposures", "request_id", body["request_id"]))
                event_id = uuid.uuid4().hex
                f = client.post("/feedback", json={"request_id": body["request_id"], "user_id": user, "kind": "click",
                                                   "item_id": body["items"][i % 5]["item_id"], "event_id": event_id})
                if f.status_code != 200:
                    outcomes[f"feedback {f.status_code}"] += 1
                    continue
                with lock:
                    acks.append(Ack("outcomes", "event_id", event_id))
            except httpx.HTTPError:
                outcomes["connection lost"] += 1
                return


def metric(text: str, stat: str) -> float:
    prefix = f'feedrec_event_log_stat{{stat="{stat}"}} '
    return next((float(line[len(prefix):]) for line in text.splitlines() if line.startswith(prefix)), 0.0)


def test_every_acknowledged_event_survives_sigkill_of_the_server(serving_bundles, tmp_path):
    events_dir = tmp_path / "events"
    env = {"FEEDREC_MODELS": f"gnn={serving_bundles['gnn']}", "FEEDREC_EVENTS_DIR": str(events_dir),
           "FEEDREC_PARITY_USERS": "0"}  # fmt: skip
    server = ServerProcess(env, tmp_path / "server.log")
    try:
        server.wait_ready()
        # without FEEDREC_ALLOW_SIM_TIME the simulator's header is ignored: the exposure is stamped now
        stamped = httpx.get(f"{server.url}/recommend/{USER_ID0}", headers={"X-Feedrec-Sim-Time": "1000.0"}).json()
        acks: list[Ack] = []
        lock, stop, failures = threading.Lock(), threading.Event(), Counter()
        threads = [threading.Thread(target=drive, args=(server.url, w, acks, lock, stop, failures), daemon=True)
                   for w in range(THREADS)]  # fmt: skip
        for t in threads:
            t.start()
        deadline = time.monotonic() + 30
        while len(acks) < MIN_ACKS and time.monotonic() < deadline:
            time.sleep(0.02)
        metrics = httpx.get(f"{server.url}/metrics").text
        server.proc.send_signal(signal.SIGKILL)  # in full flight: 8 clients mid-request
        server.proc.wait()
        stop.set()
        for t in threads:
            t.join(timeout=15)
        with lock:
            acknowledged = list(acks)
    finally:
        server.stop()
    assert len(acknowledged) >= MIN_ACKS, (len(acknowledged), failures, server.log()[-2000:])
    assert set(failures) <= {"connection lost"}, failures  # no 4xx/5xx before the kill
    appends = metric(metrics, "exposures_appended") + metric(metrics, "outcomes_appended")
    print(f"\nbefore the kill: {appends:.0f} appends in {metric(metrics, 'fsyncs'):.0f} fsyncs; "
          f"{len(acknowledged)} acknowledged, {failures['connection lost']} requests cut by the kill")

    tables = read_tables(events_dir)
    audit = audit_acks(acknowledged, tables)
    assert audit.ok, audit.summary() + f"; first missing: {audit.missing[:5]}"
    exposures = tables["exposures"].set_index("request_id")
    assert time.time() - exposures.loc[stamped["request_id"], "ts"] < 600

    # A new process rebuilds the shown-items index from the dead one's segment.
    restarted = ServerProcess(env, tmp_path / "restarted.log")
    try:
        restarted.wait_ready()
        last_exposure = next(a.value for a in reversed(acknowledged) if a.table == "exposures")
        row = exposures.loc[last_exposure]
        r = httpx.post(f"{restarted.url}/feedback", json={"request_id": last_exposure, "user_id": str(row["user"]),
                                                          "item_id": int(row["items"][0]), "kind": "like"})
        assert r.status_code == 200, r.text
        retried = next(a.value for a in acknowledged if a.table == "outcomes")
        original = tables["outcomes"].set_index("event_id").loc[retried]
        again = httpx.post(f"{restarted.url}/feedback", json={
            "request_id": original["request_id"], "user_id": str(original["user"]), "item_id": int(original["item"]),
            "kind": "click", "event_id": retried})  # fmt: skip
        assert again.status_code == 200 and again.json()["recorded"] is False  # a retry across the crash
    finally:
        restarted.stop()

    with open_event_log(events_dir) as log:
        report = log.flush()  # compacts the killed server's orphaned segment
    assert report.events["exposures"] >= len([a for a in acknowledged if a.table == "exposures"])
    after = read_tables(events_dir)
    assert audit_acks(acknowledged, after).ok
    assert after["outcomes"]["event_id"].is_unique and (after["outcomes"]["event_id"] == retried).sum() == 1
