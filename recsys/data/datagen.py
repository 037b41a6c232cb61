"""Reader of a ``data_gen`` output directory (the parquet contract of :mod:`feedrec_common.parquet_tables`).

A directory holds ``users``, ``items``, ``follows`` and ``interactions`` tables, found by
:func:`feedrec_common.parquet_tables.table_files` (one file or a folder of parts) and read part by part
so that every row has a file and a row number to cite in errors.

What becomes of the data:

* id maps come from ``users``/``items`` (in file order), so users without any interaction and items
  nobody saw still get an index;
* positives are engagement events (:data:`feedrec_common.parquet_tables.ENGAGEMENT_EVENTS`) deduplicated per
  ``(user, item)``, keeping the first time, which goes into ``Dataset.timestamps``;
* follows become a ``[n_users, n_users]`` CSR (follower -> followee), duplicates kept once with their
  first time in ``Dataset.follow_timestamps``;
* every event, impressions included, is kept in ``Dataset.events`` with dense ``user``/``item``
  (int32), ``ts``, ``event`` (categorical in :data:`feedrec_common.parquet_tables.EVENT_KINDS` order) and, when the
  file has them, ``position`` and ``dwell_ms``.

Only the columns the loader uses are required: ``user_id`` / ``item_id`` in users / items,
``follower_id, followee_id, ts`` in follows, ``user_id, item_id, ts, event`` in interactions.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import scipy.sparse as sp

from feedrec_common import parquet_tables
from feedrec_common.parquet_tables import ENGAGEMENT_EVENTS, EVENT_KINDS
from recsys.data.dataset import DataError, Dataset, IdMap
from recsys.data.sparse import pairs_to_csr

_ENGAGEMENT_CODES = np.array([EVENT_KINDS.index(e) for e in ENGAGEMENT_EVENTS], dtype=np.int8)

#: How many offending rows an error message lists before "...".
_MAX_ROWS_SHOWN = 5

_REQUIRED = {
    "users": {"user_id": "integer"},
    "items": {"item_id": "integer"},
    "follows": {"follower_id": "integer", "followee_id": "integer", "ts": "integer"},
    "interactions": {"user_id": "integer", "item_id": "integer", "ts": "integer", "event": "string"},
}
_OPTIONAL = {
    "interactions": {"position": "integer", "dwell_ms": "integer"},
    "items": {"creator_id": "integer"},
}


def _table_files(directory: Path, name: str) -> list[Path]:
    """:func:`feedrec_common.parquet_tables.table_files`, a missing table as a :class:`DataError`."""
    try:
        return parquet_tables.table_files(directory, name)
    except parquet_tables.MissingTableError as e:
        raise DataError(str(e)) from None


def _read_part(path: Path, table: str, optional: bool = True) -> pa.Table:
    """Read the used columns of one part (``optional``: also the optional ones it has), checking
    presence, type and nulls."""
    try:
        schema = pq.read_schema(path)
    except (OSError, pa.ArrowException) as e:
        raise DataError(f"{path}: not a readable parquet file ({e})") from None
    columns = dict(_REQUIRED[table])
    for column, kind in (_OPTIONAL.get(table, {}) if optional else {}).items():
        if column in schema.names:
            columns[column] = kind
    for column, kind in columns.items():
        if column not in schema.names:
            raise DataError(f"{path}: missing column {column!r} (has {', '.join(schema.names)})")
        typ = schema.field(column).type
        if pa.types.is_dictionary(typ):
            typ = typ.value_type
        ok = (
            pa.types.is_integer(typ)
            if kind == "integer"
            else (pa.types.is_string(typ) or pa.types.is_large_string(typ))
        )
        if not ok:
            raise DataError(f"{path}: column {column!r} has type {typ}, expected {kind}")
    data = pq.read_table(path, columns=list(columns))
    for column in columns:
        nulls = data.column(column).null_count
        if nulls:
            rows = np.flatnonzero(data.column(column).is_null().to_numpy(zero_copy_only=False))
            raise DataError(f"{path}: column {column!r} has {nulls} null value(s) at {_rows(rows)}")
    return data


def _rows(rows: np.ndarray) -> str:
    shown = ", ".join(str(int(r)) for r in rows[:_MAX_ROWS_SHOWN])
    more = ", ..." if len(rows) > _MAX_ROWS_SHOWN else ""
    return f"row{'s' if len(rows) > 1 else ''} {shown}{more} (0-based)"


def _ints(data: pa.Table, column: str) -> np.ndarray:
    return data.column(column).to_numpy().astype(np.int64, copy=False)


def _read_ids(directory: Path, table: str, column: str, kind: str) -> IdMap:
    chunks = [_ints(_read_part(p, table), column) for p in _table_files(directory, table)]
    ids = np.concatenate(chunks) if chunks else np.empty(0, np.int64)
    uniq, first, counts = np.unique(ids, return_index=True, return_counts=True)
    if (counts > 1).any():
        dup = uniq[counts > 1]
        raise DataError(
            f"{directory / table}: {column} is not unique: {', '.join(map(str, dup[:_MAX_ROWS_SHOWN]))}"
            f"{', ...' if len(dup) > _MAX_ROWS_SHOWN else ''}"
        )
    return IdMap(ids, kind)


def _item_creators(directory: Path, items: IdMap, user_of: _Mapper) -> np.ndarray | None:
    """Dense creator (user index) of each item in item-index order; ``-1`` for an unknown creator."""
    creators = []
    for path in _table_files(directory, "items"):
        data = _read_part(path, "items")
        if "creator_id" not in data.column_names:
            return None
        creators.append(_ints(data, "creator_id"))
    raw = np.concatenate(creators) if creators else np.empty(0, np.int64)
    idx, found = user_of.lookup(raw)
    # items.parquet order is the item-index order (the IdMap is built from the same rows)
    return np.where(found, idx, -1).astype(np.int64)


class _Mapper:
    """Vectorised external -> dense lookup over an :class:`IdMap` (searchsorted, no dict per row)."""

    def __init__(self, idmap: IdMap) -> None:
        self.order = np.argsort(idmap.ids, kind="stable")
        self.sorted = idmap.ids[self.order]
        self.name = idmap.name

    def lookup(self, values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Dense indices of ``values`` and a mask of which were found (unfound indices are junk)."""
        pos = np.searchsorted(self.sorted, values)
        pos_c = np.minimum(pos, max(len(self.sorted) - 1, 0))
        found = (pos < len(self.sorted)) & (self.sorted[pos_c] == values) if len(self.sorted) else pos < 0
        return self.order[pos_c] if len(self.sorted) else pos_c, found

    def __call__(self, values: np.ndarray, path: Path, column: str) -> np.ndarray:
        idx, found = self.lookup(values)
        if not found.all():
            bad = np.flatnonzero(~found)
            raise DataError(
                f"{path}: {column} id {int(values[bad[0]])} at {_rows(bad)} is outside the map "
                f"(not in {self.name}s)"
            )
        return idx


def _csr_first(
    rows: np.ndarray, cols: np.ndarray, ts: np.ndarray, shape: tuple[int, int]
) -> tuple[sp.csr_matrix, sp.csr_matrix]:
    """Binary CSR of distinct pairs plus a CSR of each pair's first time (same sparsity)."""
    times = pairs_to_csr(rows, cols, shape, values=ts.astype(np.int64), first_by=ts)
    ones = sp.csr_matrix(
        (np.ones(times.nnz, np.float32), times.indices.copy(), times.indptr.copy()), shape=shape
    )
    return ones, times


def load_datagen(directory: str | Path, name: str | None = None, events: bool = True) -> Dataset:
    """Load a ``data_gen`` output directory as a :class:`Dataset`.

    Args:
        directory (str | Path): Folder with ``users``, ``items``, ``follows``, ``interactions`` tables.
        name (str, optional): Dataset name; defaults to the folder's name.
        events (bool): Keep every event in ``Dataset.events``. ``False`` keeps only the engagements'
            pairs and times, part by part, for trainers that read nothing else (the GNN, MF): on the
            ``large`` preset the 110M events are 2.5 GB held and a peak of 9 GB while loading.
            (default: True)

    Returns:
        Dataset: with ``timestamps``, ``follows``, ``follow_timestamps`` and (``events``) ``events`` filled.

    Raises:
        DataError: a missing table or column (naming file and column), a column of the wrong type, nulls,
            duplicated user/item ids, an unknown event kind, or a follow / interaction whose id is not
            in users / items (naming file, rows and the id: "outside the map").
    """
    directory = Path(directory)
    if not directory.is_dir():
        raise DataError(f"{directory}: not a directory")
    users = _read_ids(directory, "users", "user_id", "user")
    items = _read_ids(directory, "items", "item_id", "item")
    user_of, item_of = _Mapper(users), _Mapper(items)

    follower, followee, follow_ts = [], [], []
    for path in _table_files(directory, "follows"):
        data = _read_part(path, "follows")
        follower.append(user_of(_ints(data, "follower_id"), path, "follower_id"))
        followee.append(user_of(_ints(data, "followee_id"), path, "followee_id"))
        follow_ts.append(_ints(data, "ts"))
    follows, follow_times = _csr_first(
        np.concatenate(follower), np.concatenate(followee), np.concatenate(follow_ts), (len(users),) * 2
    )

    frames, pairs = [], []
    for path in _table_files(directory, "interactions"):
        data = _read_part(path, "interactions", optional=events)
        raw = data.column("event")
        if pa.types.is_dictionary(raw.type):
            raw = raw.cast(pa.string())
        codes = pc.index_in(raw, value_set=pa.array(EVENT_KINDS, pa.string()))
        unknown = np.flatnonzero(codes.is_null().to_numpy(zero_copy_only=False))
        if unknown.size:
            value = raw[int(unknown[0])].as_py()
            raise DataError(
                f"{path}: event {value!r} at {_rows(unknown)} is not one of {', '.join(EVENT_KINDS)}"
            )
        codes = codes.to_numpy().astype(np.int8)
        user = user_of(_ints(data, "user_id"), path, "user_id").astype(np.int32)
        item = item_of(_ints(data, "item_id"), path, "item_id").astype(np.int32)
        ts = _ints(data, "ts")
        engaged = np.isin(codes, _ENGAGEMENT_CODES)  # the positives, taken part by part
        pairs.append((user[engaged], item[engaged], ts[engaged]))
        if not events:
            continue
        frame = {"user": user, "item": item, "ts": ts, "event": pd.Categorical.from_codes(codes, categories=EVENT_KINDS)}
        if "position" in data.column_names:
            frame["position"] = data.column("position").to_numpy().astype(np.int16)
        if "dwell_ms" in data.column_names:
            frame["dwell_ms"] = data.column("dwell_ms").to_numpy().astype(np.int32)
        frames.append(pd.DataFrame(frame))
    table = None
    if events:
        table = pd.concat(frames, ignore_index=True) if len(frames) > 1 else frames[0]
        table["event"] = pd.Categorical(table["event"], categories=EVENT_KINDS)
    user_items, timestamps = _csr_first(
        *(np.concatenate([p[c] for p in pairs]) for c in range(3)), (len(users), len(items))
    )
    return Dataset(
        item_creators=_item_creators(directory, items, user_of),
        name=name or directory.resolve().name,
        users=users,
        items=items,
        user_items=user_items,
        timestamps=timestamps,
        follows=follows,
        events=table,
        source=str(directory),
        follow_timestamps=follow_times,
    )
