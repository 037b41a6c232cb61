"""Fixtures of the serving tests: a small dataset, real trained models, exported serving bundles."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp

from recsys.data.dataset import Dataset, IdMap

N_USERS, N_ITEMS = 300, 200
USER_ID0, ITEM_ID0 = 1000, 5000
#: Users the models never saw; the data directory gives them follows and interactions.
COLD_WITH_FOLLOWS, COLD_WITH_ITEMS = "90001", "90002"


@pytest.fixture(scope="session")
def tiny_dataset() -> Dataset:
    rng = np.random.default_rng(7)
    rows, cols = rng.integers(0, N_USERS, 4000), rng.integers(0, N_ITEMS, 4000)
    ui = sp.csr_matrix((np.ones(len(rows), np.float32), (rows, cols)), shape=(N_USERS, N_ITEMS))
    ui.data[:] = 1.0
    ui.sort_indices()
    fr, fc = rng.integers(0, N_USERS, 1500), rng.integers(0, N_USERS, 1500)
    follows = sp.csr_matrix((np.ones(len(fr), np.float32), (fr, fc)), shape=(N_USERS, N_USERS))
    follows.data[:] = 1.0
    return Dataset("tiny", IdMap(np.arange(USER_ID0, USER_ID0 + N_USERS), "user"),
                   IdMap(np.arange(ITEM_ID0, ITEM_ID0 + N_ITEMS), "item"), ui, follows=follows)


def _fit(kind: str, dataset: Dataset):
    from recsys.models.gnn import GNNRecommender
    from recsys.models.mf import ALSRecommender, BPRRecommender
    from recsys.models.popular import PopularRecommender
    from recsys.models.random_model import RandomRecommender

    if kind == "gnn":
        return GNNRecommender(embedding_dim=16, num_layers=2, num_negatives=64).fit(dataset, epochs=2, seed=0)
    model = {
        "als": lambda: ALSRecommender(factors=16, iterations=5, regularization=0.1, alpha=5.0, num_threads=1),
        "bpr": lambda: BPRRecommender(factors=16, iterations=10, num_threads=1),
        "popular": PopularRecommender,
        "random": lambda: RandomRecommender(dim=8, seed=3),
    }[kind]()
    return model.fit(dataset)


@pytest.fixture(scope="session")
def trained_bundles(tiny_dataset, tmp_path_factory) -> dict[str, Path]:
    """kind -> training bundle directory (lazily fitted once per session)."""
    root = tmp_path_factory.mktemp("bundles")
    cache: dict[str, Path] = {}

    class Lazy(dict):
        def __missing__(self, kind: str) -> Path:
            cache[kind] = _fit(kind, tiny_dataset).save(root / kind)
            self[kind] = cache[kind]
            return cache[kind]

    return Lazy()


@pytest.fixture(scope="session")
def serving_bundles(trained_bundles, tmp_path_factory) -> dict[str, Path]:
    """kind -> exported serving bundle (lazily exported once per session)."""
    from serving.export import export_bundle

    root = tmp_path_factory.mktemp("serving_bundles")

    class Lazy(dict):
        def __missing__(self, kind: str) -> Path:
            self[kind] = export_bundle(trained_bundles[kind], root / kind, parity_users=300)
            return self[kind]

    return Lazy()


@pytest.fixture(scope="session")
def data_dir(tmp_path_factory) -> Path:
    """A data directory whose follows/interactions describe two users unknown to the models."""
    root = tmp_path_factory.mktemp("data")
    pd.DataFrame({
        "follower_id": np.array([90001] * 5, dtype=np.int64),
        "followee_id": np.array([USER_ID0 + i for i in (1, 2, 3, 4, 5)], dtype=np.int64),
        "ts": np.arange(5, dtype=np.int64),
    }).to_parquet(root / "follows.parquet")
    pd.DataFrame({
        "user_id": np.array([90002] * 4, dtype=np.int64),
        "item_id": np.array([ITEM_ID0 + i for i in (10, 11, 12, 13)], dtype=np.int64),
        "ts": np.arange(4, dtype=np.int64),
        "event": ["click", "like", "impression", "share"],
        "position": np.zeros(4, dtype=np.int16),
        "dwell_ms": np.zeros(4, dtype=np.int32),
    }).to_parquet(root / "interactions.parquet")
    return root
