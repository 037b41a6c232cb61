"""One GNN training step on Gowalla: ours vs PyG's LightGCN (per-edge and CSR paths), side by side.

A step = propagate all embeddings (3 layers, dim 64) + BPR loss on a batch of (user, pos, neg)
triples + backward + Adam step. The three rows differ only in how the propagation runs (all use
the trainer's optimizer, ``recsys.models.gnn.make_optimizer``, and its allocator setting,
``recsys.runtime.retain_freed_memory``):

* ``ours``: ``recsys.models.gnn.train_step`` (the step the trainer and ``GNNRecommender.fit`` take)
  on ``recsys.models.gnn.LightGCN`` over the prebuilt normalised CSR, the layer combination
  propagated in one fused autograd function (``recsys.graph.propagate_combined``: Horner's scheme,
  backward = the same polynomial of the symmetric ``A``), each layer one pass of the C++ kernel
  ``torch.ops.feedrec.csr_spmm`` (``cpp/spmm_cpu.cpp``), the last layer only for the batch's nodes
  and the backward's first product only from their gradient rows;
* ``pyg-edge_index``: ``torch_geometric.nn.models.LightGCN.get_embedding(edge_index)``, PyG's example
  path (``gcn_norm`` + per-edge message passing every step);
* ``pyg-csr``: the same PyG model given the prebuilt normalised ``torch.sparse_csr`` ``adj_t``
  (``LGConv(normalize=False)``; autograd's own sparse backward).

Plus a row for ours without the C++ kernel (``FEEDREC_SPMM_BACKEND=torch``: MKL's sparse mm), a row for the mini-batch path (``recsys.models.sampled``: the batch's 3-hop neighbourhoods
sampled through ``LinkNeighborLoader``, 10 neighbours per hop, then PyG message passing on the
subgraph, sparse gradients and lazy Adam as the trainer takes it; sampling is part of the step), and rows with our sampled-softmax loss (fused, chunked: ``recsys.losses``) for reference: the
default (in-batch + 1024 uniform negatives) and the Gowalla config's (4096 uniform negatives, dim
128).

    .venv/bin/python -m benchmarks.bench_gnn_step            # batch 8192, 5 timed steps
    .venv/bin/python -m benchmarks.bench_gnn_step --quick    # 2 timed steps
"""

from __future__ import annotations

import argparse
import os
import time
import warnings

import numpy as np
import torch

from recsys.data import load_split
from recsys.graph import SPMM_BACKEND_ENV, build_adjacency, spmm_backend
from recsys.models.gnn import GNNConfig, LightGCN, make_optimizer, train_step, training_pairs
from recsys.provenance import machine_description
from recsys.runtime import retain_freed_memory


def _time(step, repeats: int) -> float:
    step()  # warm-up
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        step()
        times.append(time.perf_counter() - t)
    return float(np.median(times))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--batch", type=int, default=8192)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--quick", action="store_true", help="2 timed steps")
    args = parser.parse_args()
    repeats = 2 if args.quick else args.repeats
    retained = retain_freed_memory()
    warnings.filterwarnings("ignore", category=UserWarning)
    from torch_geometric.nn.models import LightGCN as PyGLightGCN

    split = load_split("gowalla")
    ds = split.train
    n_users, n_items = ds.n_users, ds.n_items
    graph = build_adjacency(ds.user_items)
    adj = graph.to_torch()
    users, items = training_pairs(ds.user_items)
    rng = np.random.default_rng(0)
    idx = rng.integers(0, len(users), args.batch)
    u = torch.from_numpy(users[idx])
    p = torch.from_numpy(items[idx])
    n = torch.from_numpy(rng.integers(0, n_items, args.batch))
    coo = graph.to_scipy().tocoo()
    edge_index = torch.from_numpy(np.vstack([coo.row, coo.col]).astype(np.int64))  # both directions

    rows = []

    def ours(loss: str, negatives: int = 1024, in_batch: bool = True, dim: int = 64, backend: str | None = None):
        cfg = GNNConfig(loss=loss, num_negatives=1 if loss == "bpr" else negatives, normalize=loss != "bpr",
                        embedding_dim=dim)
        torch.manual_seed(0)
        m = LightGCN(n_users, n_items, cfg)
        opt = make_optimizer(m.parameters(), 1e-3)
        uniform = rng.integers(0, n_items, negatives)
        neg = n.numpy() if loss == "bpr" else (np.concatenate([p.numpy(), uniform]) if in_batch else uniform)

        def step():  # the trainer's and GNNRecommender.fit's own step
            if backend is None:
                train_step(m, opt, adj, u.numpy(), p.numpy(), neg)
                return
            previous = os.environ.get(SPMM_BACKEND_ENV)
            os.environ[SPMM_BACKEND_ENV] = backend
            try:
                train_step(m, opt, adj, u.numpy(), p.numpy(), neg)
            finally:  # the caller's own setting, if any, is what the other rows run with
                if previous is None:
                    del os.environ[SPMM_BACKEND_ENV]
                else:
                    os.environ[SPMM_BACKEND_ENV] = previous

        return step

    def pyg(adj_or_edges, normalize: bool):
        torch.manual_seed(0)
        m = PyGLightGCN(n_users + n_items, 64, 3, normalize=normalize)
        opt = make_optimizer(m.parameters(), 1e-3)

        def step():
            emb = m.get_embedding(adj_or_edges)
            ue, pe, ne = emb[u], emb[n_users + p], emb[n_users + n]
            rank = m.recommendation_loss((ue * pe).sum(-1), (ue * ne).sum(-1), node_id=torch.cat([u, n_users + p,
                                                                                              n_users + n]),
                                         lambda_reg=1e-4)
            opt.zero_grad()
            rank.backward()
            opt.step()

        return step

    def sampled(fanouts: list[int]):
        # The mini-batch path (recsys/models/sampled.py): LinkNeighborLoader batch of the same pairs
        # (sampling + collation are part of the step), PyG message passing on the subgraph, BPR.
        from recsys.models.sampled import SubgraphLoss, make_loader, make_sparse_optimizer, sampling_data

        cfg = GNNConfig(loss="bpr", num_negatives=1, normalize=False, num_layers=len(fanouts))
        torch.manual_seed(0)
        m = LightGCN(n_users, n_items, cfg)
        opt = make_sparse_optimizer(m.parameters(), 1e-3)  # the trainer's for this path: sparse gradients
        loader = make_loader(sampling_data(graph), users, items, n_users, fanouts, num_negatives=1)
        model, index, calls = SubgraphLoss(m, cfg.l2), torch.from_numpy(idx), iter(range(10**9))

        def step():
            loader.link_sampler.reseed(0, next(calls))
            loss = model(loader.collate_fn(index))
            opt.zero_grad()
            loss.backward()
            opt.step()

        return step

    cases = [
        ("ours (fused propagation, BPR)", ours("bpr")),
        ("pyg-edge_index (example path, BPR)", pyg(edge_index, True)),
        ("pyg-csr (torch sparse adj_t, BPR)", pyg(adj, False)),
        ("ours without the C++ kernel (torch.sparse.mm backend, BPR)", ours("bpr", backend="torch")),
        ("ours (sampled softmax, in-batch + 1024 uniform negatives)", ours("softmax")),
        ("ours (sampled softmax, 4096 uniform negatives, dim 64)", ours("softmax", 4096, False)),
        ("ours (sampled softmax, 4096 uniform negatives, dim 128: gnn_gowalla.yaml)", ours("softmax", 4096, False, 128)),
        ("ours, sampled path (LinkNeighborLoader, fan-outs 10-10-10, BPR)", sampled([10, 10, 10])),
    ]
    for name, step in cases:
        sec = _time(step, repeats)
        rows.append((name, sec))
        print(f"  {name}: {sec:.3f} s/step", flush=True)
    ours_s = rows[0][1]
    print(f"\n## GNN training step on Gowalla (batch {args.batch}, 3 layers, dim 64; median of {repeats})\n")
    print(f"{machine_description()}; {time.strftime('%Y-%m-%d')}; graph nnz {graph.nnz}; "
          f"propagation kernel: {spmm_backend()}; freed memory retained: {'yes' if retained else 'no'}; fused Adam for every row\n")
    print("| path | s/step | samples/s | ours is x faster |")
    print("|---|---:|---:|---:|")
    for i, (name, sec) in enumerate(rows):
        ratio = f"{sec / ours_s:.2f}" if i < 4 else "—"  # the softmax and sampled rows are for reference
        print(f"| {name} | {sec:.3f} | {args.batch / sec:,.0f} | {ratio} |")


if __name__ == "__main__":
    main()
