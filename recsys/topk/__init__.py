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

Modules (everything public is importable from ``recsys.topk``):

* :mod:`~recsys.topk.scoring`: :func:`score_topk`, :func:`score_topk_compact` (the entry points);
* :mod:`~recsys.topk.backends`: the two backends and :func:`get_topk_backend`, the factory;
* :mod:`~recsys.topk.reference`: the plain-torch twins and :func:`masked_topk`, the one masked top-k
  (offline evaluation uses it too);
* :mod:`~recsys.topk.quantize`: :class:`CompactItems`, :func:`quantize_items`, :func:`quantize_users`;
* :mod:`~recsys.topk.build`: compiling and caching the extension; :mod:`~recsys.topk.fakes`: its
  fake kernels; :mod:`~recsys.topk.cli`: ``python -m recsys.topk build | info``.
"""

from recsys.topk.backends import (
    BACKEND_CHOICES,
    BACKEND_ENV,
    CppTopKBackend,
    TopKBackend,
    TorchTopKBackend,
    get_topk_backend,
)
from recsys.topk.build import CACHE_ENV, CPP_DIR, EXTENSION_NAME, NATIVE_ENV, build_extension, cache_root
from recsys.topk.cli import main
from recsys.topk.inputs import Exclude
from recsys.topk.quantize import PACK_LANES, CompactItems, pack_codes, quantize_items, quantize_users
from recsys.topk.reference import (
    MAX_SCORES_PER_CHUNK,
    masked_topk,
    score_topk_compact_torch,
    score_topk_torch,
)
from recsys.topk.scoring import score_topk, score_topk_compact

__all__ = [
    "BACKEND_CHOICES",
    "BACKEND_ENV",
    "CACHE_ENV",
    "CPP_DIR",
    "EXTENSION_NAME",
    "MAX_SCORES_PER_CHUNK",
    "NATIVE_ENV",
    "PACK_LANES",
    "CompactItems",
    "CppTopKBackend",
    "Exclude",
    "TopKBackend",
    "TorchTopKBackend",
    "build_extension",
    "cache_root",
    "get_topk_backend",
    "main",
    "masked_topk",
    "pack_codes",
    "quantize_items",
    "quantize_users",
    "score_topk",
    "score_topk_compact",
    "score_topk_compact_torch",
    "score_topk_torch",
]
