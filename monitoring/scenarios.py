"""Simulated traffic with drift injected at a known time, to validate the drift monitor.

**This module is a simulator: it reads ``truth/``** (through :class:`data_gen.truth.ClickModel`, and
``truth/user_primary_community.npy`` to pick a community), like :mod:`abtest.sim.world`. The monitor
itself (:mod:`monitoring.features`, :mod:`monitoring.drift`) never does.

The world (:func:`load_world`): the users of a data_gen dataset, split 50/50 between two arms by the
production hash (:func:`abtest.assignment.assign_buckets`), each arm a ranker of
:func:`abtest.sim.world.ranker_lists` (default ``noisy-oracle:1`` against ``noisy-oracle:2``), and the
true logit of every slot of every user's list, computed once with the click model's clock frozen at
the end of the data (``ClickModel.click_logit(..., now=None)``).

Traffic (:func:`simulate`): ``reference_days`` of traffic without drift (the reference period), then
``days`` monitored days; sessions arrive as in :func:`abtest.sim.world.session_arrivals` (a Poisson
process, users drawn by ``activity_level``), one simulated day at a time. At ``shift_day`` days into
the monitored period one shift starts:

* ``cold_surge``: users with at most ``cold_threshold`` training engagements (cold users) arrive
  ``strength`` times as often: a wave of new users;
* ``community_surge``: users of one community (primary community, from ``truth/``; of those with a
  traffic share near ``community_share``, the one whose served topics differ most from the rest:
  :func:`pick_community`) arrive ``strength`` times as often: a community gaining share, seen by the
  monitor through the topics of the served posts;
* ``ageing``: the click model's clock starts running (``click_clock="simulated"`` from the shift
  on): no fresh posts arrive, every served post ages one day per day, and the true logit falls by
  ``freshness_per_day`` per day;
* ``none``: no shift (for false-alarm rates).

Every request is one exposure (event-log columns, plus ``scores``: the true logit at the click clock,
i.e. a model that tracks freshness, and ``item_ages``: the age of each post at the click clock, in
seconds); each slot is clicked with the true ``P(click)`` at its 0-based position.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np
import pandas as pd
from pydantic import Field

from feedrec_common.config import StrictModel

__all__ = ["ScenarioConfig", "ScenarioWorld", "Scenario", "load_world", "simulate", "write_events", "SHIFT_KINDS"]

DAY = 86_400
SHIFT_KINDS = ("none", "cold_surge", "community_surge", "ageing")


class ScenarioConfig(StrictModel):
    """One simulated run.

    Args:
        kind (str): ``none``, ``cold_surge``, ``community_surge`` or ``ageing``. (default: none)
        reference_days (int): Days of drift-free traffic before the monitored period. (default: 7)
        days (int): Monitored days. (default: 7)
        shift_day (float): Start of the shift, in days after the monitored period starts. (default: 2.0)
        strength (float): Arrival multiplier of the surging users. (default: 3.0)
        community_share (float): ``community_surge`` picks the community whose traffic share is
            closest to this. (default: 0.1)
        cold_threshold (int): Cold users have at most this many training engagements. (default: 2)
        sessions_per_day (float): Sessions per simulated day before any shift. (default: 2000)
        requests_per_session (float): Mean requests per session. (default: 2.0)
        seconds_between_requests (float): Within a session. (default: 20)
        seed (int): Seed of arrivals and clicks. (default: 0)
    """

    kind: Literal["none", "cold_surge", "community_surge", "ageing"] = "none"
    reference_days: int = Field(7, ge=1)
    days: int = Field(7, ge=1)
    shift_day: float = Field(2.0, ge=0)
    strength: float = Field(3.0, gt=0)
    community_share: float = Field(0.1, gt=0, lt=1)
    cold_threshold: int = Field(2, ge=0)
    sessions_per_day: float = Field(2000.0, gt=0)
    requests_per_session: float = Field(2.0, ge=1)
    seconds_between_requests: float = Field(20.0, ge=0)
    seed: int = 0


@dataclass(frozen=True)
class ScenarioWorld:
    """Users, their arm, each user's list in their arm and the lists' true logits (frozen clock)."""

    data_dir: Path
    user_ids: np.ndarray  # [n] int64
    activity: np.ndarray  # [n] float64 activity_level
    history: np.ndarray  # [n] training engagements
    community: np.ndarray  # [n] primary community (truth)
    arm: np.ndarray  # [n] index into arms
    arms: tuple[str, ...]
    rankers: tuple[str, ...]
    lists: np.ndarray  # [n, k] item ids of the user's arm, -1 padding
    logits: np.ndarray  # [n, k] true logit at position 0, clock frozen at end_ts
    created_ts: np.ndarray  # [n, k] creation time of each listed post
    end_ts: int
    freshness_per_day: float
    position_decay: float
    timings: dict[str, float] = field(default_factory=dict)

    @property
    def k(self) -> int:
        return self.lists.shape[1]


def load_world(
    data_dir: str | Path,
    rankers: dict[str, str] | None = None,
    *,
    k: int = 20,
    max_users: int | None = None,
    seed: int = 0,
) -> ScenarioWorld:
    """Build the world of the module docstring (the slow part: the rankers' lists; done once).

    Args:
        data_dir (str | Path): data_gen dataset with ``truth/``.
        rankers (dict[str, str], optional): Arm -> ranker spec of :func:`abtest.sim.world.ranker_lists`.
            (default: ``{"control": "noisy-oracle:1", "treatment": "noisy-oracle:2"}``)
        k (int, optional): List length. (default: 20)
        max_users (int, optional): Keep a seeded uniform sample of this many users. (default: all)
        seed (int, optional): Seed of the sample and of the rankers' noise. (default: 0)
    """
    import time

    from abtest.assignment import NUM_BUCKETS, assign_buckets
    from abtest.sim.world import load_world_users, ranker_lists
    from data_gen.truth import ClickModel
    from monitoring.features import load_catalog

    timings = {}
    t0 = time.perf_counter()
    data_dir = Path(data_dir)
    rankers = rankers or {"control": "noisy-oracle:1", "treatment": "noisy-oracle:2"}
    if len(rankers) != 2:
        raise ValueError(f"need exactly two arms, got {sorted(rankers)}")
    model = ClickModel.load(data_dir)
    users = load_world_users(data_dir)
    catalog = load_catalog(data_dir)
    rows = np.arange(len(users.user_ids))
    if max_users is not None and max_users < len(rows):
        rows = np.sort(np.random.default_rng([seed, 31]).choice(rows, size=max_users, replace=False))
    user_ids = users.user_ids[rows]
    arms = tuple(rankers)
    arm = (assign_buckets("drift-sim", user_ids.tolist()) >= NUM_BUCKETS // 2).astype(np.int64)
    community_all = np.load(data_dir / "truth" / "user_primary_community.npy", allow_pickle=False)
    community = community_all[model.user_index(user_ids)]
    timings["load"] = time.perf_counter() - t0

    lists = np.full((len(user_ids), k), -1, dtype=np.int64)
    logits = np.zeros((len(user_ids), k))
    created = np.zeros((len(user_ids), k), dtype=np.int64)
    created_of_item = dict(zip(model.item_ids.tolist(), model.item_created_ts.tolist()))
    for a, name in enumerate(arms):
        t = time.perf_counter()
        mine = np.flatnonzero(arm == a)
        if len(mine) == 0:
            continue
        got = ranker_lists(rankers[name], model, user_ids[mine], k, seed=seed)
        lists[mine] = got
        valid = got >= 0
        users_rep = np.repeat(user_ids[mine], k).reshape(got.shape)
        z = np.zeros(got.shape)
        z[valid] = model.click_logit(users_rep[valid], got[valid], None)
        logits[mine] = z
        created[mine] = np.vectorize(lambda i: created_of_item.get(i, 0), otypes=[np.int64])(got)
        timings[f"lists {name}"] = time.perf_counter() - t
    history = catalog.user_history[catalog.user_rows(user_ids)]
    return ScenarioWorld(
        data_dir=data_dir, user_ids=user_ids, activity=users.activity[rows], history=history,
        community=community, arm=arm, arms=arms, rankers=tuple(rankers[a] for a in arms), lists=lists,
        logits=logits, created_ts=created, end_ts=int(model.end_ts),
        freshness_per_day=float(model.behavior.freshness_per_day),
        position_decay=float(model.behavior.position_decay), timings=timings,
    )  # fmt: skip


@dataclass(frozen=True)
class Scenario:
    """Simulated traffic (event-log frames) and when things happen.

    Attributes:
        exposures (DataFrame): Event-log exposure columns plus ``scores`` and ``item_ages``.
        outcomes (DataFrame): Event-log outcome columns (clicks).
        start_ts (float): Start of the reference period.
        monitor_start_ts (float): Start of the monitored period (end of the reference).
        shift_ts (float | None): Start of the shift (``None`` for ``none``).
        end_ts (float): End of the monitored period.
        surging_users (int): Users whose arrival rate the shift multiplies (0 for ``ageing``/``none``).
        config (ScenarioConfig): The run.
    """

    exposures: pd.DataFrame
    outcomes: pd.DataFrame
    start_ts: float
    monitor_start_ts: float
    shift_ts: float | None
    end_ts: float
    surging_users: int
    config: ScenarioConfig

    def reference(self) -> tuple[pd.DataFrame, pd.DataFrame]:
        """Exposures and outcomes of the reference period."""
        return self._between(self.start_ts, self.monitor_start_ts)

    def monitored(self) -> tuple[pd.DataFrame, pd.DataFrame]:
        """Exposures and outcomes of the monitored period."""
        return self._between(self.monitor_start_ts, self.end_ts)

    def _between(self, lo: float, hi: float) -> tuple[pd.DataFrame, pd.DataFrame]:
        ex = self.exposures[(self.exposures["ts"] >= lo) & (self.exposures["ts"] < hi)].reset_index(drop=True)
        keep = set(ex["request_id"])
        return ex, self.outcomes[self.outcomes["request_id"].isin(keep)].reset_index(drop=True)


def surging_mask(world: ScenarioWorld, config: ScenarioConfig) -> np.ndarray:
    """Users whose arrival rate the shift multiplies."""
    if config.kind == "cold_surge":
        return world.history <= config.cold_threshold
    if config.kind == "community_surge":
        return world.community == pick_community(world, config.community_share)
    return np.zeros(len(world.user_ids), dtype=bool)


def pick_community(world: ScenarioWorld, share: float) -> int:
    """The community whose served topics differ most from everybody else's (total variation), among
    those with a traffic share within a factor 2 of ``share`` (the closest share if none is).

    Why not any community: one whose lists look like everyone's cannot be seen in the served topics,
    and the monitor never sees communities (they are ``truth/``).
    """
    from feedrec_common.parquet_tables import read_table

    items = read_table(world.data_dir, "items", ["item_id", "topic"])
    ids, topics = items["item_id"].to_numpy(), items["topic"].to_numpy()
    order = np.argsort(ids)
    at = np.clip(np.searchsorted(ids[order], world.lists), 0, len(ids) - 1)
    list_topics = np.where(world.lists >= 0, topics[order][at], -1)
    shares = pd.Series(world.activity).groupby(world.community).sum() / world.activity.sum()
    candidates = [c for c, s in shares.items() if share / 2 <= s <= 2 * share]
    if not candidates:
        return int(shares.index[np.argmin(np.abs(shares.to_numpy() - share))])

    def distinctness(c: int) -> float:
        mine = pd.Series(list_topics[world.community == c].ravel()).value_counts(normalize=True)
        rest = pd.Series(list_topics[world.community != c].ravel()).value_counts(normalize=True)
        return float(mine.sub(rest, fill_value=0.0).abs().sum() / 2)

    return int(max(candidates, key=lambda c: (distinctness(c), -c)))


def simulate(world: ScenarioWorld, config: ScenarioConfig) -> Scenario:
    """Draw the traffic of one run (see the module docstring); deterministic given ``config.seed``."""
    from abtest.sim.world import TrafficConfig, WorldUsers, session_arrivals

    rng = np.random.default_rng([config.seed, 4243])
    start = float(world.end_ts)  # simulated time starts at the end of the generated data
    monitor_start = start + config.reference_days * DAY
    end = monitor_start + config.days * DAY
    shift_ts = None if config.kind == "none" else monitor_start + config.shift_day * DAY
    surging = surging_mask(world, config)
    before = world.activity
    after = np.where(surging, world.activity * config.strength, world.activity)
    # sessions_per_day is the rate before the shift; a surge adds its users' extra sessions on top
    rate_after = config.sessions_per_day * after.sum() / before.sum()
    index = np.arange(len(world.user_ids))  # arrivals are drawn as row numbers, mapped back below

    sessions: list[tuple[float, int, int]] = []
    for day in range(config.reference_days + config.days):
        day_start = start + day * DAY
        phases = [(before, config.sessions_per_day, day_start, day_start + DAY)]
        if shift_ts is not None and config.kind != "ageing" and shift_ts < day_start + DAY:
            lo = max(shift_ts, day_start)
            phases = [(before, config.sessions_per_day, day_start, lo), (after, rate_after, lo, day_start + DAY)]
        for activity, rate, lo, hi in phases:
            if hi <= lo:
                continue
            # A Poisson process restricted to [lo, hi) is the whole day's process thinned to that interval.
            users = WorldUsers(index, activity, int(day_start))
            traffic = TrafficConfig(days=1, sessions_per_day=rate, requests_per_session=config.requests_per_session)
            sessions.extend(s for s in session_arrivals(users, traffic, rng) if lo <= s[0] < hi)

    times = np.asarray([s[0] for s in sessions], dtype=np.float64)
    rows = np.asarray([s[1] for s in sessions], dtype=np.int64)
    counts = np.asarray([s[2] for s in sessions], dtype=np.int64)
    order = np.argsort(times, kind="stable")
    times, rows, counts = times[order], rows[order], counts[order]
    req_row = np.repeat(rows, counts)
    offsets = np.concatenate([np.arange(c) for c in counts]) if len(counts) else np.zeros(0, np.int64)
    req_ts = np.repeat(times, counts) + offsets * config.seconds_between_requests
    order = np.argsort(req_ts, kind="stable")
    req_ts, req_row = req_ts[order], req_row[order]
    req_ts = req_ts[req_ts < end]
    req_row = req_row[: len(req_ts)]

    extra_days = np.zeros(len(req_ts))
    if config.kind == "ageing":
        extra_days = np.maximum(req_ts - shift_ts, 0.0) / DAY
    items = world.lists[req_row]
    valid = items >= 0
    logits = world.logits[req_row] - world.freshness_per_day * extra_days[:, None]
    ages = (world.end_ts + extra_days[:, None] * DAY) - world.created_ts[req_row]
    examination = np.power(1.0 + np.arange(world.k, dtype=np.float64), -world.position_decay)
    p = examination[None, :] / (1.0 + np.exp(-logits))
    clicked = (rng.random(items.shape) < p) & valid

    n = len(req_ts)
    request_ids = np.asarray([f"sim{config.seed}-{i}" for i in range(n)], dtype=object)
    arm_names = np.asarray(world.arms, dtype=object)[world.arm[req_row]]
    ranker_names = np.asarray(world.rankers, dtype=object)[world.arm[req_row]]
    lengths = valid.sum(1)
    exposures = pd.DataFrame(
        {
            "event_id": request_ids,
            "request_id": request_ids,
            "ts": req_ts,
            "experiment": "drift-sim",
            "arm": arm_names,
            "user": world.user_ids[req_row],
            "model": ranker_names,
            "model_version": "sim",
            "fallback": None,
            "items": [row[ok] for row, ok in zip(items, valid)],
            "positions": [np.arange(1, m + 1, dtype=np.int32) for m in lengths],
            "item_arms": None,
            "scores": [np.round(row[ok], 4) for row, ok in zip(logits, valid)],
            "item_ages": [row[ok].astype(np.float64) for row, ok in zip(ages, valid)],
        }
    )
    r, c = np.nonzero(clicked)
    outcomes = pd.DataFrame(
        {
            "event_id": [f"{request_ids[i]}-c{j}" for i, j in zip(r, c)],
            "request_id": request_ids[r],
            "ts": req_ts[r] + 3.0,
            "user": world.user_ids[req_row[r]],
            "item": items[r, c],
            "kind": "click",
        }
    )
    return Scenario(exposures, outcomes, start, monitor_start, shift_ts, end, int(surging.sum()), config)


def write_events(events_dir: str | Path, exposures: pd.DataFrame, outcomes: pd.DataFrame) -> list[Path]:
    """Write frames as the event log's flushed Parquet (``<dir>/{exposures,outcomes}/part-*.parquet``).

    Integer ids only (the simulator's). Extra exposure columns (``scores``, ``item_ages``) are kept in
    the files; the event log's own readers ignore them.
    """
    import pyarrow as pa

    from abtest.event_store.tables import write_parquet_atomic

    events_dir = Path(events_dir)

    def lists(values, dtype) -> pa.Array:
        lengths = np.fromiter((len(v) for v in values), dtype=np.int64, count=len(values))
        offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int32)
        flat = np.concatenate([np.asarray(v) for v in values]).astype(dtype) if len(values) else np.zeros(0, dtype)
        return pa.ListArray.from_arrays(pa.array(offsets), pa.array(flat))

    def strings(values) -> pa.Array:
        return pa.array([None if v is None else str(v) for v in values], pa.string())

    ex = exposures
    exposure_table = pa.table(
        {
            "event_id": strings(ex["event_id"]), "request_id": strings(ex["request_id"]),
            "ts": pa.array(ex["ts"].to_numpy(np.float64)), "experiment": strings(ex["experiment"]),
            "arm": strings(ex["arm"]), "user": pa.array(ex["user"].to_numpy(np.int64)),
            "model": strings(ex["model"]), "model_version": strings(ex["model_version"]),
            "fallback": strings(ex["fallback"]), "items": lists(list(ex["items"]), np.int64),
            "positions": lists(list(ex["positions"]), np.int32),
            "item_arms": pa.nulls(len(ex), pa.list_(pa.string())),
            "scores": lists(list(ex["scores"]), np.float64), "item_ages": lists(list(ex["item_ages"]), np.float64),
        }
    )  # fmt: skip
    outcome_table = pa.table(
        {
            "event_id": strings(outcomes["event_id"]), "request_id": strings(outcomes["request_id"]),
            "ts": pa.array(outcomes["ts"].to_numpy(np.float64)), "user": pa.array(outcomes["user"].to_numpy(np.int64)),
            "item": pa.array(outcomes["item"].to_numpy(np.int64)), "kind": strings(outcomes["kind"]),
        }
    )  # fmt: skip
    return [
        write_parquet_atomic(exposure_table, events_dir / "exposures"),
        write_parquet_atomic(outcome_table, events_dir / "outcomes"),
    ]
