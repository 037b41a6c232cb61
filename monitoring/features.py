"""The monitored inputs: from exposures and outcomes (the event log's frames) to one row per request.

Lookups come from the served model's training data (a data_gen dataset directory), never from
``truth/``: :class:`Catalog` holds each user's ``activity_level`` and engagement count (its *history*:
what the model knows about the user) and each post's ``created_ts``, ``topic``, ``media_type`` and
training clicks (its *popularity*).

:func:`traffic_tables` turns the frames into

* ``requests``: one row per served list: ``ts``, ``user``, ``arm``, the request inputs
  (``user_activity``, ``history_length``, ``cold_user``) and the list's served-item summaries
  (``item_age_hours``: median age of the list's posts; ``item_popularity``: mean ``log1p`` training
  clicks; ``score``: mean model score, when exposures carry a ``scores`` column);
* ``slots``: one row per served item with its ``request`` row, ``item_topic``, ``item_media_type``,
  ``clicked`` and ``weight = 1 / list length``.

Why one value per request and not per slot: the items of a list, and the lists of one user, are far
from independent, so per-slot two-sample tests would count 20 correlated draws as 20 and raise false
alarms. Categorical item inputs are counted with slot weights ``1 / list length`` (each request
contributes a total of 1, spread over its categories): the variance of a list's share vector is at most
that of one multinomial draw, so the chi-square test on these counts is conservative rather than
anti-conservative. Windows keep one request per user (:func:`first_request_per_user`) for the same
reason.

Optional exposure columns (the service does not log them yet; the simulator does):
``scores`` (a list of floats per exposure, aligned with ``items``) and ``item_ages`` (seconds since
each post's creation when it was served; default ``ts - created_ts``).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Final, Literal

import numpy as np
import pandas as pd

__all__ = [
    "InputSpec",
    "INPUTS",
    "CTR_PREFIX",
    "Catalog",
    "load_catalog",
    "Traffic",
    "traffic_tables",
    "first_request_per_user",
    "window_index",
]

Kind = Literal["continuous", "categorical"]


@dataclass(frozen=True)
class InputSpec:
    """One monitored input.

    Attributes:
        name (str): Input name (gauge label, report row).
        kind (str): ``continuous`` (two-sample KS) or ``categorical`` (chi-square + PSI).
        group (str): ``request``, ``item``, ``score`` or ``outcome``.
        description (str): One line for the report.
    """

    name: str
    kind: Kind
    group: str
    description: str


#: Inputs with one column each; CTR per arm is added per arm as ``ctr[<arm>]``.
INPUTS: Final[tuple[InputSpec, ...]] = (
    InputSpec("user_activity", "continuous", "request", "activity_level of the requesting user"),
    InputSpec("history_length", "continuous", "request", "engagements of the user in the training data"),
    InputSpec("cold_user", "categorical", "request", "share of requests from cold users"),
    InputSpec("item_age_hours", "continuous", "item", "median age of the served posts, hours"),
    InputSpec("item_popularity", "continuous", "item", "mean log1p(training clicks) of the served posts"),
    InputSpec("item_topic", "categorical", "item", "topic of the served posts"),
    InputSpec("item_media_type", "categorical", "item", "media type of the served posts"),
    InputSpec("score", "continuous", "score", "mean model score of the served list"),
)
CTR_PREFIX: Final = "ctr"
#: Categorical inputs counted per slot (weight 1 / list length), not per request.
SLOT_CATEGORICALS: Final = ("item_topic", "item_media_type")


def ctr_input(arm: str) -> InputSpec:
    """The outcome input of one arm: clicked and not-clicked slots (weighted per request)."""
    return InputSpec(f"{CTR_PREFIX}[{arm}]", "categorical", "outcome", f"click-through of arm {arm}")


@dataclass(frozen=True)
class Catalog:
    """Lookups from the served model's training data (sorted external ids and aligned attributes).

    Attributes:
        user_ids (np.ndarray): int64, sorted.
        user_activity (np.ndarray): float64 ``activity_level``.
        user_history (np.ndarray): int64 engagements (click, like, share) in the training data.
        item_ids (np.ndarray): int64, sorted.
        item_created_ts (np.ndarray): int64.
        item_topic (np.ndarray): str topic labels.
        item_media_type (np.ndarray): str.
        item_popularity (np.ndarray): float64 ``log1p`` training clicks.
        cold_threshold (int): A user with at most this many engagements is cold.
        source (str): The dataset directory as given.
        dataset_hash (str): ``manifest.json``'s ``dataset_hash`` ("" when absent).
    """

    user_ids: np.ndarray
    user_activity: np.ndarray
    user_history: np.ndarray
    item_ids: np.ndarray
    item_created_ts: np.ndarray
    item_topic: np.ndarray
    item_media_type: np.ndarray
    item_popularity: np.ndarray
    cold_threshold: int
    source: str
    dataset_hash: str

    def user_rows(self, users: np.ndarray) -> np.ndarray:
        """Row of each external user id, -1 where unknown (strings that are not ints are unknown)."""
        return _rows(self.user_ids, users)

    def item_rows(self, items: np.ndarray) -> np.ndarray:
        """Row of each external item id, -1 where unknown."""
        return _rows(self.item_ids, items)


def _as_int_ids(values: np.ndarray) -> np.ndarray:
    """External ids as int64; ids that are not integers become a sentinel that matches nothing."""
    values = np.asarray(values)
    if values.dtype.kind in "iu":
        return values.astype(np.int64)
    out = np.full(len(values), np.iinfo(np.int64).min, dtype=np.int64)
    for i, v in enumerate(values):
        try:
            out[i] = int(v)
        except (TypeError, ValueError):
            pass
    return out


def _rows(sorted_ids: np.ndarray, query: np.ndarray) -> np.ndarray:
    query = _as_int_ids(query)
    if len(sorted_ids) == 0:
        return np.full(len(query), -1, dtype=np.int64)
    at = np.minimum(np.searchsorted(sorted_ids, query), len(sorted_ids) - 1)
    return np.where(sorted_ids[at] == query, at, -1).astype(np.int64)


def load_catalog(data_dir: str | Path, cold_threshold: int = 2) -> Catalog:
    """Read the lookups of :class:`Catalog` from a data_gen dataset directory (not ``truth/``).

    Raises:
        FileNotFoundError: a table is missing (the message names the directory and table).
    """
    import pyarrow.compute as pc
    import pyarrow.dataset as ds

    from feedrec_common.parquet_tables import ENGAGEMENT_EVENTS, read_table, table_path

    data_dir = Path(data_dir)
    users = read_table(data_dir, "users", ["user_id", "activity_level"])
    items = read_table(data_dir, "items", ["item_id", "created_ts", "topic", "media_type"])
    events = ds.dataset(table_path(data_dir, "interactions"), format="parquet").to_table(
        columns=["user_id", "item_id", "event"], filter=ds.field("event").isin(list(ENGAGEMENT_EVENTS))
    )
    user_ids = users["user_id"].to_numpy().astype(np.int64)
    item_ids = items["item_id"].to_numpy().astype(np.int64)
    u_order, i_order = np.argsort(user_ids, kind="stable"), np.argsort(item_ids, kind="stable")
    user_ids, item_ids = user_ids[u_order], item_ids[i_order]
    u_rows = _rows(user_ids, events["user_id"].to_numpy())
    history = np.bincount(u_rows[u_rows >= 0], minlength=len(user_ids)).astype(np.int64)
    clicks = events.filter(pc.equal(events["event"], "click"))
    i_rows = _rows(item_ids, clicks["item_id"].to_numpy())
    item_clicks = np.bincount(i_rows[i_rows >= 0], minlength=len(item_ids))
    manifest = data_dir / "manifest.json"
    dataset_hash = json.loads(manifest.read_text()).get("dataset_hash", "") if manifest.is_file() else ""
    return Catalog(
        user_ids=user_ids,
        user_activity=users["activity_level"].to_numpy().astype(np.float64)[u_order],
        user_history=history,
        item_ids=item_ids,
        item_created_ts=items["created_ts"].to_numpy().astype(np.int64)[i_order],
        item_topic=np.asarray([str(t) for t in items["topic"].to_numpy()[i_order]], dtype=object),
        item_media_type=np.asarray(items["media_type"].to_pylist(), dtype=object)[i_order],
        item_popularity=np.log1p(item_clicks.astype(np.float64)),
        cold_threshold=int(cold_threshold),
        source=str(data_dir),
        dataset_hash=str(dataset_hash),
    )


@dataclass(frozen=True)
class Traffic:
    """Requests and served slots of some traffic (see the module docstring)."""

    requests: pd.DataFrame
    slots: pd.DataFrame

    @property
    def arms(self) -> list[str]:
        return sorted(self.requests["arm"].dropna().astype(str).unique()) if len(self.requests) else []

    def subset(self, request_mask: np.ndarray) -> Traffic:
        """The requests where ``request_mask`` holds and their slots (request rows renumbered)."""
        keep = np.flatnonzero(np.asarray(request_mask, dtype=bool))
        new_index = np.full(len(self.requests), -1, dtype=np.int64)
        new_index[keep] = np.arange(len(keep))
        requests = self.requests.iloc[keep].reset_index(drop=True)
        mapped = new_index[self.slots["request"].to_numpy()]
        slots = self.slots[mapped >= 0].copy()
        slots["request"] = mapped[mapped >= 0]
        return Traffic(requests, slots.reset_index(drop=True))


REQUEST_COLUMNS: Final = ("request_id", "ts", "user", "arm", "user_activity", "history_length", "cold_user",
                          "item_age_hours", "item_popularity", "score")  # fmt: skip
SLOT_COLUMNS: Final = ("request", "item_topic", "item_media_type", "clicked", "weight")


def _empty_traffic() -> Traffic:
    return Traffic(
        pd.DataFrame({c: pd.Series(dtype=object) for c in REQUEST_COLUMNS}),
        pd.DataFrame({c: pd.Series(dtype=object) for c in SLOT_COLUMNS}),
    )


def traffic_tables(exposures: pd.DataFrame, outcomes: pd.DataFrame, catalog: Catalog) -> Traffic:
    """One row per request and one per served slot (see the module docstring).

    Args:
        exposures (DataFrame): Event-log exposures (``request_id, ts, arm, user, items``; optional
            ``scores`` and ``item_ages`` list columns).
        outcomes (DataFrame): Event-log outcomes (``request_id, item, kind``); clicks mark slots.
        catalog (Catalog): Lookups of the served model's training data.

    Returns:
        Traffic: Requests in exposure order; users or posts unknown to the catalog get NaN numeric
        inputs, history 0 (cold) and category ``unknown``.
    """
    exposures = exposures[[len(x) > 0 for x in exposures["items"]]] if len(exposures) else exposures
    if len(exposures) == 0:
        return _empty_traffic()
    exposures = exposures.reset_index(drop=True)
    lengths = np.fromiter((len(x) for x in exposures["items"]), dtype=np.int64, count=len(exposures))
    request_of_slot = np.repeat(np.arange(len(exposures)), lengths)
    items = np.concatenate([np.asarray(x, dtype=object) for x in exposures["items"]])
    item_rows = catalog.item_rows(items)
    known_item = item_rows >= 0
    ts = exposures["ts"].to_numpy(dtype=np.float64)

    if "item_ages" in exposures.columns and exposures["item_ages"].notna().all():
        age_s = np.concatenate([np.asarray(x, dtype=np.float64) for x in exposures["item_ages"]])
    else:
        age_s = np.where(known_item, ts[request_of_slot] - catalog.item_created_ts[np.maximum(item_rows, 0)], np.nan)
    popularity = np.where(known_item, catalog.item_popularity[np.maximum(item_rows, 0)], np.nan)
    scores = None
    if "scores" in exposures.columns and exposures["scores"].notna().all():
        scores = np.concatenate([np.asarray(x, dtype=np.float64) for x in exposures["scores"]])
        if len(scores) != len(items):
            raise ValueError("exposures: a scores list differs in length from its items list")

    # Clicked slots: (request_id, item) pairs of click outcomes, compared as str(id) like the event log.
    clicked = np.zeros(len(items), dtype=bool)
    if len(outcomes):
        clicks = outcomes[outcomes["kind"] == "click"]
        request_index = pd.Index(exposures["request_id"].astype(str))
        slot_keys = pd.MultiIndex.from_arrays([request_of_slot, pd.Index(items).astype(str)])
        click_request = request_index.get_indexer(clicks["request_id"].astype(str))
        click_keys = pd.MultiIndex.from_arrays([click_request, pd.Index(clicks["item"].to_numpy()).astype(str)])
        at = slot_keys.get_indexer(click_keys) if slot_keys.is_unique else slot_keys.get_indexer_for(click_keys)
        clicked[at[at >= 0]] = True

    user_rows = catalog.user_rows(exposures["user"].to_numpy())
    known_user = user_rows >= 0
    history = np.where(known_user, catalog.user_history[np.maximum(user_rows, 0)], 0)
    requests = pd.DataFrame(
        {
            "request_id": exposures["request_id"].astype(str).to_numpy(),
            "ts": ts,
            "user": exposures["user"].astype(str).to_numpy(),
            "arm": exposures["arm"].astype(str).to_numpy(),
            "user_activity": np.where(known_user, catalog.user_activity[np.maximum(user_rows, 0)], np.nan),
            "history_length": history.astype(np.float64),
            "cold_user": np.where(history <= catalog.cold_threshold, "cold", "warm"),
            "item_age_hours": _per_request(np.median, age_s / 3600.0, request_of_slot, len(exposures)),
            "item_popularity": _per_request(np.mean, popularity, request_of_slot, len(exposures)),
            "score": (
                _per_request(np.mean, scores, request_of_slot, len(exposures))
                if scores is not None
                else np.full(len(exposures), np.nan)
            ),
        }
    )
    slots = pd.DataFrame(
        {
            "request": request_of_slot,
            "item_topic": np.where(known_item, catalog.item_topic[np.maximum(item_rows, 0)], "unknown"),
            "item_media_type": np.where(known_item, catalog.item_media_type[np.maximum(item_rows, 0)], "unknown"),
            "clicked": clicked,
            "weight": 1.0 / lengths[request_of_slot],
        }
    )
    return Traffic(requests, slots)


def _per_request(reduce, values: np.ndarray, request_of_slot: np.ndarray, n: int) -> np.ndarray:
    """``reduce`` of each request's slot values (NaNs ignored; all-NaN -> NaN)."""
    if reduce is np.mean:
        ok = ~np.isnan(values)
        total = np.bincount(request_of_slot[ok], weights=values[ok], minlength=n)
        count = np.bincount(request_of_slot[ok], minlength=n)
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.where(count > 0, total / np.maximum(count, 1), np.nan)
    frame = pd.DataFrame({"r": request_of_slot, "v": values})
    out = frame.groupby("r", sort=True)["v"].median()
    result = np.full(n, np.nan)
    result[out.index.to_numpy()] = out.to_numpy()
    return result


def window_index(ts: np.ndarray, origin: float, window_seconds: float) -> np.ndarray:
    """Window number of each timestamp: ``floor((ts - origin) / window_seconds)``."""
    return np.floor((np.asarray(ts, dtype=np.float64) - origin) / window_seconds).astype(np.int64)


def first_request_per_user(requests: pd.DataFrame, windows: np.ndarray) -> np.ndarray:
    """Mask of the first request (by ``ts``) of each user in each window.

    A user's requests in one window mostly repeat the same list (a session asks a few times), so
    keeping them all would count one draw many times.
    """
    frame = pd.DataFrame({"w": np.asarray(windows), "user": requests["user"].to_numpy(), "ts": requests["ts"].to_numpy()})
    order = frame.sort_values(["w", "user", "ts"], kind="stable").index.to_numpy()
    first = ~frame.loc[order].duplicated(["w", "user"], keep="first").to_numpy()
    mask = np.zeros(len(frame), dtype=bool)
    mask[order[first]] = True
    return mask
