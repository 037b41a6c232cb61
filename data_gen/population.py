"""Users: overlapping communities, latent factors (homophily), interests, activity and sign-up times.

Story (see docs/data_gen.md): ``K`` communities have unit-norm centres ``mu_c`` in a ``d``-dim latent
space and Zipf-distributed sizes. Each user has a primary community and, with probability
``secondary_community_prob``, a second one (weight ``w`` on the primary, ``1 - w`` on the other).
Their latent factors are ``p_u = h * (w mu_a + (1 - w) mu_b) + sqrt(1 - h^2) * eps``, ``eps ~ N(0, I/d)``
with ``h = homophily``: people in a community, and therefore people who follow each other, have
correlated tastes. Topics are anchored on community centres; a user's interest in topic ``t`` is
``softmax(topic_sharpness * <p_u, tau_t>)`` truncated to the top ``topics_per_user`` topics.
Activity (expected sessions per day) is log-normal; a ``late_join_fraction`` of users sign up during
the last ``late_join_window`` of the simulated period (the cold-start population).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from data_gen.generator_config import DataGenConfig
from data_gen.streams import stream

REGIONS = ("na", "sa", "eu-west", "eu-east", "africa", "mena", "south-asia", "east-asia", "oceania")
AGE_BUCKETS = ("13-17", "18-24", "25-34", "35-44", "45-54", "55+")
AGE_PROBS = (0.08, 0.3, 0.28, 0.17, 0.1, 0.07)
#: Users get ids ``USER_ID_OFFSET + index`` and posts ``ITEM_ID_OFFSET + index`` (index = time order for
#: posts): ids are deliberately not dense 0-based indices, so consumers must map them.
USER_ID_OFFSET = 1_000_000
ITEM_ID_OFFSET = 100_000_000


@dataclass
class Population:
    """Per-user arrays, index = user index (``user_id - USER_ID_OFFSET``)."""

    signup_ts: np.ndarray  # int64
    region: np.ndarray  # int8 code into REGIONS
    age_bucket: np.ndarray  # int8 code into AGE_BUCKETS
    activity: np.ndarray  # float32, expected sessions per day
    late_joiner: np.ndarray  # bool
    primary: np.ndarray  # int32 community
    secondary: np.ndarray  # int32 community or -1
    primary_weight: np.ndarray  # float32
    factors: np.ndarray  # float32 [n, d]
    community_centers: np.ndarray  # float32 [K, d]
    topic_vectors: np.ndarray  # float32 [T, d]
    topic_community: np.ndarray  # int32 [T]
    interest_topics: np.ndarray  # int16 [n, M], most liked first
    interest_cum: np.ndarray  # float32 [n, M], cumulative probabilities (last = 1)
    in_propensity: np.ndarray  # float64, how attractive the user is to follow (heavy tailed)

    @property
    def n_users(self) -> int:
        return len(self.signup_ts)


def build_population(cfg: DataGenConfig) -> Population:
    """Draw every user-level latent and observed attribute."""
    u, g, it = cfg.users, cfg.graph, cfg.items
    rng = stream(cfg.seed, "population")
    n, k, d = u.n_users, u.n_communities, u.latent_dim

    centers = _unit(rng.standard_normal((k, d)))
    sizes = 1.0 / np.arange(1, k + 1) ** u.community_size_skew
    sizes = rng.permutation(sizes / sizes.sum())
    primary = _sample_categorical(rng, np.cumsum(sizes), n).astype(np.int32)
    has_second = rng.random(n) < u.secondary_community_prob
    # A second community different from the first: shift by a random non-zero offset.
    second = (primary + rng.integers(1, max(k, 2), size=n)) % k
    secondary = np.where(has_second & (k > 1), second, -1).astype(np.int32)
    weight = np.where(secondary >= 0, rng.uniform(0.55, 0.85, size=n), 1.0).astype(np.float32)
    mix = weight[:, None] * centers[primary] + (1 - weight[:, None]) * centers[np.maximum(secondary, 0)]
    eps = rng.standard_normal((n, d)) / np.sqrt(d)
    factors = (u.homophily * mix + np.sqrt(1 - u.homophily**2) * eps).astype(np.float32)

    topic_community = _sample_categorical(rng, np.cumsum(sizes), it.n_topics).astype(np.int32)
    topic_community[: min(k, it.n_topics)] = np.arange(min(k, it.n_topics))  # every community has a topic
    topics = _unit(centers[topic_community] + 0.5 * rng.standard_normal((it.n_topics, d)) / np.sqrt(d))
    interest_topics, interest_cum = _top_interests(factors, topics, it.topics_per_user, it.topic_sharpness)

    activity = u.sessions_per_day * rng.lognormal(-0.5 * u.activity_sigma**2, u.activity_sigma, size=n)
    late = rng.random(n) < u.late_join_fraction
    start, end = cfg.start_ts, cfg.end_ts
    late_from = end - u.late_join_window * (end - start)
    signup_old = start - rng.uniform(0.0, u.history_days * 86_400.0, size=n)
    signup_late = rng.uniform(late_from, end - 3 * 3600.0, size=n)
    signup = np.where(late, signup_late, signup_old).astype(np.int64)

    # Community-flavoured region: 70% the community's home region, else anywhere.
    home = rng.integers(0, len(REGIONS), size=k)
    region = np.where(rng.random(n) < 0.7, home[primary], rng.integers(0, len(REGIONS), size=n))
    age = _sample_categorical(rng, np.cumsum(AGE_PROBS), n)

    propensity = (1.0 - rng.random(n)) ** (-1.0 / g.popularity_tail)
    propensity = np.minimum(propensity, max(n / 20.0, 1.0))
    propensity = np.where(late, propensity * g.late_joiner_popularity + 1e-3, propensity)

    return Population(
        signup_ts=signup,
        region=region.astype(np.int8),
        age_bucket=age.astype(np.int8),
        activity=activity.astype(np.float32),
        late_joiner=late,
        primary=primary,
        secondary=secondary,
        primary_weight=weight,
        factors=factors,
        community_centers=centers.astype(np.float32),
        topic_vectors=topics.astype(np.float32),
        topic_community=topic_community,
        interest_topics=interest_topics,
        interest_cum=interest_cum,
        in_propensity=propensity,
    )


def _top_interests(
    factors: np.ndarray, topics: np.ndarray, m: int, sharpness: float, block: int = 65_536
) -> tuple[np.ndarray, np.ndarray]:
    m = min(m, len(topics))
    out_t = np.empty((len(factors), m), dtype=np.int16)
    out_c = np.empty((len(factors), m), dtype=np.float32)
    for lo in range(0, len(factors), block):  # blocks bound the [users, topics] score matrix
        s = sharpness * (factors[lo : lo + block] @ topics.T)
        top = np.argpartition(-s, m - 1, axis=1)[:, :m] if m < s.shape[1] else np.argsort(-s, axis=1)
        ts = np.take_along_axis(s, top, axis=1)
        order = np.argsort(-ts, axis=1, kind="stable")
        top, ts = np.take_along_axis(top, order, axis=1), np.take_along_axis(ts, order, axis=1)
        w = np.exp(ts - ts[:, :1])
        cum = np.cumsum(w, axis=1)
        out_t[lo : lo + block] = top
        out_c[lo : lo + block] = cum / cum[:, -1:]
    out_c[:, -1] = 1.0
    return out_t, out_c


def _sample_categorical(rng: np.random.Generator, cum: np.ndarray, size: int) -> np.ndarray:
    cum = np.asarray(cum, dtype=np.float64)
    return np.minimum(np.searchsorted(cum / cum[-1], rng.random(size), side="right"), len(cum) - 1)


def _unit(x: np.ndarray) -> np.ndarray:
    return x / np.linalg.norm(x, axis=-1, keepdims=True)
