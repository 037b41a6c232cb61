"""The A/B layer wired into the service: real uvicorn over HTTP, real ONNX Runtime, real models.

One server routes the tiny dataset's users with ``abtest.assignment.Router`` between an ALS model (arm
``mf``, named by its bundle path) and a GNN (arm ``gnn``, named by its served name), half of them
through a team-draft interleaving experiment; its event log is the durable segment-file log. A second
server keeps events in memory, to show feedback is checked by the same rules either way.
"""

from __future__ import annotations

import html
import time
import uuid
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest
import yaml

from abtest.assignment import Router
from abtest.event_store import open_event_log
from abtest.events import Exposure, Outcome
from abtest.interleaving import team_draft_interleave
from recsys.models.base import Recommender
from serving.sinks import InMemoryEventSink
from tests.serving.conftest import ITEM_ID0, N_USERS, USER_ID0

USERS = [str(USER_ID0 + i) for i in range(N_USERS)]
SIM_TS = 1_700_000_000.5


def write_experiments(directory, mf_ref: str) -> None:
    directory.mkdir()
    common = {"status": "running", "start": "2020-01-01T00:00:00Z", "control": "mf"}
    experiments = {
        "gnn-vs-mf": {**common, "key": "gnn-vs-mf", "salt": "it-ab", "mode": "ab",
                      "arms": [{"name": "mf", "model": mf_ref, "weight": 1}, {"name": "gnn", "model": "gnn", "weight": 1}]},
        "interleave": {**common, "key": "gnn-vs-mf-interleave", "salt": "it-tdi", "mode": "interleave", "coverage": 0.5,
                       "priority": 1, "arms": [{"name": "mf", "model": "mf", "weight": 1},
                                               {"name": "gnn", "model": "gnn", "weight": 1}]},
        # a draft: never routed, except its QA user, pinned to an arm whose model is not served
        "draft": {**common, "key": "draft-exp", "salt": "it-draft", "status": "draft",
                  "arms": [{"name": "a", "model": "gnn"}, {"name": "broken", "model": "no-such-model"}],
                  "forced": {"qa-broken": "broken"}, "control": "a"},
    }  # fmt: skip
    for name, body in experiments.items():
        (directory / f"{name}.yaml").write_text(yaml.safe_dump(body))


@pytest.fixture(scope="module")
def experiments_dir(tmp_path_factory, serving_bundles):
    directory = tmp_path_factory.mktemp("exp") / "experiments"
    write_experiments(directory, str(serving_bundles["als"]))
    return directory


@pytest.fixture(scope="module")
def router(experiments_dir):
    return Router.from_dir(experiments_dir, default_model="gnn")


@pytest.fixture(scope="module")
def events_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("ab") / "events"


@pytest.fixture(scope="module")
def ab_server(serve, serving_bundles, experiments_dir, events_dir):
    return serve({
        "FEEDREC_MODELS": f"gnn={serving_bundles['gnn']},mf={serving_bundles['als']}",
        "FEEDREC_EXPERIMENTS_DIR": str(experiments_dir), "FEEDREC_EVENTS_DIR": str(events_dir),
        "FEEDREC_ALLOW_SIM_TIME": "true", "FEEDREC_PARITY_USERS": "4",
    })


@pytest.fixture(scope="module")
def memory_server(serve, serving_bundles, experiments_dir):
    return serve({
        "FEEDREC_MODELS": f"gnn={serving_bundles['gnn']},mf={serving_bundles['als']}",
        "FEEDREC_EXPERIMENTS_DIR": str(experiments_dir), "FEEDREC_EVENTS_DIR": "memory", "FEEDREC_PARITY_USERS": "0",
    })


def read_log(events_dir):
    with open_event_log(events_dir, config={"retention_s": 1e12}) as log:
        return log.read_exposures(), log.read_outcomes()


@pytest.fixture(scope="module")
def traffic(ab_server):
    """Every user of the dataset asks once (8 at a time) and clicks 0, 1 or 2 items of the list (the first
    always except for every 4th user, the second for every 3rd)."""

    def one(user: str) -> dict:
        with httpx.Client(base_url=ab_server.url, timeout=30) as client:
            r = client.get(f"/recommend/{user}", params={"k": 10})
            assert r.status_code == 200, r.text
            body = r.json()
            i = int(user) - USER_ID0
            for position in [p for p, clicks in ((0, i % 4 != 0), (1, i % 3 == 0)) if clicks]:
                f = client.post("/feedback", json={"request_id": body["request_id"], "user_id": user,
                                                   "item_id": body["items"][position]["item_id"], "kind": "click"})
                assert f.status_code == 200, f.text
            return body

    with ThreadPoolExecutor(8) as pool:
        return dict(zip(USERS, pool.map(one, USERS)))


def test_users_are_routed_deterministically_to_the_arms_models(ab_server, router, traffic):
    ready = httpx.get(f"{ab_server.url}/readyz").json()
    assert ready["event_log"] == {"backend": "SegmentFileLog", "healthy": True}
    versions = {name: m["version"] for name, m in ready["models"].items()}
    arms_seen = set()
    for user, body in traffic.items():
        expected = router.assign(user)
        if expected.mode == "interleave":
            assert (body["experiment"], body["arm"]) == ("gnn-vs-mf-interleave", "interleaved")
            assert body["model_version"] == f"{versions['mf']}+{versions['gnn']}"
            continue
        assert (body["experiment"], body["arm"]) == ("gnn-vs-mf", expected.arm)
        assert body["model"] == expected.arm and body["model_version"] == versions[expected.arm]
        assert body["item_arms"] is None
        arms_seen.add(body["arm"])
    assert arms_seen == {"mf", "gnn"}
    again = httpx.get(f"{ab_server.url}/recommend/{USERS[0]}").json()
    assert again["arm"] == traffic[USERS[0]]["arm"]  # the same user again: the same arm


def test_exposures_and_outcomes_land_in_the_durable_log(events_dir, traffic):
    exposures, outcomes = read_log(events_dir)
    by_request = exposures.set_index("request_id")
    for user, body in traffic.items():
        row = by_request.loc[body["request_id"]]
        assert (row["arm"], row["experiment"], str(row["user"])) == (body["arm"], body["experiment"], user)
        assert list(row["items"]) == [it["item_id"] for it in body["items"]]
    clicked = set(zip(outcomes["request_id"], outcomes["item"]))
    for user, body in traffic.items():
        i = int(user) - USER_ID0
        assert ((body["request_id"], body["items"][0]["item_id"]) in clicked) == (i % 4 != 0)
        assert ((body["request_id"], body["items"][1]["item_id"]) in clicked) == (i % 3 == 0)


def post(base: str, **body) -> httpx.Response:
    return httpx.post(f"{base}/feedback", json={"kind": "click", **body}, timeout=10)


@pytest.mark.parametrize("which", ["ab_server", "memory_server"])
def test_feedback_is_checked_against_what_was_shown(which, request):
    base = request.getfixturevalue(which).url
    user = str(USER_ID0 + 11)
    rec = httpx.get(f"{base}/recommend/{user}", params={"k": 5}).json()
    shown = {it["item_id"] for it in rec["items"]}
    unshown = next(ITEM_ID0 + i for i in range(200) if ITEM_ID0 + i not in shown)
    rid, item = rec["request_id"], rec["items"][2]["item_id"]

    ok = post(base, request_id=rid, user_id=user, item_id=item)
    not_shown = post(base, request_id=rid, user_id=user, item_id=unshown)
    unknown = post(base, request_id=uuid.uuid4().hex, user_id=user, item_id=item)
    other_user = post(base, request_id=rid, user_id=str(USER_ID0 + 12), item_id=item)
    assert ok.status_code == 200 and ok.json() == {"status": "ok", "recorded": True}
    assert (not_shown.status_code, not_shown.json()["error"]) == (422, "item_not_shown")
    assert (unknown.status_code, unknown.json()["error"]) == (404, "unknown_request")
    assert (other_user.status_code, other_user.json()["error"]) == (422, "user_mismatch")
    assert str(unshown) not in not_shown.text  # refusals do not echo the input
    metrics = httpx.get(f"{base}/metrics").text
    for reason in ("item_not_shown", "unknown_request", "user_mismatch"):
        assert f'feedrec_feedback_rejected_total{{reason="{reason}"}} 1.0' in metrics
    assert 'feedrec_event_log_stat{stat="rejected_item_not_shown"} 1.0' in metrics


@pytest.mark.parametrize("which", ["ab_server", "memory_server"])
def test_retried_feedback_with_an_event_id_is_stored_once(which, request, events_dir):
    base = request.getfixturevalue(which).url
    user = str(USER_ID0 + 21)
    rec = httpx.get(f"{base}/recommend/{user}", params={"k": 5}).json()
    event_id = f"retry-{which}-{uuid.uuid4().hex}"
    body = {"request_id": rec["request_id"], "user_id": int(user), "item_id": rec["items"][0]["item_id"],
            "event_id": event_id}  # fmt: skip
    first, second = post(base, **body), post(base, **body)
    assert first.json()["recorded"] is True
    assert second.status_code == 200 and second.json()["recorded"] is False  # acknowledged, not applied again
    metrics = httpx.get(f"{base}/metrics").text
    assert 'feedrec_event_log_stat{stat="duplicates_skipped"}' in metrics
    assert post(base, **{**body, "event_id": "bad id!"}).status_code == 422
    if which == "ab_server":
        _, outcomes = read_log(events_dir)
        assert (outcomes["event_id"] == event_id).sum() == 1
        assert outcomes.attrs["duplicates_dropped"] == 0  # dropped at write time, not only when reading


def test_interleaved_lists_merge_both_models_and_credit_each_item(ab_server, router, serving_bundles, events_dir,
                                                                  traffic):
    user = next(u for u in USERS[50:] if router.assign(u).mode == "interleave")
    body = httpx.get(f"{ab_server.url}/recommend/{user}", params={"k": 10}).json()
    assert body["arm"] == "interleaved" and len(body["item_arms"]) == len(body["items"]) == 10
    assert set(body["item_arms"]) <= {"mf", "gnn", "shared"} and {"mf", "gnn"} <= set(body["item_arms"])
    # the same merge, recomputed from the PyTorch models (the ONNX lists match them: test_app.py); the
    # items the user clicked in `traffic` are recent interactions, excluded from both lists
    idx = int(user) - USER_ID0
    clicked = {traffic[user]["items"][p]["item_id"] for p, c in ((0, idx % 4 != 0), (1, idx % 3 == 0)) if c}
    lists = []
    for kind in ("als", "gnn"):
        ranked = [ITEM_ID0 + int(i) for i in Recommender.load(serving_bundles[kind]).recommend(idx, k=12)[0]]
        lists.append([item for item in ranked if item not in clicked][:10])
    merged = team_draft_interleave(*lists, request_id=body["request_id"], k=10, arms=("mf", "gnn"))
    assert [it["item_id"] for it in body["items"]] == list(merged.items)
    assert body["item_arms"] == [t or "shared" for t in merged.teams]
    exposures, _ = read_log(events_dir)
    row = exposures.set_index("request_id").loc[body["request_id"]]
    assert list(row["item_arms"]) == body["item_arms"] and row["arm"] == "interleaved"


def test_sim_time_header_stamps_events_when_allowed(ab_server, events_dir):
    user = str(USER_ID0 + 31)
    headers = {"X-Feedrec-Sim-Time": str(SIM_TS)}
    rec = httpx.get(f"{ab_server.url}/recommend/{user}", headers=headers).json()
    r = post(ab_server.url, request_id=rec["request_id"], user_id=user, item_id=rec["items"][0]["item_id"])
    assert r.status_code == 200
    bad = httpx.get(f"{ab_server.url}/recommend/{user}", headers={"X-Feedrec-Sim-Time": "nan"})
    assert bad.status_code == 422
    exposures, outcomes = read_log(events_dir)
    assert exposures.set_index("request_id").loc[rec["request_id"], "ts"] == pytest.approx(SIM_TS)
    assert time.time() - outcomes.set_index("request_id").loc[rec["request_id"], "ts"] < 600  # no header: now


def test_report_route_renders_the_decision(ab_server, traffic, events_dir):
    summary = httpx.get(f"{ab_server.url}/experiments/gnn-vs-mf/report", params={"format": "json"}, timeout=120)
    assert summary.status_code == 200, summary.text + ab_server.log()[-3000:]
    decision = summary.json()["decision"]
    assert decision.startswith(("Not enough data", "Do not ship", "No significant difference", "GNN", "MF"))
    exposures, _ = read_log(events_dir)
    ab = exposures[exposures["experiment"] == "gnn-vs-mf"]
    users = {row["arm"]: row["users"] for row in summary.json()["arms_table"]}
    assert users == ab.groupby("arm")["user"].nunique().to_dict()  # it reads the service's own log
    page = httpx.get(f"{ab_server.url}/experiments/gnn-vs-mf/report", timeout=120)
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    assert html.escape(decision, quote=False) in page.text or decision in page.text
    markdown = httpx.get(f"{ab_server.url}/experiments/gnn-vs-mf/report", params={"format": "md"}, timeout=120)
    assert decision in markdown.text
    interleave = httpx.get(f"{ab_server.url}/experiments/gnn-vs-mf-interleave/report", timeout=120)
    assert interleave.status_code == 200 and "preference" in interleave.text.lower()


def test_report_route_errors_are_json(ab_server, memory_server):
    cases = [(ab_server, "no-such-exp", 404, "unknown_experiment"), (ab_server, "draft-exp", 409, "no_events"),
             (memory_server, "gnn-vs-mf", 503, "no_event_log")]  # fmt: skip
    for server, key, status, error in cases:
        r = httpx.get(f"{server.url}/experiments/{key}/report", timeout=60)
        assert (r.status_code, r.json()["error"]) == (status, error)


def test_request_errors_carry_the_arm(ab_server):
    r = httpx.get(f"{ab_server.url}/recommend/qa-broken")
    assert (r.status_code, r.json()["error"]) == (503, "model_unavailable")
    httpx.get(f"{ab_server.url}/recommend/{USERS[0]}?k=0")
    metrics = httpx.get(f"{ab_server.url}/metrics").text
    assert 'feedrec_request_errors_total{arm="broken",route="/recommend/{user_id}",status="503"} 1.0' in metrics
    assert 'feedrec_request_errors_total{arm="none",route="/recommend/{user_id}",status="422"}' in metrics
    assert 'feedrec_request_latency_seconds_count{arm="gnn",route="/recommend/{user_id}"}' in metrics


def test_in_memory_sink_applies_the_log_rules_without_a_server():
    from abtest.events import ItemNotShown, UnknownRequest

    sink = InMemoryEventSink(maxlen=2)
    for i in range(3):
        sink.append_exposure(Exposure(request_id=f"r{i}", arm="default", user="u", model_version="v", items=[1, 2]))
    assert sink.append_outcome(Outcome(request_id="r2", user="u", item=2, kind="click", event_id="e1")) is True
    assert sink.append_outcome(Outcome(request_id="r2", user="u", item="2", kind="click", event_id="e1")) is False
    with pytest.raises(ItemNotShown):
        sink.append_outcome(Outcome(request_id="r2", user="u", item=3, kind="click"))
    with pytest.raises(UnknownRequest):  # evicted: the sink holds the last 2 requests
        sink.append_outcome(Outcome(request_id="r0", user="u", item=1, kind="click"))
    assert sink.counters()["rejected_unknown_request"] == 1 and len(sink.outcomes) == 1
