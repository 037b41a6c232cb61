from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from feedrec_common.parquet_tables import ENGAGEMENT_EVENTS, EVENT_KINDS
from recsys.data import DataError, load_datagen
from tests.recsys.data.datagen_files import item_ids, make_frames, user_ids, write_dir


def expected_positives(frames) -> dict[tuple[int, int], int]:
    """Slow reference: first engagement time per (external user, external item)."""
    first: dict[tuple[int, int], int] = {}
    for row in frames["interactions"].itertuples():
        if row.event in ENGAGEMENT_EVENTS:
            key = (row.user_id, row.item_id)
            first[key] = min(first.get(key, row.ts), row.ts)
    return first


def loaded_positives(ds) -> dict[tuple[int, int], int]:
    ui, ts = ds.user_items.tocoo(), ds.timestamps.tocoo()
    assert np.array_equal(ui.row, ts.row) and np.array_equal(ui.col, ts.col)
    return {
        (int(ds.users.ids[u]), int(ds.items.ids[i])): int(t) for u, i, t in zip(ui.row, ui.col, ts.data)
    }


def test_loads_id_maps_positives_follows_and_events(datagen_dir, frames):
    ds = load_datagen(datagen_dir)
    assert ds.name == "tiny"
    assert ds.users.ids.tolist() == user_ids(12).tolist()  # file order, including the idle last user
    assert ds.items.ids.tolist() == item_ids(30).tolist()
    assert ds.user_items.shape == (12, 30) and ds.user_items.dtype == np.float32
    assert np.all(ds.user_items.data == 1.0) and ds.user_items.has_sorted_indices
    assert ds.user_counts()[-1] == 0
    assert loaded_positives(ds) == expected_positives(frames)

    # Events: every row, impressions included, with dense ids.
    ev = ds.events
    assert len(ev) == len(frames["interactions"])
    assert list(ev["event"].cat.categories) == list(EVENT_KINDS)
    assert ev["user"].dtype == np.int32 and ev["item"].dtype == np.int32
    assert (ev["event"] == "impression").sum() == (frames["interactions"]["event"] == "impression").sum()
    assert np.array_equal(ds.users.ids[ev["user"]], frames["interactions"]["user_id"].to_numpy())
    assert np.array_equal(ev["position"].to_numpy(), frames["interactions"]["position"].to_numpy())

    # Follows: distinct pairs, first time kept.
    first: dict[tuple[int, int], int] = {}
    for r in frames["follows"].itertuples():
        first[(r.follower_id, r.followee_id)] = min(first.get((r.follower_id, r.followee_id), r.ts), r.ts)
    f, ft = ds.follows.tocoo(), ds.follow_timestamps.tocoo()
    got = {(int(ds.users.ids[a]), int(ds.users.ids[b])): int(t) for a, b, t in zip(ft.row, ft.col, ft.data)}
    assert got == first and f.nnz == len(first)


def test_parts_folder_reads_like_one_file(tmp_path, frames):
    one = load_datagen(write_dir(tmp_path / "one", frames))
    parts = load_datagen(write_dir(tmp_path / "parts", frames, parts={"interactions": 3, "follows": 2}))
    assert one.fingerprint() == parts.fingerprint()
    pd.testing.assert_frame_equal(one.events, parts.events)
    assert (one.timestamps != parts.timestamps).nnz == 0


@pytest.mark.parametrize("parts", [1, 3])
def test_without_events_the_positives_and_follows_are_the_same(tmp_path, frames, parts):
    folder = write_dir(tmp_path / "d", frames, parts={"interactions": parts} if parts > 1 else None)
    full, lean = load_datagen(folder), load_datagen(folder, events=False)
    assert lean.events is None
    assert lean.fingerprint() == full.fingerprint()
    assert loaded_positives(lean) == expected_positives(frames)
    assert (lean.timestamps != full.timestamps).nnz == 0
    assert (lean.follow_timestamps != full.follow_timestamps).nnz == 0


def test_duplicate_engagements_keep_the_first_time(tmp_path):
    frames = make_frames(n_users=3, n_items=3, n_events=1)
    base = frames["interactions"].iloc[:0]
    u, i = user_ids(3)[0], item_ids(3)[2]
    frames["interactions"] = pd.concat(
        [
            base,
            pd.DataFrame(
                {
                    "user_id": [u, u, u, u],
                    "item_id": [i, i, i, i],
                    "ts": np.array([50, 30, 40, 10], dtype=np.int64),
                    "event": pd.array(["like", "click", "share", "impression"], dtype="string"),
                    "position": np.zeros(4, np.int16),
                    "dwell_ms": np.zeros(4, np.int32),
                }
            ),
        ]
    )
    ds = load_datagen(write_dir(tmp_path / "d", frames))
    assert ds.user_items.nnz == 1
    assert ds.timestamps[0, 2] == 30  # the impression at 10 is exposure, not a positive


def corrupt(frames, table, fn):
    frames = {k: v.copy() for k, v in frames.items()}
    frames[table] = fn(frames[table])
    return frames


@pytest.mark.parametrize(
    ("table", "fn", "phrases"),
    [
        ("interactions", lambda f: f.drop(columns=["ts"]), ["interactions.parquet", "missing column 'ts'"]),
        ("users", lambda f: f.drop(columns=["user_id"]), ["users.parquet", "missing column 'user_id'"]),
        (
            "interactions",
            lambda f: f.assign(user_id=f["user_id"].astype(str)),
            ["interactions.parquet", "column 'user_id'", "expected integer"],
        ),
        (
            "interactions",
            lambda f: f.assign(item_id=np.where(np.arange(len(f)) == 7, 12345, f["item_id"])),
            ["interactions.parquet", "item_id id 12345", "row 7 ", "outside the map"],
        ),
        (
            "follows",
            lambda f: f.assign(followee_id=np.where(np.arange(len(f)) >= 3, 999, f["followee_id"])),
            ["follows.parquet", "followee_id id 999", "rows 3, 4, 5", "outside the map"],
        ),
        (
            "interactions",
            lambda f: f.assign(event=f["event"].where(np.arange(len(f)) != 4, "poke")),
            ["interactions.parquet", "'poke'", "row 4 "],
        ),
        ("users", lambda f: pd.concat([f, f.iloc[:1]]), ["users", "not unique", "1000"]),
        (
            "interactions",
            lambda f: f.assign(ts=pd.array([None] + list(f["ts"].iloc[1:]), dtype="Int64")),
            ["interactions.parquet", "'ts'", "null", "row 0 "],
        ),
    ],
    ids=["no-ts", "no-user-id", "str-id", "unknown-item", "unknown-followee", "bad-event", "dup-user", "null"],
)
def test_malformed_input_names_file_column_and_rows(tmp_path, frames, table, fn, phrases):
    d = write_dir(tmp_path / "bad", corrupt(frames, table, fn))
    with pytest.raises(DataError) as err:
        load_datagen(d)
    for phrase in phrases:
        assert phrase in str(err.value), str(err.value)


def test_error_in_a_part_names_the_part_file(tmp_path, frames):
    bad = corrupt(frames, "interactions", lambda f: f.assign(user_id=np.where(np.arange(len(f)) == 250, 1, f["user_id"])))
    d = write_dir(tmp_path / "bad", bad, parts={"interactions": 2})
    with pytest.raises(DataError, match=r"part-00001\.parquet: user_id id 1 at row 50 "):
        load_datagen(d)


def test_missing_table_and_not_a_directory(tmp_path, datagen_dir):
    (datagen_dir / "follows.parquet").unlink()
    with pytest.raises(DataError, match="missing table 'follows'"):
        load_datagen(datagen_dir)
    with pytest.raises(DataError, match="not a directory"):
        load_datagen(tmp_path / "nope")


def test_reads_the_real_generator_output(tmp_path):
    """Contract test with data_gen (tiny preset): the files it writes are the files recsys reads."""
    from data_gen.generate import generate
    from data_gen.generator_config import resolve_config

    cfg = resolve_config("tiny", overrides=["output.plots=false", "output.progress=false"], seed=3)
    out = generate(cfg, tmp_path / "tiny").out
    ds = load_datagen(out)
    interactions = pd.read_parquet(out / "interactions")
    assert (ds.n_users, ds.n_items) == (cfg.users.n_users, cfg.items.n_items)
    assert len(ds.events) == len(interactions)
    engaged = interactions[interactions["event"].isin(ENGAGEMENT_EVENTS)]
    assert ds.n_interactions == len(engaged.drop_duplicates(["user_id", "item_id"])) > 0
    assert ds.follows.nnz == len(pd.read_parquet(out / "follows.parquet").drop_duplicates(["follower_id", "followee_id"]))
