"""Per-request cost of the feed library object (no HTTP): ``FeedPipeline.recommend`` uncached.

    python -m benchmarks.bench_feed_request                    # data/small, ranker@champion, 500 users
    python -m benchmarks.bench_feed_request --users 200 --ranker bundles/feed_small

Each request is a distinct user at the end of the log (caches that are per user never help; the
per-hour pools of the trending, GNN and interest sources are built by a warm-up request first, as a
server builds them once an hour). Prints p50/p95/p99 of the whole request and of each stage
(candidates, features + ONNX ranker, slate) and the candidate count. Target: p99 <= 30 ms over
<= 1,000 candidates on 2 cores.
"""

from __future__ import annotations

import argparse
import sys
import time

import numpy as np
import torch

from recsys.feed.bundle import load_feed_bundle
from recsys.feed.candidates import FeedContext
from recsys.feed.data import load_feed_data
from recsys.feed.pipeline import FeedConfig, build_pipeline
from recsys.feed.state import FeatureState


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.bench_feed_request", description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", default="data/small")
    parser.add_argument("--ranker", default="ranker@champion", help="feed bundle: path or registry ref")
    parser.add_argument("--users", type=int, default=500)
    parser.add_argument("--k", type=int, default=20)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--quick", action="store_true", help="100 users")
    args = parser.parse_args(argv)
    if args.quick:
        args.users = min(args.users, 100)
    from recsys.tracking import configure_tracking, resolve_model_ref

    torch.set_num_threads(1)
    configure_tracking(None)
    try:
        data = load_feed_data(args.data)
        bundle = load_feed_bundle(resolve_model_ref(args.ranker))
    except (ValueError, RuntimeError, FileNotFoundError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    state = FeatureState(data.catalog)
    state.observe(data.events)
    state.observe_follows(data.follows)
    pipeline = build_pipeline(FeedContext(data.catalog, state, bundle.embeddings), bundle.onnx, FeedConfig.model_validate(bundle.feed_config))
    now = data.end_ts
    rng = np.random.default_rng(args.seed)
    active = np.unique(data.events.user)
    users = rng.choice(active, size=min(args.users, len(active)), replace=False)
    pipeline.recommend(int(users[0]), args.k, now)  # warm-up: hourly pools, ONNX session
    rows = []
    for u in users[1:]:
        t = time.perf_counter()
        _, _, timings = pipeline.recommend_timed(int(u), args.k, now)
        timings["total"] = time.perf_counter() - t
        rows.append(timings)
    print(f"{args.data}, {len(rows)} uncached requests (one per user), k = {args.k}, ONNX Runtime ranker, 1 thread")
    print("| stage | p50 ms | p95 ms | p99 ms |")
    print("|---|---:|---:|---:|")
    for stage in ("candidates", "features+ranker", "slate", "total"):
        ms = np.array([r[stage] for r in rows]) * 1e3
        print(f"| {stage} | {np.percentile(ms, 50):.1f} | {np.percentile(ms, 95):.1f} | {np.percentile(ms, 99):.1f} |")
    n = np.array([r["n_candidates"] for r in rows])
    print(f"candidates per request: mean {n.mean():.0f}, max {n.max()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
