"""Plant each kind of corruption in a copy of the tiny dataset and check ``validate`` reports it."""

from __future__ import annotations

import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pandas as pd
import pytest

from data_gen.validate import validate_dataset
from feedrec_common.parquet_tables import table_files


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


# Issue 11 item 11: a type error used to end the run before the reference and duplicate checks, so
# fixing one problem revealed the next. Every independent problem must come out of one run.
def test_every_independent_problem_in_one_run(corrupt_copy: Path) -> None:
    _rewrite(corrupt_copy, "users", lambda df: df.astype({"activity_level": "float64"}))  # type error
    _rewrite(corrupt_copy, "follows", _set("followee_id", 3, 999))  # dangling reference
    _rewrite(corrupt_copy, "items", lambda df: _set("item_id", 6, df["item_id"][2])(df))  # duplicate id
    _rewrite(corrupt_copy, "interactions", _set("event", 30, "view"))  # bad value
    problems = validate_dataset(corrupt_copy)
    found = {(p.file.split("/")[-1], p.column, p.message.split(" (")[0]) for p in problems}
    assert ("users.parquet", "activity_level", "type double, expected float32") in found, found
    assert ("follows.parquet", "followee_id", "user is not in users.user_id") in found, found
    assert ("items.parquet", "item_id", "duplicate item_id") in found, found
    assert ("part-00000.parquet", "event", "unknown event") in found, found


def test_unusable_column_skips_only_the_checks_that_read_it(corrupt_copy: Path) -> None:
    # interactions.item_id as strings: the item checks cannot run, the user checks still do.
    _rewrite(corrupt_copy, "interactions", lambda df: _set("user_id", 12, 424242)(df.astype({"item_id": str})))
    _rewrite(corrupt_copy, "follows", lambda df: pd.concat([df, df.iloc[[0]]], ignore_index=True))
    problems = validate_dataset(corrupt_copy)
    text = [str(p) for p in problems]
    (typed,) = [p for p in problems if p.column == "item_id" and "expected int64" in p.message]
    assert typed.file.endswith("part-00000.parquet"), text
    (dangling,) = [p for p in problems if p.column == "user_id" and "not in users" in p.message]
    assert 12 in dangling.rows and "424242" in str(dangling), text
    assert any("duplicate follow" in p.message for p in problems), text
    # No check read the mistyped column (so no bogus "item is not in items" on every row).
    assert not any("item is not in items" in p.message for p in problems), text


def test_missing_table_does_not_hide_the_others(corrupt_copy: Path) -> None:
    (corrupt_copy / "follows.parquet").unlink()
    _rewrite(corrupt_copy, "items", _set("creator_id", 4, 31337))
    problems = validate_dataset(corrupt_copy)
    text = [str(p) for p in problems]
    assert any(p.file == "follows.parquet" and "cannot be read" in p.message for p in problems), text
    assert any(p.column == "creator_id" and 4 in p.rows for p in problems), text
