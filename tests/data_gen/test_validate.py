"""Plant each kind of corruption in a copy of the tiny dataset and check ``validate`` reports it."""

from __future__ import annotations

import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pandas as pd
import pytest

from data_gen.io import table_files
from data_gen.validate import validate_dataset


def _rewrite(
    data_dir: Path, name: str, change: Callable[[pd.DataFrame], pd.DataFrame], part: int = 0
) -> Path:
    path = table_files(data_dir, name)[part]
    pd.read_parquet(path).pipe(change).to_parquet(path, index=False)
    return path


def _set(column: str, row: int, value) -> Callable[[pd.DataFrame], pd.DataFrame]:
    def change(df: pd.DataFrame) -> pd.DataFrame:
        df.loc[row, column] = value
        return df

    return change


def _click_row(df: pd.DataFrame) -> int:
    return int(df.index[df["event"] == "click"][0])


CORRUPTIONS = {
    "duplicate user id": (
        "users",
        lambda df: _set("user_id", 5, df["user_id"][4])(df),
        "users.parquet",
        "user_id",
        "duplicate user_id",
        5,
    ),
    "unknown followee": (
        "follows",
        _set("followee_id", 3, 999),
        "follows.parquet",
        "followee_id",
        "not in users",
        3,
    ),
    "unknown item": (
        "interactions",
        _set("item_id", 10, 424242),
        "part-00000.parquet",
        "item_id",
        "not in items",
        10,
    ),
    "interaction before post": (
        "interactions",
        lambda df: _set("ts", 20, 1_000)(df),
        "part-00000.parquet",
        "ts",
        "before the item's created_ts",
        20,
    ),
    "post before creator signup": (
        "items",
        _set("created_ts", 7, 1_000),
        "items.parquet",
        "created_ts",
        "before its creator signed up",
        7,
    ),
    "unknown event": (
        "interactions",
        _set("event", 30, "view"),
        "part-00000.parquet",
        "event",
        "unknown event",
        30,
    ),
    "click without impression": (
        "interactions",
        lambda df: _set("item_id", _click_row(df), int(df["item_id"].max()) + 0)(df),
        "part-00000.parquet",
        "event",
        "click without an earlier impression",
        None,
    ),
    "negative position": (
        "interactions",
        _set("position", 40, -3),
        "part-00000.parquet",
        "position",
        "negative",
        40,
    ),
    "wrong type": (
        "users",
        lambda df: df.astype({"activity_level": "float64"}),
        "users.parquet",
        "activity_level",
        "expected float32",
        None,
    ),
    "missing column": (
        "follows",
        lambda df: df.drop(columns=["ts"]),
        "follows.parquet",
        "ts",
        "missing column",
        None,
    ),
}


@pytest.fixture()
def corrupt_copy(tiny_dataset: Path, tmp_path: Path) -> Path:
    copy = tmp_path / "copy"
    shutil.copytree(tiny_dataset, copy)
    return copy


def test_clean_dataset_is_valid(tiny_dataset: Path) -> None:
    assert [str(p) for p in validate_dataset(tiny_dataset)] == []


@pytest.mark.parametrize("kind", list(CORRUPTIONS))
def test_corruption_is_reported(corrupt_copy: Path, kind: str) -> None:
    table, change, file, column, message, row = CORRUPTIONS[kind]
    _rewrite(corrupt_copy, table, change)
    problems = validate_dataset(corrupt_copy)
    hits = [p for p in problems if p.file.endswith(file) and p.column == column and message in p.message]
    assert hits, [str(p) for p in problems]
    if row is not None:
        assert row in hits[0].rows
        assert f"rows {row}" in str(hits[0]) or f", {row}" in str(hits[0])
    assert any("sha256 differs" in p.message for p in problems)  # the manifest notices the edit too


def test_click_without_impression_names_the_pair(corrupt_copy: Path) -> None:
    path = table_files(corrupt_copy, "interactions")[0]
    df = pd.read_parquet(path)
    row = _click_row(df)
    user = int(df.loc[row, "user_id"])
    df.loc[row, "item_id"] = int(df["item_id"].max())
    df.to_parquet(path, index=False)
    (hit,) = [p for p in validate_dataset(corrupt_copy) if "click without" in p.message]
    assert row in hit.rows and f"user {user}/item" in str(hit)


def test_cli_reports_corruption_and_exits_nonzero(corrupt_copy: Path) -> None:
    _rewrite(corrupt_copy, "follows", _set("follower_id", 2, 77))
    run = subprocess.run(
        [sys.executable, "-m", "data_gen", "validate", str(corrupt_copy)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert run.returncode == 1
    assert "follows.parquet: column follower_id: user is not in users.user_id" in run.stderr
    assert "rows 2" in run.stderr and "77" in run.stderr
    assert "Traceback" not in run.stderr


def test_cli_accepts_valid_dataset(tiny_dataset: Path) -> None:
    run = subprocess.run(
        [sys.executable, "-m", "data_gen", "validate", str(tiny_dataset)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert run.returncode == 0, run.stderr
    assert "valid" in run.stdout
