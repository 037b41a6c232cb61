"""The source behind the feature cache: users' followees and recent interactions from the data.

Cache-aside means the cache is filled from somewhere on a miss. Here that is a ``data_gen`` output
directory (``follows.parquet``, ``interactions.parquet``) read once at start-up into dicts keyed by
the external user id (as a string): recent engagements (click, like, share), newest first, and
followees. Without a data directory the source is empty and features come only from
``POST /feedback``.
"""

from __future__ import annotations

import logging
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from feedrec_common.parquet_tables import ENGAGEMENT_EVENTS
from serving.cache import UserFeatures

log = logging.getLogger("serving.features")


class FeatureSource:
    """In-memory ``user id -> UserFeatures`` built from the data files.

    Args:
        data_dir (Path, optional): Directory with ``follows.parquet`` and ``interactions.parquet``
            (either may be missing). (default: None: empty source)
        max_recent (int): Interactions kept per user. (default: 50)
    """

    def __init__(self, data_dir: Path | None = None, max_recent: int = 50) -> None:
        self._recent: dict[str, tuple[str, ...]] = {}
        self._follows: dict[str, tuple[str, ...]] = {}
        if data_dir is not None:
            self._load(Path(data_dir), max_recent)

    def _load(self, data_dir: Path, max_recent: int) -> None:
        follows = data_dir / "follows.parquet"
        if follows.is_file():
            table = pq.read_table(follows, columns=["follower_id", "followee_id"]).to_pandas()
            for user, group in table.groupby("follower_id", sort=False)["followee_id"]:
                self._follows[str(user)] = tuple(str(v) for v in group.tolist())
        inter = data_dir / "interactions.parquet"
        if inter.is_file():
            table = pq.read_table(inter, columns=["user_id", "item_id", "ts", "event"])
            table = table.filter(pc.is_in(table["event"], value_set=pa.array(ENGAGEMENT_EVENTS)))
            df = table.to_pandas().sort_values(["user_id", "ts"], ascending=[True, False], kind="stable")
            for user, group in df.groupby("user_id", sort=False)["item_id"]:
                self._recent[str(user)] = tuple(str(v) for v in group.head(max_recent).tolist())
        log.info("feature source %s: %d users with follows, %d with interactions",
                 data_dir, len(self._follows), len(self._recent))

    def get(self, user_id: str) -> UserFeatures:
        return UserFeatures(self._recent.get(user_id, ()), self._follows.get(user_id, ()))

    def add(self, user_id: str, recent_items: tuple[str, ...] = (), followees: tuple[str, ...] = ()) -> None:
        """Add a user (tests, benchmarks)."""
        self._recent[user_id] = tuple(recent_items)
        self._follows[user_id] = tuple(followees)
