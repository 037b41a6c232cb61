"""The window comparison and the alarm rule: planted shifts at known windows, false-alarm control."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from monitoring.config import DriftConfig
from monitoring.drift import alarm_states, apply_rule, monitor
from monitoring.features import Traffic
from monitoring.profile import build_profile

HOUR = 3600.0


def synthetic_traffic(n_windows: int, per_window: int, seed: int, shift_from: int | None = None) -> Traffic:
    """iid requests (new user each) with ``history_length`` ~ Poisson(20); from window ``shift_from`` on,
    a third of the requests come from cold users (history 0) and topic "b" doubles its share."""
    rng = np.random.default_rng(seed)
    n = n_windows * per_window
    window = np.repeat(np.arange(n_windows), per_window)
    ts = window * 6 * HOUR + rng.uniform(0, 6 * HOUR, n)
    shifted = np.zeros(n, bool) if shift_from is None else window >= shift_from
    history = rng.poisson(20, n).astype(float)
    history[shifted & (rng.random(n) < 1 / 3)] = 0.0
    topic = np.where(rng.random(n) < np.where(shifted, 0.4, 0.2), "b", "a")
    requests = pd.DataFrame({
        "request_id": [f"r{seed}-{i}" for i in range(n)], "ts": ts, "user": [f"u{seed}-{i}" for i in range(n)],
        "arm": "control", "user_activity": rng.lognormal(size=n), "history_length": history,
        "cold_user": np.where(history <= 2, "cold", "warm"), "item_age_hours": rng.exponential(24, n),
        "item_popularity": rng.normal(2, 0.5, n), "score": np.nan,
    })  # fmt: skip
    slots = pd.DataFrame({"request": np.arange(n), "item_topic": topic, "item_media_type": "text",
                          "clicked": rng.random(n) < 0.1, "weight": 1.0})  # fmt: skip
    return Traffic(requests, slots)


def test_alarm_states_need_consecutive_windows():
    flagged = [(0, ["a"]), (1, ["a", "b"]), (2, ["b"]), (4, ["b"]), (5, ["b"])]
    assert alarm_states(flagged, 2) == [(), ("a",), ("b",), (), ("b",)]  # window 3 is missing: the run restarts
    assert alarm_states(flagged, 1) == [("a",), ("a", "b"), ("b",), ("b",), ("b",)]


def test_planted_shift_alarms_at_the_expected_window():
    config = DriftConfig(window_hours=6, alpha=0.05, persistence=2)
    profile = build_profile(synthetic_traffic(20, 300, seed=1), config, source="synthetic")
    run = monitor(profile, synthetic_traffic(12, 300, seed=2, shift_from=6), config, origin=0.0)
    assert len(run.alarms) == 1
    alarm = run.alarms[0]
    assert alarm.window == 7  # flagged in 6 and 7: persistence 2
    assert alarm.raised_at == pytest.approx(8 * 6 * HOUR)
    assert {"history_length", "cold_user", "item_topic"} <= set(alarm.inputs)
    assert run.first_alarm_after(6 * 6 * HOUR) == alarm
    assert run.alarms_before(6 * 6 * HOUR) == []


def test_false_alarms_are_controlled_and_persistence_reduces_them():
    """No drift over 10 runs x 40 windows (100 six-hour days): single-window flags do occur at alpha 0.05,
    alarms after two consecutive flags are rarer and at most one per 30 days."""
    config = DriftConfig(window_hours=6, alpha=0.05, persistence=2)
    single = double = 0
    windows = 0
    for seed in range(10):
        profile = build_profile(synthetic_traffic(20, 200, seed=100 + seed), config, source="synthetic")
        run = monitor(profile, synthetic_traffic(40, 200, seed=200 + seed), config, origin=0.0)
        single += len(apply_rule(run, config.model_copy(update={"persistence": 1})).alarms)
        double += len(run.alarms)
        windows += len(run.windows)
    days = windows * 6 / 24
    assert double <= single
    assert 30 * double / days <= 1.0
