"""Small hand-made ``data_gen``-style directories (the real generator is not needed to test the reader).

External ids are deliberately not ``0..n-1`` (users ``1000 + 7 i``, items ``50000 + 3 j``) so a test
fails if a loader confuses external ids with dense indices.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

DAY = 86_400
T0 = 1_704_067_200  # 2024-01-01 UTC


def user_ids(n: int) -> np.ndarray:
    return 1000 + 7 * np.arange(n, dtype=np.int64)


def item_ids(n: int) -> np.ndarray:
    return 50_000 + 3 * np.arange(n, dtype=np.int64)


def make_frames(n_users: int = 12, n_items: int = 30, n_events: int = 400, seed: int = 0) -> dict[str, pd.DataFrame]:
    """Deterministic users/items/follows/interactions frames following feedrec_common.parquet_tables."""
    rng = np.random.default_rng(seed)
    users = pd.DataFrame(
        {
            "user_id": user_ids(n_users),
            "signup_ts": np.full(n_users, T0 - 30 * DAY, dtype=np.int64),
            "region": pd.array(["eu"] * n_users, dtype="string"),
            "age_bucket": pd.array(["25-34"] * n_users, dtype="string"),
            "activity_level": np.ones(n_users, dtype=np.float32),
        }
    )
    items = pd.DataFrame(
        {
            "item_id": item_ids(n_items),
            "creator_id": user_ids(n_users)[rng.integers(0, n_users, n_items)],
            "created_ts": np.full(n_items, T0, dtype=np.int64),
            "topic": rng.integers(0, 5, n_items).astype(np.int16),
            "media_type": pd.array(["text"] * n_items, dtype="string"),
        }
    )
    # The last user never interacts (must still be in the id map).
    u = rng.integers(0, n_users - 1, n_events)
    i = rng.integers(0, n_items, n_events)
    ts = T0 + rng.integers(0, 20 * DAY, n_events)
    kinds = np.array(["impression", "click", "like", "share"])
    event = kinds[rng.choice(4, n_events, p=[0.6, 0.25, 0.1, 0.05])]
    interactions = pd.DataFrame(
        {
            "user_id": user_ids(n_users)[u],
            "item_id": item_ids(n_items)[i],
            "ts": ts.astype(np.int64),
            "event": pd.array(event, dtype="string"),
            "position": rng.integers(0, 15, n_events).astype(np.int16),
            "dwell_ms": rng.integers(0, 10_000, n_events).astype(np.int32),
        }
    )
    fa = rng.integers(0, n_users, 40)
    fb = rng.integers(0, n_users, 40)
    follows = pd.DataFrame(
        {
            "follower_id": user_ids(n_users)[fa],
            "followee_id": user_ids(n_users)[fb],
            "ts": (T0 + rng.integers(-5 * DAY, 20 * DAY, 40)).astype(np.int64),
        }
    )
    return {"users": users, "items": items, "follows": follows, "interactions": interactions}


def write_dir(root: Path, frames: dict[str, pd.DataFrame], parts: dict[str, int] | None = None) -> Path:
    """Write frames as ``NAME.parquet``, or as ``NAME/part-XXXXX.parquet`` when ``parts[NAME] > 1``."""
    root.mkdir(parents=True, exist_ok=True)
    for name, frame in frames.items():
        n_parts = (parts or {}).get(name, 1)
        if n_parts == 1:
            frame.to_parquet(root / f"{name}.parquet", index=False)
            continue
        folder = root / name
        folder.mkdir()
        for p, chunk in enumerate(np.array_split(np.arange(len(frame)), n_parts)):
            frame.iloc[chunk].to_parquet(folder / f"part-{p:05d}.parquet", index=False)
    return root
