from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from data_gen.truth import ClickModel
from feedrec_common.parquet_tables import read_table


@pytest.fixture(scope="module")
def model(tiny_dataset: Path) -> ClickModel:
    return ClickModel.load(tiny_dataset)


def test_click_probability_is_vectorised_and_bounded(model: ClickModel) -> None:
    rng = np.random.default_rng(0)
    users = rng.choice(model.user_ids, 500)
    items = rng.choice(model.item_ids, 500)
    p = model.click_probability(users, items, np.zeros(500, dtype=int))
    assert p.shape == (500,) and ((p > 0) & (p < 1)).all()
    single = [model.click_probability(users[j : j + 1], items[j : j + 1], 0)[0] for j in range(5)]
    np.testing.assert_allclose(single, p[:5], rtol=1e-9)


def test_position_bias_lowers_probability(model: ClickModel) -> None:
    users = np.repeat(model.user_ids[:3], 4)
    items = np.repeat(model.item_ids[-3:], 4)
    p = model.click_probability(users, items, np.tile([0, 1, 5, 20], 3)).reshape(3, 4)
    assert (np.diff(p, axis=1) < 0).all()


def test_unknown_id_is_a_key_error(model: ClickModel) -> None:
    with pytest.raises(KeyError, match="unknown user"):
        model.click_probability([12345], [model.item_ids[0]], [0])


def test_generated_clicks_match_the_model(model: ClickModel, tiny_dataset: Path) -> None:
    df = read_table(tiny_dataset, "interactions").to_pandas()
    df = df[df["ts"] >= model.end_ts - 4 * 86_400]
    imp = df[df["event"] == "impression"]
    clicks = df[df["event"] == "click"]
    clicked = set(zip(clicks["user_id"], clicks["item_id"], clicks["position"]))
    y = np.array([k in clicked for k in zip(imp["user_id"], imp["item_id"], imp["position"])])
    p = model.click_probability(
        imp["user_id"].to_numpy(),
        imp["item_id"].to_numpy(),
        imp["position"].to_numpy(),
        now=imp["ts"].to_numpy(),
    )
    assert abs(p.mean() - y.mean()) < 0.01  # calibrated on average
    hi, lo = p > np.quantile(p, 0.8), p < np.quantile(p, 0.2)
    assert y[hi].mean() > 3 * y[lo].mean()  # and discriminative


def test_followees_clicks_raise_probability(model: ClickModel, tiny_dataset: Path) -> None:
    follows = read_table(tiny_dataset, "follows").to_pandas()
    user, followees = (
        follows["follower_id"].iloc[0],
        follows[follows["follower_id"] == follows["follower_id"].iloc[0]],
    )
    item = model.item_ids[-50]
    before = model.click_probability([user], [item], [0])[0]
    fresh = ClickModel.load(tiny_dataset)
    fresh.record_clicks(followees["followee_id"].to_numpy()[:2], [item, item], model.end_ts - 60)
    after = fresh.click_probability([user], [item], [0])[0]
    assert after > 1.5 * before


def test_oracle_topk_ranks_by_true_probability(model: ClickModel) -> None:
    users = model.user_ids[:20]
    top = model.oracle_topk(users, k=10)
    assert top.shape == (20, 10) and len(set(top[0])) == 10
    for r, u in enumerate(users[:5]):
        p = model.click_probability(np.full(10, u), top[r], 0)
        assert (np.diff(p) <= 1e-12).all()
        others = np.random.default_rng(r).choice(model.item_ids, 300)
        assert p[0] >= model.click_probability(np.full(300, u), others, 0).max() - 1e-12


def test_oracle_topk_excludes(model: ClickModel) -> None:
    users = model.user_ids[:3]
    first = model.oracle_topk(users, k=5)
    again = model.oracle_topk(users, k=5, exclude=[first[0][:2], [], list(first[2])])
    assert not set(first[0][:2]) & set(again[0])
    np.testing.assert_array_equal(again[1], first[1])
    assert not set(first[2]) & set(again[2])


def test_like_and_share_given_click(model: ClickModel) -> None:
    users, items = model.user_ids[:50], model.item_ids[:50]
    like, share = model.like_probability(users, items), model.share_probability(users, items)
    assert ((like > 0) & (like < 1)).all() and ((share > 0) & (share < 1)).all()
    assert share.mean() < like.mean()
