from __future__ import annotations

import json
from pathlib import Path

import networkx as nx
import numpy as np
import pytest

from data_gen.stats import (
    REALISM_RANGES,
    average_clustering,
    check_realism,
    cold_user_share,
    community_homophily,
    gini,
    powerlaw_fit,
    reciprocity,
)


@pytest.mark.parametrize("name", list(REALISM_RANGES))
def test_tiny_preset_realism_in_documented_range(tiny_dataset: Path, name: str) -> None:
    stats = json.loads((tiny_dataset / "manifest.json").read_text())["realism"]
    lo, hi = REALISM_RANGES[name]
    assert lo <= stats[name] <= hi, f"{name}={stats[name]} outside [{lo}, {hi}]"


def test_check_realism_flags_out_of_range() -> None:
    stats = {name: (lo + hi) / 2 for name, (lo, hi) in REALISM_RANGES.items()}
    assert check_realism(stats) == []
    stats["ctr"] = 0.9
    assert check_realism(stats) == [f"ctr=0.9 outside {list(REALISM_RANGES['ctr'])}".replace("[", "[", 1)]


def test_powerlaw_fit_recovers_exponent() -> None:
    x = np.random.default_rng(0).zipf(2.5, size=20_000)
    fit = powerlaw_fit(x)
    assert abs(fit["alpha"] - 2.5) < 0.1
    assert fit["xmin"] >= 1


def test_average_clustering_matches_networkx() -> None:
    g = nx.powerlaw_cluster_graph(400, 4, 0.6, seed=3)
    edges = np.array(g.edges())
    est = average_clustering(
        edges[:, 0], edges[:, 1], 400, 400, np.random.default_rng(1), pairs_per_node=2000
    )
    assert abs(est - nx.average_clustering(g)) < 0.02


def test_reciprocity_and_gini_known_values() -> None:
    src, dst = np.array([0, 1, 0, 2]), np.array([1, 0, 2, 3])
    assert reciprocity(src, dst, 4) == pytest.approx(0.5)
    assert gini(np.ones(10)) == pytest.approx(0.0)
    assert gini(np.array([0, 0, 0, 10])) == pytest.approx(0.75)


def test_homophily_lift() -> None:
    primary = np.array([0, 0, 1, 1])
    secondary = np.full(4, -1)
    h = community_homophily(np.array([0, 2]), np.array([1, 3]), primary, secondary, np.random.default_rng(0))
    assert h["follow_homophily"] == 1.0
    assert 0.2 < h["follow_homophily_random"] < 0.45  # 1/3 of distinct random pairs share a community
    assert h["homophily_lift"] > 2


def test_cold_user_share_definition() -> None:
    # 100 engagement events at ts 0..99: validation starts at ts 80, test at ts 90.
    ts = np.arange(100)
    user = np.zeros(100, dtype=np.int64)  # user 0: many past events, active in test -> warm
    user[[5, 6, 95]] = 1  # user 1: 2 past events, active in test -> cold
    user[[1, 2, 3, 96]] = 2  # user 2: 3 past events -> warm
    user[[85, 97]] = 3  # user 3: only a validation event -> cold
    out = cold_user_share(ts, user)
    assert (out["t_val"], out["t_test"]) == (80, 90)
    assert out["test_users"] == 4 and out["cold_users"] == 2
    assert out["cold_user_share"] == pytest.approx(0.5)
