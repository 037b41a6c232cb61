"""training/train_gnn.py as real processes (CPU, gloo): DDP equivalence, resume, refusal, failure.

Every run uses a tiny planted-signal dataset in the LightGCN text format (4 groups of users; each
user's items come from its own group), so a run takes seconds.
"""

from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from safetensors.torch import load_file

REPO = Path(__file__).resolve().parents[2]
SCRIPT = REPO / "training" / "train_gnn.py"
FAULTY = REPO / "tests" / "training" / "faulty_train_gnn.py"  # the trainer with injected faults
GROUPS, USERS, ITEMS, SEEN, HELD = 4, 30, 40, 12, 5


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory) -> Path:
    rng = np.random.default_rng(0)
    d = tmp_path_factory.mktemp("planted")
    with open(d / "train.txt", "w") as tr, open(d / "test.txt", "w") as te:
        for u in range(GROUPS * USERS):
            g = u // USERS
            items = rng.permutation(np.arange(g * ITEMS, (g + 1) * ITEMS))
            tr.write(" ".join(map(str, [u, *sorted(items[:SEEN])])) + "\n")
            te.write(" ".join(map(str, [u, *sorted(items[SEEN : SEEN + HELD])])) + "\n")
    return d


def _config(data_dir: Path, tmp: Path) -> Path:
    cfg = tmp / "cfg.yaml"
    cfg.write_text(
        f"data: {{source: {data_dir}, valid_users: 40, valid_fraction: 0.2, valid_from: random}}\n"
        "model: {embedding_dim: 8, num_layers: 2, num_negatives: 16, temperature: 0.3}\n"
        "epochs: 3\nglobal_batch: 256\nlr: 0.02\npatience: 10\ncheckpoint_every: 2\npg_timeout_s: 120\n"
    )
    return cfg


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# pg_timeout_s is also gloo's *connect* timeout in init_process_group: with 15 s, a worker starved of
# CPU while importing torch (load ~7 on 2 cores) made its peer fail with "Gloo connectFullMesh
# failed ... Connect timeout", which is how the torchrun --max-restarts test failed 1 run in 3.
def _run(cfg: Path, tmp: Path, name: str, nproc: int = 1, extra=(), env=None, restarts: int = 0, timeout=300,
         mlflow: bool = False):
    args = ["--config", str(cfg), "--device", "cpu", "--out", str(tmp / name / "bundle"),
            "--set", f"checkpoint_dir={tmp / name / 'ckpt'}", *([] if mlflow else ["--no-mlflow"]), *extra]
    script = FAULTY if any(k.startswith("FEEDREC_TEST_") for k in (env or {})) else SCRIPT
    if nproc == 1:
        cmd = [sys.executable, str(script), *args]
    else:
        cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}",
               f"--max-restarts={restarts}", f"--rdzv-endpoint=localhost:{_free_port()}", str(script), *args]
        cmd.remove("--standalone")
        cmd.insert(3, "--rdzv-backend=c10d")
        cmd.insert(3, "--nnodes=1")
    full_env = {**os.environ, "OMP_NUM_THREADS": "1", **(env or {})}
    return subprocess.run(cmd, cwd=tmp, env=full_env, capture_output=True, text=True, timeout=timeout)


def _poisoned_copy(data_dir: Path, dest: Path) -> Path:
    """``data_dir`` with every user's test items swapped for another group's (train unchanged)."""
    dest.mkdir()
    (dest / "train.txt").write_text((data_dir / "train.txt").read_text())
    lines = (data_dir / "test.txt").read_text().splitlines()
    items = [line.split()[1:] for line in lines]
    (dest / "test.txt").write_text("\n".join(" ".join([line.split()[0], *items[(i + USERS) % len(lines)]])
                                           for i, line in enumerate(lines)) + "\n")
    return dest


def _weights(tmp: Path, name: str):
    return load_file(str(tmp / name / "ckpt" / "latest.safetensors"))


@pytest.fixture(scope="module")
def reference(data_dir, tmp_path_factory):
    """An uninterrupted single-process run (shared by several tests)."""
    tmp = tmp_path_factory.mktemp("ref")
    cfg = _config(data_dir, tmp)
    res = _run(cfg, tmp, "one")
    assert res.returncode == 0, res.stderr[-3000:]
    return tmp, cfg, res


def test_planted_signal_is_learned(reference):
    tmp, _, res = reference
    manifest = json.loads((tmp / "one" / "bundle" / "manifest.json").read_text())
    assert manifest["kind"] == "gnn"
    # random ranking gives ~20 / 148 ~= 0.14; after 3 short epochs the group signal gives ~0.7
    assert manifest["metrics"]["test_recall@20"] > 0.5, res.stdout[-2000:]
    # phase 2 refit on train + valid for the selected number of epochs produced the bundle
    assert manifest["metrics"]["refit"] == 1.0 and manifest["metrics"]["best_epoch"] >= 1
    assert f"refit epoch   {int(manifest['metrics']['best_epoch'])}/" in res.stdout
    assert (tmp / "one" / "bundle.curve.csv").read_text().startswith("epoch,step,wall_s,loss,valid_recall@20")


def test_two_processes_match_one_process(reference):
    tmp, cfg, _ = reference
    res = _run(cfg, tmp, "two", nproc=2)
    assert res.returncode == 0, res.stderr[-3000:]
    one, two = _weights(tmp, "one"), _weights(tmp, "two")
    np.testing.assert_allclose(two["model.embedding.weight"].numpy(), one["model.embedding.weight"].numpy(),
                               rtol=1e-4, atol=1e-5)


def test_resume_after_kill_matches_uninterrupted(reference):
    tmp, cfg, _ = reference
    killed = _run(cfg, tmp, "killed", env={"FEEDREC_TEST_KILL_AFTER_STEP": "4"})
    assert killed.returncode == -9, killed.stderr[-2000:]  # SIGKILLed right after the step-4 checkpoint
    resumed = _run(cfg, tmp, "killed", extra=["--resume"])
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "resumed from" in resumed.stdout and "step 4" in resumed.stdout
    np.testing.assert_allclose(_weights(tmp, "killed")["model.embedding.weight"].numpy(),
                               _weights(tmp, "one")["model.embedding.weight"].numpy(), rtol=1e-5, atol=1e-6)


def test_torchrun_restart_resumes_from_checkpoint(reference):
    # Killed during phase 2 (3 phase-1 epochs of 6 steps, then the refit): the restarted workers
    # must resume the refit, not start phase 1 again.
    # Two restarts allowed: under a loaded CI machine the first restarted round once died at start-up
    # ("terminate called without an active exception" in gloo, exit -6) before it had trained a step;
    # the next round must then resume from the same checkpoint, which is what this test is about.
    tmp, cfg, _ = reference
    res = _run(cfg, tmp, "elastic", nproc=2, restarts=2, env={"FEEDREC_TEST_KILL_AFTER_STEP": "20"})
    assert res.returncode == 0, res.stderr[:2000] + "\n...\n" + res.stderr[-3000:]
    assert "resumed from" in res.stdout
    assert re.search(r"refit epoch 0, step 20 \(restart [12]\)", res.stdout), res.stdout[-2000:]
    np.testing.assert_allclose(_weights(tmp, "elastic")["model.embedding.weight"].numpy(),
                               _weights(tmp, "one")["model.embedding.weight"].numpy(), rtol=1e-4, atol=1e-5)


def test_no_refit_tests_the_best_phase_one_weights(data_dir, tmp_path):
    cfg = _config(data_dir, tmp_path)
    res = _run(cfg, tmp_path, "norefit", extra=["--no-refit", "--set", "epochs=1"])
    assert res.returncode == 0, res.stderr[-3000:]
    metrics = json.loads((tmp_path / "norefit" / "bundle" / "manifest.json").read_text())["metrics"]
    assert metrics["refit"] == 0.0 and "refit epoch" not in res.stdout


def test_reduce_on_plateau_halves_the_rate_and_the_refit_replays_it(data_dir, tmp_path):
    cfg = _config(data_dir, tmp_path)
    res = _run(cfg, tmp_path, "plateau", extra=["--set", "epochs=8", "--set", "lr=0.2", "--set", "lr_decay_patience=1"])
    assert res.returncode == 0, res.stderr[-3000:]
    import csv

    rows = list(csv.DictReader(open(tmp_path / "plateau" / "bundle.curve.csv")))
    lrs, recalls = [float(r["lr"]) for r in rows], [float(r["valid_recall@20"]) for r in rows]
    best, expected = -1.0, [0.2]
    for recall in recalls[:-1]:  # patience 1: every epoch without a new best halves the next epoch's rate
        expected.append(expected[-1] if recall > best else expected[-1] * 0.5)
        best = max(best, recall)
    assert lrs == pytest.approx(expected[: len(lrs)])
    assert min(lrs) < 0.2, "the run never hit a plateau: pick a config that does"
    new_bests = sum(r > max(recalls[:i], default=-1.0) for i, r in enumerate(recalls))
    assert res.stdout.count("learning rate -> ") == len(recalls) - new_bests  # one per epoch without a best
    best_epoch = recalls.index(max(recalls)) + 1
    refit_lrs = [float(line.split("| lr ")[1].split(" |")[0]) for line in res.stdout.splitlines()
                 if line.startswith("refit epoch") and "| lr " in line]
    assert refit_lrs == pytest.approx(lrs[:best_epoch], rel=1e-3)


def test_min_delta_and_the_latest_carve(data_dir, tmp_path):
    # A gain of at most min_delta is no gain: with min_delta 1.0 only epoch 1 is ever "best" (the
    # first evaluation beats the initial -1), so phase 1 stops after `patience` more epochs and the
    # refit trains 1 epoch. The carve-out takes each user's latest items (file order).
    cfg = _config(data_dir, tmp_path)
    res = _run(cfg, tmp_path, "delta", extra=["--set", "epochs=6", "--set", "patience=2", "--set", "min_delta=1.0",
                                               "--set", "data.valid_from=latest"])
    assert res.returncode == 0, res.stderr[-3000:]
    metrics = json.loads((tmp_path / "delta" / "bundle" / "manifest.json").read_text())["metrics"]
    assert metrics["best_epoch"] == 1
    assert "no better validation recall@20 for 2 epochs" in res.stdout
    assert "refit: " in res.stdout and " 1 epochs of " in res.stdout  # the refit's plan: the selected epoch count


def test_checkpoint_of_another_config_is_refused(reference):
    tmp, cfg, _ = reference
    res = _run(cfg, tmp, "one", extra=["--resume", "--set", "model.temperature=0.5"])
    assert res.returncode != 0
    assert "refusing to resume" in res.stderr and "another config" in res.stderr and "model" in res.stderr


def test_failing_rank_stops_the_job(data_dir, tmp_path):
    cfg = _config(data_dir, tmp_path)
    t0 = time.time()
    res = _run(cfg, tmp_path, "fail", nproc=2, env={"FEEDREC_TEST_FAIL_AT_STEP": "1", "FEEDREC_TEST_FAIL_RANK": "1"},
               extra=["--set", "pg_timeout_s=10"])
    assert res.returncode != 0
    assert "rank 1 failed: RuntimeError: injected failure" in res.stderr
    assert time.time() - t0 < 60


def test_bad_config_is_one_line_error(data_dir, tmp_path):
    cfg = _config(data_dir, tmp_path)
    res = _run(cfg, tmp_path, "bad", extra=["--set", "model.temprature=0.5"])
    assert res.returncode == 2 and "model.temprature: unknown key" in res.stderr and "Traceback" not in res.stderr


def test_a_crash_inside_training_marks_the_mlflow_run_failed(data_dir, tmp_path):
    # Issue 12: the run was entered and exited by hand, so an exception left it RUNNING for ever.
    from mlflow import MlflowClient

    cfg = _config(data_dir, tmp_path)
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    res = _run(cfg, tmp_path, "crash", mlflow=True, extra=["--set", "experiment=t-crash"],
               env={"MLFLOW_TRACKING_URI": uri, "FEEDREC_TEST_FAIL_AT_STEP": "1", "FEEDREC_TEST_FAIL_RANK": "0"})
    assert res.returncode == 1 and "rank 0 failed: RuntimeError: injected failure" in res.stderr, res.stderr[-3000:]
    client = MlflowClient(tracking_uri=uri)
    (run,) = client.search_runs([client.get_experiment_by_name("t-crash").experiment_id])
    assert run.info.status == "FAILED"


def test_fit_and_the_trainer_take_the_same_steps(reference, data_dir, tmp_path):
    # Issue 12: one GNN training step. GNNRecommender.fit on the selection training set reaches the
    # weights the trainer's phase 1 has after the same epochs (same seeds, batch and optimizer).
    from recsys.models.gnn import GNNRecommender
    from training.protocol import DataConfig, load_protocol

    cfg = _config(data_dir, tmp_path)
    res = _run(cfg, tmp_path, "phase1", extra=["--no-refit", "--set", "epochs=2"])
    assert res.returncode == 0, res.stderr[-3000:]
    train = load_protocol(DataConfig(source=str(data_dir), valid_users=40, valid_fraction=0.2,
                                     valid_from="random")).split.train
    model = GNNRecommender(embedding_dim=8, num_layers=2, num_negatives=16, temperature=0.3)
    model.fit(train, epochs=2, batch_size=256, lr=0.02, seed=0)
    np.testing.assert_allclose(model.module.embedding.weight.detach().numpy(),
                               _weights(tmp_path, "phase1")["model.embedding.weight"].numpy(), rtol=1e-4, atol=1e-5)


def test_no_selection_step_reads_test(reference, data_dir, tmp_path):
    # Issue 14 item 1: with every user's test items swapped for another group's, phase 1 sees the
    # same validation curve and picks the same epoch, the refit trains the same weights; only the
    # final test evaluation differs.
    poisoned = _poisoned_copy(data_dir, tmp_path / "poisoned")
    res = _run(_config(poisoned, tmp_path), tmp_path, "poisoned")
    assert res.returncode == 0, res.stderr[-3000:]
    ref_dir, bad_dir = reference[0] / "one", tmp_path / "poisoned"

    def selection_view(run_dir: Path) -> tuple[list[dict], dict]:
        """The curve without timings, and the bundle's metrics."""
        import csv

        with open(run_dir / "bundle.curve.csv") as f:
            rows = [{k: v for k, v in r.items() if k not in ("wall_s", "samples_per_s")} for r in csv.DictReader(f)]
        return rows, json.loads((run_dir / "bundle" / "manifest.json").read_text())["metrics"]

    (clean_curve, clean), (bad_curve, bad) = selection_view(ref_dir), selection_view(bad_dir)
    assert clean_curve == bad_curve
    assert (clean["best_epoch"], clean["best_valid_recall_at_20"]) == (bad["best_epoch"], bad["best_valid_recall_at_20"])
    np.testing.assert_array_equal(_weights(tmp_path, "poisoned")["model.embedding.weight"].numpy(),
                                  _weights(reference[0], "one")["model.embedding.weight"].numpy())
    assert clean["test_recall@20"] > 0.5 and bad["test_recall@20"] < 0.2


def test_a_terminated_trainer_marks_the_mlflow_run_failed(data_dir, tmp_path):
    # SIGTERM (torchrun stopping the other workers, a preemption) used to kill the trainer without
    # unwinding, leaving its MLflow run RUNNING.
    from mlflow import MlflowClient

    cfg = _config(data_dir, tmp_path)
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    cmd = [sys.executable, str(SCRIPT), "--config", str(cfg), "--device", "cpu", "--out", str(tmp_path / "bundle"),
           "--set", f"checkpoint_dir={tmp_path / 'ckpt'}", "--set", "experiment=t-term", "--set", "epochs=500",
           "--set", "patience=500"]
    proc = subprocess.Popen(cmd, cwd=tmp_path, env={**os.environ, "OMP_NUM_THREADS": "1", "MLFLOW_TRACKING_URI": uri},
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 120
    while not (tmp_path / "ckpt" / "latest.safetensors").exists() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.1)
    assert proc.poll() is None, proc.communicate()[1][-3000:]  # still training
    proc.terminate()
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 128 + 15, err[-3000:]
    client = MlflowClient(tracking_uri=uri)
    (run,) = client.search_runs([client.get_experiment_by_name("t-term").experiment_id])
    assert run.info.status == "FAILED"


# --- issue 14 item 2: the budgeted search (training/search.py) replaces phase 1 --------------------------

SEARCH = ["--search", "--set", "search.n_trials=5", "--set", "search.startup_trials=3", "--set", "search.max_evals=3",
          "--set", "search.patience=2",
          "--set", "search.space={lr: {low: 0.005, high: 0.05}, temperature: {low: 0.2, high: 1.0}, num_layers: [1, 2]}"]


def _search_view(run_dir: Path) -> tuple[list[dict], dict]:
    """The search's trials without timings, and the bundle's metrics."""
    import csv

    with open(run_dir.parent / f"{run_dir.name}.search.csv") as f:
        rows = [{k: v for k, v in r.items() if k not in ("train_s", "eval_s")} for r in csv.DictReader(f)]
    return rows, json.loads((run_dir / "manifest.json").read_text())["metrics"]


def test_search_is_reproducible_and_reads_no_test(data_dir, tmp_path):
    # Same command twice: the same trials, winner and final weights. With every user's test items
    # swapped for another group's: still the same trials, winner and weights; only the test figure moves.
    poisoned = _poisoned_copy(data_dir, tmp_path / "poisoned")
    views, weights = {}, {}
    for name, source in (("a", data_dir), ("b", data_dir), ("poisoned", poisoned)):
        res = _run(_config(source, tmp_path), tmp_path, name, extra=SEARCH)
        assert res.returncode == 0, res.stderr[-3000:]
        assert "search: 5 trials" in res.stdout and "winner trial" in res.stdout
        views[name] = _search_view(tmp_path / name / "bundle")
        weights[name] = _weights(tmp_path, name)["model.embedding.weight"].numpy()
    (trials, a), (trials_b, b), (trials_p, p) = views["a"], views["b"], views["poisoned"]
    assert len(trials) == 5 and {r["state"] for r in trials} <= {"complete", "stopped", "pruned", "budget"}
    assert trials == trials_b == trials_p
    assert a["best_valid_recall_at_20"] == b["best_valid_recall_at_20"] == p["best_valid_recall_at_20"]
    assert a["best_valid_recall_at_20"] == max(float(r["valid_recall@20"]) for r in trials)
    np.testing.assert_array_equal(weights["a"], weights["b"])
    np.testing.assert_array_equal(weights["a"], weights["poisoned"])
    assert a["test_recall@20"] > 0.5 and p["test_recall@20"] < 0.2


def test_search_can_start_from_the_configs_own_point(data_dir, tmp_path):
    # search.start_from_config: trial 0 trains the config's lr, temperature and num_layers (0.02, 0.3, 2).
    res = _run(_config(data_dir, tmp_path), tmp_path, "first",
               extra=[*SEARCH[:-2], "--set", "search.n_trials=2", "--set", "search.start_from_config=true",
                      *SEARCH[-2:]])
    assert res.returncode == 0, res.stderr[-3000:]
    trials, _ = _search_view(tmp_path / "first" / "bundle")
    assert "lr=0.02, temperature=0.3, num_layers=2" in trials[0]["point"], trials[0]
    assert "lr=0.02, temperature=0.3, num_layers=2" not in trials[1]["point"]
    # A config whose own value lies outside the space is refused before any training.
    res = _run(_config(data_dir, tmp_path), tmp_path, "outside",
               extra=[*SEARCH, "--set", "search.start_from_config=true", "--set", "lr=0.5"])
    assert res.returncode == 2 and "lr=0.5 is outside search.space.lr" in res.stderr, res.stderr[-2000:]


def test_search_stays_within_max_minutes(data_dir, tmp_path):
    # No trial limit: the budget (0.4 min for search + refit + test) is what ends the search.
    res = _run(_config(data_dir, tmp_path), tmp_path, "budget",
               extra=["--search", "--set", "search.max_evals=50", *SEARCH[-4:],
                      "--max-minutes", "0.4"])
    assert res.returncode == 0, res.stderr[-3000:]
    trials, metrics = _search_view(tmp_path / "budget" / "bundle")
    # The budget may run out mid-trial (state "budget") or between trials (a fast machine): either
    # way the search says the budget, not a trial limit, ended it.
    assert len(trials) >= 2 and "search stopped by the budget" in res.stdout, res.stdout[-2000:]
    assert metrics["run_wall_s"] <= 0.4 * 60, res.stdout[-2000:]
    assert metrics["refit"] == 1.0 and metrics["test_recall@20"] > 0.5


def test_search_logs_each_trial_as_a_child_run(data_dir, tmp_path):
    from mlflow import MlflowClient

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    res = _run(_config(data_dir, tmp_path), tmp_path, "tracked", mlflow=True,
               extra=[*SEARCH, "--set", "experiment=t-gnn-search", "--register", ""], env={"MLFLOW_TRACKING_URI": uri})
    assert res.returncode == 0, res.stderr[-3000:]
    client = MlflowClient(tracking_uri=uri)
    runs = client.search_runs([client.get_experiment_by_name("t-gnn-search").experiment_id])
    children = sorted((r for r in runs if "mlflow.parentRunId" in r.data.tags), key=lambda r: int(r.data.tags["trial"]))
    (parent,) = [r for r in runs if "mlflow.parentRunId" not in r.data.tags]
    assert len(children) == 5 and all(r.data.tags["mlflow.parentRunId"] == parent.info.run_id for r in children)
    assert all(not any(k.startswith("test") for k in r.data.metrics) for r in children)
    best = max(children, key=lambda r: (r.data.metrics["valid/best_recall_at_20"], -int(r.data.tags["trial"])))
    assert parent.data.params["best.lr"] == best.data.params["lr"]
    assert parent.data.metrics["search/best_valid/recall_at_20"] == best.data.metrics["valid/best_recall_at_20"]
    history = client.get_metric_history(best.info.run_id, "valid_recall_at_20")
    assert len(history) == int(best.data.metrics["epochs"])


def test_search_without_a_budget_or_trial_limit_is_refused(data_dir, tmp_path):
    res = _run(_config(data_dir, tmp_path), tmp_path, "endless", extra=["--search", "--set", "search.space={lr: [0.01]}"])
    assert res.returncode == 2 and "needs --max-minutes or search.n_trials" in res.stderr
    assert "Traceback" not in res.stderr


# --- issue 14 item 4: the mini-batch path (sampled subgraphs through LinkNeighborLoader) -------------------

MINIBATCH = ["--set", "minibatch={num_neighbors: [4, 4], num_negatives: 4}", "--set", "lr=0.05", "--set", "epochs=4"]


def test_minibatch_path_learns_resumes_and_runs_under_torchrun(data_dir, tmp_path):
    cfg = _config(data_dir, tmp_path)
    one = _run(cfg, tmp_path, "mb1", extra=MINIBATCH)
    assert one.returncode == 0, one.stderr[-3000:]
    metrics = json.loads((tmp_path / "mb1" / "bundle" / "manifest.json").read_text())["metrics"]
    assert metrics["test_recall@20"] > 0.5, one.stdout[-2000:]  # random ranking: ~0.14
    # subgraphs and negatives are a function of (seed, epoch, step, rank): a killed run resumes exactly
    killed = _run(cfg, tmp_path, "mbkill", extra=MINIBATCH, env={"FEEDREC_TEST_KILL_AFTER_STEP": "4"})
    assert killed.returncode == -9, killed.stderr[-2000:]
    resumed = _run(cfg, tmp_path, "mbkill", extra=[*MINIBATCH, "--resume"])
    assert resumed.returncode == 0 and "step 4" in resumed.stdout, resumed.stderr[-3000:]
    np.testing.assert_allclose(_weights(tmp_path, "mbkill")["model.embedding.weight"].numpy(),
                               _weights(tmp_path, "mb1")["model.embedding.weight"].numpy(), rtol=1e-5, atol=1e-6)
    two = _run(cfg, tmp_path, "mb2", nproc=2, extra=MINIBATCH)
    assert two.returncode == 0, two.stderr[-3000:]
    metrics2 = json.loads((tmp_path / "mb2" / "bundle" / "manifest.json").read_text())["metrics"]
    assert metrics2["test_recall@20"] > 0.5, two.stdout[-2000:]


def test_minibatch_needs_one_fanout_per_layer(data_dir, tmp_path):
    res = _run(_config(data_dir, tmp_path), tmp_path, "mbbad", extra=["--set", "minibatch={num_neighbors: [4]}"])
    assert res.returncode == 2 and "one fan-out per layer (2), got 1" in res.stderr and "Traceback" not in res.stderr


def test_epoch_pairs_makes_epochs_a_sample_of_the_pairs(data_dir, tmp_path):
    # a 100M-pair graph needs epochs shorter than a pass for validation and early stopping to happen
    # (and a 1M-user graph's test figure is taken on a seeded sample of test users)
    res = _run(_config(data_dir, tmp_path), tmp_path, "short",
               extra=["--set", "epoch_pairs=300", "--set", "eval.test_sample_users=7", "--no-refit"])
    assert res.returncode == 0, res.stderr[-3000:]
    assert "(300 per epoch)" in res.stdout and "3 epochs of 2 steps of 256 pairs" in res.stdout, res.stdout[-2000:]
    curve = (tmp_path / "short" / "bundle.curve.csv").read_text().splitlines()
    assert len(curve) == 1 + 3  # header + one validated row per (short) epoch
    metrics = json.loads((tmp_path / "short" / "bundle" / "manifest.json").read_text())["metrics"]
    assert metrics["test_n_users"] == 7
