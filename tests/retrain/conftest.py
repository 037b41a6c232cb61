"""A tiny dataset, simulated service logs with a cold-user surge, and an MLflow store with a champion."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from data_gen.generate import generate
from data_gen.generator_config import resolve_config

REPO = Path(__file__).resolve().parents[2]
#: GNN settings small enough for the tiny preset on 2 shared cores.
TINY_GNN = ["model.embedding_dim=16", "model.num_negatives=64", "epochs=2"]


@pytest.fixture(scope="session")
def tiny_data(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("retrain-data") / "tiny"
    generate(resolve_config("tiny", seed=7), out, progress=False)
    return out


@pytest.fixture(scope="session")
def scenario_events(tiny_data, tmp_path_factory) -> Path:
    """Flushed event-log Parquet of 2 reference days and 2 days with a cold-user surge (400 users)."""
    from monitoring.scenarios import ScenarioConfig, load_world, simulate, write_events

    world = load_world(tiny_data, max_users=400, seed=0)
    sc = simulate(world, ScenarioConfig(kind="cold_surge", reference_days=2, days=2, shift_day=1.0,
                                        sessions_per_day=600, seed=1))  # fmt: skip
    events = tmp_path_factory.mktemp("retrain-events")
    write_events(events, sc.exposures, sc.outcomes)
    return events


@pytest.fixture()
def registry(tiny_data, tmp_path, monkeypatch) -> str:
    """A fresh MLflow store (environment, so the trainers' subprocesses share it) with gnn@champion v1."""
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    from recsys.tracking import configure_tracking

    configure_tracking(None)
    cmd = [sys.executable, str(REPO / "training" / "train_gnn.py"), "--config", "configs/train/gnn_small.yaml",
           "--set", f"data.source={tiny_data}", "--device", "cpu", "--set", f"checkpoint_dir={tmp_path / 'ck'}",
           "--out", str(tmp_path / "champion"), "--alias", "champion", *(a for kv in TINY_GNN for a in ("--set", kv))]  # fmt: skip
    done = subprocess.run(cmd, cwd=REPO, env=os.environ.copy(), capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    return uri
