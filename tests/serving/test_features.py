"""The feature source reads a dataset's tables in either layout (one file or a folder of parts).

Issue 12 item 2: ``FeatureSource`` looked for ``interactions.parquet`` and ``follows.parquet`` only, so a
sharded dataset (medium/large presets write ``interactions/part-*.parquet``) served every user with no
recent interactions and no followees, silently.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import httpx
import pandas as pd
import pytest

from data_gen.generate import generate
from data_gen.generator_config import resolve_config
from feedrec_common.parquet_tables import ENGAGEMENT_EVENTS, table_files
from recsys.models.base import Recommender
from serving.features import FeatureSource
from tests.serving.conftest import COLD_WITH_FOLLOWS, COLD_WITH_ITEMS, ITEM_ID0


def _shard(data_dir: Path, name: str, n_parts: int) -> None:
    """Rewrite ``NAME.parquet`` as ``NAME/part-*.parquet`` (same rows, same order)."""
    single = data_dir / f"{name}.parquet"
    df = pd.read_parquet(single)
    (data_dir / name).mkdir()
    step = -(-len(df) // n_parts)
    for i in range(n_parts):
        df.iloc[i * step : (i + 1) * step].to_parquet(data_dir / name / f"part-{i:05d}.parquet", index=False)
    single.unlink()


@pytest.fixture(scope="module")
def sharded_dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """data_gen tiny with interactions forced into several parts, and follows sharded too."""
    out = tmp_path_factory.mktemp("features") / "tiny-sharded"
    config = resolve_config("tiny", overrides=["output.rows_per_shard=20000", "output.row_group_size=10000"])
    generate(config, out, progress=False)
    assert len(table_files(out, "interactions")) > 1  # the layout under test
    _shard(out, "follows", 3)
    return out


def test_sharded_dataset_gives_every_user_their_features(sharded_dataset: Path) -> None:
    source = FeatureSource(sharded_dataset, max_recent=5)
    inter = pd.concat([pd.read_parquet(p) for p in table_files(sharded_dataset, "interactions")])
    engaged = inter[inter["event"].isin(ENGAGEMENT_EVENTS)]
    follows = pd.concat([pd.read_parquet(p) for p in table_files(sharded_dataset, "follows")])
    assert engaged["user_id"].nunique() > 100 and follows["follower_id"].nunique() > 100
    # Users whose engagements lie in a later part than the first are the ones the bug lost.
    last_part = pd.read_parquet(table_files(sharded_dataset, "interactions")[-1])
    user = int(last_part[last_part["event"].isin(ENGAGEMENT_EVENTS)]["user_id"].iloc[0])
    mine = engaged[engaged["user_id"] == user].sort_values("ts", ascending=False, kind="stable")
    features = source.get(str(user))
    assert features.recent_items == tuple(str(i) for i in mine["item_id"].head(5))
    follower = int(follows["follower_id"].iloc[-1])
    expected = follows[follows["follower_id"] == follower]["followee_id"]
    assert source.get(str(follower)).followees == tuple(str(v) for v in expected)


def test_sharded_and_single_file_layouts_agree(sharded_dataset: Path, tmp_path: Path) -> None:
    single = tmp_path / "single"
    single.mkdir()
    for name in ("follows", "interactions"):
        df = pd.concat([pd.read_parquet(p) for p in table_files(sharded_dataset, name)], ignore_index=True)
        df.to_parquet(single / f"{name}.parquet", index=False)
    users = pd.read_parquet(table_files(sharded_dataset, "users")[0])["user_id"]
    sharded, one_file = FeatureSource(sharded_dataset), FeatureSource(single)
    assert [sharded.get(str(u)) for u in users] == [one_file.get(str(u)) for u in users]


@pytest.fixture(scope="module")
def sharded_data_dir(data_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The serving tests' data directory (two users unknown to the models), written as parts."""
    out = tmp_path_factory.mktemp("sharded") / "data"
    shutil.copytree(data_dir, out)
    _shard(out, "follows", 2)
    _shard(out, "interactions", 2)
    return out


def test_service_folds_in_users_from_a_sharded_dataset(serve, serving_bundles, sharded_data_dir: Path) -> None:
    """Real uvicorn + ONNX Runtime: both unknown users are folded in from the parts' features."""
    server = serve({"FEEDREC_MODELS": f"gnn={serving_bundles['gnn']}", "FEEDREC_DATA_DIR": str(sharded_data_dir),
                    "FEEDREC_PARITY_USERS": "8"})

    gnn = Recommender.load(serving_bundles["gnn"])
    for user, recent, followees in ((COLD_WITH_ITEMS, [13, 11, 10], []), (COLD_WITH_FOLLOWS, [], [1, 2, 3, 4, 5])):
        r = httpx.get(f"{server.url}/recommend/{user}", params={"k": 20}, timeout=10)
        assert r.status_code == 200, r.text
        body = r.json()
        assert body["fallback"] == "cold_start", body  # "popular" when the features were not found
        expected, _ = gnn.recommend_new_user(recent, followees=followees, k=20)
        assert [it["item_id"] for it in body["items"]] == [ITEM_ID0 + int(i) for i in expected]
