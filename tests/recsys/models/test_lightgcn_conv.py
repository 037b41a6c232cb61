"""LightGCNConv (PyG MessagePassing, fused CSR fast path) equals PyG's LGConv / LightGCN: values and gradients."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp
import torch
from torch_geometric.nn.conv import LGConv
from torch_geometric.nn.models import LightGCN as PyGLightGCN

from recsys.graph import build_adjacency
from recsys.models.gnn import GNNConfig, LightGCN
from recsys.models.lightgcn_conv import LightGCNConv


def _graph(seed: int = 0, n_users: int = 9, n_items: int = 7, weighted: bool = False):
    """A random bipartite graph: our normalised CSR, and PyG's edge_index (+ weights), both directions."""
    rng = np.random.default_rng(seed)
    dense = (rng.random((n_users, n_items)) < 0.35).astype(np.float64)
    dense[0, 0] = 1.0
    if weighted:
        dense *= rng.uniform(0.1, 1.0, dense.shape)
    r = sp.csr_matrix(dense)
    graph = build_adjacency(r, binary=not weighted)
    coo = r.tocoo()
    rows, cols = coo.row.astype(np.int64), coo.col.astype(np.int64) + n_users
    edge_index = torch.from_numpy(np.vstack([np.concatenate([rows, cols]), np.concatenate([cols, rows])]))
    edge_weight = torch.from_numpy(np.concatenate([coo.data, coo.data])).to(torch.float64)
    return graph, edge_index, edge_weight, n_users + n_items


def _lgconv_combined(x, edge_index, edge_weight, alphas):
    conv, out, layer = LGConv(), x * alphas[0], x
    for alpha in alphas[1:]:
        layer = conv(layer, edge_index, edge_weight)
        out = out + alpha * layer
    return out


@pytest.mark.parametrize("weighted", [False, True])
@pytest.mark.parametrize("path", ["edge_index", "csr"])
def test_values_and_gradients_equal_lgconv(weighted, path):
    graph, edge_index, edge_weight, n = _graph(weighted=weighted)
    alphas = [0.4, 0.3, 0.2, 0.1]
    torch.manual_seed(0)
    x0 = torch.randn(n, 5, dtype=torch.float64)
    upstream = torch.randn(n, 5, dtype=torch.float64)

    x_ref = x0.clone().requires_grad_()
    ref = _lgconv_combined(x_ref, edge_index, edge_weight if weighted else None, alphas)
    (ref * upstream).sum().backward()

    ours = LightGCNConv(alphas)
    x = x0.clone().requires_grad_()
    if path == "csr":  # the fast path: prebuilt normalised CSR (float32 like training; compare in float32)
        adj = graph.to_torch()
        x32 = x0.float().clone().requires_grad_()
        out = ours(x32, adj)
        (out * upstream.float()).sum().backward()
        torch.testing.assert_close(out.double(), ref.detach(), rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(x32.grad.double(), x_ref.grad, rtol=1e-5, atol=1e-6)
    else:
        out = ours(x, edge_index, edge_weight if weighted else None)
        (out * upstream).sum().backward()
        torch.testing.assert_close(out, ref.detach(), rtol=1e-12, atol=1e-12)
        torch.testing.assert_close(x.grad, x_ref.grad, rtol=1e-12, atol=1e-12)


def test_layers_equal_lgconv_layers_on_both_paths():
    graph, edge_index, _, n = _graph(seed=1)
    x = torch.randn(n, 4)
    conv = LightGCNConv([0.25] * 4)
    fast, slow = conv(x, graph.to_torch(), combine=False), conv(x, edge_index, combine=False)
    ref = [x]
    for _ in range(3):
        ref.append(LGConv()(ref[-1], edge_index))
    for a, b, c in zip(fast, slow, ref):
        torch.testing.assert_close(a, c, rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(b, c, rtol=1e-5, atol=1e-6)


def test_our_lightgcn_module_equals_pyg_lightgcn_and_its_gradient():
    # PyG's LightGCN model (uniform alpha = 1/(K+1), gcn_norm edges) and our module over the fused CSR.
    graph, edge_index, _, n = _graph(seed=2)
    n_users = graph.n_users
    cfg = GNNConfig(embedding_dim=6, num_layers=3)
    ours = LightGCN(n_users, n - n_users, cfg)
    pyg = PyGLightGCN(n, 6, 3)
    with torch.no_grad():
        pyg.embedding.weight.copy_(ours.embedding.weight)
    upstream = torch.randn(n, 6)
    a, b = ours.embed(graph.to_torch()), pyg.get_embedding(edge_index)
    torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)
    (a * upstream).sum().backward()
    (b * upstream).sum().backward()
    torch.testing.assert_close(ours.embedding.weight.grad, pyg.embedding.weight.grad, rtol=1e-5, atol=1e-6)
    assert list(ours.state_dict()) == ["embedding.weight"]  # the conv adds no state: bundles unchanged


def test_csr_with_edge_weight_is_refused():
    graph, _, _, n = _graph()
    with pytest.raises(ValueError, match="carries its own weights"):
        LightGCNConv([0.5, 0.5])(torch.zeros(n, 2), graph.to_torch(), torch.ones(3))


@pytest.mark.parametrize("path", ["edge_index", "csr"])
def test_rows_of_the_combination_equal_lgconvs_rows_and_their_gradient(path):
    # rows= (what the training step asks for: the batch's nodes) on both paths, against LGConv's
    # full combination indexed afterwards.
    graph, edge_index, _, n = _graph(seed=4)
    alphas = [0.25, 0.25, 0.25, 0.25]
    torch.manual_seed(1)
    x0 = torch.randn(n, 6)
    rows = torch.tensor([0, 3, 10, 15])
    upstream = torch.randn(len(rows), 6)
    x_ref = x0.clone().requires_grad_()
    ref = _lgconv_combined(x_ref, edge_index, None, alphas)[rows]
    (ref * upstream).sum().backward()
    x = x0.clone().requires_grad_()
    out = LightGCNConv(alphas)(x, graph.to_torch() if path == "csr" else edge_index, rows=rows)
    (out * upstream).sum().backward()
    torch.testing.assert_close(out, ref, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(x.grad, x_ref.grad, rtol=1e-5, atol=1e-6)
    with pytest.raises(ValueError, match="needs combine=True"):
        LightGCNConv(alphas)(x0, edge_index, combine=False, rows=rows)
