from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest

import data_gen.generate as generate_module
from data_gen.generate import OutputExistsError, generate
from data_gen.generator_config import resolve_config
from data_gen.io import arrow_schema
from feedrec_common.hashing import sha256_file
from feedrec_common.parquet_tables import EVENT_KINDS, TABLES, read_table, table_files, table_path


def _data_hashes(manifest: dict) -> dict[str, str]:
    return {k: v["sha256"] for k, v in manifest["files"].items() if k.endswith((".parquet", ".npy", ".json"))}


def test_tables_follow_the_schema_contract(tiny_dataset: Path) -> None:
    manifest = json.loads((tiny_dataset / "manifest.json").read_text())
    for name, columns in TABLES.items():
        for f in table_files(tiny_dataset, name):
            schema = pq.read_schema(f)
            assert schema.names[: len(columns)] == list(columns)
            for field in arrow_schema(columns):
                assert schema.field(field.name).type == field.type, (name, field.name)
        assert read_table(tiny_dataset, name).num_rows == manifest["row_counts"][name]
    events = set(read_table(tiny_dataset, "interactions", ["event"])["event"].to_pylist())
    assert events == set(EVENT_KINDS)


def test_manifest_hashes_every_file(tiny_dataset: Path) -> None:
    manifest = json.loads((tiny_dataset / "manifest.json").read_text())
    on_disk = {str(p.relative_to(tiny_dataset)) for p in tiny_dataset.rglob("*") if p.is_file()}
    assert on_disk - set(manifest["files"]) == {"manifest.json"}
    for rel, info in manifest["files"].items():
        assert sha256_file(tiny_dataset / rel) == info["sha256"]
    assert manifest["seed"] == 7 and manifest["config"]["name"] == "tiny"
    assert manifest["generator_version"]
    assert (tiny_dataset / "truth" / "params.json").is_file()
    assert not list(tiny_dataset.rglob("*.pkl")) and not list(tiny_dataset.rglob("*.pickle"))


def test_interactions_sorted_by_time_and_funnel(tiny_dataset: Path) -> None:
    df = read_table(tiny_dataset, "interactions").to_pandas()
    assert (np.diff(df["ts"].to_numpy()) >= 0).all()
    counts = df["event"].value_counts()
    assert counts["impression"] > counts["click"] > counts["like"] > counts["share"] > 0


def test_same_seed_same_bytes_other_seed_differs(tiny_dataset: Path, tmp_path: Path) -> None:
    first = json.loads((tiny_dataset / "manifest.json").read_text())
    again = generate(resolve_config("tiny", seed=7), tmp_path / "again", progress=False).manifest
    other = generate(resolve_config("tiny", seed=8), tmp_path / "other", progress=False).manifest
    assert _data_hashes(again) == _data_hashes(first)
    assert again["dataset_hash"] == first["dataset_hash"]
    assert other["dataset_hash"] != first["dataset_hash"]
    assert _data_hashes(other)["users.parquet"] != _data_hashes(first)["users.parquet"]


def test_sharding_changes_layout_not_content(tiny_dataset: Path, tmp_path: Path) -> None:
    cfg = resolve_config("tiny", None, ["output.rows_per_shard=20000", "output.row_group_size=5000"])
    out = generate(cfg, tmp_path / "sharded", progress=False).out
    assert table_path(out, "interactions").is_dir() and len(table_files(out, "interactions")) > 1
    cfg = resolve_config("tiny", None, ["output.rows_per_shard=1000000"])
    single = generate(cfg, tmp_path / "single", progress=False).out
    assert table_path(single, "interactions") == single / "interactions.parquet"
    assert read_table(out, "interactions").equals(read_table(single, "interactions"))
    assert read_table(out, "interactions").equals(read_table(tiny_dataset, "interactions"))
    meta = pq.ParquetFile(table_files(out, "interactions")[0]).metadata
    assert meta.num_row_groups == 4 and meta.row_group(0).num_rows == 5000


def test_existing_output_refused_and_overwrite_replaces(tmp_path: Path) -> None:
    out = tmp_path / "d"
    out.mkdir()
    (out / "keep.txt").write_text("x")
    with pytest.raises(OutputExistsError, match="--overwrite"):
        generate(resolve_config("tiny"), out, progress=False)
    assert (out / "keep.txt").exists()
    generate(resolve_config("tiny"), out, overwrite=True, progress=False)
    assert not (out / "keep.txt").exists() and (out / "manifest.json").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["d"]


def test_interrupted_run_leaves_no_partial_dataset(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def boom(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(generate_module, "write_truth", boom)
    with pytest.raises(KeyboardInterrupt):
        generate(resolve_config("tiny"), tmp_path / "d", progress=False)
    assert list(tmp_path.iterdir()) == []


def test_tiny_generation_is_fast(tmp_path: Path) -> None:
    cfg = resolve_config("tiny")
    generate(cfg, tmp_path / "warm", progress=False)  # imports and caches out of the measurement
    t0 = time.process_time()
    generate(cfg, tmp_path / "timed", progress=False)
    assert time.process_time() - t0 < 2.0


def test_card_with_plots(tmp_path: Path) -> None:
    out = generate(resolve_config("tiny", None, ["output.plots=true"]), tmp_path / "d", progress=False).out
    card = (out / "CARD.md").read_text()
    for name in ("degree_distribution.png", "item_popularity.png", "activity_over_time.png"):
        assert (out / "plots" / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        assert f"plots/{name}" in card
    assert "cold_user_share" in card


def test_late_joiners_follow_people_and_social_signal_is_real(tiny_dataset: Path) -> None:
    users = read_table(tiny_dataset, "users").to_pandas()
    follows = read_table(tiny_dataset, "follows").to_pandas()
    manifest = json.loads((tiny_dataset / "manifest.json").read_text())
    late = users[users["signup_ts"] >= manifest["time"]["start_ts"]]["user_id"]
    assert len(late) > 0.05 * len(users)
    assert late.isin(follows["follower_id"]).mean() > 0.9
    # Homophily in the latent space: followees' factors resemble the follower's.
    factors = np.load(tiny_dataset / "truth" / "user_factors.npy")
    off = manifest["id_offsets"]["user_id"]
    a, b = follows["follower_id"].to_numpy() - off, follows["followee_id"].to_numpy() - off

    def cos(x: np.ndarray, y: np.ndarray) -> float:
        return float(np.mean((x * y).sum(1) / np.linalg.norm(x, axis=1) / np.linalg.norm(y, axis=1)))

    rng = np.random.default_rng(0)
    assert cos(factors[a], factors[b]) > cos(factors[a], factors[rng.permutation(b)]) + 0.15
