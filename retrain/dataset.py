"""Flushed event logs -> a data_gen dataset directory that the usual loaders read.

The base dataset's tables are copied; its ``interactions`` get the logged events appended, in the
data_gen format: each exposed slot becomes an ``impression`` row (0-based ``position``: the event log
numbers slots from 1), each outcome a ``click`` / ``like`` / ``share`` row at the slot it was shown in.
``manifest.json`` is rewritten (file hashes, ``time.end_ts`` moved to the last event, and a
``retrain`` section with the base hash and the events hash), so ``python -m data_gen validate`` and
every trainer read the result unchanged.

What is dropped, and counted in the result, rather than written (the validator would refuse it):
users or posts the base dataset does not know, events before the user's sign-up or the post's
creation, a like / share without an earlier click of the same user and post in the same request.
An outcome's time is moved to one second after its impression when both fall in the same second
(data_gen timestamps are whole seconds and a click must strictly follow its impression).
"""

from __future__ import annotations

import json
import shutil
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa

from data_gen.io import ShardedParquetWriter, make_table
from feedrec_common.hashing import sha256_arrays, sha256_file
from feedrec_common.parquet_tables import INTERACTIONS, read_table, table_path
from monitoring.events import read_events

__all__ = ["LogDataset", "logged_interactions", "build_dataset"]

ROWS_PER_SHARD = 1 << 20
ROW_GROUP = 1 << 16
OUTCOME_ORDER = {"click": 1, "like": 2, "share": 3}


@dataclass(frozen=True)
class LogDataset:
    """What :func:`build_dataset` wrote.

    Attributes:
        data_dir (str): The new dataset directory.
        dataset_hash (str): ``manifest.json``'s hash over every data file (as data_gen computes it).
        events_hash (str): Hash of the interaction rows derived from the logs.
        base_hash (str): The base dataset's ``dataset_hash``.
        counts (dict): Rows written per event kind and rows dropped per reason.
        end_ts (int): ``time.end_ts`` of the new dataset.
    """

    data_dir: str
    dataset_hash: str
    events_hash: str
    base_hash: str
    counts: dict
    end_ts: int


def logged_interactions(
    exposures: pd.DataFrame, outcomes: pd.DataFrame, users: pd.DataFrame, items: pd.DataFrame
) -> tuple[pd.DataFrame, dict[str, int]]:
    """Interaction rows (data_gen columns) of the logged events, and the counts of what was dropped.

    Args:
        exposures (DataFrame): Event-log exposures (``request_id, ts, user, items, positions``).
        outcomes (DataFrame): Event-log outcomes (``request_id, ts, user, item, kind``).
        users (DataFrame): ``user_id, signup_ts`` of the base dataset.
        items (DataFrame): ``item_id, created_ts`` of the base dataset.
    """
    counts: dict[str, int] = {}
    lengths = exposures["items"].map(len).to_numpy() if len(exposures) else np.zeros(0, np.int64)
    slots = pd.DataFrame(
        {
            "request_id": np.repeat(exposures["request_id"].to_numpy(), lengths),
            "user_id": np.repeat(_int_ids(exposures["user"]), lengths),
            "item_id": _int_ids(pd.Series(np.concatenate(list(exposures["items"])) if len(exposures) else [])),
            "position": (np.concatenate(list(exposures["positions"])) - 1) if len(exposures) else np.zeros(0, np.int64),
            "ts": np.repeat(np.floor(exposures["ts"].to_numpy(np.float64)).astype(np.int64), lengths),
        }
    )  # fmt: skip
    slots = _known(slots, users, items, counts, "impressions")
    slots = slots.drop_duplicates(["request_id", "item_id"])
    out = outcomes.copy()
    out["user_id"], out["item_id"] = _int_ids(out["user"]), _int_ids(out["item"])
    joined = out.merge(slots, on=["request_id", "item_id"], how="inner", suffixes=("", "_imp"))
    counts["outcomes_without_impression"] = int(len(out) - len(joined))
    joined = joined[joined["user_id"] == joined["user_id_imp"]]
    joined = joined[joined["kind"].isin(list(OUTCOME_ORDER))]
    joined = joined.sort_values(["request_id", "item_id", "ts"], kind="stable")
    joined["rank"] = joined["kind"].map(OUTCOME_ORDER)
    # One row per (request, item, kind); a like / share needs a click first (the validator's funnel),
    # and each step one second after the previous one at least.
    joined = joined.drop_duplicates(["request_id", "item_id", "kind"])
    has_click = joined.groupby(["request_id", "item_id"])["rank"].transform(lambda r: (r == 1).any())
    counts["engagements_without_click"] = int((~has_click).sum())
    joined = joined[has_click.to_numpy()].sort_values(["request_id", "item_id", "rank"], kind="stable")
    ts = np.floor(joined["ts"].to_numpy(np.float64)).astype(np.int64)
    ts = np.maximum(ts, joined["ts_imp"].to_numpy() + joined["rank"].to_numpy())
    engagements = pd.DataFrame(
        {"user_id": joined["user_id"].to_numpy(), "item_id": joined["item_id"].to_numpy(), "ts": ts,
         "event": joined["kind"].to_numpy(), "position": joined["position"].to_numpy()}
    )  # fmt: skip
    impressions = slots.assign(event="impression")[["user_id", "item_id", "ts", "event", "position"]]
    rows = pd.concat([impressions, engagements], ignore_index=True)
    rows["dwell_ms"] = 0
    rows = rows.sort_values(["ts", "user_id", "item_id"], kind="stable").reset_index(drop=True)
    for kind in ("impression", *OUTCOME_ORDER):
        counts[kind] = int((rows["event"] == kind).sum())
    return rows, counts


def _int_ids(values: pd.Series) -> np.ndarray:
    try:
        return pd.to_numeric(values, errors="raise").to_numpy(np.int64)
    except (ValueError, TypeError):
        raise ValueError("the logs carry non-integer user or item ids; data_gen datasets use int64 ids") from None


def _known(slots: pd.DataFrame, users: pd.DataFrame, items: pd.DataFrame, counts: dict, what: str) -> pd.DataFrame:
    signup = pd.Series(users["signup_ts"].to_numpy(), index=users["user_id"].to_numpy())
    created = pd.Series(items["created_ts"].to_numpy(), index=items["item_id"].to_numpy())
    s_ts = signup.reindex(slots["user_id"].to_numpy()).to_numpy()
    c_ts = created.reindex(slots["item_id"].to_numpy()).to_numpy()
    known = ~(np.isnan(s_ts) | np.isnan(c_ts))
    counts[f"{what}_unknown_user_or_item"] = int((~known).sum())
    in_time = known & (slots["ts"].to_numpy() >= np.nan_to_num(s_ts)) & (slots["ts"].to_numpy() >= np.nan_to_num(c_ts))
    counts[f"{what}_before_signup_or_creation"] = int((known & ~in_time).sum())
    return slots[in_time].reset_index(drop=True)


def build_dataset(base_dir: str | Path, events_dir: str | Path, out_dir: str | Path) -> LogDataset:
    """Write ``out_dir``: ``base_dir`` plus the logged events of ``events_dir`` (module docstring).

    Built in a sibling temporary directory and renamed into place, so a crash leaves no half dataset.

    Raises:
        FileNotFoundError: no flushed events (the message says to run ``abtest flush``) or no base table.
        ValueError: the logs hold no event the base dataset can take.
    """
    base_dir, out_dir = Path(base_dir), Path(out_dir)
    base_manifest = json.loads((base_dir / "manifest.json").read_text())
    exposures, outcomes = read_events(events_dir)
    users = read_table(base_dir, "users", ["user_id", "signup_ts"]).to_pandas()
    items = read_table(base_dir, "items", ["item_id", "created_ts"]).to_pandas()
    rows, counts = logged_interactions(exposures, outcomes, users, items)
    if not counts["impression"]:
        raise ValueError(f"{events_dir}: no logged impression of a user and post known to {base_dir}")
    arrays = {c: rows[c].to_numpy().astype(INTERACTIONS[c].replace("string", "str")) for c in INTERACTIONS}
    events_hash = sha256_arrays(*[arrays[c] for c in ("user_id", "item_id", "ts", "position")],
                                np.frombuffer("|".join(arrays["event"]).encode(), dtype=np.uint8))  # fmt: skip

    tmp = out_dir.with_name(f".{out_dir.name}.tmp")
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir(parents=True)
    for name in ("users", "items", "follows"):
        src = table_path(base_dir, name)
        (shutil.copytree if src.is_dir() else shutil.copy2)(src, tmp / src.name)
    base = read_table(base_dir, "interactions", list(INTERACTIONS))
    logged = make_table(INTERACTIONS, arrays)
    merged = pa.concat_tables([base.cast(logged.schema), logged])
    # stable by time: base rows keep their order, logged rows come after base rows of the same second
    order = np.argsort(merged["ts"].to_numpy(), kind="stable")
    merged = merged.take(pa.array(order))
    writer = ShardedParquetWriter(tmp, "interactions", logged.schema, ROWS_PER_SHARD, ROW_GROUP)
    writer.write(merged)
    interactions_path = writer.close()

    end_ts = max(int(base_manifest["time"]["end_ts"]), int(arrays["ts"].max()) + 1)
    manifest = dict(base_manifest)
    manifest["name"] = f"{base_manifest.get('name', base_dir.name)}+logs"
    manifest["time"] = {**base_manifest["time"], "end_ts": end_ts}
    manifest["row_counts"] = {**base_manifest.get("row_counts", {}), "interactions": merged.num_rows}
    manifest["layout"] = {"interactions": interactions_path.name + ("/" if interactions_path.is_dir() else "")}
    base_hash = str(base_manifest.get("dataset_hash", ""))
    manifest["retrain"] = {"base": str(base_dir), "base_dataset_hash": base_hash,
                           "events": str(events_dir), "events_hash": events_hash, "counts": counts}  # fmt: skip
    files = {str(p.relative_to(tmp)): {"sha256": sha256_file(p), "bytes": p.stat().st_size}
             for p in sorted(tmp.rglob("*")) if p.is_file()}  # fmt: skip
    digest = sha256_arrays(np.frombuffer("".join(f"{k}:{v['sha256']}\n" for k, v in files.items()).encode(), np.uint8))
    manifest["files"], manifest["dataset_hash"] = files, digest
    (tmp / "manifest.json").write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n")
    if out_dir.exists():
        shutil.rmtree(out_dir)
    tmp.rename(out_dir)
    return LogDataset(str(out_dir), digest, events_hash, base_hash, counts, end_ts)


def as_dict(result: LogDataset) -> dict:
    """JSON form for the loop's state file."""
    return asdict(result)
