"""Prometheus gauges of the drift monitor, for the service's ``/metrics`` (or any registry).

``DriftGauges(registry).update(run)`` sets, from the latest window of a :class:`~monitoring.drift.DriftRun`:

* ``feedrec_drift_p_value{input}``: Holm-adjusted p-value;
* ``feedrec_drift_statistic{input,test}``: KS distance or chi-square statistic;
* ``feedrec_drift_psi{input}``: population stability index;
* ``feedrec_drift_alarm{input}``: 1 while the input is in alarm (flagged in ``persistence``
  consecutive windows), else 0;
* ``feedrec_drift_window_end_timestamp_seconds``: end of the latest evaluated window;
* ``feedrec_drift_alarms_total``: alarms raised so far (a gauge set to the run's count, since a
  recomputed run replaces the previous one).

``configs/monitoring/alerts.yml`` holds the alert rules on these series.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Gauge

from monitoring.drift import DriftRun

__all__ = ["DriftGauges", "METRIC_NAMES"]

METRIC_NAMES = (
    "feedrec_drift_p_value",
    "feedrec_drift_statistic",
    "feedrec_drift_psi",
    "feedrec_drift_alarm",
    "feedrec_drift_window_end_timestamp_seconds",
    "feedrec_drift_alarms_total",
)


class DriftGauges:
    """The drift gauges registered on one registry (default: a fresh one).

    Args:
        registry (CollectorRegistry, optional): Where to register (the service passes its own).
    """

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry if registry is not None else CollectorRegistry()
        r = self.registry
        self.p_value = Gauge("feedrec_drift_p_value", "Holm-adjusted drift p-value of the latest window", ["input"], registry=r)
        self.statistic = Gauge("feedrec_drift_statistic", "Drift test statistic of the latest window", ["input", "test"], registry=r)
        self.psi = Gauge("feedrec_drift_psi", "Population stability index of the latest window", ["input"], registry=r)
        self.alarm = Gauge("feedrec_drift_alarm", "1 while the input is in drift alarm", ["input"], registry=r)
        self.window_end = Gauge("feedrec_drift_window_end_timestamp_seconds", "End of the latest drift window", registry=r)
        self.alarms_total = Gauge("feedrec_drift_alarms_total", "Drift alarms raised in the monitored period", registry=r)

    def update(self, run: DriftRun) -> None:
        """Set every gauge from ``run``'s latest window (inputs no longer tested are reset to no alarm)."""
        self.alarms_total.set(len(run.alarms))
        if not run.windows:
            return
        latest = run.windows[-1]
        self.window_end.set(latest.end_ts)
        for name in run.inputs:
            self.alarm.labels(input=name).set(1.0 if name in latest.alarmed else 0.0)
        for t in latest.tests:
            self.p_value.labels(input=t.input).set(t.p_adjusted)
            self.statistic.labels(input=t.input, test=t.test).set(t.statistic)
            self.psi.labels(input=t.input).set(t.psi)
