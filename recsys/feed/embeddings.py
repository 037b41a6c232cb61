"""User and post vectors for the feed: a trained two-tower model's, plus content fold-in for new posts.

A GNN (or any :class:`~recsys.models.base.Recommender`) only has a useful vector for a post that had
engagements in its training data; in a feed most clicks go to posts younger than the model. A post the
model never saw an engagement of gets a *content fold-in*: the mean vector of the model's trained posts
on the same topic, averaged with the mean vector of the same creator's trained posts when the creator
has any. Both are known when the post is published, so nothing about its engagements is needed.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from recsys.data.dataset import IdMap
from recsys.feed.data import Catalog
from recsys.models.base import Recommender


@dataclass
class FeedEmbeddings:
    """Vectors over the feed's dense ids (score = dot product).

    Args:
        user_vectors (np.ndarray): float32 ``[n_users, d]``; zeros for users the model does not know.
        item_vectors (np.ndarray): float32 ``[n_items, d]``; trained or content fold-in.
        trained_items (np.ndarray): bool ``[n_items]``: the vector is the model's own.
        topic_vectors (np.ndarray): float32 ``[n_topics, d]`` mean of the trained posts per topic.
        creator_vectors (np.ndarray): float32 ``[n_creators, d]`` mean of each creator's trained posts
            (zeros for a creator without one).
    """

    user_vectors: np.ndarray
    item_vectors: np.ndarray
    trained_items: np.ndarray
    topic_vectors: np.ndarray | None = None
    creator_vectors: np.ndarray | None = None

    @property
    def dim(self) -> int:
        return self.item_vectors.shape[1]

    def user_vector(self, users: np.ndarray | int) -> np.ndarray:
        """Vectors of dense user indices; zeros for a user newer than the vectors (no history yet)."""
        users = np.asarray(users, dtype=np.int64)
        known = users < len(self.user_vectors)
        out = self.user_vectors[np.where(known, users, 0)]
        return np.where(known[..., None], out, 0.0).astype(np.float32)

    def scores(self, users: np.ndarray, items: np.ndarray) -> np.ndarray:
        """float32 dot product of aligned (user, item) pairs."""
        return np.einsum("ij,ij->i", self.user_vector(users), self.item_vectors[items])

    def topic_scores(self, users: np.ndarray, topics: np.ndarray) -> np.ndarray:
        """float32 dot product of the user's vector with the topic's mean post vector."""
        assert self.topic_vectors is not None, "call with_content_fold_in first"
        return np.einsum("ij,ij->i", self.user_vector(users), self.topic_vectors[topics])

    def creator_scores(self, users: np.ndarray, creators: np.ndarray) -> np.ndarray:
        """float32 dot product of the user's vector with the creator's mean post vector (0: unknown)."""
        assert self.creator_vectors is not None, "call with_content_fold_in first"
        creators = np.asarray(creators, dtype=np.int64)
        ok = (creators >= 0) & (creators < len(self.creator_vectors))
        out = np.zeros(len(creators), dtype=np.float32)
        out[ok] = np.einsum("ij,ij->i", self.user_vector(np.asarray(users)[ok]), self.creator_vectors[creators[ok]])
        return out

    @classmethod
    def from_model(cls, model: Recommender, users: IdMap, items: IdMap, catalog: Catalog) -> FeedEmbeddings:
        """Vectors of ``model`` mapped onto the feed's ids, with content fold-in (module docstring)."""
        if model.users is None or model.items is None or model.seen is None:
            raise ValueError(f"{type(model).__name__} is not fitted")
        dim = int(model.item_vectors().shape[1])
        u_idx = model.users.indices(users.ids, missing=-1)
        user_vectors = np.zeros((len(users), dim), dtype=np.float32)
        known = u_idx >= 0
        if known.any():
            user_vectors[known] = model.user_vectors(u_idx[known]).numpy()
        i_idx = model.items.indices(items.ids, missing=-1)
        model_items = model.item_vectors().numpy()
        degree = np.asarray(model.seen.sum(axis=0)).ravel()
        trained = (i_idx >= 0) & (degree[np.maximum(i_idx, 0)] > 0)
        item_vectors = np.zeros((len(items), dim), dtype=np.float32)
        item_vectors[trained] = model_items[i_idx[trained]]
        return cls(user_vectors, item_vectors, trained).with_content_fold_in(catalog)

    def with_content_fold_in(self, catalog: Catalog) -> FeedEmbeddings:
        """Fill the vectors of untrained posts from topic and creator means of the trained ones."""
        trained, vec = self.trained_items, self.item_vectors.copy()
        topic_mean = _group_mean(catalog.topic[trained], vec[trained], catalog.n_topics)
        creators = catalog.creator
        n_creators = int(max(creators.max(), 0)) + 1 if len(creators) else 1
        ok = trained & (creators >= 0)
        creator_mean = _group_mean(creators[ok], vec[ok], n_creators)
        creator_has = np.bincount(creators[ok], minlength=n_creators) > 0
        todo = np.flatnonzero(~trained)
        fold = topic_mean[catalog.topic[todo]]
        c = creators[todo]
        has = (c >= 0) & creator_has[np.maximum(c, 0)]
        fold[has] = 0.5 * (fold[has] + creator_mean[c[has]])
        vec[todo] = fold
        return FeedEmbeddings(self.user_vectors, vec, trained, topic_mean, creator_mean)


def _group_mean(groups: np.ndarray, vectors: np.ndarray, n_groups: int) -> np.ndarray:
    sums = np.zeros((n_groups, vectors.shape[1]), dtype=np.float64)
    np.add.at(sums, groups, vectors)
    counts = np.bincount(groups, minlength=n_groups)[:, None]
    return (sums / np.maximum(counts, 1)).astype(np.float32)
