"""The fused CSR propagation kernel (``torch.ops.feedrec.csr_spmm``, cpp/spmm_cpu.cpp) and its torch twin.

Both backends of :func:`recsys.graph.csr_spmm` against a dense reference, and the propagation's
``rows`` fast path (last layer for the batch only, masked first product in backward) against the
full propagation on values and gradients, on the real compiled extension.
"""

import numpy as np
import pytest
import scipy.sparse as sp
import torch

from recsys.graph import (
    SPMM_BACKEND_ENV,
    build_adjacency,
    csr_spmm,
    propagate,
    propagate_combined,
    spmm_backend,
)


@pytest.fixture(params=["cpp", "torch"])
def backend(request, monkeypatch):
    monkeypatch.setenv(SPMM_BACKEND_ENV, request.param)
    assert spmm_backend() == request.param  # "cpp" raises if the extension cannot be built
    return request.param


def _graph(seed=0, n_users=40, n_items=60, density=0.08):
    rng = np.random.default_rng(seed)
    r = sp.random(n_users, n_items, density=density, random_state=rng, format="csr")
    r.data[:] = 1.0
    f = sp.random(n_users, n_users, density=0.05, random_state=rng, format="csr")
    f.data[:] = 1.0
    return build_adjacency(r, f, 0.5)


@pytest.mark.parametrize("dim", [3, 64, 100, 130])  # below, at, and across the kernel's 64-column blocks
@pytest.mark.parametrize("index_dtype", [torch.int32, torch.int64])
def test_csr_spmm_matches_the_dense_formula(backend, dim, index_dtype):
    g = _graph()
    csr = g.to_torch()
    adj = torch.sparse_csr_tensor(csr.crow_indices().to(index_dtype), csr.col_indices().to(index_dtype), csr.values(),
                                  size=csr.shape, check_invariants=True)
    dense = torch.from_numpy(g.to_scipy().toarray()).float()
    gen = torch.Generator().manual_seed(1)
    x, base = torch.randn(g.n_nodes, dim, generator=gen), torch.randn(g.n_nodes, dim, generator=gen)
    rows = torch.tensor([5, 0, 99, 5, 17])  # repeated and unordered rows are allowed
    mask = torch.zeros(g.n_nodes, dtype=torch.uint8)
    mask[::3] = 1
    xm = x * mask.float().unsqueeze(1)
    cases = [
        (dict(), dense @ x),
        (dict(base=base, alpha=0.7, beta=0.3), 0.3 * base + 0.7 * (dense @ x)),
        (dict(base=base, alpha=0.5, beta=2.0, rows=rows), (2.0 * base + 0.5 * (dense @ x))[rows]),
        (dict(mask=mask), dense @ xm),
        (dict(base=base, alpha=1.5, beta=0.25, rows=rows, mask=mask), (0.25 * base + 1.5 * (dense @ xm))[rows]),
    ]
    for kwargs, expected in cases:
        torch.testing.assert_close(csr_spmm(adj, x, **kwargs), expected, rtol=1e-5, atol=1e-5)


def test_csr_spmm_rejects_a_matrix_that_points_outside_x():
    g = _graph()
    adj = g.to_torch()
    x = torch.randn(g.n_nodes - 1, 8)  # one row short: the last column index has no row
    ip, ix, v = adj.crow_indices(), adj.col_indices(), adj.values()
    assert int(ix.max()) == g.n_nodes - 1
    with pytest.raises(RuntimeError, match="outside x's rows"):
        torch.ops.feedrec.csr_spmm(ip, ix, v, x, None, 1.0, 0.0, None, None)
    bad_ptr = ip.clone()
    bad_ptr[3] = ix.numel() + 5
    with pytest.raises(RuntimeError, match="indptr points outside"):
        torch.ops.feedrec.csr_spmm(bad_ptr, ix, v, torch.randn(g.n_nodes, 8), None, 1.0, 0.0, None, None)
    with pytest.raises(RuntimeError, match="rows out of range"):
        torch.ops.feedrec.csr_spmm(ip, ix, v, torch.randn(g.n_nodes, 8), None, 1.0, 0.0,
                                   torch.tensor([g.n_nodes]), None)


def test_spmm_backend_rejects_an_unknown_choice(monkeypatch):
    monkeypatch.setenv(SPMM_BACKEND_ENV, "mkl")
    with pytest.raises(ValueError, match="expected one of auto, cpp, torch"):
        spmm_backend()


@pytest.mark.parametrize("alphas", [[0.25] * 4, [0.1, 0.4, 0.2, 0.3], [0.5, 0.5], [1.0]])
def test_propagation_of_some_rows_equals_the_full_one_in_value_and_gradient(backend, alphas):
    # The training step's path: the last layer for the batch's (unique) nodes only, and the
    # backward's first product reading only their gradient rows.
    g = _graph(seed=3)
    adj = g.to_torch()
    gen = torch.Generator().manual_seed(2)
    ego = torch.randn(g.n_nodes, 70, generator=gen, requires_grad=True)
    ego2 = ego.detach().clone().requires_grad_()
    rows = torch.unique(torch.randint(0, g.n_nodes, (30,), generator=gen))
    weights = torch.randn(len(rows), 70, generator=gen)
    part = propagate_combined(adj, ego, alphas, rows)
    reference = sum(a * x for a, x in zip(alphas, propagate(adj, ego2, len(alphas) - 1)))[rows]
    torch.testing.assert_close(part, reference, rtol=1e-5, atol=1e-5)
    (part * weights).sum().backward()
    (reference * weights).sum().backward()
    torch.testing.assert_close(ego.grad, ego2.grad, rtol=1e-5, atol=1e-5)


def test_both_backends_train_the_same_step(monkeypatch):
    # One optimizer step of the GNN (the trainer's train_step) gives the same weights either way.
    from recsys.models.gnn import GNNConfig, LightGCN, make_optimizer, train_step

    g = _graph(seed=5)
    rng = np.random.default_rng(0)
    users, pos = rng.integers(0, 40, 64), rng.integers(0, 60, 64)
    neg = rng.integers(0, 60, 32)
    weights = {}
    for name in ("cpp", "torch"):
        torch.manual_seed(0)
        model = LightGCN(40, 60, GNNConfig(embedding_dim=16, num_layers=3, num_negatives=32, in_batch_negatives=False))
        opt = make_optimizer(model.parameters(), 1e-2)
        monkeypatch.setenv(SPMM_BACKEND_ENV, name)
        train_step(model, opt, g.to_torch(), users, pos, neg)
        weights[name] = model.embedding.weight.detach().clone()
    torch.testing.assert_close(weights["cpp"], weights["torch"], rtol=1e-5, atol=1e-6)


def test_opcheck_csr_spmm():
    # The op's schema, fake (shape-only) kernel and dispatch agree (torch.library.opcheck).
    spmm_backend("cpp")
    g = _graph(seed=7)
    adj = g.to_torch()
    x, base = torch.randn(g.n_nodes, 20), torch.randn(g.n_nodes, 20)
    mask = torch.zeros(g.n_nodes, dtype=torch.uint8)
    mask[:10] = 1
    csr = (adj.crow_indices().clone(), adj.col_indices().clone(), adj.values().clone())  # plain tensors, not views
    args = (*csr, x, base, 0.5, 2.0, torch.tensor([3, 1, 4]), mask)
    torch.library.opcheck(torch.ops.feedrec.csr_spmm.default, args)
    torch.library.opcheck(torch.ops.feedrec.csr_spmm.default, (*args[:4], None, 1.0, 0.0, None, None))
