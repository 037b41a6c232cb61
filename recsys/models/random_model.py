"""Random baseline: seeded random user and item vectors.

Rankings are uniformly random across users but reproducible: the same seed gives the same vectors,
so the same recommendations, before and after a save/load. It is the floor every model must beat
and a check that metrics are not inflated by the evaluation itself.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from typing import Any, Self

import numpy as np
import torch

from recsys.data.dataset import Dataset
from recsys.models.base import Recommender


class RandomRecommender(Recommender):
    """Score = dot product of independent Gaussian user and item vectors.

    Args:
        dim (int, optional): Vector dimension; any value > 0 gives a random ranking, a larger one
            makes the rankings of different users less correlated. (default: 16)
        seed (int, optional): Seed of the vectors (and of folded-in users). (default: 0)
    """

    kind = "random"

    def __init__(self, dim: int = 16, seed: int = 0) -> None:
        super().__init__()
        if dim < 1:
            raise ValueError(f"dim must be >= 1, got {dim}")
        self.dim = dim
        self.seed = seed
        self.user_table: torch.Tensor | None = None
        self.item_table: torch.Tensor | None = None

    def fit(self, dataset: Dataset) -> Self:
        """Draw the vectors; the data only fixes the numbers of users and items."""
        rng = np.random.default_rng(self.seed)
        self.user_table = torch.from_numpy(
            rng.standard_normal((dataset.n_users, self.dim), dtype=np.float32)
        )
        self.item_table = torch.from_numpy(
            rng.standard_normal((dataset.n_items, self.dim), dtype=np.float32)
        )
        self._remember(dataset)
        return self

    def user_vectors(self, user_idx: np.ndarray) -> torch.Tensor:
        if self.user_table is None:
            raise RuntimeError("RandomRecommender is not fitted")
        return self.user_table[torch.as_tensor(np.asarray(user_idx, dtype=np.int64))]

    def item_vectors(self) -> torch.Tensor:
        if self.item_table is None:
            raise RuntimeError("RandomRecommender is not fitted")
        return self.item_table

    def fold_in(self, recent_items: Sequence[int], followees: Sequence[int] = ()) -> torch.Tensor:
        """A random vector seeded by ``seed`` and the (sorted) recent items: same input, same vector."""
        key = np.unique(np.asarray(recent_items, dtype=np.int64))
        digest = hashlib.sha256(key.tobytes()).digest()
        rng = np.random.default_rng([self.seed, int.from_bytes(digest[:8], "little")])
        return torch.from_numpy(rng.standard_normal(self.dim, dtype=np.float32))

    def config(self) -> dict[str, Any]:
        return {"dim": self.dim, "seed": self.seed}

    def _state(self) -> dict[str, torch.Tensor]:
        return {"user_table": self.user_vectors(np.arange(self.n_users)), "item_table": self.item_vectors()}

    @classmethod
    def _from_state(cls, config: dict[str, Any], tensors: dict[str, torch.Tensor]) -> Self:
        model = cls(**config)
        model.user_table = tensors["user_table"].float()
        model.item_table = tensors["item_table"].float()
        return model
