"""The plain-PyTorch top-k: the reference the C++ op is tested against, the fallback when it cannot be
built, and the masked top-k that offline evaluation ranks its score blocks with.

Rank order: a higher score first, the lower item index on equal scores; rows padded with item ``-1``
and score ``-inf`` when fewer than k items remain.
"""

from __future__ import annotations

import torch

from recsys.topk.quantize import quantize_users

# The torch path scores users in chunks of at most this many (user, item) pairs (64 MiB of fp32).
MAX_SCORES_PER_CHUNK = 1 << 24


def _mask_excluded(
    scores: torch.Tensor, exclude_indptr: torch.Tensor, exclude_indices: torch.Tensor, user_begin: int
) -> None:
    """Writes -inf over the excluded items of users [user_begin, user_begin + len(scores))."""
    user_end = user_begin + scores.shape[0]
    counts = exclude_indptr[user_begin + 1 : user_end + 1] - exclude_indptr[user_begin:user_end]
    rows = torch.repeat_interleave(torch.arange(scores.shape[0], device=scores.device), counts)
    if rows.numel():
        cols = exclude_indices[int(exclude_indptr[user_begin]) : int(exclude_indptr[user_end])]
        scores.index_put_((rows, cols), torch.tensor(float("-inf"), device=scores.device))


def _topk_rank_order(scores: torch.Tensor, keep: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``torch.topk`` of each row, made to follow the rank order (ties -> lower index).

    ``torch.topk`` makes no promise about ties, so the kept entries are re-sorted by (score desc,
    index asc). One extra entry per row tells where items tied with the k-th score did not all fit
    (the next best score equals it); only in those rows are the kept tied entries replaced by the
    lowest-index items of that score, which is what a full stable sort would keep. Scores with many
    ties (popularity counts) hit this on nearly every row, so it is vectorised, not a sort per row.
    """
    n_items = scores.shape[1]
    values, indices = torch.topk(scores, min(keep + 1, n_items), dim=1)
    next_best = values[:, keep] if n_items > keep else None
    values, indices = values[:, :keep], indices[:, :keep]
    by_index = indices.argsort(dim=1)
    values, indices = values.gather(1, by_index), indices.gather(1, by_index)
    by_score = values.argsort(dim=1, descending=True, stable=True)
    values, indices = values.gather(1, by_score), indices.gather(1, by_score)
    kth = values[:, -1:]
    if next_best is not None:
        redo = ((next_best == kth[:, 0]) & (kth[:, 0] > float("-inf"))).nonzero().flatten()
        if redo.numel():
            _refill_ties(scores[redo], values[redo], kth[redo], indices, redo)
    indices = indices.masked_fill(values == float("-inf"), -1)
    return indices, values


def _refill_ties(
    scores: torch.Tensor, values: torch.Tensor, kth: torch.Tensor, indices: torch.Tensor, rows: torch.Tensor
) -> None:
    """In ``indices[rows]``, replace the kept entries equal to ``kth`` with the lowest-index tied items.

    Those entries sit at the end of each sorted row (a NaN compares unequal and stays in front). The
    lowest tied indices come from one more ``torch.topk``, of ``-index`` where the score ties (exact
    in float32 below 2^24 items), which is far cheaper than a cumulative count over the row.
    """
    keep = values.shape[1]
    n_tied_kept = (values == kth).sum(dim=1)
    column = torch.arange(scores.shape[1], device=scores.device, dtype=torch.float32)
    key = torch.where(scores == kth, -column, torch.tensor(float("-inf"), device=scores.device))
    lowest = (-torch.topk(key, keep, dim=1).values).long()  # ascending tied columns
    slot = torch.arange(keep, device=scores.device)
    take = slot[None, :] < n_tied_kept[:, None]
    row, j = take.nonzero(as_tuple=True)
    indices[rows[row], keep - n_tied_kept[row] + j] = lowest[row, j]


def _padded_outputs(n_users: int, k: int, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """All-padding results (index -1, score -inf) that the torch twins fill row by row."""
    return (
        torch.full((n_users, k), -1, dtype=torch.long, device=device),
        torch.full((n_users, k), float("-inf"), dtype=torch.float32, device=device),
    )


def masked_topk(
    scores: torch.Tensor,
    k: int,
    exclude_indptr: torch.Tensor,
    exclude_indices: torch.Tensor,
    user_begin: int = 0,
) -> tuple[torch.Tensor, torch.Tensor]:
    """The k best items of each row of a score block, excluded items skipped, in rank order.

    The one masked top-k of the project: the torch twins run it on each chunk of users they score, and
    :func:`recsys.evaluation.evaluate` on each block of model scores.

    Args:
        scores (torch.Tensor): ``float32 [n_rows, n_items]``; the excluded entries are overwritten
            with ``-inf`` in place.
        k (int): Items per row.
        exclude_indptr (torch.Tensor): ``int64`` CSR row pointers of the excluded items; row ``r`` of
            the block is row ``user_begin + r`` of this CSR.
        exclude_indices (torch.Tensor): ``int64`` excluded item indices.
        user_begin (int): CSR row of the block's first row. (default: 0)

    Returns:
        ``(indices int64 [n_rows, k], scores float32 [n_rows, k])``: higher score first, lower index
        on ties, padded with ``-1`` / ``-inf``. A NaN score ranks above every number (as in
        ``torch.topk``), so a caller can detect one in the result.
    """
    n_rows, n_items = scores.shape
    out_indices, out_scores = _padded_outputs(n_rows, k, scores.device)
    keep = min(k, n_items)
    if keep == 0 or n_rows == 0:
        return out_indices, out_scores
    _mask_excluded(scores, exclude_indptr, exclude_indices, user_begin)
    out_indices[:, :keep], out_scores[:, :keep] = _topk_rank_order(scores, keep)
    return out_indices, out_scores


def score_topk_torch(
    user_vectors: torch.Tensor,
    item_matrix: torch.Tensor,
    k: int,
    exclude_indptr: torch.Tensor,
    exclude_indices: torch.Tensor,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Plain-PyTorch twin of ``torch.ops.feedrec.score_topk`` (same arguments, same results).

    Args:
        user_vectors (torch.Tensor): ``float32 [n_users, dim]``.
        item_matrix (torch.Tensor): ``float32 [n_items, dim]``.
        k (int): Number of items per user.
        exclude_indptr (torch.Tensor): ``int64 [n_users + 1]``, CSR row pointers of excluded items.
        exclude_indices (torch.Tensor): ``int64 [nnz]``, excluded item indices.

    Returns:
        ``(indices int64 [n_users, k], scores float32 [n_users, k])`` in rank order, padded with
        ``-1`` / ``-inf``. Memory is bounded by scoring at most ``MAX_SCORES_PER_CHUNK`` pairs at once.
    """
    n_users, n_items = user_vectors.shape[0], item_matrix.shape[0]
    out_indices, out_scores = _padded_outputs(n_users, k, user_vectors.device)
    if min(k, n_items) == 0 or n_users == 0:
        return out_indices, out_scores
    chunk = max(1, MAX_SCORES_PER_CHUNK // n_items)
    for user_begin in range(0, n_users, chunk):
        user_end = min(n_users, user_begin + chunk)
        scores = user_vectors[user_begin:user_end] @ item_matrix.T
        out_indices[user_begin:user_end], out_scores[user_begin:user_end] = masked_topk(
            scores, k, exclude_indptr, exclude_indices, user_begin
        )
    return out_indices, out_scores


def score_topk_compact_torch(
    user_vectors: torch.Tensor,
    item_codes: torch.Tensor,
    item_scales: torch.Tensor,
    item_matrix: torch.Tensor,
    k: int,
    oversample: int,
    exclude_indptr: torch.Tensor,
    exclude_indices: torch.Tensor,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Plain-PyTorch twin of ``torch.ops.feedrec.score_topk_compact`` (same results, bit for bit).

    Takes the row-major ``item_codes`` (:attr:`CompactItems.codes`) where the op takes the packed
    layout. Picks ``k * oversample`` candidates per user, in rank order, by the approximate scores
    ``float(q . codes[i]) * scales[i]`` with ``q`` the user quantised by :func:`quantize_users`
    (integer dot products below 2^24, so the fp32 matmul is exact), then returns the top k of
    their exact fp32 scores in rank order.
    """
    if oversample < 1:
        raise ValueError(f"oversample must be >= 1, got {oversample}")
    n_users, n_items = user_vectors.shape[0], item_matrix.shape[0]
    out_indices, out_scores = _padded_outputs(n_users, k, user_vectors.device)
    keep = min(k, n_items)
    if keep == 0 or n_users == 0:
        return out_indices, out_scores
    n_candidates = min(k * oversample, n_items)
    codes = item_codes.to(torch.float32)
    quantised = quantize_users(user_vectors)
    chunk = max(1, MAX_SCORES_PER_CHUNK // n_items)
    for user_begin in range(0, n_users, chunk):
        users = user_vectors[user_begin : user_begin + chunk]
        approx = (quantised[user_begin : user_begin + chunk] @ codes.T) * item_scales[None, :]
        candidates, approx_values = masked_topk(approx, n_candidates, exclude_indptr, exclude_indices, user_begin)
        exact = torch.bmm(item_matrix[candidates], users[:, :, None])[:, :, 0]
        exact = exact.masked_fill(approx_values == float("-inf"), float("-inf"))
        # Rank order among candidates: sort by item index, then a stable sort by score.
        by_index = candidates.argsort(dim=1)
        candidates, exact = candidates.gather(1, by_index), exact.gather(1, by_index)
        by_score = exact.argsort(dim=1, descending=True, stable=True)[:, :keep]
        values, indices = exact.gather(1, by_score), candidates.gather(1, by_score)
        rows = slice(user_begin, user_begin + users.shape[0])
        out_indices[rows, :keep] = indices.masked_fill(values == float("-inf"), -1)
        out_scores[rows, :keep] = values
    return out_indices, out_scores
