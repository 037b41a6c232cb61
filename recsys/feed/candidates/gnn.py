"""GNN retrieval: the posts whose vectors score highest with the user's, by the C++ top-k op."""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp
import torch

from recsys.feed.candidates.base import FeedContext, Request
from recsys.topk import score_topk


class GNNRetrieval:
    """Top posts by ``user_vector . post_vector`` among the posts inside the age cap.

    New posts take part through their content fold-in vectors (:mod:`recsys.feed.embeddings`). The pool
    of fresh posts is rebuilt once per hour of request time.

    Args:
        context (FeedContext): Shared feed context.
        quota (int): Posts returned. (default: 300)
    """

    name = "gnn"

    def __init__(self, context: FeedContext, quota: int = 300) -> None:
        self.context, self.quota = context, quota
        self._pool: tuple[int, np.ndarray, torch.Tensor] | None = None

    def _fresh_pool(self, now: int) -> tuple[np.ndarray, torch.Tensor]:
        hour = now - now % 3600
        if self._pool is None or self._pool[0] != hour:
            items = self.context.fresh_items(hour)
            self._pool = (hour, items, torch.from_numpy(self.context.embeddings.item_vectors[items]))
        return self._pool[1], self._pool[2]

    def candidates(self, request: Request) -> tuple[np.ndarray, np.ndarray]:
        items, matrix = self._fresh_pool(request.now)
        if len(items) == 0:
            return np.empty(0, np.int64), np.empty(0)
        user = torch.from_numpy(self.context.embeddings.user_vector(request.user))
        banned = np.flatnonzero(~request.eligible(items))  # seen or own, as pool positions
        exclude = sp.csr_matrix((np.ones(len(banned), np.float32), banned, [0, len(banned)]), shape=(1, len(items)))
        idx, scores = score_topk(user, matrix, min(self.quota, len(items)), exclude)
        idx, scores = idx.numpy(), scores.numpy().astype(np.float64)
        keep = idx >= 0
        return items[idx[keep]], scores[keep]
