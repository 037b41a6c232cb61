"""Prometheus metrics of the service (``GET /metrics``).

One :class:`ServingMetrics` per app, on its own registry (tests run several apps in a process). With
several uvicorn workers set ``PROMETHEUS_MULTIPROC_DIR`` (an empty directory) before start-up, and
``/metrics`` aggregates every worker through ``prometheus_client``'s multiprocess collector.
"""

from __future__ import annotations

import os

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
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
        self.request_errors = Counter("feedrec_request_errors_total", "Requests answered with an error",
                                      ["route", "status"], registry=r)
        self.fallbacks = Counter("feedrec_fallback_total", "Recommendations not from the user's own vector",
                                 ["model", "fallback"], registry=r)
        self.model_info = Gauge("feedrec_model_info", "Loaded models (value 1)",
                                ["name", "kind", "version", "provider"], registry=r)
        self.reloads = Counter("feedrec_model_reloads_total", "Admin reloads", ["result"], registry=r)

    def set_models(self, models) -> None:
        self.model_info.clear()
        for m in models.values():
            self.model_info.labels(m.name, m.kind, m.version, m.provider).set(1)

    def exposition(self) -> bytes:
        if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
            registry = CollectorRegistry()
            MultiProcessCollector(registry)
            return generate_latest(registry)
        return generate_latest(self.registry)
