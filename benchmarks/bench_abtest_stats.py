"""Validate the A/B statistics on synthetic experiments with a known truth, and time them.

    .venv/bin/python -m benchmarks.bench_abtest_stats            # 1,000 experiments per check
    .venv/bin/python -m benchmarks.bench_abtest_stats --quick    # 200 experiments, smaller arms

Prints two Markdown tables:

1. Validity (targets from the A/B issue): false-positive rate of 1,000 A/A experiments at alpha 0.05
   in [3.5%, 6.5%]; coverage of the 95% interval of a known +5% lift >= 93%; false-positive rate of the
   always-valid (mSPRT) test under daily peeking <= 5%, next to a naive fixed-horizon test peeked daily.
2. Speed: the vectorised Welch test over 1,000 A/A experiments against the peer, a loop of
   ``scipy.stats.ttest_ind(equal_var=False)`` on the same per-user data (and the decisions must agree).

Exit status 1 when a validity target is missed (``--quick`` uses fewer experiments, so its figures
are noisier; the targets are meant for the full run).
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import time
from datetime import UTC, datetime
from importlib import metadata

import numpy as np
from scipy import stats

from abtest.sim.synthetic import aa_false_positive_rate, interval_coverage, peeking_false_positive_rate
from abtest.stats.lift import lift_arrays


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--experiments", type=int, default=1000, help="simulated experiments per check (default: %(default)s)")
    parser.add_argument("--users-per-arm", type=int, default=2000, help="users per arm for A/A and coverage (default: %(default)s)")
    parser.add_argument("--days", type=int, default=14, help="daily looks in the peeking check (default: %(default)s)")
    parser.add_argument("--users-per-day", type=int, default=200, help="new users per arm per day when peeking (default: %(default)s)")
    parser.add_argument("--lift", type=float, default=0.05, help="true relative lift for the coverage check (default: %(default)s)")
    parser.add_argument("--seed", type=int, default=0, help="random seed (default: %(default)s)")
    parser.add_argument("--quick", action="store_true", help="200 experiments, 500 users per arm, 100 per day")
    args = parser.parse_args(argv)
    if args.quick:
        args.experiments, args.users_per_arm, args.users_per_day = 200, 500, 100
    if args.experiments < 10 or args.users_per_arm < 10 or args.days < 2 or args.users_per_day < 10:
        parser.error("need at least 10 experiments, 10 users per arm, 2 days and 10 users per day")
    return args


def pct(estimate) -> str:
    return f"{estimate.rate:.1%} ± {estimate.standard_error:.1%}"


def validity_rows(args: argparse.Namespace) -> tuple[list[tuple[str, str, str, str]], bool]:
    n = args.experiments
    fpr = aa_false_positive_rate(n, args.users_per_arm, seed=args.seed)
    coverage = interval_coverage(n, args.users_per_arm, relative_lift=args.lift, seed=args.seed + 1)
    peeking = peeking_false_positive_rate(n, args.days, args.users_per_day, seed=args.seed + 2)
    rows, ok = [], True

    def add(label: str, estimate, target: str, passed: bool | None) -> None:
        nonlocal ok
        ok &= passed is not False
        verdict = "n/a" if passed is None else ("pass" if passed else "FAIL")
        rows.append((label, pct(estimate), target, verdict))

    in_band = lambda e: 0.035 <= e.rate <= 0.065  # noqa: E731
    add(f"A/A false-positive rate, clicks per exposure (delta method), {n:,} exp.", fpr["clicks_per_exposure"], "3.5% – 6.5%", in_band(fpr["clicks_per_exposure"]))
    add(f"A/A false-positive rate, clicks per user (Welch), {n:,} exp.", fpr["clicks_per_user"], "3.5% – 6.5%", in_band(fpr["clicks_per_user"]))
    add(f"A/A false-positive rate, engaged users (z-test), {n:,} exp.", fpr["engaged_users"], "3.5% – 6.5%", in_band(fpr["engaged_users"]))
    add(f"95% interval coverage of a true {args.lift:+.0%} lift, absolute", coverage["absolute"], "≥ 93%", coverage["absolute"].rate >= 0.93)
    add(f"95% interval coverage of a true {args.lift:+.0%} lift, relative (Fieller)", coverage["relative"], "≥ 93%", coverage["relative"].rate >= 0.93)
    add(f"sequential (mSPRT) false-positive rate, A/A peeked daily for {args.days} days", peeking["sequential"], "≤ 5%", peeking["sequential"].rate <= 0.05)
    add(f"contrast: naive fixed-horizon z-test peeked daily for {args.days} days", peeking["naive_peeking"], "(≫ 5%: why peeking needs mSPRT)", None)
    add("contrast: fixed-horizon z-test, last day only", peeking["fixed_horizon"], "≈ 5%", None)
    return rows, ok


def speed_rows(args: argparse.Namespace) -> list[tuple[str, str, str, str]]:
    rng = np.random.default_rng(args.seed + 3)
    n, users = args.experiments, args.users_per_arm
    clicks = rng.poisson(rng.gamma(0.5, 0.5, size=(n, 2, users))).astype(np.float64)

    start = time.perf_counter()
    total, squares = clicks.sum(-1), (clicks * clicks).sum(-1)
    mean, var = total / users, (squares - total**2 / users) / (users - 1)
    ours = lift_arrays(mean[:, 0], var[:, 0], users, mean[:, 1], var[:, 1], users, distribution="t").p_value
    ours_s = time.perf_counter() - start

    start = time.perf_counter()
    peer = np.array([stats.ttest_ind(c[1], c[0], equal_var=False).pvalue for c in clicks])
    peer_s = time.perf_counter() - start
    agree = np.mean((ours < 0.05) == (peer < 0.05))
    max_diff = float(np.max(np.abs(ours - peer)))
    return [
        ("abtest.stats.lift.lift_arrays (vectorised, from sums)", f"{ours_s * 1e3:.1f} ms", "1.0×", f"decisions agree {agree:.1%}, max abs. p-value difference {max_diff:.1e}"),
        ("peer: scipy.stats.ttest_ind(equal_var=False) in a loop", f"{peer_s * 1e3:.1f} ms", f"{peer_s / ours_s:.1f}× slower", ""),
    ]


def table(header: tuple[str, ...], rows: list[tuple[str, ...]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)


def version(name: str) -> str:
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return "not installed"


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    started = time.perf_counter()
    rows, ok = validity_rows(args)
    validity_s = time.perf_counter() - started
    print(f"## A/B statistics validation ({'quick' if args.quick else 'full'} run, seed {args.seed})\n")
    print(table(("check", "measured (± 1 s.e.)", "target", "result"), rows))
    print(f"\nAll three validity checks took {validity_s:.1f} s.\n")
    print(f"## Speed: Welch test over {args.experiments:,} A/A experiments, {args.users_per_arm:,} users per arm\n")
    print(table(("implementation", "time", "ratio vs ours", "notes"), speed_rows(args)))
    print(
        f"\nMachine: {os.cpu_count()} CPUs, {platform.processor() or platform.machine()}, Python {platform.python_version()}, "
        f"numpy {np.__version__}, scipy {version('scipy')}, torch {version('torch')} (not used); "
        f"{datetime.now(UTC).strftime('%Y-%m-%d %H:%M UTC')}"
    )
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
