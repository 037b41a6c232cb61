"""Plot validation Recall@20 against wall-clock time from learning-curve CSVs (GNN vs ALS, ...).

Each CSV needs ``wall_s`` and ``valid_recall@20`` columns (``training/train_gnn.py`` writes
``bundles/gnn_<dataset>.curve.csv``). A horizontal reference line can be added per baseline.

    .venv/bin/python -m benchmarks.plot_learning_curves bundles/gnn_gowalla.curve.csv \
        --label GNN --baseline "ALS (tuned)=0.169" --out reports/gowalla_curves.png
"""

from __future__ import annotations

import argparse
import csv
import sys
from pathlib import Path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("csv", nargs="+", help="learning-curve CSV files")
    parser.add_argument("--label", action="append", default=[], help="one label per CSV (default: file name)")
    parser.add_argument("--baseline", action="append", default=[], metavar="NAME=RECALL", help="horizontal line")
    parser.add_argument("--metric", default="valid_recall@20")
    parser.add_argument("--out", default="reports/learning_curves.png")
    parser.add_argument("--title", default=None, help="plot title (e.g. dataset, machine, date)")
    parser.add_argument("--quick", action="store_true", help="accepted for symmetry with other benchmarks")
    args = parser.parse_args()
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    curves = []
    for i, path in enumerate(args.csv):
        try:
            with open(path) as f:
                rows = list(csv.DictReader(f))
        except OSError as exc:
            sys.exit(f"error: {path}: {exc.strerror}")
        if not rows or args.metric not in rows[0] or "wall_s" not in rows[0]:
            sys.exit(f"error: {path}: needs columns wall_s and {args.metric}")
        label = args.label[i] if i < len(args.label) else Path(path).stem
        curves.append((label, [float(r["wall_s"]) for r in rows], [float(r[args.metric]) for r in rows]))
    # short runs (data/small trains in seconds) read better in seconds than in fractions of a minute
    longest = max(max(x) for _, x, _ in curves)
    scale, unit = (60.0, "min") if longest > 300 else (1.0, "s")
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for label, wall, values in curves:
        ax.plot([w / scale for w in wall], values, marker="o", label=label)
    for spec in args.baseline:
        name, _, value = spec.rpartition("=")  # the name may contain "=" (e.g. "t=2.0"), the value not
        try:
            level = float(value)
        except ValueError:
            sys.exit(f"error: --baseline {spec!r}: expected NAME=RECALL with a number after the last '='")
        ax.axhline(level, linestyle="--", color="grey")
        # x in axes fraction: a label at data x=0 is clipped when the curves start later
        ax.annotate(name, (0.01, level), xycoords=ax.get_yaxis_transform(), textcoords="offset points",
                    xytext=(0, 3), fontsize=8)
    ax.set_xlabel(f"wall-clock training time ({unit})")
    if args.title:
        ax.set_title(args.title, fontsize=10)
    ax.set_ylabel(args.metric)
    ax.grid(alpha=0.3)
    ax.legend()
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(args.out, dpi=120, bbox_inches="tight")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
