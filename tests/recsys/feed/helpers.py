"""Small builders shared by the feed tests."""

import numpy as np

from recsys.feed.data import FeedData
from recsys.feed.embeddings import FeedEmbeddings


def random_embeddings(data: FeedData, dim: int = 8, seed: int = 0) -> FeedEmbeddings:
    """Seeded random vectors; half the posts count as trained, the rest get content fold-in."""
    rng = np.random.default_rng(seed)
    users = rng.standard_normal((data.n_users, dim)).astype(np.float32)
    items = rng.standard_normal((data.n_items, dim)).astype(np.float32)
    trained = rng.random(data.n_items) < 0.5
    return FeedEmbeddings(users, items, trained).with_content_fold_in(data.catalog)
