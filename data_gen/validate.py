"""``python -m data_gen validate DIR``: check a dataset directory against the contracts.

Checks, each reported as a :class:`Problem` naming the file, the column, the offending rows (0-based
row numbers within that file) and a few example ids:

* every table exists (``NAME.parquet`` or ``NAME/`` parts) with the columns and types of
  :mod:`feedrec_common.parquet_tables`;
* ids are unique (``users.user_id``, ``items.item_id``) and follows are not duplicated;
* referential integrity: creators, followers, followees and interaction users/items exist;
* timestamps: no post before its creator's sign-up, no follow before either sign-up, no
  interaction before the user's sign-up or the post's creation;
* values: ``event`` in ``EVENT_KINDS``, ``position >= 0``, ``dwell_ms >= 0``;
* event order: every click follows (strictly earlier ts) an impression of the same user and post,
  every like / share follows a click of the same user and post;
* files listed in ``manifest.json`` still have their recorded sha256.

Every independent problem is reported in one run: a column that is missing, mistyped or has nulls is
reported and left out of the checks that need it, and every other check still runs (a wrong type in
``users.activity_level`` does not hide a dangling ``follows.followee_id``).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from data_gen.io import arrow_schema
from feedrec_common.hashing import sha256_file
from feedrec_common.parquet_tables import ARROW_TYPES, EVENT_KINDS, TABLES, table_files

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
    """A table read into memory, remembering which file and local row each global row came from.

    Only the contract's columns that are present with the right type in every part and have no nulls
    are kept (``usable``); the others were reported by :meth:`read` and the checks that need them skip.
    """

    def __init__(self, data_dir: Path, name: str, files: list[Path], parts: list[pa.Table], usable: list[str]):
        self.name, self.data_dir, self.files, self.usable = name, data_dir, files, set(usable)
        self.offsets = np.cumsum([0] + [t.num_rows for t in parts])
        self.table = pa.concat_tables(parts) if len(parts) > 1 else parts[0]

    @classmethod
    def read(cls, data_dir: Path, name: str, columns: dict[str, str]) -> tuple[_Table | None, list[Problem]]:
        """The table with its usable columns (``None`` if no file can be read) and its schema problems."""
        try:
            files = table_files(data_dir, name)
            schemas = [pq.read_schema(f) for f in files]
        except (FileNotFoundError, pa.ArrowInvalid, OSError) as exc:
            return None, [Problem(f"{name}.parquet", "", f"cannot be read: {exc}", [], [])]
        problems, usable = [], []
        for column, dtype in columns.items():
            expected, bad = ARROW_TYPES[dtype], {}
            for f, schema in zip(files, schemas):
                if column not in schema.names:
                    bad.setdefault("missing column", []).append(f)
                    continue
                actual = schema.field(column).type
                if actual != expected and not (dtype == "string" and actual == pa.large_string()):
                    bad.setdefault(f"type {actual}, expected {dtype}", []).append(f)
            for message, where in bad.items():  # one problem per kind, naming the first part
                more = f" (also in {len(where) - 1} other parts)" if len(where) > 1 else ""
                problems.append(Problem(str(where[0].relative_to(data_dir)), column, message + more, [], []))
            if not bad:
                usable.append(column)
        try:
            # large_string parts are cast so the parts concatenate.
            schema = arrow_schema({c: columns[c] for c in usable})
            parts = [pq.read_table(f, columns=usable).select(usable).cast(schema) for f in files]
        except (pa.ArrowInvalid, OSError) as exc:
            return None, problems + [Problem(f"{name}.parquet", "", f"cannot be read: {exc}", [], [])]
        table = cls(data_dir, name, files, parts, usable)
        for column in usable:
            if table.table[column].null_count:
                problems.append(table.problem(column, "null values", np.asarray(table.table[column].is_null())))
                table.usable.discard(column)
        return table, problems

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


class _Columns:
    """The usable columns of every readable table: ``has("users.user_id", ...)`` guards a check."""

    def __init__(self, tables: dict[str, _Table]) -> None:
        self.tables = tables

    def has(self, *columns: str) -> bool:
        for qualified in columns:
            name, column = qualified.split(".")
            if name not in self.tables or column not in self.tables[name].usable:
                return False
        return True


class _Ids:
    """Sorted index of one id column, for vectorised existence checks and lookups."""

    def __init__(self, ids: np.ndarray) -> None:
        self.order = np.argsort(ids, kind="stable")
        self.sorted = ids[self.order]

    def __len__(self) -> int:
        return len(self.sorted)

    def lookup(self, query: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(index into the original array, found mask) for each query id."""
        if len(self.sorted) == 0:
            return np.zeros(len(query), np.int64), np.zeros(len(query), bool)
        at = np.minimum(np.searchsorted(self.sorted, query), len(self.sorted) - 1)
        return self.order[at], self.sorted[at] == query


def validate_dataset(data_dir: str | Path) -> list[Problem]:
    """Run every check on ``data_dir``; an empty list means the dataset is valid.

    Each check runs when the columns it reads are usable (present, right type, no nulls), so one run
    reports every independent problem.
    """
    data_dir = Path(data_dir)
    if not data_dir.is_dir():
        return [Problem(str(data_dir), "", "is not a directory", [], [])]
    problems: list[Problem] = []
    tables: dict[str, _Table] = {}
    for name, columns in TABLES.items():
        table, table_problems = _Table.read(data_dir, name, columns)
        problems += table_problems
        if table is not None:
            tables[name] = table
    have = _Columns(tables)
    users, items = tables.get("users"), tables.get("items")
    user_ids = _Ids(users.col("user_id")) if have.has("users.user_id") else None
    item_ids = _Ids(items.col("item_id")) if have.has("items.item_id") else None
    if user_ids is not None:
        problems += _unique(users, "user_id")
    if item_ids is not None:
        problems += _unique(items, "item_id")
    problems += _check_reference(
        have, "items", "creator_id", user_ids, "creator is not in users.user_id",
        "created_ts", "users.signup_ts", "post created before its creator signed up", examples="item_id",
    )[2]
    problems += _check_follows(have, user_ids)
    problems += _check_interactions(have, user_ids, item_ids)
    problems += _check_manifest(data_dir)
    return problems


def _check_reference(
    have: _Columns,
    source: str,
    column: str,
    ids: _Ids | None,
    not_found: str,
    own_ts: str,
    target_ts: str,
    too_early: str,
    examples: str | None = None,
) -> tuple[np.ndarray | None, np.ndarray | None, list[Problem]]:
    """``source.column`` must be in ``ids``, and ``source.own_ts`` not before the referenced row's ``target_ts``.

    Returns the index of each referenced row, the found mask (``None`` when the check cannot run)
    and the problems.
    """
    if ids is None or not have.has(f"{source}.{column}"):
        return None, None, []
    table = have.tables[source]
    values = table.col(column)
    idx, ok = ids.lookup(values)
    problems = [table.problem(column, not_found, ~ok, values)] if (~ok).any() else []
    target, target_column = target_ts.split(".")
    if have.has(f"{source}.{own_ts}", target_ts, *([f"{source}.{examples}"] if examples else [])):
        bad = ok & (table.col(own_ts) < have.tables[target].col(target_column)[np.where(ok, idx, 0)])
        if bad.any():
            problems.append(table.problem(own_ts, too_early, bad, table.col(examples) if examples else values))
    return idx, ok, problems


def _check_follows(have: _Columns, user_ids: _Ids | None) -> list[Problem]:
    problems: list[Problem] = []
    if "follows" not in have.tables:
        return problems
    follows = have.tables["follows"]
    if have.has("follows.follower_id", "follows.followee_id"):
        follower, followee = follows.col("follower_id"), follows.col("followee_id")
        pair = follower.astype(np.int64) * (1 << 32) + (followee.astype(np.int64) & 0xFFFFFFFF)
        problems += _duplicates(
            follows, "followee_id", pair, "duplicate follow (same follower and followee)", follower
        )
    if user_ids is None:
        return problems
    found: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    for column in ("follower_id", "followee_id"):
        if have.has(f"follows.{column}"):
            ids = follows.col(column)
            found[column] = user_ids.lookup(ids)
            if (~found[column][1]).any():
                problems.append(follows.problem(column, "user is not in users.user_id", ~found[column][1], ids))
    if len(found) == 2 and have.has("follows.ts", "users.signup_ts"):
        signup = have.tables["users"].col("signup_ts")
        both_ok = found["follower_id"][1] & found["followee_id"][1]
        latest_signup = np.maximum(
            signup[np.where(both_ok, found["follower_id"][0], 0)], signup[np.where(both_ok, found["followee_id"][0], 0)]
        )
        bad = both_ok & (follows.col("ts") < latest_signup)
        if bad.any():
            problems.append(
                follows.problem(
                    "ts", "follow before the follower's or followee's sign-up", bad, follows.col("follower_id")
                )
            )
    return problems


def _check_interactions(have: _Columns, user_ids: _Ids | None, item_ids: _Ids | None) -> list[Problem]:
    problems: list[Problem] = []
    if "interactions" not in have.tables:
        return problems
    inter = have.tables["interactions"]
    u, u_ok, user_problems = _check_reference(
        have, "interactions", "user_id", user_ids, "user is not in users.user_id",
        "ts", "users.signup_ts", "interaction before the user's sign-up",
    )
    i, i_ok, item_problems = _check_reference(
        have, "interactions", "item_id", item_ids, "item is not in items.item_id",
        "ts", "items.created_ts", "interaction before the item's created_ts",
    )
    problems += user_problems + item_problems
    event = None
    if have.has("interactions.event"):
        event = np.asarray(
            pc.index_in(inter.table["event"], value_set=pa.array(list(EVENT_KINDS))).fill_null(-1)
        )
        bad = event < 0
        if bad.any():
            problems.append(
                inter.problem(
                    "event", f"unknown event (allowed: {', '.join(EVENT_KINDS)})", bad, inter.col("event")
                )
            )
    for column in ("position", "dwell_ms"):
        if have.has(f"interactions.{column}"):
            values = inter.col(column)
            if (values < 0).any():
                problems.append(inter.problem(column, "negative value", values < 0, values))
    if event is not None and u_ok is not None and i_ok is not None and have.has("interactions.ts"):
        problems += _check_event_order(inter, event, u, u_ok, i, i_ok, len(item_ids))
    return problems


def _check_event_order(
    inter: _Table, event: np.ndarray, u: np.ndarray, u_ok: np.ndarray, i: np.ndarray, i_ok: np.ndarray, n_items: int
) -> list[Problem]:
    """Click after an impression, like/share after a click, of the same user and item."""
    problems = []
    uid, iid, ts = inter.col("user_id"), inter.col("item_id"), inter.col("ts")
    ok = u_ok & i_ok
    key = np.where(ok, u.astype(np.int64) * n_items + np.where(ok, i, 0), -1)
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
