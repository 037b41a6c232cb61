"""User encoders behind one interface: ONNX Runtime (TensorRT, CUDA or CPU provider) or PyTorch.

An encoder turns a request into a user vector in one of two ways:

- ``encode_known(user_idx[n]) -> [n, dim]``: users the model trained on (a gather from the table of
  user vectors, exported as ``user_encoder.onnx``);
- ``encode_new(item_idx[n, L], item_mask[n, L], followee_idx[n, F], followee_mask[n, F]) -> [n, dim]``:
  fold-in of unknown users from padded neighbour indices (``fold_in.onnx``).

Providers are tried in the configured order (default TensorRT, CUDA, CPU). TensorRT goes through
ONNX Runtime's ``TensorrtExecutionProvider`` (fp16, engine cache directory); where it is missing the
start-up log says so in one line and the next provider is used. :class:`TorchEncoder` runs the
``Recommender`` itself and is the reference of the parity checks.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Protocol

import numpy as np
import torch

log = logging.getLogger("serving.backends")

ORT_PROVIDER_NAMES = {
    "tensorrt": "TensorrtExecutionProvider",
    "cuda": "CUDAExecutionProvider",
    "cpu": "CPUExecutionProvider",
}


class UserEncoder(Protocol):
    """What the request path needs from a model backend."""

    provider: str

    def encode_known(self, user_idx: np.ndarray) -> np.ndarray: ...

    def encode_new(
        self, item_idx: np.ndarray, item_mask: np.ndarray, followee_idx: np.ndarray, followee_mask: np.ndarray
    ) -> np.ndarray: ...


def tensorrt_available() -> tuple[bool, str]:
    """Whether ONNX Runtime can run TensorRT here, and if not, why (one short reason)."""
    import onnxruntime as ort

    if "TensorrtExecutionProvider" not in ort.get_available_providers():
        return False, f"onnxruntime {ort.__version__} was built without TensorrtExecutionProvider"
    try:
        import ctypes

        ctypes.CDLL("libnvinfer.so.10")
    except OSError:
        try:
            import tensorrt  # noqa: F401  (the pip wheel ships libnvinfer)
        except ImportError:
            return False, "libnvinfer (TensorRT runtime) is not installed"
    return True, ""


def resolve_providers(
    preferred: Sequence[str], trt_cache_dir: Path | None = None, trt_fp16: bool = True
) -> tuple[list[str | tuple[str, dict]], list[str]]:
    """ONNX Runtime provider list for ``preferred`` (``tensorrt``/``cuda``/``cpu``) and notes.

    Unavailable providers are dropped; each drop adds one line to the notes. CPU is always last.
    """
    import onnxruntime as ort

    available = set(ort.get_available_providers())
    providers: list[str | tuple[str, dict]] = []
    notes: list[str] = []
    for name in preferred:
        ort_name = ORT_PROVIDER_NAMES[name]
        if name == "tensorrt":
            ok, why = tensorrt_available()
            if not ok:
                notes.append(f"TensorRT unavailable ({why})")
                continue
            options = {"trt_fp16_enable": bool(trt_fp16), "trt_engine_cache_enable": True}
            if trt_cache_dir is not None:
                Path(trt_cache_dir).mkdir(parents=True, exist_ok=True)
                options["trt_engine_cache_path"] = str(trt_cache_dir)
            providers.append((ort_name, options))
        elif ort_name in available:
            providers.append(ort_name)
        else:
            notes.append(f"{ort_name} unavailable")
    if "CPUExecutionProvider" not in [p if isinstance(p, str) else p[0] for p in providers]:
        providers.append("CPUExecutionProvider")
    return providers, notes


def _session(path: Path, providers: list, threads: int):
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    opts.log_severity_level = 3  # provider fallbacks are reported by us, once
    return ort.InferenceSession(str(path), sess_options=opts, providers=providers)


class OnnxEncoder:
    """ONNX Runtime sessions of an exported bundle.

    Args:
        user_encoder (Path): ``user_encoder.onnx`` (input ``user_idx``, output ``user_vec``).
        fold_in (Path, optional): ``fold_in.onnx``; without it unknown users get popular items.
        providers (list): From :func:`resolve_providers`.
        threads (int): Intra-op threads per session (0 = ONNX Runtime's default).
    """

    def __init__(self, user_encoder: Path, fold_in: Path | None, providers: list, threads: int = 1) -> None:
        self._known = _session(user_encoder, providers, threads)
        self._fold = _session(fold_in, providers, threads) if fold_in is not None else None
        #: The provider that actually runs the graph (ONNX Runtime drops ones that fail to start).
        self.provider = self._known.get_providers()[0]
        self.has_fold_in = self._fold is not None
        # The exporter drops inputs a model ignores (followees, for MF): feed only declared ones.
        self._fold_inputs = {i.name for i in self._fold.get_inputs()} if self._fold is not None else set()

    def encode_known(self, user_idx: np.ndarray) -> np.ndarray:
        return self._known.run(None, {"user_idx": np.asarray(user_idx, dtype=np.int64)})[0]

    def encode_new(
        self, item_idx: np.ndarray, item_mask: np.ndarray, followee_idx: np.ndarray, followee_mask: np.ndarray
    ) -> np.ndarray:
        if self._fold is None:
            raise RuntimeError("this bundle has no fold-in graph")
        feeds = {
            "item_idx": item_idx, "item_mask": item_mask, "followee_idx": followee_idx,
            "followee_mask": followee_mask,
        }
        return self._fold.run(None, {k: v for k, v in feeds.items() if k in self._fold_inputs})[0]


class TorchEncoder:
    """The PyTorch model itself (reference for parity, and a backend without ONNX).

    Args:
        model: A fitted :class:`recsys.models.base.Recommender`.
    """

    provider = "torch"
    has_fold_in = True

    def __init__(self, model) -> None:
        self.model = model

    @torch.no_grad()
    def encode_known(self, user_idx: np.ndarray) -> np.ndarray:
        return self.model.user_vectors(np.asarray(user_idx, dtype=np.int64)).float().numpy()

    @torch.no_grad()
    def encode_new(
        self, item_idx: np.ndarray, item_mask: np.ndarray, followee_idx: np.ndarray, followee_mask: np.ndarray
    ) -> np.ndarray:
        rows = []
        for items, imask, fols, fmask in zip(item_idx, item_mask, followee_idx, followee_mask):
            recent = items[imask > 0].tolist()
            followees = fols[fmask > 0].tolist()
            rows.append(self.model.fold_in(recent, followees).float().reshape(-1))
        return torch.stack(rows).numpy()


def pad_batch(rows: Sequence[Sequence[int]], min_len: int = 1) -> tuple[np.ndarray, np.ndarray]:
    """Ragged index lists -> ``(idx[n, L] int64, mask[n, L] float32)``; padding index 0, mask 0."""
    width = max([min_len, *(len(r) for r in rows)])
    idx = np.zeros((len(rows), width), dtype=np.int64)
    mask = np.zeros((len(rows), width), dtype=np.float32)
    for i, r in enumerate(rows):
        idx[i, : len(r)] = r
        mask[i, : len(r)] = 1.0
    return idx, mask
