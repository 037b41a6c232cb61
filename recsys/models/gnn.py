"""LightGCN over a user-item graph with optional follow, authorship and recency-weighted edges (kind ``"gnn"``).

Three pieces, nanoGPT style (config beside the model):

- :class:`GNNConfig`: architecture and loss hyper-parameters (what a bundle needs to rebuild it).
- :class:`LightGCN`: the ``nn.Module``. It takes tensors: a normalised sparse CSR adjacency
  (:func:`recsys.graph.build_adjacency`) and index tensors of a batch; ``forward`` propagates the
  whole graph (``K`` sparse matmuls) and returns the batch loss, so DDP can wrap it as is.
- :class:`GNNRecommender`: the shared :class:`~recsys.models.base.Recommender` interface (fit,
  vectors, fold-in, bundle save/load). The distributed trainer is ``training/train_gnn.py``; it and
  ``fit`` take the same optimizer step (:func:`step_candidates` + :func:`train_step`).
- :class:`GNNFoldIn`: the fold-in as a batched ``nn.Module``; ``GNNRecommender.fold_in`` runs it on
  one user and ``serving.export`` exports it to ONNX (``GNNRecommender.fold_in_module``), so the
  served fold-in is this code, not a copy.

Graph (:func:`build_graph`): engagement edges, weighted by recency when ``edge_half_life_days`` is
set; follow edges (``follow_weight``); item-creator authorship edges (``creator_weight``, when the
dataset knows creators). In a feed, posts live for days: on ``data/small`` recency-weighted edges and
training pairs (``pair_half_life_days``) raised validation Recall@20 from 0.009 to 0.09 (docs/gnn.md).

Propagation: ``E^(k) = A_hat E^(k-1)`` with ``A_hat = D^-1/2 A D^-1/2`` over user and item nodes;
the final representation is ``sum_k alpha_k E^(k)`` (uniform ``alpha = 1/(K+1)`` by default, as
LightGCN). With ``normalize=True`` user and item vectors are L2-normalised, so scores are cosines
(what the sampled-softmax loss with a temperature is trained for).

Fold-in of an unseen user (:meth:`GNNRecommender.fold_in`): the new node ``n`` gets edges to its
recent items (weight 1) and followees (weight ``follow_weight``); its degree ``d_n`` is the sum of
those weights, the neighbours' degrees stay as trained. Layer ``k`` is
``e_n^(k) = sum_j w_j / sqrt(d_n d_j) * E_j^(k-1)`` over the *trained* layer ``k-1`` of the
neighbours, and the layers are combined with the same ``alpha``. Layer 0 (a new user has no trained
ego embedding) is the ``w``-weighted mean of the neighbours' ego embeddings (``fold_in_ego="mean"``,
default: keeps the layer-0 term on the same scale as for trained users) or zero
(``fold_in_ego="zero"``).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from typing import Any, Literal, Self

import numpy as np
import scipy.sparse as sp
import torch
import torch.nn.functional as F
from pydantic import Field, model_validator
from torch import nn

from feedrec_common.config import StrictModel
from recsys.data.dataset import Dataset
from recsys.graph import GraphArrays, adjacency_from_social_graph, social_graph
from recsys.losses import bpr_loss, l2_regularisation, sampled_softmax_loss
from recsys.models.base import Recommender
from recsys.models.lightgcn_conv import LightGCNConv


class GNNConfig(StrictModel):
    """Architecture and loss of the GNN recommender.

    Args:
        embedding_dim (int): Size of every embedding. (default: 64)
        num_layers (int): Propagation layers ``K``. (default: 3)
        alpha (list[float], optional): ``K+1`` layer weights; ``None`` = uniform ``1/(K+1)``.
            (default: None)
        follow_weight (float): Weight of a user-user follow edge (0 disables them). (default: 1.0)
        creator_weight (float): Weight of an item-creator authorship edge, used when the dataset
            knows creators (``Dataset.item_creators``; Gowalla does not); 0 disables them. Off by
            default: on ``data/small`` they lowered validation Recall@20 at every weight tried
            (docs/gnn.md). (default: 0.0)
        edge_half_life_days (float, optional): Weight each engagement edge by
            ``max(edge_weight_floor, 0.5 ** (age / half_life))``, ``age`` = days between the engagement
            and the latest training engagement (the model's "now"): what people engage with *now*
            dominates the propagation, as it dominates a feed where posts age within days. ``None``:
            every edge weighs 1 (also when the dataset has no timestamps). (default: None)
        edge_weight_floor (float): Smallest engagement edge weight under ``edge_half_life_days``; it
            keeps old items' degrees away from 0 so fold-in coefficients ``1/sqrt(d_j)`` stay
            bounded. (default: 0.01)
        pair_half_life_days (float, optional): Draw each epoch's training pairs with replacement, with
            probability proportional to ``max(edge_weight_floor, 0.5 ** (age / half_life))``, instead
            of a permutation of all pairs: the loss then fits what people engage with now rather than
            three weeks ago. ``None``: every pair once per epoch. (default: None)
        normalize (bool): L2-normalise final vectors (cosine scores). (default: True)
        loss (str): ``"softmax"`` (sampled softmax over in-batch + uniform negatives) or ``"bpr"``.
            (default: ``"softmax"``)
        temperature (float): Softmax temperature. (default: 0.15)
        num_negatives (int): Uniform negatives: shared by the whole batch for ``softmax``, per pair
            for ``bpr``. (default: 1024)
        in_batch_negatives (bool): Softmax also uses the other positives of the global batch.
            (default: True)
        max_in_batch (int, optional): Use only the first ``max_in_batch`` positives of the global
            batch as in-batch negatives (the logits cost ``B x (max_in_batch + num_negatives)``, so
            this lets the batch grow without a quadratic cost). ``None``: all. (default: None)
        l2 (float): Weight of the L2 term on the batch's layer-0 embeddings. (default: 1e-4)
        init_std (float): Std of the normal initialisation of the embeddings. (default: 0.1)
        fold_in_ego (str): Layer-0 vector of a folded-in user: ``"mean"`` of neighbours' ego
            embeddings or ``"zero"``. (default: ``"mean"``)
    """

    embedding_dim: int = Field(64, ge=1)
    num_layers: int = Field(3, ge=0)
    alpha: list[float] | None = None
    follow_weight: float = Field(1.0, ge=0.0)
    creator_weight: float = Field(0.0, ge=0.0)
    edge_half_life_days: float | None = Field(None, gt=0.0)
    edge_weight_floor: float = Field(0.01, gt=0.0, le=1.0)
    pair_half_life_days: float | None = Field(None, gt=0.0)
    normalize: bool = True
    loss: Literal["softmax", "bpr"] = "softmax"
    temperature: float = Field(0.15, gt=0.0)
    num_negatives: int = Field(1024, ge=0)
    in_batch_negatives: bool = True
    max_in_batch: int | None = Field(None, ge=1)
    l2: float = Field(1e-4, ge=0.0)
    init_std: float = Field(0.1, gt=0.0)
    fold_in_ego: Literal["mean", "zero"] = "mean"

    @model_validator(mode="after")
    def _check(self) -> Self:
        if self.alpha is not None and len(self.alpha) != self.num_layers + 1:
            raise ValueError(f"alpha needs num_layers + 1 = {self.num_layers + 1} weights, got {len(self.alpha)}")
        if self.loss == "bpr" and self.num_negatives < 1:
            raise ValueError("bpr needs num_negatives >= 1")
        if self.loss == "softmax" and self.num_negatives == 0 and not self.in_batch_negatives:
            raise ValueError("softmax needs negatives: num_negatives > 0 or in_batch_negatives")
        return self

    def layer_weights(self) -> list[float]:
        """The ``K + 1`` layer weights ``alpha`` (uniform unless given)."""
        return list(self.alpha) if self.alpha is not None else [1.0 / (self.num_layers + 1)] * (self.num_layers + 1)

    @property
    def uses_in_batch_negatives(self) -> bool:
        """The softmax candidates start with the global batch's positives (DDP must all-gather them)."""
        return self.loss == "softmax" and self.in_batch_negatives


class LightGCN(nn.Module):
    """Embedding table of users then items, propagated over a fixed normalised adjacency.

    Args:
        num_users (int): User nodes (indices ``0..num_users-1``).
        num_items (int): Item nodes (indices ``num_users..``).
        config (GNNConfig): Hyper-parameters.
    """

    def __init__(self, num_users: int, num_items: int, config: GNNConfig) -> None:
        super().__init__()
        self.num_users, self.num_items, self.config = num_users, num_items, config
        # Dense gradients on purpose: DDP all-reduces them (70k x 64 floats on Gowalla is cheap),
        # and Adam on a dense table is what LightGCN does.
        self.embedding = nn.Embedding(num_users + num_items, config.embedding_dim)
        nn.init.normal_(self.embedding.weight, std=config.init_std)
        # The propagation is a PyG module (no parameters, so checkpoints and bundles are unchanged):
        # the prebuilt CSR takes its fused fast path; an edge_index (a sampled subgraph,
        # recsys/models/sampled.py) PyG's message passing. Both carry the full graph's normalised
        # weights, hence normalize=False (a subgraph's own degrees are not the graph's).
        self.conv = LightGCNConv(config.layer_weights(), normalize=False)

    def layers(self, adj: torch.Tensor) -> list[torch.Tensor]:
        """``[E0, ..., EK]``, each ``[num_nodes, dim]``."""
        return self.conv(self.embedding.weight, adj, combine=False)  # type: ignore[return-value]

    def combine(self, layers: Sequence[torch.Tensor]) -> torch.Tensor:
        """Weighted sum of layer outputs (LightGCN's layer combination)."""
        out = None
        for w, x in zip(self.config.layer_weights(), layers):
            out = x * w if out is None else out + x * w
        return out  # type: ignore[return-value]

    def embed(self, adj: torch.Tensor, rows: torch.Tensor | None = None) -> torch.Tensor:
        """Final ``[num_nodes, dim]`` representations (``combine(layers(adj))``, without the layers),
        or only the ``rows`` given (``[m, dim]``)."""
        return self.conv(self.embedding.weight, adj, rows=rows)  # type: ignore[return-value]

    def forward(
        self,
        adj: torch.Tensor,
        users: torch.Tensor,
        pos_items: torch.Tensor,
        negatives: torch.Tensor,
        loss_scale: float | None = None,
    ) -> torch.Tensor:
        """Loss of a batch after propagating the whole graph.

        Args:
            adj (torch.Tensor): Normalised symmetric sparse CSR ``[num_nodes, num_nodes]``.
            users (torch.Tensor): ``[b]`` user indices.
            pos_items (torch.Tensor): ``[b]`` item indices (0-based item ids, not node ids).
            negatives (torch.Tensor): ``softmax``: ``[m]`` candidate items shared by the batch (a
                candidate equal to a row's positive is masked for that row); ``bpr``: ``[b]`` or
                ``[b, n]`` per-pair negative items.
            loss_scale (float, optional): Return ``sum(per-pair loss) * loss_scale`` instead of the
                mean (DDP: ``world_size / global_batch`` makes the average over ranks the global
                mean). (default: None)
        """
        cfg = self.config
        b = len(users)
        # One propagation for users, positives and negatives together, whose last layer computes only
        # the batch's nodes, each once (popular items recur in a batch).
        nodes = torch.cat([users, self.num_users + pos_items, self.num_users + negatives.reshape(-1)])
        unique, inverse = torch.unique(nodes, return_inverse=True)
        rows = self.embed(adj, unique)[inverse]
        u, p, neg = rows[:b], rows[b : 2 * b], rows[2 * b :].reshape(*negatives.shape, -1)
        if cfg.normalize:
            u, p, neg = F.normalize(u, dim=-1), F.normalize(p, dim=-1), F.normalize(neg, dim=-1)
        ego = self.embedding.weight
        if cfg.loss == "softmax":
            per_pair = sampled_softmax_loss(u, p, neg, cfg.temperature, reduction="none",
                                            candidate_ids=negatives, positive_ids=pos_items)
            ego_rows = ego[nodes[: 2 * b]]
            reg = l2_regularisation(ego_rows[:b], ego_rows[b:], reduction="none")
        else:
            per_pair = bpr_loss(u, p, neg, reduction="none")
            ego_rows = ego[nodes]
            neg_ego = ego_rows[2 * b :].reshape(*negatives.shape, -1)
            if neg_ego.dim() == 3:
                neg_ego = neg_ego.mean(1)
            reg = l2_regularisation(ego_rows[:b], ego_rows[b : 2 * b], neg_ego, reduction="none")
        per_pair = per_pair + cfg.l2 * reg
        if loss_scale is None:
            return per_pair.mean()
        return per_pair.sum() * loss_scale


def make_optimizer(params, lr: float, device: torch.device | str = "cpu") -> torch.optim.Adam:
    """Adam as every GNN trainer here uses it: the fused kernel where torch has one (CPU, CUDA).

    ``foreach`` Adam makes ~8 passes over the dense ``[num_nodes, dim]`` table per step (6x the
    fused kernel's time on Gowalla at dim 128); the update is the same up to float rounding.
    """
    return torch.optim.Adam(params, lr=lr, fused=torch.device(device).type in ("cpu", "cuda"))


def engagement_weights(dataset: Dataset, half_life_days: float | None, floor: float = 0.01) -> sp.csr_matrix:
    """``dataset.user_items`` with each positive weighted by its recency (see ``GNNConfig``).

    Returns the binary matrix unchanged when ``half_life_days`` is ``None`` or the dataset has no
    timestamps.
    """
    r = dataset.user_items.tocsr()
    if half_life_days is None or dataset.timestamps is None or r.nnz == 0:
        return r
    r = r.copy()
    r.sort_indices()
    times = dataset.timestamps.tocsr().copy()
    times.sort_indices()
    if not (np.array_equal(times.indptr, r.indptr) and np.array_equal(times.indices, r.indices)):
        raise ValueError("dataset.timestamps does not have the sparsity of dataset.user_items")
    age_days = (times.data.max() - times.data).astype(np.float64) / 86400.0
    r.data = np.maximum(floor, 0.5 ** (age_days / half_life_days)).astype(np.float32)
    return r


def build_graph(dataset: Dataset, config: GNNConfig) -> GraphArrays:
    """The propagation graph of ``dataset``, built through its PyG ``HeteroData``
    (:func:`recsys.graph.social_graph`): engagement edges (recency-weighted when
    ``config.edge_half_life_days`` is set), follow and authorship edges (see
    :func:`recsys.graph.build_adjacency`), weighted as ``config`` says."""
    data = social_graph(engagement_weights(dataset, config.edge_half_life_days, config.edge_weight_floor),
                        dataset.follows, dataset.item_creators)
    return adjacency_from_social_graph(data, config.follow_weight, config.creator_weight,
                                       binary=config.edge_half_life_days is None)


# --- sampling and the optimizer step, shared by fit() and training/train_gnn.py --------------------

_MASK64 = np.uint64(0xFFFFFFFFFFFFFFFF)


def _splitmix64(x: np.ndarray) -> np.ndarray:
    """SplitMix64 finaliser, vectorised on uint64 (wrapping arithmetic)."""
    with np.errstate(over="ignore"):
        x = (x + np.uint64(0x9E3779B97F4A7C15)) & _MASK64
        x = ((x ^ (x >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)) & _MASK64
        x = ((x ^ (x >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)) & _MASK64
        return x ^ (x >> np.uint64(31))


def hashed_items(seed: int, stream: int, epoch: int, keys: np.ndarray, num_items: int) -> np.ndarray:
    """Uniform item indices that are a pure function of ``(seed, stream, epoch, key)``.

    Negatives drawn this way depend on a pair's *global* position, never on the rank that holds it,
    so one process and N processes with the same global batch see the same negatives.
    """
    with np.errstate(over="ignore"):
        base = _splitmix64(np.asarray([(seed * 1_000_003 + stream) * 1_000_033 + epoch], dtype=np.uint64))[0]
        h = _splitmix64(np.asarray(keys, dtype=np.uint64) ^ base)
    return (h % np.uint64(num_items)).astype(np.int64)


def epoch_permutation(num_pairs: int, seed: int, epoch: int, probabilities: np.ndarray | None = None) -> np.ndarray:
    """The training pairs epoch ``epoch`` visits, in order (same on every rank).

    Args:
        probabilities (np.ndarray, optional): ``[num_pairs]`` sampling probabilities: the epoch is then
            ``num_pairs`` draws with replacement (``GNNConfig.pair_half_life_days``). ``None``: a
            permutation. (default: None)
    """
    rng = np.random.default_rng([seed, epoch])
    if probabilities is None:
        return rng.permutation(num_pairs)
    return rng.choice(num_pairs, size=num_pairs, replace=True, p=probabilities)


def pair_probabilities(dataset: Dataset, config: GNNConfig) -> np.ndarray | None:
    """Sampling probabilities of the :func:`training_pairs` of ``dataset`` (``None``: uniform)."""
    if config.pair_half_life_days is None or dataset.timestamps is None:
        return None
    w = engagement_weights(dataset, config.pair_half_life_days, config.edge_weight_floor).data.astype(np.float64)
    return w / w.sum()


def batch_negatives(
    config: GNNConfig,
    seed: int,
    epoch: int,
    step: int,
    global_positions: np.ndarray,
    num_items: int,
) -> np.ndarray:
    """Uniform negatives for a batch: shared ``[num_negatives]`` (softmax) or per pair (bpr).

    Args:
        global_positions (np.ndarray): Positions in the epoch permutation of this rank's pairs.
    """
    n = config.num_negatives
    if config.loss == "softmax":
        return hashed_items(seed, 1, epoch, step * max(n, 1) + np.arange(n), num_items)
    keys = global_positions[:, None].astype(np.int64) * n + np.arange(n)[None, :]
    neg = hashed_items(seed, 2, epoch, keys.ravel(), num_items).reshape(len(global_positions), n)
    return neg[:, 0] if n == 1 else neg


def step_candidates(
    config: GNNConfig,
    seed: int,
    epoch: int,
    step: int,
    global_positions: np.ndarray,
    global_batch_items: np.ndarray,
    num_items: int,
) -> np.ndarray:
    """The negatives of one optimizer step, as :meth:`LightGCN.forward` takes them.

    Softmax with ``in_batch_negatives``: the first ``max_in_batch`` positives of the *global* batch
    (in global order), then the shared uniform ones; otherwise :func:`batch_negatives` alone.

    Args:
        global_positions (np.ndarray): Positions in the epoch permutation of this rank's pairs.
        global_batch_items (np.ndarray): Positive items of the whole global batch (one process: its
            own batch; DDP: all-gathered from every rank). Read only when
            ``config.uses_in_batch_negatives``.
    """
    negatives = batch_negatives(config, seed, epoch, step, global_positions, num_items)
    if config.uses_in_batch_negatives:
        negatives = np.concatenate([global_batch_items[: config.max_in_batch], negatives])
    return negatives


def train_step(
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    adj: torch.Tensor,
    users: np.ndarray,
    pos_items: np.ndarray,
    negatives: np.ndarray,
    loss_scale: float | None = None,
) -> torch.Tensor:
    """One optimizer step: propagate, batch loss, backward, update. Returns the detached loss.

    Args:
        model (nn.Module): A :class:`LightGCN`, or the DDP wrapper of one (which all-reduces the
            gradients in ``backward``).
        users, pos_items (np.ndarray): ``[b]`` the batch's pairs.
        negatives (np.ndarray): From :func:`step_candidates`.
        loss_scale (float, optional): See :meth:`LightGCN.forward`. (default: None: the mean)
    """
    device = adj.device
    loss = model(adj, torch.from_numpy(users).to(device), torch.from_numpy(pos_items).to(device),
                 torch.from_numpy(negatives).to(device), loss_scale=loss_scale)
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()
    return loss.detach()


def training_pairs(user_items) -> tuple[np.ndarray, np.ndarray]:
    """``(users, items)`` int64 arrays of the training positives in CSR order."""
    csr = user_items.tocsr()
    if not csr.has_sorted_indices:  # the order engagement_weights() uses
        csr = csr.sorted_indices()
    users = np.repeat(np.arange(csr.shape[0], dtype=np.int64), np.diff(csr.indptr))
    return users, csr.indices.astype(np.int64)


# --- fold-in --------------------------------------------------------------------------------------


class GNNFoldIn(nn.Module):
    """LightGCN fold-in of new user nodes connected to their recent items and followees (batched).

    ``forward(item_idx[B, L], item_mask[B, L], followee_idx[B, F], followee_mask[B, F]) ->
    user_vec[B, dim]``: padding positions have mask 0 (their index must still be valid, e.g. 0), and
    indices within a row must be unique. A row with no neighbours gives the zero vector. The math is
    in the module docstring; only ONNX-exportable ops are used.

    Args:
        layers (torch.Tensor): ``[max(K, 1), num_nodes, dim]`` trained layers ``0..K-1``.
        degrees (torch.Tensor): ``[num_nodes]`` trained node degrees.
        num_users (int): Item ``i`` is node ``num_users + i``.
        config (GNNConfig): Layer weights, ``follow_weight``, ``fold_in_ego``, ``normalize``.
    """

    def __init__(self, layers: torch.Tensor, degrees: torch.Tensor, num_users: int, config: GNNConfig) -> None:
        super().__init__()
        self.register_buffer("layers", layers.detach().float().contiguous())
        self.register_buffer("degrees", degrees.detach().float().clamp_min(1e-12).contiguous())
        self.num_users = int(num_users)
        self.alphas = [float(a) for a in config.layer_weights()]
        self.follow_weight = float(config.follow_weight)
        self.ego = config.fold_in_ego
        self.normalize = config.normalize
        #: what ``serving.export`` records as the bundle's fold-in method
        self.method = f"LightGCN inductive propagation over {len(self.alphas) - 1} trained layers (ego={self.ego})"

    @classmethod
    def from_layers(cls, layers: Sequence[torch.Tensor], degrees: np.ndarray, num_users: int,
                    config: GNNConfig) -> GNNFoldIn:
        """From the propagated layers ``[E0, ..., EK]`` (the last one is not needed)."""
        kept = torch.stack(list(layers[: max(1, config.num_layers)]))
        return cls(kept, torch.from_numpy(np.asarray(degrees, dtype=np.float32)), num_users, config)

    def forward(self, item_idx, item_mask, followee_idx, followee_mask) -> torch.Tensor:
        nodes = torch.cat([followee_idx, item_idx + self.num_users], dim=1)  # [B, F + L]
        w = torch.cat([followee_mask * self.follow_weight, item_mask], dim=1)
        d_new = w.sum(dim=1, keepdim=True)
        # Neighbours keep their trained degree (so folding in a trained user's own neighbourhood
        # reproduces its propagated vector), but never less than the new edge's weight: a neighbour
        # isolated in training (degree 0, e.g. a followee with no engagements) would otherwise get a
        # 1/sqrt(0) weight and blow the folded-in vector up. Padded slots have w = 0, so coef = 0.
        coef = w / torch.sqrt(d_new.clamp_min(1e-12) * torch.maximum(self.degrees[nodes], w).clamp_min(1e-12))
        out = torch.zeros_like(self.layers[0, :1]).expand(nodes.shape[0], -1)
        if self.ego == "mean":
            ego = (w[..., None] * self.layers[0][nodes]).sum(dim=1) / d_new.clamp_min(1e-12)
            out = out + self.alphas[0] * ego
        for k in range(1, len(self.alphas)):
            out = out + self.alphas[k] * (coef[..., None] * self.layers[k - 1][nodes]).sum(dim=1)
        return F.normalize(out, dim=-1) if self.normalize else out


# --- Recommender wrapper --------------------------------------------------------------------------


class GNNRecommender(Recommender):
    """LightGCN recommender with follow edges and graph fold-in.

    Args:
        config (GNNConfig | dict, optional): Hyper-parameters; keyword overrides win. (default: None)
    """

    kind = "gnn"

    def __init__(self, config: GNNConfig | dict[str, Any] | None = None, **overrides: Any) -> None:
        super().__init__()
        data = config.model_dump() if isinstance(config, GNNConfig) else dict(config or {})
        self.cfg = GNNConfig.model_validate({**data, **overrides})
        self.module: LightGCN | None = None
        self.graph: GraphArrays | None = None
        self._final: torch.Tensor | None = None  # combined propagated vectors of every node
        self._fold_in: GNNFoldIn | None = None

    # --- training -----------------------------------------------------------------------------
    def fit(
        self,
        dataset: Dataset,
        epochs: int = 20,
        batch_size: int = 2048,
        lr: float = 5e-3,
        seed: int = 0,
        verbose: bool = False,
        callback: Callable[[int, GNNRecommender], None] | None = None,
    ) -> Self:
        """Single-process training (tests, notebooks); ``training/train_gnn.py`` is the DDP trainer.

        Args:
            dataset (Dataset): Training data; ``dataset.follows`` adds user-user edges.
            epochs (int): Passes over the training pairs. (default: 20)
            batch_size (int): Pairs per step. (default: 2048)
            lr (float): Adam learning rate. (default: 5e-3)
            seed (int): Seeds initialisation, pair order and negatives. (default: 0)
            callback (Callable, optional): ``callback(epoch, self)`` after every epoch (0-based), with
                the propagated vectors of that epoch (e.g. to evaluate validation); an exception it
                raises ends training there (``training/search.py`` stops trials so). (default: None)
        """
        torch.manual_seed(seed)
        self.graph = build_graph(dataset, self.cfg)
        adj = self.graph.to_torch()
        self.module = LightGCN(dataset.n_users, dataset.n_items, self.cfg)
        opt = make_optimizer(self.module.parameters(), lr)
        users, items = training_pairs(dataset.user_items)
        if len(users) == 0:
            raise ValueError("dataset has no training positives")
        probabilities = pair_probabilities(dataset, self.cfg)
        for epoch in range(epochs):
            perm = epoch_permutation(len(users), seed, epoch, probabilities)
            total, t0 = 0.0, time.time()
            for step in range(math.ceil(len(users) / batch_size)):
                pos = np.arange(step * batch_size, min((step + 1) * batch_size, len(users)))
                idx = perm[pos]
                negatives = step_candidates(self.cfg, seed, epoch, step, pos, items[idx], dataset.n_items)
                loss = train_step(self.module, opt, adj, users[idx], items[idx], negatives)
                total += float(loss) * len(idx)
            if verbose:
                print(f"epoch {epoch}: loss {total / len(users):.4f} ({time.time() - t0:.1f}s)")
            if callback is not None:
                self._remember(dataset)
                self.refresh()
                callback(epoch, self)
        self._remember(dataset)
        self.refresh()
        return self

    @classmethod
    def from_module(cls, module: LightGCN, graph: GraphArrays, dataset: Dataset, copy: bool = True) -> GNNRecommender:
        """Wrap a trained module (e.g. from ``training/train_gnn.py``) as a recommender.

        Args:
            copy (bool): Copy the weights (the recommender outlives further training). ``False``
                shares the module's table, for a use that ends before the next optimizer step (the
                trainer's validation): on the large preset a copy is 0.9 GB. (default: True)
        """
        model = cls(module.config)
        if copy:
            model.module = LightGCN(module.num_users, module.num_items, module.config)
            model.module.load_state_dict({k: v.detach().cpu() for k, v in module.state_dict().items()})
        else:
            model.module = module
        model.graph = graph
        model._remember(dataset)
        model.refresh()
        return model

    @torch.no_grad()
    def refresh(self) -> None:
        """Recompute the propagated vectors (after fit, load or a weight change); the fold-in is
        rebuilt when it is next used.

        Only the combination is kept (two ``[num_nodes, dim]`` buffers while it is computed): the
        fold-in's trained layers are propagated again on first use, so evaluating an epoch (the
        search, the trainer's validation) never holds ``K`` extra copies of the table.
        """
        assert self.module is not None and self.graph is not None
        self.module.eval()
        self._final = self.module.embed(self.graph.to_torch()).detach()
        self._fold_in = None

    @torch.no_grad()
    def _fold_in_of_current_weights(self) -> GNNFoldIn:
        if self._fold_in is None:
            if self.module is None or self.graph is None:
                raise RuntimeError("GNNRecommender is not fitted")
            layers = self.module.layers(self.graph.to_torch())[: max(1, self.cfg.num_layers)]
            self._fold_in = GNNFoldIn.from_layers([x.detach() for x in layers], self.graph.degrees,
                                                  self.module.num_users, self.cfg)
        return self._fold_in

    # --- two-tower interface ------------------------------------------------------------------
    def _postprocess(self, x: torch.Tensor) -> torch.Tensor:
        return F.normalize(x, dim=-1) if self.cfg.normalize else x

    def user_vectors(self, user_idx: np.ndarray) -> torch.Tensor:
        if self._final is None:
            raise RuntimeError("GNNRecommender is not fitted")
        idx = torch.as_tensor(np.asarray(user_idx, dtype=np.int64))
        return self._postprocess(self._final[idx])

    def item_vectors(self) -> torch.Tensor:
        if self._final is None or self.module is None:
            raise RuntimeError("GNNRecommender is not fitted")
        return self._postprocess(self._final[self.module.num_users :])

    @torch.no_grad()
    def fold_in(self, recent_items: Sequence[int], followees: Sequence[int] = ()) -> torch.Tensor:
        """Graph fold-in of an unseen user from recent items and followees (see module docstring):
        :class:`GNNFoldIn` on one row, the module ``serving.export`` exports.

        A user with neither gets a zero vector (scores all 0; the caller should fall back to
        popularity).
        """
        if self._final is None or self.module is None:
            raise RuntimeError("GNNRecommender is not fitted")
        n_users, n_items = self.module.num_users, self.module.num_items
        items = np.unique(np.asarray(list(recent_items), dtype=np.int64))
        users = np.unique(np.asarray(list(followees), dtype=np.int64))
        if items.size and (items.min() < 0 or items.max() >= n_items):
            raise IndexError(f"item index out of range [0, {n_items})")
        if users.size and (users.min() < 0 or users.max() >= n_users):
            raise IndexError(f"user index out of range [0, {n_users})")
        item_idx, followee_idx = torch.from_numpy(items)[None, :], torch.from_numpy(users)[None, :]
        fold_in = self._fold_in_of_current_weights()
        return fold_in(item_idx, torch.ones(item_idx.shape), followee_idx, torch.ones(followee_idx.shape))[0]

    def fold_in_module(self) -> GNNFoldIn:
        """The batched fold-in module (``serving.export`` writes it as ``fold_in.onnx``)."""
        if self._final is None:
            raise RuntimeError("GNNRecommender is not fitted")
        return self._fold_in_of_current_weights()

    # --- persistence --------------------------------------------------------------------------
    def config(self) -> dict[str, Any]:
        out = self.cfg.model_dump()
        if self.module is not None:
            out.update(num_users=self.module.num_users, num_items=self.module.num_items)
        return out

    def _state(self) -> dict[str, torch.Tensor]:
        assert self.module is not None and self.graph is not None
        return {"embedding": self.module.embedding.weight.detach().cpu(), **self.graph.tensors()}

    @classmethod
    def _from_state(cls, config: dict[str, Any], tensors: dict[str, torch.Tensor]) -> Self:
        config = dict(config)
        num_users, num_items = int(config.pop("num_users")), int(config.pop("num_items"))
        model = cls(config)
        model.module = LightGCN(num_users, num_items, model.cfg)
        model.module.embedding.weight.data.copy_(tensors["embedding"])
        model.graph = GraphArrays.from_tensors(tensors)
        model.refresh()
        return model
