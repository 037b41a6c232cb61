"""MLflow helpers against a real SQLite store in a temporary directory."""

from pathlib import Path

import mlflow
import numpy as np
import pytest
from mlflow import MlflowClient

from recsys.bundle import BundleError
from recsys.models.base import Recommender
from recsys.models.popular import PopularRecommender
from recsys.tracking import (
    TAG_DATA_FINGERPRINT,
    TAG_GIT_COMMIT,
    TAG_SPLIT_HASH,
    ModelRefError,
    configure_tracking,
    flatten_params,
    log_bundle,
    register_bundle,
    resolve_model_ref,
    start_run,
)
from tests.recsys.models.mixin import planted_signal


@pytest.fixture(scope="module")
def store_dir(tmp_path_factory):
    # one real SQLite store per test session (shared with tests/training): creating the schema
    # costs seconds; tests use distinct experiment and model names
    store = tmp_path_factory.getbasetemp() / "mlflow-store"
    store.mkdir(exist_ok=True)
    return store


@pytest.fixture
def store(store_dir, monkeypatch):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{store_dir / 'mlflow.db'}")
    monkeypatch.chdir(store_dir)  # nothing may land in the repository
    configure_tracking()
    yield store_dir
    mlflow.end_run()


@pytest.fixture
def bundle(tmp_path):
    return PopularRecommender().fit(planted_signal().dataset).save(tmp_path / "popular_bundle")


def test_environment_wins_over_argument(monkeypatch, tmp_path):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path}/env.db")
    assert configure_tracking("sqlite:///elsewhere.db") == f"sqlite:///{tmp_path}/env.db"
    assert mlflow.get_tracking_uri() == f"sqlite:///{tmp_path}/env.db"


def test_default_is_sqlite_in_cwd(monkeypatch, tmp_path):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.chdir(tmp_path)
    assert configure_tracking() == f"sqlite:///{tmp_path / 'mlflow.db'}"
    # MLflow exports the URI to the environment; a later explicit uri must still be honoured
    assert configure_tracking("sqlite:///x.db") == "sqlite:///x.db"
    assert mlflow.get_tracking_uri() == "sqlite:///x.db"


def test_flatten_params():
    assert flatten_params({"model": {"kind": "als", "factors": 8}, "seed": 1, "ks": [20]}) == {
        "model.kind": "als",
        "model.factors": "8",
        "seed": "1",
        "ks": "[20]",
    }


def test_start_run_records_params_tags_and_artifacts_beside_db(store):
    with start_run(
        "exp", "trial", params={"model": {"factors": 8}}, tags={"model": "als"},
        dataset_fingerprint="fp123", split_hash="sh456",
    ) as run:
        mlflow.log_metric("valid.recall_at_20", 0.5, step=3)
        with start_run("exp", "child", params={"x": 1}, nested=True) as child:
            pass
    got = MlflowClient().get_run(run.info.run_id)
    assert got.data.params == {"model.factors": "8"}
    assert got.data.tags["model"] == "als"
    assert got.data.tags[TAG_DATA_FINGERPRINT] == "fp123"
    assert got.data.tags[TAG_SPLIT_HASH] == "sh456"
    assert got.data.tags[TAG_GIT_COMMIT]
    assert got.data.metrics["valid.recall_at_20"] == pytest.approx(0.5)
    assert got.info.artifact_uri.startswith((store / "mlartifacts").as_uri())
    child_run = MlflowClient().get_run(child.info.run_id)
    assert child_run.data.tags["mlflow.parentRunId"] == run.info.run_id


def test_register_and_resolve_alias_round_trip(store, bundle):
    with start_run("exp", "train") as run:
        log_bundle(bundle)
    assert register_bundle(run.info.run_id, "popular-test", alias="champion") == "1"
    with start_run("exp", "train-again") as run2:
        log_bundle(bundle)
    assert register_bundle(run2.info.run_id, "popular-test") == "2"
    client = MlflowClient()
    assert str(client.get_model_version_by_alias("popular-test", "champion").version) == "1"
    assert client.get_model_version("popular-test", "2").run_id == run2.info.run_id

    local = resolve_model_ref("popular-test@champion", dst_dir=store / "dl")
    assert local.is_dir() and str(local).startswith(str(store / "dl"))
    model = Recommender.load(local)
    original = Recommender.load(bundle)
    np.testing.assert_array_equal(model.recommend(0, k=5)[0], original.recommend(0, k=5)[0])
    assert Recommender.load(resolve_model_ref("models:/popular-test/2", dst_dir=store / "dl2")).kind == "popular"


def test_resolve_path_returns_verified_bundle(bundle, tmp_path):
    assert resolve_model_ref(str(bundle)) == Path(bundle)
    (tmp_path / "not_a_bundle").mkdir()
    with pytest.raises(ModelRefError, match="not a valid model bundle"):
        resolve_model_ref(tmp_path / "not_a_bundle")


def test_resolve_unknown_refs_fail_clearly(store):
    with pytest.raises(ModelRefError, match="not found in the model registry"):
        resolve_model_ref("nosuch@champion")
    with pytest.raises(ModelRefError, match="expected name@alias"):
        resolve_model_ref("justaname")


def test_log_bundle_refuses_a_corrupt_bundle(store, bundle):
    (bundle / "user_ids.parquet").write_bytes(b"garbage")
    with start_run("exp", "bad"), pytest.raises(BundleError, match="checksum"):
        log_bundle(bundle)


def test_signals_deferred_holds_sigterm_until_the_block_ends():
    # A trainer's SIGTERM handler raises; inside an MLflow write that left SQLite locked. The
    # shield delays the signal to the end of the write, then it is handled as usual.
    import os
    import signal

    from recsys.tracking import shielded_mlflow, signals_deferred

    seen = []
    old = signal.signal(signal.SIGTERM, lambda signum, frame: seen.append(signum))
    try:
        with signals_deferred():
            os.kill(os.getpid(), signal.SIGTERM)
            for _ in range(1000):  # plenty of bytecode boundaries where an unblocked handler would run
                pass
            assert seen == []
        assert seen == [signal.SIGTERM]
        assert shielded_mlflow.log_metrics.__name__ == "log_metrics"  # wraps mlflow's own functions
    finally:
        signal.signal(signal.SIGTERM, old)
