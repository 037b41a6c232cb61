"""Run every benchmark in turn and print their tables: ``python -m benchmarks [--quick] [NAME ...]``."""

from __future__ import annotations

import argparse
import importlib
import subprocess
import sys
import time

#: Benchmark modules in the order a reader meets the system (data -> models -> serving -> A/B).
BENCHMARKS = [
    "bench_data_gen",
    "bench_eval",
    "bench_mf",
    "bench_gnn_step",
    "bench_topk",
    "bench_serve",
    "bench_abtest_stats",
    "bench_abtest_sim",
    "bench_drift",
    "bench_policy",
    "bench_feed_request",
]


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__)
    parser.add_argument(
        "names", nargs="*", help=f"benchmarks to run (default: all of {', '.join(BENCHMARKS)})"
    )
    parser.add_argument(
        "--quick", action="store_true", help="small sizes: a smoke run, not the reported figures"
    )
    args = parser.parse_args()
    names = args.names or BENCHMARKS
    failed = []
    for name in names:
        module = f"benchmarks.{name}"
        if importlib.util.find_spec(module) is None:
            print(f"## {name}: not present, skipped\n")
            continue
        print(f"## {name}\n", flush=True)
        t0 = time.perf_counter()
        cmd = [sys.executable, "-m", module] + (["--quick"] if args.quick else [])
        rc = subprocess.call(cmd)
        print(f"\n({name}: exit {rc}, {time.perf_counter() - t0:.0f} s)\n", flush=True)
        if rc != 0:
            failed.append(name)
    if failed:
        print("benchmarks that failed or missed a target: " + ", ".join(failed))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
