"""Normalised adjacency of the user-item(-user) graph and the symmetric sparse matmul."""

import numpy as np
import pytest
import scipy.sparse as sp
import torch

from recsys.graph import GraphArrays, SymmetricSpMM, build_adjacency, propagate, propagate_combined


def _toy():
    # 3 users x 4 items; user 2 follows user 0 and user 0 follows user 2 (one undirected edge)
    r = sp.csr_matrix(np.array([[1, 1, 0, 0], [0, 1, 1, 0], [0, 0, 0, 1]], dtype=np.float32))
    f = sp.csr_matrix(np.array([[0, 0, 1], [0, 0, 0], [1, 0, 0]], dtype=np.float32))
    return r, f


def _dense_reference(r: np.ndarray, f: np.ndarray | None, w: float, creators=None, cw: float = 0.0) -> np.ndarray:
    nu, ni = r.shape
    a = np.zeros((nu + ni, nu + ni))
    r = r.astype(np.float64).copy()
    if creators is not None:
        for item, user in enumerate(creators):
            if user >= 0:
                r[user, item] += cw
    a[:nu, nu:] = r
    a[nu:, :nu] = r.T
    if f is not None:
        a[:nu, :nu] = np.maximum(f, f.T) * w
    d = a.sum(1)
    inv = np.where(d > 0, 1 / np.sqrt(np.where(d > 0, d, 1)), 0)
    return inv[:, None] * a * inv[None, :]


@pytest.mark.parametrize("follow_weight", [0.0, 0.5, 1.0])
def test_matches_dense_formula(follow_weight):
    r, f = _toy()
    g = build_adjacency(r, f, follow_weight)
    np.testing.assert_allclose(g.to_scipy().toarray(), _dense_reference(r.toarray(), f.toarray(), follow_weight),
                               rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize("creator_weight", [0.0, 0.3])
def test_authorship_edges_match_dense_formula(creator_weight):
    # item 1 is by user 0, who also engaged with it (the weights add up); item 2's creator is unknown
    r, f = _toy()
    creators = np.array([1, 0, -1, 0])
    g = build_adjacency(r, f, 0.5, item_creators=creators, creator_weight=creator_weight)
    expected = _dense_reference(r.toarray(), f.toarray(), 0.5, creators, creator_weight)
    np.testing.assert_allclose(g.to_scipy().toarray(), expected, rtol=1e-6, atol=1e-7)
    if creator_weight:
        assert g.degrees[3 + 3] == pytest.approx(1 + creator_weight)  # item 3: user 2 + its creator


def test_an_unseen_item_is_connected_to_its_creator_only():
    # the point of authorship edges: a post nobody engaged with still has a neighbourhood
    r, _ = _toy()
    r = sp.hstack([r, sp.csr_matrix((3, 1), dtype=np.float32)]).tocsr()  # item 4: no engagement
    g = build_adjacency(r, item_creators=np.array([-1, -1, -1, -1, 2]), creator_weight=1.0)
    node = 3 + 4
    assert g.indices[g.indptr[node] : g.indptr[node + 1]].tolist() == [2]
    assert build_adjacency(r).indptr[node + 1] == build_adjacency(r).indptr[node]  # isolated without


def test_weighted_engagement_edges():
    r, f = _toy()
    weighted = r.copy()
    weighted.data = np.array([0.5, 1.0, 0.25, 2.0, 1.0], dtype=np.float32)
    g = build_adjacency(weighted, f, 1.0, binary=False)
    np.testing.assert_allclose(g.to_scipy().toarray(), _dense_reference(weighted.toarray(), f.toarray(), 1.0),
                               rtol=1e-6, atol=1e-7)
    # binary (the default) ignores the values
    np.testing.assert_allclose(build_adjacency(weighted, f).values, build_adjacency(r, f).values)


def test_rejects_bad_creators_and_weights():
    r, f = _toy()
    with pytest.raises(ValueError, match="item_creators has shape"):
        build_adjacency(r, item_creators=np.array([0, 1]), creator_weight=1.0)
    with pytest.raises(ValueError, match="n_users"):
        build_adjacency(r, item_creators=np.array([0, 1, 2, 3]), creator_weight=1.0)
    with pytest.raises(ValueError, match=">= 0"):
        build_adjacency(r, f, creator_weight=-1.0)


def test_symmetric_sorted_float32_and_deterministic():
    rng = np.random.default_rng(0)
    r = sp.random(50, 40, density=0.1, random_state=rng, format="csr", dtype=np.float32)
    f = sp.random(50, 50, density=0.05, random_state=rng, format="csr", dtype=np.float32)
    g = build_adjacency(r, f, 0.7)
    a = g.to_scipy()
    assert a.dtype == np.float32 and g.indptr.dtype == np.int64
    assert abs(a - a.T).max() < 1e-7
    for row in range(a.shape[0]):
        cols = g.indices[g.indptr[row] : g.indptr[row + 1]]
        assert (np.diff(cols) > 0).all()
    again = build_adjacency(r.copy(), f.copy(), 0.7)
    np.testing.assert_array_equal(g.values, again.values)
    np.testing.assert_array_equal(g.indices, again.indices)


def test_isolated_nodes_have_empty_rows_and_mutual_follow_is_one_edge():
    r, f = _toy()
    r = sp.vstack([r, sp.csr_matrix((1, 4), dtype=np.float32)]).tocsr()  # user 3: no items
    f = sp.csr_matrix((np.ones(2, np.float32), ([0, 2], [2, 0])), shape=(4, 4))
    g = build_adjacency(r, f, 1.0)
    assert g.indptr[4] - g.indptr[3] == 0
    assert g.degrees[0] == pytest.approx(3.0)  # two items + one (mutual) follow edge
    assert g.degrees[3] == 0


def test_tensors_round_trip():
    r, f = _toy()
    g = build_adjacency(r, f)
    back = GraphArrays.from_tensors(g.tensors())
    np.testing.assert_array_equal(back.values, g.values)
    np.testing.assert_array_equal(back.degrees, g.degrees)
    assert (back.n_users, back.n_items) == (g.n_users, g.n_items)


def test_rejects_bad_follow_shape():
    r, _ = _toy()
    with pytest.raises(ValueError, match="follows has shape"):
        build_adjacency(r, sp.csr_matrix(np.ones((2, 2), dtype=np.float32)))


def test_symmetric_spmm_gradient_matches_dense_autograd():
    rng = np.random.default_rng(1)
    r = sp.random(30, 20, density=0.2, random_state=rng, format="csr", dtype=np.float32)
    g = build_adjacency(r)
    adj, dense = g.to_torch(), torch.from_numpy(g.to_scipy().toarray())
    x = torch.randn(g.n_nodes, 5, dtype=torch.float32, requires_grad=True)
    x2 = x.detach().clone().requires_grad_()
    weights = torch.randn(g.n_nodes, 5)
    (SymmetricSpMM.apply(adj, SymmetricSpMM.apply(adj, x)) * weights).sum().backward()
    ((dense @ (dense @ x2)) * weights).sum().backward()
    torch.testing.assert_close(x.grad, x2.grad, rtol=1e-5, atol=1e-6)


def test_propagate_returns_every_layer():
    r, f = _toy()
    g = build_adjacency(r, f)
    ego = torch.randn(g.n_nodes, 3)
    layers = propagate(g.to_torch(), ego, 2)
    dense = torch.from_numpy(g.to_scipy().toarray())
    assert len(layers) == 3
    torch.testing.assert_close(layers[2], dense @ (dense @ ego), rtol=1e-5, atol=1e-6)


def test_propagate_combined_matches_the_combined_layers_and_their_gradient():
    r, f = _toy()
    g = build_adjacency(r, f)
    adj = g.to_torch()
    alphas = [0.1, 0.4, 0.2, 0.3]
    ego = torch.randn(g.n_nodes, 6, requires_grad=True)
    ego2 = ego.detach().clone().requires_grad_()
    weights = torch.randn(g.n_nodes, 6)
    fused = propagate_combined(adj, ego, alphas)
    reference = sum(a * x for a, x in zip(alphas, propagate(adj, ego2, len(alphas) - 1)))
    torch.testing.assert_close(fused, reference, rtol=1e-5, atol=1e-6)
    (fused * weights).sum().backward()
    (reference * weights).sum().backward()
    torch.testing.assert_close(ego.grad, ego2.grad, rtol=1e-5, atol=1e-6)
    # K = 0 is the scaled ego embedding; the input is never written to.
    before = ego.detach().clone()
    torch.testing.assert_close(propagate_combined(adj, ego.detach(), [0.5]), 0.5 * before)
    torch.testing.assert_close(ego.detach(), before)


def test_social_graph_is_heterodata_and_gives_the_same_adjacency():
    # Issue 14: the social graph is a PyG HeteroData (users, posts; engage, follow, author edges),
    # and the propagation matrix built from it equals the one built from the matrices directly.
    from torch_geometric.data import HeteroData

    from recsys.graph import AUTHORS, ENGAGES, FOLLOWS, adjacency_from_social_graph, social_graph

    r, f = _toy()
    dense = r.toarray()
    weighted = sp.csr_matrix(dense * np.linspace(0.2, 1.0, dense.size).reshape(dense.shape).astype(np.float32))
    creators = np.array([0, -1, 2, -1], dtype=np.int64)
    data = social_graph(weighted, sp.csr_matrix(f), creators)
    assert isinstance(data, HeteroData) and set(data.node_types) == {"user", "post"}
    assert set(data.edge_types) == {ENGAGES, FOLLOWS, AUTHORS}
    assert data[ENGAGES].edge_index.shape[1] == weighted.nnz and data[FOLLOWS].edge_index.shape[1] == int(f.sum())
    assert data[AUTHORS].edge_index.shape[1] == int((creators >= 0).sum())
    for binary in (True, False):
        got = adjacency_from_social_graph(data, 0.5, 0.3, binary=binary)
        want = build_adjacency(weighted, sp.csr_matrix(f), 0.5, item_creators=creators, creator_weight=0.3,
                               binary=binary)
        for key in ("indptr", "indices", "values", "degrees"):
            np.testing.assert_array_equal(getattr(got, key), getattr(want, key))
