"""retrain.dataset: logged exposures/outcomes become data_gen interaction rows the loaders and the
validator accept."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from data_gen.validate import validate_dataset
from feedrec_common.parquet_tables import read_table
from retrain.dataset import build_dataset, logged_interactions

USERS = pd.DataFrame({"user_id": [1, 2], "signup_ts": [0, 0]})
ITEMS = pd.DataFrame({"item_id": [10, 11, 12], "created_ts": [0, 0, 500]})


def _exposure(rid, ts, user, items):
    return {"request_id": rid, "ts": ts, "user": user, "items": np.asarray(items), "positions": np.arange(1, len(items) + 1)}


def test_slots_become_impressions_at_0_based_positions_and_outcomes_follow_them():
    ex = pd.DataFrame([_exposure("r1", 100.4, 1, [10, 11]), _exposure("r2", 200.0, 2, [11, 10])])
    # the click lands in the impression's second: it must move one second later (strict funnel order)
    oc = pd.DataFrame({"request_id": ["r1", "r1", "r2"], "ts": [100.9, 104.0, 210.0], "user": [1, 1, 2],
                       "item": [11, 11, 10], "kind": ["click", "like", "click"]})  # fmt: skip
    rows, counts = logged_interactions(ex, oc, USERS, ITEMS)
    imp = rows[rows["event"] == "impression"]
    assert sorted(zip(imp["user_id"], imp["item_id"], imp["position"])) == [(1, 10, 0), (1, 11, 1), (2, 10, 1), (2, 11, 0)]
    click = rows[(rows["event"] == "click") & (rows["user_id"] == 1)].iloc[0]
    assert (click["ts"], click["position"]) == (101, 1)
    assert rows[rows["event"] == "like"]["ts"].tolist() == [104]
    assert counts["click"] == 2 and counts["like"] == 1 and (rows["ts"].diff().dropna() >= 0).all()


def test_unknown_ids_early_events_and_likes_without_click_are_dropped_and_counted():
    ex = pd.DataFrame([_exposure("r1", 100.0, 1, [10, 12]), _exposure("r2", 100.0, 99, [10])])
    oc = pd.DataFrame({"request_id": ["r1", "r1"], "ts": [110.0, 111.0], "user": [1, 1], "item": [10, 12],
                       "kind": ["like", "click"]})  # fmt: skip
    rows, counts = logged_interactions(ex, oc, USERS, ITEMS)
    assert counts["impressions_unknown_user_or_item"] == 1  # user 99
    assert counts["impressions_before_signup_or_creation"] == 1  # item 12 created at 500
    assert counts["outcomes_without_impression"] == 1  # the click on 12 lost its impression
    assert counts["engagements_without_click"] == 1  # a like with no click
    assert rows["event"].tolist() == ["impression"]


def test_build_dataset_appends_the_logs_and_passes_data_gen_validate(tiny_data, scenario_events, tmp_path):
    result = build_dataset(tiny_data, scenario_events, tmp_path / "data")
    assert validate_dataset(result.data_dir) == []
    base = read_table(tiny_data, "interactions", ["ts"]).num_rows
    new = read_table(result.data_dir, "interactions", ["ts", "event"])
    assert new.num_rows == base + result.counts["impression"] + result.counts["click"]
    manifest = json.loads((tmp_path / "data" / "manifest.json").read_text())
    assert manifest["time"]["end_ts"] == result.end_ts > json.loads((tiny_data / "manifest.json").read_text())["time"]["end_ts"]
    assert not (tmp_path / "data" / "truth").exists()  # the hidden world stays with the base data
    from recsys.feed.data import load_feed_data

    assert load_feed_data(result.data_dir).end_ts == result.end_ts  # the same loaders read it
    again = build_dataset(tiny_data, scenario_events, tmp_path / "again")
    assert again.dataset_hash == result.dataset_hash and again.events_hash == result.events_hash


def test_no_flushed_events_is_a_clear_error(tiny_data, tmp_path):
    with pytest.raises(FileNotFoundError, match="abtest flush"):
        build_dataset(tiny_data, tmp_path, tmp_path / "data")
