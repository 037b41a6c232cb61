"""ONNX-exportable fold-in modules, one per model kind, matching each model's ``fold_in``.

Every module has the same signature, batched and padded::

    forward(item_idx[B, L] int64, item_mask[B, L] float32,
            followee_idx[B, F] int64, followee_mask[B, F] float32) -> user_vec[B, dim]

Padding positions have mask 0 (their index must still be valid, e.g. 0). Indices within a row must
be unique: the models' ``fold_in`` de-duplicates, the service does it before padding.

- ``als``: one exact ALS user step, the normal equations of implicit's ``recalculate_user``:
  ``(Y^T Y + reg I + alpha Y_R^T Y_R) x = (1 + alpha) Y_R^T 1`` (``confidence = 1 + alpha`` on the
  recent items ``R``). ONNX has no standard matrix inverse, so the ``[B, d, d]`` system is inverted
  with ONNX Runtime's ``com.microsoft::Inverse`` contrib op, in float64 (``Y^T Y`` is precomputed in
  float64 too): the float64 solve is more accurate than implicit's float32 Cholesky, so the parity
  gap is implicit's own rounding. A user without items gets the zero vector, like implicit.
- ``bpr``: the same least squares on the item factors without the bias column, with the bias
  coordinate 1 appended (``BPRRecommender.fold_in``).
- ``gnn``: LightGCN's inductive propagation through the trained layers (``GNNRecommender.fold_in``).
- ``popular``: the constant vector ``[1]`` (in :mod:`serving.export`).
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.onnx import register_custom_op_symbolic


def _inverse_symbolic(g, a):
    return g.op("com.microsoft::Inverse", a).setType(a.type())


# torch.linalg.inv has no ONNX mapping; ONNX Runtime implements com.microsoft::Inverse (CPU, CUDA).
register_custom_op_symbolic("aten::linalg_inv", _inverse_symbolic, 17)


class LeastSquaresFoldIn(nn.Module):
    """``w = (Q^T Q + alpha Q_R^T Q_R + reg I)^-1 (1 + alpha) Q_R^T 1``, optionally with a bias 1.

    Args:
        item_factors (torch.Tensor): ``Q [n_items, d]`` (without any bias column).
        alpha (float): Extra confidence of the recent items.
        regularization (float): ``reg``.
        append_one (bool): Append the constant bias coordinate 1 (BPR). (default: False)
    """

    uses_contrib_ops = True  # com.microsoft::Inverse

    def __init__(self, item_factors: torch.Tensor, alpha: float, regularization: float,
                 append_one: bool = False) -> None:
        super().__init__()
        q = item_factors.detach().double()
        d = q.shape[1]
        self.register_buffer("items", q.contiguous())
        self.register_buffer("base", (q.T @ q + regularization * torch.eye(d, dtype=torch.float64)).contiguous())
        self.alpha = float(alpha)
        self.append_one = append_one

    def forward(self, item_idx, item_mask, followee_idx, followee_mask) -> torch.Tensor:
        q_r = self.items[item_idx] * item_mask.double()[..., None]  # [B, L, d], padding rows zeroed
        lhs = self.base + self.alpha * torch.matmul(q_r.transpose(1, 2), q_r)  # [B, d, d]
        rhs = (1.0 + self.alpha) * q_r.sum(dim=1)  # [B, d]
        w = torch.matmul(torch.linalg.inv(lhs), rhs[..., None])[..., 0]
        w = w.float()
        if self.append_one:
            w = torch.cat([w, torch.ones_like(w[:, :1])], dim=1)
        return w


def als_fold_in(model) -> tuple[nn.Module, str]:
    _, items = model._factors()
    module = LeastSquaresFoldIn(torch.from_numpy(np.asarray(items)), model.alpha, model.regularization)
    return module, "ALS user step: com.microsoft::Inverse of (YtY + reg I + alpha Y_R^T Y_R), float64"


def bpr_fold_in(model) -> tuple[nn.Module, str]:
    _, items = model._factors()
    module = LeastSquaresFoldIn(
        torch.from_numpy(np.asarray(items)[:, :-1]), model.fold_in_alpha, model.fold_in_regularization,
        append_one=True,
    )
    return module, "regularised least squares (com.microsoft::Inverse, float64), bias 1"


class GNNFoldIn(nn.Module):
    """LightGCN fold-in of a new node connected to its recent items and followees.

    Args:
        layers (torch.Tensor): ``[K, n_users + n_items, d]`` trained layers ``0..K-1``.
        degrees (torch.Tensor): ``[n_users + n_items]`` trained node degrees.
        num_users (int): Item node ``i`` is ``num_users + i``.
        alphas (list[float]): ``K + 1`` layer weights.
        follow_weight (float): Edge weight of a follow. ego (str): ``"mean"`` or ``"zero"``.
        normalize (bool): L2-normalise the output.
    """

    def __init__(self, layers: torch.Tensor, degrees: torch.Tensor, num_users: int, alphas: list[float],
                 follow_weight: float, ego: str, normalize: bool) -> None:
        super().__init__()
        self.register_buffer("layers", layers.detach().float().contiguous())
        self.register_buffer("degrees", degrees.detach().float().clamp_min(1e-12).contiguous())
        self.num_users = int(num_users)
        self.alphas = [float(a) for a in alphas]
        self.follow_weight = float(follow_weight)
        self.ego = ego
        self.normalize = normalize

    def forward(self, item_idx, item_mask, followee_idx, followee_mask) -> torch.Tensor:
        nodes = torch.cat([followee_idx, item_idx + self.num_users], dim=1)  # [B, F + L]
        w = torch.cat([followee_mask * self.follow_weight, item_mask], dim=1)
        d_new = w.sum(dim=1, keepdim=True)
        # Trained neighbour degree, at least the new edge's weight (as GNNRecommender.fold_in): keeps
        # isolated neighbours finite; padded slots have w = 0 and so coef = 0.
        coef = w / torch.sqrt(d_new.clamp_min(1e-12) * torch.maximum(self.degrees[nodes], w).clamp_min(1e-12))
        out = torch.zeros_like(self.layers[0, :1]).expand(nodes.shape[0], -1)
        if self.ego == "mean":
            ego = (w[..., None] * self.layers[0][nodes]).sum(dim=1) / d_new.clamp_min(1e-12)
            out = out + self.alphas[0] * ego
        for k in range(1, len(self.alphas)):
            out = out + self.alphas[k] * (coef[..., None] * self.layers[k - 1][nodes]).sum(dim=1)
        return F.normalize(out, dim=-1) if self.normalize else out


def gnn_fold_in(model) -> tuple[nn.Module, str]:
    cfg = model.cfg
    alphas = cfg.layer_weights()
    layers = torch.stack([model._layers[k] for k in range(max(1, len(alphas) - 1))])
    degrees = torch.from_numpy(np.asarray(model.graph.degrees, dtype=np.float32))
    module = GNNFoldIn(layers, degrees, model.module.num_users, alphas, cfg.follow_weight, cfg.fold_in_ego,
                       cfg.normalize)
    return module, f"LightGCN inductive propagation over {len(alphas) - 1} trained layers (ego={cfg.fold_in_ego})"
