"""The feed as its own arm: a ``feed-ranker`` bundle behind ``GET /recommend``, its real-time feature
state fed by exposures and ``POST /feedback`` (in-process and through a real Redis), and the failure
rules of issue 13 (parity refusal, Redis down, no follows, no history)."""

from __future__ import annotations

from pathlib import Path

import httpx
import numpy as np
import pytest
import torch

from data_gen.generate import generate
from data_gen.generator_config import resolve_config
from recsys.bundle import read_manifest, write_manifest
from recsys.feed.bundle import ONNX_FILE, export_onnx, save_feed_bundle
from recsys.feed.data import CLICK, IMPRESSION, EventLog, FeedData, load_feed_data
from recsys.feed.embeddings import FeedEmbeddings
from recsys.feed.features import N_FEATURES, POSITION, build_features
from recsys.feed.live import StreamedFeatureState, warm_state
from recsys.feed.ranker import RankerConfig, RankerMLP
from serving.feed_model import FeedModel, load_feed_model
from serving.loading import ModelStore
from serving.settings import ServingSettings

K = 10


@pytest.fixture(scope="module")
def feed_dir(tmp_path_factory) -> Path:
    """The data_gen ``tiny`` preset (seed 7): its interactions are sharded (``interactions/part-*.parquet``),
    so every test here also warms the feed's state from a sharded table."""
    out = tmp_path_factory.mktemp("feed-serving") / "tiny"
    generate(resolve_config("tiny", seed=7), out, progress=False)
    assert len(list((out / "interactions").glob("part-*.parquet"))) > 1
    return out


@pytest.fixture(scope="module")
def feed_data(feed_dir) -> FeedData:
    return load_feed_data(feed_dir)


def _save_bundle(path: Path, data: FeedData, seed: int = 0) -> Path:
    """A feed bundle over ``data``: a seeded random ranker and seeded random vectors (content fold-in)."""
    rng = np.random.default_rng(seed)
    torch.manual_seed(seed)
    ranker = RankerMLP(RankerConfig(hidden=[8]), torch.zeros(N_FEATURES), torch.ones(N_FEATURES)).eval()
    trained = rng.random(data.n_items) < 0.5
    emb = FeedEmbeddings(rng.standard_normal((data.n_users, 8)).astype(np.float32),
                         rng.standard_normal((data.n_items, 8)).astype(np.float32), trained)
    probe = rng.standard_normal((64, N_FEATURES)).astype(np.float32)
    probe[:, POSITION] = 0
    return save_feed_bundle(path, ranker=ranker, embeddings=emb.with_content_fold_in(data.catalog), users=data.users,
                            items=data.items, probe=probe, feed_config={"max_per_creator": 2})  # fmt: skip


@pytest.fixture(scope="module")
def feed_bundle(feed_data, tmp_path_factory) -> Path:
    return _save_bundle(tmp_path_factory.mktemp("feed-bundle") / "feed", feed_data)


@pytest.fixture(scope="module")
def broken_bundle(feed_data, tmp_path_factory) -> Path:
    """Checksums fine, ONNX graph of another ranker: only the parity check can catch it."""
    path = _save_bundle(tmp_path_factory.mktemp("feed-broken") / "feed", feed_data)
    other = RankerMLP(RankerConfig(hidden=[8]), torch.zeros(N_FEATURES), torch.ones(N_FEATURES))
    torch.nn.init.constant_(other.mlp[-1].bias, 3.0)
    export_onnx(other, path / ONNX_FILE)
    manifest = read_manifest(path)
    manifest.pop("files")
    write_manifest(path, manifest)
    return path


def _uid(data: FeedData, idx: int) -> str:
    return str(data.users.ids[idx])


def _active_user(data: FeedData) -> int:
    """The user with the most impressions."""
    return int(np.argmax(np.bincount(data.events.user[data.events.kind == IMPRESSION], minlength=data.n_users)))


# -- over HTTP: a real uvicorn serving gnn and the feed side by side -------------------------------
@pytest.fixture(scope="module")
def feed_server(serve, serving_bundles, feed_bundle, broken_bundle, feed_dir):
    return serve({
        "FEEDREC_MODELS": f"feed={feed_bundle},gnn={serving_bundles['gnn']},broken={broken_bundle}",
        "FEEDREC_DEFAULT_MODEL": "feed", "FEEDREC_DATA_DIR": str(feed_dir), "FEEDREC_PARITY_USERS": "8",
        "FEEDREC_EVENTS_DIR": "memory",
    })


def test_the_feed_serves_its_lists_and_a_parity_failure_is_refused_at_load(feed_server, feed_data):
    ready = httpx.get(f"{feed_server.url}/readyz").json()
    assert ready["ready"] is True and set(ready["models"]) == {"feed", "gnn"}
    assert ready["models"]["feed"]["kind"] == "feed-ranker"
    assert "parity" in ready["errors"]["broken"]
    user = _active_user(feed_data)
    seen = set(feed_data.events.item[(feed_data.events.user == user) & (feed_data.events.kind == IMPRESSION)].tolist())
    r = httpx.get(f"{feed_server.url}/recommend/{_uid(feed_data, user)}", params={"k": K}, timeout=30)
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["model"] == "feed"
    assert len(body["items"]) == K and body["logged"] is True and body["fallback"] is None
    dense = [_item_index(feed_data, it["item_id"]) for it in body["items"]]
    assert not seen & set(dense), "a seen post was served"
    creators = feed_data.catalog.creator[dense]
    assert np.bincount(creators[creators >= 0]).max() <= 2, "the slate rule allows 2 posts per creator"
    # the list's impressions are in the state: the next list has none of them
    again = httpx.get(f"{feed_server.url}/recommend/{_uid(feed_data, user)}", params={"k": K}, timeout=30).json()
    assert not {it["item_id"] for it in again["items"]} & {it["item_id"] for it in body["items"]}
    # feedback on a feed item is accepted and stored
    item = body["items"][0]["item_id"]
    fb = httpx.post(f"{feed_server.url}/feedback", json={"request_id": body["request_id"], "user_id": body["user_id"],
                                                         "item_id": item, "kind": "click"}, timeout=10)  # fmt: skip
    assert fb.status_code == 200 and fb.json()["recorded"] is True
    metrics = httpx.get(f"{feed_server.url}/metrics").text
    for stage in ("candidates", "features+ranker", "slate", "sync"):
        assert f'feedrec_feed_stage_seconds_count{{model="feed",stage="{stage}"}}' in metrics
    assert "Traceback" not in feed_server.log()


def test_a_user_with_no_history_gets_a_full_cold_start_list(feed_server):
    body = httpx.get(f"{feed_server.url}/recommend/987654321", params={"k": K}, timeout=30).json()
    assert body["model"] == "feed" and body["fallback"] == "cold_start" and len(body["items"]) == K


def _item_index(data: FeedData, item_id) -> int:
    return int(np.flatnonzero(data.items.ids == type(data.items.ids[0])(item_id))[0])


# -- in process: the state the serving path builds equals the training path's ------------------------
def _model(name, bundle, feed_dir, redis_client=None) -> FeedModel:
    return load_feed_model(name, str(bundle), bundle, feed_dir, redis_client=redis_client, breaker_reset_s=0.3)


def _online_events(data: FeedData, seed: int = 0) -> list[tuple[str, str, str, int]]:
    """(kind, user id, item id, ts) after the log: each of 30 users is shown 5 posts and clicks 2."""
    rng = np.random.default_rng(seed)
    t = int(data.end_ts) + 60
    out = []
    for user in rng.choice(data.n_users, 30, replace=False):
        items = rng.choice(data.n_items, 5, replace=False)
        for it in items:
            out.append(("impression", _uid(data, user), str(data.items.ids[it]), t))
        for it in items[:2]:
            out.append(("click", _uid(data, user), str(data.items.ids[it]), t + 5))
        t += 37
    return out


def _feed_online(model: FeedModel, events) -> None:
    for kind, user, item, ts in events:
        if kind == "impression":
            model.observe_exposure(user, [item], ts)
        else:
            model.observe_outcome(user, item, kind, ts)


def _reference_state(data: FeedData, events):
    """The training path: the log plus the same events, fed to a fresh state as the replay does."""
    ref = warm_state(data)
    rows = [(data.users.ids.tolist().index(int(u)), _item_index(data, int(i)), ts, IMPRESSION if k == "impression" else CLICK, -1)
            for k, u, i, ts in events]  # fmt: skip
    a = np.asarray(rows, dtype=np.int64)
    ref.observe(EventLog(a[:, 0].astype(np.int32), a[:, 1].astype(np.int32), a[:, 2], a[:, 3].astype(np.int8),
                         a[:, 4].astype(np.int16)))  # fmt: skip
    return ref


def _features(store, model: FeedModel, data: FeedData, now: int) -> np.ndarray:
    rng = np.random.default_rng(1)
    users = rng.integers(0, data.n_users, 400)
    items = rng.integers(0, data.n_items, 400)
    emb = model.pipeline.context.embeddings
    return build_features(store, data.catalog, emb, users, items, now)


def test_serving_state_gives_the_training_features_for_the_same_events(feed_bundle, feed_dir, feed_data):
    model = _model("feed", feed_bundle, feed_dir)
    events = _online_events(feed_data)
    now = events[-1][3] + 3600
    before = _features(model.store, model, feed_data, now)
    _feed_online(model, events)
    assert model.flush() == len(events)
    after = _features(model.store, model, feed_data, now)
    ref = _features(_reference_state(feed_data, events), model, feed_data, now)
    assert not np.array_equal(before, after), "the online events changed no feature"
    np.testing.assert_allclose(after, ref, rtol=1e-6, atol=1e-9)


def test_redis_shares_the_online_events_and_its_outage_degrades_to_the_local_state(feed_bundle, feed_dir, feed_data,
                                                                                   redis_server):  # fmt: skip
    import redis

    redis_server.flush()
    client = lambda: redis.Redis.from_url(redis_server.url, socket_timeout=0.2, socket_connect_timeout=0.2)  # noqa: E731
    writer = _model("feed", feed_bundle, feed_dir, client())
    reader = _model("feed", feed_bundle, feed_dir, client())
    assert isinstance(writer.store, StreamedFeatureState)
    events = _online_events(feed_data)
    now = events[-1][3] + 3600
    _feed_online(writer, events)
    writer.flush()
    reader.flush()  # applies what the writer put on the stream
    ref = _features(_reference_state(feed_data, events), writer, feed_data, now)
    np.testing.assert_allclose(_features(reader.store, reader, feed_data, now), ref, rtol=1e-6, atol=1e-9)
    np.testing.assert_allclose(_features(writer.store, writer, feed_data, now), ref, rtol=1e-6, atol=1e-9)
    # a third process started later reads the stream from the start
    late = _model("feed", feed_bundle, feed_dir, client())
    np.testing.assert_allclose(_features(late.store, late, feed_data, now), ref, rtol=1e-6, atol=1e-9)

    redis_server.stop()
    try:
        user = _uid(feed_data, _active_user(feed_data))
        items, _, _, _ = writer.rank(user, K, now)
        assert len(items) == K  # Redis down: served from the local state
        writer.observe_outcome(user, items[0], "click", now + 1)
        writer.rank(user, K, now + 2)
        assert not writer.store.healthy
        clicks = writer.store.item_counters(np.array([_item_index(feed_data, int(items[0]))]), now + 2)[0, 3]
        assert clicks >= 1  # the outage's own events still count locally
    finally:
        redis_server.start()


def test_a_user_without_follows_gets_other_sources_and_a_failing_source_is_skipped(feed_bundle, feed_dir, feed_data):
    model = _model("feed", feed_bundle, feed_dir)
    now = int(feed_data.end_ts) + 60
    user = "55555555"  # every tiny user follows someone: a new user with history but no follows
    shown, _, fallback, _ = model.rank(user, K, now)
    assert fallback == "cold_start"
    model.observe_exposure(user, shown, now)
    model.observe_outcome(user, shown[0], "click", now + 1)
    items, _, fallback, _ = model.rank(user, K, now + 2)
    assert len(model.store.followees(model.user_index(user))) == 0
    assert len(items) == K and fallback is None and not set(items) & set(shown)

    class Broken:
        name, quota = "broken", 10

        def candidates(self, request):
            raise ConnectionError("source down")

    model.pipeline.sources.insert(0, Broken())
    items2, _, _, _ = model.rank(user, K, now + 3)
    assert len(items2) == K  # the broken source is logged and skipped


def test_a_cold_user_gets_trending_and_interest_candidates(feed_bundle, feed_dir, feed_data):
    model = _model("feed", feed_bundle, feed_dir)
    cands = model.pipeline.candidates(feed_data.n_users + 5, int(feed_data.end_ts) + 60)
    names = [s.name for s in model.pipeline.sources]
    by_source = {names[c] for c in np.unique(cands.source)}
    assert "trending" in by_source and len(cands.items) >= K


def test_a_feed_bundle_without_a_data_dir_or_over_other_data_is_refused(feed_bundle, data_dir):
    store = ModelStore(ServingSettings(models={"feed": str(feed_bundle)}, events_dir=None))
    store.load_initial()
    assert "FEEDREC_DATA_DIR" in store.errors["feed"] and not store.models
    store = ModelStore(ServingSettings(models={"feed": str(feed_bundle)}, events_dir=None, data_dir=data_dir))
    store.load_initial()  # the serving fixtures' data: no post catalog, other ids
    assert "feed" in store.errors and not store.models


def test_the_service_feeds_exposures_and_feedback_into_the_feed_state(feed_bundle, feed_dir, feed_data):
    """The wiring: RecommendService.log_exposure and .feedback reach the feed model's state."""
    from serving.app import build_state
    from serving.service_metrics import ServingMetrics

    settings = ServingSettings(models={"feed": str(feed_bundle)}, data_dir=feed_dir, events_dir=None,
                               allow_sim_time=True)  # event times at the data's end, not today
    service = build_state(settings, ServingMetrics()).service
    model = service.store.get("feed")
    user = _uid(feed_data, _active_user(feed_data))
    now = float(feed_data.end_ts + 600)
    rec = service.recommend(user, K, ts=now)
    assert service.log_exposure(rec) and rec.model == "feed"
    item = rec.items[0]["item_id"]
    assert service.feedback(rec.request_id, user, item, "click", ts=now + 5)
    model.flush()
    dense = _item_index(feed_data, item)
    t = int(now) + 10
    counters = model.store.item_counters(np.array([dense]), t)[0]
    ref = warm_state(feed_data).item_counters(np.array([dense]), t)[0]
    assert counters[3] == ref[3] + 1 and counters[5] == ref[5] + 1  # one more click, one more impression
    seen = model.store.seen_items(model.user_index(user))
    assert {_item_index(feed_data, it["item_id"]) for it in rec.items} <= set(seen.tolist())
