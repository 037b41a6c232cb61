"""GNN recommender: the shared recommender tests, plus graph fold-in and loss options."""

from dataclasses import replace

import numpy as np
import pytest
import scipy.sparse as sp
import torch

from recsys.graph import build_adjacency
from recsys.models.gnn import (
    GNNConfig,
    GNNRecommender,
    LightGCN,
    batch_negatives,
    build_graph,
    engagement_weights,
    epoch_permutation,
    hashed_items,
    pair_probabilities,
    step_candidates,
)
from tests.recsys.models.mixin import RecommenderTestMixin, planted_signal

DAY = 86_400

# Few, large steps: the planted groups separate within ~30 optimizer steps (3 per epoch here); every
# fit below runs twice in TestGNN*/test_fit_is_reproducible, so the epoch count is the file's runtime.
FIT = {"epochs": 12, "batch_size": 128, "lr": 0.05, "seed": 0}


class TestGNN(RecommenderTestMixin):
    fit_kwargs = FIT

    def make_model(self):
        return GNNRecommender(embedding_dim=8, num_layers=2, num_negatives=32, temperature=0.5)


class TestGNNBPR(RecommenderTestMixin):
    fit_kwargs = {**FIT, "epochs": 15}

    def make_model(self):
        return GNNRecommender(embedding_dim=16, num_layers=2, loss="bpr", num_negatives=4, normalize=False)


@pytest.fixture(scope="module")
def fitted():
    planted = planted_signal(seed=3)
    return planted, GNNRecommender(embedding_dim=16, num_layers=2, num_negatives=32).fit(planted.dataset, **FIT)


def test_fold_in_from_followees_only_recommends_their_group(fitted):
    # A cold user with no items at all: the follow edges alone must place them in the group.
    planted, model = fitted
    for group in range(int(planted.user_group.max()) + 1):
        followees = np.flatnonzero(planted.user_group == group)[:3]
        items, _ = model.recommend_new_user([], followees.tolist(), k=5)
        assert (planted.item_group[items] == group).all(), f"group {group}"


def test_fold_in_of_a_trained_users_neighbourhood_matches_propagation():
    # Without follow edges and with ego='zero', folding in an existing user's exact neighbourhood
    # reproduces layers 1..K of that user up to the one-hop difference of neighbour degrees (the
    # user itself is not in the neighbours' degree), so the direction must be close.
    planted = planted_signal(seed=1)
    model = GNNRecommender(embedding_dim=8, num_layers=1, follow_weight=0.0, fold_in_ego="zero", normalize=False)
    model.fit(planted.dataset, epochs=2, batch_size=64, seed=0)
    u = 5
    items = planted.dataset.user_items[u].indices
    folded = model.fold_in(items.tolist())
    with torch.no_grad():
        layer1 = model.module.layers(model.graph.to_torch())[1][u] * model.cfg.layer_weights()[1]
    torch.testing.assert_close(folded, layer1, rtol=1e-4, atol=1e-6)


def test_fold_in_without_neighbours_is_zero(fitted):
    _, model = fitted
    assert torch.count_nonzero(model.fold_in([], [])) == 0


def test_fold_in_rejects_unknown_indices(fitted):
    _, model = fitted
    with pytest.raises(IndexError):
        model.fold_in([model.n_items])
    with pytest.raises(IndexError):
        model.fold_in([], [model.n_users + 3])


def test_fold_in_is_the_batched_module_on_one_row(fitted):
    # One fold-in (issue 12): GNNRecommender.fold_in runs the module serving exports; padded rows of
    # a batch (mask 0, index 0) must give what each user gets alone.
    _, model = fitted
    module = model.fold_in_module()
    item_idx = torch.tensor([[1, 2, 7], [3, 0, 0]])
    item_mask = torch.tensor([[1.0, 1.0, 1.0], [1.0, 0.0, 0.0]])
    followee_idx = torch.tensor([[0, 4], [0, 0]])
    followee_mask = torch.tensor([[1.0, 1.0], [0.0, 0.0]])
    with torch.no_grad():
        batch = module(item_idx, item_mask, followee_idx, followee_mask)
    torch.testing.assert_close(batch[0], model.fold_in([1, 2, 7], [0, 4]))
    torch.testing.assert_close(batch[1], model.fold_in([3], []))
    assert "LightGCN" in module.method


def test_step_candidates_put_the_global_batch_first_then_uniform_negatives():
    cfg = GNNConfig(num_negatives=4, max_in_batch=3)
    positions, batch_items = np.arange(5), np.array([9, 8, 7, 6, 5])
    got = step_candidates(cfg, 0, 1, 2, positions, batch_items, 50)
    np.testing.assert_array_equal(got[:3], [9, 8, 7])
    np.testing.assert_array_equal(got[3:], batch_negatives(cfg, 0, 1, 2, positions, 50))
    plain = GNNConfig(num_negatives=4, in_batch_negatives=False)
    np.testing.assert_array_equal(step_candidates(plain, 0, 1, 2, positions, batch_items, 50),
                                  batch_negatives(plain, 0, 1, 2, positions, 50))


def test_load_restores_graph_for_fold_in(fitted, tmp_path):
    _, model = fitted
    loaded = GNNRecommender.load(model.save(tmp_path / "gnn"))
    np.testing.assert_array_equal(loaded.graph.indices, model.graph.indices)
    torch.testing.assert_close(loaded.fold_in([1, 2], [0, 4]), model.fold_in([1, 2], [0, 4]))


def test_forward_loss_scale_is_sum_times_scale():
    planted = planted_signal()
    ds = planted.dataset
    graph = build_adjacency(ds.user_items, ds.follows)
    torch.manual_seed(0)
    module = LightGCN(ds.n_users, ds.n_items, GNNConfig(embedding_dim=8, num_negatives=5))
    users, items = torch.tensor([0, 1, 2, 3]), torch.tensor([0, 1, 12, 13])
    neg = torch.tensor([5, 6, 7, 0])
    adj = graph.to_torch()
    mean = module(adj, users, items, neg)
    scaled = module(adj, users, items, neg, loss_scale=0.5)
    torch.testing.assert_close(scaled, mean * 4 * 0.5)


def test_hashed_negatives_are_deterministic_and_uniform():
    keys = np.arange(200_000)
    a = hashed_items(7, 2, 3, keys, 50)
    np.testing.assert_array_equal(a, hashed_items(7, 2, 3, keys, 50))
    assert not np.array_equal(a, hashed_items(7, 2, 4, keys, 50))  # epoch changes the draw
    counts = np.bincount(a, minlength=50)
    assert counts.min() > 0.9 * 4000 and counts.max() < 1.1 * 4000


def test_bpr_negatives_depend_on_global_position_not_on_batch_layout():
    cfg = GNNConfig(loss="bpr", num_negatives=3)
    positions = np.arange(10)
    whole = batch_negatives(cfg, 0, 1, 0, positions, 100)
    # rank 1 of 2 holds global positions 1, 3, 5, ...: it must draw the same rows
    np.testing.assert_array_equal(batch_negatives(cfg, 0, 1, 0, positions[1::2], 100), whole[1::2])


def test_config_validation():
    with pytest.raises(ValueError, match="alpha"):
        GNNConfig(num_layers=2, alpha=[0.5, 0.5])
    with pytest.raises(ValueError):
        GNNConfig(loss="softmax", num_negatives=0, in_batch_negatives=False)


def _with_times(dataset, ages_days):
    """``dataset`` with a timestamp per positive: the last positive is at t=10^9, the others
    ``ages_days`` (cycled over the CSR order) before it."""
    r = dataset.user_items.tocsr()
    ages = np.resize(np.asarray(ages_days, dtype=np.float64), r.nnz)
    ages[-1] = 0.0
    times = sp.csr_matrix(((1e9 - ages * DAY).astype(np.int64), r.indices, r.indptr), shape=r.shape)
    return replace(dataset, timestamps=times)


def test_engagement_weights_halve_every_half_life_down_to_the_floor():
    ds = _with_times(planted_signal().dataset, [0.0, 2.0, 4.0, 100.0])
    w = engagement_weights(ds, half_life_days=2.0, floor=0.01).data
    np.testing.assert_allclose(w[:4], [1.0, 0.5, 0.25, 0.01], rtol=1e-6)
    assert engagement_weights(ds, None).data.max() == 1.0  # off: binary
    assert engagement_weights(replace(ds, timestamps=None), 2.0).data.min() == 1.0  # no times: binary


def test_recency_weights_reach_the_graph_and_the_pair_sampler():
    ds = _with_times(planted_signal().dataset, [0.0, 30.0])
    cfg = GNNConfig(edge_half_life_days=1.0, pair_half_life_days=1.0)
    recent_graph, flat_graph = build_graph(ds, cfg), build_graph(ds, GNNConfig())
    items = slice(ds.n_users, None)  # item nodes have engagement edges only: half of them now weigh 0.01
    assert recent_graph.degrees[items].sum() < 0.6 * flat_graph.degrees[items].sum()
    p = pair_probabilities(ds, cfg)
    assert p.sum() == pytest.approx(1.0) and p[0] == pytest.approx(100 * p[1])  # 1 vs the 0.01 floor
    assert pair_probabilities(ds, GNNConfig()) is None
    draws = epoch_permutation(len(p), seed=0, epoch=0, probabilities=p)
    np.testing.assert_array_equal(draws, epoch_permutation(len(p), seed=0, epoch=0, probabilities=p))
    recent = np.flatnonzero(p > p.min())
    assert np.isin(draws, recent).mean() > 0.9  # recent pairs dominate the epoch


def test_build_graph_adds_authorship_edges_when_creators_are_known():
    ds = planted_signal().dataset
    creators = np.arange(ds.n_items) % ds.n_users
    with_creators = replace(ds, item_creators=creators)
    g = build_graph(with_creators, GNNConfig(creator_weight=0.5, follow_weight=0.0))
    plain = build_graph(ds, GNNConfig(creator_weight=0.5, follow_weight=0.0))
    np.testing.assert_allclose(g.degrees[ds.n_users :] - plain.degrees[ds.n_users :], 0.5)
    off = build_graph(with_creators, GNNConfig(creator_weight=0.0, follow_weight=0.0))
    np.testing.assert_array_equal(off.values, plain.values)
