"""What the feed knows about a data_gen directory: the post catalog, the event log and the follow log.

Only public tables are read (``users``, ``items``, ``follows``, ``interactions`` and the time range in
``manifest.json``); ``truth/`` never. Loading goes through :func:`recsys.data.load_datagen`, so a bad file
fails with its :class:`~recsys.data.dataset.DataError` naming file, column and rows.

Everything is indexed by the dense ids of that loader (``Dataset.users`` / ``Dataset.items``).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from feedrec_common.parquet_tables import EVENT_KINDS, table_files
from recsys.data.datagen import load_datagen
from recsys.data.dataset import DataError, Dataset, IdMap

#: Media types in the code order of ``Catalog.media`` (the data_gen order: text, image, video).
MEDIA_TYPES = ("text", "image", "video")
IMPRESSION, CLICK, LIKE, SHARE = range(4)
assert EVENT_KINDS == ("impression", "click", "like", "share")
DAY = 86_400


@dataclass(frozen=True)
class Catalog:
    """Post metadata known when a post is published (dense item index order).

    Args:
        creator (np.ndarray): int64 ``[n_items]`` dense user index of the creator (``-1``: unknown).
        created_ts (np.ndarray): int64 ``[n_items]`` publication time (unix seconds).
        topic (np.ndarray): int32 ``[n_items]`` topic code (``0..n_topics-1``).
        media (np.ndarray): int8 ``[n_items]`` media code in :data:`MEDIA_TYPES` order.
    """

    creator: np.ndarray
    created_ts: np.ndarray
    topic: np.ndarray
    media: np.ndarray

    @property
    def n_items(self) -> int:
        return len(self.created_ts)

    @property
    def n_topics(self) -> int:
        return int(self.topic.max()) + 1 if len(self.topic) else 1


@dataclass(frozen=True)
class EventLog:
    """Interaction events sorted by time (ties keep the file order), as aligned arrays.

    ``kind`` codes follow :data:`feedrec_common.parquet_tables.EVENT_KINDS`; ``position`` is the 0-based feed slot of
    the impression (``-1`` where unknown).
    """

    user: np.ndarray  # int32
    item: np.ndarray  # int32
    ts: np.ndarray  # int64
    kind: np.ndarray  # int8
    position: np.ndarray  # int16

    def __len__(self) -> int:
        return len(self.ts)

    def select(self, mask_or_index: np.ndarray) -> EventLog:
        """The events at a boolean mask or index array (order kept)."""
        return EventLog(*(a[mask_or_index] for a in (self.user, self.item, self.ts, self.kind, self.position)))

    def before(self, ts: int) -> EventLog:
        """Events strictly before ``ts``."""
        return self.select(slice(0, int(np.searchsorted(self.ts, ts, side="left"))))

    @staticmethod
    def concat(logs: list[EventLog]) -> EventLog:
        """Events of several logs, merged by time (stable)."""
        parts = [np.concatenate([getattr(x, f) for x in logs]) for f in ("user", "item", "ts", "kind", "position")]
        order = np.argsort(parts[2], kind="stable")
        return EventLog(*(p[order] for p in parts))


@dataclass(frozen=True)
class FollowLog:
    """Follow edges (follower -> followee, dense user indices) with their creation time, sorted by time."""

    follower: np.ndarray  # int64
    followee: np.ndarray  # int64
    ts: np.ndarray  # int64

    def __len__(self) -> int:
        return len(self.ts)


@dataclass(frozen=True)
class FeedData:
    """A data_gen directory as the feed sees it (see the module docstring)."""

    users: IdMap
    items: IdMap
    catalog: Catalog
    events: EventLog
    follows: FollowLog
    start_ts: int
    end_ts: int
    dataset: Dataset  # the recsys Dataset the other models (GNN, MF) train on

    @property
    def n_users(self) -> int:
        return len(self.users)

    @property
    def n_items(self) -> int:
        return len(self.items)


def load_feed_data(directory: str | Path) -> FeedData:
    """Load a data_gen directory (see the module docstring).

    Raises:
        DataError: a missing or malformed table or manifest, naming the file.
    """
    directory = Path(directory)
    dataset = load_datagen(directory)
    catalog = _read_catalog(directory, dataset)
    ev = dataset.events
    order = np.argsort(ev["ts"].to_numpy(), kind="stable")
    position = ev["position"].to_numpy() if "position" in ev.columns else np.full(len(ev), -1, np.int16)
    events = EventLog(
        user=ev["user"].to_numpy()[order].astype(np.int32),
        item=ev["item"].to_numpy()[order].astype(np.int32),
        ts=ev["ts"].to_numpy()[order].astype(np.int64),
        kind=ev["event"].cat.codes.to_numpy()[order].astype(np.int8),
        position=position[order].astype(np.int16),
    )
    fol = dataset.follows.tocoo()
    times = dataset.follow_timestamps.tocsr()
    f_rows = np.repeat(np.arange(dataset.n_users), np.diff(times.indptr))
    order = np.argsort(times.data, kind="stable")
    follows = FollowLog(f_rows[order].astype(np.int64), times.indices[order].astype(np.int64), times.data[order])
    del fol
    start_ts, end_ts = _time_range(directory, events)
    return FeedData(dataset.users, dataset.items, catalog, events, follows, start_ts, end_ts, dataset)


def _read_catalog(directory: Path, dataset: Dataset) -> Catalog:
    columns = ["created_ts", "topic", "media_type"]
    parts = []
    for path in table_files(directory, "items"):
        names = pq.read_schema(path).names
        missing = [c for c in columns if c not in names]
        if missing:
            raise DataError(f"{path}: missing column(s) {', '.join(missing)} the feed needs (has {', '.join(names)})")
        parts.append(pq.read_table(path, columns=columns))
    table = pa.concat_tables(parts) if len(parts) > 1 else parts[0]
    media_raw = table["media_type"]
    media = pc.index_in(media_raw.cast(pa.string()), value_set=pa.array(MEDIA_TYPES))
    bad = np.flatnonzero(media.is_null().to_numpy(zero_copy_only=False))
    if bad.size:
        raise DataError(
            f"{directory / 'items'}: media_type {media_raw[int(bad[0])].as_py()!r} at row {int(bad[0])} "
            f"is not one of {', '.join(MEDIA_TYPES)}"
        )
    for column in ("created_ts", "topic"):
        if table[column].null_count:
            row = int(np.flatnonzero(table[column].is_null().to_numpy(zero_copy_only=False))[0])
            raise DataError(f"{directory / 'items'}: column {column!r} is null at row {row}")
    topic = table["topic"].to_numpy().astype(np.int32)
    if len(topic) and topic.min() < 0:
        raise DataError(f"{directory / 'items'}: negative topic at row {int(np.argmin(topic))}")
    creator = dataset.item_creators if dataset.item_creators is not None else np.full(len(topic), -1, np.int64)
    return Catalog(
        creator=np.asarray(creator, dtype=np.int64),
        created_ts=table["created_ts"].to_numpy().astype(np.int64),
        topic=topic,
        media=media.to_numpy().astype(np.int8),
    )


def _time_range(directory: Path, events: EventLog) -> tuple[int, int]:
    """``(start_ts, end_ts)`` from ``manifest.json`` (``time``), else the events' span."""
    path = directory / "manifest.json"
    if path.is_file():
        try:
            span = json.loads(path.read_text())["time"]
            return int(span["start_ts"]), int(span["end_ts"])
        except (ValueError, KeyError, TypeError) as error:
            raise DataError(f"{path}: no readable time.start_ts / time.end_ts ({error})") from None
    if len(events) == 0:
        raise DataError(f"{directory}: no manifest.json and no events to take the time range from")
    return int(events.ts[0]), int(events.ts[-1]) + 1
