"""``python -m monitoring``: drift reports and reference profiles.

Examples::

    python -m abtest flush --events-dir events/demo              # first: segments -> Parquet
    python -m monitoring drift --events events/demo --reference data/small --out reports/drift
    python -m monitoring profile --data data/small --events events/demo --until 1700600000 \\
        --out profiles/gnn.json                                    # the served model's first days
    python -m monitoring drift --events events/demo --reference profiles/gnn.json --out reports/drift

``--reference`` is a data_gen dataset directory (profile of its last ``--reference-days`` days: the
served model's training data) or a profile JSON written by ``profile``. Exit status: 0 no alarm, 1 drift
alarm, 2 bad input (message names the file).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from feedrec_common.config import ConfigError, add_config_arguments, load_config

DEFAULT_CONFIG = "configs/monitoring/drift.yaml"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m monitoring", description=__doc__.split("\n\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__,
    )  # fmt: skip
    sub = parser.add_subparsers(dest="command", required=True)
    drift = sub.add_parser("drift", help="test flushed events against a reference, write Markdown + HTML")
    drift.add_argument("--events", type=Path, required=True, help="event log directory (flushed Parquet)")
    drift.add_argument("--reference", type=Path, required=True, help="data_gen dataset directory or profile JSON")
    drift.add_argument("--data", type=Path, default=None,
                       help="dataset of the lookups (default: the reference dataset, or the profile's)")  # fmt: skip
    drift.add_argument("--out", type=Path, default=Path("reports/drift"), help="report directory (default: %(default)s)")
    drift.add_argument("--reference-days", type=float, default=7.0, help="days of a dataset reference (default: %(default)s)")
    drift.add_argument("--since", type=float, default=None, help="monitor events from this Unix time")
    drift.add_argument("--until", type=float, default=None, help="... up to this Unix time")
    drift.add_argument("--no-progress", action="store_true", help="no progress bar")
    add_config_arguments(drift, DEFAULT_CONFIG)
    profile = sub.add_parser("profile", help="write a reference profile JSON")
    profile.add_argument("--data", type=Path, required=True, help="data_gen dataset (lookups; the reference if no --events)")
    profile.add_argument("--events", type=Path, default=None, help="take the reference from these events instead")
    profile.add_argument("--since", type=float, default=None, help="events from this Unix time")
    profile.add_argument("--until", type=float, default=None, help="... up to this Unix time")
    profile.add_argument("--reference-days", type=float, default=7.0, help="days of the dataset reference (default: %(default)s)")
    profile.add_argument("--out", type=Path, required=True, help="profile JSON to write")
    add_config_arguments(profile, DEFAULT_CONFIG)
    return parser


def _config(args: argparse.Namespace):
    from monitoring.config import DriftConfig

    path = args.config if args.config and Path(args.config).is_file() else None
    if args.config and path is None and args.config != DEFAULT_CONFIG:
        raise ConfigError(f"{args.config}: no such config file")
    return load_config(DriftConfig, path, args.overrides)


def _catalog(data: Path, config):
    from monitoring.features import load_catalog

    if not data.is_dir():
        raise FileNotFoundError(f"{data}: no such dataset directory")
    return load_catalog(data, cold_threshold=config.cold_threshold)


def run_profile(args: argparse.Namespace) -> int:
    from monitoring.events import read_events
    from monitoring.features import traffic_tables
    from monitoring.profile import build_profile, profile_from_dataset

    config = _config(args)
    catalog = _catalog(args.data, config)
    if args.events is None:
        profile = profile_from_dataset(catalog, config, args.reference_days)
    else:
        exposures, outcomes = read_events(args.events, args.since, args.until)
        profile = build_profile(traffic_tables(exposures, outcomes, catalog), config, source=f"events {args.events}", catalog=catalog)
    print(f"wrote {profile.save(args.out)} ({profile.n_requests} requests, inputs: {', '.join(profile.inputs)})")
    return 0


def run_drift(args: argparse.Namespace) -> int:
    import numpy as np
    from tqdm import tqdm

    from monitoring.drift import monitor
    from monitoring.events import read_events
    from monitoring.features import traffic_tables
    from monitoring.profile import ReferenceProfile, input_values, profile_from_dataset, sampled_requests
    from monitoring.report import render_report, write_report

    config = _config(args)
    if args.reference.is_dir():
        catalog = _catalog(args.data or args.reference, config)
        profile = profile_from_dataset(catalog, config, args.reference_days)
    elif args.reference.is_file():
        profile = ReferenceProfile.load(args.reference)
        data = args.data or (Path(profile.dataset) if profile.dataset else None)
        if data is None:
            raise ConfigError(f"{args.reference}: the profile names no dataset; pass --data")
        catalog = _catalog(data, config)
    else:
        raise FileNotFoundError(f"{args.reference}: no such dataset directory or profile file")
    exposures, outcomes = read_events(args.events, args.since, args.until)
    traffic = traffic_tables(exposures, outcomes, catalog)
    if len(traffic.requests) == 0:
        raise ValueError(f"{args.events}: no exposures in the requested period")
    ts = traffic.requests["ts"].to_numpy(dtype=np.float64)
    origin = float(np.floor(ts.min()))
    n_windows = int((ts.max() - origin) // config.window_seconds) + 1
    with tqdm(total=n_windows, desc="windows", unit="window", disable=args.no_progress, file=sys.stderr) as bar:
        run = monitor(profile, traffic, config, origin=origin, progress=lambda i: bar.update(1))
    sampled, windows = sampled_requests(traffic, config.window_seconds, origin)
    latest = input_values(sampled.subset(windows == windows.max()))
    report = render_report(run, profile, latest)
    paths = write_report(report, args.out)
    print(report.summary)
    print(f"wrote {paths['markdown']} and {paths['html']}")
    return 1 if run.alarms else 0


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return run_drift(args) if args.command == "drift" else run_profile(args)
    except (ConfigError, FileNotFoundError, ValueError, KeyError) as exc:
        print(f"python -m monitoring {args.command}: error: {exc}", file=sys.stderr)
        return 2
