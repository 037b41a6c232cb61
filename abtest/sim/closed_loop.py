"""Closed-loop traffic simulator: data_gen users request lists from the running service, click on them
according to the ground-truth behaviour model, and the A/B report is compared with the true effect.

Examples::

    python -m abtest simulate --url http://127.0.0.1:8000 --data data/small --experiment gnn-vs-mf \\
        --days 7 --sessions-per-day 500 --max-requests 5000 --concurrency 8 --out reports/
    python -m abtest simulate --offline --data data/small --control popular --treatment noisy-oracle:1 \\
        --experiments 1000          # no HTTP: validate the statistics (abtest/sim/offline.py)

Online mode, per session of the arrival process (:mod:`abtest.sim.world`; simulated time starts at the end
of the dataset and runs ``--days``):

1. ``GET /recommend/{user}?k=K`` with header ``X-Feedrec-Sim-Time: <unix seconds>`` (a service that allows it
   stamps that time on the exposure; others ignore it);
2. ``P(click)`` of every shown item at its 0-based position from ``ClickModel.click_probability``; one
   Bernoulli draw per slot; ``POST /feedback {request_id, user_id, item_id, kind: "click"}`` per click;
3. the served list's expected clicks (the sum of the probabilities) is kept for the truth.

At most ``--concurrency`` requests are in flight (httpx, one connection pool), at most ``--max-requests``
are sent (when the arrival process makes more, a uniform random subset of sessions is kept, so the
requests still cover every simulated day) and the run stops after ``--duration`` wall seconds. A failed request (connection error, timeout,
non-2xx) is counted by kind and the session goes on. Only loopback URLs are accepted.

The true effect: ``CTR_arm = sum of click probabilities of the arm's served lists / its exposures``, for the
users who were actually served, printed beside the report's estimate. The report reads the service's event
log (``--events DIR``) when given, else the simulator's own record of what it was served and clicked; either
way exposures carry the simulated time (matched by ``request_id``), so the report's over-time plots have days.
Guardrails come from the service's ``/metrics``, or from client-side latencies when that fails.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import os
import sys
import time
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import numpy as np
import pandas as pd

from abtest.sim.world import TrafficConfig, WorldUsers, load_world_users, session_arrivals

__all__ = ["SIM_TIME_HEADER", "SimulationResult", "run_simulation", "add_arguments", "run"]

#: Header carrying the simulated time of a request (seconds since the epoch, UTC).
SIM_TIME_HEADER = "X-Feedrec-Sim-Time"
_LOOPBACK = {"127.0.0.1", "localhost", "::1", "[::1]"}


@dataclass
class SimulationResult:
    """What the simulator sent, saw and knows to be true."""

    exposures: pd.DataFrame  # client-side record, one row per served list (simulated ts)
    outcomes: pd.DataFrame  # clicks it posted and the service acknowledged
    requests_sent: int = 0
    failures: Counter = field(default_factory=Counter)
    latencies_ms: dict[str, list[float]] = field(default_factory=lambda: defaultdict(list))
    errors_by_arm: Counter = field(default_factory=Counter)
    wall_s: float = 0.0

    def truth(self, control: str | None = None, treatment: str | None = None) -> dict[str, float]:
        """Expected clicks per exposure of each arm's served lists under the click model (``ctr_<arm>``) and,
        given the two arms, the true relative lift ``rel_lift``."""
        ab = self.exposures[self.exposures["arm"].notna()]
        per_arm = ab.groupby("arm")["expected_clicks"].mean()
        out = {f"ctr_{arm}": float(v) for arm, v in per_arm.items()}
        c, t = out.get(f"ctr_{control}"), out.get(f"ctr_{treatment}")
        if c and t is not None:
            out["rel_lift"] = t / c - 1.0
        return out

    def client_guardrails(self, arms: tuple[str, ...]) -> dict[str, Any]:
        latency = {arm: float(np.percentile(self.latencies_ms[arm], 99)) for arm in arms if self.latencies_ms.get(arm)}
        total = {arm: len(self.latencies_ms.get(arm, [])) + self.errors_by_arm[arm] for arm in latency}
        errors = {arm: self.errors_by_arm[arm] / total[arm] if total[arm] else 0.0 for arm in latency}
        return {"latency_p99_ms": latency, "error_rate": errors,
                "source": "client-side measurement of the simulator (includes network and client overhead)"}


def check_loopback(url: str) -> str:
    """``url`` without a trailing slash; ``ValueError`` unless it is http(s) on a loopback host."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or parts.hostname is None:
        raise ValueError(f"--url {url!r} is not an http(s) URL")
    if parts.hostname not in _LOOPBACK:
        raise ValueError(f"--url {url!r}: the simulator only drives a service on this machine (127.0.0.1, localhost, ::1)")
    return url.rstrip("/")


async def _drive(
    url: str, click_model, users: WorldUsers, traffic: TrafficConfig, config, *, seed: int, concurrency: int,
    max_requests: int, duration_s: float, timeout_s: float, transport=None, progress: bool = True,
) -> SimulationResult:
    import httpx

    rng = np.random.default_rng([seed, 2])
    sessions = session_arrivals(users, traffic, rng)
    # Over the request budget: keep a uniform random subset of sessions (a thinner Poisson process), so the
    # requests still spread over all simulated days instead of stopping on day one.
    budget, kept = max_requests, []
    for i in rng.permutation(len(sessions)):
        if budget <= 0:
            break
        start, user, n = sessions[i]
        kept.append((start, user, min(n, budget)))
        budget -= min(n, budget)
    kept.sort()
    expected_arm = dict(zip((u for _, u, _ in kept), _expected_arms(config, [u for _, u, _ in kept])))
    clock_frozen = traffic.click_clock == "frozen"
    exposures: list[dict] = []
    outcomes: list[dict] = []
    result = SimulationResult(pd.DataFrame(), pd.DataFrame())
    limiter = asyncio.Semaphore(concurrency)
    deadline = time.monotonic() + duration_s
    bar = _progress(len(kept), progress)

    async def call(client, method: str, path: str, arm_hint: str, **kwargs):
        async with limiter:
            if time.monotonic() > deadline:
                result.failures["skipped: --duration reached"] += 1
                return None
            result.requests_sent += 1
            t0 = time.perf_counter()
            try:
                response = await client.request(method, path, **kwargs)
            except httpx.HTTPError as exc:
                result.failures[f"{method} {path.split('/')[1]}: {type(exc).__name__}"] += 1
                result.errors_by_arm[arm_hint] += 1
                return None
            elapsed = 1000 * (time.perf_counter() - t0)
        if response.status_code >= 300:
            result.failures[f"{method} {path.split('/')[1]}: HTTP {response.status_code}"] += 1
            result.errors_by_arm[arm_hint] += 1
            return None
        return response, elapsed

    async def session(client, start: float, user: int, n_requests: int) -> None:
        for r in range(n_requests):
            sim_ts = start + r * traffic.seconds_between_requests
            answer = await call(client, "GET", f"/recommend/{user}", expected_arm.get(user, "none"),
                                params={"k": traffic.k}, headers={SIM_TIME_HEADER: f"{sim_ts:.3f}"})  # fmt: skip
            if answer is None:
                continue
            response, elapsed = answer
            try:
                body = response.json()
                items = [int(it["item_id"]) for it in body["items"]]
                positions = [int(it.get("rank", i + 1)) - 1 for i, it in enumerate(body["items"])]
                request_id, arm = str(body["request_id"]), body.get("arm")
            except (ValueError, KeyError, TypeError):
                result.failures["GET recommend: malformed body"] += 1
                continue
            result.latencies_ms[arm or "none"].append(elapsed)
            p = np.zeros(len(items))
            if items:
                known = np.isin(items, click_model.item_ids)
                if known.any():
                    now = None if clock_frozen else int(sim_ts)
                    p[known] = click_model.click_probability(
                        np.full(int(known.sum()), user), np.asarray(items)[known], np.asarray(positions)[known], now=now
                    )
            exposures.append({"request_id": request_id, "ts": sim_ts, "experiment": body.get("experiment", config.key),
                              "arm": arm, "user": user, "model_version": body.get("model_version"), "items": items,
                              "item_arms": body.get("item_arms"), "expected_clicks": float(p.sum())})  # fmt: skip
            for j in np.flatnonzero(rng.random(len(items)) < p):
                posted = await call(client, "POST", "/feedback", arm or "none", json={
                    "request_id": request_id, "user_id": user, "item_id": items[j], "kind": "click"})  # fmt: skip
                if posted is not None:
                    outcomes.append({"request_id": request_id, "ts": sim_ts + 5.0, "user": user,
                                     "item": items[j], "kind": "click"})  # fmt: skip
        bar.update(1)

    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    started = time.perf_counter()
    async with httpx.AsyncClient(base_url=url, timeout=timeout_s, limits=limits, transport=transport) as client:
        # Sessions start in simulated-time order; a bounded number run at once (the semaphore gates requests).
        pending: set[asyncio.Task] = set()
        for start, user, n in kept:
            if time.monotonic() > deadline:
                result.failures["skipped: --duration reached"] += n
                continue
            pending.add(asyncio.create_task(session(client, start, user, n)))
            if len(pending) >= 4 * concurrency:
                _, pending = await asyncio.wait(pending, return_when=asyncio.FIRST_COMPLETED)
        if pending:
            await asyncio.wait(pending)
    bar.close()
    result.wall_s = time.perf_counter() - started
    result.exposures = pd.DataFrame(exposures, columns=["request_id", "ts", "experiment", "arm", "user",
                                                        "model_version", "items", "item_arms", "expected_clicks"])
    result.outcomes = pd.DataFrame(outcomes, columns=["request_id", "ts", "user", "item", "kind"])
    return result


def _expected_arms(config, user_ids: list[int]) -> list[str]:
    """The arm the hash router gives each user (to attribute failed requests, whose answer has no arm)."""
    if config is None or not user_ids:
        return ["none"] * len(user_ids)
    index, _ = config.assign_arms(user_ids)
    return [config.arm_names[i] if i >= 0 else "none" for i in index]


def _progress(total: int, enabled: bool):
    if enabled:
        from tqdm import tqdm

        return tqdm(total=total, desc="sessions", unit="session", file=sys.stderr)

    class _Silent:
        def update(self, n: int) -> None: ...
        def close(self) -> None: ...

    return _Silent()


def run_simulation(
    url: str,
    data_dir: str | Path,
    config,
    *,
    traffic: TrafficConfig | None = None,
    seed: int = 0,
    concurrency: int = 8,
    max_requests: int = 2000,
    duration_s: float = 300.0,
    timeout_s: float = 10.0,
    transport=None,
    click_model=None,
    progress: bool = True,
) -> SimulationResult:
    """Drive traffic at ``url`` (see the module docstring) and return what happened.

    Args:
        url (str): Base URL of the service (loopback only).
        data_dir (str | Path): data_gen dataset the service's models were trained on (with ``truth/``).
        config (ExperimentConfig): The experiment running on the service (arms, hash) or None.
        traffic (TrafficConfig, optional): Arrival process. (default: ``TrafficConfig()``)
        seed (int, optional): Seed of arrivals and clicks. (default: 0)
        concurrency (int, optional): Requests in flight at most. (default: 8)
        max_requests (int, optional): Recommendation requests to send at most. (default: 2000)
        duration_s (float, optional): Wall-clock limit in seconds. (default: 300)
        timeout_s (float, optional): Per-request timeout. (default: 10)
        transport (httpx.AsyncBaseTransport, optional): For tests (e.g. ``httpx.MockTransport``). (default: None)
        click_model (ClickModel, optional): Loaded model of ``data_dir``. (default: loaded)
    """
    from data_gen.truth import ClickModel

    url = check_loopback(url)
    model = click_model or ClickModel.load(data_dir)
    users = load_world_users(data_dir)
    return asyncio.run(_drive(
        url, model, users, traffic or TrafficConfig(), config, seed=seed, concurrency=concurrency,
        max_requests=max_requests, duration_s=duration_s, timeout_s=timeout_s, transport=transport, progress=progress,
    ))  # fmt: skip


def events_for_report(result: SimulationResult, events_dir: Path | None) -> tuple[pd.DataFrame, pd.DataFrame, str]:
    """The service's event log (when given and non-empty) with simulated timestamps, else the client record."""
    if events_dir is not None:
        from abtest.event_store import open_event_log

        with open_event_log(events_dir, config={"retention_s": 1e12}) as log:
            exposures, outcomes = log.read_exposures(), log.read_outcomes()
        sim_ts = pd.Series(result.exposures["ts"].to_numpy(), index=result.exposures["request_id"].to_numpy())
        exposures = exposures[exposures["request_id"].isin(sim_ts.index)].copy()
        if len(exposures):
            # The service may have stamped wall-clock time; the simulated calendar is what the report plots.
            exposures["ts"] = sim_ts.reindex(exposures["request_id"].to_numpy()).to_numpy()
            return exposures, outcomes, f"service event log {events_dir}"
    return result.exposures, result.outcomes, "the simulator's own record (no event log given)"


# --------------------------------------------------------------------------- command line


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--url", default="http://127.0.0.1:8000", help="service base URL, loopback only")
    parser.add_argument("--data", type=Path, required=True, help="data_gen dataset directory (with truth/)")
    parser.add_argument("--experiment", default="gnn-vs-mf", help="experiment key (default: gnn-vs-mf)")
    parser.add_argument("--experiments-dir", type=Path, default=Path("configs/experiments"))
    parser.add_argument("--events", type=Path, default=os.environ.get("FEEDREC_EVENTS_DIR"),
                        help="the service's event log directory (default: $FEEDREC_EVENTS_DIR; unset: client record)")
    parser.add_argument("--out", type=Path, default=Path("reports"), help="report directory (default: reports/)")
    parser.add_argument("--days", type=int, default=7, help="simulated days (default: 7)")
    parser.add_argument("--sessions-per-day", type=float, default=300.0, help="mean sessions per day (default: 300)")
    parser.add_argument("--requests-per-session", type=float, default=2.0, help="mean requests per session (default: 2)")
    parser.add_argument("--k", type=int, default=20, help="list length (default: 20)")
    parser.add_argument("--click-clock", choices=["frozen", "simulated"], default="frozen",
                        help="click model time: the dataset's end, or the simulated time (default: frozen)")
    parser.add_argument("--concurrency", type=int, default=8, help="requests in flight at most (default: 8)")
    parser.add_argument("--max-requests", type=int, default=3000, help="recommendation requests at most (default: 3000)")
    parser.add_argument("--duration", type=float, default=600.0, help="wall-clock limit, seconds (default: 600)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    offline = parser.add_argument_group("offline mode (no HTTP): validate the statistics on a simulated world")
    offline.add_argument("--offline", action="store_true", help="run many experiments offline instead")
    offline.add_argument("--control", default="popular", help="control ranker (default: popular)")
    offline.add_argument("--treatment", default="noisy-oracle:1", help="treatment ranker (default: noisy-oracle:1)")
    offline.add_argument("--experiments", type=int, default=1000, help="experiments (default: 1000)")
    offline.add_argument("--max-users", type=int, default=5000, help="users in the world at most (default: 5000)")


def run(args: argparse.Namespace) -> int:
    if not args.data.is_dir() or not (args.data / "truth" / "params.json").is_file():
        return _fail(f"{args.data}: not a data_gen dataset with truth/ (run python -m data_gen --out {args.data})")
    traffic = TrafficConfig(days=args.days, sessions_per_day=args.sessions_per_day,
                            requests_per_session=args.requests_per_session, k=args.k, click_clock=args.click_clock)  # fmt: skip
    if args.offline:
        return _run_offline(args, traffic)
    from abtest.report.analysis import pre_period_clicks_from_dataset
    from abtest.report.prometheus import guardrail_inputs_from_prometheus
    from abtest.report.render import ReportInputs, load_experiment_config, write_report
    from abtest.stats.formatting import format_pct
    from feedrec_common.config import ConfigError

    try:
        url = check_loopback(args.url)
        config = load_experiment_config(args.experiments_dir, args.experiment)
    except (ValueError, ConfigError, KeyError) as exc:
        return _fail(str(exc).strip("'\""))
    result = run_simulation(url, args.data, config, traffic=traffic, seed=args.seed, concurrency=args.concurrency,
                            max_requests=args.max_requests, duration_s=args.duration, progress=not args.no_progress)  # fmt: skip
    print(f"sent {result.requests_sent:,} requests in {result.wall_s:.1f} s; served lists: {len(result.exposures):,}; "
          f"clicks posted: {len(result.outcomes):,}; failures: {sum(result.failures.values()):,}")  # fmt: skip
    for what, n in result.failures.most_common():
        print(f"  failed: {what} x {n}")
    if result.exposures.empty:
        return _fail("no request succeeded; is the service running and ready (GET /readyz)?")
    guard = None
    try:
        import httpx

        guard = guardrail_inputs_from_prometheus(httpx.get(f"{url}/metrics", timeout=10).text)
    except Exception as exc:  # the report is still useful with client-side figures
        print(f"warning: /metrics unavailable ({exc}); guardrails from client-side latencies", file=sys.stderr)
    if not guard or not guard.get("latency_p99_ms"):
        guard = result.client_guardrails(config.arm_names)
    exposures, outcomes, source = events_for_report(result, args.events)
    control, treatment = config.control_arm, next(a for a in config.arm_names if a != config.control_arm)
    truth = result.truth(control, treatment)
    inputs = ReportInputs(exposures, outcomes, config, guard, truth=truth, pre_period=pre_period_clicks_from_dataset(args.data))
    paths = write_report(inputs, out_dir=args.out)
    summary = json.loads(paths.summary.read_text())
    estimate = next((m for m in summary["metrics"] if m["metric"].startswith("click-through")), None)
    print(f"events for the report: {source}")
    print("| quantity | true (click model) | report's estimate [95% CI] |\n|---|---|---|")
    for arm in config.arm_names:
        observed = next((r["clicks_per_feed"] for r in summary["arms_table"] if r["arm"] == arm), math.nan)
        print(f"| CTR {arm} (clicks per list) | {truth.get(f'ctr_{arm}', math.nan):.4f} | {observed:.4f} |")
    if estimate is not None and "rel_lift" in truth:
        lo, hi = estimate["rel_ci"]
        print(f"| relative lift {treatment} vs {control} | {format_pct(truth['rel_lift'], '+')} | "
              f"{format_pct(estimate['rel_lift'], '+')} [{format_pct(lo, '+')}, {format_pct(hi, '+')}] |")  # fmt: skip
    print(summary["decision"])
    print(f"wrote {paths.markdown} and {paths.html}")
    return 0


def _run_offline(args: argparse.Namespace, traffic: TrafficConfig) -> int:
    from abtest.sim.offline import build_world, format_validation, validate

    world = build_world(args.data, args.control, args.treatment, traffic=traffic, seed=args.seed, max_users=args.max_users)
    v = validate(world, num_experiments=args.experiments, seed=args.seed)
    print(format_validation(v, world))
    return 0


def _fail(message: str) -> int:
    print(f"abtest simulate: error: {message}", file=sys.stderr)
    return 2
