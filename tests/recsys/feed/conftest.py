from pathlib import Path

import numpy as np
import pytest

from data_gen.generate import generate
from data_gen.generator_config import resolve_config
from recsys.feed.data import Catalog, EventLog, FeedData, load_feed_data


@pytest.fixture(scope="session")
def tiny_dir(tmp_path_factory) -> Path:
    """The data_gen ``tiny`` preset (seed 7), generated once for the feed tests."""
    out = tmp_path_factory.mktemp("feed-data") / "tiny"
    generate(resolve_config("tiny", seed=7), out, progress=False)
    return out


@pytest.fixture(scope="session")
def tiny_data(tiny_dir) -> FeedData:
    return load_feed_data(tiny_dir)


def make_catalog(n_items: int = 10, creators=None, created=None, topics=None, media=None) -> Catalog:
    """A hand-made catalog: post i by creator ``i % 3`` published at t=0 on topic ``i % 2`` (text)."""
    return Catalog(
        creator=np.asarray(creators if creators is not None else np.arange(n_items) % 3, dtype=np.int64),
        created_ts=np.asarray(created if created is not None else np.zeros(n_items), dtype=np.int64),
        topic=np.asarray(topics if topics is not None else np.arange(n_items) % 2, dtype=np.int32),
        media=np.asarray(media if media is not None else np.zeros(n_items), dtype=np.int8),
    )


def make_events(rows) -> EventLog:
    """``rows`` of (user, item, ts, kind, position) -> an EventLog sorted by time."""
    a = np.asarray(rows, dtype=np.int64).reshape(-1, 5)
    order = np.argsort(a[:, 2], kind="stable")
    a = a[order]
    return EventLog(a[:, 0].astype(np.int32), a[:, 1].astype(np.int32), a[:, 2], a[:, 3].astype(np.int8), a[:, 4].astype(np.int16))
