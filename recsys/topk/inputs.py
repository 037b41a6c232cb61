"""Argument checks and conversions shared by the public top-k functions (numpy or torch in, torch out)."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

Exclude = Any  # None | scipy.sparse CSR [n_users, >= n_items] | (indptr, indices)


def as_float_matrix(x: torch.Tensor | np.ndarray, name: str) -> torch.Tensor:
    """``x`` as a contiguous float32 2-D tensor (no gradient); ``ValueError`` naming ``name`` otherwise."""
    tensor = torch.from_numpy(np.asarray(x)) if not isinstance(x, torch.Tensor) else x
    if tensor.dim() != 2:
        raise ValueError(f"{name} must be 2-D, got shape {tuple(tensor.shape)}")
    return tensor.detach().to(torch.float32).contiguous()


def as_exclusion(
    exclude: Exclude, n_users: int, device: torch.device
) -> tuple[torch.Tensor, torch.Tensor]:
    """``exclude`` (``None``, a scipy CSR or ``(indptr, indices)``) as int64 ``(indptr, indices)`` tensors."""
    if exclude is None:
        indptr, indices = np.zeros(n_users + 1, dtype=np.int64), np.zeros(0, dtype=np.int64)
    elif isinstance(exclude, tuple):
        if len(exclude) != 2:
            raise ValueError("exclude as a tuple must be (indptr, indices)")
        indptr, indices = exclude
    else:
        import scipy.sparse as sp

        if not sp.issparse(exclude):
            raise TypeError(f"exclude must be None, a scipy.sparse matrix or (indptr, indices), got {type(exclude).__name__}")
        csr = exclude.tocsr()
        if csr.nnz and not np.all(csr.data):  # stored zeros are not exclusions
            csr = csr.copy()
            csr.eliminate_zeros()
        if csr.shape[0] != n_users:
            raise ValueError(f"exclude has {csr.shape[0]} rows but there are {n_users} users")
        indptr, indices = csr.indptr, csr.indices

    def to_long(a):
        t = a if isinstance(a, torch.Tensor) else torch.from_numpy(np.asarray(a, dtype=np.int64))
        return t.to(device=device, dtype=torch.long).contiguous()

    indptr_t, indices_t = to_long(indptr), to_long(indices)
    if indptr_t.dim() != 1 or indptr_t.shape[0] != n_users + 1:
        raise ValueError(f"exclude indptr must have length n_users + 1 = {n_users + 1}, got {tuple(indptr_t.shape)}")
    return indptr_t, indices_t


def prepare_users(user_vectors) -> tuple[torch.Tensor, bool]:
    """User vectors as a float32 ``[n_users, dim]`` tensor, and whether a single ``[dim]`` vector was given."""
    tensor = torch.from_numpy(np.asarray(user_vectors)) if not isinstance(user_vectors, torch.Tensor) else user_vectors
    single = tensor.dim() == 1
    return as_float_matrix(tensor[None] if single else tensor, "user_vectors"), single
