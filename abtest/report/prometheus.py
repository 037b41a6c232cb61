"""Guardrail inputs (latency p99 and error rate per arm) from the service's Prometheus text (``GET /metrics``).

:func:`guardrail_inputs_from_prometheus` reads the request-latency histogram (default
``feedrec_request_latency_seconds{route="/recommend/{user_id}", arm=...}``) and estimates each arm's p99
the way Prometheus' ``histogram_quantile`` does: find the bucket where the cumulative count reaches 99%
and interpolate linearly inside it (a p99 in the ``+Inf`` bucket is reported as the largest finite
bound). The error rate per arm is ``errors / (errors + successes)``: when the error counter
(``feedrec_request_errors_total``) has an ``arm`` label it is used per arm; otherwise the route's
service-wide error rate is applied to every arm (key ``"*"``), and the result says so in ``source``.

The histograms are cumulative since the process started, so the figures cover the service's lifetime,
not only the experiment window.
"""

from __future__ import annotations

import math
import re
from collections import defaultdict
from typing import Any

__all__ = ["parse_prometheus_text", "histogram_quantile", "guardrail_inputs_from_prometheus"]

_SAMPLE = re.compile(r"^([A-Za-z_:][A-Za-z0-9_:]*)(?:\{(.*)\})?\s+(\S+)(?:\s+\S+)?$")
_LABEL = re.compile(r'([A-Za-z_][A-Za-z0-9_]*)="((?:[^"\\]|\\.)*)"')


def parse_prometheus_text(text: str) -> list[tuple[str, dict[str, str], float]]:
    """Samples of the Prometheus text exposition format as ``(name, labels, value)``; comments and
    malformed lines are skipped."""
    samples = []
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        match = _SAMPLE.match(line)
        if match is None:
            continue
        name, labels_text, value_text = match.groups()
        try:
            value = float(value_text)
        except ValueError:
            continue
        labels = {k: v.replace('\\"', '"').replace("\\n", "\n").replace("\\\\", "\\")
                  for k, v in _LABEL.findall(labels_text or "")}  # fmt: skip
        samples.append((name, labels, value))
    return samples


def histogram_quantile(q: float, buckets: dict[float, float]) -> float:
    """Quantile ``q`` of a cumulative histogram ``{upper_bound: count}`` (``inf`` for ``+Inf``), with linear
    interpolation inside the bucket (as Prometheus ``histogram_quantile``); NaN when empty."""
    bounds = sorted(buckets)
    if not bounds or buckets[bounds[-1]] <= 0:
        return float("nan")
    total = buckets[bounds[-1]]
    rank = q * total
    lower_bound, lower_count = 0.0, 0.0
    for bound in bounds:
        count = buckets[bound]
        if count >= rank:
            if math.isinf(bound):
                return lower_bound  # the largest finite bound: the histogram cannot say more
            if count == lower_count:
                return bound
            return lower_bound + (bound - lower_bound) * (rank - lower_count) / (count - lower_count)
        lower_bound, lower_count = bound, count
    return lower_bound


def guardrail_inputs_from_prometheus(
    text: str,
    *,
    route: str = "/recommend/{user_id}",
    latency_metric: str = "feedrec_request_latency_seconds",
    error_metric: str = "feedrec_request_errors_total",
    quantile: float = 0.99,
) -> dict[str, Any]:
    """``{"latency_p99_ms": {arm: ms}, "error_rate": {arm or "*": share}, "source": text}`` for
    :func:`abtest.report.render.render_report`.

    Args:
        text (str): Body of ``GET /metrics``.
        route (str, optional): Route label of the recommendation endpoint. (default: ``/recommend/{user_id}``)
        latency_metric (str, optional): Latency histogram, in seconds, labelled by ``route`` and ``arm``.
        error_metric (str, optional): Counter of failed requests, labelled by ``route`` (and ``arm``).
        quantile (float, optional): Which latency quantile to report. (default: 0.99)
    """
    buckets: dict[str, dict[float, float]] = defaultdict(dict)
    counts: dict[str, float] = defaultdict(float)
    errors_by_arm: dict[str, float] = defaultdict(float)
    errors_total = 0.0
    has_arm_label = False
    for name, labels, value in parse_prometheus_text(text):
        if labels.get("route") != route:
            continue
        arm = labels.get("arm", "none")
        if name == f"{latency_metric}_bucket" and "le" in labels:
            bound = math.inf if labels["le"] in ("+Inf", "Inf", "inf") else float(labels["le"])
            buckets[arm][bound] = buckets[arm].get(bound, 0.0) + value  # several workers add up
        elif name == f"{latency_metric}_count":
            counts[arm] += value
        elif name in (error_metric, error_metric.removesuffix("_total")):
            errors_total += value
            if "arm" in labels:
                has_arm_label = True
                errors_by_arm[arm] += value
    # Requests without an arm (errors before routing, users outside experiments) are no arm's latency.
    arms = sorted(a for a in buckets if a not in ("none", ""))
    latency = {arm: 1000.0 * histogram_quantile(quantile, buckets[arm]) for arm in arms}
    if has_arm_label:
        error_rate = {arm: errors_by_arm[arm] / max(counts[arm], 1.0) for arm in arms}
        scope = "per arm"
    else:
        requests = sum(counts.values())
        error_rate = {"*": errors_total / requests if requests else 0.0}
        scope = "service-wide (no per-arm error samples: none recorded, or no arm label)"
    return {
        "latency_p99_ms": latency,
        "error_rate": error_rate,
        "source": f"Prometheus /metrics: p{quantile * 100:g} latency per arm of {route}; error rate {scope}",
    }
