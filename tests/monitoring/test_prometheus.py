"""Gauges for /metrics from a drift run."""

from __future__ import annotations

from prometheus_client import generate_latest

from monitoring.config import DriftConfig
from monitoring.drift import monitor
from monitoring.profile import build_profile
from monitoring.prometheus import DriftGauges
from tests.monitoring.test_drift import synthetic_traffic


def test_gauges_carry_the_latest_window_and_alarms():
    config = DriftConfig(window_hours=6)
    profile = build_profile(synthetic_traffic(20, 300, seed=1), config, source="synthetic")
    run = monitor(profile, synthetic_traffic(10, 300, seed=2, shift_from=6), config, origin=0.0)
    gauges = DriftGauges()
    gauges.update(run)
    text = generate_latest(gauges.registry).decode()
    assert 'feedrec_drift_alarm{input="history_length"} 1.0' in text
    assert 'feedrec_drift_alarm{input="item_age_hours"} 0.0' in text
    assert 'feedrec_drift_statistic{input="item_topic",test="chi2"}' in text
    assert "feedrec_drift_alarms_total 1.0" in text
    assert f"feedrec_drift_window_end_timestamp_seconds {run.windows[-1].end_ts:.1f}" in text
