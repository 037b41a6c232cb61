"""The simulated world shared by the closed-loop (HTTP) and the offline simulator: who arrives when, and
what each ranker would show them.

Traffic (:class:`TrafficConfig`): sessions arrive as a Poisson process of ``sessions_per_day`` per
simulated day; each arrival is a user drawn with probability proportional to ``activity_level`` (the
data_gen users table: expected sessions per day), so by Poisson thinning user ``u`` has
``Poisson(sessions_per_day * days * a_u / sum(a))`` sessions; a session is ``1 + Poisson(mean - 1)``
requests a few seconds apart. Simulated time starts at the end of the dataset (``truth/params.json``
``end_ts``).

The click model's clock: by default the world is frozen at the end of the generated data
(``ClickModel.click_probability(..., now=end_ts)``): item freshness decays by ``exp(-0.25)`` per day, so
running the model clock forward makes every list worse every day and turns a stationary experiment into
a drifting one. ``click_clock="simulated"`` uses the simulated time instead.

Rankers (:func:`ranker_lists`): ``[n_users, k]`` external item ids (``-1`` padding) per user:

* ``oracle``: :meth:`ClickModel.oracle_topk` (the best possible list);
* ``noisy-oracle:S``: the oracle's top 1000 re-ranked by true logit plus Gumbel noise of scale ``S``
  (a decent but imperfect model; larger ``S`` is worse);
* ``popular``: the most-clicked posts of the dataset, the same list for everyone;
* ``random``: uniform random posts per user (seeded);
* ``lists:PATH``: precomputed lists, an ``.npz`` with ``user_ids [n]`` and ``items [n, k]``;
* ``model:REF``: a trained recommender (a bundle directory or an MLflow reference such as
  ``gnn@champion``, via :func:`recsys.tracking.resolve_model_ref`), ``recommend_many`` with seen items
  excluded.

Only this module, :mod:`abtest.sim.closed_loop` and :mod:`abtest.sim.offline` read ``truth/`` (through
:class:`data_gen.truth.ClickModel`).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np

from feedrec_common.config import StrictModel

__all__ = ["TrafficConfig", "WorldUsers", "load_world_users", "daily_sessions", "session_arrivals", "ranker_lists", "model_lists"]

DAY_SECONDS = 86_400


class TrafficConfig(StrictModel):
    """Arrival process of simulated users.

    Args:
        days (int): Simulated days. (default: 14)
        sessions_per_day (float): Mean sessions per simulated day, all users together. (default: 2000)
        requests_per_session (float): Mean requests per session, at least 1. (default: 2.0)
        seconds_between_requests (float): Simulated seconds between requests of a session. (default: 20)
        click_clock (str): ``frozen`` (click model at the dataset's end) or ``simulated``. (default: frozen)
        k (int): List length requested. (default: 20)
    """

    days: int = 14
    sessions_per_day: float = 2000.0
    requests_per_session: float = 2.0
    seconds_between_requests: float = 20.0
    click_clock: Literal["frozen", "simulated"] = "frozen"
    k: int = 20


@dataclass(frozen=True)
class WorldUsers:
    """Users of a data_gen dataset with their activity (expected sessions per day)."""

    user_ids: np.ndarray
    activity: np.ndarray
    start_ts: int  # simulated time starts here: the end of the generated data

    @property
    def weights(self) -> np.ndarray:
        return self.activity / self.activity.sum()


def load_world_users(data_dir: str | Path) -> WorldUsers:
    """User ids and ``activity_level`` from ``users.parquet``, and the simulation start (``end_ts``)."""
    import json

    from feedrec_common.parquet_tables import read_table

    data_dir = Path(data_dir)
    users = read_table(data_dir, "users", ["user_id", "activity_level"])
    params = json.loads((data_dir / "truth" / "params.json").read_text())
    activity = np.maximum(users["activity_level"].to_numpy().astype(np.float64), 1e-6)
    return WorldUsers(users["user_id"].to_numpy().astype(np.int64), activity, int(params["end_ts"]))


def daily_sessions(users: WorldUsers, traffic: TrafficConfig, rng: np.random.Generator) -> np.ndarray:
    """Requests per user and simulated day, ``int64 [n_users, days]`` (sessions by Poisson thinning, each
    ``1 + Poisson(requests_per_session - 1)`` requests)."""
    rate = traffic.sessions_per_day * users.weights  # expected sessions per user per day
    sessions = rng.poisson(np.broadcast_to(rate[:, None], (len(rate), traffic.days)))
    extra = traffic.requests_per_session - 1.0
    if extra <= 0:
        return sessions.astype(np.int64)
    # The sum of `s` independent Poisson(extra) is Poisson(s * extra).
    return (sessions + rng.poisson(sessions * extra)).astype(np.int64)


def session_arrivals(
    users: WorldUsers, traffic: TrafficConfig, rng: np.random.Generator, max_sessions: int | None = None
) -> list[tuple[float, int, int]]:
    """Sessions in simulated time order: ``(start_ts, user_id, requests)``.

    Arrival times are a Poisson process of rate ``sessions_per_day`` over ``days``; each arrival's user is
    drawn by activity. ``max_sessions`` keeps the first ones.
    """
    total = rng.poisson(traffic.sessions_per_day * traffic.days)
    if max_sessions is not None:
        total = min(total, max_sessions)
    # Given their number, Poisson arrival times are sorted uniforms; keep only the first `total`.
    times = np.sort(rng.uniform(0, traffic.days * DAY_SECONDS, size=total)) + users.start_ts
    who = rng.choice(len(users.user_ids), size=total, p=users.weights)
    requests = 1 + rng.poisson(max(traffic.requests_per_session - 1.0, 0.0), size=total)
    return [(float(t), int(users.user_ids[u]), int(r)) for t, u, r in zip(times, who, requests)]


def _popular_items(click_model, k: int) -> np.ndarray:
    """The ``k`` most-clicked posts of the dataset (public interactions, not ``truth/``)."""
    import pyarrow.dataset as ds

    from feedrec_common.parquet_tables import table_path

    table = ds.dataset(table_path(click_model.data_dir, "interactions"), format="parquet")
    items = table.to_table(columns=["item_id"], filter=ds.field("event") == "click")["item_id"].to_numpy()
    clicked = np.bincount(click_model.item_index(items), minlength=click_model.n_items)
    order = np.argsort(-clicked, kind="stable")[:k]
    return click_model.item_ids[order]


_POOL_CACHE: dict[tuple, np.ndarray] = {}


def _oracle_pool(click_model, user_ids: np.ndarray, size: int, now: int | None) -> np.ndarray:
    """Oracle top-``size`` per user, cached for the last world (two noisy-oracle rankers share it: the
    oracle is the slow part)."""
    key = (id(click_model), size, now, hash(user_ids.tobytes()))
    if key not in _POOL_CACHE:
        _POOL_CACHE.clear()
        _POOL_CACHE[key] = click_model.oracle_topk(user_ids, size, now=now)
    return _POOL_CACHE[key]


def ranker_lists(
    spec: str, click_model, user_ids: np.ndarray, k: int, *, seed: int = 0, now: int | None = None
) -> np.ndarray:
    """Top-``k`` external item ids per user for a ranker ``spec`` (see the module docstring)."""
    user_ids = np.asarray(user_ids, dtype=np.int64)
    kind, _, arg = spec.partition(":")
    if kind == "oracle":
        return click_model.oracle_topk(user_ids, k, now=now)
    if kind == "noisy-oracle":
        scale = float(arg or 1.0)
        pool = _oracle_pool(click_model, user_ids, min(max(1000, 5 * k), click_model.n_items), now)
        valid = pool >= 0
        logits = np.full(pool.shape, -np.inf)
        rows = np.repeat(np.arange(len(user_ids)), pool.shape[1])[valid.ravel()]
        logits[valid] = click_model.click_logit(user_ids[rows], pool[valid], now)
        rng = np.random.default_rng([seed, 7919])
        noisy = logits + scale * rng.gumbel(size=logits.shape)
        order = np.argsort(-noisy, axis=1, kind="stable")[:, :k]
        return np.take_along_axis(pool, order, axis=1)
    if kind == "popular":
        return np.tile(_popular_items(click_model, k), (len(user_ids), 1))
    if kind == "random":
        rng = np.random.default_rng([seed, 104729])
        picks = np.argsort(rng.random((len(user_ids), click_model.n_items)), axis=1)[:, :k]
        return click_model.item_ids[picks]
    if kind == "lists":
        with np.load(arg, allow_pickle=False) as data:
            ids, items = data["user_ids"].astype(np.int64), data["items"].astype(np.int64)
        order = np.argsort(ids)
        at = np.minimum(np.searchsorted(ids[order], user_ids), len(ids) - 1)
        missing = ids[order][at] != user_ids
        if missing.any():
            raise KeyError(f"{arg}: no list for {int(missing.sum())} user(s), e.g. {user_ids[missing][:3].tolist()}")
        return items[order][at][:, :k]
    if kind == "model":
        from recsys.models.base import Recommender
        from recsys.tracking import resolve_model_ref

        model = Recommender.load(resolve_model_ref(arg))
        out, known = model_lists(model, user_ids, k)
        if (~known).any():  # users the model never saw get the popular list, as the service's fallback
            out[~known] = _popular_items(click_model, k)
        return out
    raise ValueError(f"unknown ranker {spec!r}: use oracle, noisy-oracle:S, popular, random, lists:PATH or model:REF")


def model_lists(model, user_ids: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """The lists a trained recommender serves: ``[n_users, k]`` external item ids (seen items
    excluded, ``-1`` padding) and a ``[n_users]`` mask of the users it knows (unknown rows stay ``-1``)."""
    idx = model.users.indices(user_ids, missing=-1)
    out = np.full((len(user_ids), k), -1, dtype=np.int64)
    known = idx >= 0
    if known.any():
        items, _ = model.recommend_many(idx[known], k=k)
        out[known] = np.where(items >= 0, model.items.ids[np.maximum(items, 0)], -1)
    return out, known
