"""The public entry points: :func:`score_topk` (exact) and :func:`score_topk_compact` (int8 scan + exact
re-rank), on whichever backend :func:`recsys.topk.get_topk_backend` picks."""

from __future__ import annotations

import numpy as np
import torch

from recsys.topk.backends import TopKBackend, get_topk_backend
from recsys.topk.inputs import Exclude, as_exclusion, as_float_matrix, prepare_users
from recsys.topk.quantize import CompactItems


def score_topk(
    user_vectors: torch.Tensor | np.ndarray,
    item_matrix: torch.Tensor | np.ndarray,
    k: int,
    exclude: Exclude = None,
    backend: TopKBackend | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """The k best items of each user by dot product, seen items excluded, in rank order.

    Args:
        user_vectors (torch.Tensor | np.ndarray): ``[n_users, dim]`` (or ``[dim]`` for one user).
        item_matrix (torch.Tensor | np.ndarray): ``[n_items, dim]``.
        k (int): Number of items per user; rows are padded with ``-1`` / ``-inf`` when fewer remain.
        exclude (optional): Items never to return: ``None``, a scipy.sparse CSR matrix whose row u
            lists (as non-zero columns) user u's excluded items, or an ``(indptr, indices)`` pair.
            (default: ``None``)
        backend (optional): From :func:`get_topk_backend`. (default: ``get_topk_backend()``)

    Returns:
        ``(indices int64 [n_users, k], scores float32 [n_users, k])`` (1-D when ``user_vectors``
        is 1-D) on the device of ``user_vectors``.
    """
    users, single = prepare_users(user_vectors)
    items = as_float_matrix(item_matrix, "item_matrix").to(users.device)
    if users.shape[1] != items.shape[1]:
        raise ValueError(f"user_vectors have dim {users.shape[1]} but item_matrix has dim {items.shape[1]}")
    if k < 0:
        raise ValueError(f"k must be >= 0, got {k}")
    indptr, indices = as_exclusion(exclude, users.shape[0], users.device)
    backend = backend or get_topk_backend()
    out_indices, out_scores = backend.score_topk(users, items, int(k), indptr, indices)
    return (out_indices[0], out_scores[0]) if single else (out_indices, out_scores)


def score_topk_compact(
    user_vectors: torch.Tensor | np.ndarray,
    compact: CompactItems,
    k: int,
    oversample: int = 4,
    exclude: Exclude = None,
    backend: TopKBackend | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Like :func:`score_topk`, scanning the int8 ``compact`` items first (approximate recall).

    Args:
        compact (CompactItems): From :func:`quantize_items`.
        oversample (int, optional): Candidates per user are ``k * oversample``; they are re-ranked
            with exact fp32 scores, so the returned order and scores are exact, only recall is not.
            (default: 4)

    The other arguments and the return value are those of :func:`score_topk`.
    """
    users, single = prepare_users(user_vectors)
    if users.shape[1] != compact.codes.shape[1]:
        raise ValueError(f"user_vectors have dim {users.shape[1]} but the items have dim {compact.codes.shape[1]}")
    if k < 0 or oversample < 1:
        raise ValueError(f"need k >= 0 and oversample >= 1, got k={k}, oversample={oversample}")
    indptr, indices = as_exclusion(exclude, users.shape[0], users.device)
    backend = backend or get_topk_backend()
    if compact.packed.device != users.device:
        compact = CompactItems(*(t.to(users.device) for t in (compact.codes, compact.scales, compact.items, compact.packed)))
    out_indices, out_scores = backend.score_topk_compact(users, compact, int(k), int(oversample), indptr, indices)
    return (out_indices[0], out_scores[0]) if single else (out_indices, out_scores)
