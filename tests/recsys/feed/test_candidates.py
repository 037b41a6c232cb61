"""Candidate sources and the pipeline on the tiny preset: one interface, eligibility, quotas, degradation."""

import numpy as np
import pytest

from recsys.feed.candidates import SOURCES, FeedContext, Request
from recsys.feed.data import DAY
from recsys.feed.pipeline import FeedConfig, build_pipeline
from recsys.feed.state import FeatureState

from .helpers import random_embeddings


@pytest.fixture(scope="module")
def context(tiny_data):
    state = FeatureState(tiny_data.catalog)
    state.observe(tiny_data.events)
    state.observe_follows(tiny_data.follows)
    return FeedContext(tiny_data.catalog, state, random_embeddings(tiny_data), max_age=7 * DAY)


def _active_user(data):
    counts = np.bincount(data.events.user, minlength=data.n_users)
    return int(np.argmax(counts))


@pytest.mark.parametrize("name", sorted(SOURCES))
def test_every_source_returns_eligible_posts_within_its_quota_best_first(name, context, tiny_data):
    user, now = _active_user(tiny_data), tiny_data.end_ts
    source = SOURCES[name](context, quota=25)
    request = Request.build(context, user, now)
    assert len(request.seen) > 0
    items, scores = source.candidates(request)
    assert len(items) > 0, f"{name} returned nothing for an active user"
    assert len(items) <= 25 and len(np.unique(items)) == len(items)
    assert request.eligible(items).all()  # not seen, not own, published, inside the age cap
    assert (np.diff(scores) <= 1e-6).all()


def test_in_network_returns_followees_posts(context, tiny_data):
    user = _active_user(tiny_data)
    items, _ = SOURCES["in_network"](context, quota=50).candidates(Request.build(context, user, tiny_data.end_ts))
    assert np.isin(tiny_data.catalog.creator[items], context.store.followees(user)).all()


def test_a_user_with_no_history_gets_trending_and_a_full_list(context, tiny_data):
    fresh_user = tiny_data.n_users + 5  # unknown to the state: no follows, no clicks
    pipeline = build_pipeline(context, lambda x: np.zeros(len(x)), FeedConfig())
    cands = pipeline.candidates(fresh_user, tiny_data.end_ts)
    names = [s.name for s in pipeline.sources]
    assert names.index("trending") in set(cands.source.tolist())
    items, _ = pipeline.recommend(fresh_user, 20, tiny_data.end_ts)
    assert len(items) == 20


def test_pipeline_applies_the_slate_rules_and_survives_a_broken_source(context, tiny_data):
    user = _active_user(tiny_data)
    rng = np.random.default_rng(0)
    pipeline = build_pipeline(context, lambda x: rng.standard_normal(len(x)), FeedConfig(max_per_creator=1))

    class Broken:
        name, quota = "broken", 10

        def candidates(self, request):
            raise ConnectionError("feature store down")

    pipeline.sources.insert(0, Broken())
    items, scores = pipeline.recommend(user, 20, tiny_data.end_ts)
    assert len(items) == 20 and (np.diff(scores) <= 0).all()
    creators = tiny_data.catalog.creator[items]
    assert len(np.unique(creators)) == len(creators)
    request = Request.build(context, user, tiny_data.end_ts)
    assert request.eligible(items).all()


def test_feed_config_names_unknown_sources():
    with pytest.raises(ValueError, match="unknown candidate source"):
        FeedConfig(sources={"gnn": 10, "nope": 5})
