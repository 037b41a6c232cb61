"""``python -m data_gen validate DIR``: check a dataset directory against the contracts.

Checks, each reported as a :class:`Problem` naming the file, the column, the offending rows (0-based
row numbers within that file) and a few example ids:

* every table exists (``NAME.parquet`` or ``NAME/`` parts) with the columns and types of
  :mod:`recsys.schemas`;
* ids are unique (``users.user_id``, ``items.item_id``) and follows are not duplicated;
* referential integrity: creators, followers, followees and interaction users/items exist;
* timestamps: no post before its creator's sign-up, no follow before either sign-up, no
  interaction before the user's sign-up or the post's creation;
* values: ``event`` in ``EVENT_KINDS``, ``position >= 0``, ``dwell_ms >= 0``;
* event order: every click follows (strictly earlier ts) an impression of the same user and post,
  every like / share follows a click of the same user and post;
* files listed in ``manifest.json`` still have their recorded sha256.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from data_gen.io import ARROW_TYPES, table_files
from recsys.hashing import sha256_file
from recsys.schemas import EVENT_KINDS, TABLES

MAX_EXAMPLES = 5


@dataclass
class Problem:
    """One failed check."""

    file: str
    column: str
    message: str
    rows: list[int]
    examples: list[str]
    n_rows: int = 0

    def __str__(self) -> str:
        where = f"{self.file}: column {self.column}" if self.column else self.file
        text = f"{where}: {self.message}"
        if self.n_rows:
            text += (
                f" ({self.n_rows} row{'s' if self.n_rows != 1 else ''}; rows {', '.join(map(str, self.rows))}"
            )
            text += f"{', ...' if self.n_rows > len(self.rows) else ''}"
            if self.examples:
                text += f"; e.g. {', '.join(self.examples)}"
            text += ")"
        return text


class _Table:
    """A table read into memory, remembering which file and local row each global row came from."""

    def __init__(self, data_dir: Path, name: str) -> None:
        self.name = name
        self.files = table_files(data_dir, name)
        self.data_dir = data_dir
        tables = [pq.read_table(f) for f in self.files]
        self.offsets = np.cumsum([0] + [t.num_rows for t in tables])
        self.table = pa.concat_tables(tables, promote_options="permissive") if len(tables) > 1 else tables[0]

    def col(self, name: str) -> np.ndarray:
        return self.table[name].to_numpy()

    def problem(
        self, column: str, message: str, bad: np.ndarray, examples: np.ndarray | None = None
    ) -> Problem:
        """Problem for global rows ``bad`` (bool mask or indices), located in the first offending file."""
        idx = np.flatnonzero(bad) if bad.dtype == bool else np.sort(bad)
        part = int(np.searchsorted(self.offsets, idx[0], side="right") - 1)
        local = idx[(idx >= self.offsets[part]) & (idx < self.offsets[part + 1])] - self.offsets[part]
        file = str(self.files[part].relative_to(self.data_dir))
        if len(self.files) > 1 and len(local) < len(idx):
            message += f" (also in other parts: {len(idx) - len(local)} rows)"
        ex = [] if examples is None else [str(x) for x in np.asarray(examples)[idx[:MAX_EXAMPLES]]]
        return Problem(file, column, message, [int(r) for r in local[:MAX_EXAMPLES]], ex, n_rows=len(idx))


def validate_dataset(data_dir: str | Path) -> list[Problem]:
    """Run every check on ``data_dir``; an empty list means the dataset is valid."""
    data_dir = Path(data_dir)
    if not data_dir.is_dir():
        return [Problem(str(data_dir), "", "is not a directory", [], [])]
    problems: list[Problem] = []
    tables: dict[str, _Table] = {}
    for name, columns in TABLES.items():
        try:
            table = _Table(data_dir, name)
        except (FileNotFoundError, pa.ArrowInvalid, OSError) as exc:
            problems.append(Problem(f"{name}.parquet", "", f"cannot be read: {exc}", [], []))
            continue
        schema_problems = _check_schema(table, columns)
        problems += schema_problems
        if not schema_problems:
            tables[name] = table
    if len(tables) < len(TABLES):  # later checks need every table with the right columns
        return problems + _check_manifest(data_dir)

    users, items, follows, inter = (tables[n] for n in ("users", "items", "follows", "interactions"))
    user_id, signup = users.col("user_id"), users.col("signup_ts")
    item_id = items.col("item_id")
    problems += _unique(users, "user_id") + _unique(items, "item_id")
    user_sorted, user_order = _sorted_index(user_id)
    item_sorted, item_order = _sorted_index(item_id)

    creator = items.col("creator_id")
    creator_idx, ok = _lookup(user_sorted, user_order, creator)
    if (~ok).any():
        problems.append(items.problem("creator_id", "creator is not in users.user_id", ~ok, creator))
    bad = ok & (items.col("created_ts") < signup[np.where(ok, creator_idx, 0)])
    if bad.any():
        problems.append(
            items.problem("created_ts", "post created before its creator signed up", bad, item_id)
        )

    follower, followee, fts = follows.col("follower_id"), follows.col("followee_id"), follows.col("ts")
    both_ok = np.ones(len(follower), dtype=bool)
    latest_signup = np.full(len(follower), np.iinfo(np.int64).min)
    for column, ids in (("follower_id", follower), ("followee_id", followee)):
        idx, ok = _lookup(user_sorted, user_order, ids)
        if (~ok).any():
            problems.append(follows.problem(column, "user is not in users.user_id", ~ok, ids))
        both_ok &= ok
        latest_signup = np.maximum(latest_signup, np.where(ok, signup[np.where(ok, idx, 0)], latest_signup))
    bad = both_ok & (fts < latest_signup)
    if bad.any():
        problems.append(
            follows.problem("ts", "follow before the follower's or followee's sign-up", bad, follower)
        )
    pair = follower.astype(np.int64) * (1 << 32) + (followee.astype(np.int64) & 0xFFFFFFFF)
    problems += _duplicates(
        follows, "followee_id", pair, "duplicate follow (same follower and followee)", follower
    )

    problems += _check_interactions(inter, user_sorted, user_order, signup, item_sorted, item_order, items)
    problems += _check_manifest(data_dir)
    return problems


def _check_interactions(
    inter: _Table,
    user_sorted: np.ndarray,
    user_order: np.ndarray,
    signup: np.ndarray,
    item_sorted: np.ndarray,
    item_order: np.ndarray,
    items: _Table,
) -> list[Problem]:
    problems = []
    uid, iid, ts = inter.col("user_id"), inter.col("item_id"), inter.col("ts")
    u, u_ok = _lookup(user_sorted, user_order, uid)
    i, i_ok = _lookup(item_sorted, item_order, iid)
    if (~u_ok).any():
        problems.append(inter.problem("user_id", "user is not in users.user_id", ~u_ok, uid))
    if (~i_ok).any():
        problems.append(inter.problem("item_id", "item is not in items.item_id", ~i_ok, iid))
    bad = u_ok & (ts < signup[np.where(u_ok, u, 0)])
    if bad.any():
        problems.append(inter.problem("ts", "interaction before the user's sign-up", bad, uid))
    bad = i_ok & (ts < items.col("created_ts")[np.where(i_ok, i, 0)])
    if bad.any():
        problems.append(inter.problem("ts", "interaction before the item's created_ts", bad, iid))
    event = np.asarray(pc.index_in(inter.table["event"], value_set=pa.array(list(EVENT_KINDS))).fill_null(-1))
    bad = event < 0
    if bad.any():
        problems.append(
            inter.problem(
                "event", f"unknown event (allowed: {', '.join(EVENT_KINDS)})", bad, inter.col("event")
            )
        )
    for column in ("position", "dwell_ms"):
        values = inter.col(column)
        if (values < 0).any():
            problems.append(inter.problem(column, "negative value", values < 0, values))

    # Event order: click after an impression, like/share after a click, same user and item.
    ok = u_ok & i_ok
    key = np.where(ok, u.astype(np.int64) * len(item_sorted) + np.where(ok, i, 0), -1)
    for later, earlier in (("click", "impression"), ("like", "click"), ("share", "click")):
        e_later, e_earlier = EVENT_KINDS.index(later), EVENT_KINDS.index(earlier)
        rows = np.flatnonzero((event == e_later) & ok)
        prev = (event == e_earlier) & ok
        k_prev, t_prev = key[prev], ts[prev]
        order = np.lexsort((t_prev, k_prev))  # by key, earliest first
        k_prev, t_prev = k_prev[order], t_prev[order]
        at = np.minimum(np.searchsorted(k_prev, key[rows]), max(len(k_prev) - 1, 0))
        has = (
            (k_prev[at] == key[rows]) & (t_prev[at] < ts[rows]) if len(k_prev) else np.zeros(len(rows), bool)
        )
        if (~has).any():
            ex = np.array(
                [
                    f"user {a}/item {b}"
                    for a, b in zip(uid[rows[~has][:MAX_EXAMPLES]], iid[rows[~has][:MAX_EXAMPLES]])
                ]
            )
            p = inter.problem(
                "event", f"{later} without an earlier {earlier} of the same user and item", rows[~has]
            )
            p.examples = list(ex)
            problems.append(p)
    return problems


def _check_schema(table: _Table, columns: dict[str, str]) -> list[Problem]:
    problems = []
    for f in table.files:
        schema = pq.read_schema(f)
        for name, dtype in columns.items():
            if name not in schema.names:
                problems.append(Problem(str(f.relative_to(table.data_dir)), name, "missing column", [], []))
                continue
            actual = schema.field(name).type
            expected = ARROW_TYPES[dtype]
            if actual != expected and not (dtype == "string" and actual == pa.large_string()):
                problems.append(
                    Problem(
                        str(f.relative_to(table.data_dir)), name, f"type {actual}, expected {dtype}", [], []
                    )
                )
        if problems:  # one part's schema problems explain the others
            return problems
    for name in columns:
        if table.table[name].null_count:
            problems.append(table.problem(name, "null values", np.asarray(table.table[name].is_null())))
    return problems


def _unique(table: _Table, column: str) -> list[Problem]:
    ids = table.col(column)
    return _duplicates(table, column, ids, f"duplicate {column}", ids)


def _duplicates(
    table: _Table, column: str, keys: np.ndarray, message: str, examples: np.ndarray
) -> list[Problem]:
    order = np.argsort(keys, kind="stable")
    dup = np.zeros(len(keys), dtype=bool)
    dup[order[1:]] = keys[order[1:]] == keys[order[:-1]]
    return [table.problem(column, message, dup, examples)] if dup.any() else []


def _sorted_index(ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    order = np.argsort(ids, kind="stable")
    return ids[order], order


def _lookup(sorted_ids: np.ndarray, order: np.ndarray, query: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(index into the original array, found mask) for each query id."""
    if len(sorted_ids) == 0:
        return np.zeros(len(query), np.int64), np.zeros(len(query), bool)
    at = np.minimum(np.searchsorted(sorted_ids, query), len(sorted_ids) - 1)
    return order[at], sorted_ids[at] == query


def _check_manifest(data_dir: Path) -> list[Problem]:
    path = data_dir / "manifest.json"
    if not path.is_file():
        return [Problem("manifest.json", "", "missing", [], [])]
    try:
        files = json.loads(path.read_text())["files"]
    except (json.JSONDecodeError, KeyError) as exc:
        return [Problem("manifest.json", "", f"unreadable: {exc}", [], [])]
    problems = []
    for rel, info in sorted(files.items()):
        f = data_dir / rel
        if not f.is_file():
            problems.append(Problem(rel, "", "listed in manifest.json but missing", [], []))
        elif sha256_file(f) != info["sha256"]:
            problems.append(
                Problem(rel, "", "sha256 differs from manifest.json (file changed after generation)", [], [])
            )
    return problems
