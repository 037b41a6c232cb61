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
Training needs only the layer *combination* ``sum_k alpha_k A^k E0``: :func:`propagate_combined`
computes it (and its gradient, the same polynomial of ``A`` applied to the incoming gradient)
without keeping the layers, and for a training batch only at the batch's nodes. Each of its layers
is one pass of :func:`csr_spmm`, ``beta * base + alpha * A @ x``: the C++ kernel
``torch.ops.feedrec.csr_spmm`` on CPU (``cpp/spmm_cpu.cpp``; 2.3x faster per Gowalla step than
``torch.sparse.mm`` plus the elementwise passes, ``benchmarks/bench_gnn_step.py``), torch's sparse mm
elsewhere or when the extension cannot be built.

The graph itself is a ``torch_geometric.data.HeteroData`` (:func:`social_graph`: users and posts;
engage, follow and author edges); :func:`adjacency_from_social_graph` turns it into the CSR above.
"""

from __future__ import annotations

import os
import warnings
from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp
import torch
from torch_geometric.data import HeteroData


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
        """``torch.sparse_csr_tensor`` of shape ``[n_nodes, n_nodes]`` (int32 indices when they fit)."""
        # MKL's sparse kernels take int32 indices: int64 ones are converted on every product.
        index_dtype = np.int32 if max(len(self.indices), self.n_nodes) < 2**31 else np.int64
        with warnings.catch_warnings():  # "sparse CSR support is in beta": we rely on spmm only
            warnings.simplefilter("ignore", UserWarning)
            return torch.sparse_csr_tensor(
                torch.from_numpy(self.indptr.astype(index_dtype, copy=False)),
                torch.from_numpy(self.indices.astype(index_dtype, copy=False)),  # shared when already int32
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


SPMM_BACKEND_ENV = "FEEDREC_SPMM_BACKEND"
SPMM_BACKENDS = ("auto", "cpp", "torch")
_spmm_backends: dict[str, str] = {}


def spmm_backend(prefer: str = "auto") -> str:
    """Which kernel multiplies by the CSR adjacency on CPU: ``"cpp"`` or ``"torch"``.

    ``"cpp"`` is ``torch.ops.feedrec.csr_spmm`` from the project's C++ extension (``cpp/spmm_cpu.cpp``,
    built by ``make install``): a Horner step ``beta * base + alpha * A @ x`` in one pass, only some
    output rows (``rows``), or skipping zero input rows (``mask``). ``"torch"`` is ``torch.sparse.mm``
    (MKL) plus elementwise ops; other devices always take it.

    Args:
        prefer (str, optional): ``"auto"`` (the C++ op, or torch with a warning if it cannot be
            built), ``"cpp"`` (raise ``RuntimeError`` if it cannot be built) or ``"torch"``. The
            ``FEEDREC_SPMM_BACKEND`` environment variable overrides it. (default: ``"auto"``)
    """
    choice = os.environ.get(SPMM_BACKEND_ENV) or prefer
    if choice not in SPMM_BACKENDS:
        raise ValueError(f"{SPMM_BACKEND_ENV}={choice!r}: expected one of {', '.join(SPMM_BACKENDS)}")
    if choice not in _spmm_backends:
        name = "torch"
        if choice != "torch":
            from recsys.topk.build import build_extension

            try:
                build_extension()
                name = "cpp"
            except Exception as error:  # training must not stop on a compiler failure
                message = (str(error).strip().splitlines() or [type(error).__name__])[-1]
                if choice == "cpp":
                    raise RuntimeError(f"spmm backend 'cpp' requested but the extension failed to build: {message}") from error
                warnings.warn(f"CSR propagation falls back to torch.sparse.mm: the C++ extension failed to build ({message})",
                              RuntimeWarning, stacklevel=2)
        _spmm_backends[choice] = name
    return _spmm_backends[choice]


def csr_spmm(
    adj: torch.Tensor,
    x: torch.Tensor,
    base: torch.Tensor | None = None,
    alpha: float = 1.0,
    beta: float = 0.0,
    rows: torch.Tensor | None = None,
    mask: torch.Tensor | None = None,
    backend: str | None = None,
) -> torch.Tensor:
    """``(beta * base + alpha * adj @ (x masked))[rows]``: one propagation step, fused where it can be.

    Args:
        adj (torch.Tensor): Sparse CSR ``[n, n]`` (float32 values).
        x (torch.Tensor): ``[n, dim]``.
        base (torch.Tensor, optional): ``[n, dim]`` added times ``beta``. (default: None: nothing)
        alpha, beta (float): Weights of the product and of ``base``.
        rows (torch.Tensor, optional): ``[m]`` output rows to compute (``None``: all ``n``).
        mask (torch.Tensor, optional): ``[n]`` bool/uint8: the rows of ``x`` that may be non-zero; the
            others are treated as zero (a row-sparse gradient costs a fraction of a product).
        backend (str, optional): ``"cpp"`` or ``"torch"``; ``None``: :func:`spmm_backend`.
    """
    if backend is None:
        backend = spmm_backend() if x.device.type == "cpu" else "torch"
    if backend == "cpp" and x.device.type == "cpu" and x.dtype == torch.float32:
        return torch.ops.feedrec.csr_spmm(adj.crow_indices(), adj.col_indices(), adj.values(), x, base,
                                          float(alpha), float(beta), rows, mask)
    # torch: one scaled copy of base and MKL's in-place addmm_ on it (``mm(csr, x, out=...)`` would
    # zero a temporary, multiply into it and copy it out); rows and mask cost nothing less here
    if mask is not None:
        x = x * mask.to(x.dtype).unsqueeze(1)
    if base is None or beta == 0.0:
        out = torch.sparse.mm(adj, x.contiguous())
        if alpha != 1.0:
            out.mul_(alpha)
    else:
        out = torch.mul(base, beta).addmm_(adj, x.contiguous(), alpha=alpha)
    return out if rows is None else out[rows]


class SymmetricSpMM(torch.autograd.Function):
    """``adj @ x`` for a *symmetric* sparse CSR ``adj``; gradient w.r.t. ``x`` only (``adj @ grad``)."""

    @staticmethod
    def forward(ctx, adj: torch.Tensor, x: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        ctx.adj = adj
        return csr_spmm(adj, x)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):  # type: ignore[override]
        return None, csr_spmm(ctx.adj, grad.contiguous())


def _horner(adj: torch.Tensor, x: torch.Tensor, alphas: tuple[float, ...], rows: torch.Tensor | None = None,
            mask: torch.Tensor | None = None) -> torch.Tensor:
    """``(sum_k alphas[k] A^k x)[rows]`` by Horner's scheme, ``a_0 x + A (a_1 x + A (a_2 x + ...))``.

    Each layer is one :func:`csr_spmm` (``a_k x + A acc``, the innermost one ``a_{K-1} x + a_K A x``):
    with the C++ kernel one fused pass, no scaled copies, no zeroed temporaries. ``rows`` restricts the outermost
    product to the rows asked for; ``mask`` marks the rows of ``x`` that may be non-zero, which only
    the innermost product reads (the outer ones read ``acc``, non-zero wherever ``A`` reaches).
    """
    if len(alphas) == 1:
        out = x * alphas[0]
        return out if rows is None else out[rows]
    # the innermost layer, a_{K-1} x + a_K A x (with one layer it is also the outermost)
    acc = csr_spmm(adj, x, x, alphas[-1], alphas[-2], rows if len(alphas) == 2 else None, mask)
    for k in range(len(alphas) - 3, -1, -1):
        acc = csr_spmm(adj, acc, x, 1.0, alphas[k], rows if k == 0 else None)
    return acc


class _PolynomialPropagation(torch.autograd.Function):
    """``(sum_k alphas[k] A^k x)[rows]`` for a symmetric sparse ``A``; backward is the same map of the gradient.

    LightGCN's propagation is linear, so neither pass needs the intermediate layers: autograd
    through :func:`propagate` kept all ``K`` of them and made a fresh ``[n_nodes, dim]`` tensor for
    every product, sum and scaled copy. At dim 128 on Gowalla those fresh 36 MB tensors are
    ``mmap``-ed and page-faulted on every step, and the elementwise passes cost as much as the
    sparse products (torch.profiler). A training step reads only the batch's rows: given ``rows``,
    the forward's last product computes just those, and the backward's first product reads just
    the gradient's non-zero rows (``mask``).
    """

    @staticmethod
    def forward(ctx, adj: torch.Tensor, x: torch.Tensor, alphas: tuple[float, ...], rows: torch.Tensor | None  # type: ignore[override]
                ) -> torch.Tensor:
        ctx.adj, ctx.alphas, ctx.rows, ctx.n = adj, alphas, rows, x.shape[0]
        return _horner(adj, x.contiguous(), alphas, rows)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):  # type: ignore[override]
        rows = ctx.rows
        if rows is None:
            return None, _horner(ctx.adj, grad.contiguous(), ctx.alphas), None, None
        full = grad.new_zeros((ctx.n, grad.shape[1])).index_add_(0, rows, grad)
        mask = torch.zeros(ctx.n, dtype=torch.uint8, device=grad.device)
        mask[rows] = 1
        return None, _horner(ctx.adj, full, ctx.alphas, mask=mask), None, None


def propagate_combined(adj: torch.Tensor, ego: torch.Tensor, alphas: list[float] | tuple[float, ...],
                       rows: torch.Tensor | None = None) -> torch.Tensor:
    """LightGCN's final representation ``sum_k alphas[k] A^k E0`` (``len(alphas) - 1`` layers).

    Equal to combining :func:`propagate`'s layers with ``alphas``, in a fraction of the memory
    traffic (see :class:`_PolynomialPropagation`); differentiable w.r.t. ``ego``.

    Args:
        adj (torch.Tensor): Symmetric normalised sparse CSR ``[n_nodes, n_nodes]``.
        ego (torch.Tensor): ``[n_nodes, dim]`` layer-0 embeddings.
        alphas (list[float]): Layer weights ``alpha_0 .. alpha_K``.
        rows (torch.Tensor, optional): ``[m]`` node indices: return only their rows ``[m, dim]``
            (a training batch's nodes; unique ones cost least). (default: None: all nodes)
    """
    if len(alphas) == 0:
        raise ValueError("alphas needs at least alpha_0")
    return _PolynomialPropagation.apply(adj, ego, tuple(float(a) for a in alphas), rows)


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


# --- the social graph as PyG HeteroData ------------------------------------------------------------

ENGAGES, FOLLOWS, AUTHORS = ("user", "engages", "post"), ("user", "follows", "user"), ("user", "authors", "post")


def social_graph(
    user_items: sp.spmatrix,
    follows: sp.spmatrix | None = None,
    item_creators: np.ndarray | None = None,
) -> HeteroData:
    """The social graph as ``torch_geometric.data.HeteroData``: node types ``user`` and ``post``.

    Edge types (directed as recorded; :func:`adjacency_from_social_graph` makes them undirected):
    ``(user, engages, post)`` with ``edge_weight`` (the engagement's value: 1, or its recency
    weight), ``(user, follows, user)`` and ``(user, authors, post)`` (known creators only).

    Args:
        user_items (sp.spmatrix): ``[n_users, n_posts]`` engagements (value = edge weight, > 0).
        follows (sp.spmatrix, optional): ``[n_users, n_users]``, ``u`` follows ``v`` at ``[u, v]``.
        item_creators (np.ndarray, optional): ``[n_posts]`` creator user index, ``-1`` if unknown.
    """
    r = sp.csr_matrix(user_items, dtype=np.float32)
    r.eliminate_zeros()
    r.sort_indices()
    n_users, n_items = r.shape
    data = HeteroData()
    data["user"].num_nodes = n_users
    data["post"].num_nodes = n_items
    rows = np.repeat(np.arange(n_users, dtype=np.int64), np.diff(r.indptr))
    data[ENGAGES].edge_index = torch.from_numpy(np.vstack([rows, r.indices.astype(np.int64)]))
    data[ENGAGES].edge_weight = torch.from_numpy(r.data.copy())
    f = sp.coo_matrix((n_users, n_users), dtype=np.float32) if follows is None else sp.coo_matrix(follows)
    data[FOLLOWS].edge_index = torch.from_numpy(np.vstack([f.row, f.col]).astype(np.int64))
    creators = np.full(n_items, -1, dtype=np.int64) if item_creators is None else np.asarray(item_creators, np.int64)
    known = np.flatnonzero(creators >= 0)
    data[AUTHORS].edge_index = torch.from_numpy(np.vstack([creators[known], known]).astype(np.int64))
    return data


def adjacency_from_social_graph(data: HeteroData, follow_weight: float = 1.0, creator_weight: float = 0.0,
                                binary: bool = True) -> GraphArrays:
    """The normalised propagation matrix of a :func:`social_graph` (see :func:`build_adjacency`:
    engagement edges weighted by ``edge_weight`` unless ``binary``, follows by ``follow_weight``,
    authorship by ``creator_weight``; all undirected)."""
    n_users, n_items = int(data["user"].num_nodes), int(data["post"].num_nodes)
    eng = data[ENGAGES]
    ei = eng.edge_index.numpy()
    user_items = sp.csr_matrix((eng.edge_weight.numpy(), (ei[0], ei[1])), shape=(n_users, n_items))
    fi = data[FOLLOWS].edge_index.numpy()
    follows = sp.csr_matrix((np.ones(fi.shape[1], np.float32), (fi[0], fi[1])), shape=(n_users, n_users))
    ai = data[AUTHORS].edge_index.numpy()
    creators = np.full(n_items, -1, dtype=np.int64)
    creators[ai[1]] = ai[0]
    return build_adjacency(user_items, follows, follow_weight, item_creators=creators if ai.shape[1] else None,
                           creator_weight=creator_weight, binary=binary)
