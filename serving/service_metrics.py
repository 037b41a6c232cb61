"""Prometheus metrics of the service (``GET /metrics``).

One :class:`ServingMetrics` per app, on its own registry (tests run several apps in a process). With
several uvicorn workers set ``PROMETHEUS_MULTIPROC_DIR`` (an empty directory) before start-up, and
``/metrics`` aggregates every worker through ``prometheus_client``'s multiprocess collector.

The event log's own counters (``EventLog.counters()``: appends, fsyncs, rejections, duplicates, index
size, ...) are read at scrape time into ``feedrec_event_log_stat{stat=...}``; with several workers that
family shows the counters of the worker that answered the scrape.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator, Mapping

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.multiprocess import MultiProcessCollector

#: Latency buckets (seconds) around the 25 ms p99 target.
LATENCY_BUCKETS = (0.0005, 0.001, 0.002, 0.004, 0.006, 0.008, 0.01, 0.015, 0.025, 0.05, 0.1, 0.25, 1.0)


class ServingMetrics:
    """Latency by route and arm, cache hits/misses/errors, request errors, fallbacks, model versions."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.latency = Histogram("feedrec_request_latency_seconds", "Request latency", ["route", "arm"],
                                 buckets=LATENCY_BUCKETS, registry=r)
        self.cache_hits = Counter("feedrec_cache_hits_total", "Feature cache hits", ["kind"], registry=r)
        self.cache_misses = Counter("feedrec_cache_misses_total", "Feature cache misses", ["kind"], registry=r)
        self.cache_errors = Counter("feedrec_cache_errors_total", "Feature cache (Redis) errors", ["op"], registry=r)
        self.cache_skips = Counter("feedrec_cache_skipped_total", "Cache calls skipped by the open circuit breaker",
                                   ["op"], registry=r)
        # ``arm`` is the arm that was serving the request ("none" when the error came before routing):
        # abtest.report.prometheus turns it into per-arm error-rate guardrails.
        self.request_errors = Counter("feedrec_request_errors_total", "Requests answered with an error",
                                      ["route", "status", "arm"], registry=r)
        self.feedback_rejected = Counter("feedrec_feedback_rejected_total",
                                         "Feedback refused by the event log (unknown request, item not shown, ...)",
                                         ["reason"], registry=r)
        self.event_log_errors = Counter("feedrec_event_log_errors_total",
                                        "Events the log could not store (an outcome: 503; an exposure: the list "
                                        "is served with logged=false)", ["table"], registry=r)  # fmt: skip
        self.exposures_unlogged = Counter("feedrec_exposures_unlogged_total",
                                          "Lists served although the event log could not store their exposure",
                                          registry=r)  # fmt: skip
        # body too large (413), ... : refused before any route ran
        self.requests_refused = Counter("feedrec_requests_refused_total",
                                        "Requests refused before routing (413 body too large)", ["reason"],
                                        registry=r)  # fmt: skip
        self.fallbacks = Counter("feedrec_fallback_total", "Recommendations not from the user's own vector",
                                 ["model", "fallback"], registry=r)
        self.model_info = Gauge("feedrec_model_info", "Loaded models (value 1)",
                                ["name", "kind", "version", "provider"], registry=r)
        # the feed arm's request stages (serving.feed_model): the uncached-request breakdown of issue 13
        self.feed_stage_seconds = Histogram("feedrec_feed_stage_seconds", "Feed request time by stage",
                                            ["model", "stage"], buckets=LATENCY_BUCKETS, registry=r)
        self.feed_candidates = Histogram("feedrec_feed_candidates", "Candidates ranked per feed request", ["model"],
                                         buckets=(50, 100, 200, 400, 600, 800, 1000, 1500), registry=r)
        self.reloads = Counter("feedrec_model_reloads_total", "Admin reloads", ["result"], registry=r)
        self._event_log: EventLogCollector | None = None

    def set_models(self, models) -> None:
        self.model_info.clear()
        for m in models.values():
            self.model_info.labels(m.name, m.kind, m.version, m.provider).set(1)

    def watch_event_log(self, counters: Callable[[], Mapping[str, int]]) -> None:
        """Export ``counters()`` (an event sink's) as ``feedrec_event_log_stat`` on every scrape."""
        self._event_log = EventLogCollector(counters)
        self.registry.register(self._event_log)

    def exposition(self) -> bytes:
        if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
            registry = CollectorRegistry()
            MultiProcessCollector(registry)
            if self._event_log is not None:
                registry.register(self._event_log)
            return generate_latest(registry)
        return generate_latest(self.registry)


class EventLogCollector:
    """Custom collector: one gauge sample per key of the event log's ``counters()`` (read at scrape
    time, so the hot path pays nothing)."""

    NAME = "feedrec_event_log_stat"

    def __init__(self, counters: Callable[[], Mapping[str, int]]) -> None:
        self.counters = counters

    def describe(self) -> Iterator[Metric]:
        yield GaugeMetricFamily(self.NAME, "Event log counters (EventLog.counters())", labels=["stat"])

    def collect(self) -> Iterator[Metric]:
        family = GaugeMetricFamily(self.NAME, "Event log counters (EventLog.counters())", labels=["stat"])
        for key, value in sorted(self.counters().items()):
            family.add_metric([key], float(value))
        yield family
