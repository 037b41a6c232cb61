"""Hash router: test vectors, split vs weights, independence across salts, routing rules, validation."""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pytest
from scipy import stats

from abtest.assignment import (
    NUM_BUCKETS,
    ExperimentConfig,
    Router,
    assign_buckets,
    bucket,
    coverage_salt,
    load_experiment,
)
from feedrec_common.config import ConfigError

REPO = Path(__file__).resolve().parents[2]
EXPERIMENTS = REPO / "configs" / "experiments"
NOW = datetime(2025, 6, 1, tzinfo=UTC)

# (salt, user_id) -> (bucket, arm under a 50/50 mf/gnn split, coverage bucket). Also in
# docs/abtest_statistics.md: any other implementation (SQL, another language) must reproduce them.
TEST_VECTORS = [
    ("gnn-vs-mf-v1", "1", 4592, "mf", 1348),
    ("gnn-vs-mf-v1", "2", 5209, "gnn", 1247),
    ("gnn-vs-mf-v1", "42", 3510, "mf", 3032),
    ("gnn-vs-mf-v1", "alice", 4260, "mf", 3500),
    ("gnn-vs-mf-v1", "user-000123", 9756, "gnn", 212),
    ("gnn-vs-mf-v2", "1", 4998, "mf", 3687),
    ("gnn-vs-mf-v2", "alice", 592, "mf", 5349),
    ("demo", "0", 612, "mf", 6446),
]


def make_experiment(**overrides) -> ExperimentConfig:
    data = {
        "key": "exp",
        "salt": "exp-salt",
        "status": "running",
        "arms": [{"name": "control", "model": "mf@champion", "weight": 1}, {"name": "treatment", "model": "gnn@champion", "weight": 1}],
    }
    data.update(overrides)
    return ExperimentConfig.model_validate(data)


@pytest.mark.parametrize(("salt", "user_id", "expected_bucket", "expected_arm", "expected_coverage"), TEST_VECTORS)
def test_vectors(salt, user_id, expected_bucket, expected_arm, expected_coverage):
    assert bucket(salt, user_id) == expected_bucket
    assert bucket(coverage_salt(salt), user_id) == expected_coverage
    # The documented algorithm, spelled out independently of the implementation.
    digest = hashlib.sha256(f"{salt}:{user_id}".encode()).digest()
    assert int.from_bytes(digest[:8], "big") % 10000 == expected_bucket
    experiment = make_experiment(salt=salt, arms=[{"name": "mf", "model": "m"}, {"name": "gnn", "model": "g"}])
    assert experiment.arms[int(experiment.arm_index_of_buckets(expected_bucket))].name == expected_arm


def test_int_and_string_user_ids_are_the_same_user():
    assert bucket("s", 42) == bucket("s", "42")
    assert list(assign_buckets("s", [1, "2"])) == [bucket("s", "1"), bucket("s", 2)]


def test_vectorised_buckets_match_scalar():
    users = [f"u{i}" for i in range(500)]
    np.testing.assert_array_equal(assign_buckets("salt", users), [bucket("salt", u) for u in users])


@pytest.mark.parametrize("weights", [(50, 50), (20, 30, 50), (1, 9)])
def test_split_matches_weights(weights):
    arms = [{"name": f"arm{i}", "model": f"m{i}", "weight": w} for i, w in enumerate(weights)]
    experiment = make_experiment(arms=arms, salt=f"split-{weights}")
    index, covered = experiment.assign_arms(range(100_000))
    assert covered.all()
    observed = np.bincount(index, minlength=len(weights))
    expected = 100_000 * np.asarray(weights) / sum(weights)
    assert stats.chisquare(observed, expected).pvalue > 0.001


def test_coverage_share_and_arms_stable_when_coverage_grows():
    users = range(50_000)
    small = make_experiment(coverage=0.2)
    large = make_experiment(coverage=0.6)
    idx_small, cov_small = small.assign_arms(users)
    idx_large, cov_large = large.assign_arms(users)
    assert abs(cov_small.mean() - 0.2) < 0.01 and abs(cov_large.mean() - 0.6) < 0.01
    # Raising coverage only adds users; nobody already in moves to another arm.
    assert np.all(cov_large[cov_small])
    np.testing.assert_array_equal(idx_small[cov_small], idx_large[cov_small])


def test_two_salts_are_independent():
    users = range(100_000)
    a, _ = make_experiment(salt="first").assign_arms(users)
    b, _ = make_experiment(salt="second").assign_arms(users)
    table = np.zeros((2, 2), dtype=np.int64)
    np.add.at(table, (a, b), 1)
    assert stats.chi2_contingency(table).pvalue > 0.001


def test_salt_change_reshuffles_only_that_experiment():
    users = [str(u) for u in range(2_000)]
    one = make_experiment(key="one", salt="one-v1")
    two = make_experiment(key="two", salt="two-v1")
    before = Router([one, two])
    after = Router([one.model_copy(update={"salt": "one-v2"}), two])
    b1, b2 = (assign_buckets(e.salt, users) for e in before.experiments)
    a1, a2 = (assign_buckets(e.salt, users) for e in after.experiments)
    np.testing.assert_array_equal(b2, a2)  # "two" untouched
    moved = np.mean(before.get("one").arm_index_of_buckets(b1) != after.get("one").arm_index_of_buckets(a1))
    assert 0.4 < moved < 0.6  # a fresh independent 50/50 split moves about half the users


def test_router_sticky_across_instances():
    r1 = Router.from_dir(EXPERIMENTS)
    r2 = Router.from_dir(EXPERIMENTS)
    for user in range(200):
        assert r1.assign(user, NOW) == r2.assign(user, NOW)


def test_shipped_configs():
    router = Router.from_dir(EXPERIMENTS)
    ab = router.get("gnn-vs-mf")
    assert ab.mode == "ab" and ab.coverage == 1.0 and ab.status == "running"
    assert {a.name: (a.model, a.weight) for a in ab.arms} == {"mf": ("mf@champion", 50), "gnn": ("gnn@champion", 50)}
    assert ab.control_arm == "mf"
    assert router.get("gnn-vs-mf-interleave").mode == "interleave"
    a = router.assign("some-user", NOW)
    assert a.experiment == "gnn-vs-mf" and a.in_experiment and a.model == ab.model_of(a.arm)


def test_router_window_and_status():
    start, end = datetime(2025, 1, 1, tzinfo=UTC), datetime(2025, 2, 1, tzinfo=UTC)
    router = Router([make_experiment(start=start, end=end)], default_model="default@champion")
    inside = router.assign("u1", datetime(2025, 1, 15, tzinfo=UTC))
    assert inside.experiment == "exp" and inside.in_experiment and inside.bucket == bucket("exp-salt", "u1")
    for when in (datetime(2024, 12, 31, tzinfo=UTC), end, datetime(2025, 3, 1, tzinfo=UTC)):
        out = router.assign("u1", when)
        assert out.experiment is None and out.model == "default@champion" and not out.in_experiment
    for status in ("draft", "stopped"):
        stopped = Router([make_experiment(status=status)], default_model="d")
        assert stopped.assign("u1", NOW).experiment is None


def test_naive_datetimes_are_utc():
    e = make_experiment(start=datetime(2025, 1, 1), end=datetime(2025, 2, 1))
    assert e.start.tzinfo is not None
    assert Router([e]).assign("u", datetime(2025, 1, 2)).experiment == "exp"


def test_coverage_zero_sends_everyone_to_default():
    router = Router([make_experiment(coverage=0.0)], default_model="d")
    assert all(router.assign(u, NOW).model == "d" for u in range(300))


def test_forced_users():
    e = make_experiment(forced={"qa-1": "treatment", 7: "control"}, coverage=0.0, status="draft")
    router = Router([e])
    a = router.assign("qa-1", NOW)
    assert (a.experiment, a.arm, a.model, a.forced, a.in_experiment) == ("exp", "treatment", "gnn@champion", True, False)
    assert router.assign(7, NOW).arm == "control"  # int key in YAML, int id in the request
    stopped = Router([e.model_copy(update={"status": "stopped"})])
    assert stopped.assign("qa-1", NOW).experiment is None


def test_priority_orders_overlapping_experiments():
    low = make_experiment(key="low", salt="low", coverage=1.0)
    high = make_experiment(key="high", salt="high", coverage=0.5, priority=5)
    router = Router([low, high])
    keys = [router.assign(u, NOW).experiment for u in range(2000)]
    share_high = keys.count("high") / len(keys)
    assert abs(share_high - 0.5) < 0.05 and set(keys) == {"high", "low"}


def test_interleave_assignment():
    e = make_experiment(mode="interleave")
    a = Router([e]).assign("u", NOW)
    assert a.mode == "interleave" and a.arm is None and a.model == "mf@champion"
    assert a.arm_models == (("control", "mf@champion"), ("treatment", "gnn@champion"))


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"arms": [{"name": "a", "model": "m", "weight": 0}, {"name": "b", "model": "m"}]}, "greater than 0"),
        ({"arms": [{"name": "a", "model": "m"}, {"name": "a", "model": "n"}]}, "unique"),
        ({"coverage": 1.5}, "less than or equal to 1"),
        ({"coverage": -0.1}, "greater than or equal to 0"),
        ({"start": "2025-02-01T00:00:00Z", "end": "2025-01-01T00:00:00Z"}, "must be after start"),
        ({"forced": {"qa": "nope"}}, "unknown arms"),
        ({"control": "nope"}, "control"),
        ({"mode": "interleave", "arms": [{"name": n, "model": "m"} for n in "abc"]}, "exactly 2 arms"),
        ({"arms": [{"name": "a", "model": "m", "weight": 1}, {"name": "b", "model": "m", "weight": 1e6}]}, "no bucket"),
        ({"status": "paused"}, "status"),
        ({"arms": [{"name": "a", "model": "m"}]}, "at least 2"),
        ({"colour": "red"}, "unknown key"),
    ],
)
def test_validation_errors(tmp_path, overrides, message):
    import yaml

    data = {"key": "bad", "salt": "s", "arms": [{"name": "a", "model": "m"}, {"name": "b", "model": "n"}]}
    data.update(overrides)
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(data))
    with pytest.raises(ConfigError) as info:
        load_experiment(path)
    assert message in str(info.value) and "bad.yaml" in str(info.value)


def test_router_rejects_duplicate_keys_and_salts(tmp_path):
    with pytest.raises(ConfigError, match="keys must be unique"):
        Router([make_experiment(salt="a"), make_experiment(salt="b")])
    with pytest.raises(ConfigError, match="salts must be unique"):
        Router([make_experiment(key="a"), make_experiment(key="b")])
    with pytest.raises(ConfigError, match="does not exist"):
        Router.from_dir(tmp_path / "missing")


def test_from_dir_reports_every_bad_file(tmp_path):
    (tmp_path / "one.yaml").write_text("key: one\nsalt: s1\narms: []\n")
    (tmp_path / "two.yaml").write_text("key: two\nsalt: s2\ncoverage: 3\narms: [{name: a, model: m}, {name: b, model: m}]\n")
    with pytest.raises(ConfigError) as info:
        Router.from_dir(tmp_path)
    assert "one.yaml" in str(info.value) and "two.yaml" in str(info.value)


def test_boundaries_cover_all_buckets():
    e = make_experiment(arms=[{"name": n, "model": "m", "weight": w} for n, w in zip("abc", (1, 1, 1))])
    assert list(e.boundaries) == [0, 3333, 6667, NUM_BUCKETS]
    assert list(e.arm_index_of_buckets([0, 3332, 3333, 6666, 6667, 9999])) == [0, 0, 1, 1, 2, 2]
