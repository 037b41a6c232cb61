"""The parquet tables of a dataset directory: their column contracts and their layout on disk.

``data_gen`` writes these tables, ``data_gen validate`` checks them, ``recsys.data`` loads them into a
``Dataset``, ``serving.features`` and the ``abtest`` simulators read them: every one of them goes through
this module, so they agree on the columns and on where the files are.

Columns: one place names every column and its dtype. Timestamps are int64 seconds since the Unix
epoch (UTC).

Layout: a table ``NAME`` is either one file ``NAME.parquet`` or, when large, a folder of parts
(``NAME/part-00000.parquet, ...``; a ``NAME.parquet/`` folder of parts, as Spark writes it, is read
too). Parts in natural name order (``part-2`` before ``part-10``) are the table in row order.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Final

import pyarrow as pa
import pyarrow.parquet as pq

#: Interaction event kinds, in funnel order: an impression precedes any engagement with the item.
EVENT_KINDS: Final = ("impression", "click", "like", "share")
#: Events that count as positive feedback for training (impressions are exposure, not preference).
ENGAGEMENT_EVENTS: Final = ("click", "like", "share")

USERS: Final = {
    "user_id": "int64",
    "signup_ts": "int64",
    "region": "string",
    "age_bucket": "string",
    "activity_level": "float32",
}
ITEMS: Final = {
    "item_id": "int64",
    "creator_id": "int64",
    "created_ts": "int64",
    "topic": "int16",
    "media_type": "string",
}
FOLLOWS: Final = {
    "follower_id": "int64",
    "followee_id": "int64",
    "ts": "int64",
}
INTERACTIONS: Final = {
    "user_id": "int64",
    "item_id": "int64",
    "ts": "int64",
    "event": "string",
    "position": "int16",
    "dwell_ms": "int32",
}

#: Table name -> required columns. Extra columns are allowed (generators may add features).
TABLES: Final = {"users": USERS, "items": ITEMS, "follows": FOLLOWS, "interactions": INTERACTIONS}


#: Arrow type of each dtype name used in the contracts above.
ARROW_TYPES: Final = {
    "int64": pa.int64(),
    "int32": pa.int32(),
    "int16": pa.int16(),
    "float32": pa.float32(),
    "float64": pa.float64(),
    "string": pa.string(),
}


class MissingTableError(FileNotFoundError):
    """A table of a dataset directory is absent (or its folder holds no parts); names the directory."""


def table_path(data_dir: str | Path, name: str) -> Path:
    """Path of table ``name`` in ``data_dir``: ``NAME.parquet`` or the folder of its parts.

    Raises:
        MissingTableError: neither ``NAME.parquet`` nor a ``NAME/`` folder exists.
    """
    data_dir = Path(data_dir)
    single, parts = data_dir / f"{name}.parquet", data_dir / name
    if single.exists():
        return single
    if parts.is_dir():
        return parts
    raise MissingTableError(
        f"{data_dir}: missing table {name!r} (expected {name}.parquet or {name}/part-*.parquet)"
    )


def table_files(data_dir: str | Path, name: str) -> list[Path]:
    """The parquet files of table ``name`` in row order: ``[NAME.parquet]`` or the folder's parts.

    Raises:
        MissingTableError: the table is absent, or its folder holds no ``.parquet`` file.
    """
    path = table_path(data_dir, name)
    if path.is_file():
        return [path]
    parts = sorted(path.glob("*.parquet"), key=_natural_key)
    if not parts:
        raise MissingTableError(f"{path}: folder holds no .parquet parts")
    return parts


def _natural_key(path: Path) -> list[object]:
    """``part-2`` before ``part-10`` (data_gen zero-pads, other writers may not)."""
    return [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", path.name)]


def read_table(data_dir: str | Path, name: str, columns: list[str] | None = None) -> pa.Table:
    """Read table ``name`` (one file or its parts) into memory, parts concatenated in row order.

    Args:
        data_dir (str | Path): Dataset directory.
        name (str): Table name (``"interactions"``).
        columns (list[str], optional): Columns to read. (default: all)

    Raises:
        MissingTableError: the table is absent.
    """
    tables = [pq.read_table(f, columns=columns) for f in table_files(data_dir, name)]
    return pa.concat_tables(tables) if len(tables) > 1 else tables[0]
