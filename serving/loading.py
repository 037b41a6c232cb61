"""Loading serving bundles into memory, and the atomic store of the models being served.

A reference is a bundle directory or an MLflow registry reference (``gnn@champion``, ``mf/3``),
resolved by ``recsys.tracking.resolve_model_ref``. A plain training bundle is exported once to
``FEEDREC_EXPORT_DIR`` (:func:`serving.export.export_bundle`). Loading then

1. verifies every checksum of the manifest (``recsys.bundle.verify_bundle``),
2. reads ``serving.safetensors``, the id maps (parquet) and the ONNX graphs (no pickle anywhere),
3. runs a parity smoke test, ONNX vs the PyTorch model rebuilt from the bundle's safetensors, on a
   few known and folded-in users,

and refuses the bundle with a :class:`~recsys.bundle.BundleError` if any step fails: every failure
to load, whatever raised it (a malformed manifest, a graph ONNX Runtime rejects, ...), is a refusal
of that model, never a crash of the service (:meth:`ModelStore.load_initial` serves the others,
:meth:`ModelStore.reload` keeps the old set). The hot path only touches precomputed numpy/torch
arrays and dicts built here.

A bundle of kind ``feed-ranker`` is not an encoder + top-k model: it is loaded by
:func:`serving.feed_model.load_feed_model` (parity-checked ranker, pipeline over ``FEEDREC_DATA_DIR``)
and refused the same way.
"""

from __future__ import annotations

import functools
import hashlib
import logging
import threading
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import load_file

from recsys.bundle import BundleError, read_ids, verify_bundle
from recsys.topk import CompactItems, quantize_items
from serving.backends import OnnxEncoder, TorchEncoder, pad_batch, resolve_providers
from serving.export import FOLD_IN, SERVING_TENSORS, USER_ENCODER, check_parity, export_bundle
from serving.feed_model import FEED_KIND, load_feed_model
from serving.refs import resolve_ref
from serving.settings import ServingSettings

log = logging.getLogger("serving.loading")


@dataclass(eq=False)
class ServingModel:
    """One loaded model: encoder sessions plus the arrays the request path needs."""

    name: str
    ref: str
    path: Path
    kind: str
    version: str
    manifest: dict[str, Any]
    encoder: Any
    user_lookup: dict[str, int]
    item_lookup: dict[str, int]
    item_ids: list[Any]
    item_matrix: torch.Tensor
    seen_indptr: np.ndarray
    seen_indices: np.ndarray
    popular_items: np.ndarray
    popular_scores: np.ndarray
    max_recent: int
    max_followees: int
    blank_users: np.ndarray | None = None
    #: int8 copy of item_matrix for settings.topk_mode == "compact" (None: exact fp32 scan)
    compact: CompactItems | None = None
    topk_oversample: int = 4
    loaded_at: float = field(default_factory=time.time)

    @property
    def provider(self) -> str:
        return self.encoder.provider

    @property
    def topk_mode(self) -> str:
        """``"compact"`` (int8 scan + exact re-rank, settings.topk_mode) or ``"exact"``."""
        return "compact" if self.compact is not None else "exact"

    @property
    def has_fold_in(self) -> bool:
        return bool(self.encoder.has_fold_in)

    @property
    def n_items(self) -> int:
        return len(self.item_ids)

    def user_index(self, user_id: str) -> int:
        return self.user_lookup.get(user_id, -1)

    def is_blank(self, user_idx: int) -> bool:
        """A known user whose trained vector is all zeros (e.g. ALS for a user with no training
        positives): every score would be 0, so the request must take the cold-start path."""
        return self.blank_users is not None and bool(self.blank_users[user_idx])

    def item_indices(self, item_ids: Iterable[str], limit: int) -> list[int]:
        """Known items of ``item_ids`` as dense indices, de-duplicated, first ``limit`` kept."""
        return _known_indices(self.item_lookup, item_ids, limit)

    def user_indices(self, user_ids: Iterable[str], limit: int) -> list[int]:
        """Known users of ``user_ids`` as dense indices, de-duplicated, first ``limit`` kept."""
        return _known_indices(self.user_lookup, user_ids, limit)

    def seen_row(self, user_idx: int) -> np.ndarray:
        return self.seen_indices[self.seen_indptr[user_idx] : self.seen_indptr[user_idx + 1]]

    def encode_known(self, user_idx: int) -> np.ndarray:
        return self.encoder.encode_known(np.asarray([user_idx], dtype=np.int64))[0]

    def encode_new(self, recent: list[int], followees: list[int]) -> np.ndarray:
        item_idx, item_mask = pad_batch([recent])
        fol_idx, fol_mask = pad_batch([followees])
        return self.encoder.encode_new(item_idx, item_mask, fol_idx, fol_mask)[0]

    def describe(self) -> dict[str, Any]:
        serving = self.manifest.get("serving", {})
        return {
            "name": self.name, "ref": self.ref, "path": str(self.path), "kind": self.kind,
            "version": self.version, "provider": self.provider, "dim": int(self.item_matrix.shape[1]),
            "topk": f"compact int8 x{self.topk_oversample}" if self.topk_mode == "compact" else "exact fp32",
            "n_users": len(self.user_lookup), "n_items": self.n_items,
            "fold_in": serving.get("fold_in_method"), "parity": serving.get("parity"),
            "metrics": self.manifest.get("metrics", {}), "data_fingerprint": self.manifest.get("data_fingerprint"),
            "loaded_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(self.loaded_at)),
        }


def _id_key(value: Any) -> str:
    return str(value)


@functools.lru_cache(maxsize=1)
def _exporter_digest() -> str:
    """Short hash of the code that turns a model into ONNX graphs (export, fold-in, model math)."""
    import recsys.models.gnn
    import recsys.models.mf
    import serving.export
    import serving.fold_in

    h = hashlib.sha256()
    for module in (serving.export, serving.fold_in, recsys.models.gnn, recsys.models.mf):
        h.update(Path(module.__file__).read_bytes())
    return h.hexdigest()[:8]


def _serving_path(path: Path, manifest: dict[str, Any], export_dir: Path) -> Path:
    """``path`` itself when it is a serving bundle, else its export under ``export_dir``."""
    if "serving" in manifest:
        return path
    digest = manifest["files"].get("weights.safetensors", "")[:10]
    # The exporter's own code is part of the key: an export made by an older fold-in graph would
    # fail the parity check against today's model, so it must not be reused.
    out = export_dir / f"{manifest['kind']}-{manifest.get('version', 'v')}-{digest}-{_exporter_digest()}"
    if out.is_dir():
        try:
            if "serving" in verify_bundle(out):
                return out
        except BundleError:
            pass  # stale or corrupt export: redo it
    log.info("exporting %s to %s (first load of a training bundle)", path, out)
    return export_bundle(path, out, parity_users=200)


def _serving_manifest(path: Path) -> dict[str, Any]:
    """The verified manifest of a serving bundle, with the ``serving`` section the loader reads."""
    manifest = verify_bundle(path)
    serving = manifest.get("serving")
    if not isinstance(serving, dict):
        raise BundleError(f"{path}: manifest field 'serving' must be an object (export the bundle with "
                          "python -m serving.export)")  # fmt: skip
    for required in (USER_ENCODER, SERVING_TENSORS):
        if required not in manifest["files"]:
            raise BundleError(f"{path}: serving manifest does not list {required}")
    return manifest


def load_serving_model(name: str, ref: str, settings: ServingSettings) -> ServingModel:
    """Resolve, verify, load and parity-check one model (see the module docstring).

    Raises:
        recsys.bundle.BundleError: The bundle is refused; the message says why. Any other error while
            loading is turned into one too (the cause is chained and logged with its traceback).
    """
    try:
        return _load_serving_model(name, ref, settings)
    except BundleError:
        raise
    except (FileNotFoundError, OSError, ValueError, RuntimeError) as exc:
        raise BundleError(f"model {name} ({ref}): {exc}") from exc
    except Exception as exc:  # noqa: BLE001 - a bad bundle must never take the service down
        log.exception("model %s (%s): unexpected error while loading", name, ref)
        raise BundleError(f"model {name} ({ref}): cannot be loaded ({type(exc).__name__}: {exc})") from exc


def _load_serving_model(name: str, ref: str, settings: ServingSettings) -> Any:
    path = resolve_ref(ref)
    manifest = verify_bundle(path)
    if manifest.get("kind") == FEED_KIND:  # the feed: candidates -> features -> ONNX ranker -> slate
        return load_feed_model(name, ref, path, settings.data_dir, redis_client=_feed_redis(settings),
                               onnx_threads=max(settings.onnx_threads, 1), breaker_reset_s=settings.breaker_reset_s)
    path = _serving_path(path, manifest, settings.export_dir)
    manifest = _serving_manifest(path)
    serving = manifest["serving"]
    tensors = load_file(str(path / SERVING_TENSORS))
    user_ids = read_ids(path / "user_ids.parquet")
    item_ids = read_ids(path / "item_ids.parquet")
    fold_in = path / FOLD_IN if serving.get("fold_in") else None
    if settings.encoder == "torch":
        from recsys.models.base import Recommender

        encoder: Any = TorchEncoder(Recommender.load(path))
    else:
        providers, _ = resolve_providers(settings.providers, settings.trt_cache_dir, settings.trt_fp16)
        encoder = OnnxEncoder(path / USER_ENCODER, fold_in, providers, settings.onnx_threads)
    if settings.parity_users > 0 and settings.encoder != "torch":
        from recsys.models.base import Recommender

        reports = check_parity(Recommender.load(path), encoder, settings.parity_users,
                               max_recent=settings.max_recent, seed=0)
        for group, report in reports.items():
            if not report.ok(tol=settings.parity_tol):
                raise BundleError(f"{path}: parity smoke test failed for {group} users: {report}")
    digest = manifest["files"][USER_ENCODER][:8]
    model = ServingModel(
        name=name, ref=ref, path=path, kind=manifest["kind"], version=f"{manifest['kind']}-{manifest.get('version')}-{digest}",
        manifest=manifest, encoder=encoder,
        user_lookup={_id_key(v): i for i, v in enumerate(user_ids.tolist())},
        item_lookup={_id_key(v): i for i, v in enumerate(item_ids.tolist())},
        item_ids=item_ids.tolist(),
        item_matrix=tensors["item_matrix"].float().contiguous(),
        seen_indptr=tensors["seen_indptr"].numpy(), seen_indices=tensors["seen_indices"].numpy(),
        popular_items=tensors["popular_items"].numpy(), popular_scores=tensors["popular_scores"].numpy(),
        max_recent=settings.max_recent, max_followees=settings.max_followees,
    )
    model.blank_users = _blank_users(encoder, len(user_ids))
    if settings.topk_mode == "compact":
        model.compact = quantize_items(model.item_matrix)
        model.topk_oversample = settings.topk_oversample
    log.info("model %s: %s from %s on %s (%d users without a trained vector)", name, model.version, path,
             model.provider, int(model.blank_users.sum()))
    return model


def _feed_redis(settings: ServingSettings) -> Any:
    """A Redis client for the feed's shared event stream (``REDIS_URL``), or ``None`` (in-process state)."""
    if not settings.redis_url:
        return None
    import redis
    from redis.backoff import NoBackoff
    from redis.retry import Retry

    return redis.Redis.from_url(settings.redis_url, socket_timeout=settings.redis_timeout_s,
                                socket_connect_timeout=settings.redis_timeout_s, retry=Retry(NoBackoff(), 0))


def _known_indices(lookup: Mapping[str, int], ids: Iterable[str], limit: int) -> list[int]:
    out: dict[int, None] = {}  # an ordered set: first occurrence wins
    for external in ids:
        idx = lookup.get(external)
        if idx is not None:
            out[idx] = None
            if len(out) >= limit:
                break
    return list(out)


def _blank_users(encoder: Any, n_users: int, chunk: int = 65_536) -> np.ndarray:
    """Mask of known users whose encoded vector is exactly zero (computed once at load, in chunks)."""
    blank = np.zeros(n_users, dtype=bool)
    for start in range(0, n_users, chunk):
        idx = np.arange(start, min(start + chunk, n_users), dtype=np.int64)
        vectors = np.asarray(encoder.encode_known(idx))
        blank[start : start + len(idx)] = ~np.any(vectors != 0, axis=1)
    return blank


class ModelStore:
    """The models being served; replaced as a whole, so a request sees one consistent set.

    ``reload`` loads every requested model first and swaps only when all succeeded: a bundle that
    fails its checksums or parity test is refused and the old models keep serving.
    """

    def __init__(self, settings: ServingSettings) -> None:
        self.settings = settings
        self.refs: dict[str, str] = dict(settings.models)
        self._models: Mapping[str, ServingModel] = {}
        self.errors: dict[str, str] = {}
        self._reload_lock = threading.Lock()

    @property
    def models(self) -> Mapping[str, ServingModel]:
        return self._models

    def get(self, name: str) -> ServingModel | None:
        return self._models.get(name)

    def load_initial(self) -> None:
        """Load every configured model; failures are logged and kept in ``errors`` (``/readyz``)."""
        loaded: dict[str, ServingModel] = {}
        for name, ref in self.refs.items():
            try:
                loaded[name] = load_serving_model(name, ref, self.settings)
            except BundleError as exc:
                self.errors[name] = str(exc)
                log.error("model %s (%s) not loaded: %s", name, ref, exc)
        self._models = loaded

    def reload(self, refs: Mapping[str, str] | None = None) -> dict[str, ServingModel]:
        """Load ``refs`` (default: the configured ones again) and swap them in atomically.

        Raises:
            recsys.bundle.BundleError: A model was refused; nothing was swapped.
        """
        with self._reload_lock:
            wanted = {**self.refs, **dict(refs or {})}
            fresh = {name: load_serving_model(name, ref, self.settings) for name, ref in wanted.items()}
            self._models = fresh  # one reference assignment: atomic for concurrent readers
            self.refs = wanted
            self.errors = {}
            return fresh
