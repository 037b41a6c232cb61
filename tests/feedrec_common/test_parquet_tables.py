"""The one table reader: both layouts, part order, and a clear error for a missing table."""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from feedrec_common.parquet_tables import MissingTableError, read_table, table_files, table_path


def _write(path: Path, values: list[int]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.table({"x": pa.array(values, pa.int64())}), path)


def test_single_file(tmp_path: Path) -> None:
    _write(tmp_path / "t.parquet", [1, 2])
    assert table_path(tmp_path, "t") == tmp_path / "t.parquet"
    assert read_table(tmp_path, "t")["x"].to_pylist() == [1, 2]


@pytest.mark.parametrize("folder", ["t", "t.parquet"])
def test_parts_in_natural_order(tmp_path: Path, folder: str) -> None:
    # The two readers used to disagree here: one sorted "part-10" before "part-2".
    for i in (10, 2, 1):
        _write(tmp_path / folder / f"part-{i}.parquet", [i])
    assert [p.name for p in table_files(tmp_path, "t")] == ["part-1.parquet", "part-2.parquet", "part-10.parquet"]
    assert read_table(tmp_path, "t")["x"].to_pylist() == [1, 2, 10]


def test_missing_table_and_empty_folder(tmp_path: Path) -> None:
    with pytest.raises(MissingTableError, match="missing table 't'"):
        table_files(tmp_path, "t")
    (tmp_path / "t").mkdir()
    with pytest.raises(FileNotFoundError, match="no .parquet parts"):
        read_table(tmp_path, "t")
