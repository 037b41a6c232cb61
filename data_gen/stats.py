"""Realism statistics of a generated dataset, and the ranges the default presets must meet.

Definitions (the recsys library uses the same cold-user definition):

* ``in_degree_alpha``: exponent of a discrete power law fitted to follower counts >= ``xmin`` by maximum
  likelihood, ``xmin`` chosen to minimise the Kolmogorov-Smirnov distance (Clauset, Shalizi & Newman
  2009); the exact discrete likelihood (Hurwitz zeta) is maximised on a grid.
* ``reciprocity``: share of follows ``u -> v`` whose reverse ``v -> u`` exists.
* ``avg_clustering``: mean local clustering coefficient of sampled nodes of the undirected follow graph
  (nodes of degree < 2 count as 0, as in ``networkx.average_clustering``); each node's coefficient
  is estimated from up to 200 random pairs of its neighbours.
* ``follow_homophily``: share of follows whose two ends share a community;
  ``follow_homophily_random`` the same share for uniformly random pairs; ``homophily_lift`` their ratio.
* ``item_popularity_gini``: Gini coefficient of clicks per post (all posts, zeros included).
* ``cold_user_share``: engagement events (click, like, share) sorted by ts; ``t_val`` is the ts of the
  event at index ``floor(0.8 n)``, ``t_test`` at ``floor(0.9 n)``; validation = ``t_val <= ts < t_test``,
  test = ``ts >= t_test``. A user is cold when they have an engagement in the test window and at most
  2 engagement events with ``ts < t_val``; the share is cold users / users with a test engagement.
* ``ctr``: clicks / impressions.
"""

from __future__ import annotations

import numpy as np
from scipy.special import zeta

#: Statistic -> (low, high) that every default preset must meet (asserted by tests and the benchmark).
REALISM_RANGES: dict[str, tuple[float, float]] = {
    "in_degree_alpha": (1.8, 3.5),
    "reciprocity": (0.1, 0.6),
    "avg_clustering": (0.03, 0.5),
    "follow_homophily": (0.4, 0.98),
    "homophily_lift": (2.0, 200.0),
    "item_popularity_gini": (0.55, 0.97),
    "cold_user_share": (0.10, 0.6),
    "ctr": (0.03, 0.2),
}

COLD_MAX_PAST_ENGAGEMENTS = 2
VALIDATION_FRACTION = 0.1
TEST_FRACTION = 0.1


def powerlaw_fit(values: np.ndarray, max_candidates: int = 60) -> dict[str, float]:
    """Discrete power-law fit of positive integers: ``{"alpha", "xmin", "n_tail", "ks"}``."""
    x = np.asarray(values, dtype=np.int64)
    x = np.sort(x[x > 0])
    if len(x) < 10:
        return {"alpha": float("nan"), "xmin": float("nan"), "n_tail": 0, "ks": float("nan")}
    uniq = np.unique(x)
    # Candidate xmin: distinct values leaving a tail of at least 50 points (or 10%), thinned on a log grid.
    tail_sizes = len(x) - np.searchsorted(x, uniq, side="left")
    uniq = uniq[tail_sizes >= max(50, min(len(x) // 10, 50))] if (tail_sizes >= 50).any() else uniq[:1]
    if len(uniq) > max_candidates:
        uniq = np.unique(uniq[np.linspace(0, len(uniq) - 1, max_candidates).astype(int)])
    grid = np.linspace(1.05, 5.0, 400)
    best = None
    for xmin in uniq:
        tail = x[x >= xmin]
        alpha = _discrete_mle(tail, int(xmin), grid)
        vals, cnt = np.unique(tail, return_counts=True)
        emp = np.cumsum(cnt) / len(tail)
        model = 1.0 - zeta(alpha, vals + 1.0) / zeta(alpha, float(xmin))
        ks = float(np.max(np.abs(emp - model)))
        if best is None or ks < best["ks"]:
            best = {"alpha": float(alpha), "xmin": float(xmin), "n_tail": int(len(tail)), "ks": ks}
    return best


def _discrete_mle(tail: np.ndarray, xmin: int, grid: np.ndarray) -> float:
    log_sum = np.log(tail).sum()
    loglik = -len(tail) * np.log(zeta(grid, float(xmin))) - grid * log_sum
    i = int(np.argmax(loglik))
    lo, hi = grid[max(i - 1, 0)], grid[min(i + 1, len(grid) - 1)]
    fine = np.linspace(lo, hi, 101)
    return float(fine[np.argmax(-len(tail) * np.log(zeta(fine, float(xmin))) - fine * log_sum)])


def reciprocity(follower: np.ndarray, followee: np.ndarray, n_users: int) -> float:
    """Share of directed edges whose reverse edge exists."""
    if len(follower) == 0:
        return 0.0
    keys = np.sort(follower.astype(np.int64) * n_users + followee)
    rev = followee.astype(np.int64) * n_users + follower
    at = np.minimum(np.searchsorted(keys, rev), len(keys) - 1)
    return float(np.mean(keys[at] == rev))


def average_clustering(
    follower: np.ndarray,
    followee: np.ndarray,
    n_users: int,
    n_sample: int,
    rng: np.random.Generator,
    pairs_per_node: int = 200,
) -> float:
    """Mean local clustering of ``n_sample`` random nodes of the undirected graph (see module doc)."""
    a = np.minimum(follower, followee).astype(np.int64)
    b = np.maximum(follower, followee).astype(np.int64)
    und = np.unique(a * n_users + b)
    lo, hi = und // n_users, und % n_users
    src = np.concatenate([lo, hi])
    dst = np.concatenate([hi, lo])
    order = np.argsort(src, kind="stable")
    src, dst = src[order], dst[order]
    indptr = np.searchsorted(src, np.arange(n_users + 1))
    nodes = rng.choice(n_users, size=min(n_sample, n_users), replace=False)
    deg = indptr[nodes + 1] - indptr[nodes]
    coef = np.zeros(len(nodes))
    ok = deg >= 2
    v, dv = nodes[ok], deg[ok]
    # Distinct neighbour pairs (i, j), i != j, drawn uniformly with replacement.
    i = (rng.random((len(v), pairs_per_node)) * dv[:, None]).astype(np.int64)
    j = (rng.random((len(v), pairs_per_node)) * (dv[:, None] - 1)).astype(np.int64)
    j = j + (j >= i)
    x = dst[indptr[v][:, None] + i]
    y = dst[indptr[v][:, None] + j]
    q = np.minimum(x, y) * n_users + np.maximum(x, y)
    at = np.minimum(np.searchsorted(und, q), len(und) - 1)
    coef[ok] = (und[at] == q).mean(axis=1)
    return float(coef.mean())


def community_homophily(
    follower: np.ndarray,
    followee: np.ndarray,
    primary: np.ndarray,
    secondary: np.ndarray,
    rng: np.random.Generator,
    n_random: int = 200_000,
) -> dict[str, float]:
    """Share of follows within a shared community, the same for random pairs, and their ratio."""

    def shared(a: np.ndarray, b: np.ndarray) -> np.ndarray:
        pa_, sa, pb, sb = primary[a], secondary[a], primary[b], secondary[b]
        return (pa_ == pb) | (pa_ == sb) | ((sa >= 0) & ((sa == pb) | (sa == sb)))

    observed = float(shared(follower, followee).mean()) if len(follower) else 0.0
    n = len(primary)
    a, b = rng.integers(0, n, size=n_random), rng.integers(0, n, size=n_random)
    keep = a != b
    expected = float(shared(a[keep], b[keep]).mean())
    return {
        "follow_homophily": observed,
        "follow_homophily_random": expected,
        "homophily_lift": observed / expected if expected > 0 else float("inf"),
    }


def gini(counts: np.ndarray) -> float:
    """Gini coefficient of non-negative counts (0 = equal, -> 1 = concentrated)."""
    x = np.sort(np.asarray(counts, dtype=np.float64))
    n = len(x)
    if n == 0 or x.sum() == 0:
        return 0.0
    return float((2.0 * np.sum(np.arange(1, n + 1) * x) / (n * x.sum())) - (n + 1.0) / n)


def temporal_cut_points(engagement_ts: np.ndarray) -> tuple[int, int]:
    """``(t_val, t_test)``: validation starts at ``t_val``, test at ``t_test`` (module docstring)."""
    ts = np.sort(np.asarray(engagement_ts))
    n = len(ts)
    return int(ts[int(n * (1 - VALIDATION_FRACTION - TEST_FRACTION))]), int(ts[int(n * (1 - TEST_FRACTION))])


def cold_user_share(engagement_ts: np.ndarray, engagement_user: np.ndarray) -> dict[str, float]:
    """Cold users among users with a test-window engagement (definition in the module docstring)."""
    if len(engagement_ts) == 0:
        return {"cold_user_share": 0.0, "test_users": 0, "cold_users": 0}
    t_val, t_test = temporal_cut_points(engagement_ts)
    test_users = np.unique(engagement_user[engagement_ts >= t_test])
    past = engagement_user[engagement_ts < t_val]
    past_users, past_counts = np.unique(past, return_counts=True)
    at = np.minimum(np.searchsorted(past_users, test_users), max(len(past_users) - 1, 0))
    n_past = np.where(
        (len(past_users) > 0) & (past_users[at] == test_users) if len(past_users) else False,
        past_counts[at] if len(past_users) else 0,
        0,
    )
    cold = int(np.sum(n_past <= COLD_MAX_PAST_ENGAGEMENTS))
    return {
        "cold_user_share": cold / len(test_users) if len(test_users) else 0.0,
        "test_users": int(len(test_users)),
        "cold_users": cold,
        "t_val": t_val,
        "t_test": t_test,
    }


def check_realism(
    stats: dict[str, float], ranges: dict[str, tuple[float, float]] = REALISM_RANGES
) -> list[str]:
    """Messages for each statistic outside its range (empty when all are fine)."""
    problems = []
    for name, (lo, hi) in ranges.items():
        value = stats.get(name)
        if value is None or not np.isfinite(value) or not lo <= value <= hi:
            problems.append(f"{name}={value} outside [{lo}, {hi}]")
    return problems
