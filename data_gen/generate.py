"""Generate one dataset directory: tables, truth/, manifest.json and CARD.md (see ``data_gen``).

The output is assembled in a temporary sibling directory ``.<name>.tmp-<pid>`` and renamed into place
at the end, so an interrupted run never leaves a half-written dataset under ``out``.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

import data_gen
from data_gen.card import write_card
from data_gen.feed_simulation import FeedSimulator, SimulationResult
from data_gen.follow_graph import FollowGraph, build_follows
from data_gen.generator_config import DataGenConfig
from data_gen.io import (
    ShardedParquetWriter,
    arrow_schema,
    make_table,
    replace_dir,
    strings_from_codes,
    write_table,
)
from data_gen.population import (
    AGE_BUCKETS,
    ITEM_ID_OFFSET,
    REGIONS,
    USER_ID_OFFSET,
    Population,
    build_population,
)
from data_gen.posts import MEDIA_TYPES, Posts, build_posts
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
from data_gen.streams import stream
from data_gen.truth import write_truth
from feedrec_common.hashing import sha256_file
from feedrec_common.parquet_tables import FOLLOWS, INTERACTIONS, ITEMS, USERS


class OutputExistsError(FileExistsError):
    """The output directory exists and ``overwrite`` was not given."""


@dataclass
class GenerationResult:
    out: Path
    manifest: dict[str, Any]
    wall_seconds: float


def generate(
    cfg: DataGenConfig, out: str | Path, overwrite: bool = False, progress: bool | None = None
) -> GenerationResult:
    """Generate the dataset described by ``cfg`` into directory ``out``.

    Args:
        cfg (DataGenConfig): Validated configuration.
        out (str or Path): Output directory (created; must not exist unless ``overwrite``).
        overwrite (bool): Replace an existing ``out`` (only once the new dataset is complete).
        progress (bool, optional): Progress bar; defaults to ``cfg.output.progress``.

    Raises:
        OutputExistsError: ``out`` exists and ``overwrite`` is false.
    """
    t_start = time.perf_counter()
    out = Path(out)
    if out.exists() and not overwrite:
        raise OutputExistsError(f"output directory {out} already exists (use --overwrite to replace it)")
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.tmp-{os.getpid()}")
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir()
    try:
        manifest = _generate_into(cfg, tmp, cfg.output.progress if progress is None else progress)
        replace_dir(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return GenerationResult(out=out, manifest=manifest, wall_seconds=time.perf_counter() - t_start)


def _generate_into(cfg: DataGenConfig, root: Path, progress: bool) -> dict[str, Any]:
    out_cfg = cfg.output
    pop = build_population(cfg)
    graph = build_follows(cfg, pop)
    posts = build_posts(cfg, pop)
    write_table(root, "users", _users_table(pop), out_cfg.row_group_size, out_cfg.compression)
    write_table(root, "items", _items_table(posts), out_cfg.row_group_size, out_cfg.compression)
    write_table(root, "follows", _follows_table(graph), out_cfg.row_group_size, out_cfg.compression)

    writer = ShardedParquetWriter(
        root,
        "interactions",
        arrow_schema(INTERACTIONS),
        out_cfg.rows_per_shard,
        out_cfg.row_group_size,
        out_cfg.compression,
    )
    sim = FeedSimulator(cfg, pop, graph, posts).run(writer, progress=progress)
    interactions_path = writer.close()

    write_truth(root / "truth", cfg, pop, posts)
    stats = realism_statistics(cfg, pop, graph, posts, sim)
    manifest = {
        "generator": "data_gen",
        "generator_version": data_gen.__version__,
        "name": cfg.name,
        "seed": cfg.seed,
        "config": cfg.model_dump(mode="json"),
        "time": {"start_ts": cfg.start_ts, "end_ts": cfg.end_ts},
        "id_offsets": {"user_id": USER_ID_OFFSET, "item_id": ITEM_ID_OFFSET},
        "row_counts": {
            "users": pop.n_users,
            "items": posts.n_items,
            "follows": len(graph.follower),
            "interactions": writer.rows,
        },
        "event_counts": sim.event_counts,
        "layout": {
            "interactions": interactions_path.name + ("/" if interactions_path.is_dir() else ""),
            "interaction_parts": len(writer.parts),
        },
        "realism": stats,
        "realism_ranges": {k: list(v) for k, v in REALISM_RANGES.items()},
        "realism_problems": check_realism(stats),
    }
    card_files = write_card(root, manifest, pop, graph, posts, sim, plots=out_cfg.plots)
    hashed = sorted(p for p in root.rglob("*") if p.is_file() and p.name != "manifest.json")
    files = {str(p.relative_to(root)): {"sha256": sha256_file(p), "bytes": p.stat().st_size} for p in hashed}
    data_files = sorted(k for k in files if k not in card_files)
    digest = hashlib.sha256()
    for k in data_files:
        digest.update(f"{k}:{files[k]['sha256']}\n".encode())
    manifest["files"] = files
    manifest["dataset_hash"] = digest.hexdigest()
    manifest["dataset_hash_files"] = (
        "sha256 over 'path:sha256' lines of every file except CARD.md, plots and manifest.json"
    )
    (root / "manifest.json").write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n")
    return manifest


def realism_statistics(
    cfg: DataGenConfig, pop: Population, graph: FollowGraph, posts: Posts, sim: SimulationResult
) -> dict[str, float]:
    """All statistics of :data:`data_gen.stats.REALISM_RANGES` (and a few more) for the manifest."""
    rng = stream(cfg.seed, "stats")
    n = pop.n_users
    fit = powerlaw_fit(graph.in_degree(n))
    stats: dict[str, float] = {
        "in_degree_alpha": fit["alpha"],
        "in_degree_xmin": fit["xmin"],
        "in_degree_ks": fit["ks"],
        "in_degree_max": int(graph.in_degree(n).max()) if n else 0,
        "mean_out_degree": float(len(graph.follower) / max(n, 1)),
        "reciprocity": reciprocity(graph.follower, graph.followee, n),
        "avg_clustering": average_clustering(
            graph.follower, graph.followee, n, cfg.output.clustering_sample, rng
        ),
    }
    stats.update(community_homophily(graph.follower, graph.followee, pop.primary, pop.secondary, rng))
    stats["item_popularity_gini"] = gini(sim.item_clicks)
    stats["items_with_click_share"] = float(np.mean(sim.item_clicks > 0))
    stats.update(cold_user_share(sim.engagement_ts, sim.engagement_user))
    counts = sim.event_counts
    stats["ctr"] = counts["click"] / max(counts["impression"], 1)
    stats["like_per_click"] = counts["like"] / max(counts["click"], 1)
    stats["share_per_click"] = counts["share"] / max(counts["click"], 1)
    return {k: (float(v) if isinstance(v, float | np.floating) else int(v)) for k, v in stats.items()}


def _users_table(pop: Population):
    return make_table(
        USERS,
        {
            "user_id": np.arange(pop.n_users, dtype=np.int64) + USER_ID_OFFSET,
            "signup_ts": pop.signup_ts,
            "region": strings_from_codes(pop.region, REGIONS),
            "age_bucket": strings_from_codes(pop.age_bucket, AGE_BUCKETS),
            "activity_level": pop.activity.astype(np.float32),
        },
    )


def _items_table(posts: Posts):
    return make_table(
        ITEMS,
        {
            "item_id": np.arange(posts.n_items, dtype=np.int64) + ITEM_ID_OFFSET,
            "creator_id": posts.creator.astype(np.int64) + USER_ID_OFFSET,
            "created_ts": posts.created_ts,
            "topic": posts.topic.astype(np.int16),
            "media_type": strings_from_codes(posts.media, MEDIA_TYPES),
        },
    )


def _follows_table(graph: FollowGraph):
    return make_table(
        FOLLOWS,
        {
            "follower_id": graph.follower.astype(np.int64) + USER_ID_OFFSET,
            "followee_id": graph.followee.astype(np.int64) + USER_ID_OFFSET,
            "ts": graph.ts,
        },
    )
