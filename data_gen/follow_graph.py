"""Follow graph: degree-corrected overlapping-community model, triadic closure and reciprocity.

1. Each user draws an out-degree (log-normal, mean ``mean_out_degree``). Each of their follows picks,
   with probability ``in_community_prob``, one of the follower's communities (by membership weight)
   and a member of it with probability proportional to the member's in-degree propensity (Pareto
   tail ``popularity_tail``: heavy-tailed in-degree); otherwise anybody, again by propensity.
2. Triadic closure: ``triadic_closure_fraction`` more follows ``u -> w`` where ``u -> v -> w``.
3. Reciprocity: each follow ``u -> v`` is returned with probability
   ``reciprocity_prob * min(1, sqrt(4 / propensity_v))`` (celebrities rarely follow back).
Duplicates and self-follows are dropped. A follow's timestamp lies after both sign-ups: before the
simulation for two existing users, within ten minutes of the later sign-up otherwise (late joiners
follow people while onboarding). The behaviour model treats the final follow graph as static.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from data_gen.generator_config import DataGenConfig
from data_gen.population import Population
from data_gen.streams import stream


@dataclass
class FollowGraph:
    """Follows sorted by (follower, followee); CSR view ``indptr``/``followees`` by follower index."""

    follower: np.ndarray  # int32
    followee: np.ndarray  # int32
    ts: np.ndarray  # int64
    indptr: np.ndarray  # int64 [n_users + 1]

    @property
    def followees(self) -> np.ndarray:
        return self.followee

    def in_degree(self, n_users: int) -> np.ndarray:
        return np.bincount(self.followee, minlength=n_users)

    def out_degree(self) -> np.ndarray:
        return np.diff(self.indptr)


def build_follows(cfg: DataGenConfig, pop: Population) -> FollowGraph:
    """Draw the follow graph (see the module docstring)."""
    g = cfg.graph
    rng = stream(cfg.seed, "graph")
    n = pop.n_users
    sigma = g.out_degree_sigma
    k_out = np.rint(rng.lognormal(np.log(g.mean_out_degree) - 0.5 * sigma**2, sigma, size=n))
    k_out = np.clip(k_out, 1, min(g.max_out_degree, max(n - 1, 1))).astype(np.int64)
    src = np.repeat(np.arange(n, dtype=np.int64), k_out)
    n_edges = len(src)

    # Community targets: membership rows (user, community) sorted by community, weighted by propensity.
    has2 = pop.secondary >= 0
    mem_user = np.concatenate([np.arange(n), np.flatnonzero(has2)])
    mem_comm = np.concatenate([pop.primary, pop.secondary[has2]])
    order = np.argsort(mem_comm, kind="stable")
    mem_user, mem_comm = mem_user[order], mem_comm[order]
    cum = np.cumsum(pop.in_propensity[mem_user])
    k = cfg.users.n_communities
    first = np.searchsorted(mem_comm, np.arange(k), side="left")
    last = np.searchsorted(mem_comm, np.arange(k), side="right")
    cum0 = np.concatenate([[0.0], cum])
    use_primary = (rng.random(n_edges) < pop.primary_weight[src]) | (pop.secondary[src] < 0)
    comm = np.where(use_primary, pop.primary[src], pop.secondary[src])
    lo, hi = cum0[first[comm]], cum0[last[comm]]
    pick = np.searchsorted(cum, lo + rng.random(n_edges) * (hi - lo), side="right")
    target_comm = mem_user[np.clip(pick, first[comm], last[comm] - 1)]

    gcum = np.cumsum(pop.in_propensity)
    target_any = np.minimum(np.searchsorted(gcum, rng.random(n_edges) * gcum[-1], side="right"), n - 1)
    in_comm = rng.random(n_edges) < g.in_community_prob
    dst = np.where(in_comm, target_comm, target_any)
    base_src, base_dst = _dedupe(src, dst, n)

    # Triadic closure over the base graph: u -> v -> w gives u -> w.
    indptr = _indptr(base_src, n)
    n_tri = int(round(g.triadic_closure_fraction * len(base_src)))
    e = rng.integers(0, max(len(base_src), 1), size=n_tri)
    u, v = base_src[e], base_dst[e]
    deg_v = indptr[v + 1] - indptr[v]
    ok = deg_v > 0
    w = base_dst[indptr[v[ok]] + (rng.random(ok.sum()) * deg_v[ok]).astype(np.int64)]
    src = np.concatenate([base_src, u[ok]])
    dst = np.concatenate([base_dst, w])

    # Reciprocity: the followee follows back, less often when they are popular.
    p_back = g.reciprocity_prob * np.minimum(1.0, np.sqrt(4.0 / pop.in_propensity[dst]))
    back = rng.random(len(src)) < p_back
    src, dst = np.concatenate([src, dst[back]]), np.concatenate([dst, src[back]])
    follower, followee = _dedupe(src, dst, n)

    # Timestamps: after both sign-ups.
    t0 = np.maximum(pop.signup_ts[follower], pop.signup_ts[followee])
    start, end = cfg.start_ts, cfg.end_ts
    r = rng.random(len(follower))
    before = t0 < start
    ts = np.where(before, t0 + r * (start - t0), t0 + r * 600.0).astype(np.int64)
    ts = np.minimum(ts, end - 1)
    return FollowGraph(
        follower=follower.astype(np.int32),
        followee=followee.astype(np.int32),
        ts=ts,
        indptr=_indptr(follower, n),
    )


def _dedupe(src: np.ndarray, dst: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray]:
    keep = src != dst
    key = np.unique(src[keep].astype(np.int64) * n + dst[keep])
    return key // n, key % n


def _indptr(sorted_src: np.ndarray, n: int) -> np.ndarray:
    return np.searchsorted(sorted_src, np.arange(n + 1), side="left").astype(np.int64)
