"""Probes of the running service that produce the figures of docs/serving.md (issue 11 items 3 and 9).

Each probe talks to a real ``python -m serving`` over HTTP and returns plain numbers; the tests in
``test_hardening.py`` assert on them, and the CLI prints them for the docs::

    .venv/bin/python -m tests.serving.probes outage --bundle <serving bundle>   # Redis events backend
    .venv/bin/python -m tests.serving.probes body --bundle <serving bundle>     # 100 MB POST /feedback

``outage``: ``clients`` threads ask ``GET /recommend`` in a loop while Redis (feature cache *and* event
log) is stopped for ``outage_s`` seconds and started again; ``/readyz`` is polled beside them.
``body``: one 100 MB ``POST /feedback`` streamed over a raw socket while the server's RSS is sampled.
"""

from __future__ import annotations

import argparse
import json
import socket
import threading
import time
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path

import httpx
import psutil


@dataclass
class OutageFigures:
    """What the clients saw around a Redis outage (times in seconds from the probe's start)."""

    requests: int = 0
    statuses: dict[str, int] = field(default_factory=dict)  # "200", "200 unlogged", "503", ...
    outage_requests: int = 0
    outage_statuses: dict[str, int] = field(default_factory=dict)
    failed: int = 0  # any non-2xx or transport error, whole run
    recovery_s: float | None = None  # Redis back -> first exposure logged again
    readyz_during_outage: dict[str, int] = field(default_factory=dict)
    max_latency_ms: float = 0.0
    outage_s: float = 0.0


def outage_probe(base_url: str, redis_stop, redis_start, users: list[str], *, clients: int = 8,
                 before_s: float = 2.0, outage_s: float = 4.0, after_s: float = 3.0) -> OutageFigures:
    """Load ``GET /recommend`` while Redis is down for ``outage_s`` s (``redis_stop()`` .. ``redis_start()``)."""
    records: list[tuple[float, float, str]] = []  # (start, end, outcome)
    readyz: list[tuple[float, int]] = []
    stop = threading.Event()
    lock = threading.Lock()
    t0 = time.monotonic()

    def client(worker: int) -> None:
        i = worker
        with httpx.Client(base_url=base_url, timeout=30) as http:
            while not stop.is_set():
                user = users[i % len(users)]
                i += clients
                start = time.monotonic() - t0
                try:
                    r = http.get(f"/recommend/{user}", params={"k": 10})
                    outcome = str(r.status_code)
                    if r.status_code == 200 and r.json().get("logged") is False:
                        outcome += " unlogged"
                except httpx.HTTPError as exc:
                    outcome = type(exc).__name__
                with lock:
                    records.append((start, time.monotonic() - t0, outcome))

    def poll_readyz() -> None:
        with httpx.Client(base_url=base_url, timeout=30) as http:
            while not stop.is_set():
                try:
                    status = http.get("/readyz").status_code
                except httpx.HTTPError:
                    status = 0
                readyz.append((time.monotonic() - t0, status))
                time.sleep(0.1)

    threads = [threading.Thread(target=client, args=(w,), daemon=True) for w in range(clients)]
    threads.append(threading.Thread(target=poll_readyz, daemon=True))
    for t in threads:
        t.start()
    time.sleep(before_s)
    down = time.monotonic() - t0
    redis_stop()
    time.sleep(outage_s)
    redis_start()
    up = time.monotonic() - t0
    time.sleep(after_s)
    stop.set()
    for t in threads:
        t.join(timeout=60)

    fig = OutageFigures(outage_s=round(up - down, 2))
    fig.requests = len(records)
    fig.statuses = dict(Counter(o for _, _, o in records))
    during = [o for s, _, o in records if down <= s < up]
    fig.outage_requests = len(during)
    fig.outage_statuses = dict(Counter(during))
    fig.failed = sum(not o.startswith("2") for _, _, o in records)
    fig.max_latency_ms = round(1000 * max((e - s for s, e, _ in records), default=0.0), 1)
    logged_again = sorted(e for s, e, o in records if s >= up and o == "200")
    fig.recovery_s = round(logged_again[0] - up, 3) if logged_again else None
    fig.readyz_during_outage = dict(Counter(str(st) for t, st in readyz if down <= t < up))
    return fig


@dataclass
class BodyFigures:
    """One oversized ``POST /feedback``."""

    body_bytes: int
    status: int | None
    seconds: float
    rss_growth_mb: float
    sent_bytes: int
    response: str


def big_body_probe(host: str, port: int, pid: int, body_mb: int = 100) -> BodyFigures:
    """Stream a ``body_mb`` MB JSON body to ``POST /feedback`` over a raw socket and time the answer.

    The body is sent by a thread while the main thread waits for the status line, so a server that
    answers early (413) is timed at its answer, not at the end of the upload.
    """
    size = body_mb * 2**20
    head = b'{"request_id": "'
    tail = b'", "user_id": "u", "item_id": 1, "kind": "click"}'
    process = psutil.Process(pid)
    baseline = process.memory_info().rss
    peak = [baseline]
    done = threading.Event()

    def sample() -> None:
        while not done.is_set():
            try:
                peak[0] = max(peak[0], process.memory_info().rss)
            except psutil.Error:
                return
            time.sleep(0.01)

    sock = socket.create_connection((host, port), timeout=60)
    sent = [0]

    def send() -> None:
        chunk = b"r" * 2**20
        try:
            sock.sendall(b"POST /feedback HTTP/1.1\r\nHost: probe\r\nContent-Type: application/json\r\n"
                         b"Content-Length: " + str(size).encode() + b"\r\n\r\n" + head)
            remaining = size - len(head) - len(tail)
            while remaining > 0:
                part = chunk[: min(len(chunk), remaining)]
                sock.sendall(part)
                sent[0] += len(part)
                remaining -= len(part)
            sock.sendall(tail)
        except OSError:
            pass  # the server answered and closed before the end of the upload

    sampler = threading.Thread(target=sample, daemon=True)
    sender = threading.Thread(target=send, daemon=True)
    start = time.monotonic()
    sampler.start()
    sender.start()
    data = b""
    try:
        while b"\r\n\r\n" not in data:
            part = sock.recv(65536)
            if not part:
                break
            data += part
        head_end = data.find(b"\r\n\r\n")
        headers = data[:head_end].decode("latin-1").lower() if head_end >= 0 else ""
        length = next((int(line.split(":", 1)[1]) for line in headers.split("\r\n")
                       if line.startswith("content-length:")), 0)  # fmt: skip
        while head_end >= 0 and len(data) < head_end + 4 + length:
            part = sock.recv(65536)
            if not part:
                break
            data += part
    except OSError:
        pass
    seconds = time.monotonic() - start
    time.sleep(0.3)  # let the sampler see what the server still holds after answering
    done.set()
    sock.close()
    sender.join(timeout=60)
    status_line = data.split(b"\r\n", 1)[0].decode("latin-1") if data else ""
    status = int(status_line.split()[1]) if len(status_line.split()) > 1 else None
    body = data.split(b"\r\n\r\n", 1)[1].decode("utf-8", "replace")[:200] if b"\r\n\r\n" in data else ""
    return BodyFigures(size, status, round(seconds, 3), round((peak[0] - baseline) / 2**20, 1), sent[0], body)


def _main() -> int:
    from tests.conftest import RedisServer, ServerProcess, free_port  # noqa: F401 - the test harness

    parser = argparse.ArgumentParser(prog="python -m tests.serving.probes", description=__doc__.split("\n\n")[0])
    parser.add_argument("probe", choices=["outage", "body"])
    parser.add_argument("--bundle", required=True, type=Path, help="serving bundle directory")
    parser.add_argument("--workdir", type=Path, default=Path("/tmp/feedrec-probes"))
    args = parser.parse_args()
    args.workdir.mkdir(parents=True, exist_ok=True)
    env = {"FEEDREC_MODELS": f"m={args.bundle}", "FEEDREC_PARITY_USERS": "0"}
    if args.probe == "outage":
        redis = RedisServer(free_port(), args.workdir)
        redis.start()
        server = ServerProcess({**env, "REDIS_URL": redis.url, "FEEDREC_EVENTS_DIR": str(args.workdir / "events")},
                               args.workdir / "outage-server.log")
        try:
            server.wait_ready()
            figures = asdict(outage_probe(server.url, redis.stop, redis.start, [str(1000 + i) for i in range(300)]))
        finally:
            server.stop()
            redis.stop()
    else:
        server = ServerProcess({**env, "FEEDREC_EVENTS_DIR": "memory"}, args.workdir / "body-server.log")
        try:
            server.wait_ready()
            figures = asdict(big_body_probe("127.0.0.1", server.port, server.proc.pid))
        finally:
            server.stop()
    print(json.dumps(figures, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(_main())
