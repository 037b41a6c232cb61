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
- ``gnn``: not here: ``recsys.models.gnn.GNNFoldIn`` is both ``GNNRecommender.fold_in`` and the
  exported module (``GNNRecommender.fold_in_module``, which ``serving.export`` asks for first).
- ``popular``: the constant vector ``[1]`` (in :mod:`serving.export`).
"""

from __future__ import annotations

import numpy as np
import torch
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
    _, items = model.factor_tables()
    module = LeastSquaresFoldIn(torch.from_numpy(np.asarray(items)), model.cfg.alpha, model.cfg.regularization)
    return module, "ALS user step: com.microsoft::Inverse of (YtY + reg I + alpha Y_R^T Y_R), float64"


def bpr_fold_in(model) -> tuple[nn.Module, str]:
    _, items = model.factor_tables()
    module = LeastSquaresFoldIn(
        torch.from_numpy(np.asarray(items)[:, :-1]), model.cfg.fold_in_alpha, model.cfg.fold_in_regularization,
        append_one=True,
    )
    return module, "regularised least squares (com.microsoft::Inverse, float64), bias 1"
