"""Traffic simulators: the offline world and its checks, and the closed loop against a fake HTTP service."""

from __future__ import annotations

import json
from pathlib import Path

import httpx
import numpy as np
import pytest

from abtest.__main__ import main
from abtest.assignment import assign_buckets
from abtest.report.render import ReportInputs, render_report
from abtest.sim.closed_loop import SIM_TIME_HEADER, check_loopback, events_for_report, run_simulation
from abtest.sim.offline import build_world, random_assignments, validate
from abtest.sim.world import TrafficConfig, daily_sessions, load_world_users, ranker_lists
from data_gen.generate import generate
from data_gen.generator_config import resolve_config
from data_gen.truth import ClickModel
from tests.abtest.report_fixtures import experiment


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("sim") / "tiny"
    generate(resolve_config("tiny", seed=7), out, progress=False)
    return out


@pytest.fixture(scope="module")
def click_model(tiny: Path) -> ClickModel:
    return ClickModel.load(tiny)


TRAFFIC = TrafficConfig(days=7, sessions_per_day=300.0, k=10)


def test_sessions_follow_activity(tiny):
    users = load_world_users(tiny)
    requests = daily_sessions(users, TrafficConfig(days=50, sessions_per_day=400.0, requests_per_session=2.0),
                              np.random.default_rng(0))  # fmt: skip
    assert requests.shape == (len(users.user_ids), 50)
    # 400 sessions a day of 2 requests on average
    assert requests.sum() / 50 == pytest.approx(800, rel=0.05)
    expected = 800 * 50 * users.weights
    busy = expected > 50
    assert np.corrcoef(expected[busy], requests.sum(1)[busy])[0, 1] > 0.9


def test_rankers_are_ordered_by_the_truth(tiny, click_model, tmp_path):
    users = load_world_users(tiny).user_ids[:200]
    ctr = {}
    for spec in ("oracle", "noisy-oracle:1", "popular", "random"):
        lists = ranker_lists(spec, click_model, users, 10, seed=1)
        assert lists.shape == (200, 10)
        valid = lists >= 0
        positions = np.tile(np.arange(10), (200, 1))
        p = click_model.click_probability(np.repeat(users, 10).reshape(200, 10)[valid], lists[valid], positions[valid])
        ctr[spec] = p.sum() / 200
    assert ctr["oracle"] > ctr["noisy-oracle:1"] > ctr["random"]
    assert ctr["oracle"] > ctr["popular"] > ctr["random"]
    path = tmp_path / "lists.npz"
    lists = ranker_lists("popular", click_model, users, 10)
    np.savez(path, user_ids=users[::-1], items=lists[::-1])
    assert np.array_equal(ranker_lists(f"lists:{path}", click_model, users, 10), lists)
    with pytest.raises(ValueError, match="unknown ranker"):
        ranker_lists("bogus", click_model, users, 10)


def test_assignments_use_the_production_hash(tiny):
    users = load_world_users(tiny).user_ids[:300]
    assign = random_assignments(users, 3, seed=5)
    for e in range(3):
        assert np.array_equal(assign[e] > 0, assign_buckets(f"offline-5-{e}", users.tolist()) >= 5000)
    assert 0.4 < assign.mean() < 0.6 and not np.array_equal(assign[0], assign[1])


@pytest.fixture(scope="module")
def world(tiny, click_model):
    return build_world(tiny, "popular", "oracle", traffic=TrafficConfig(days=14, sessions_per_day=400.0),
                       seed=3, click_model=click_model)  # fmt: skip


def test_world_truth_is_the_click_model_expectation(world, click_model):
    control, treatment = world.rankers
    lists = ranker_lists(treatment, click_model, world.user_ids[:5], 20)
    p = click_model.click_probability(np.repeat(world.user_ids[:5], 20), lists.ravel(), np.tile(np.arange(20), 5))
    assert np.allclose(world.expected_clicks_per_request[treatment][:5], p.reshape(5, 20).sum(1))
    # realised clicks average out to the expectation
    for spec in world.rankers:
        realised = world.clicks[spec].sum() / world.requests.sum()
        assert realised == pytest.approx(world.true_ctr(spec), rel=0.05)
    assert world.true_rel_lift > 0.5  # the oracle beats the global popularity list by far


def test_offline_checks_hold_on_the_simulated_world(world):
    v = validate(world, num_experiments=300, seed=1, power_experiments=200)
    assert 0.01 <= v.aa_false_positive_rate.rate <= 0.10  # 5% +- 3 s.e. for 300 experiments
    assert v.coverage_relative.rate >= 0.90 and v.coverage_absolute.rate >= 0.90
    assert v.sequential_false_positive_rate.rate <= 0.05
    assert v.naive_peeking_false_positive_rate.rate > v.sequential_false_positive_rate.rate
    assert v.interleaving_users_for_power is not None and v.ab_users_for_power is not None
    assert v.interleaving_users_for_power < v.ab_users_for_power


def test_aa_world_has_no_effect_and_no_interleaving(tiny, click_model):
    world = build_world(tiny, "popular", "popular", traffic=TRAFFIC, seed=4, click_model=click_model, max_users=300)
    assert world.true_rel_lift == 0.0 and world.interleave_wins is None
    assert world.n_users == 300


# --------------------------------------------------------------------------- closed loop over HTTP


class FakeService:
    """In-process stand-in for ``python -m serving``: mf serves the popular list, gnn the oracle's; every
    20th recommendation fails with 503."""

    def __init__(self, click_model, config, user_ids):
        self.config = config
        self.lists = {"mf": ranker_lists("popular", click_model, user_ids[:1], 10)[0].tolist()}
        oracle = ranker_lists("oracle", click_model, user_ids, 10)
        self.oracle = {int(u): row.tolist() for u, row in zip(user_ids, oracle)}
        self.calls = 0
        self.feedback: list[dict] = []
        self.sim_times: list[float] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        path = request.url.path
        if path.startswith("/recommend/"):
            self.calls += 1
            if self.calls % 20 == 0:
                return httpx.Response(503, json={"error": "model_unavailable"})
            user = int(path.rsplit("/", 1)[1])
            self.sim_times.append(float(request.headers[SIM_TIME_HEADER]))
            arm = self.config.arm_names[int(self.config.assign_arms([user])[0][0])]
            items = self.lists["mf"] if arm == "mf" else self.oracle[user]
            k = int(request.url.params["k"])
            return httpx.Response(200, json={
                "user_id": str(user), "arm": arm, "experiment": self.config.key, "model_version": f"{arm}/1",
                "request_id": f"req{self.calls}", "fallback": None,
                "items": [{"item_id": i, "score": 1.0, "rank": r} for r, i in enumerate(items[:k], start=1)],
            })  # fmt: skip
        if path == "/feedback":
            self.feedback.append(json.loads(request.content))
            return httpx.Response(200, json={"status": "ok", "recorded": True})
        return httpx.Response(404, json={"error": "not_found"})


def test_closed_loop_counts_failures_and_recovers_the_true_effect(tiny, click_model):
    config = experiment()
    service = FakeService(click_model, config, load_world_users(tiny).user_ids)
    result = run_simulation(
        "http://127.0.0.1:8000", tiny, config, traffic=TRAFFIC, seed=2, concurrency=4, max_requests=800,
        transport=httpx.MockTransport(service), click_model=click_model, progress=False,
    )  # fmt: skip
    assert result.requests_sent >= 800
    assert result.failures["GET recommend: HTTP 503"] == 800 // 20  # counted, not fatal
    assert len(result.exposures) == 800 - 800 // 20
    assert len(result.outcomes) == len(service.feedback) > 0
    assert {f["kind"] for f in service.feedback} == {"click"}
    # simulated time: sessions spread over the 7 simulated days after the dataset's end
    sim = np.array(service.sim_times)
    assert sim.max() - sim.min() > 5 * 86_400 and np.allclose(sim, result.exposures["ts"].to_numpy())
    truth = result.truth("mf", "gnn")
    assert truth["ctr_gnn"] > truth["ctr_mf"] > 0
    exposures, outcomes, source = events_for_report(result, None)
    assert "own record" in source
    report = render_report(ReportInputs(exposures, outcomes, config, truth=truth))
    primary = report.analysis.primary("gnn")
    assert primary.rel_ci[0] < truth["rel_lift"] < primary.rel_ci[1]
    assert report.verdict == "ship" and report.analysis.time_unit == "day"
    client = result.client_guardrails(config.arm_names)
    assert set(client["latency_p99_ms"]) == {"mf", "gnn"} and min(client["latency_p99_ms"].values()) > 0
    # the 503s are attributed to the arm the hash router gives their users
    assert sum(client["error_rate"].values()) > 0


def test_only_loopback_urls_are_driven():
    assert check_loopback("http://127.0.0.1:8000/") == "http://127.0.0.1:8000"
    assert check_loopback("http://localhost:9") == "http://localhost:9"
    for url in ("http://example.com:8000", "http://10.0.0.1", "ftp://127.0.0.1"):
        with pytest.raises(ValueError):
            check_loopback(url)


def test_cli_offline_prints_the_table(tiny, capsys):
    code = main(["simulate", "--offline", "--data", str(tiny), "--experiments", "50", "--max-users", "300",
                 "--days", "5", "--sessions-per-day", "200", "--control", "popular", "--treatment", "oracle"])  # fmt: skip
    assert code == 0
    out = capsys.readouterr().out
    assert "| A/A false-positive rate at alpha = 0.05" in out and "interleaving" in out


def test_cli_rejects_a_directory_without_truth(tmp_path, capsys):
    assert main(["simulate", "--data", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("abtest simulate: error:") and "truth/" in err
