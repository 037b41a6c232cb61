"""training/train_ranker.py on the tiny preset: a real GNN, replay, ranker, ONNX bundle, MLflow registry;
then the policy benchmark judges that bundle on the same data."""

from pathlib import Path

import pytest

from benchmarks import bench_policy
from recsys.feed.bundle import load_feed_bundle
from recsys.tracking import resolve_model_ref
from training import train_ranker

ROOT = Path(__file__).resolve().parents[2]
CONFIG = str(ROOT / "configs/train/ranker_small.yaml")
TINY = ["--set", "data.ranker_days=4", "--set", "gnn.model.embedding_dim=16", "--set", "gnn.model.num_negatives=64",
        "--set", "gnn.epochs=1", "--set", "ranker.epochs=2", "--set", "ranker.hidden=[16]", "--set", "threads=1",
        "--set", "gnn.select=[{epochs: 3, model: {edge_half_life_days: null}}]"]  # fmt: skip


@pytest.fixture(scope="module")
def trained(tiny_datagen, tmp_path_factory):
    store = tmp_path_factory.mktemp("ranker-mlflow")
    uri = f"sqlite:///{store / 'mlflow.db'}"
    mp = pytest.MonkeyPatch()
    mp.setenv("MLFLOW_TRACKING_URI", uri)
    mp.chdir(store)
    code = train_ranker.main(
        ["--config", CONFIG, "--set", f"data.source={tiny_datagen}", *TINY, "--alias", "champion", "--out", str(store / "feed")]
    )
    yield code, store
    mp.undo()


def test_train_ranker_writes_registers_and_parity_checks_the_bundle(trained, capsys):
    code, store = trained
    assert code == 0
    bundle = load_feed_bundle(store / "feed")
    m = bundle.manifest["metrics"]
    assert 0.5 < m["test_auc"] <= 1.0 and 0 < m["test_logloss"] < 1.0
    assert m["n_train"] > 0 and m["n_test"] > 0
    # the feature GNN was chosen between the base and one alternative on the validation log loss alone
    losses = [m["feature_gnn_0_valid_logloss"], m["feature_gnn_1_valid_logloss"]]
    assert m["feature_gnn_choice"] == losses.index(min(losses))
    assert m["valid_logloss"] == pytest.approx(min(losses), abs=1e-9)  # the kept candidate's own fit
    assert m["refit"] == 1.0 and m["n_refit"] == m["n_train"] + m["n_valid"] + m["n_test"]
    w = bundle.manifest["windows"]
    assert w["gnn_end"] < w["valid_start"] < w["test_start"]
    mp = pytest.MonkeyPatch()
    mp.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{store / 'mlflow.db'}")
    try:
        resolved = resolve_model_ref("ranker@champion", store / "download")
    finally:
        mp.undo()
    assert load_feed_bundle(resolved).manifest["metrics"]["test_auc"] == pytest.approx(m["test_auc"])


def test_bench_policy_judges_the_bundle_and_prints_the_headline(trained, tiny_datagen, capsys):
    _, store = trained
    code = bench_policy.main(
        ["--data", str(tiny_datagen), "--ranker", str(store / "feed"), "--gnn", "none", "--mf", "none",
         "--users", "80", "--days", "2", "--clock", "both"]
    )  # fmt: skip
    out = capsys.readouterr().out
    assert code == 0, out
    assert "frozen clock" in out and "simulated clock" in out and "recall of the oracle" in out
    last = out.strip().splitlines()[-1]
    assert last.startswith("feed: ") and "of oracle; best heuristic: " in last
    rows = {line.split("|")[1].strip(): line for line in out.splitlines() if line.startswith("| ")}
    for name in ("oracle", "random", "recent popularity (1-day)", "feed", "feed: gnn only", "union"):
        assert name in rows
    assert "| oracle | " in out and "100.0%" in rows["oracle"]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--set", "data.ranker_days=30"], "no history"),
        (["--set", "ranker.position_bias=maybe"], "position_bias"),
    ],
)
def test_bad_settings_fail_with_a_clear_message(tiny_datagen, args, message, capsys):
    code = train_ranker.main(["--config", CONFIG, "--set", f"data.source={tiny_datagen}", "--no-mlflow", *args])
    assert code in (1, 2)
    assert message in capsys.readouterr().err


def test_missing_data_is_a_clear_error(tmp_path, capsys):
    assert train_ranker.main(["--config", CONFIG, "--set", f"data.source={tmp_path}", "--no-mlflow"]) == 1
    assert "missing table" in capsys.readouterr().err


def test_bench_policy_refuses_data_without_truth(tmp_path, capsys):
    assert bench_policy.main(["--data", str(tmp_path)]) == 2
    assert "no truth/" in capsys.readouterr().err
