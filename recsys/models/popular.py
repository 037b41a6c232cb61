"""Most-popular baseline: the 1-d two-tower model.

Every user gets the same ranking, by the number of training users who engaged with each item. As a
two-tower scorer the user vector is ``[1]`` and the item vector ``[log1p(popularity)]`` (or the raw
count), so popularity goes through the same evaluation, bundle and top-k code as the learned models.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Literal, Self

import numpy as np
import torch

from recsys.data.dataset import Dataset
from recsys.models.base import Recommender


class PopularRecommender(Recommender):
    """Rank items by training popularity; the same list for everyone (minus what they have seen).

    Args:
        weighting (str, optional): Item score: ``"log"`` for ``log1p(count)`` or ``"count"`` for the
            raw count. Both give the same ranking; ``"log"`` keeps scores in a small range.
            (default: ``"log"``)
    """

    kind = "popular"

    def __init__(self, weighting: Literal["log", "count"] = "log") -> None:
        super().__init__()
        if weighting not in ("log", "count"):
            raise ValueError(f"weighting must be 'log' or 'count', got {weighting!r}")
        self.weighting = weighting
        self.item_scores: torch.Tensor | None = None  # [n_items, 1]

    def fit(self, dataset: Dataset) -> Self:
        """Count distinct users per item in ``dataset.user_items``."""
        counts = dataset.item_popularity().astype(np.float64)
        scores = np.log1p(counts) if self.weighting == "log" else counts
        self.item_scores = torch.from_numpy(scores.astype(np.float32))[:, None]
        self._remember(dataset)
        return self

    def user_vectors(self, user_idx: np.ndarray) -> torch.Tensor:
        return torch.ones((len(np.asarray(user_idx)), 1), dtype=torch.float32)

    def item_vectors(self) -> torch.Tensor:
        if self.item_scores is None:
            raise RuntimeError("PopularRecommender is not fitted")
        return self.item_scores

    def fold_in(self, recent_items: Sequence[int], followees: Sequence[int] = ()) -> torch.Tensor:
        """Every user, known or new, has the vector ``[1]``."""
        return torch.ones(1, dtype=torch.float32)

    def config(self) -> dict[str, Any]:
        return {"weighting": self.weighting}

    def _state(self) -> dict[str, torch.Tensor]:
        return {"item_scores": self.item_vectors()}

    @classmethod
    def _from_state(cls, config: dict[str, Any], tensors: dict[str, torch.Tensor]) -> Self:
        model = cls(**config)
        model.item_scores = tensors["item_scores"].float()
        return model
