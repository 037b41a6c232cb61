"""Forms of an event shared by both backends: the JSON line (segment line, stream entry), Arrow tables,
atomic Parquet files, read-time dedup.

Parquet layout (the same for the file and the Redis backend)::

    <events_dir>/exposures/part-<ns>-<host>-<pid>-<rand>.parquet
    <events_dir>/outcomes/part-<ns>-<host>-<pid>-<rand>.parquet

A Parquet file is written under a ``.partial`` name, fsync'ed, renamed and its directory fsync'ed, so a
reader (or a crash) sees either the whole file or none of it; readers list ``*.parquet`` only.
"""

from __future__ import annotations

import os
import socket
import time
import uuid
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any, Final, Literal

import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from abtest.events import DEDUP_KEY, EXPOSURE_COLUMNS, OUTCOME_COLUMNS, Exposure, Outcome

Table = Literal["exposures", "outcomes"]
#: The record ``type`` stored in segment lines and stream entries, per table.
RECORD_TYPES: Final[dict[str, Table]] = {"exposure": "exposures", "outcome": "outcomes"}

_COLUMNS: Final = {"exposures": EXPOSURE_COLUMNS, "outcomes": OUTCOME_COLUMNS}
#: Columns holding external ids: int64 when every value is an int, else string (lists: element type).
_ID_COLUMNS: Final = {"exposures": ("user", "items"), "outcomes": ("user", "item")}
_STRING_LIST = pa.list_(pa.string())
_FIXED_TYPES: Final = {
    "event_id": pa.string(), "request_id": pa.string(), "ts": pa.float64(), "experiment": pa.string(),
    "arm": pa.string(), "model": pa.string(), "model_version": pa.string(), "fallback": pa.string(),
    "positions": pa.list_(pa.int32()), "item_arms": _STRING_LIST, "kind": pa.string(),
}  # fmt: skip


def encode_line(kind: str, event: Exposure | Outcome) -> bytes:
    """One record as a JSON line: ``{"type": kind, <fields>}\\n`` (JSON escapes newlines inside
    strings). A segment line of the file backend; without its newline, a Redis stream entry."""
    body = event.model_dump_json().encode()
    # splice the type in front of pydantic's (fast, Rust-side) serialisation instead of re-encoding
    return b'{"type":"' + kind.encode() + b'",' + body[1:] + b"\n"


def is_valid_record(record: Any) -> bool:
    """Whether a decoded JSON line/entry looks like an event (type known, every column present)."""
    if not isinstance(record, dict):
        return False
    table = RECORD_TYPES.get(record.get("type"))  # type: ignore[arg-type]
    return table is not None and all(c in record for c in _COLUMNS[table])


def records_to_table(table: Table, records: Sequence[dict[str, Any]]) -> pa.Table:
    """Arrow table of one kind of records (dicts with every column; extra keys are ignored)."""
    arrays = {}
    for column in _COLUMNS[table]:
        values = [r.get(column) for r in records]
        if column in _ID_COLUMNS[table]:
            arrays[column] = _id_list_array(values) if column == "items" else _id_array(values)
        else:
            arrays[column] = pa.array(values, _FIXED_TYPES[column])
    return pa.table(arrays)


def empty_table(table: Table) -> pa.Table:
    return records_to_table(table, [])


def _id_array(values: list[Any]) -> pa.Array:
    if all(type(v) is int for v in values):
        return pa.array(values, pa.int64())
    return pa.array([str(v) for v in values], pa.string())


def _id_list_array(rows: list[Any]) -> pa.Array:
    if all(type(v) is int for row in rows for v in row):
        return pa.array(rows, pa.list_(pa.int64()))
    return pa.array([[str(v) for v in row] for row in rows], _STRING_LIST)


def concat(table: Table, tables: Iterable[pa.Table]) -> pa.Table:
    """Concatenate tables of one kind, casting an id column to string if any part holds strings."""
    parts = [t.select(list(_COLUMNS[table])) for t in tables if t.num_rows]
    if not parts:
        return empty_table(table)
    for column in _ID_COLUMNS[table]:
        if any(_is_string_id(t.schema.field(column).type) for t in parts):
            target = _STRING_LIST if column == "items" else pa.string()
            parts = [_cast_column(t, column, target) for t in parts]
    # experiment/model/... are all-null in some parts: Arrow infers them as string via the schema above
    return pa.concat_tables(parts)


def _is_string_id(dtype: pa.DataType) -> bool:
    if pa.types.is_list(dtype) or pa.types.is_large_list(dtype):
        dtype = dtype.value_type
    return pa.types.is_string(dtype) or pa.types.is_large_string(dtype)


def _cast_column(table: pa.Table, column: str, target: pa.DataType) -> pa.Table:
    index = table.schema.get_field_index(column)
    return table.set_column(index, column, table.column(column).cast(target))


def to_frame(table: Table, data: pa.Table, since: float | None, until: float | None) -> tuple[pd.DataFrame, int]:
    """Filter by ts, drop repeated ``(request_id, event_id)`` pairs (first kept; the write-time rule of
    both backends, :data:`abtest.events.DEDUP_KEY`), sort by ts; returns (frame, dropped)."""
    if since is not None:
        data = data.filter(pc.greater_equal(data["ts"], since))
    if until is not None:
        data = data.filter(pc.less(data["ts"], until))
    frame = data.to_pandas()
    before = len(frame)
    frame = frame.drop_duplicates(list(DEDUP_KEY), keep="first")
    frame = frame.sort_values("ts", kind="stable").reset_index(drop=True)
    return frame[list(_COLUMNS[table])], before - len(frame)


def part_name() -> str:
    """A Parquet file name unique across processes and hosts."""
    return f"part-{time.time_ns()}-{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:8]}.parquet"


def write_parquet_atomic(data: pa.Table, directory: Path) -> Path:
    """Write ``data`` as a new Parquet file in ``directory``: durable and visible all at once."""
    directory.mkdir(parents=True, exist_ok=True)
    final = directory / part_name()
    partial = final.with_suffix(".partial")
    with open(partial, "wb") as fh:
        pq.write_table(data, fh, compression="zstd")
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(partial, final)
    fsync_dir(directory)
    return final


def parquet_files(directory: Path) -> list[Path]:
    """The complete Parquet files of one table directory, oldest name first."""
    if not directory.is_dir():
        return []
    return sorted(p for p in directory.iterdir() if p.suffix == ".parquet")


def read_parquet_files(table: Table, directory: Path) -> list[pa.Table]:
    """Read every Parquet file of one table; a file removed meanwhile is skipped."""
    parts = []
    for path in parquet_files(directory):
        try:
            parts.append(pq.read_table(path))
        except FileNotFoundError:
            continue
    return parts


def fsync_dir(directory: Path) -> None:
    """fsync a directory so that a created, renamed or removed entry survives a crash."""
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
