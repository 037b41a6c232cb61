"""The service end to end: real uvicorn subprocesses over HTTP, real ONNX Runtime, real Redis."""

from __future__ import annotations

import shutil
import subprocess
import sys
import time

import httpx
import numpy as np
import pytest

from recsys.models.base import Recommender
from tests.serving.conftest import COLD_WITH_FOLLOWS, COLD_WITH_ITEMS, ITEM_ID0, USER_ID0

ADMIN_TOKEN = "s3cret-token"


@pytest.fixture(scope="module")
def server(serve, serving_bundles, data_dir, tmp_path_factory):
    """In-process cache, async route, admin enabled; gnn (default) and als side by side."""
    export_dir = tmp_path_factory.mktemp("export")
    return serve({
        "FEEDREC_MODELS": f"gnn={serving_bundles['gnn']},als={serving_bundles['als']}",
        "FEEDREC_DATA_DIR": str(data_dir), "FEEDREC_ADMIN_TOKEN": ADMIN_TOKEN, "FEEDREC_PARITY_USERS": "8",
        "FEEDREC_EXPORT_DIR": str(export_dir),
        # reload refs must lie under a bundle root: the test bundles are all in pytest's temp tree
        "FEEDREC_BUNDLE_ROOTS": str(tmp_path_factory.getbasetemp()),
    })


@pytest.fixture(scope="module")
def redis_served(serve, serving_bundles, redis_server):
    """Redis cache, thread-pool route, short breaker reset."""
    redis_server.flush()
    return serve({
        "FEEDREC_MODELS": f"gnn={serving_bundles['gnn']}", "REDIS_URL": redis_server.url,
        "FEEDREC_ROUTE_MODE": "threadpool", "FEEDREC_BREAKER_RESET_S": "0.5", "FEEDREC_PARITY_USERS": "8",
        # Redis is the feature cache only (stopped below); the event log stays in local segment files
        "FEEDREC_EVENTS_BACKEND": "files",
    })


@pytest.fixture(scope="module")
def gnn(serving_bundles):
    return Recommender.load(serving_bundles["gnn"])


def get_rec(base: str, user: str, k: int = 20) -> dict:
    r = httpx.get(f"{base}/recommend/{user}", params={"k": k}, timeout=10)
    assert r.status_code == 200, r.text
    return r.json()


def test_readyz_reports_provider_cache_and_topk(server):
    body = httpx.get(f"{server.url}/readyz").json()
    assert body["ready"] is True
    assert body["provider"] == "CPUExecutionProvider"
    assert body["cache"] == {"backend": "in-process", "healthy": True}
    assert body["topk_backend"] in ("cpp", "torch")
    assert set(body["models"]) == {"gnn", "als"}


def test_models_lists_both_models(server):
    body = httpx.get(f"{server.url}/models").json()
    assert body["default_model"] == "gnn"
    by_name = {m["name"]: m for m in body["models"]}
    assert by_name["gnn"]["default"] and not by_name["als"]["default"]
    assert by_name["als"]["kind"] == "als" and by_name["gnn"]["n_items"] == 200


def test_known_user_matches_pytorch_model(server, gnn):
    body = get_rec(server.url, str(USER_ID0 + 5), k=20)
    assert body["fallback"] is None and body["arm"] == "default" and body["model"] == "gnn"
    assert [it["rank"] for it in body["items"]] == list(range(1, 21))
    expected_idx, expected_scores = gnn.recommend(5, k=20)
    assert [it["item_id"] for it in body["items"]] == [ITEM_ID0 + int(i) for i in expected_idx]
    np.testing.assert_allclose([it["score"] for it in body["items"]], expected_scores, atol=1e-4)
    seen = set((ITEM_ID0 + gnn.seen[5].indices).tolist())
    assert not seen & {it["item_id"] for it in body["items"]}


def test_compact_topk_mode_serves_the_same_lists(serve, serving_bundles, gnn, tmp_path):
    """FEEDREC_TOPK_MODE=compact: int8 scan + exact re-rank; on this catalogue the lists are exact."""
    compact = serve({"FEEDREC_MODELS": f"gnn={serving_bundles['gnn']}", "FEEDREC_TOPK_MODE": "compact",
                     "FEEDREC_TOPK_OVERSAMPLE": "4", "FEEDREC_EXPORT_DIR": str(tmp_path / "export"),
                     "FEEDREC_EVENTS_DIR": "memory"})
    ready = httpx.get(f"{compact.url}/readyz").json()
    assert ready["models"]["gnn"]["topk"] == "compact"
    assert ready["int8_kernel"] in ("avx512-vnni", "portable", None)
    for user in (0, 5, 17):
        body = get_rec(compact.url, str(USER_ID0 + user), k=20)
        expected_idx, expected_scores = gnn.recommend(user, k=20)
        assert [it["item_id"] for it in body["items"]] == [ITEM_ID0 + int(i) for i in expected_idx]
        np.testing.assert_allclose([it["score"] for it in body["items"]], expected_scores, atol=1e-4)
    by_name = {m["name"]: m for m in httpx.get(f"{compact.url}/models").json()["models"]}
    assert by_name["gnn"]["topk"] == "compact int8 x4"


def test_unknown_user_with_follows_is_folded_in(server, gnn):
    body = get_rec(server.url, COLD_WITH_FOLLOWS, k=10)
    assert body["fallback"] == "cold_start"
    expected_idx, _ = gnn.recommend_new_user([], followees=[1, 2, 3, 4, 5], k=10)
    assert [it["item_id"] for it in body["items"]] == [ITEM_ID0 + int(i) for i in expected_idx]


def test_unknown_user_with_interactions_excludes_them(server, gnn):
    body = get_rec(server.url, COLD_WITH_ITEMS, k=50)
    assert body["fallback"] == "cold_start"
    got = {it["item_id"] for it in body["items"]}
    assert not got & {ITEM_ID0 + 10, ITEM_ID0 + 11, ITEM_ID0 + 13}  # engagements, not the impression
    expected_idx, _ = gnn.recommend_new_user([13, 11, 10], k=50)
    assert [it["item_id"] for it in body["items"]] == [ITEM_ID0 + int(i) for i in expected_idx]


def test_unknown_user_without_features_gets_popular(server, gnn):
    body = get_rec(server.url, "no-such-user", k=5)
    assert body["fallback"] == "popular"
    counts = np.bincount(gnn.seen.indices, minlength=gnn.n_items)
    top = np.argsort(-counts, kind="stable")[:5]
    assert [it["item_id"] for it in body["items"]] == [ITEM_ID0 + int(i) for i in top]


def feedback(base: str, user: str, item: int, request_id: str = "req1", kind: str = "click") -> dict:
    r = httpx.post(f"{base}/feedback", json={"request_id": request_id, "user_id": user, "item_id": item,
                                            "kind": kind}, timeout=10)
    assert r.status_code == 200, r.text
    return r.json()


@pytest.mark.parametrize("route", ["server", "redis_served"])
def test_feedback_is_reflected_in_the_next_recommendation(route, request):
    base = request.getfixturevalue(route).url
    user = f"newbie-{route}"
    first = get_rec(base, user, k=10)
    assert first["fallback"] == "popular"
    clicked = first["items"][0]["item_id"]
    assert feedback(base, user, clicked, first["request_id"]) == {"status": "ok", "recorded": True}
    second = get_rec(base, user, k=10)
    assert second["fallback"] == "cold_start"
    assert clicked not in {it["item_id"] for it in second["items"]}


def test_feedback_of_known_user_invalidates_cached_vector(server):
    user = str(USER_ID0 + 7)
    first = get_rec(server.url, user, k=10)
    get_rec(server.url, user, k=10)  # second call hits the cached vector
    top = first["items"][0]["item_id"]
    feedback(server.url, user, top, first["request_id"], kind="like")
    after = get_rec(server.url, user, k=10)
    assert top not in {it["item_id"] for it in after["items"]}
    assert [it["item_id"] for it in after["items"]][:9] == [it["item_id"] for it in first["items"]][1:10]


HOSTILE_GETS = [
    "/recommend/1005?k=0", "/recommend/1005?k=101", "/recommend/1005?k=abc", "/recommend/1005?k=1e9",
    "/recommend/1005?k=99999999999999999999999999", "/recommend/1005?k=-1", "/recommend/1005?k=",
    "/recommend/1005?k=2.5", "/recommend/%F0%9F%98%80", "/recommend/%C3%BC", "/recommend/" + "a" * 5000,
    "/recommend/%00", "/recommend/..%2F..%2Fetc%2Fpasswd", "/recommend/a%20b", "/recommend/", "/recommend",
    "/nope", "/recommend/1005?k=%FF",
]
HOSTILE_POSTS = [
    b"{", b"[]", b"{}", b"null", b'"x"', b"\xff\xfe\x00garbage",
    b'{"request_id": "r", "user_id": "u", "item_id": 1}',
    b'{"request_id": "r", "user_id": "u", "item_id": 1, "kind": "purchase"}',
    b'{"request_id": 5, "user_id": "u", "item_id": 1, "kind": "click"}',
    b'{"request_id": "r", "user_id": ["u"], "item_id": 1, "kind": "click"}',
    b'{"request_id": "r", "user_id": "u", "item_id": {"a": 1}, "kind": "click"}',
    b'{"request_id": "r", "user_id": "\\u00fc\\u00fc", "item_id": 1, "kind": "click"}',
    b'{"request_id": "r", "user_id": "u", "item_id": 1e400, "kind": "click"}',
    b'{"request_id": "r", "user_id": "u", "item_id": 99999999999999999999999, "kind": "click"}',
    b'{"request_id": "r", "user_id": "u", "item_id": 1, "kind": "click", "extra": 1}',
    b'{"request_id": "' + b"r" * 100_000 + b'", "user_id": "u", "item_id": 1, "kind": "click"}',
]


def test_hostile_inputs_get_json_4xx_never_500(server):
    with httpx.Client(base_url=server.url, timeout=10) as client:
        responses = [client.get(path) for path in HOSTILE_GETS]
        responses += [client.post("/feedback", content=body, headers={"content-type": "application/json"})
                      for body in HOSTILE_POSTS]
        responses.append(client.delete("/recommend/1005"))
        responses.append(client.post("/admin/reload", content=b"{bad", headers={"X-Admin-Token": "x"}))
        for r in responses:
            assert 400 <= r.status_code < 500, (r.request.url, r.status_code, r.text[:200])
            assert r.headers["content-type"].startswith("application/json")
            assert "error" in r.json()
        assert [r.status_code for r in responses[:8]] == [422] * 8  # bad k values
        assert client.get("/healthz").json() == {"status": "ok"}
    assert "Traceback" not in server.log()


def test_metrics_exposes_latency_cache_errors_and_versions(server):
    get_rec(server.url, str(USER_ID0 + 1))
    httpx.get(f"{server.url}/recommend/1000?k=0")
    text = httpx.get(f"{server.url}/metrics").text
    assert 'feedrec_request_latency_seconds_bucket{arm="default",le="0.025",route="/recommend/{user_id}"}' in text
    assert 'feedrec_cache_hits_total{kind="features"}' in text
    assert 'feedrec_cache_misses_total{kind="vector"}' in text
    get_rec(server.url, str(USER_ID0 + 1))  # the ranking computed above is reused
    assert 'feedrec_cache_hits_total{kind="ranking"}' in httpx.get(f"{server.url}/metrics").text
    assert 'feedrec_request_errors_total{arm="none",route="/recommend/{user_id}",status="422"}' in text
    assert 'feedrec_model_info{kind="gnn",name="gnn"' in text
    assert 'feedrec_fallback_total{fallback="popular",model="gnn"}' in text


def test_redis_outage_degrades_then_recovers(redis_served, redis_server):
    base = redis_served.url
    user = str(USER_ID0 + 3)
    before = get_rec(base, user, k=5)
    redis_server.stop()
    try:
        for _ in range(5):
            assert get_rec(base, user, k=5)["items"] == before["items"]  # served without the cache
        assert httpx.get(f"{base}/readyz").json()["cache"]["healthy"] is False
        metrics = httpx.get(f"{base}/metrics").text
        errors = [line for line in metrics.splitlines() if line.startswith("feedrec_cache_errors_total{")]
        assert errors and sum(float(line.rsplit(" ", 1)[1]) for line in errors) >= 1
    finally:
        redis_server.start()
    time.sleep(0.6)  # breaker reset
    top = before["items"][0]["item_id"]
    assert feedback(base, user, top, before["request_id"])["recorded"] is True  # Redis is used again
    assert top not in {it["item_id"] for it in get_rec(base, user, k=5)["items"]}
    assert httpx.get(f"{base}/readyz").json()["cache"]["healthy"] is True


def test_admin_reload_requires_token(server):
    r = httpx.post(f"{server.url}/admin/reload")
    assert r.status_code == 401


def test_admin_reload_refuses_corrupt_bundle_and_keeps_serving(server, serving_bundles, tmp_path):
    bad = tmp_path / "bad"
    shutil.copytree(serving_bundles["als"], bad)
    (bad / "serving.safetensors").write_bytes(b"corrupt")
    version = httpx.get(f"{server.url}/readyz").json()["models"]["als"]["version"]
    r = httpx.post(f"{server.url}/admin/reload", json={"models": {"als": str(bad)}},
                   headers={"X-Admin-Token": ADMIN_TOKEN}, timeout=60)
    assert r.status_code == 409 and "checksum" in r.json()["detail"]
    assert httpx.get(f"{server.url}/readyz").json()["models"]["als"]["version"] == version
    assert get_rec(server.url, str(USER_ID0))["items"]


def test_admin_reload_swaps_models(server, trained_bundles):
    # A plain training bundle: the service exports it on load, then swaps.
    r = httpx.post(f"{server.url}/admin/reload", json={"models": {"als": str(trained_bundles["bpr"])}},
                   headers={"X-Admin-Token": ADMIN_TOKEN}, timeout=120)
    assert r.status_code == 200, r.text
    assert r.json()["models"]["als"].startswith("bpr-")
    assert httpx.get(f"{server.url}/readyz").json()["models"]["als"]["kind"] == "bpr"


def test_cli_help():
    run = subprocess.run([sys.executable, "-m", "serving", "--help"], capture_output=True, text=True, timeout=60)
    assert run.returncode == 0 and "--workers" in run.stdout and "--port" in run.stdout


def test_cli_bad_setting_is_one_line(monkeypatch):
    run = subprocess.run([sys.executable, "-m", "serving", "--model", "oops"], capture_output=True, text=True,
                         timeout=60)
    assert run.returncode == 2 and run.stderr.startswith("error: setting models")
