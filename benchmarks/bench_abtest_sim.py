"""Validate the A/B statistics end to end on a simulated world (data_gen users, the true click model).

    .venv/bin/python -m benchmarks.bench_abtest_sim                     # data/small (generated if missing)
    .venv/bin/python -m benchmarks.bench_abtest_sim --data data/small --control model:mf@champion \\
        --treatment model:gnn@champion                                 # the two trained models' lists
    .venv/bin/python -m benchmarks.bench_abtest_sim --quick             # tiny preset, 200 experiments

One world (abtest/offline_sim.py): the users' requests over 14 simulated days, each ranker's lists, clicks
drawn once per (user, ranker) from the ground truth; then 1,000 experiments that only re-randomise the
50/50 assignment (production sha256 hash, a new salt each). Prints a Markdown table:

* false-positive rate of the 1,000 A/A experiments at alpha = 0.05 (target 3.5% - 6.5%);
* coverage of the 95% interval over the true effect, known from the click model (target >= 93%);
* the sequential (mSPRT) test's false-positive rate under daily peeking (target <= 5%);
* users needed for 80% power, A/B against team-draft interleaving, on the same world;

and a speed table: the vectorised analysis of the A/A experiments (one matrix product per sum) against
the peer, a loop over experiments of ``aggregate.arm_metrics_from_arrays`` + ``significance.ratio_z_test``
(the decisions must agree). Exit status 1 when a validity target is missed (``--quick`` allows two
Monte-Carlo standard errors; the targets are meant for the full run).
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import tempfile
import time
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path

import numpy as np

from abtest.aggregate import arm_metrics_from_arrays
from abtest.offline_sim import _arm_sums, _ratio_lifts, build_world, random_assignments, validate
from abtest.significance import ratio_z_test
from abtest.sim_world import TrafficConfig
from abtest.simulate import format_validation


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=Path("data/small"), help="data_gen dataset (default: %(default)s; generated if missing)")
    parser.add_argument("--control", default="noisy-oracle:1.5", help="control ranker (default: %(default)s)")
    parser.add_argument("--treatment", default="noisy-oracle:1", help="treatment ranker (default: %(default)s)")
    parser.add_argument("--experiments", type=int, default=1000, help="experiments (default: %(default)s)")
    parser.add_argument("--users", type=int, default=5000, help="users in the world at most (default: %(default)s)")
    parser.add_argument("--sessions-per-day", type=float, default=2000.0, help="(default: %(default)s)")
    parser.add_argument("--days", type=int, default=14, help="simulated days, one look each (default: %(default)s)")
    parser.add_argument("--seed", type=int, default=0, help="random seed (default: %(default)s)")
    parser.add_argument("--quick", action="store_true", help="tiny preset in a temporary directory, 200 experiments")
    args = parser.parse_args(argv)
    if args.quick:
        args.experiments, args.users, args.sessions_per_day = 200, 800, 400.0
    if args.experiments < 10 or args.users < 20 or args.days < 2:
        parser.error("need at least 10 experiments, 20 users and 2 days")
    return args


def ensure_data(args: argparse.Namespace, scratch: Path) -> Path:
    if not args.quick and (args.data / "truth" / "params.json").is_file():
        return args.data
    from data_gen.generate import generate
    from data_gen.generator_config import resolve_config

    preset = "tiny" if args.quick else "small"
    out = scratch / preset
    print(f"generating the {preset} dataset in {out} ...", file=sys.stderr)
    generate(resolve_config(preset, seed=7), out, progress=False)
    return out


def speed_rows(world, experiments: int, seed: int) -> list[str]:
    control = world.rankers[0]
    assign = random_assignments(world.user_ids, experiments, seed)
    m = world.clicks[control].sum(1).astype(np.float64)
    d = world.requests.sum(1).astype(np.float64)
    t = time.perf_counter()
    fast = _ratio_lifts(*_arm_sums(assign, m, m, d, np.ones(world.n_users)), 0.05)
    vectorised = time.perf_counter() - t
    t = time.perf_counter()
    loop_p = []
    for row in assign:
        arms = arm_metrics_from_arrays(row.astype(np.int64), m, d, num_arms=2)
        loop_p.append(ratio_z_test(arms[0].clicks_per_exposure, arms[1].clicks_per_exposure).p_value)
    loop = time.perf_counter() - t
    agree = np.mean((np.asarray(loop_p) < 0.05) == (fast.p_value < 0.05))
    return [
        "| analysis of the A/A experiments | time | ratio |", "|---|---|---|",
        f"| vectorised (matrix products over {experiments:,} experiments) | {vectorised * 1000:.0f} ms | 1.0x |",
        f"| peer: loop of arm_metrics_from_arrays + ratio_z_test | {loop * 1000:.0f} ms | {loop / vectorised:.1f}x slower |",
        f"| same decisions | {agree:.1%} | |",
    ]


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="bench_abtest_sim_") as scratch:
        data = ensure_data(args, Path(scratch))
        traffic = TrafficConfig(days=args.days, sessions_per_day=args.sessions_per_day)
        t = time.perf_counter()
        world = build_world(data, args.control, args.treatment, traffic=traffic, seed=args.seed, max_users=args.users)
        world_s = time.perf_counter() - t
        t = time.perf_counter()
        v = validate(world, num_experiments=args.experiments, seed=args.seed)
        experiments_s = time.perf_counter() - t
        speed = speed_rows(world, args.experiments, args.seed + 1)
    print(f"# A/B statistics on a simulated world ({data.name}, {datetime.now(UTC):%Y-%m-%d})\n")
    print(format_validation(v, world))
    print(f"\nTime: world {world_s:.1f} s (lists, clicks, interleaving); the {args.experiments:,} experiments "
          f"and all checks {experiments_s:.1f} s, of which sha256 assignment {v.timings['assignment (sha256)']:.1f} s.\n")
    print("\n".join(speed))
    print(f"\nMachine: {platform.machine()}, {os.cpu_count()} CPUs, Python {platform.python_version()}, "
          f"numpy {np.__version__}, torch {_version('torch')}.")
    # --quick runs 200 experiments on 800 users: allow two standard errors of Monte-Carlo noise there.
    def slack(rate) -> float:
        return 2 * rate.standard_error if args.quick else 0.0

    fpr, cov, seq = v.aa_false_positive_rate, v.coverage_relative, v.sequential_false_positive_rate
    ok = (0.035 - slack(fpr) <= fpr.rate <= 0.065 + slack(fpr) and cov.rate >= 0.93 - slack(cov)
          and seq.rate <= 0.05 + slack(seq))  # fmt: skip
    if not ok:
        print("\nA validity target was missed.", file=sys.stderr)
    return 0 if ok else 1


def _version(package: str) -> str:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return "not installed"


if __name__ == "__main__":
    raise SystemExit(main())
