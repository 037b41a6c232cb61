"""The user-item(-user) graph a GNN recommender propagates over, as one normalised sparse matrix.

Node layout: users are nodes ``0 .. n_users-1``, items are nodes ``n_users .. n_users+n_items-1``.
Edges: every training positive is an undirected user-item edge of weight 1; every follow
``u -> v`` adds an undirected user-user edge of weight ``follow_weight`` (a pair that follows each
other gets one edge, not two); every item with a known creator adds an undirected *authorship* edge
item-creator of weight ``creator_weight`` (added to an engagement edge between the same pair, if
any). Authorship is item metadata known when a post is published, so it is no leak: a post nobody
has engaged with yet is then connected to its creator's neighbourhood, and the creator's followers
are two hops from it. The propagation matrix is the symmetric normalisation
``D^-1/2 A D^-1/2`` (``D`` = weighted degree; isolated nodes get an all-zero row), stored as a
``torch.sparse_csr_tensor`` (float32, sorted column indices), built once and reused every step.

:func:`propagate` multiplies by it through :class:`SymmetricSpMM`, whose backward is a second
forward (``A`` is symmetric so ``A^T = A``): torch's own backward of ``sparse.mm(csr, dense)``
transposes the CSR on every call, which measured ~8x slower than the forward on Gowalla.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp
import torch


@dataclass(frozen=True)
class GraphArrays:
    """A CSR matrix as plain arrays, the form stored in model bundles and checkpoints.

    Args:
        indptr (np.ndarray): ``[n_nodes + 1]`` int64 row pointers.
        indices (np.ndarray): ``[nnz]`` int64 column indices, sorted within each row.
        values (np.ndarray): ``[nnz]`` float32 normalised weights.
        n_users (int): Number of user nodes (they come first).
        n_items (int): Number of item nodes.
        degrees (np.ndarray): ``[n_nodes]`` float32 weighted degree of each node (before
            normalisation); fold-in needs it to normalise a new node's edges.
    """

    indptr: np.ndarray
    indices: np.ndarray
    values: np.ndarray
    n_users: int
    n_items: int
    degrees: np.ndarray

    @property
    def n_nodes(self) -> int:
        return self.n_users + self.n_items

    @property
    def nnz(self) -> int:
        return int(len(self.indices))

    def to_scipy(self) -> sp.csr_matrix:
        return sp.csr_matrix((self.values, self.indices, self.indptr), shape=(self.n_nodes, self.n_nodes))

    def to_torch(self) -> torch.Tensor:
        """``torch.sparse_csr_tensor`` of shape ``[n_nodes, n_nodes]``."""
        with warnings.catch_warnings():  # "sparse CSR support is in beta": we rely on spmm only
            warnings.simplefilter("ignore", UserWarning)
            return torch.sparse_csr_tensor(
                torch.from_numpy(self.indptr),
                torch.from_numpy(self.indices),
                torch.from_numpy(self.values),
                size=(self.n_nodes, self.n_nodes),
                check_invariants=False,
            )

    def tensors(self, prefix: str = "graph.") -> dict[str, torch.Tensor]:
        """Tensors for a safetensors file (round-trips through :meth:`from_tensors`)."""
        return {
            f"{prefix}indptr": torch.from_numpy(self.indptr),
            f"{prefix}indices": torch.from_numpy(self.indices),
            f"{prefix}values": torch.from_numpy(self.values),
            f"{prefix}degrees": torch.from_numpy(self.degrees),
            f"{prefix}sizes": torch.tensor([self.n_users, self.n_items], dtype=torch.int64),
        }

    @classmethod
    def from_tensors(cls, tensors: dict[str, torch.Tensor], prefix: str = "graph.") -> GraphArrays:
        n_users, n_items = (int(v) for v in tensors[f"{prefix}sizes"].tolist())
        return cls(
            indptr=tensors[f"{prefix}indptr"].numpy().astype(np.int64),
            indices=tensors[f"{prefix}indices"].numpy().astype(np.int64),
            values=tensors[f"{prefix}values"].numpy().astype(np.float32),
            n_users=n_users,
            n_items=n_items,
            degrees=tensors[f"{prefix}degrees"].numpy().astype(np.float32),
        )


def build_adjacency(
    user_items: sp.spmatrix,
    follows: sp.spmatrix | None = None,
    follow_weight: float = 1.0,
    item_creators: np.ndarray | None = None,
    creator_weight: float = 0.0,
    binary: bool = True,
) -> GraphArrays:
    """Normalised symmetric adjacency of the user-item(-user) graph.

    Args:
        user_items (sp.spmatrix): ``[n_users, n_items]`` training positives: any value > 0 is an edge
            of weight 1, or of weight equal to the value when ``binary=False`` (e.g. a recency decay).
        follows (sp.spmatrix, optional): ``[n_users, n_users]`` follow graph (``u`` follows ``v`` at
            ``[u, v]``); symmetrised. Ignored when ``None`` or ``follow_weight == 0``. (default: None)
        follow_weight (float): Weight of a user-user edge relative to a user-item edge. (default: 1.0)
        item_creators (np.ndarray, optional): ``[n_items]`` user index of each item's creator, ``-1``
            when unknown (:attr:`recsys.data.Dataset.item_creators`). (default: None)
        creator_weight (float): Weight of an item-creator edge; 0 or ``item_creators=None``
            disables them. (default: 0.0)
        binary (bool): Treat ``user_items`` as 0/1 (``False``: its positive values are the engagement
            edge weights). (default: True)

    Returns:
        GraphArrays: ``D^-1/2 A D^-1/2`` over ``n_users + n_items`` nodes; deterministic for equal inputs.
    """
    if follow_weight < 0 or creator_weight < 0:
        raise ValueError(f"edge weights must be >= 0, got follow_weight={follow_weight}, "
                         f"creator_weight={creator_weight}")
    r = sp.csr_matrix(user_items, dtype=np.float32, copy=True)
    if (r.data < 0).any():
        raise ValueError("user_items holds negative values")
    r.eliminate_zeros()
    if binary:
        r.data[:] = 1.0
    n_users, n_items = r.shape
    if item_creators is not None and creator_weight > 0:
        creators = np.asarray(item_creators, dtype=np.int64)
        if creators.shape != (n_items,):
            raise ValueError(f"item_creators has shape {creators.shape}, expected ({n_items},)")
        if creators.max(initial=-1) >= n_users:
            raise ValueError(f"item_creators holds a user index >= n_users ({n_users})")
        known = np.flatnonzero(creators >= 0)
        authored = sp.csr_matrix(
            (np.full(len(known), creator_weight, dtype=np.float32), (creators[known], known)), shape=r.shape
        )
        r = (r + authored).tocsr()
    blocks_uu = None
    if follows is not None and follow_weight > 0 and follows.nnz:
        f = sp.csr_matrix(follows, dtype=np.float32)
        if f.shape != (n_users, n_users):
            raise ValueError(f"follows has shape {f.shape}, expected {(n_users, n_users)}")
        f.data[:] = 1.0
        f = f.maximum(f.T).tocsr()  # undirected; a mutual follow is one edge
        f.setdiag(0)
        f.eliminate_zeros()
        blocks_uu = f * np.float32(follow_weight)
    a = sp.bmat([[blocks_uu, r], [r.T, None]], format="csr", dtype=np.float32)
    if a.shape != (n_users + n_items, n_users + n_items):  # bmat drops an all-None row/column block
        a.resize((n_users + n_items, n_users + n_items))
    a.sum_duplicates()
    a.sort_indices()
    deg = np.asarray(a.sum(axis=1), dtype=np.float64).ravel()
    inv_sqrt = np.zeros_like(deg)
    nz = deg > 0
    inv_sqrt[nz] = 1.0 / np.sqrt(deg[nz])
    rows = np.repeat(np.arange(a.shape[0]), np.diff(a.indptr))
    values = (a.data.astype(np.float64) * inv_sqrt[rows] * inv_sqrt[a.indices]).astype(np.float32)
    return GraphArrays(
        indptr=a.indptr.astype(np.int64),
        indices=a.indices.astype(np.int64),
        values=values,
        n_users=n_users,
        n_items=n_items,
        degrees=deg.astype(np.float32),
    )


class SymmetricSpMM(torch.autograd.Function):
    """``adj @ x`` for a *symmetric* sparse CSR ``adj``; gradient w.r.t. ``x`` only (``adj @ grad``)."""

    @staticmethod
    def forward(ctx, adj: torch.Tensor, x: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        ctx.adj = adj
        return torch.sparse.mm(adj, x)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):  # type: ignore[override]
        return None, torch.sparse.mm(ctx.adj, grad.contiguous())


def propagate(adj: torch.Tensor, ego: torch.Tensor, num_layers: int) -> list[torch.Tensor]:
    """Layer outputs ``[E0, A E0, A^2 E0, ...]`` (``num_layers + 1`` tensors) of LightGCN propagation.

    Args:
        adj (torch.Tensor): Symmetric normalised sparse CSR ``[n_nodes, n_nodes]``.
        ego (torch.Tensor): ``[n_nodes, dim]`` layer-0 embeddings.
        num_layers (int): Number of propagation layers ``K``.
    """
    layers = [ego]
    x = ego
    for _ in range(num_layers):
        x = SymmetricSpMM.apply(adj, x)
        layers.append(x)
    return layers
