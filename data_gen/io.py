"""Deterministic parquet writing and the single-file-or-directory-of-parts table layout.

A table ``NAME`` of a dataset directory is stored either as ``NAME.parquet`` or, when it is large,
as ``NAME/part-00000.parquet, NAME/part-00001.parquet, ...`` (parts in name order are the table in row
order). Reading either form is :mod:`feedrec_common.parquet_tables` (``table_files``, ``read_table``).

Files are byte-reproducible: Arrow arrays built from numpy (no pandas metadata), fixed compression,
row groups of exactly ``row_group_size`` rows (the last one may be shorter) regardless of how the rows
were handed to :class:`ShardedParquetWriter`, and no timestamps anywhere in the metadata.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from feedrec_common.parquet_tables import ARROW_TYPES


def arrow_schema(columns: dict[str, str]) -> pa.Schema:
    """Arrow schema for a ``{column: dtype name}`` contract from :mod:`feedrec_common.parquet_tables`."""
    return pa.schema([(name, ARROW_TYPES[dtype]) for name, dtype in columns.items()])


def strings_from_codes(codes: np.ndarray, vocabulary: tuple[str, ...] | list[str]) -> pa.Array:
    """A string array ``vocabulary[codes]`` built in Arrow (no Python string objects per row)."""
    return pc.take(pa.array(list(vocabulary), type=pa.string()), pa.array(np.asarray(codes, dtype=np.int32)))


def make_table(columns: dict[str, str], data: dict[str, np.ndarray | pa.Array]) -> pa.Table:
    """Build a table with exactly the contract's columns and types (extra data keys are an error)."""
    schema = arrow_schema(columns)
    if set(data) != set(columns):
        raise ValueError(f"columns {sorted(data)} do not match contract {sorted(columns)}")
    arrays = []
    for field in schema:
        value = data[field.name]
        arrays.append(value if isinstance(value, pa.Array) else pa.array(value, type=field.type))
    return pa.Table.from_arrays(arrays, schema=schema)


class ShardedParquetWriter:
    """Stream a table into ``root/NAME/part-XXXXX.parquet`` files with fixed row-group boundaries.

    Rows are buffered and written in row groups of exactly ``row_group_size`` rows; a new part starts
    every ``rows_per_shard`` rows. :meth:`close` turns a table that fits in one part into
    ``root/NAME.parquet``. The bytes written depend only on the rows, not on how they were batched.

    Args:
        root (Path): Dataset directory.
        name (str): Table name (``interactions``).
        schema (pa.Schema): Schema of every batch.
        rows_per_shard (int): Rows per part file (multiple of ``row_group_size``).
        row_group_size (int): Rows per parquet row group.
        compression (str): Parquet codec (``zstd``, ``snappy``, ``gzip``, ``none``).
    """

    def __init__(
        self,
        root: Path,
        name: str,
        schema: pa.Schema,
        rows_per_shard: int,
        row_group_size: int,
        compression: str = "zstd",
    ) -> None:
        if rows_per_shard % row_group_size:
            raise ValueError("rows_per_shard must be a multiple of row_group_size")
        self.root, self.name, self.schema = Path(root), name, schema
        self.rows_per_shard, self.row_group_size = rows_per_shard, row_group_size
        self.compression = compression
        self.parts_dir = self.root / name
        self.parts_dir.mkdir(parents=True, exist_ok=False)
        self._buffer: list[pa.Table] = []
        self._buffered = 0
        self._writer: pq.ParquetWriter | None = None
        self._rows_in_part = 0
        self.parts: list[Path] = []
        self.rows = 0

    def write(self, table: pa.Table) -> None:
        """Append rows (any batch size)."""
        if table.schema != self.schema:
            raise ValueError(f"{self.name}: schema {table.schema} != {self.schema}")
        if table.num_rows == 0:
            return
        self._buffer.append(table)
        self._buffered += table.num_rows
        self.rows += table.num_rows
        if self._buffered >= self.row_group_size:
            buffered = pa.concat_tables(self._buffer)
            n_full = (self._buffered // self.row_group_size) * self.row_group_size
            for start in range(0, n_full, self.row_group_size):
                self._write_group(buffered.slice(start, self.row_group_size))
            rest = buffered.slice(n_full)
            self._buffer = [rest] if rest.num_rows else []
            self._buffered = rest.num_rows

    def close(self) -> Path:
        """Flush, close and return the table's path (``NAME.parquet`` or the ``NAME/`` directory)."""
        if self._buffered or not self.parts:
            rest = pa.concat_tables(self._buffer) if self._buffer else self.schema.empty_table()
            self._write_group(rest, allow_empty=True)
        if self._writer is not None:
            self._writer.close()
            self._writer = None
        if len(self.parts) == 1:
            single = self.root / f"{self.name}.parquet"
            self.parts[0].rename(single)
            self.parts_dir.rmdir()
            self.parts = [single]
            return single
        return self.parts_dir

    def _write_group(self, table: pa.Table, allow_empty: bool = False) -> None:
        if table.num_rows == 0 and not allow_empty:
            return
        if self._writer is None or self._rows_in_part >= self.rows_per_shard:
            if self._writer is not None:
                self._writer.close()
            path = self.parts_dir / f"part-{len(self.parts):05d}.parquet"
            self._writer = _parquet_writer(path, self.schema, self.compression)
            self.parts.append(path)
            self._rows_in_part = 0
        self._writer.write_table(table.combine_chunks(), row_group_size=max(table.num_rows, 1))
        self._rows_in_part += table.num_rows


def write_table(
    root: Path, name: str, table: pa.Table, row_group_size: int, compression: str = "zstd"
) -> Path:
    """Write a whole (small) table as ``root/NAME.parquet`` with fixed row groups."""
    path = Path(root) / f"{name}.parquet"
    with _parquet_writer(path, table.schema, compression) as writer:
        writer.write_table(table, row_group_size=row_group_size)
    return path


def _parquet_writer(path: Path, schema: pa.Schema, compression: str) -> pq.ParquetWriter:
    return pq.ParquetWriter(
        path,
        schema,
        compression=None if compression == "none" else compression,
        use_dictionary=True,
        write_statistics=True,
        version="2.6",
    )


def replace_dir(src: Path, dst: Path) -> None:
    """Move the finished ``src`` directory to ``dst``, replacing an existing ``dst`` last."""
    old = None
    if dst.exists():
        old = dst.with_name(f".{dst.name}.old")
        if old.exists():
            shutil.rmtree(old)
        dst.rename(old)
    src.rename(dst)
    if old is not None:
        shutil.rmtree(old)
