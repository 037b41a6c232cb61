"""Synthetic event logs with a known effect, shared by the report tests."""

from __future__ import annotations

import numpy as np
import pandas as pd

from abtest.assignment import ExperimentConfig

T0 = 1_735_689_600.0  # 2025-01-01 00:00 UTC


def experiment(mode: str = "ab", key: str = "gnn-vs-mf") -> ExperimentConfig:
    return ExperimentConfig(
        key=key, salt=f"{key}-test", mode=mode, status="running", control="mf",
        arms=[{"name": "mf", "model": "mf@champion", "weight": 50}, {"name": "gnn", "model": "gnn@champion", "weight": 50}],
        forced={"qa-gnn": "gnn"},
    )  # fmt: skip


def make_events(
    config: ExperimentConfig,
    users: int = 3000,
    lift: float = 0.0,
    *,
    seed: int = 0,
    days: float = 10.0,
    items_per_list: int = 5,
    drop_treatment_share: float = 0.0,
) -> tuple[pd.DataFrame, pd.DataFrame, pd.Series]:
    """Exposures and click outcomes of an A/B experiment (users split by the config's hash) plus a
    pre-period covariate. Each user has a click probability ``Beta(2, 38)`` per shown item, multiplied
    by ``1 + lift`` in the treatment arm. ``drop_treatment_share`` loses that share of the treatment
    users' events (a logging bug: sample-ratio mismatch)."""
    rng = np.random.default_rng(seed)
    user_ids = np.arange(1, users + 1)
    arm_index, _ = config.assign_arms(user_ids)
    base = rng.beta(2, 38, size=users)
    n_lists = 1 + rng.poisson(3, size=users)
    exposures, outcomes = [], []
    for u, arm_i, p, n in zip(user_ids, arm_index, base, n_lists):
        arm = config.arm_names[arm_i]
        if arm != config.control_arm and rng.random() < drop_treatment_share:
            continue
        prob = min(p * (1 + lift), 1.0) if arm != config.control_arm else p
        for j in range(n):
            rid = f"r{u}-{j}"
            ts = T0 + rng.uniform(0, days * 86400)
            items = [int(x) for x in rng.choice(1000, size=items_per_list, replace=False)]
            exposures.append({
                "event_id": f"e-{rid}", "request_id": rid, "ts": ts, "experiment": config.key, "arm": arm,
                "user": int(u), "model": arm, "model_version": f"{arm}/1", "fallback": None, "items": items,
                "positions": list(range(1, items_per_list + 1)), "item_arms": None,
            })  # fmt: skip
            for item in items:
                if rng.random() < prob:
                    outcomes.append({"event_id": f"o-{rid}-{item}", "request_id": rid, "ts": ts + 3,
                                     "user": int(u), "item": item, "kind": "click"})  # fmt: skip
    pre = pd.Series(rng.poisson(base * 60), index=[str(u) for u in user_ids], dtype=np.float64)
    return pd.DataFrame(exposures), pd.DataFrame(outcomes, columns=["event_id", "request_id", "ts", "user", "item", "kind"]), pre


def make_interleaved_events(
    config: ExperimentConfig, impressions: int = 2000, *, seed: int = 0, treatment_click: float = 0.3,
    control_click: float = 0.1,
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Interleaved exposures (``item_arms`` alternating between arms, one shared item) and clicks with a
    per-item probability depending on the contributing arm."""
    rng = np.random.default_rng(seed)
    treatment = [a for a in config.arm_names if a != config.control_arm][0]
    exposures, outcomes = [], []
    for r in range(impressions):
        rid = f"i{r}"
        ts = T0 + r * 300.0
        items = [int(x) for x in rng.choice(10_000, size=6, replace=False)]
        item_arms = [treatment, config.control_arm] * 2 + ["shared", config.control_arm]
        user = int(rng.integers(1, 500))
        exposures.append({"event_id": f"e-{rid}", "request_id": rid, "ts": ts, "experiment": config.key,
                          "arm": "interleaved", "user": user, "model": None, "model_version": "x",
                          "fallback": None, "items": items, "positions": list(range(1, 7)), "item_arms": item_arms})  # fmt: skip
        for item, team in zip(items, item_arms):
            p = treatment_click if team == treatment else control_click
            if rng.random() < p:
                outcomes.append({"event_id": f"o-{rid}-{item}", "request_id": rid, "ts": ts + 2, "user": user,
                                 "item": item, "kind": "click"})  # fmt: skip
    return pd.DataFrame(exposures), pd.DataFrame(outcomes)
