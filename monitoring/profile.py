"""Reference profiles: the distribution of every input over a reference period, saved as JSON.

A profile is built from :class:`monitoring.features.Traffic` of a reference period, cut into windows
of the monitor's length with one request per user per window (the same sampling as the monitored
windows, so reference and window differ only by drift):

* :func:`profile_from_dataset`: the served model's training data (the data_gen dataset's last
  ``days`` days of impressions and clicks, one request per feed session, arm ``logging``). Request
  inputs (user activity, history, cold share) are policy-free and compare directly with live
  traffic; served-item, score and CTR inputs describe the *logging* policy, so they are compared
  only with arms of the same name (live arms have their own names and are skipped for CTR).
* :func:`build_profile` on any traffic, e.g. the served model's own first days of logged events
  (``python -m monitoring profile --events DIR --until TS``) or a simulator's reference period.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from monitoring.config import DriftConfig
from monitoring.features import (
    CTR_PREFIX,
    INPUTS,
    SLOT_CATEGORICALS,
    Catalog,
    Traffic,
    first_request_per_user,
    traffic_tables,
    window_index,
)

__all__ = ["ReferenceProfile", "input_values", "build_profile", "profile_from_dataset", "dataset_frames"]

PROFILE_FORMAT = 1


@dataclass(frozen=True)
class ReferenceProfile:
    """Reference distributions of the inputs.

    Attributes:
        continuous (dict[str, np.ndarray]): Sorted reference values per continuous input.
        categorical (dict[str, dict[str, float]]): Counts per category (pooled ``other`` included).
        n_requests (int): Requests of the reference after one-per-user-per-window sampling.
        window_hours (float): Window length the reference was sampled with.
        start_ts, end_ts (float): The reference period.
        source (str): Where the reference traffic came from.
        dataset (str): The dataset directory of the catalog lookups.
        dataset_hash (str): Its ``dataset_hash``.
        design_effects (dict[str, float]): Per input, the spread of the test statistic over the
            reference's own windows relative to its iid null (:func:`monitoring.detectors.design_effect`).
        extra (dict): Anything else worth keeping (free form, JSON).
    """

    continuous: dict[str, np.ndarray]
    categorical: dict[str, dict[str, float]]
    n_requests: int
    window_hours: float
    start_ts: float
    end_ts: float
    source: str
    dataset: str = ""
    dataset_hash: str = ""
    design_effects: dict[str, float] = field(default_factory=dict)
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def inputs(self) -> list[str]:
        return sorted([*self.continuous, *self.categorical])

    def to_json(self) -> str:
        data = {
            "format": PROFILE_FORMAT,
            "continuous": {k: [round(float(x), 6) for x in v] for k, v in self.continuous.items()},
            "categorical": self.categorical,
            "n_requests": self.n_requests,
            "window_hours": self.window_hours,
            "start_ts": self.start_ts,
            "end_ts": self.end_ts,
            "source": self.source,
            "dataset": self.dataset,
            "dataset_hash": self.dataset_hash,
            "design_effects": self.design_effects,
            "extra": self.extra,
        }
        return json.dumps(data, sort_keys=True)

    def save(self, path: str | Path) -> Path:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(path.suffix + ".partial")
        tmp.write_text(self.to_json())
        tmp.replace(path)
        return path

    @classmethod
    def load(cls, path: str | Path) -> ReferenceProfile:
        """Read a profile written by :meth:`save` (ValueError naming the file when it is not one)."""
        path = Path(path)
        try:
            data = json.loads(path.read_text())
        except (OSError, json.JSONDecodeError) as exc:
            raise ValueError(f"{path}: not a readable profile JSON ({exc})") from exc
        if not isinstance(data, dict) or data.get("format") != PROFILE_FORMAT:
            raise ValueError(f"{path}: not a drift profile (format {PROFILE_FORMAT} expected)")
        try:
            return cls(
                continuous={k: np.asarray(v, dtype=np.float64) for k, v in data["continuous"].items()},
                categorical={k: {c: float(n) for c, n in v.items()} for k, v in data["categorical"].items()},
                n_requests=int(data["n_requests"]),
                window_hours=float(data["window_hours"]),
                start_ts=float(data["start_ts"]),
                end_ts=float(data["end_ts"]),
                source=str(data["source"]),
                dataset=str(data.get("dataset", "")),
                dataset_hash=str(data.get("dataset_hash", "")),
                design_effects={k: float(v) for k, v in data.get("design_effects", {}).items()},
                extra=dict(data.get("extra", {})),
            )
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise ValueError(f"{path}: malformed drift profile ({exc!r})") from exc


def input_values(traffic: Traffic) -> tuple[dict[str, np.ndarray], dict[str, dict[str, float]]]:
    """Values of every input in some traffic: continuous arrays (NaN dropped) and weighted category counts."""
    requests, slots = traffic.requests, traffic.slots
    continuous: dict[str, np.ndarray] = {}
    categorical: dict[str, dict[str, float]] = {}
    for spec in INPUTS:
        if spec.kind != "continuous":
            continue
        values = requests[spec.name].to_numpy(dtype=np.float64) if len(requests) else np.zeros(0)
        values = values[np.isfinite(values)]
        if len(values):
            continuous[spec.name] = values
    if len(requests):
        categorical["cold_user"] = _counts(requests["cold_user"].to_numpy(), np.ones(len(requests)))
    if len(slots):
        weights = slots["weight"].to_numpy(dtype=np.float64)
        for name in SLOT_CATEGORICALS:
            categorical[name] = _counts(slots[name].to_numpy(), weights)
        arm_of_slot = requests["arm"].to_numpy()[slots["request"].to_numpy()]
        clicked = np.where(slots["clicked"].to_numpy(dtype=bool), "click", "no_click")
        for arm in pd.unique(arm_of_slot):
            rows = arm_of_slot == arm
            categorical[f"{CTR_PREFIX}[{arm}]"] = _counts(clicked[rows], weights[rows])
    return continuous, categorical


def _counts(labels: np.ndarray, weights: np.ndarray) -> dict[str, float]:
    codes, uniques = pd.factorize(np.asarray(labels, dtype=object))
    sums = np.bincount(codes[codes >= 0], weights=np.asarray(weights)[codes >= 0], minlength=len(uniques))
    return {str(k): float(v) for k, v in zip(uniques, sums)}


def sampled_requests(traffic: Traffic, window_seconds: float, origin: float | None = None) -> tuple[Traffic, np.ndarray]:
    """One request per user per window, and the window number of each kept request."""
    ts = traffic.requests["ts"].to_numpy(dtype=np.float64)
    origin = float(np.floor(ts.min())) if origin is None and len(ts) else (origin or 0.0)
    windows = window_index(ts, origin, window_seconds)
    keep = first_request_per_user(traffic.requests, windows)
    return traffic.subset(keep), windows[keep]


def build_profile(traffic: Traffic, config: DriftConfig, *, source: str, catalog: Catalog | None = None) -> ReferenceProfile:
    """The reference profile of ``traffic`` (sampled like the monitored windows).

    Categorical inputs keep the reference's ``max_categories`` most common categories with a share of
    at least ``min_category_share``; the rest are pooled into ``other``.

    Raises:
        ValueError: the traffic holds no request.
    """
    from monitoring.detectors import design_effect, null_ratio
    from monitoring.drift import compare_window

    if len(traffic.requests) == 0:
        raise ValueError(f"{source}: no requests in the reference period")
    sampled, windows = sampled_requests(traffic, config.window_seconds)
    continuous, categorical = input_values(sampled)
    rng = np.random.default_rng([config.seed, 2718])
    kept = {}
    for name, values in continuous.items():
        if len(values) > config.reference_samples:
            values = rng.choice(values, size=config.reference_samples, replace=False)
        kept[name] = np.sort(values)
    pooled = {name: _pool(counts, config) for name, counts in categorical.items()}
    ts = traffic.requests["ts"].to_numpy(dtype=np.float64)
    profile = ReferenceProfile(
        continuous=kept, categorical=pooled, n_requests=len(sampled.requests), window_hours=config.window_hours,
        start_ts=float(ts.min()), end_ts=float(ts.max()), source=source,
        dataset=catalog.source if catalog else "", dataset_hash=catalog.dataset_hash if catalog else "",
    )  # fmt: skip
    # Calibrate: each reference window against the whole reference, as the monitor will test windows.
    ratios: dict[str, list[float]] = {}
    for index in np.unique(windows):
        for result in compare_window(profile, sampled.subset(windows == index), config):
            ratios.setdefault(result.input, []).append(null_ratio(result))
    # A window is part of the reference it is compared with, which shrinks its distance by about
    # (1 - share of the window); undo that so a short reference is not calibrated too narrow.
    share = 1.0 / max(len(np.unique(windows)), 1)
    effects = {name: design_effect(np.asarray(values) / max(1.0 - share, 1e-6) ** 2) for name, values in ratios.items()}
    return replace(profile, design_effects=effects)


def _pool(counts: Mapping[str, float], config: DriftConfig) -> dict[str, float]:
    total = sum(counts.values())
    ranked = sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))
    keep = [c for c, n in ranked[: config.max_categories] if total > 0 and n / total >= config.min_category_share]
    if len(keep) == len(counts):
        return {c: float(counts[c]) for c in sorted(keep)}
    out = {c: float(counts[c]) for c in sorted(keep)}
    out["other"] = float(total - sum(out.values())) + out.get("other", 0.0)
    return out


def dataset_frames(data_dir: str | Path, days: float) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The last ``days`` days of a dataset's impressions and clicks as event-log frames.

    A request is one feed session: a user's impressions from a position-0 impression up to the next
    one. Arm and experiment are ``logging`` (the dataset's logging policy).
    """
    import pyarrow.dataset as ds

    from feedrec_common.parquet_tables import table_path

    data_dir = Path(data_dir)
    table = ds.dataset(table_path(data_dir, "interactions"), format="parquet")
    end = table.to_table(columns=["ts"])["ts"].to_numpy().max()
    since = int(end - days * 86_400)
    rows = table.to_table(
        columns=["user_id", "item_id", "ts", "event", "position"],
        filter=(ds.field("ts") >= since) & ds.field("event").isin(["impression", "click"]),
    ).to_pandas()
    imp = rows[rows["event"] == "impression"].sort_values(["user_id", "ts", "position"], kind="stable")
    imp = imp.reset_index(drop=True)
    new_request = (imp["position"].to_numpy() == 0) | (imp["user_id"].to_numpy() != np.roll(imp["user_id"].to_numpy(), 1))
    session = np.cumsum(new_request) - 1
    request_ids = np.array([f"ds-{s}" for s in range(int(session.max()) + 1 if len(session) else 0)], dtype=object)
    imp["request_id"] = request_ids[session] if len(session) else []
    grouped = imp.groupby("request_id", sort=False)
    exposures = pd.DataFrame(
        {
            "request_id": list(grouped.groups.keys()),
            "ts": grouped["ts"].min().astype(np.float64).to_numpy(),
            "experiment": "logging",
            "arm": "logging",
            "user": grouped["user_id"].first().to_numpy(),
            "items": [np.asarray(v, dtype=np.int64) for v in grouped["item_id"].agg(list)],
        }
    )
    # A click belongs to the latest session of its user that showed the item before the click.
    clicks = rows[rows["event"] == "click"]
    shown = imp[["user_id", "item_id", "ts", "request_id"]].sort_values("ts", kind="stable")
    merged = pd.merge_asof(
        clicks.sort_values("ts", kind="stable"), shown, on="ts", by=["user_id", "item_id"], direction="backward"
    ).dropna(subset=["request_id"])
    outcomes = pd.DataFrame(
        {"request_id": merged["request_id"].to_numpy(), "ts": merged["ts"].astype(np.float64).to_numpy(),
         "user": merged["user_id"].to_numpy(), "item": merged["item_id"].to_numpy(), "kind": "click"}
    )  # fmt: skip
    return exposures, outcomes


def profile_from_dataset(catalog: Catalog, config: DriftConfig, days: float = 7.0) -> ReferenceProfile:
    """Profile of the served model's training data: its last ``days`` days (see the module docstring)."""
    exposures, outcomes = dataset_frames(catalog.source, days)
    traffic = traffic_tables(exposures, outcomes, catalog)
    return build_profile(traffic, config, source=f"dataset {catalog.source} (last {days:g} days)", catalog=catalog)
