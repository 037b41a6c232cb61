"""The source behind the feature cache: users' followees and recent interactions from the data.

Cache-aside means the cache is filled from somewhere on a miss. Here that is a ``data_gen`` output
directory (its ``follows`` and ``interactions`` tables, each one file or a folder of parts, read with
:func:`feedrec_common.parquet_tables.read_table`) read once at start-up into dicts keyed by
the external user id (as a string): recent engagements (click, like, share), newest first, and
followees. Without a data directory the source is empty and features come only from
``POST /feedback``.
"""

from __future__ import annotations

import logging
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc

from feedrec_common.parquet_tables import ENGAGEMENT_EVENTS, MissingTableError, read_table
from serving.cache import UserFeatures

log = logging.getLogger("serving.features")


class FeatureSource:
    """In-memory ``user id -> UserFeatures`` built from the data files.

    Args:
        data_dir (Path, optional): Dataset directory with ``follows`` and ``interactions`` tables
            (``NAME.parquet`` or ``NAME/part-*.parquet``; either table may be missing).
            (default: None: empty source)
        max_recent (int): Interactions kept per user. (default: 50)
    """

    def __init__(self, data_dir: Path | None = None, max_recent: int = 50) -> None:
        self._recent: dict[str, tuple[str, ...]] = {}
        self._follows: dict[str, tuple[str, ...]] = {}
        if data_dir is not None:
            self._load(Path(data_dir), max_recent)

    def _load(self, data_dir: Path, max_recent: int) -> None:
        # The one table reader: medium/large datasets store interactions as interactions/part-*.parquet,
        # which a look for interactions.parquet alone silently missed (issue 12 item 2).
        follows = _read_if_present(data_dir, "follows", ["follower_id", "followee_id"])
        if follows is not None:
            for user, group in follows.to_pandas().groupby("follower_id", sort=False)["followee_id"]:
                self._follows[str(user)] = tuple(str(v) for v in group.tolist())
        inter = _read_if_present(data_dir, "interactions", ["user_id", "item_id", "ts", "event"])
        if inter is not None:
            inter = inter.filter(pc.is_in(inter["event"], value_set=pa.array(ENGAGEMENT_EVENTS)))
            df = inter.to_pandas().sort_values(["user_id", "ts"], ascending=[True, False], kind="stable")
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


def _read_if_present(data_dir: Path, name: str, columns: list[str]) -> pa.Table | None:
    """Table ``name`` of ``data_dir`` (one file or its parts), or ``None`` when the table is absent."""
    try:
        return read_table(data_dir, name, columns=columns)
    except MissingTableError:
        return None
