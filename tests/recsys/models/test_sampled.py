"""Sampled-subgraph LightGCN (recsys/models/sampled.py): exact with full fan-outs, unbiased, seeded, bounded."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp
import torch

from recsys.graph import build_adjacency
from recsys.models.gnn import GNNConfig, LightGCN, training_pairs
from recsys.models.sampled import SubgraphLoss, make_loader, make_sparse_optimizer, sampling_data

N_USERS, N_ITEMS = 60, 40


@pytest.fixture(scope="module")
def graph():
    rng = np.random.default_rng(0)
    r = sp.csr_matrix((rng.random((N_USERS, N_ITEMS)) < 0.25).astype(np.float32))
    return r, build_adjacency(r)


def _batch(graph, fanouts, pairs=range(16), keys=(0, 0, 0), negatives=2):
    r, g = graph
    users, items = training_pairs(r)
    loader = make_loader(sampling_data(g), users, items, N_USERS, list(fanouts), num_negatives=negatives)
    loader.link_sampler.reseed(*keys)
    return loader.collate_fn(torch.tensor(list(pairs))), users, items


@pytest.mark.parametrize("layers", [1, 2, 3])
def test_fanouts_above_every_degree_give_the_full_graph_vectors(graph, layers):
    torch.manual_seed(0)
    m = LightGCN(N_USERS, N_ITEMS, GNNConfig(num_layers=layers, embedding_dim=4))
    b, users, items = _batch(graph, [1000] * layers)
    out = m.conv(m.embedding.weight[b.n_id], b.edge_index, b.edge_weight)
    full = m.embed(graph[1].to_torch())
    for idx in (b.src_index, b.dst_pos_index, b.dst_neg_index.reshape(-1)):
        torch.testing.assert_close(out[idx], full[b.n_id[idx]], rtol=1e-5, atol=1e-6)
    # the seeds are the requested pairs, the negatives are posts
    np.testing.assert_array_equal(b.n_id[b.src_index].numpy(), users[:16])
    np.testing.assert_array_equal(b.n_id[b.dst_pos_index].numpy() - N_USERS, items[:16])
    assert (b.n_id[b.dst_neg_index] >= N_USERS).all()


def test_small_fanouts_are_unbiased_estimates_of_the_full_propagation(graph):
    torch.manual_seed(0)
    m = LightGCN(N_USERS, N_ITEMS, GNNConfig(num_layers=1, embedding_dim=4, alpha=[0.0, 1.0]))
    full = m.embed(graph[1].to_torch()).detach()
    r, g = graph
    users, items = training_pairs(r)
    loader = make_loader(sampling_data(g), users, items, N_USERS, [2])
    sums, plain, n = torch.zeros(16, 4), torch.zeros(16, 4), 150
    for trial in range(n):
        loader.link_sampler.reseed(trial)
        b = loader.collate_fn(torch.arange(16))
        target = b.edge_index[1]
        sampled = torch.bincount(target, minlength=len(b.n_id)).clamp_min(1).float()
        scale = torch.clamp(b.neighbour_count / sampled, min=1.0)[target]
        ego = m.embedding.weight[b.n_id]
        sums += m.conv(ego, b.edge_index, b.edge_weight * scale).detach()[b.src_index]
        plain += m.conv(ego, b.edge_index, b.edge_weight).detach()[b.src_index]
    want = full[torch.from_numpy(users[:16])]
    subsampled = torch.from_numpy(r.getnnz(axis=1)[users[:16]] > 2)
    assert subsampled.any()
    err_scaled = (sums / n - want)[subsampled].abs().mean()
    err_plain = (plain / n - want)[subsampled].abs().mean()
    # the degree scaling removes the bias (2 of d neighbours: the plain sum is ~2/d of the full one)
    assert err_scaled < 0.35 * err_plain, (err_scaled, err_plain)


def test_the_subgraph_is_a_function_of_the_keys(graph):
    a, _, _ = _batch(graph, [3, 3], keys=(0, 1, 2))
    b, _, _ = _batch(graph, [3, 3], keys=(0, 1, 2))
    c, _, _ = _batch(graph, [3, 3], keys=(0, 1, 3))
    for key in ("n_id", "edge_index", "e_id", "dst_neg_index"):
        torch.testing.assert_close(getattr(a, key), getattr(b, key))
    assert not (torch.equal(a.n_id, c.n_id) and torch.equal(a.dst_neg_index, c.dst_neg_index))


def test_a_step_touches_a_bounded_subgraph(graph):
    # Memory per step is bounded by the batch and the fan-outs, not by the graph: at most
    # seeds * (1 + k1 + k1 k2) nodes and seeds * (k1 + k1 k2) edges.
    b, _, _ = _batch(graph, [3, 2], pairs=range(8), negatives=1)
    seeds = 8 * 3  # user, positive and negative per pair (before de-duplication)
    assert len(b.n_id) <= seeds * (1 + 3 + 3 * 2)
    assert b.edge_index.shape[1] <= seeds * (3 + 3 * 2)
    assert len(b.n_id) < N_USERS + N_ITEMS


def test_subgraph_loss_trains_the_table_through_ddp_style_wrapper(graph):
    torch.manual_seed(0)
    m = LightGCN(N_USERS, N_ITEMS, GNNConfig(num_layers=2, embedding_dim=4))
    b, _, _ = _batch(graph, [3, 3])
    loss = SubgraphLoss(m, l2=1e-4)(b)
    loss.backward()
    grad = m.embedding.weight.grad
    assert grad.is_sparse  # the subgraph's rows, not a dense [num_nodes, dim] table
    touched = grad.to_dense().abs().sum(1) > 0
    assert torch.isfinite(loss) and touched.any() and set(torch.nonzero(touched).flatten().tolist()) <= set(b.n_id.tolist())
    # lazy Adam moves the touched rows only
    before = m.embedding.weight.detach().clone()
    make_sparse_optimizer(m.parameters(), lr=0.1).step()
    moved = (m.embedding.weight.detach() != before).any(1)
    assert moved.any() and not (moved & ~touched).any()
