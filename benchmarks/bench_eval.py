"""Speed of the data loader and of full-ranking evaluation on Gowalla, against naive peers.

Run::

    .venv/bin/python -m benchmarks.bench_eval            # all 29,858 test users
    .venv/bin/python -m benchmarks.bench_eval --quick    # 3,000 users, smaller peer sample

What is timed (best of ``--repeat`` runs):

* ``load_lightgcn`` on ``train.txt``/``test.txt`` vs a naive reader (per-line ``int()`` lists, then a
  scipy COO -> CSR), the way the LightGCN reference code reads the files;
* :func:`recsys.evaluation.evaluate` of a random 64-d factor model (users x items dot products, train
  items masked, top-20, Recall/NDCG/...) vs a per-user loop (numpy scores per block, a dense boolean
  mask, ``argpartition``, Python sets for the hits) run on a sample of users; the ratio compares
  users per second. Target: the whole test set in <= 30 s on 2 CPU cores.

It also prints a popularity baseline's Recall@20 / NDCG@20 on Gowalla as a sanity check of the
protocol (rank every item a user has not trained on by training popularity).
"""

from __future__ import annotations

import argparse
import datetime as dt
import math
import time

import numpy as np
import scipy.sparse as sp
import torch

from recsys.data import gowalla_dir, load_lightgcn
from recsys.evaluation import evaluate
from recsys.provenance import machine_description

TARGET_SECONDS = 30.0
K = 20


def naive_load(directory) -> tuple[sp.csr_matrix, sp.csr_matrix]:
    """The peer reader: one Python list of ints per line."""
    out = []
    for name in ("train.txt", "test.txt"):
        rows, cols = [], []
        with open(directory / name) as f:
            for line in f:
                ids = [int(x) for x in line.split()]
                if ids:
                    rows.extend([ids[0]] * (len(ids) - 1))
                    cols.extend(ids[1:])
        out.append((np.asarray(rows), np.asarray(cols)))
    n_users = max(int(r.max()) for r, _ in out) + 1
    n_items = int(out[0][1].max()) + 1
    return tuple(
        sp.csr_matrix((np.ones(len(r), np.float32), (r, c)), shape=(n_users, n_items)) for r, c in out
    )


def naive_evaluate(U: np.ndarray, V: np.ndarray, train: sp.csr_matrix, test: sp.csr_matrix, users, batch=256):
    """The peer evaluator: dense mask, argpartition, per-user Python metrics."""
    recall = ndcg = 0.0
    for lo in range(0, len(users), batch):
        block = users[lo : lo + batch]
        scores = U[block] @ V.T
        scores[train[block].toarray() > 0] = -np.inf
        top = np.argpartition(-scores, K, axis=1)[:, :K]
        order = np.argsort(-np.take_along_axis(scores, top, axis=1), axis=1)
        top = np.take_along_axis(top, order, axis=1)
        for row, u in enumerate(block):
            truth = set(test[u].indices.tolist())
            hits = [r for r, item in enumerate(top[row], start=1) if item in truth]
            recall += len(hits) / len(truth)
            idcg = sum(1 / math.log2(r + 1) for r in range(1, min(len(truth), K) + 1))
            ndcg += sum(1 / math.log2(r + 1) for r in hits) / idcg
    return recall / len(users), ndcg / len(users)


def best_of(repeat: int, fn):
    """Best wall time of ``repeat`` runs, and the process CPU time of that run (the machine is shared:
    CPU time shows the work, wall time what a user waits)."""
    best, result = (math.inf, math.inf), None
    for _ in range(repeat):
        wall, cpu = time.perf_counter(), time.process_time()
        result = fn()
        best = min(best, (time.perf_counter() - wall, time.process_time() - cpu))
    return best, result


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="3,000 users and a small peer sample")
    parser.add_argument("--repeat", type=int, default=2, help="runs per timing; the best is reported")
    parser.add_argument("--peer-users", type=int, default=None, help="users for the naive peer")
    parser.add_argument("--batch-size", type=int, default=1024)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)

    directory = gowalla_dir()
    (load_s, load_cpu), split = best_of(args.repeat, lambda: load_lightgcn(directory))
    (naive_load_s, _), _ = best_of(1, lambda: naive_load(directory))

    n_users, n_items = split.train.n_users, split.train.n_items
    g = torch.Generator().manual_seed(args.seed)
    U = torch.randn(n_users, 64, generator=g) / 8
    V = torch.randn(n_items, 64, generator=g) / 8

    def score(users: np.ndarray) -> torch.Tensor:
        return U[torch.from_numpy(users)] @ V.T

    max_users = 3000 if args.quick else None
    (eval_s, eval_cpu), result = best_of(
        args.repeat, lambda: evaluate(score, split, ks=(K,), batch_size=args.batch_size, max_users=max_users)
    )
    n_eval = int(result.metrics["n_users"])

    peer_n = args.peer_users or (300 if args.quick else 2000)
    peer_users = result.users[np.random.default_rng(args.seed).permutation(n_eval)[:peer_n]]
    peer_users.sort()
    (peer_s, _), (peer_recall, peer_ndcg) = best_of(
        1, lambda: naive_evaluate(U.numpy(), V.numpy(), split.train.user_items, split.test, peer_users)
    )
    # Same users through evaluate(): the two must agree (the peer is also the reference).
    check = evaluate(score, split, ks=(K,), users=peer_users)
    agree = (
        abs(check.metrics["recall@20"] - peer_recall) < 1e-9
        and abs(check.metrics["ndcg@20"] - peer_ndcg) < 1e-9
    )

    # Popularity baseline: distinct integer scores (ties broken by item index) so the ranking is exact.
    popularity = split.train.item_popularity()
    order = np.lexsort((np.arange(n_items), -popularity))
    pop_score = torch.empty(n_items)
    pop_score[torch.from_numpy(order)] = torch.arange(n_items, 0, -1, dtype=torch.float32)
    (pop_s, _), pop = best_of(
        1, lambda: evaluate(lambda u: pop_score.expand(len(u), -1).clone(), split, ks=(K,), max_users=max_users)
    )

    users_per_s = n_eval / eval_s
    peer_users_per_s = peer_n / peer_s
    print(f"# bench_eval: Gowalla ({n_users:,} users x {n_items:,} items), K={K}")
    print(f"\n{machine_description()}; {dt.datetime.now().astimezone():%Y-%m-%d %H:%M %Z}\n")
    print(
        "| step | users | seconds (CPU s) | users/s | peer | peer seconds | peer users/s | speed-up | target |"
    )
    print("|---|---:|---:|---:|---|---:|---:|---:|---|")
    print(
        f"| load_lightgcn (train+test, {split.train.n_interactions + split.test.nnz:,} pairs) | - | "
        f"{load_s:.2f} ({load_cpu:.2f}) | - | naive per-line reader | {naive_load_s:.2f} | - | {naive_load_s / load_s:.1f}x | ~1 s |"
    )
    print(
        f"| evaluate, random 64-d factors, full ranking | {n_eval:,} | {eval_s:.2f} ({eval_cpu:.2f}) | {users_per_s:,.0f} | "
        f"per-user numpy loop ({peer_n:,} users) | {peer_s:.2f} | {peer_users_per_s:,.0f} | "
        f"{users_per_s / peer_users_per_s:.1f}x | all test users <= {TARGET_SECONDS:.0f} s "
        f"(projected {n_users_with_test(split) / users_per_s:.1f} s) |"
    )
    print(f"\nevaluate() and the peer agree on the peer's users: {'yes' if agree else 'NO'}")
    print("\n| model | users | Recall@20 | NDCG@20 | HitRate@20 | coverage@20 | seconds |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    m = pop.metrics
    print(
        f"| popularity (train counts) | {int(m['n_users']):,} | {m['recall@20']:.4f} | {m['ndcg@20']:.4f} | "
        f"{m['hit_rate@20']:.4f} | {m['coverage@20']:.4f} | {pop_s:.2f} |"
    )
    r = result.metrics
    print(
        f"| random 64-d factors | {int(r['n_users']):,} | {r['recall@20']:.4f} | {r['ndcg@20']:.4f} | "
        f"{r['hit_rate@20']:.4f} | {r['coverage@20']:.4f} | {eval_s:.2f} |"
    )


def n_users_with_test(split) -> int:
    return int((np.diff(split.test.indptr) > 0).sum())


if __name__ == "__main__":
    main()
