"""Inputs from event-log frames (known answers) and reference profiles (dataset, JSON round trip)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from monitoring.config import DriftConfig
from monitoring.features import first_request_per_user, traffic_tables
from monitoring.profile import ReferenceProfile, dataset_frames, profile_from_dataset


def test_traffic_tables_known_answer(catalog):
    users, items = catalog.user_ids, catalog.item_ids
    warm = int(users[np.argmax(catalog.user_history)])
    exposures = pd.DataFrame({
        "request_id": ["r1", "r2"], "ts": [float(catalog.item_created_ts.max() + 7200)] * 2, "arm": ["a", "b"],
        "user": [warm, 999_999_999], "items": [[int(items[-1]), int(items[-2])], [int(items[0])]],
    })  # fmt: skip
    outcomes = pd.DataFrame({"request_id": ["r1", "r1"], "item": [str(items[-2]), int(items[0])], "kind": ["click", "click"]})
    traffic = traffic_tables(exposures, outcomes, catalog)
    r = traffic.requests
    assert list(r["cold_user"]) == ["warm", "cold"]  # an unknown user is cold
    assert np.isnan(r["user_activity"][1]) and r["history_length"][1] == 0
    expected_age = np.median([catalog.item_created_ts.max() + 7200 - catalog.item_created_ts[i] for i in (-1, -2)]) / 3600
    assert r["item_age_hours"][0] == pytest.approx(expected_age)
    # "r1" clicked items[-2] (id given as a string: ids compare as str); items[0] was not shown in r1
    assert list(traffic.slots["clicked"]) == [False, True, False]
    assert list(traffic.slots["weight"]) == [0.5, 0.5, 1.0]


def test_first_request_per_user_keeps_one_per_window():
    requests = pd.DataFrame({"user": ["u", "u", "v", "u"], "ts": [5.0, 1.0, 2.0, 30.0]})
    mask = first_request_per_user(requests, np.array([0, 0, 0, 1]))
    assert list(mask) == [False, True, True, True]


def test_dataset_profile_round_trip(tiny_data, catalog, tmp_path):
    exposures, outcomes = dataset_frames(tiny_data, days=3)
    assert len(exposures) > 100 and outcomes["request_id"].isin(set(exposures["request_id"])).all()
    profile = profile_from_dataset(catalog, DriftConfig(), days=3)
    assert {"user_activity", "history_length", "cold_user", "item_topic", "ctr[logging]"} <= set(profile.inputs)
    assert set(profile.design_effects) == set(profile.inputs)
    loaded = ReferenceProfile.load(profile.save(tmp_path / "p.json"))
    np.testing.assert_allclose(loaded.continuous["history_length"], profile.continuous["history_length"])
    assert loaded.categorical == profile.categorical and loaded.design_effects == profile.design_effects
    (tmp_path / "bad.json").write_text('{"format": 1}')
    with pytest.raises(ValueError, match="bad.json"):
        ReferenceProfile.load(tmp_path / "bad.json")
