"""Drift gauges on ``/metrics`` (serving/drift_watch.py), over real HTTP: a real server with a GNN
trained on a data_gen dataset, its event log, and the drift monitor in a background thread."""

from __future__ import annotations

import time

import httpx
import pytest

from data_gen.generate import generate
from data_gen.generator_config import resolve_config
from feedrec_common.parquet_tables import read_table


@pytest.fixture(scope="module")
def datagen_served(tmp_path_factory):
    """(data dir, exported GNN bundle) on the data_gen tiny preset."""
    from recsys.data import load_datagen
    from recsys.models.gnn import GNNRecommender
    from serving.export import export_bundle

    root = tmp_path_factory.mktemp("drift-serving")
    data = root / "tiny"
    generate(resolve_config("tiny", seed=7), data, progress=False)
    model = GNNRecommender(embedding_dim=16, num_layers=2, num_negatives=64).fit(load_datagen(data), epochs=1, seed=0)
    return data, export_bundle(model.save(root / "gnn"), root / "gnn-serving", parity_users=50)


def _metrics(url: str) -> dict[str, float]:
    out = {}
    for line in httpx.get(f"{url}/metrics", timeout=5).text.splitlines():
        if line.startswith("feedrec_drift"):
            name, value = line.rsplit(" ", 1)
            out[name] = float(value)
    return out


def test_drift_gauges_are_updated_in_the_background_from_served_traffic(serve, datagen_served):
    data, bundle = datagen_served
    server = serve({"FEEDREC_MODELS": f"gnn={bundle}", "FEEDREC_DATA_DIR": str(data), "FEEDREC_PARITY_USERS": "8",
                    "FEEDREC_DRIFT_REFERENCE": str(data), "FEEDREC_DRIFT_INTERVAL_S": "0.5",
                    "FEEDREC_DRIFT_LOOKBACK_HOURS": "1"})  # fmt: skip
    users = read_table(data, "users", ["user_id"])["user_id"].to_numpy()[:80]
    with httpx.Client(base_url=server.url, timeout=10) as client:
        for u in users:
            assert client.get(f"/recommend/{int(u)}", params={"k": 10}).status_code == 200
    deadline, got = time.monotonic() + 60, {}
    while time.monotonic() < deadline:
        got = _metrics(server.url)
        if got.get("feedrec_drift_watch_requests", 0) >= len(users) and any(k.startswith("feedrec_drift_p_value") for k in got):
            break
        time.sleep(0.5)
    assert got.get("feedrec_drift_watch_requests") == len(users), server.log()[-3000:]
    assert got["feedrec_drift_window_end_timestamp_seconds"] > time.time() - 3600
    assert got['feedrec_drift_watch_errors_total'] == 0
    p_values = {k: v for k, v in got.items() if k.startswith("feedrec_drift_p_value")}
    assert 'feedrec_drift_p_value{input="user_activity"}' in p_values and all(0 <= v <= 1 for v in p_values.values())
    assert any(k.startswith("feedrec_drift_alarm{") for k in got)


def test_no_reference_no_drift_gauges(serve, datagen_served):
    data, bundle = datagen_served
    server = serve({"FEEDREC_MODELS": f"gnn={bundle}", "FEEDREC_DATA_DIR": str(data), "FEEDREC_PARITY_USERS": "8"})
    assert _metrics(server.url) == {}
