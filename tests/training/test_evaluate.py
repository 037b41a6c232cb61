"""training.evaluate: the offline comparison report, with the data_gen oracle, on tiny data."""

from pathlib import Path

import numpy as np
import pytest

from recsys.data import load_split
from recsys.models.mf import ALSRecommender
from recsys.tracking import configure_tracking, log_bundle, register_bundle, start_run
from tests.recsys.models.mixin import planted_signal
from training.evaluate import main, oracle_rank_lists


@pytest.fixture(scope="module")
def als_bundle(tiny_datagen, tmp_path_factory) -> Path:
    split = load_split(tiny_datagen)
    model = ALSRecommender(factors=8, regularization=1.0, alpha=10.0, iterations=5, num_threads=1)
    return model.fit(split.train).save(tmp_path_factory.mktemp("bundles") / "als")


@pytest.fixture
def mlflow_env(tmp_path_factory, monkeypatch):
    store = tmp_path_factory.getbasetemp() / "mlflow-store"  # shared per session: schema creation is slow
    store.mkdir(exist_ok=True)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{store / 'mlflow.db'}")
    monkeypatch.chdir(store)
    configure_tracking()
    return store


def test_report_compares_registry_model_baselines_and_oracle(tiny_datagen, als_bundle, mlflow_env, tmp_path, capsys):
    with start_run("t-eval", "als") as run:
        log_bundle(als_bundle)
    register_bundle(run.info.run_id, "mf-eval", alias="champion")
    out = tmp_path / "reports"
    rc = main(["--dataset", str(tiny_datagen), "--models", f"mf-eval@champion,{als_bundle},popular,random",
               "--out", str(out)])  # fmt: skip
    assert rc == 0
    printed = capsys.readouterr().out
    report = (out / "offline_tiny.md").read_text()
    assert printed.strip() == report.strip()
    table = report.split("## Ranking quality")[1].split("## Other metrics")[0]
    header = next(line for line in table.splitlines() if line.startswith("| model"))
    assert "recall@20 (cold)" in header and "ndcg@20 (heavy)" in header and "oracle fraction" in header
    rows = {line.split("|")[1].strip(): line for line in table.splitlines() if line.startswith("| ") and "model" not in line}
    assert set(rows) == {"mf-eval@champion", str(als_bundle), "popular", "random", "oracle"}
    # the registry copy and the local bundle are the same model: identical rows
    assert rows["mf-eval@champion"].split("|")[2:] == rows[str(als_bundle)].split("|")[2:]

    def recall(name: str) -> float:
        return float(rows[name].split("|")[3])

    assert recall("oracle") > recall("popular") > recall("random")
    assert rows["oracle"].rstrip(" |").endswith("1.0000")  # its own fraction
    assert (out / "offline_tiny.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_oracle_lists_exclude_train_and_valid_items(tiny_datagen):
    split = load_split(tiny_datagen)
    users = np.flatnonzero(np.diff(split.test.indptr))[:40]
    lists = oracle_rank_lists(tiny_datagen, split, users, k=15)
    assert lists.shape == (split.train.n_users, 15)
    others = np.setdiff1d(np.arange(split.train.n_users), users)
    assert (lists[others] == -1).all()
    seen = (split.train.user_items + split.valid).tocsr()
    for u in users:
        items = lists[u][lists[u] >= 0]
        assert len(items) == 15 and len(set(items.tolist())) == 15
        assert not set(items.tolist()) & set(seen.indices[seen.indptr[u] : seen.indptr[u + 1]].tolist())


def test_lightgcn_folder_has_no_oracle_row(tmp_path, mlflow_env, capsys):
    p = planted_signal()
    data = tmp_path / "planted"
    data.mkdir()
    for name, m in (("train.txt", p.dataset.user_items), ("test.txt", p.held_out)):
        lines = [" ".join(map(str, [u, *m.indices[m.indptr[u] : m.indptr[u + 1]]])) for u in range(m.shape[0])]
        (data / name).write_text("\n".join(lines) + "\n")
    assert main(["--dataset", str(data), "--models", "popular,random", "--k", "5", "--out", str(tmp_path)]) == 0
    report = (tmp_path / "offline_planted.md").read_text()
    assert "recall@5" in report and "oracle" not in report


def test_model_trained_on_other_data_is_refused(tiny_datagen, tmp_path, mlflow_env, capsys):
    other = ALSRecommender(factors=2, iterations=1, num_threads=1).fit(planted_signal().dataset)
    bundle = other.save(tmp_path / "other")
    rc = main(["--dataset", str(tiny_datagen), "--models", str(bundle), "--out", str(tmp_path)])
    assert rc == 1
    assert "trained on other data" in capsys.readouterr().err


def test_unknown_registry_model_is_one_clear_error(tiny_datagen, tmp_path, mlflow_env, capsys):
    rc = main(["--dataset", str(tiny_datagen), "--models", "nosuch@champion", "--out", str(tmp_path)])
    assert rc == 1
    err = capsys.readouterr().err
    assert "nosuch@champion" in err and "Traceback" not in err
