"""retrain.loop on the tiny preset with real trainers, a real MLflow registry and the simulator:
resumable by step, idempotent, and ``champion`` moves only when the experiment says ship."""

from __future__ import annotations

import json

import pytest
from mlflow import MlflowClient

from retrain import cli
from retrain.loop import LoopConfig, LoopError, run_loop, steps_of
from tests.retrain.conftest import REPO, TINY_GNN


def _config(tiny_data, events, run_dir, gnn=TINY_GNN) -> LoopConfig:
    return LoopConfig(base=str(tiny_data), events=str(events), run_dir=str(run_dir), models=["gnn"],
                      train_overrides={"gnn": list(gnn)}, eval_days=4.0)  # fmt: skip


def _versions() -> list[str]:
    return sorted(str(v.version) for v in MlflowClient().search_model_versions("name='gnn'"))


def _champion() -> str:
    return str(MlflowClient().get_model_version_by_alias("gnn", "champion").version)


def test_killed_after_a_step_resumes_there_and_a_second_run_changes_nothing(registry, tiny_data, scenario_events, tmp_path):
    config = _config(tiny_data, scenario_events, tmp_path / "loop")
    lines: list[str] = []
    state = run_loop(config, stop_after="train:gnn", log=lines.append)
    assert list(state.steps) == ["dataset", "validate", "train:gnn"]
    assert _versions() == ["1", "2"] and _champion() == "1"
    saved = json.loads((tmp_path / "loop" / "state.json").read_text())
    assert saved["steps"]["dataset"]["dataset_hash"] and saved["steps"]["train:gnn"]["version"] == "2"

    lines.clear()
    state = run_loop(config, log=lines.append)
    assert [line for line in lines if "skipped" in line] == [f"[{s}] done before, skipped" for s in ("dataset", "validate", "train:gnn")]
    assert sorted(state.steps) == sorted(steps_of(config))
    assert _versions() == ["1", "2"]  # the resumed run trained nothing again
    assert state.steps["experiment:gnn"]["verdict"] == "ship"  # a trained challenger beats v1 on the logs' users
    assert _champion() == "2" and state.steps["promote:gnn"]["previous_champion"] == "1"

    # each step is its own MLflow run under the loop's run, with the data hash and the commit
    runs = MlflowClient().search_runs([MlflowClient().get_run(state.mlflow_run_id).info.experiment_id])
    steps = {r.data.tags.get("retrain.step"): r for r in runs if r.data.tags.get("retrain.step")}
    assert set(steps) == set(steps_of(config))
    assert all(r.data.tags.get("mlflow.parentRunId") == state.mlflow_run_id for r in steps.values())
    assert steps["train:gnn"].data.tags["data.fingerprint"] == state.steps["dataset"]["dataset_hash"]
    assert all(r.data.tags.get("git_commit") for r in steps.values())

    before = (tmp_path / "loop" / "state.json").read_text()
    lines.clear()
    run_loop(config, log=lines.append)
    assert len(lines) == len(steps_of(config)) and all("skipped" in line for line in lines)
    assert (tmp_path / "loop" / "state.json").read_text() == before
    assert _versions() == ["1", "2"] and _champion() == "2"


def test_a_worse_challenger_is_not_promoted(registry, tiny_data, scenario_events, tmp_path):
    # a learning rate of 1e-7 leaves the challenger at its random initialisation: clearly worse
    config = _config(tiny_data, scenario_events, tmp_path / "bad", gnn=[*TINY_GNN, "lr=1e-7"])
    state = run_loop(config, log=lambda _: None)
    assert state.steps["experiment:gnn"]["verdict"] == "do_not_ship"
    assert state.steps["promote:gnn"] == {**state.steps["promote:gnn"], "promoted": False}
    assert _champion() == "1"
    assert str(MlflowClient().get_model_version_by_alias("gnn", "challenger").version) == "2"


def test_changed_settings_for_an_existing_run_dir_are_refused(registry, tiny_data, scenario_events, tmp_path):
    run_loop(_config(tiny_data, scenario_events, tmp_path / "loop"), stop_after="dataset", log=lambda _: None)
    with pytest.raises(LoopError, match="other settings"):
        run_loop(_config(tiny_data, scenario_events, tmp_path / "loop", gnn=["epochs=1"]), log=lambda _: None)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--events", "/nonexistent"], "no such directory"),
        (["--models", "gnn,transformer"], "models"),
    ],
)
def test_bad_cli_input_is_a_clear_error(tiny_data, scenario_events, tmp_path, capsys, args, message):
    base = ["run", "--base", str(tiny_data), "--events", str(scenario_events), "--run-dir", str(tmp_path / "r")]
    assert cli.main([*base, *args]) == 2
    assert message in capsys.readouterr().err


def test_stop_after_an_unknown_step_is_refused(registry, tiny_data, scenario_events, tmp_path, capsys):
    code = cli.main(["run", "--base", str(tiny_data), "--events", str(scenario_events), "--run-dir",
                     str(tmp_path / "r"), "--models", "gnn", "--stop-after", "train:mf"])  # fmt: skip
    assert code == 1 and "not a step" in capsys.readouterr().err


TINY_RANKER = ["data.ranker_days=4", "gnn.model.embedding_dim=16", "gnn.model.num_negatives=64", "gnn.epochs=1",
               "ranker.epochs=2", "ranker.hidden=[16]", "threads=1", "gnn.select=[]"]  # fmt: skip


def test_ranker_and_mf_go_through_the_loop_and_the_alias_follows_the_verdict(registry, tiny_data, scenario_events, tmp_path):
    from training import train_mf, train_ranker

    sets = [a for kv in TINY_RANKER for a in ("--set", kv)]
    assert train_ranker.main(["--config", str(REPO / "configs/train/ranker_small.yaml"), "--set", f"data.source={tiny_data}",
                              *sets, "--alias", "champion", "--out", str(tmp_path / "rk0")]) == 0  # fmt: skip
    assert train_mf.main(["--config", str(REPO / "configs/train/mf_small.yaml"), "--set", f"data.source={tiny_data}",
                          "--alias", "champion", "--out", str(tmp_path / "mf0")]) == 0  # fmt: skip
    config = LoopConfig(base=str(tiny_data), events=str(scenario_events), run_dir=str(tmp_path / "loop"),
                        models=["ranker", "mf"], train_overrides={"ranker": TINY_RANKER}, eval_days=4.0)  # fmt: skip
    state = run_loop(config, log=lambda _: None)
    assert sorted(state.steps) == sorted(steps_of(config))
    for kind in ("ranker", "mf"):
        shipped = state.steps[f"experiment:{kind}"]["verdict"] == "ship"
        champion = str(MlflowClient().get_model_version_by_alias(kind, "champion").version)
        assert state.steps[f"promote:{kind}"]["promoted"] == shipped
        assert champion == (state.steps[f"train:{kind}"]["version"] if shipped else "1")
