"""The one interface every recommender implements (popular, random, ALS, BPR, GNN).

Every model in feedrec is a *two-tower scorer*: a user vector (from the trained user table, or
folded in from a new user's recent items and followees) dotted with an item matrix. That one shape
lets the same code evaluate every model with full ranking, export every model to the same serving
bundle (user encoder + item matrix), and use the same C++ top-k op online. Popularity is the 1-d
case (user vector ``[1]``, item vector ``[log-popularity]``).

Subclasses implement ``fit``, ``user_vectors``, ``item_vectors``, ``fold_in``, and the two state
hooks ``_state``/``_from_state``; ``recommend``, ``recommend_many``, ``save`` and ``load`` come
from here.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from pathlib import Path
from typing import Any, ClassVar, Self

import numpy as np
import scipy.sparse as sp
import torch

from recsys.bundle import load_bundle, save_bundle
from recsys.data.dataset import Dataset, IdMap

#: Registry kind -> class, filled by ``__init_subclass__`` so ``Recommender.load`` finds the class.
MODEL_KINDS: dict[str, type[Recommender]] = {}


class Recommender(ABC):
    """Base class of all recommenders.

    After ``fit`` (or ``load``) a model knows ``users``/``items`` (id maps) and ``seen`` (the
    training CSR used to exclude already-seen items).
    """

    kind: ClassVar[str] = ""

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if cls.kind:
            MODEL_KINDS[cls.kind] = cls

    def __init__(self) -> None:
        self.users: IdMap | None = None
        self.items: IdMap | None = None
        self.seen: sp.csr_matrix | None = None
        self.data_fingerprint: str | None = None
        self.metrics: dict[str, float] = {}

    # --- to implement -------------------------------------------------------------------------
    @abstractmethod
    def fit(self, dataset: Dataset) -> Self:
        """Train on ``dataset.user_items`` (and ``dataset.follows`` where the model uses it)."""

    @abstractmethod
    def user_vectors(self, user_idx: np.ndarray) -> torch.Tensor:
        """``[len(user_idx), dim]`` float32 vectors of known users."""

    @abstractmethod
    def item_vectors(self) -> torch.Tensor:
        """``[n_items, dim]`` float32 item matrix; score = user_vector @ item_vector."""

    @abstractmethod
    def fold_in(
        self,
        recent_items: Sequence[int],
        followees: Sequence[int] = (),
    ) -> torch.Tensor:
        """A ``[dim]`` vector for a user the model has not trained on, without retraining.

        Args:
            recent_items (Sequence[int]): Dense item indices the user engaged with recently.
            followees (Sequence[int]): Dense user indices the user follows (used by models
                with a social graph; ignored by the others).
        """

    @abstractmethod
    def config(self) -> dict[str, Any]:
        """Hyper-parameters, JSON-serialisable; enough to rebuild the model."""

    @abstractmethod
    def _state(self) -> dict[str, torch.Tensor]:
        """Tensors to save (weights, not the seen matrix or id maps: the base saves those)."""

    @classmethod
    @abstractmethod
    def _from_state(cls, config: dict[str, Any], tensors: dict[str, torch.Tensor]) -> Self:
        """Rebuild from ``config()`` and ``_state()``."""

    # --- shared behaviour ---------------------------------------------------------------------
    @property
    def n_users(self) -> int:
        return len(self.users) if self.users is not None else 0

    @property
    def n_items(self) -> int:
        return len(self.items) if self.items is not None else 0

    def _remember(self, dataset: Dataset) -> None:
        """Keep what ``recommend`` and ``save`` need from the training data."""
        self.users, self.items = dataset.users, dataset.items
        self.seen = dataset.user_items.tocsr()
        self.data_fingerprint = dataset.fingerprint()

    def scores(self, user_idx: np.ndarray) -> torch.Tensor:
        """Dense ``[len(user_idx), n_items]`` scores (evaluation; serving uses top-k directly)."""
        return self.user_vectors(np.asarray(user_idx)) @ self.item_vectors().T

    def recommend(
        self, user_idx: int, k: int = 20, exclude_seen: bool = True
    ) -> tuple[np.ndarray, np.ndarray]:
        """Top-``k`` items of one known user: ``(item_idx[k], score[k])``, best first."""
        items, scores = self.recommend_many(np.asarray([user_idx]), k=k, exclude_seen=exclude_seen)
        return items[0], scores[0]

    def recommend_many(
        self,
        user_idx: np.ndarray,
        k: int = 20,
        exclude_seen: bool = True,
        batch_size: int = 4096,
    ) -> tuple[np.ndarray, np.ndarray]:
        """Top-``k`` for many known users: ``(item_idx[n, k], score[n, k])``.

        Rows are padded with item ``-1`` / score ``-inf`` when fewer than ``k`` items remain.
        """
        user_idx = np.asarray(user_idx, dtype=np.int64)
        if user_idx.size and (user_idx.min() < 0 or user_idx.max() >= self.n_users):
            raise IndexError(f"user index out of range [0, {self.n_users})")
        items_out = np.empty((len(user_idx), k), dtype=np.int64)
        scores_out = np.empty((len(user_idx), k), dtype=np.float32)
        item_matrix = self.item_vectors()
        for start in range(0, len(user_idx), batch_size):
            batch = user_idx[start : start + batch_size]
            exclude = self.seen[batch] if (exclude_seen and self.seen is not None) else None
            idx, sc = self.recommend_vectors(self.user_vectors(batch), k, exclude, item_matrix)
            items_out[start : start + len(batch)] = idx
            scores_out[start : start + len(batch)] = sc
        return items_out, scores_out

    def recommend_vectors(
        self,
        user_vectors: torch.Tensor,
        k: int,
        exclude: sp.csr_matrix | None = None,
        item_matrix: torch.Tensor | None = None,
    ) -> tuple[np.ndarray, np.ndarray]:
        """Top-``k`` for arbitrary user vectors (e.g. folded-in users); ``exclude`` rows align."""
        from recsys.topk import score_topk

        item_matrix = self.item_vectors() if item_matrix is None else item_matrix
        idx, sc = score_topk(user_vectors.float(), item_matrix.float(), k, exclude)
        return np.asarray(idx, dtype=np.int64), np.asarray(sc, dtype=np.float32)

    def recommend_new_user(
        self, recent_items: Sequence[int], followees: Sequence[int] = (), k: int = 20
    ) -> tuple[np.ndarray, np.ndarray]:
        """Fold in an unseen user and recommend, excluding their recent items."""
        vec = self.fold_in(recent_items, followees)[None, :]
        recent = np.unique(np.asarray(recent_items, dtype=np.int64))
        exclude = sp.csr_matrix(
            (np.ones(len(recent), dtype=np.float32), recent, [0, len(recent)]), shape=(1, self.n_items)
        )
        idx, sc = self.recommend_vectors(vec, k, exclude)
        return idx[0], sc[0]

    def save(self, path: str | Path, *, metrics: dict[str, float] | None = None) -> Path:
        """Write a model bundle (safetensors + manifest with checksums)."""
        if self.users is None or self.items is None or self.seen is None:
            raise RuntimeError(f"{type(self).__name__} is not fitted; nothing to save")
        seen = self.seen.tocsr()
        tensors = {
            **self._state(),
            "seen.indptr": torch.from_numpy(seen.indptr.astype(np.int64)),
            "seen.indices": torch.from_numpy(seen.indices.astype(np.int64)),
        }
        return save_bundle(
            path,
            kind=self.kind,
            tensors=tensors,
            user_ids=self.users.ids,
            item_ids=self.items.ids,
            config=self.config(),
            metrics={**self.metrics, **(metrics or {})},
            data_fingerprint=self.data_fingerprint,
        )

    @classmethod
    def load(cls, path: str | Path) -> Recommender:
        """Load any model bundle; called on a subclass, refuses a bundle of another kind."""
        expected = cls.kind or None
        bundle = load_bundle(path, expected_kind=expected)
        model_cls = MODEL_KINDS.get(bundle.kind)
        if model_cls is None:
            _import_all_models()
            model_cls = MODEL_KINDS.get(bundle.kind)
        if model_cls is None:
            from recsys.bundle import BundleError

            raise BundleError(f"{path}: unknown model kind {bundle.kind!r}")
        tensors = dict(bundle.tensors)
        indptr = tensors.pop("seen.indptr").numpy()
        indices = tensors.pop("seen.indices").numpy()
        model = model_cls._from_state(bundle.config, tensors)
        model.users = IdMap(bundle.user_ids, "user")
        model.items = IdMap(bundle.item_ids, "item")
        model.seen = sp.csr_matrix(
            (np.ones(len(indices), dtype=np.float32), indices, indptr),
            shape=(len(bundle.user_ids), len(bundle.item_ids)),
        )
        model.data_fingerprint = bundle.manifest.get("data_fingerprint")
        model.metrics = dict(bundle.manifest.get("metrics", {}))
        return model


def _import_all_models() -> None:
    """Import model modules so their classes register their kinds."""
    import importlib
    import pkgutil

    import recsys.models as pkg

    for mod in pkgutil.iter_modules(pkg.__path__):
        importlib.import_module(f"recsys.models.{mod.name}")
