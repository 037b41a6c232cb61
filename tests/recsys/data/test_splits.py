from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp

from recsys.data import DataError, Dataset, IdMap, Split, carve_validation, load_datagen, temporal_split
from tests.recsys.data.datagen_files import make_frames, write_dir


def pairs(m: sp.csr_matrix) -> set[tuple[int, int]]:
    c = m.tocoo()
    return set(zip(c.row.tolist(), c.col.tolist()))


def times_of(ds: Dataset) -> dict[tuple[int, int], int]:
    c = ds.timestamps.tocoo()
    return {(int(u), int(i)): int(t) for u, i, t in zip(c.row, c.col, c.data)}


def toy_dataset(rows, cols, ts, n_users=4, n_items=5) -> Dataset:
    shape = (n_users, n_items)
    ones = sp.csr_matrix((np.ones(len(rows), np.float32), (rows, cols)), shape=shape)
    times = sp.csr_matrix((np.asarray(ts, np.int64), (rows, cols)), shape=shape)
    ones.sort_indices()
    times.sort_indices()
    return Dataset(
        name="toy",
        users=IdMap(np.arange(n_users), "user"),
        items=IdMap(np.arange(n_items), "item"),
        user_items=ones,
        timestamps=times,
    )


@pytest.fixture(scope="module")
def big_dataset(tmp_path_factory):
    root = tmp_path_factory.mktemp("split")
    return load_datagen(write_dir(root / "d", make_frames(n_users=40, n_items=60, n_events=3000, seed=3)))


def test_windows_partition_the_positives_in_time_order(big_dataset):
    split = temporal_split(big_dataset, valid_frac=0.1, test_frac=0.2)
    n = big_dataset.n_interactions
    train, valid, test = pairs(split.train.user_items), pairs(split.valid), pairs(split.test)
    assert train | valid | test == pairs(big_dataset.user_items)
    assert not (train & valid) and not (train & test) and not (valid & test)
    assert len(test) == round(0.2 * n) and len(valid) == round(0.1 * n)
    t = times_of(big_dataset)
    assert max(t[p] for p in train) <= min(t[p] for p in valid) <= max(t[p] for p in valid)
    assert max(t[p] for p in valid) <= min(t[p] for p in test)
    assert split.info["test_start_ts"] == min(t[p] for p in test)
    assert split.info["valid_start_ts"] == min(t[p] for p in valid)
    assert split.info["end_ts"] == max(t.values())
    assert split.kind == "temporal" and split.info["test_frac"] == 0.2
    # Training timestamps are the original ones, for the training pairs only.
    assert times_of(split.train) == {p: t[p] for p in train}


def test_id_maps_unchanged_and_cold_users_keep_their_rows(big_dataset):
    split = temporal_split(big_dataset, valid_frac=0.1, test_frac=0.1)
    assert split.train.users is big_dataset.users and split.train.items is big_dataset.items
    assert split.test.shape == split.valid.shape == big_dataset.user_items.shape


def test_ties_break_by_user_then_item():
    # All positives at the same time: the order is (user, item), so the last two pairs are the test.
    ds = toy_dataset(rows=[0, 0, 1, 2, 3], cols=[1, 3, 0, 4, 2], ts=[7] * 5)
    split = temporal_split(ds, valid_frac=0.2, test_frac=0.4)
    assert pairs(split.test) == {(2, 4), (3, 2)}
    assert pairs(split.valid) == {(1, 0)}
    assert pairs(split.train.user_items) == {(0, 1), (0, 3)}


def test_user_seen_only_in_test_window_is_a_cold_user():
    ds = toy_dataset(rows=[0, 0, 1, 1, 2], cols=[0, 1, 0, 2, 3], ts=[1, 2, 3, 4, 10])
    split = temporal_split(ds, valid_frac=0.0, test_frac=0.2)
    assert split.valid is None and split.info["valid_start_ts"] is None
    assert split.train.user_counts().tolist() == [2, 2, 0, 0]
    assert pairs(split.test) == {(2, 3)}
    assert split.train.n_users == 4 and split.train.item_popularity()[3] == 0  # item 3 is new: still a candidate


def test_follows_are_those_before_the_test_window(big_dataset):
    split = temporal_split(big_dataset, valid_frac=0.1, test_frac=0.2)
    cut = split.info["test_start_ts"]
    ft = big_dataset.follow_timestamps.tocoo()
    expected = {(int(a), int(b)) for a, b, t in zip(ft.row, ft.col, ft.data) if t < cut}
    assert 0 < len(expected) < big_dataset.follows.nnz  # the fixture has follows on both sides
    assert pairs(split.train.follows) == expected
    assert split.train.follow_timestamps.data.max() < cut
    assert split.info["n_follows"] == len(expected)


def test_train_events_stop_before_the_validation_window(big_dataset):
    split = temporal_split(big_dataset, valid_frac=0.1, test_frac=0.2)
    ev = split.train.events
    assert 0 < len(ev) < len(big_dataset.events)
    assert ev["ts"].max() <= split.info["valid_start_ts"]
    assert "impression" in set(ev["event"])
    # Every training positive's first engagement is in the training events.
    positives = ev[ev["event"] != "impression"]
    assert pairs(split.train.user_items) <= set(zip(positives["user"].tolist(), positives["item"].tolist()))


def test_hash_is_deterministic_and_depends_on_the_fractions(big_dataset, tmp_path):
    a = temporal_split(big_dataset, 0.1, 0.1)
    b = temporal_split(load_datagen(big_dataset.source), 0.1, 0.1)
    c = temporal_split(big_dataset, 0.1, 0.2)
    assert a.hash() == b.hash()
    assert a.hash() != c.hash()


@pytest.mark.parametrize(("valid", "test"), [(0.1, 0.0), (-0.1, 0.1), (0.5, 0.5), (0.1, 1.0)])
def test_bad_fractions_are_rejected(valid, test):
    ds = toy_dataset(rows=[0, 1], cols=[0, 1], ts=[1, 2])
    with pytest.raises(ValueError, match="valid_frac"):
        temporal_split(ds, valid, test)


def test_needs_timestamps():
    ds = toy_dataset(rows=[0, 1], cols=[0, 1], ts=[1, 2])
    ds.timestamps = None
    with pytest.raises(DataError, match="no timestamps"):
        temporal_split(ds)


# --- carve_validation (train/test splits without a validation set) ------------------------------


def _lightgcn_split(tmp_path, lines: list[str]):
    from recsys.data import load_lightgcn

    (tmp_path / "train.txt").write_text("\n".join(lines) + "\n")
    (tmp_path / "test.txt").write_text("0 0\n")
    return load_lightgcn(tmp_path)


@pytest.mark.parametrize("held_out", ["random", "latest"])
def test_carve_validation_moves_a_fraction_of_chosen_users_items(tmp_path, held_out):
    lines = [f"{u} " + " ".join(str((u * 7 + 3 * k) % 50) for k in range(10)) for u in range(12)]
    split = _lightgcn_split(tmp_path, lines)
    carved = carve_validation(split, n_users=5, fraction=0.3, seed=0, held_out=held_out)
    train, valid = pairs(carved.train.user_items), pairs(carved.valid)
    assert train.isdisjoint(valid) and train | valid == pairs(split.train.user_items)
    per_user = np.diff(carved.valid.indptr)
    assert sorted(set(per_user.tolist())) == [0, 3] and (per_user == 3).sum() == 5
    assert carved.test is split.test
    again = carve_validation(split, n_users=5, fraction=0.3, seed=0, held_out=held_out)
    assert pairs(again.valid) == valid  # deterministic


def test_carve_validation_latest_holds_out_the_end_of_each_listing(tmp_path):
    # listings in file order; the last 30% (3 of 10) of each chosen user must be held out
    lines = [f"{u} " + " ".join(str((u * 11 + 17 * k) % 60) for k in range(10)) for u in range(8)]
    split = _lightgcn_split(tmp_path, lines)
    carved = carve_validation(split, n_users=4, fraction=0.3, seed=1, held_out="latest")
    for u in np.flatnonzero(np.diff(carved.valid.indptr)):
        listing = [int(t) for t in lines[u].split()[1:]]
        held = carved.valid.indices[carved.valid.indptr[u] : carved.valid.indptr[u + 1]]
        assert sorted(held.tolist()) == sorted(listing[-3:])


def test_carve_validation_latest_needs_an_order():
    ds = toy_dataset([0, 0, 0, 1, 1, 1], [0, 1, 2, 0, 1, 2], [1, 2, 3, 4, 5, 6])
    ds.timestamps = None
    split = Split(train=ds, test=sp.csr_matrix(ds.user_items.shape, dtype=np.float32))
    with pytest.raises(DataError, match="needs timestamps or a file order"):
        carve_validation(split, n_users=2, fraction=0.3, seed=0, held_out="latest")


def test_carve_validation_latest_prefers_timestamps():
    # times run against item order: the latest of each user are its lowest item ids
    rows = [0] * 4 + [1] * 4
    cols = [0, 1, 2, 3] * 2
    ds = toy_dataset(rows, cols, [40, 30, 20, 10, 80, 70, 60, 50])
    split = Split(train=ds, test=sp.csr_matrix(ds.user_items.shape, dtype=np.float32))
    carved = carve_validation(split, n_users=2, fraction=0.5, seed=0, held_out="latest")
    assert pairs(carved.valid) == {(0, 0), (0, 1), (1, 0), (1, 1)}
