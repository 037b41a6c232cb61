"""The one in-memory dataset type every model and metric works on.

A :class:`Dataset` holds dense id maps both ways, the user-item matrix of positives (CSR), the time of
each positive where known, and the follow graph where present. A :class:`Split` holds a training
``Dataset`` plus held-out validation/test matrices over the *same* id maps, so a model trained on
``split.train`` is evaluated on ``split.test`` without remapping.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
import pandas as pd
import scipy.sparse as sp

from feedrec_common.hashing import sha256_arrays


class DataError(ValueError):
    """Malformed input data; the message names the file and the line or row."""


@dataclass(frozen=True, eq=False)
class IdMap:
    """Dense index <-> external id. ``ids[i]`` is the external id of index ``i``.

    Args:
        ids (np.ndarray): External ids in index order (int64 or str); must be unique.
        name (str): What the ids are ("user", "item"), used in error messages.
    """

    ids: np.ndarray
    name: str = "id"
    _lookup: dict[Any, int] = field(default=None, repr=False, compare=False)  # type: ignore[assignment]

    def __post_init__(self) -> None:
        lookup = {v: i for i, v in enumerate(self.ids.tolist())}
        if len(lookup) != len(self.ids):
            raise DataError(f"{self.name} ids are not unique")
        object.__setattr__(self, "_lookup", lookup)

    def __len__(self) -> int:
        return len(self.ids)

    def __contains__(self, external: Any) -> bool:
        return external in self._lookup

    def index(self, external: Any) -> int:
        """Dense index of one external id; ``KeyError`` naming the id when unknown."""
        try:
            return self._lookup[external]
        except KeyError:
            raise KeyError(f"unknown {self.name} id {external!r}") from None

    def get(self, external: Any, default: int = -1) -> int:
        return self._lookup.get(external, default)

    def indices(self, externals: Any, missing: int | None = None) -> np.ndarray:
        """Vectorised lookup; unknown ids raise unless ``missing`` gives their index (e.g. -1)."""
        values = np.asarray(externals).tolist()
        if missing is None:
            return np.fromiter((self.index(v) for v in values), dtype=np.int64, count=len(values))
        return np.fromiter((self._lookup.get(v, missing) for v in values), dtype=np.int64, count=len(values))

    def fingerprint(self) -> str:
        arr = self.ids if self.ids.dtype != object else np.asarray([str(v) for v in self.ids], dtype=str)
        return sha256_arrays(arr)


@dataclass(eq=False)
class Dataset:
    """Implicit-feedback data over dense ids.

    Args:
        name (str): Dataset name ("gowalla", "small", ...).
        users (IdMap): User id map; rows of every matrix.
        items (IdMap): Item id map; columns of ``user_items``.
        user_items (sp.csr_matrix): ``[n_users, n_items]`` float32 positives (1.0 per distinct pair,
            sorted indices, no explicit zeros).
        timestamps (sp.csr_matrix, optional): Same sparsity as ``user_items``; int64 time of the first
            positive of each pair. (default: None)
        follows (sp.csr_matrix, optional): ``[n_users, n_users]`` float32; row ``u`` has a 1 in column
            ``v`` when ``u`` follows ``v``. (default: None)
        events (pd.DataFrame, optional): Raw events including impressions, with dense ``user``/``item``
            columns, for models or analyses that use exposure. (default: None)
        source (str): Path or description of where the data came from.
        item_creators (np.ndarray, optional): ``[n_items]`` int64 dense user index of each item's
            creator (``-1`` when unknown). Item metadata known when a post is published, so a model
            may use it for items nobody has engaged with yet. (default: None)
        follow_timestamps (sp.csr_matrix, optional): Same sparsity as ``follows``; int64 time each
            follow was created, so a temporal split can keep only follows known at its cut-off.
            (default: None)
        sequence (sp.csr_matrix, optional): Same sparsity as ``user_items``; int64 1-based position of
            each pair in its user's listing in the source file, for data with an order but no times
            (the LightGCN files list a user's check-ins in order). Lets a validation carve-out hold
            out each user's *latest* items, as a temporal test split does. (default: None)
    """

    name: str
    users: IdMap
    items: IdMap
    user_items: sp.csr_matrix
    timestamps: sp.csr_matrix | None = None
    follows: sp.csr_matrix | None = None
    events: pd.DataFrame | None = None
    source: str = ""
    follow_timestamps: sp.csr_matrix | None = None
    item_creators: np.ndarray | None = None
    sequence: sp.csr_matrix | None = None

    @property
    def n_users(self) -> int:
        return len(self.users)

    @property
    def n_items(self) -> int:
        return len(self.items)

    @property
    def n_interactions(self) -> int:
        return int(self.user_items.nnz)

    def fingerprint(self) -> str:
        """Content hash of id maps, positives and follows (not of ``events``)."""
        parts = [self.users.fingerprint(), self.items.fingerprint(), _csr_hash(self.user_items)]
        if self.follows is not None:
            parts.append(_csr_hash(self.follows))
        return sha256_arrays(np.frombuffer("|".join(parts).encode(), dtype=np.uint8))

    def item_popularity(self) -> np.ndarray:
        """Number of users with a positive for each item, ``[n_items]`` int64."""
        return np.bincount(self.user_items.indices, minlength=self.n_items).astype(np.int64)

    def user_counts(self) -> np.ndarray:
        """Number of positives per user, ``[n_users]`` int64."""
        return np.diff(self.user_items.indptr).astype(np.int64)

    def summary(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "users": self.n_users,
            "items": self.n_items,
            "interactions": self.n_interactions,
            "follows": int(self.follows.nnz) if self.follows is not None else 0,
            "density": self.n_interactions / max(1, self.n_users * self.n_items),
        }


@dataclass(eq=False)
class Split:
    """A training dataset and held-out positives over the same id maps.

    Args:
        train (Dataset): What models may fit on.
        test (sp.csr_matrix): ``[n_users, n_items]`` held-out positives for the final report.
        valid (sp.csr_matrix, optional): Held-out positives for model selection / early stopping.
        kind (str): "temporal" or "given" (files provided as train/test).
        info (dict): Cut-off times and other parameters that define the split.
        valid_timestamps (sp.csr_matrix, optional): Time of each validation positive (same
            sparsity as ``valid``), so a refit on train + validation keeps recency information.
    """

    train: Dataset
    test: sp.csr_matrix
    valid: sp.csr_matrix | None = None
    kind: str = "given"
    info: dict[str, Any] = field(default_factory=dict)
    valid_timestamps: sp.csr_matrix | None = None

    def train_with_valid(self) -> Dataset:
        """``train`` plus the validation positives: what a model is refit on, after selection on
        validation, before the final test evaluation (the model then knows everything before the
        test window, as it would in production). Evaluating on ``test`` still masks both."""
        if self.valid is None:
            return self.train
        merged = (self.train.user_items + self.valid).tocsr()
        merged.data[:] = 1.0
        merged.sort_indices()
        times = None
        if self.train.timestamps is not None and self.valid_timestamps is not None:
            # Train and validation pairs are disjoint, so the sum keeps each pair's own time.
            times = (self.train.timestamps + self.valid_timestamps).tocsr()
            times.sort_indices()
        return replace(self.train, user_items=merged, timestamps=times)

    def hash(self) -> str:
        """Deterministic hash of the split (train fingerprint + held-out matrices)."""
        parts = [self.train.fingerprint(), _csr_hash(self.test)]
        if self.valid is not None:
            parts.append(_csr_hash(self.valid))
        return sha256_arrays(np.frombuffer("|".join(parts).encode(), dtype=np.uint8))


def _csr_hash(m: sp.csr_matrix) -> str:
    m = m.tocsr()
    m.sort_indices()
    return sha256_arrays(
        np.asarray(m.shape, dtype=np.int64), m.indptr.astype(np.int64), m.indices.astype(np.int64)
    )
