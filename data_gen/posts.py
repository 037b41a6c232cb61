"""Posts: created by users, on topics drawn from the creator's interests.

Creators are drawn with weight ``sqrt(activity) * propensity^0.3`` (active, followed people post more).
A post's creation time is uniform between ``max(creator sign-up, start - candidate_window_days)`` and
the end of the simulation; its topic is drawn from the creator's interest distribution; its factors
are ``q_i = (tau_topic + creator_factor_weight * p_creator) / (1 + creator_factor_weight) + 0.3 eps``;
its intrinsic appeal is ``quality_i ~ N(0, quality_sigma) + 0.1 log(propensity_creator)``. Posts are
indexed in creation-time order.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from data_gen.generator_config import DataGenConfig
from data_gen.population import Population
from data_gen.streams import stream

MEDIA_TYPES = ("text", "image", "video")


@dataclass
class Posts:
    """Per-post arrays, index = post index (``item_id - ITEM_ID_OFFSET``), sorted by ``created_ts``."""

    creator: np.ndarray  # int32 user index
    created_ts: np.ndarray  # int64
    topic: np.ndarray  # int16
    media: np.ndarray  # int8 code into MEDIA_TYPES
    factors: np.ndarray  # float32 [n_items, d]
    quality: np.ndarray  # float32

    @property
    def n_items(self) -> int:
        return len(self.creator)


def build_posts(cfg: DataGenConfig, pop: Population) -> Posts:
    """Draw every post (see the module docstring)."""
    it = cfg.items
    rng = stream(cfg.seed, "posts")
    n_items, d = it.n_items, cfg.users.latent_dim
    weight = np.sqrt(pop.activity.astype(np.float64)) * pop.in_propensity**0.3
    cum = np.cumsum(weight)
    creator = np.minimum(np.searchsorted(cum, rng.random(n_items) * cum[-1], side="right"), pop.n_users - 1)

    lo = np.maximum(pop.signup_ts[creator], cfg.start_ts - cfg.simulation.candidate_window_days * 86_400)
    hi = cfg.end_ts
    created = (lo + rng.random(n_items) * np.maximum(hi - lo, 1)).astype(np.int64)

    slot = (rng.random(n_items)[:, None] > pop.interest_cum[creator]).sum(axis=1)
    slot = np.minimum(slot, pop.interest_topics.shape[1] - 1)
    topic = pop.interest_topics[creator, slot]
    w = it.creator_factor_weight
    factors = (pop.topic_vectors[topic] + w * pop.factors[creator]) / (1.0 + w)
    factors = factors + 0.3 * rng.standard_normal((n_items, d)).astype(np.float32) / np.sqrt(d)
    quality = rng.normal(0.0, it.quality_sigma, size=n_items) + 0.1 * np.log(pop.in_propensity[creator])
    media = np.minimum(np.searchsorted(np.cumsum(it.media_probs), rng.random(n_items), side="right"), 2)

    order = np.argsort(created, kind="stable")
    return Posts(
        creator=creator[order].astype(np.int32),
        created_ts=created[order],
        topic=topic[order].astype(np.int16),
        media=media[order].astype(np.int8),
        factors=factors[order].astype(np.float32),
        quality=quality[order].astype(np.float32),
    )
