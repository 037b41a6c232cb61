"""Ranker features of (user, post) pairs at time ``now``: the one code path for training and serving.

:func:`build_features` reads a :class:`~recsys.feed.state.FeatureStore` (events strictly before
``now``), the post catalog and the feed embeddings. Training calls it while replaying the log
(:mod:`recsys.feed.replay`); serving calls it with the live store. The columns are
:data:`FEATURE_NAMES`; counts enter as ``log1p``. ``position`` is the logged feed slot in training
and the constant 0 at inference (position bias is learnt as its own term and then switched off).
"""

from __future__ import annotations

import numpy as np

from recsys.feed.data import DAY, Catalog
from recsys.feed.embeddings import FeedEmbeddings
from recsys.feed.state import (
    CREATOR_COUNTERS,
    ITEM_COUNTERS,
    SOCIAL_COUNTERS,
    TOPIC_COUNTERS,
    USER_COUNTERS,
    FeatureStore,
)

FEATURE_NAMES: tuple[str, ...] = (
    "age_days",
    "log_age_hours",
    "media_image",
    "media_video",
    *(f"log1p_{n}" for n in ITEM_COUNTERS),
    "item_ctr_all",
    "item_ctr_1d",
    *(f"log1p_{n}" for n in SOCIAL_COUNTERS),
    *(f"log1p_{n}" for n in CREATOR_COUNTERS),
    "creator_ctr",
    "follows_creator",
    *(f"log1p_{n}" for n in TOPIC_COUNTERS),
    "topic_ctr",
    "topic_click_share_7d",
    *(f"log1p_{n}" for n in USER_COUNTERS),
    "user_ctr_7d",
    "gnn_score",
    "gnn_topic_score",
    "gnn_creator_score",
    "gnn_item_trained",
    "position",
)
N_FEATURES = len(FEATURE_NAMES)
POSITION = FEATURE_NAMES.index("position")


#: The columns :func:`embedding_features` fills (contiguous, in this order).
EMBEDDING_COLUMNS = slice(FEATURE_NAMES.index("gnn_score"), FEATURE_NAMES.index("gnn_item_trained") + 1)


def embedding_features(embeddings: FeedEmbeddings, catalog: Catalog, users: np.ndarray, items: np.ndarray) -> np.ndarray:
    """``float32 [n, 4]``: the GNN score of each pair, of its post's topic and creator mean vectors,
    and whether the post's vector is trained (:data:`EMBEDDING_COLUMNS` of the full features).

    They depend on the vectors only, not on the time, so a trainer comparing feature GNNs replays the
    log once and swaps these columns (``train_ranker``'s feature-GNN selection).
    """
    users, items = np.asarray(users, dtype=np.int64), np.asarray(items, dtype=np.int64)
    return np.stack(
        [
            embeddings.scores(users, items),
            embeddings.topic_scores(users, catalog.topic[items]),
            embeddings.creator_scores(users, catalog.creator[items]),
            embeddings.trained_items[items],
        ],
        axis=1,
    ).astype(np.float32)


def build_features(
    store: FeatureStore,
    catalog: Catalog,
    embeddings: FeedEmbeddings,
    users: np.ndarray,
    items: np.ndarray,
    now: int,
    positions: np.ndarray | None = None,
) -> np.ndarray:
    """``float32 [n, N_FEATURES]`` features of aligned ``(users[j], items[j])`` pairs at ``now``.

    Args:
        store (FeatureStore): Fed with events before ``now`` only (it refuses a later ``now``).
        catalog (Catalog): Post metadata.
        embeddings (FeedEmbeddings): User/post vectors (the GNN score).
        users, items (np.ndarray): Dense indices, aligned.
        now (int): Unix seconds.
        positions (np.ndarray, optional): Logged 0-based feed slots (training); ``None`` = 0 (serving).
    """
    users, items = np.asarray(users, dtype=np.int64), np.asarray(items, dtype=np.int64)
    n = len(users)
    out = np.empty((n, N_FEATURES), dtype=np.float32)
    col = 0

    def put(values: np.ndarray) -> None:
        nonlocal col
        values = np.asarray(values, dtype=np.float64)
        values = values[:, None] if values.ndim == 1 else values
        out[:, col : col + values.shape[1]] = values
        col += values.shape[1]

    age = np.maximum(now - catalog.created_ts[items], 0) / DAY
    put(age)
    put(np.log1p(age * 24.0))
    media = catalog.media[items]
    put(np.stack([media == 1, media == 2], axis=1))
    ic = store.item_counters(items, now)
    put(np.log1p(ic))
    clicks_all, impressions_all = ic[:, ITEM_COUNTERS.index("item_clicks_all")], ic[:, 5]
    clicks_1d, impressions_1d = ic[:, ITEM_COUNTERS.index("item_clicks_1d")], ic[:, 4]
    # smoothed towards a 10% click rate (the log's order of magnitude) so unseen posts are not 0 or 1
    put(np.log((clicks_all + 1.0) / (impressions_all + 10.0)))
    put(np.log((clicks_1d + 0.1) / (impressions_1d + 1.0)))
    put(np.log1p(store.social_counters(users, items, now)))
    creators = catalog.creator[items]
    cc = store.creator_counters(users, creators, now)
    put(np.log1p(cc))
    put(np.log((cc[:, 1] + 0.1) / (cc[:, 2] + 1.0)))
    put(store.follows(users, creators))
    topics = catalog.topic[items]
    tc = store.topic_counters(users, topics, now)
    put(np.log1p(tc))
    put(np.log((tc[:, 1] + 0.5) / (tc[:, 2] + 5.0)))
    uc = store.user_counters(users, now)
    put(tc[:, 0] / (uc[:, 1] + 1.0))
    put(np.log1p(uc))
    put(np.log((uc[:, 1] + 0.1) / (uc[:, 0] + 1.0)))
    put(embedding_features(embeddings, catalog, users, items))
    put(np.zeros(n) if positions is None else positions)
    assert col == N_FEATURES
    return out
