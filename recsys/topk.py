"""Top-k item scoring with seen items excluded: the hot path of serving and evaluation.

For each user vector ``u`` the k items with the highest ``u . item_matrix[i]`` are returned, skipping
the items listed for that user in a CSR exclusion list (never a dense mask).

Rank order (identical in every backend, so fp32 results agree exactly): a higher score ranks first;
on equal scores the **lower item index** ranks first. When fewer than k items remain after
exclusion the row is padded with index ``-1`` and score ``-inf``. Scores must be finite: an item
whose score is ``-inf`` counts as unavailable, and NaN scores give unspecified results.

Backends, picked by :func:`get_topk_backend`:

* ``cpp``: the LibTorch extension in ``cpp/`` (ops ``torch.ops.feedrec.score_topk`` and
  ``torch.ops.feedrec.score_topk_compact``), compiled with ``torch.utils.cpp_extension`` on first
  use into ``~/.cache/feedrec/torch_extensions/<hash of sources, flags and torch version>/`` so
  it is rebuilt only when a source changes. Prebuild it with ``python -m recsys.topk build``.
* ``torch``: :func:`score_topk_torch`, plain PyTorch (GEMM per user chunk, ``index_put_`` of
  -inf, ``torch.topk`` plus a tie fix-up). It is the reference the C++ op is tested against and the
  fallback when the extension cannot be built.

Environment:

* ``FEEDREC_TOPK_BACKEND`` = ``auto`` | ``cpp`` | ``torch`` overrides ``prefer``.
* ``FEEDREC_TOPK_ISA=portable`` makes the compact op use its portable int8 kernel even where the
  CPU has AVX-512 VNNI (read per call; the results are bit-identical, only slower).
* ``FEEDREC_TOPK_NATIVE=1`` adds ``-march=native`` to the build (opt-in: such a build must not be
  copied to another machine; it gets its own cache directory).
* ``FEEDREC_EXTENSIONS_DIR`` moves the build cache (default ``$XDG_CACHE_HOME/feedrec/torch_extensions``).

Example::

    from recsys.topk import score_topk
    indices, scores = score_topk(user_vectors, item_matrix, k=20, exclude=seen_csr)
"""

from __future__ import annotations

import argparse
import hashlib
import logging
import os
import platform
import sys
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

logger = logging.getLogger(__name__)

CPP_DIR = Path(__file__).resolve().parent.parent / "cpp"
EXTENSION_NAME = "feedrec_topk"
BACKEND_ENV = "FEEDREC_TOPK_BACKEND"
NATIVE_ENV = "FEEDREC_TOPK_NATIVE"
CACHE_ENV = "FEEDREC_EXTENSIONS_DIR"
BACKEND_CHOICES = ("auto", "cpp", "torch")
# The torch path scores users in chunks of at most this many (user, item) pairs (64 MiB of fp32).
MAX_SCORES_PER_CHUNK = 1 << 24

Exclude = Any  # None | scipy.sparse CSR [n_users, >= n_items] | (indptr, indices)


# --------------------------------------------------------------------------------------------
# Compact (int8) item matrix
# --------------------------------------------------------------------------------------------


# The int8 scan works on blocks of this many items (one AVX-512 register of int32 lanes).
PACK_LANES = 16


@dataclass(frozen=True)
class CompactItems:
    """An int8 copy of an item matrix for a fast candidate scan, plus the fp32 rows to re-rank.

    Args:
        codes (torch.Tensor): ``int8 [n_items, dim]``, ``codes[i] * scales[i] ~= items[i]``.
        scales (torch.Tensor): ``float32 [n_items]``, per-row scale (``max |items[i]| / 127``).
        items (torch.Tensor): ``float32 [n_items, dim]``, the exact rows used for the re-rank.
        packed (torch.Tensor): ``uint8 [ceil(n_items / 16), ceil(dim / 4), 16, 4]``, the codes laid
            out for the VNNI dot product of the C++ op: ``packed[b, g, l, c] = codes[16 b + l, 4 g + c]
            + 128`` (zero codes pad the last block and group). Built by :func:`quantize_items`.
    """

    codes: torch.Tensor
    scales: torch.Tensor
    items: torch.Tensor
    packed: torch.Tensor

    @property
    def nbytes(self) -> int:
        """Bytes the int8 scan reads (packed codes and scales)."""
        return self.packed.numel() + self.scales.numel() * 4


def pack_codes(codes: torch.Tensor) -> torch.Tensor:
    """``int8 [n, d]`` codes to the ``uint8 [ceil(n/16), ceil(d/4), 16, 4]`` layout of :class:`CompactItems`."""
    n, d = codes.shape
    blocks, groups = -(-n // PACK_LANES), -(-d // 4)
    padded = torch.zeros((blocks * PACK_LANES, groups * 4), dtype=torch.int16)
    padded[:n, :d] = codes.to(torch.int16)
    shifted = (padded + 128).to(torch.uint8)
    return shifted.view(blocks, PACK_LANES, groups, 4).permute(0, 2, 1, 3).contiguous()


def quantize_items(item_matrix: torch.Tensor | np.ndarray) -> CompactItems:
    """Symmetric per-row int8 quantisation of ``item_matrix`` (``[n_items, dim]``, any float)."""
    items = _as_float_matrix(item_matrix, "item_matrix")
    max_abs = items.abs().amax(dim=1) if items.shape[1] > 0 else items.new_zeros(items.shape[0])
    scales = torch.where(max_abs > 0, max_abs / 127.0, torch.ones_like(max_abs))
    codes = torch.round(items / scales[:, None]).clamp_(-127, 127).to(torch.int8).contiguous()
    return CompactItems(codes=codes, scales=scales.contiguous(), items=items, packed=pack_codes(codes))


def quantize_users(user_vectors: torch.Tensor) -> torch.Tensor:
    """Per-row symmetric int8 quantisation of users as the compact op does it, as float32 integers.

    ``round(u * (127 / max|u|))`` (a zero row stays zero): the same fp32 operations as the C++
    kernel, so the twin's approximate scores are bit-identical to the op's.
    """
    max_abs = user_vectors.abs().amax(dim=1, keepdim=True)
    # A true division (``127.0 / tensor`` would be a reciprocal times 127, rounded differently).
    inv = torch.where(max_abs > 0, torch.full_like(max_abs, 127.0) / max_abs, torch.zeros_like(max_abs))
    return torch.round(user_vectors * inv).clamp_(-127, 127)


# --------------------------------------------------------------------------------------------
# Torch reference / fallback
# --------------------------------------------------------------------------------------------


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
    index asc), and the rare rows where items tied with the k-th score did not all fit are redone
    with a full stable sort (which keeps the lower index first).
    """
    values, indices = torch.topk(scores, keep, dim=1)
    by_index = indices.argsort(dim=1)
    values, indices = values.gather(1, by_index), indices.gather(1, by_index)
    by_score = values.argsort(dim=1, descending=True, stable=True)
    values, indices = values.gather(1, by_score), indices.gather(1, by_score)
    kth = values[:, -1:]
    tied_total = (scores == kth).sum(dim=1)
    tied_kept = (values == kth).sum(dim=1)
    redo = ((tied_total > tied_kept) & (kth[:, 0] > float("-inf"))).nonzero().flatten()
    for row in redo.tolist():
        row_values, row_indices = torch.sort(scores[row], descending=True, stable=True)
        values[row], indices[row] = row_values[:keep], row_indices[:keep]
    indices = indices.masked_fill(values == float("-inf"), -1)
    return indices, values


def _padded_outputs(n_users: int, k: int, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """All-padding results (index -1, score -inf) that the torch twins fill row by row."""
    return (
        torch.full((n_users, k), -1, dtype=torch.long, device=device),
        torch.full((n_users, k), float("-inf"), dtype=torch.float32, device=device),
    )


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
    keep = min(k, n_items)
    if keep == 0 or n_users == 0:
        return out_indices, out_scores
    chunk = max(1, MAX_SCORES_PER_CHUNK // n_items)
    for user_begin in range(0, n_users, chunk):
        user_end = min(n_users, user_begin + chunk)
        scores = user_vectors[user_begin:user_end] @ item_matrix.T
        _mask_excluded(scores, exclude_indptr, exclude_indices, user_begin)
        indices, values = _topk_rank_order(scores, keep)
        out_indices[user_begin:user_end, :keep] = indices
        out_scores[user_begin:user_end, :keep] = values
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
        _mask_excluded(approx, exclude_indptr, exclude_indices, user_begin)
        candidates, approx_values = _topk_rank_order(approx, n_candidates)
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


# --------------------------------------------------------------------------------------------
# The C++ extension: build cache and loading
# --------------------------------------------------------------------------------------------

_load_lock = threading.Lock()
_loaded_library: Path | None = None


def _cache_root() -> Path:
    if os.environ.get(CACHE_ENV):
        return Path(os.environ[CACHE_ENV]).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(xdg) / "feedrec" / "torch_extensions"


def _with_cuda() -> bool:
    from torch.utils import cpp_extension

    return torch.cuda.is_available() and cpp_extension.CUDA_HOME is not None


def _build_spec() -> tuple[list[Path], list[str], bool, Path]:
    """Sources, C++ flags, whether CUDA is compiled, and the cache directory keyed by all of them."""
    with_cuda = _with_cuda()
    sources = [CPP_DIR / "topk_ops.cpp", CPP_DIR / "topk_cpu.cpp"]
    if with_cuda:
        sources.append(CPP_DIR / "topk_cuda.cu")
    # -ffp-contract=fast lets the lane-accumulator dot loops use FMA (ISO C++ mode turns it off).
    # -fopenmp: at::parallel_for is an inline "#pragma omp parallel" in the ATen headers; without
    # it the op silently ran on one thread. Only compiled with it, not linked: the GOMP symbols then
    # resolve to the libgomp torch itself loads (libtorch_cpu's dependency), one OpenMP runtime.
    cflags = ["-O3", "-ffp-contract=fast", "-fopenmp"]
    if os.environ.get(NATIVE_ENV, "") not in ("", "0"):
        cflags += ["-march=native", "-DFEEDREC_NATIVE"]
    digest = hashlib.sha256()
    for part in (torch.__version__, sys.implementation.cache_tag, platform.machine(), " ".join(cflags), str(with_cuda)):
        digest.update(part.encode() + b"\0")
    for path in sorted(CPP_DIR.glob("*")):
        if path.suffix in (".cpp", ".cu", ".h"):
            digest.update(path.name.encode() + b"\0" + path.read_bytes() + b"\0")
    return sources, cflags, with_cuda, _cache_root() / digest.hexdigest()[:20]


def build_extension(verbose: bool = False) -> Path:
    """Compiles (if not cached) and loads the extension into this process; returns the ``.so`` path.

    Prints one line to stderr when it actually compiles. Raises whatever the compiler raised.
    """
    global _loaded_library
    with _load_lock:
        if _loaded_library is not None:
            return _loaded_library
        sources, cflags, with_cuda, build_dir = _build_spec()
        library = build_dir / f"{EXTENSION_NAME}.so"
        # Written after a successful build: a .so without it may be half-linked by another process.
        marker = build_dir / "BUILD_OK"
        if marker.exists() and library.exists():
            torch.ops.load_library(str(library))
        else:
            from torch.utils import cpp_extension

            print(
                f"feedrec: compiling the top-k C++ extension into {build_dir} (once per source change, ~1 min)",
                file=sys.stderr,
                flush=True,
            )
            build_dir.mkdir(parents=True, exist_ok=True)
            cpp_extension.load(
                name=EXTENSION_NAME,
                sources=[str(s) for s in sources],
                extra_cflags=cflags,
                extra_cuda_cflags=["-O3"],
                extra_include_paths=[str(CPP_DIR)],
                build_directory=str(build_dir),
                with_cuda=with_cuda,
                is_python_module=False,
                verbose=verbose,
            )
            marker.write_text(f"torch {torch.__version__}\n")
        _register_fakes()
        _loaded_library = library
        return library


def _register_fakes() -> None:
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


# --------------------------------------------------------------------------------------------
# Backends
# --------------------------------------------------------------------------------------------


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


# --------------------------------------------------------------------------------------------
# Public API
# --------------------------------------------------------------------------------------------


def _as_float_matrix(x: torch.Tensor | np.ndarray, name: str) -> torch.Tensor:
    tensor = torch.from_numpy(np.asarray(x)) if not isinstance(x, torch.Tensor) else x
    if tensor.dim() != 2:
        raise ValueError(f"{name} must be 2-D, got shape {tuple(tensor.shape)}")
    return tensor.detach().to(torch.float32).contiguous()


def _as_exclusion(
    exclude: Exclude, n_users: int, device: torch.device
) -> tuple[torch.Tensor, torch.Tensor]:
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


def _prepare_users(user_vectors) -> tuple[torch.Tensor, bool]:
    tensor = torch.from_numpy(np.asarray(user_vectors)) if not isinstance(user_vectors, torch.Tensor) else user_vectors
    single = tensor.dim() == 1
    return _as_float_matrix(tensor[None] if single else tensor, "user_vectors"), single


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
    users, single = _prepare_users(user_vectors)
    items = _as_float_matrix(item_matrix, "item_matrix").to(users.device)
    if users.shape[1] != items.shape[1]:
        raise ValueError(f"user_vectors have dim {users.shape[1]} but item_matrix has dim {items.shape[1]}")
    if k < 0:
        raise ValueError(f"k must be >= 0, got {k}")
    indptr, indices = _as_exclusion(exclude, users.shape[0], users.device)
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
    users, single = _prepare_users(user_vectors)
    if users.shape[1] != compact.codes.shape[1]:
        raise ValueError(f"user_vectors have dim {users.shape[1]} but the items have dim {compact.codes.shape[1]}")
    if k < 0 or oversample < 1:
        raise ValueError(f"need k >= 0 and oversample >= 1, got k={k}, oversample={oversample}")
    indptr, indices = _as_exclusion(exclude, users.shape[0], users.device)
    backend = backend or get_topk_backend()
    if compact.packed.device != users.device:
        compact = CompactItems(*(t.to(users.device) for t in (compact.codes, compact.scales, compact.items, compact.packed)))
    out_indices, out_scores = backend.score_topk_compact(users, compact, int(k), int(oversample), indptr, indices)
    return (out_indices[0], out_scores[0]) if single else (out_indices, out_scores)


# --------------------------------------------------------------------------------------------
# CLI
# --------------------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    """``python -m recsys.topk build`` prebuilds the extension; ``info`` says which backend is used."""
    parser = argparse.ArgumentParser(prog="python -m recsys.topk", description=main.__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    build = sub.add_parser("build", help="compile the C++ top-k extension into the cache (no-op if cached)")
    build.add_argument("--verbose", action="store_true", help="show the compiler commands")
    sub.add_parser("info", help="print the backend get_topk_backend() picks and the cache directory")
    args = parser.parse_args(argv)
    # Use the importable module, not this __main__ copy, so the ops are registered only once.
    from recsys import topk

    if args.command == "build":
        try:
            library = topk.build_extension(verbose=args.verbose)
        except Exception as error:
            print(f"error: building the top-k extension failed: {error}", file=sys.stderr)
            return 1
        print(library)
        return 0
    backend = topk.get_topk_backend()
    kernel = f" int8_kernel={backend.compact_kernel}" if isinstance(backend, topk.CppTopKBackend) else ""
    print(f"backend={backend.name}{kernel} cache={topk._build_spec()[3]}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
