"""Matrix factorisation on Gowalla: fit time and test Recall@20 / NDCG@20 beside published numbers.

Run::

    python -m benchmarks.bench_mf            # full: popular, ALS defaults, ALS tuned, BPR (~minutes)
    python -m benchmarks.bench_mf --quick    # few iterations, 3,000 sampled test users (~1 min)
    python -m benchmarks.bench_mf --threads 2 --out docs/bench_mf.md

Protocol (LightGCN / NGCF): train on train.txt, rank every item not in the user's training set,
average Recall@20 and NDCG@20 over users with test items (``recsys.evaluation.evaluate``).
Published rows are copied from ``shared/datasets/gowalla/README.md``; measured rows are fitted here.
The ``vs ALS defaults`` column is each row's Recall@20 over ALS-with-library-defaults measured in the
same run (the named peer); ``vs LightGCN`` is over the published LightGCN figure. Fold-in rows
re-derive the user vectors of a user sample from their training items (``Recommender.fold_in``,
no retraining) and evaluate those vectors on the same users as the trained vectors.

The target for tuned ALS is Recall@20 >= 0.165 (README: about 0.169; library defaults about 0.095).
Fit times depend on the cores ``implicit`` gets: this machine may be shared, see the load line.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from recsys.data import load_split
from recsys.evaluation import evaluate
from recsys.models.base import Recommender
from recsys.models.mf import ALSRecommender, BPRRecommender
from recsys.models.popular import PopularRecommender
from recsys.provenance import git_commit, machine_description

#: Published Recall@20 / NDCG@20 on this split (shared/datasets/gowalla/README.md).
PUBLISHED = {
    "NGCF (paper)": (0.1570, 0.1327),
    "LightGCN (paper)": (0.1830, 0.1554),
    "EASE^R (BARS)": (0.1765, 0.1467),
}
TARGET_RECALL = 0.165
TUNED_ALS = {"factors": 256, "regularization": 10.0, "alpha": 20.0, "iterations": 15}
BPR = {"factors": 128, "learning_rate": 0.01, "regularization": 0.01, "iterations": 100}


@dataclass
class Row:
    name: str
    recall: float
    ndcg: float
    fit_seconds: float | None = None
    eval_seconds: float | None = None
    users: int | None = None
    note: str = ""


def measure(name: str, model: Recommender, split: Any, max_users: int | None, note: str = "") -> tuple[Row, Any]:
    start = time.perf_counter()
    model.fit(split.train)
    fit_seconds = time.perf_counter() - start
    res = evaluate(model, split, on="test", ks=(20,), max_users=max_users, slices=False)
    row = Row(name, res.metrics["recall@20"], res.metrics["ndcg@20"], fit_seconds, res.info["seconds"],
              int(res.metrics["n_users"]), note)  # fmt: skip
    print(f"  {name}: recall@20 {row.recall:.4f} ndcg@20 {row.ndcg:.4f} fit {fit_seconds:.1f}s", file=sys.stderr)
    return row, res


def fold_in_row(name: str, model: Recommender, split: Any, n_users: int, seed: int) -> list[Row]:
    """Trained vs folded-in user vectors on the same sample of test users."""
    rng = np.random.default_rng(seed)
    candidates = np.flatnonzero(np.diff(split.test.indptr))
    users = np.sort(rng.choice(candidates, size=min(n_users, len(candidates)), replace=False))
    ui = split.train.user_items
    start = time.perf_counter()
    folded = torch.stack([model.fold_in(ui.indices[ui.indptr[u] : ui.indptr[u + 1]]) for u in users])
    per_user_ms = (time.perf_counter() - start) / len(users) * 1e3
    table = torch.zeros((split.train.n_users, folded.shape[1]))
    table[torch.from_numpy(users)] = folded
    items = model.item_vectors().float()
    trained = evaluate(model, split, on="test", ks=(20,), users=users, slices=False)
    folded_res = evaluate(lambda u: table[torch.from_numpy(np.asarray(u))] @ items.T, split, on="test",
                          ks=(20,), users=users, slices=False)  # fmt: skip
    return [
        Row(f"{name}, trained vectors", trained.metrics["recall@20"], trained.metrics["ndcg@20"],
            users=len(users), note="fold-in sample"),  # fmt: skip
        Row(f"{name}, folded-in vectors", folded_res.metrics["recall@20"], folded_res.metrics["ndcg@20"],
            users=len(users), note=f"fold-in {per_user_ms:.2f} ms/user"),  # fmt: skip
    ]


def markdown(rows: list[Row], published: dict[str, tuple[float, float]], peer: Row | None) -> str:
    lightgcn = published["LightGCN (paper)"][0]
    lines = [
        "| model | Recall@20 | NDCG@20 | vs ALS defaults (Recall) | vs LightGCN (Recall) | fit s | eval s | users | note |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---|",
    ]

    def f(x: float | None, fmt: str) -> str:
        return "" if x is None else format(x, fmt)

    for name, (recall, ndcg) in published.items():
        vs_peer = f"{recall / peer.recall:.2f}x" if peer else ""
        lines.append(f"| {name} | {recall:.4f} | {ndcg:.4f} | {vs_peer} | {recall / lightgcn:.2f}x |  |  |  | published |")
    for r in rows:
        vs_peer = f"{r.recall / peer.recall:.2f}x" if peer and peer.recall else ""
        lines.append(
            f"| {r.name} | {r.recall:.4f} | {r.ndcg:.4f} | {vs_peer} | {r.recall / lightgcn:.2f}x | "
            f"{f(r.fit_seconds, '.1f')} | {f(r.eval_seconds, '.1f')} | {f(r.users, ',d')} | {r.note} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.bench_mf", description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="few iterations and 3,000 sampled test users")
    parser.add_argument("--threads", type=int, default=0, help="implicit threads; 0 = all cores (default)")
    parser.add_argument("--max-users", type=int, help="evaluate a fixed random sample of test users")
    parser.add_argument("--fold-in-users", type=int, default=1000, help="users in the fold-in check (0: skip)")
    parser.add_argument("--no-bpr", action="store_true", help="skip BPR")
    parser.add_argument("--out", help="also write the Markdown here")
    args = parser.parse_args(argv)

    scale = {"iterations": 3} if args.quick else {}
    max_users = args.max_users or (3000 if args.quick else None)
    fold_users = min(args.fold_in_users, 300) if args.quick else args.fold_in_users
    load_before = os.getloadavg()[0]

    start = time.perf_counter()
    split = load_split("gowalla")
    load_seconds = time.perf_counter() - start
    print(f"gowalla loaded in {load_seconds:.1f}s: {split.train.summary()}", file=sys.stderr)

    threads = {"num_threads": args.threads}
    rows: list[Row] = []
    row, _ = measure("popular", PopularRecommender(), split, max_users)
    rows.append(row)
    peer, _ = measure("ALS, implicit defaults", ALSRecommender(**threads, **scale), split, max_users,
                      "factors 100, reg 0.01, alpha 1, 15 it")  # fmt: skip
    rows.append(peer)
    tuned_model = ALSRecommender(**{**TUNED_ALS, **scale}, **threads)
    tuned, _ = measure("ALS, tuned", tuned_model, split, max_users, "factors 256, reg 10, alpha 20, 15 it")
    rows.append(tuned)
    bpr_model = None
    if not args.no_bpr:
        bpr_scale = {"iterations": 10} if args.quick else {}
        bpr_model = BPRRecommender(**{**BPR, **bpr_scale}, **threads)
        row, _ = measure("BPR", bpr_model, split, max_users,
                         f"factors {BPR['factors']}, lr {BPR['learning_rate']}, reg {BPR['regularization']}, "
                         f"{BPR['iterations']} it")  # fmt: skip
        rows.append(row)
    if fold_users:
        rows += fold_in_row("ALS tuned", tuned_model, split, fold_users, seed=0)
        if bpr_model is not None:
            rows += fold_in_row("BPR", bpr_model, split, fold_users, seed=0)

    verdict = "PASS" if tuned.recall >= TARGET_RECALL else "FAIL"
    text = "\n".join([
        f"### Matrix factorisation on Gowalla{' (--quick: not comparable)' if args.quick else ''}",
        "",
        markdown(rows, PUBLISHED, peer),
        "",
        f"- target: tuned ALS Recall@20 >= {TARGET_RECALL}: **{verdict}** ({tuned.recall:.4f})",
        f"- implicit threads: {args.threads or os.cpu_count()} ({'all cores' if not args.threads else 'set'}); "
        f"load average before the run {load_before:.1f}, after {os.getloadavg()[0]:.1f} "
        "(fit times grow when the cores are shared)",
        f"- machine: {machine_description()}; commit `{git_commit()[:12]}`; "
        f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}",
    ])  # fmt: skip
    print(text)
    if args.out:
        with open(args.out, "w") as f:
            f.write(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
