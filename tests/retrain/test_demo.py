"""``python -m retrain demo`` on the tiny preset: the shift is detected after it starts, the loop runs at
the alarm, and the figures and the plot are written."""

from __future__ import annotations

import json

from retrain import cli
from tests.retrain.conftest import TINY_GNN


def test_demo_detects_the_shift_retrains_and_reports_clicks_per_list(tiny_data, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path}/mlflow.db")
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    plot = tmp_path / "loop.png"
    args = ["demo", "--data", str(tiny_data), "--out", str(tmp_path / "demo"), "--plot", str(plot),
            "--max-users", "800", "--days", "3", "--shift-day", "1", *(a for kv in TINY_GNN for a in ("--gnn-set", kv))]  # fmt: skip
    assert cli.main(args) == 0, capsys.readouterr()
    summary = json.loads((tmp_path / "demo" / "summary.json").read_text())
    assert summary["alarm_ts"] > summary["shift_ts"]  # no alarm before the shift
    assert summary["detection_delay_hours"] <= 24
    assert summary["experiment"]["verdict"] in ("ship", "do_not_ship", "no_difference")
    assert summary["promoted"] == (summary["experiment"]["verdict"] == "ship")
    for key in ("before_shift", "after_shift_old", "after_shift_new"):
        assert 0 < summary[key] < 20
    assert plot.stat().st_size > 10_000
    state = json.loads((tmp_path / "demo" / "loop" / "state.json").read_text())
    assert set(state["steps"]) == {"dataset", "validate", "train:gnn", "experiment:gnn", "promote:gnn"}
    out = capsys.readouterr().out
    assert "| before the shift | champion v1 |" in out
