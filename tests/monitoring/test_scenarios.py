"""The scenario simulator: no shift before the requested start, the shift after it."""

from __future__ import annotations

import numpy as np
import pytest

from monitoring.features import traffic_tables
from monitoring.scenarios import ScenarioConfig, simulate, write_events


def _cold_share(traffic, lo, hi):
    ts = traffic.requests["ts"].to_numpy()
    rows = (ts >= lo) & (ts < hi)
    return float((traffic.requests["cold_user"].to_numpy()[rows] == "cold").mean())


def test_cold_surge_starts_when_asked(world, catalog):
    sim = simulate(world, ScenarioConfig(kind="cold_surge", reference_days=2, days=4, shift_day=2.0, strength=4.0))
    assert sim.shift_ts == pytest.approx(sim.monitor_start_ts + 2 * 86_400)
    traffic = traffic_tables(sim.exposures, sim.outcomes, catalog)
    before = _cold_share(traffic, sim.start_ts, sim.shift_ts)
    after = _cold_share(traffic, sim.shift_ts, sim.end_ts)
    # the same rate right up to the shift; x4 cold arrivals right after it
    assert _cold_share(traffic, sim.shift_ts - 43_200, sim.shift_ts) == pytest.approx(before, abs=0.05)
    assert _cold_share(traffic, sim.shift_ts, sim.shift_ts + 43_200) > before + 0.15
    assert after > before + 0.15


def test_ageing_starts_when_asked(world):
    sim = simulate(world, ScenarioConfig(kind="ageing", reference_days=1, days=2, shift_day=1.0))
    ts = sim.exposures["ts"].to_numpy()
    median_age = np.array([np.median(a) for a in sim.exposures["item_ages"]])
    pre, post = ts < sim.shift_ts, ts >= sim.shift_ts + 43_200
    # before: the clock is frozen, a user's list has the same ages all along
    first_user = sim.exposures["user"].to_numpy()[pre][0]
    same_user = pre & (sim.exposures["user"].to_numpy() == first_user)
    assert len({tuple(a) for a in sim.exposures["item_ages"][same_user]}) == 1
    # after: every post is older by the time since the shift
    assert np.median(median_age[post]) > np.median(median_age[pre]) + 12 * 3600


def test_no_shift_and_determinism(world):
    a = simulate(world, ScenarioConfig(kind="none", reference_days=1, days=1, seed=3))
    b = simulate(world, ScenarioConfig(kind="none", reference_days=1, days=1, seed=3))
    assert a.shift_ts is None and a.surging_users == 0
    assert a.exposures["ts"].equals(b.exposures["ts"]) and len(a.outcomes) == len(b.outcomes)
    c = simulate(world, ScenarioConfig(kind="none", reference_days=1, days=1, seed=4))
    assert len(c.exposures) != len(a.exposures) or not np.array_equal(c.exposures["ts"], a.exposures["ts"])


def test_community_surge_picks_surging_users(world):
    sim = simulate(world, ScenarioConfig(kind="community_surge", reference_days=1, days=2, shift_day=1.0))
    assert 0 < sim.surging_users < len(world.user_ids)


def test_events_round_trip_through_the_event_log_readers(world, tmp_path):
    from monitoring.events import read_events

    sim = simulate(world, ScenarioConfig(kind="none", reference_days=1, days=1, seed=5))
    write_events(tmp_path / "events", sim.exposures, sim.outcomes)
    exposures, outcomes = read_events(tmp_path / "events")
    assert len(exposures) == len(sim.exposures) and len(outcomes) == len(sim.outcomes)
    np.testing.assert_allclose(exposures["scores"].iloc[0], sim.exposures["scores"].iloc[0])
    with pytest.raises(FileNotFoundError, match="abtest flush"):
        read_events(tmp_path / "nothing")
