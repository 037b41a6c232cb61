"""The two top-k implementations behind one interface, and the factory that picks one."""

from __future__ import annotations

import logging
import os
from pathlib import Path

import torch

from recsys.topk.build import build_extension
from recsys.topk.quantize import CompactItems
from recsys.topk.reference import score_topk_compact_torch, score_topk_torch

# One name for the log line whichever module of the package emits it (serving greps for it).
logger = logging.getLogger("recsys.topk")

BACKEND_ENV = "FEEDREC_TOPK_BACKEND"
BACKEND_CHOICES = ("auto", "cpp", "torch")


class TorchTopKBackend:
    """Plain PyTorch: :func:`score_topk_torch` / :func:`score_topk_compact_torch`, any device."""

    name = "torch"

    def score_topk(self, user_vectors, item_matrix, k, exclude_indptr, exclude_indices):
        return score_topk_torch(user_vectors, item_matrix, k, exclude_indptr, exclude_indices)

    def score_topk_compact(self, user_vectors, compact: CompactItems, k, oversample, exclude_indptr, exclude_indices):
        return score_topk_compact_torch(
            user_vectors, compact.codes, compact.scales, compact.items, k, oversample, exclude_indptr, exclude_indices
        )


class CppTopKBackend:
    """The compiled ``feedrec`` ops; devices without a kernel (e.g. CUDA on a CPU build) use torch."""

    name = "cpp"

    def __init__(self, library: Path):
        self.library = library
        self._torch = TorchTopKBackend()

    @staticmethod
    def _has_kernel(op: str, device: torch.device) -> bool:
        if device.type == "cpu":
            return True
        key = {"cuda": "CUDA"}.get(device.type)
        return key is not None and torch._C._dispatch_has_kernel_for_dispatch_key(f"feedrec::{op}", key)

    def score_topk(self, user_vectors, item_matrix, k, exclude_indptr, exclude_indices):
        if not self._has_kernel("score_topk", user_vectors.device):
            return self._torch.score_topk(user_vectors, item_matrix, k, exclude_indptr, exclude_indices)
        return torch.ops.feedrec.score_topk(user_vectors, item_matrix, k, exclude_indptr, exclude_indices)

    def score_topk_compact(self, user_vectors, compact: CompactItems, k, oversample, exclude_indptr, exclude_indices):
        if not self._has_kernel("score_topk_compact", user_vectors.device):
            return self._torch.score_topk_compact(user_vectors, compact, k, oversample, exclude_indptr, exclude_indices)
        return torch.ops.feedrec.score_topk_compact(
            user_vectors, compact.packed, compact.scales, compact.items, k, oversample, exclude_indptr, exclude_indices
        )

    @property
    def compact_kernel(self) -> str:
        """The int8 scan kernel the CPU op uses here: ``"avx512-vnni"`` or ``"portable"``."""
        return torch.ops.feedrec.compact_kernel()


TopKBackend = TorchTopKBackend | CppTopKBackend
_backends: dict[str, TopKBackend] = {}


def get_topk_backend(prefer: str = "auto") -> TopKBackend:
    """The top-k implementation to use; logs one line naming it the first time it is picked.

    Args:
        prefer (str, optional): ``"auto"`` (the C++ op, or torch with a warning if it cannot be
            built), ``"cpp"`` (the C++ op; raises ``RuntimeError`` if it cannot be built) or
            ``"torch"``. The ``FEEDREC_TOPK_BACKEND`` environment variable overrides it.
            (default: ``"auto"``)

    Returns:
        An object with ``.name`` (``"cpp"`` or ``"torch"``), ``.score_topk(...)`` and
        ``.score_topk_compact(users, compact, k, oversample, indptr, indices)`` (a
        :class:`CompactItems`; the C++ op reads its packed codes, the torch twin its row-major codes).
    """
    choice = os.environ.get(BACKEND_ENV) or prefer
    if choice not in BACKEND_CHOICES:
        source = BACKEND_ENV if os.environ.get(BACKEND_ENV) else "prefer"
        raise ValueError(f"{source}={choice!r}: expected one of {', '.join(BACKEND_CHOICES)}")
    if choice in _backends:
        return _backends[choice]
    backend: TopKBackend
    if choice == "torch":
        backend = TorchTopKBackend()
        logger.info("top-k backend: torch (score_topk_torch)")
    else:
        try:
            library = build_extension()
        except Exception as error:  # a compiler failure must not take serving down
            message = (str(error).strip().splitlines() or [type(error).__name__])[-1]
            if choice == "cpp":
                raise RuntimeError(f"top-k backend 'cpp' requested but the extension failed to build: {message}") from error
            logger.warning("top-k backend: torch (C++ extension failed to build: %s)", message)
            backend = TorchTopKBackend()
        else:
            backend = CppTopKBackend(library)
            logger.info(
                "top-k backend: cpp (torch.ops.feedrec.score_topk from %s; int8 scan kernel: %s)",
                library,
                backend.compact_kernel,
            )
    _backends[choice] = backend
    return backend
