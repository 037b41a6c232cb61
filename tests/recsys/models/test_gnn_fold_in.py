"""GNN fold-in next to neighbours that had no edges in training.

Guards the bug where a folded-in user who follows an account with no trained edges got a
``1/sqrt(0)`` edge weight: the vector's norm came out ~1e5 times the trained users' (seen on
data/small: ONNX/PyTorch parity then failed on float32 rounding of the huge scores).
"""

from dataclasses import replace

import numpy as np
import scipy.sparse as sp
import torch

from recsys.models.gnn import GNNRecommender
from tests.recsys.models.mixin import planted_signal


def _isolate(matrix: sp.csr_matrix, row: int, column: int | None = None) -> sp.csr_matrix:
    m = matrix.tolil(copy=True)
    m[row, :] = 0
    if column is not None:
        m[:, column] = 0
    out = m.tocsr()
    out.eliminate_zeros()
    return out


def test_fold_in_with_an_isolated_followee_stays_on_the_scale_of_trained_users():
    planted = planted_signal(seed=5)
    ds = planted.dataset
    lonely = 0  # a user with no engagements, who follows nobody and whom nobody follows
    ds = replace(ds, user_items=_isolate(ds.user_items, lonely), follows=_isolate(ds.follows, lonely, lonely))
    model = GNNRecommender(embedding_dim=8, num_layers=3, num_negatives=16, normalize=False)
    model.fit(ds, epochs=3, batch_size=128, lr=0.05, seed=0)

    trained = model.user_vectors(np.arange(1, ds.n_users)).norm(dim=1)
    group_items = planted.group_items(1)[:3].tolist()
    with_lonely = model.fold_in(group_items, [lonely])
    without = model.fold_in(group_items, [])
    assert torch.isfinite(with_lonely).all()
    assert with_lonely.norm() < 10 * trained.max()
    # An edge to a node that carries nothing may shift the vector, but not overturn it.
    assert torch.nn.functional.cosine_similarity(with_lonely, without, dim=0) > 0.5
