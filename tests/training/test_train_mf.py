"""training.train_mf end to end on tiny data with a real MLflow store in a temporary directory."""

from pathlib import Path

import numpy as np
import pytest
from mlflow import MlflowClient

from recsys.data import load_split
from recsys.models.base import Recommender
from recsys.tracking import TAG_DATA_FINGERPRINT, TAG_GIT_COMMIT, TAG_SPLIT_HASH
from tests.recsys.models.mixin import planted_signal
from training.train_mf import main


@pytest.fixture(scope="module")
def planted_lightgcn(tmp_path_factory) -> Path:
    """The planted-signal fixture as a LightGCN folder: a given split with no validation set."""
    out = tmp_path_factory.mktemp("data") / "planted"
    out.mkdir()
    p = planted_signal(users_per_group=20)
    for name, m in (("train.txt", p.dataset.user_items), ("test.txt", p.held_out)):
        lines = [" ".join(map(str, [u, *m.indices[m.indptr[u] : m.indptr[u + 1]]])) for u in range(m.shape[0])]
        (out / name).write_text("\n".join(lines) + "\n")
    return out


@pytest.fixture(scope="module")
def store_dir(tmp_path_factory) -> Path:
    # one real SQLite store per test session (creating the schema costs seconds); distinct names
    store = tmp_path_factory.getbasetemp() / "mlflow-store"
    store.mkdir(exist_ok=True)
    return store


@pytest.fixture
def mlflow_env(store_dir, monkeypatch) -> MlflowClient:
    uri = f"sqlite:///{store_dir / 'mlflow.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    monkeypatch.chdir(store_dir)
    return MlflowClient(tracking_uri=uri, registry_uri=uri)


ROOT = Path(__file__).resolve().parents[2]
SMALL_CONFIG = str(ROOT / "configs/train/mf_small.yaml")
FAST = ["--set", "model.als.factors=8", "--set", "model.als.iterations=4", "--set", "model.als.num_threads=1",
        "--set", "eval.every=2", "--set", "eval.sample_users=100"]  # fmt: skip


def test_train_logs_registers_and_writes_the_bundle(tiny_datagen, mlflow_env, tmp_path, capsys):
    config = tmp_path / "mf.yaml"
    config.write_text(f"data:\n  source: {tiny_datagen}\ntracking:\n  experiment: t-train\n")
    out = tmp_path / "bundle"
    rc = main(["--config", str(config), *FAST, "--out", str(out), "--register", "mf-t", "--alias", "champion"])
    assert rc == 0
    printed = capsys.readouterr().out
    assert "| test |" in printed and "registered: mf-t/1 (alias champion)" in printed

    client = mlflow_env
    version = client.get_model_version_by_alias("mf-t", "champion")
    run = client.get_run(version.run_id)
    split = load_split(tiny_datagen)
    assert run.data.params["model.factors"] == "8" and run.data.params["model.kind"] == "als"
    assert run.data.tags[TAG_DATA_FINGERPRINT] == split.train.fingerprint()
    assert run.data.tags[TAG_SPLIT_HASH] == split.hash()
    assert run.data.tags[TAG_GIT_COMMIT]
    steps = [m.step for m in client.get_metric_history(run.info.run_id, "valid_sample/recall_at_20")]
    assert steps == [2, 4]
    for name in ("valid/recall_at_20", "test/recall_at_20", "test/cold/ndcg_at_20", "fit_seconds"):
        assert name in run.data.metrics
    artifacts = {a.path for a in client.list_artifacts(run.info.run_id, "config")}
    assert artifacts == {"config/mf.yaml", "config/resolved.yaml"}
    assert "bundle/manifest.json" in {a.path for a in client.list_artifacts(run.info.run_id, "bundle")}

    model = Recommender.load(out)
    assert model.kind == "als" and model.n_items == split.train.n_items
    assert model.metrics["test/recall@20"] == pytest.approx(run.data.metrics["test/recall_at_20"])
    assert model.recommend(0, k=5)[0].shape == (5,)


def test_search_selects_on_validation_and_refits_on_full_train(planted_lightgcn, mlflow_env, tmp_path):
    # A given split without validation: validation is carved out of train for selection, the
    # chosen point is refit on all of train, and only the parent run ever looks at test.
    config = tmp_path / "search.yaml"
    config.write_text(
        f"data:\n  source: {planted_lightgcn}\n  valid_fraction: 0.2\n"
        "model:\n  kind: als\n  als:\n    iterations: 5\n    num_threads: 1\n"
        "search:\n  method: grid\n  space:\n    factors: [2, 4]\n    regularization: [0.1, 5.0]\n    alpha: [10.0]\n"
        "tracking:\n  experiment: t-search\n"
    )
    out = tmp_path / "bundle"
    assert main(["--config", str(config), "--search", "--no-register", "--out", str(out)]) == 0

    client = mlflow_env
    exp = client.get_experiment_by_name("t-search")
    runs = client.search_runs([exp.experiment_id])
    children = [r for r in runs if "mlflow.parentRunId" in r.data.tags]
    (parent,) = [r for r in runs if "mlflow.parentRunId" not in r.data.tags]
    assert len(children) == 4
    assert all(not any(k.startswith("test/") for k in r.data.metrics) for r in children)
    best = max(children, key=lambda r: (r.data.metrics["valid/recall_at_20"], -int(r.data.tags["trial"])))
    for key in ("factors", "regularization"):
        assert parent.data.params[f"best.{key}"] == best.data.params[f"model.{key}"]
    assert parent.data.metrics["search/best_valid/recall_at_20"] == pytest.approx(best.data.metrics["valid/recall_at_20"])
    assert "test/recall_at_20" in parent.data.metrics
    assert "registered_model" not in parent.data.tags

    # the bundle is the refit on the full training set (the planted held-out items are learnable)
    model = Recommender.load(out)
    split = load_split(planted_lightgcn)
    assert (model.seen != split.train.user_items).nnz == 0
    assert model.config()["factors"] == int(best.data.params["model.factors"])


def test_bpr_trains_from_the_same_cli(planted_lightgcn, mlflow_env, tmp_path):
    config = tmp_path / "bpr.yaml"
    config.write_text(
        f"data:\n  source: {planted_lightgcn}\nmodel:\n  kind: bpr\n  bpr:\n    factors: 4\n    iterations: 30\n"
        "    learning_rate: 0.05\n    num_threads: 1\neval:\n  every: 10\ntracking:\n  experiment: t-bpr\n"
    )
    assert main(["--config", str(config), "--no-register", "--out", str(tmp_path / "b")]) == 0
    assert Recommender.load(tmp_path / "b").kind == "bpr"


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("model.als.bogus=1", "model.als.bogus: unknown key"),
        ("search.space.alpha=[-1]", "search.space.alpha"),
        ("model.kind=svd", "model.kind"),
    ],
)
def test_bad_config_is_one_clear_error(override, message, capsys, tmp_path):
    rc = main(["--config", SMALL_CONFIG, "--set", override, "--out", str(tmp_path / "x")])
    assert rc == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err


def test_missing_dataset_is_one_clear_error(mlflow_env, tmp_path, capsys):
    rc = main(["--config", SMALL_CONFIG, "--set", f"data.source={tmp_path / 'nope'}"])
    assert rc == 1
    assert "no such dataset" in capsys.readouterr().err


def test_shipped_configs_validate_and_switch_kind():
    from feedrec_common.config import load_config
    from training.train_mf import TrainMFConfig

    gowalla = load_config(TrainMFConfig, ROOT / "configs/train/mf_gowalla.yaml")
    als = gowalla.model.params
    assert (gowalla.model.kind, als.factors, als.regularization, als.alpha, als.iterations) == ("als", 256, 10.0, 20.0, 15)
    # switching kind needs no edit: the search space then refers to BPR (no alpha there)
    with pytest.raises(Exception, match="search.space.alpha: not a bpr hyper-parameter"):
        load_config(TrainMFConfig, SMALL_CONFIG, ["model.kind=bpr"])
    bpr = load_config(TrainMFConfig, SMALL_CONFIG, ["model.kind=bpr", "search.space={}"])
    assert bpr.model.params.learning_rate == pytest.approx(0.05)


def poison_test_split(src: Path, dst: Path, shift: int) -> Path:
    """A copy of a LightGCN folder whose test.txt gives every user the test items of user ``u + shift``
    (another planted group): same users, items and id maps, a different test set."""
    dst.mkdir(parents=True, exist_ok=True)
    (dst / "train.txt").write_text((src / "train.txt").read_text())
    lines = (src / "test.txt").read_text().splitlines()
    items = [line.split()[1:] for line in lines]
    rotated = [" ".join([line.split()[0], *items[(i + shift) % len(lines)]]) for i, line in enumerate(lines)]
    (dst / "test.txt").write_text("\n".join(rotated) + "\n")
    return dst


def test_no_selection_step_reads_test(planted_lightgcn, mlflow_env, tmp_path):
    # Issue 14 item 1: the same search on the same training data with a poisoned test split chooses
    # the same point with the same validation metrics and trains the same final model; only the one
    # final evaluation differs.
    poisoned = poison_test_split(planted_lightgcn, tmp_path / "poisoned", shift=20)
    outcome = {}
    for name, source in (("clean", planted_lightgcn), ("poisoned", poisoned)):
        config = tmp_path / f"{name}.yaml"
        config.write_text(
            f"data:\n  source: {source}\n  valid_users: 60\n"
            "model:\n  kind: als\n  als:\n    iterations: 4\n    num_threads: 1\n"
            "eval:\n  every: 2\n"
            "search:\n  method: grid\n  space:\n    factors: [2, 4]\n    regularization: [0.1, 5.0]\n"
            f"tracking:\n  experiment: t-poison-{name}\n"
        )
        assert main(["--config", str(config), "--search", "--no-register", "--out", str(tmp_path / name)]) == 0
        exp = mlflow_env.get_experiment_by_name(f"t-poison-{name}")
        runs = mlflow_env.search_runs([exp.experiment_id])
        (parent,) = [r for r in runs if "mlflow.parentRunId" not in r.data.tags]
        children = sorted((r for r in runs if "mlflow.parentRunId" in r.data.tags), key=lambda r: int(r.data.tags["trial"]))
        curves = [(r.data.tags["trial"], m.step, m.value) for r in children
                  for m in sorted(mlflow_env.get_metric_history(r.info.run_id, "valid_sample/recall_at_20"),
                                  key=lambda m: m.step)]
        outcome[name] = {
            "trials": [r.data.metrics["valid/recall_at_20"] for r in children],
            "curves": curves,
            "best": {k: v for k, v in parent.data.params.items() if k.startswith("best.")},
            "valid": {k: v for k, v in parent.data.metrics.items() if k.startswith("valid/")},
            "test": parent.data.metrics["test/recall_at_20"],
            "items": Recommender.load(tmp_path / name).item_vectors().numpy(),
        }
    clean, bad = outcome["clean"], outcome["poisoned"]
    assert clean["best"] and clean["best"] == bad["best"]
    assert clean["trials"] == pytest.approx(bad["trials"]) and clean["curves"] == bad["curves"]
    assert clean["valid"] == pytest.approx(bad["valid"])
    np.testing.assert_allclose(clean["items"], bad["items"], rtol=1e-5, atol=1e-6)
    # the final evaluation is the one that reads test (recall@20 of 40 candidates: ~0.47 when the
    # user's own group carries no test item)
    assert clean["test"] > 0.9 and bad["test"] < 0.6


# --- issue 14 item 2: the budgeted ALS search (method asha, log-uniform ranges) ---------------------------

ASHA = ("search:\n  method: asha\n  n_trials: 5\n  startup_trials: 3\n  patience: 2\n  max_evals: 3\n  space:\n"
        "    factors: {low: 2, high: 16, integer: true}\n    regularization: {low: 0.1, high: 100.0}\n"
        "    alpha: {low: 1.0, high: 100.0}\n")


def _asha_config(tmp_path: Path, source: Path, experiment: str, extra: str = "") -> Path:
    config = tmp_path / f"{experiment}.yaml"
    config.write_text(f"data:\n  source: {source}\n  valid_users: 60\n"
                      "model:\n  kind: als\n  als:\n    iterations: 6\n    num_threads: 1\n"
                      f"eval:\n  every: 2\n{ASHA}{extra}tracking:\n  experiment: {experiment}\n")
    return config


def _asha_outcome(client: MlflowClient, experiment: str, bundle: Path) -> dict:
    runs = client.search_runs([client.get_experiment_by_name(experiment).experiment_id])
    (parent,) = [r for r in runs if "mlflow.parentRunId" not in r.data.tags]
    children = sorted((r for r in runs if "mlflow.parentRunId" in r.data.tags), key=lambda r: int(r.data.tags["trial"]))
    return {
        "points": [{k: v for k, v in r.data.params.items() if k.startswith("model.")} for r in children],
        "trials": [r.data.metrics["valid/recall_at_20"] for r in children],
        "states": [r.data.tags["state"] for r in children],
        "best": {k: v for k, v in parent.data.params.items() if k.startswith("best.")},
        "search_best": parent.data.metrics["search/best_valid/recall_at_20"],
        "test": parent.data.metrics["test/recall_at_20"],
        "items": Recommender.load(bundle).item_vectors().numpy(),
        "children_read_test": any(k.startswith("test/") for r in children for k in r.data.metrics),
    }


def test_asha_search_is_reproducible_logs_children_and_reads_no_test(planted_lightgcn, mlflow_env, tmp_path):
    poisoned = poison_test_split(planted_lightgcn, tmp_path / "poisoned", shift=20)
    out = {}
    for name, source in (("a", planted_lightgcn), ("b", planted_lightgcn), ("poisoned", poisoned)):
        config = _asha_config(tmp_path, source, f"t-asha-{name}")
        assert main(["--config", str(config), "--search", "--no-register", "--out", str(tmp_path / name)]) == 0
        out[name] = _asha_outcome(mlflow_env, f"t-asha-{name}", tmp_path / name)
    a, b, p = out["a"], out["b"], out["poisoned"]
    assert len(a["trials"]) == 5 and not a["children_read_test"]
    assert a["search_best"] == max(a["trials"])
    best_trial = a["trials"].index(max(a["trials"]))
    for key in ("factors", "regularization", "alpha"):
        assert a["best"][f"best.{key}"] == a["points"][best_trial][f"model.{key}"]
    for other in (b, p):  # same trials, winner and final factors; only the test figure can differ
        assert (other["points"], other["trials"], other["states"], other["best"]) == (
            a["points"], a["trials"], a["states"], a["best"])
        np.testing.assert_allclose(other["items"], a["items"], rtol=1e-5, atol=1e-6)
    assert a["test"] > 0.9 and p["test"] < 0.7  # ~0.5-0.6: the poisoned items are not the planted group's


def test_asha_search_stays_within_max_minutes(planted_lightgcn, mlflow_env, tmp_path, capsys):
    import time

    config = _asha_config(tmp_path, planted_lightgcn, "t-asha-budget", extra="")
    text = config.read_text().replace("  n_trials: 5\n", "  n_trials: null\n")
    config.write_text(text)
    t0 = time.monotonic()
    assert main(["--config", str(config), "--no-register", "--search", "--max-minutes", "0.2",
                 "--out", str(tmp_path / "budget")]) == 0
    assert time.monotonic() - t0 <= 0.2 * 60
    runs = mlflow_env.search_runs([mlflow_env.get_experiment_by_name("t-asha-budget").experiment_id])
    assert len(runs) >= 3  # the parent and at least two trials: the budget, not a trial limit, ended it


def test_asha_without_a_budget_or_trial_limit_is_refused(planted_lightgcn, tmp_path, capsys):
    config = _asha_config(tmp_path, planted_lightgcn, "t-asha-endless")
    config.write_text(config.read_text().replace("  n_trials: 5\n", "  n_trials: null\n"))
    assert main(["--config", str(config), "--search", "--out", str(tmp_path / "x")]) == 2
    assert "needs --max-minutes or search.n_trials" in capsys.readouterr().err


def test_auto_configs_validate():
    from feedrec_common.config import load_config
    from training.train_mf import TrainMFConfig

    cfg = load_config(TrainMFConfig, ROOT / "configs/train/mf_auto.yaml")
    space = cfg.search.space
    assert cfg.search.enabled and cfg.search.method == "asha"
    assert (space["factors"].low, space["factors"].high) == (32, 512)  # the ALS ranges
    assert (space["regularization"].low, space["regularization"].high, space["alpha"].low, space["alpha"].high) == (
        0.1, 100.0, 1.0, 100.0)
    with pytest.raises(Exception, match="a range needs search.method asha"):
        load_config(TrainMFConfig, ROOT / "configs/train/mf_auto.yaml", ["search.method=grid"])
