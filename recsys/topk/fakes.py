"""Fake (shape-only) kernels of the ``feedrec`` ops, so they trace under ``torch.compile`` / FakeTensor."""

from __future__ import annotations

import torch


def register_fakes() -> None:
    """Shape-only kernels so the ops work under torch.compile / FakeTensor (no data is read)."""

    @torch.library.register_fake("feedrec::score_topk")
    def _score_topk_fake(user_vectors, item_matrix, k, exclude_indptr, exclude_indices):
        torch._check(user_vectors.dim() == 2 and item_matrix.dim() == 2, lambda: "inputs must be 2-D")
        torch._check(user_vectors.shape[1] == item_matrix.shape[1], lambda: "dimension mismatch")
        n_users = user_vectors.shape[0]
        return (
            user_vectors.new_empty((n_users, k), dtype=torch.long),
            user_vectors.new_empty((n_users, k), dtype=torch.float32),
        )

    @torch.library.register_fake("feedrec::score_topk_compact")
    def _score_topk_compact_fake(
        user_vectors, item_packed, item_scales, item_matrix, k, oversample, exclude_indptr, exclude_indices
    ):
        torch._check(user_vectors.dim() == 2 and item_matrix.dim() == 2, lambda: "inputs must be 2-D")
        torch._check(item_packed.dim() == 4, lambda: "item_packed must be 4-D")
        torch._check(user_vectors.shape[1] == item_matrix.shape[1], lambda: "dimension mismatch")
        n_users = user_vectors.shape[0]
        return (
            user_vectors.new_empty((n_users, k), dtype=torch.long),
            user_vectors.new_empty((n_users, k), dtype=torch.float32),
        )

    @torch.library.register_fake("feedrec::csr_spmm")
    def _csr_spmm_fake(indptr, indices, values, x, base, alpha, beta, rows, mask):
        torch._check(x.dim() == 2, lambda: "x must be 2-D")
        n_out = rows.shape[0] if rows is not None else indptr.shape[0] - 1
        return x.new_empty((n_out, x.shape[1]))
