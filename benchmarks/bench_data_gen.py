"""Speed, memory and realism benchmark of ``python -m data_gen``.

    .venv/bin/python -m benchmarks.bench_data_gen                    # medium (budget 60 s, 4 GiB)
    .venv/bin/python -m benchmarks.bench_data_gen --presets medium,large
    .venv/bin/python -m benchmarks.bench_data_gen --quick            # tiny + small, seconds

Each preset is generated in a child process (``python -m data_gen``); its wall time is measured here
and its peak RSS read from the kernel with ``os.wait4`` (the child's own ``ru_maxrss``). The table
compares each run with its budget from the issue (the peer: medium <= 60 s and <= 4 GiB, large
<= 8 GiB) and checks the realism statistics of the generated dataset against ``REALISM_RANGES``.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

from data_gen.stats import REALISM_RANGES, check_realism

GIB = 1024**3
#: Preset -> (wall-seconds budget or None, peak-RSS budget in bytes).
BUDGETS = {
    "tiny": (2.0, 1 * GIB),
    "small": (None, 4 * GIB),
    "medium": (60.0, 4 * GIB),
    "large": (None, 8 * GIB),
}


def run_preset(preset: str, out_root: Path, seed: int, timeout: float) -> dict:
    """Generate ``preset`` in a child process; return wall seconds, peak RSS and the manifest."""
    out = out_root / preset
    cmd = [sys.executable, "-m", "data_gen", "--preset", preset, "--seed", str(seed), "--out", str(out)]
    cmd += ["--overwrite", "--no-progress"]
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = t0 + timeout
    while True:
        pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
        if pid:
            break
        if time.perf_counter() > deadline:
            proc.kill()
            pid, status, usage = os.wait4(proc.pid, 0)
            break
        time.sleep(0.05)
    wall = time.perf_counter() - t0
    proc.returncode = os.waitstatus_to_exitcode(status)
    stderr = proc.stderr.read().decode() if proc.stderr else ""
    if proc.returncode != 0:
        raise RuntimeError(f"{preset}: data_gen exited {proc.returncode}:\n{stderr[-2000:]}")
    manifest = json.loads((out / "manifest.json").read_text())
    return {"preset": preset, "wall": wall, "rss": usage.ru_maxrss * 1024, "manifest": manifest}


def markdown(results: list[dict]) -> str:
    lines = [
        "| preset | interaction rows | rows/s | wall s | wall budget | peak RSS GiB | RSS budget GiB "
        "| RSS / budget | realism |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in results:
        rows = r["manifest"]["row_counts"]["interactions"]
        wall_budget, rss_budget = BUDGETS.get(r["preset"], (None, None))
        wall_cell = "-" if wall_budget is None else f"{wall_budget:.0f} s ({r['wall'] / wall_budget:.2f}x)"
        problems = check_realism(r["manifest"]["realism"])
        lines.append(
            f"| {r['preset']} | {rows:,} | {rows / r['wall']:,.0f} | {r['wall']:.1f} | {wall_cell} "
            f"| {r['rss'] / GIB:.2f} | {rss_budget / GIB:.0f} | {r['rss'] / rss_budget:.2f} "
            f"| {'ok' if not problems else 'OUT: ' + '; '.join(problems)} |"
        )
    return "\n".join(lines)


def realism_table(results: list[dict]) -> str:
    names = list(REALISM_RANGES)
    lines = ["| preset | " + " | ".join(names) + " |", "|---|" + "---|" * len(names)]
    for r in results:
        stats = r["manifest"]["realism"]
        lines.append(f"| {r['preset']} | " + " | ".join(f"{stats[n]:.3g}" for n in names) + " |")
    lines.append("| range | " + " | ".join(f"[{lo}, {hi}]" for lo, hi in REALISM_RANGES.values()) + " |")
    return "\n".join(lines)


def machine() -> str:
    def ver(pkg: str) -> str:
        try:
            return version(pkg)
        except PackageNotFoundError:
            return "n/a"

    return (
        f"{dt.date.today().isoformat()}, {platform.node()}, {os.cpu_count()} CPUs, "
        f"python {platform.python_version()}, numpy {ver('numpy')}, pyarrow {ver('pyarrow')}, torch {ver('torch')}"
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.bench_data_gen", description=__doc__.split("\n")[0]
    )
    parser.add_argument("--presets", default="medium", help="comma-separated presets (default: %(default)s)")
    parser.add_argument("--quick", action="store_true", help="tiny and small only (seconds)")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--out-root", type=Path, default=None, help="keep datasets here (default: temp dir)")
    parser.add_argument("--timeout", type=float, default=1500.0, help="seconds per preset")
    args = parser.parse_args(argv)
    presets = ["tiny", "small"] if args.quick else [p.strip() for p in args.presets.split(",") if p.strip()]
    unknown = [p for p in presets if p not in BUDGETS]
    if unknown:
        parser.error(f"unknown preset(s): {', '.join(unknown)} (choose from {', '.join(BUDGETS)})")
    root = args.out_root or Path(tempfile.mkdtemp(prefix="bench_data_gen_"))
    root.mkdir(parents=True, exist_ok=True)
    results = []
    try:
        for preset in presets:
            results.append(run_preset(preset, root, args.seed, args.timeout))
            print(f"{preset}: {results[-1]['wall']:.1f} s", file=sys.stderr)
    finally:
        if args.out_root is None:
            shutil.rmtree(root, ignore_errors=True)
    print(f"## data_gen benchmark ({machine()})\n")
    print(markdown(results))
    print("\nRealism statistics (ranges: data_gen.stats.REALISM_RANGES):\n")
    print(realism_table(results))
    over = [
        r["preset"]
        for r in results
        if r["rss"] > BUDGETS[r["preset"]][1] or (BUDGETS[r["preset"]][0] or float("inf")) < r["wall"]
    ]
    return 1 if over or any(check_realism(r["manifest"]["realism"]) for r in results) else 0


if __name__ == "__main__":
    sys.exit(main())
