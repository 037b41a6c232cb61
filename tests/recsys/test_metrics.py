from __future__ import annotations

import math

import numpy as np
import pytest
import scipy.sparse as sp

from recsys.metrics import aggregate_metrics, hit_matrix, per_user_metrics, ranking_metrics


def csr(rows: list[list[int]], n_items: int) -> sp.csr_matrix:
    r = [u for u, items in enumerate(rows) for _ in items]
    c = [i for items in rows for i in items]
    return sp.csr_matrix((np.ones(len(c), np.float32), (r, c)), shape=(len(rows), n_items))


def reference(topk: np.ndarray, heldout: list[set[int]], k: int, popularity: np.ndarray, n_items: int) -> dict:
    """Obviously-correct loop implementation of every metric (the spec in recsys.metrics)."""
    sums = {"recall": 0.0, "ndcg": 0.0, "hit_rate": 0.0, "precision": 0.0, "mrr": 0.0, "pop_mean": 0.0}
    n_users, pop_users, recommended = 0, 0, set()
    for row, truth in zip(topk, heldout):
        if not truth:
            continue
        n_users += 1
        listed = [int(i) for i in row[:k] if i >= 0]
        recommended.update(listed)
        hits = [rank for rank, item in enumerate(row[:k], start=1) if item in truth]
        sums["recall"] += len(hits) / len(truth)
        sums["precision"] += len(hits) / k
        sums["hit_rate"] += 1.0 if hits else 0.0
        sums["mrr"] += 1.0 / hits[0] if hits else 0.0
        dcg = sum(1.0 / math.log2(rank + 1) for rank in hits)
        idcg = sum(1.0 / math.log2(rank + 1) for rank in range(1, min(len(truth), k) + 1))
        sums["ndcg"] += dcg / idcg
        if listed:  # a list of padding only has no popularity; it is left out of that average
            pop_users += 1
            sums["pop_mean"] += sum(popularity[i] for i in listed) / len(listed)
    out = {f"{name}@{k}": total / n_users for name, total in sums.items()}
    out[f"pop_mean@{k}"] = sums["pop_mean"] / pop_users
    out[f"pop_bias@{k}"] = out[f"pop_mean@{k}"] / popularity.mean()
    out[f"coverage@{k}"] = len(recommended) / n_items
    out["n_users"] = n_users
    return out


def test_hand_computed_case():
    # user 0: held-out {1, 4}; list [4, 2, 1] -> hits at ranks 1 and 3
    # user 1: held-out {0};    list [3, 2, 5] -> no hit
    # user 2: held-out {};     excluded
    topk = np.array([[4, 2, 1], [3, 2, 5], [0, 1, 2]])
    heldout = csr([[1, 4], [0], []], n_items=6)
    m = ranking_metrics(topk, heldout, ks=(1, 3))
    assert m["n_users"] == 2
    assert m["recall@3"] == pytest.approx((2 / 2 + 0) / 2)
    assert m["recall@1"] == pytest.approx((1 / 2 + 0) / 2)
    assert m["precision@3"] == pytest.approx((2 / 3) / 2)
    assert m["hit_rate@3"] == pytest.approx(0.5)
    assert m["mrr@3"] == pytest.approx(0.5)
    ndcg_u0 = (1 + 1 / math.log2(4)) / (1 + 1 / math.log2(3))
    assert m["ndcg@3"] == pytest.approx(ndcg_u0 / 2)
    assert m["ndcg@1"] == pytest.approx(0.5)
    assert m["coverage@3"] == pytest.approx(len({4, 2, 1, 3, 5}) / 6)
    assert m["coverage@1"] == pytest.approx(2 / 6)


def test_per_user_values_and_nan_for_users_without_heldout():
    topk = np.array([[4, 2, 1], [0, 2, 5], [0, 1, 2]])
    per_user = per_user_metrics(topk, csr([[1, 4], [0], []], 6), ks=(3,))
    assert per_user["n_relevant"].tolist() == [2, 1, 0]
    assert per_user["recall@3"][:2].tolist() == pytest.approx([1.0, 1.0])
    assert per_user["mrr@3"][:2].tolist() == pytest.approx([1.0, 1.0])
    assert all(np.isnan(v[2]) for k, v in per_user.items() if k != "n_relevant")


def test_popularity_bias():
    popularity = np.array([10, 0, 0, 0, 2, 0], dtype=np.int64)  # mean 2
    m = ranking_metrics(np.array([[0, 4], [0, 1]]), csr([[3], [3]], 6), ks=(2,), item_popularity=popularity)
    assert m["pop_mean@2"] == pytest.approx(((10 + 2) / 2 + (10 + 0) / 2) / 2)
    assert m["pop_bias@2"] == pytest.approx(m["pop_mean@2"] / 2.0)


@pytest.mark.parametrize("k", [1, 5, 10, 20])
def test_matches_reference_on_random_data(k):
    rng = np.random.default_rng(k)
    n_users, n_items, width = 60, 40, 20
    topk = np.stack([rng.permutation(n_items)[:width] for _ in range(n_users)])
    topk[rng.random((n_users, width)) < 0.05] = -1  # some padding, not necessarily at the end
    heldout_sets = [set(rng.choice(n_items, rng.integers(0, 8), replace=False).tolist()) for _ in range(n_users)]
    popularity = rng.integers(0, 50, n_items)
    heldout = csr([sorted(s) for s in heldout_sets], n_items)
    got = ranking_metrics(topk, heldout, ks=(k,), item_popularity=popularity)
    want = reference(topk, heldout_sets, k, popularity, n_items)
    assert set(got) == set(want)
    for name, value in want.items():
        assert got[name] == pytest.approx(value, rel=1e-9, abs=1e-12), name


def test_hit_matrix_handles_unsorted_csr_padding_and_out_of_range_items():
    heldout = sp.csr_matrix((np.ones(3, np.float32), np.array([4, 1, 2]), np.array([0, 2, 3])), shape=(2, 5))
    assert not heldout.has_sorted_indices
    hits = hit_matrix(np.array([[1, -1, 4], [7, 2, 0]]), heldout)
    assert hits.tolist() == [[True, False, True], [False, True, False]]


def test_aggregate_over_a_slice():
    topk = np.array([[1, 2], [3, 4], [0, 5]])
    per_user = per_user_metrics(topk, csr([[1], [0], [5]], 6), ks=(2,))
    m = aggregate_metrics(per_user, topk, ks=(2,), n_items=6, rows=np.array([False, True, True]))
    assert m["n_users"] == 2 and m["recall@2"] == pytest.approx(0.5)
    assert m["coverage@2"] == pytest.approx(4 / 6)
    empty = aggregate_metrics(per_user, topk, ks=(2,), n_items=6, rows=np.zeros(3, bool))
    assert empty["n_users"] == 0 and math.isnan(empty["recall@2"])


def test_invalid_lists_are_rejected():
    heldout = csr([[1]], 4)
    with pytest.raises(ValueError, match="repeats an item"):
        ranking_metrics(np.array([[1, 2, 1]]), heldout, ks=(3,))
    with pytest.raises(ValueError, match="ks="):
        ranking_metrics(np.array([[1, 2]]), heldout, ks=(3,))
    with pytest.raises(ValueError, match="held-out rows"):
        ranking_metrics(np.array([[1, 2], [0, 3]]), heldout, ks=(2,))
    with pytest.raises(ValueError, match="integer"):
        ranking_metrics(np.array([[1.0, 2.0]]), heldout, ks=(2,))


def test_explicit_zeros_in_heldout_are_not_positives():
    heldout = sp.csr_matrix((np.array([1.0, 0.0], np.float32), np.array([1, 2]), np.array([0, 2])), shape=(1, 4))
    m = ranking_metrics(np.array([[2, 1]]), heldout, ks=(2,))
    assert m["recall@2"] == pytest.approx(1.0) and m["mrr@2"] == pytest.approx(0.5)
