"""GNN recommender: the shared recommender tests, plus graph fold-in and loss options."""

import numpy as np
import pytest
import torch

from recsys.graph import build_adjacency
from recsys.models.gnn import GNNConfig, GNNRecommender, LightGCN, batch_negatives, hashed_items
from tests.recsys.models.mixin import RecommenderTestMixin, planted_signal

FIT = {"epochs": 30, "batch_size": 128, "lr": 0.02, "seed": 0}


class TestGNN(RecommenderTestMixin):
    fit_kwargs = FIT

    def make_model(self):
        return GNNRecommender(embedding_dim=8, num_layers=2, num_negatives=32, temperature=0.5)


class TestGNNBPR(RecommenderTestMixin):
    fit_kwargs = {**FIT, "epochs": 60}

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
    layer1 = model._layers[1][u] * model.cfg.layer_weights()[1]
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
