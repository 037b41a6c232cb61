"""serving.cache: the same contract for the in-process LRU and Redis; Redis outages are survived."""

from __future__ import annotations

import time

import numpy as np
import pytest

from serving.cache import CircuitBreaker, InProcessFeatureCache, RedisFeatureCache, UserFeatures


@pytest.fixture(params=["in-process", "redis"])
def cache(request):
    if request.param == "in-process":
        yield InProcessFeatureCache(max_entries=1000, max_recent=3)
    else:
        server = request.getfixturevalue("redis_server")
        server.flush()
        c = RedisFeatureCache(server.url, timeout_s=0.2, max_recent=3)
        yield c
        c.close()


def test_miss_then_hit(cache):
    assert cache.lookup("u1", "v1").features is None
    cache.put_features("u1", UserFeatures(("i1", "i2"), ("u9",)))
    got = cache.lookup("u1", "v1")
    assert got.features == UserFeatures(("i1", "i2"), ("u9",))
    assert got.vector is None


def test_vectors_are_per_model_version(cache):
    cache.put_vector("u1", "v1", np.arange(4, dtype=np.float32))
    np.testing.assert_allclose(cache.lookup("u1", "v1").vector, [0, 1, 2, 3])
    assert cache.lookup("u1", "v2").vector is None


def test_feedback_prepends_keeps_max_recent_and_drops_vectors(cache):
    cache.put_features("u1", UserFeatures(("old1", "old2"), ()))
    cache.put_vector("u1", "v1", np.ones(2, dtype=np.float32))
    assert cache.append_interaction("u1", "new1")
    assert cache.append_interaction("u1", "new2")
    got = cache.lookup("u1", "v1")
    assert got.features.recent_items == ("new2", "new1", "old1")  # newest first, max_recent=3
    assert got.vector is None


def test_feedback_before_source_fill_is_kept(cache):
    """Bug guard: filling from the source after a feedback must not overwrite the feedback."""
    cache.append_interaction("u2", "fresh")
    assert cache.lookup("u2", "v1").features is None  # still a miss: the source was never read
    cache.put_features("u2", UserFeatures(("src1",), ("f1",)))
    assert cache.lookup("u2", "v1").features == UserFeatures(("fresh", "src1"), ("f1",))


def test_lru_evicts_oldest():
    c = InProcessFeatureCache(max_entries=16)
    for i in range(20):
        c.put_features(f"u{i}", UserFeatures((str(i),), ()))
    assert c.lookup("u0", "v").features is None
    assert c.lookup("u19", "v").features is not None


def test_ttl_expires():
    c = InProcessFeatureCache(max_entries=16, vector_ttl_s=0.05)
    c.put_vector("u", "v", np.ones(2, dtype=np.float32))
    time.sleep(0.1)
    assert c.lookup("u", "v").vector is None


def test_breaker_opens_and_retries_after_reset():
    b = CircuitBreaker(reset_s=0.05)
    assert b.allow()
    b.failure()
    assert not b.allow()
    time.sleep(0.06)
    assert b.allow()


def test_redis_down_is_fast_counted_and_recovers(redis_server):
    errors, skips = [], []
    c = RedisFeatureCache(redis_server.url, timeout_s=0.05, breaker_reset_s=0.3,
                          on_error=errors.append, on_skip=skips.append)
    c.put_features("u", UserFeatures(("a",), ()))
    redis_server.stop()
    try:
        t0 = time.perf_counter()
        for _ in range(20):
            assert c.lookup("u", "v").features is None  # degraded to a miss, no exception
        assert time.perf_counter() - t0 < 1.0  # the breaker skips Redis instead of waiting 20 times
        assert errors and skips
        assert not c.healthy()
    finally:
        redis_server.start()
    time.sleep(0.35)
    assert c.healthy()
    c.put_features("u", UserFeatures(("b",), ()))
    assert c.lookup("u", "v").features.recent_items == ("b",)


def test_lookup_before_fill_returns_pending_feedback(cache):
    """Bug guard: feedback sent while a user was never filled (e.g. during a Redis outage) must
    reach the next request, which reads the source and merges."""
    cache.append_interaction("u3", "clicked")
    got = cache.lookup("u3", "v1")
    assert got.features is None and got.pending_recent == ("clicked",)


def test_ranking_is_cached_beside_the_vector_and_dropped_by_feedback(cache):
    from serving.cache import TopList

    top = TopList(np.array([5, 3, -1], dtype=np.int32), np.array([0.5, 0.25, -np.inf], dtype=np.float32))
    cache.put_vector("u4", "v1", np.ones(2, dtype=np.float32), top)
    got = cache.lookup("u4", "v1").top
    np.testing.assert_array_equal(got.items, [5, 3, -1])
    np.testing.assert_array_equal(got.scores, [0.5, 0.25, -np.inf])
    assert cache.lookup("u4", "v2").top is None
    cache.append_interaction("u4", "x")
    assert cache.lookup("u4", "v1").top is None
